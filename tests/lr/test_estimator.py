"""LREstimator (in-loop estimates, EMA, records, checkpoints) and CurvatureLR."""

import copy
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch
from quadratics import DT, QBATCH, Quadratic, mean_out
from quadratics import spd as _spd
from torch import nn

from hessian_lr.lr import estimate_lr, secant_lr
from hessian_lr.lr.curvature_lr import CurvatureLR
from hessian_lr.lr.estimator import LREstimator


def sgd_step(model, opt, loss_fn, batch):
    opt.zero_grad()
    x, y = batch
    loss_fn(model(x), y).backward()
    opt.step()


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)


def batches(n, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 4, generator=g, dtype=DT), torch.randint(0, 3, (size,), generator=g))
        for _ in range(n)
    ]


def strip_seconds(x):
    if isinstance(x, dict):
        return {k: strip_seconds(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [strip_seconds(v) for v in x]
    return x


ALL = ("secant", "secant_hvp", "quadratic", "sharpness")


# ------------------------------------------------------------------- same as the one-shot calls
def test_every_k_matches_one_shot_functions():
    model, loss_fn, k, lr = mlp(), nn.CrossEntropyLoss(), 3, 0.2
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    est = LREstimator(model, methods=ALL, every=k, loss_fn=loss_fn, optimizer=opt, lanczos_tol=1e-8)
    data = batches(13)
    thetas = [torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()]
    prev_eig = None
    checked = 0
    for t, batch in enumerate(data, start=1):
        sgd_step(model, opt, loss_fn, batch)
        out = est.step(batch)
        if t % k:
            assert out is None
            continue
        thetas.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone())
        for method in ("quadratic", "secant_hvp"):
            ref = estimate_lr(model, loss_fn, batch, method=method)
            assert out[method].lr == pytest.approx(ref.lr, rel=1e-12)
            assert out[method].gHg == pytest.approx(ref.gHg, rel=1e-12)
        ref = (
            estimate_lr(model, loss_fn, batch, method="sharpness", lanczos_tol=1e-8, v0=prev_eig)
            if prev_eig is not None
            else None
        )
        if ref is not None:  # warm-started from the same vector
            assert out["sharpness"].lambda_max == pytest.approx(ref.lambda_max, rel=1e-12)
            # (issue 22: a warm start is mixed with a random vector from each caller's own
            # generator, so the two runs may differ by a product or two)
            assert abs(out["sharpness"].num_hvps - ref.num_hvps) <= 3
        cold = estimate_lr(model, loss_fn, batch, method="sharpness", lanczos_tol=1e-8)
        assert out["sharpness"].lambda_max == pytest.approx(cold.lambda_max, rel=1e-8)
        prev_eig = out["sharpness"].eigenvector
        if t >= 2 * k:
            ref = secant_lr(thetas[-3], thetas[-2], thetas[-1], lr, steps=k)
            assert out["secant"].lr == pytest.approx(ref.lr, rel=1e-12)
            assert est.latest["secant"].lr == out["secant"].lr
            checked += 1
        else:
            assert "secant" not in out
    assert checked == 3 and len(est.history) == 4
    assert [r["step"] for r in est.history] == [3, 6, 9, 12]
    rec = est.history[-1]
    assert rec["lr"] == lr and rec["lr_groups"] == [lr] and rec["caveats"] == []
    assert rec["estimates"]["sharpness"]["warm_start"] is True
    assert est.history[0]["estimates"]["sharpness"]["warm_start"] is False


@pytest.mark.parametrize("k", [1, 4])
def test_secant_recovers_closed_form_on_1d_quadratic(k):
    a, eps = 3.0, 0.004
    model = Quadratic([[a]], [0.0], [2.0])
    opt = torch.optim.SGD(model.parameters(), lr=eps)
    est = LREstimator(model, methods=("secant",), every=k, optimizer=opt)
    for _ in range(2 * k):
        sgd_step(model, opt, mean_out, QBATCH)
        est.step()
    lr = est.latest["secant"].lr
    assert lr == pytest.approx(k * eps / (1 - (1 - eps * a) ** k), rel=1e-9)
    assert lr == pytest.approx(1 / a, rel=(k - 1) * eps * a + 1e-9)


@pytest.mark.parametrize("order", ["scheduler_first", "estimator_first"])
def test_reads_the_lr_actually_applied(order):
    A = spd(5)
    b = np.ones(5)
    model = Quadratic(A, b, np.zeros(5))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 + t)  # 0.01, 0.02, 0.03, ...
    est = LREstimator(model, methods=("secant",), every=1, optimizer=opt)
    thetas, applied = [model.theta.detach().numpy().copy()], []
    for _ in range(4):
        applied.append(opt.param_groups[0]["lr"])
        sgd_step(model, opt, mean_out, QBATCH)
        thetas.append(model.theta.detach().numpy().copy())
        if order == "scheduler_first":
            sched.step()
            est.step()
        else:
            est.step()
            sched.step()
    assert [r["lr"] for r in est.history] == pytest.approx(applied, rel=1e-15)
    # Mean rule (every=1: each span is one step) with lr_next: exact on a quadratic.
    g = A @ thetas[2] - b
    assert est.latest["secant"].lr == pytest.approx(np.abs(g).sum() / np.abs(A @ g).sum(), rel=1e-9)


def test_first_rule_is_the_papers_eq8():
    A = spd(4, seed=3)
    model = Quadratic(A, np.ones(4), np.zeros(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    est = LREstimator(model, methods=("secant",), every=2, optimizer=opt, secant_lr_rule="first")
    thetas, lrs = [model.theta.detach().clone()], []
    for t in range(1, 5):
        opt.param_groups[0]["lr"] = 0.02 * t
        lrs.append(0.02 * t)
        sgd_step(model, opt, mean_out, QBATCH)
        est.step()
        if t % 2 == 0:
            thetas.append(model.theta.detach().clone())
    ref = secant_lr(*thetas, lrs[0], steps=2)
    assert est.latest["secant"].raw_lr == pytest.approx(ref.raw_lr, rel=1e-14)
    assert est.latest["secant"].flags == ref.flags


# ----------------------------------------------------------------------------------- EMA
def test_ema_arithmetic():
    model, loss_fn = mlp(1), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(
        model,
        methods=("quadratic", "secant"),
        every=1,
        loss_fn=loss_fn,
        optimizer=opt,
        ema_alpha=0.3,
        ema_init=0.7,
    )
    assert est.smoothed() == est.smoothed("quadratic") == 0.7
    for batch in batches(6, seed=2):
        sgd_step(model, opt, loss_fn, batch)
        est.step(batch)
    for method in ("quadratic", "secant"):
        s, n = 0.7, 0
        for rec in est.history:
            e = rec["estimates"].get(method, {}).get("lr")
            if e is not None:
                s, n = 0.3 * e + 0.7 * s, n + 1
            assert rec["smoothed"][method] == pytest.approx(s, rel=1e-14)
        assert est.smoothed(method) == pytest.approx(s, rel=1e-14)
        assert est.num_estimates(method) == n
    # 5 secant estimates; since issue 22 those whose noise band reaches the null are flagged
    # (lr nan) and stay out of the EMA
    sec = [r["estimates"]["secant"] for r in est.history if "secant" in r["estimates"]]
    noise = sum("indistinguishable_from_noise" in r["flags"] for r in sec)
    assert len(sec) == 5 and est.num_estimates("secant") == 5 - noise
    assert est.num_estimates("quadratic") >= 1
    with pytest.raises(KeyError):
        est.smoothed("sharpness")


def test_flagged_estimates_leave_the_ema_alone(tmp_path):
    # g always along the negative direction of A = diag(2, -1): quadratic is flagged every time.
    model = Quadratic(np.diag([2.0, -1.0]), np.zeros(2), [0.0, 1.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "sub" / "records.jsonl"
    est = LREstimator(
        model, methods=("quadratic",), every=2, loss_fn=mean_out, optimizer=opt, record_path=path
    )
    for _ in range(6):
        sgd_step(model, opt, mean_out, QBATCH)
        est.step(QBATCH)
    assert est.smoothed("quadratic") == 0.1 and est.num_estimates("quadratic") == 0
    assert all(r["estimates"]["quadratic"]["flags"] == ["negative_curvature"] for r in est.history)
    assert math.isnan(est.latest["quadratic"].lr)

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    lines = path.read_text().splitlines()
    parsed = [json.loads(line, parse_constant=no_nan) for line in lines]
    assert parsed == est.history and len(parsed) == 3
    assert parsed[0]["estimates"]["quadratic"]["lr"] is None


def test_nonfinite_is_flagged_or_raised():
    model, loss_fn = mlp(2), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(
        model, methods=("secant", "quadratic"), every=1, loss_fn=loss_fn, optimizer=opt
    )
    data = batches(3, seed=4)
    for batch in data[:2]:
        sgd_step(model, opt, loss_fn, batch)
        est.step(batch)
    before = dict(est._smoothed)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    out = est.step(data[2])
    assert out["quadratic"].flags == ("nonfinite_loss",)
    assert out["secant"].flags == ("nonfinite_loss",) and math.isnan(out["secant"].lr)
    assert dict(est._smoothed) == before
    raising = LREstimator(
        model, methods=("quadratic",), every=1, loss_fn=loss_fn, on_nonfinite="raise"
    )
    with pytest.raises(ValueError, match="NaN"):
        raising.step(data[0])


# ------------------------------------------------------------------ the loop is never changed
def test_model_optimizer_and_modes_bit_identical():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 3),
    ).to(DT)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    with pytest.warns(UserWarning, match="plain SGD"):
        est = LREstimator(model, methods=ALL, every=2, loss_fn=loss_fn, optimizer=opt)
    g = torch.Generator().manual_seed(0)
    for t in range(6):
        batch = (
            torch.randn(8, 1, 6, 6, generator=g, dtype=DT),
            torch.randint(0, 3, (8,), generator=g),
        )
        model.train()
        if t == 3:
            model.eval()
        sgd_step(model, opt, loss_fn, batch)
        state = copy.deepcopy(model.state_dict())
        grads = [p.grad.clone() for p in model.parameters()]
        modes = [m.training for m in model.modules()]
        opt_state = copy.deepcopy(opt.state_dict())
        est.step(batch)
        for key, value in state.items():
            assert torch.equal(value, model.state_dict()[key]), key
        assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters()))
        assert [m.training for m in model.modules()] == modes
        new_opt = opt.state_dict()
        assert new_opt["param_groups"] == opt_state["param_groups"]
        for i, s in opt_state["state"].items():
            assert torch.equal(s["momentum_buffer"], new_opt["state"][i]["momentum_buffer"])
    assert len(est.history) == 3


def test_param_groups_momentum_and_weight_decay_caveats():
    model, loss_fn = mlp(3), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "lr": 0.01},
        ],
        momentum=0.9,
        weight_decay=5e-4,
    )
    with pytest.warns(UserWarning, match="momentum=0.9, weight_decay=0.0005"):
        est = LREstimator(
            model, methods=("secant", "sharpness"), every=1, loss_fn=loss_fn, optimizer=opt
        )
    assert est.caveats == ("momentum=0.9", "weight_decay=0.0005") and est.momentum == 0.9
    n0 = sum(p.numel() for p in model[0].parameters())
    n2 = sum(p.numel() for p in model[2].parameters())
    batch = batches(1)[0]
    sgd_step(model, opt, loss_fn, batch)
    out = est.step(batch)
    rec = est.history[-1]
    assert rec["lr"] == pytest.approx((0.1 * n0 + 0.01 * n2) / (n0 + n2), rel=1e-15)
    assert rec["lr_groups"] == [0.1, 0.01]
    assert rec["caveats"] == ["momentum=0.9", "weight_decay=0.0005"]
    sharp = out["sharpness"]
    assert sharp.lr_stable_momentum == pytest.approx(3.8 / sharp.lambda_max, rel=1e-12)
    adam = torch.optim.Adam(model.parameters())
    with pytest.warns(UserWarning, match="optimizer=Adam"):
        assert LREstimator(model, optimizer=adam).caveats == ("optimizer=Adam",)


# ---------------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip_through_torch_save():
    loss_fn = nn.CrossEntropyLoss()
    kw = dict(methods=("secant", "quadratic", "sharpness"), every=3, loss_fn=loss_fn)
    model = mlp(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, optimizer=opt, **kw)
    data = batches(16, seed=5)
    for batch in data[:7]:
        sgd_step(model, opt, loss_fn, batch)
        est.step(batch)
    buf = io.BytesIO()
    torch.save(est.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    model2 = copy.deepcopy(model)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    opt2.load_state_dict(opt.state_dict())
    est2 = LREstimator(model2, optimizer=opt2, **kw)
    est2.load_state_dict(state)
    assert est2.num_steps == 7 and est2.history == est.history
    for batch in data[7:]:
        for m, o, e in ((model, opt, est), (model2, opt2, est2)):
            sgd_step(m, o, loss_fn, batch)
            e.step(batch)
    assert strip_seconds(est2.history) == strip_seconds(est.history)
    assert len(est.history) == 5 and est2.smoothed("secant") == est.smoothed("secant")

    other = LREstimator(mlp(4), methods=("secant",), every=3)
    with pytest.raises(ValueError, match="configuration differs"):
        other.load_state_dict(state)


# -------------------------------------------------------------------------------- errors
def test_argument_errors():
    model = mlp()
    with pytest.raises(ValueError, match="methods"):
        LREstimator(model, methods=("newton",))
    with pytest.raises(ValueError, match="methods"):
        LREstimator(model, methods=())
    with pytest.raises(ValueError, match="need loss_fn"):
        LREstimator(model, methods=("quadratic",))
    with pytest.raises(ValueError, match="every"):
        LREstimator(model, every=0)
    with pytest.raises(ValueError, match="ema_alpha"):
        LREstimator(model, ema_alpha=0.0)
    with pytest.raises(ValueError, match="secant_lr_rule"):
        LREstimator(model, secant_lr_rule="last")
    est = LREstimator(model, methods=("secant",), every=2)
    with pytest.raises(ValueError, match="needs the LR"):
        est.step()
    assert est.num_steps == 0
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="none of the estimated parameters"):
        LREstimator(model, optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
    est = LREstimator(model, methods=("quadratic",), every=2, loss_fn=nn.CrossEntropyLoss())
    assert not est.due
    assert est.step() is None and est.due
    with pytest.raises(ValueError, match="need a batch"):
        est.step()
    assert est.num_steps == 1 and est.due  # a refused call does not advance the state
    with pytest.raises(ValueError, match="lr must be"):
        LREstimator(model, every=2).step(lr=-1.0)


# ---------------------------------------------------------------------------- CurvatureLR
def test_curvature_lr_follows_the_smoothed_estimate():
    model = mlp(5)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.2},
            {"params": model[2].parameters(), "lr": 0.1},
        ]
    )
    n0 = sum(p.numel() for p in model[0].parameters())
    n2 = sum(p.numel() for p in model[2].parameters())
    ref = (0.2 * n0 + 0.1 * n2) / (n0 + n2)
    est = LREstimator(
        model, methods=("secant", "quadratic"), every=2, loss_fn=loss_fn, optimizer=opt
    )
    sched = CurvatureLR(
        opt, est, method="quadratic", safety=0.5, min_lr=0.01, max_lr=0.4, warmup_steps=3
    )
    assert sched.get_last_lr() == [0.2, 0.1]  # warm-up: the base LRs
    seen = []
    for t, batch in enumerate(batches(12, seed=6), start=1):
        sgd_step(model, opt, loss_fn, batch)
        est.step(batch)
        sched.step()
        target = min(max(0.5 * est.smoothed("quadratic"), 0.01), 0.4)
        want = [0.2, 0.1] if t < 3 else [target * 0.2 / ref, target * 0.1 / ref]
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(want, rel=1e-14)
        seen.append(target)
    assert len(set(seen)) > 2  # it actually moved
    state = sched.state_dict()
    assert "estimator" not in state and "optimizer" not in state
    sched2 = CurvatureLR(opt, est, method="quadratic", safety=0.5, min_lr=0.01, max_lr=0.4)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch and sched2.warmup_steps == 3
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_curvature_lr_errors_and_initial_value():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    est = LREstimator(model, methods=("secant",), every=5, optimizer=opt, ema_init=0.3)
    assert CurvatureLR(opt, est, safety=2.0).get_last_lr() == [pytest.approx(0.6)]
    assert CurvatureLR(opt, est, max_lr=0.1).get_last_lr() == [0.1]
    with pytest.raises(ValueError, match="not estimated"):
        CurvatureLR(opt, est, method="quadratic")
    with pytest.raises(ValueError, match="safety"):
        CurvatureLR(opt, est, safety=0.0)
    with pytest.raises(ValueError, match="min_lr"):
        CurvatureLR(opt, est, min_lr=1.0, max_lr=0.1)
    with pytest.raises(TypeError, match="LREstimator"):
        CurvatureLR(opt, object())


# --------------------------------------------------------------- issue 11: flags, RNG, state
def test_not_converged_is_nan_and_leaves_the_ema_unless_asked():
    model, loss_fn = mlp(3), nn.CrossEntropyLoss()
    data = batches(4, seed=8)
    runs = {}
    for include in (False, True):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        est = LREstimator(
            m, methods=("sharpness",), every=1, loss_fn=loss_fn, optimizer=opt,
            lanczos_max_iter=1, warm_start=False, ema_include_flagged=include,
        )  # fmt: skip
        for batch in data:
            sgd_step(m, opt, loss_fn, batch)
            est.step(batch)
        runs[include] = est
    for rec in runs[False].history:
        e = rec["estimates"]["sharpness"]
        assert e["flags"] == ["not_converged"] and e["lr"] is None and e["lr_stable"] is None
        assert e["lambda_max"] > 0 and e["raw_lr"] == pytest.approx(1 / e["lambda_max"])
    assert runs[False].smoothed() == 0.1 and runs[False].num_estimates("sharpness") == 0
    # Asked: the raw values enter the EMA.
    ema = 0.1
    for rec in runs[True].history:
        ema = 0.1 * rec["estimates"]["sharpness"]["raw_lr"] + 0.9 * ema
    assert runs[True].smoothed() == pytest.approx(ema, rel=1e-12)
    assert runs[True].num_estimates("sharpness") == 4


def test_ema_init_must_be_positive():
    model = mlp()
    for bad in (0.0, -0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="ema_init"):
            LREstimator(model, methods=("secant",), ema_init=bad)


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(11)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def train_dropout(methods, steps=20, every=2):
    torch.manual_seed(0)
    model = DropoutNet().to(DT)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    est = None
    if methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = LREstimator(model, methods=methods, every=every, loss_fn=loss_fn, optimizer=opt)
    torch.manual_seed(123)  # training's own randomness: data and dropout masks
    for _ in range(steps):
        x, y = torch.randn(8, 4, dtype=DT), torch.randint(0, 3, (8,))
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        if est is not None:
            est.step((x, y))
    return [p.detach().clone() for p in model.parameters()], est


@pytest.mark.parametrize(
    "methods",
    [
        ("secant",),
        ("secant_same_batch",),
        ("quadratic", "secant_hvp"),
        ("sharpness",),
        ("update", "preconditioned_sharpness"),
    ],
)
def test_estimator_does_not_perturb_a_dropout_run(methods):
    plain, _ = train_dropout(())
    observed, est = train_dropout(methods)
    assert all(torch.equal(a, b) for a, b in zip(plain, observed))
    assert len(est.history) == 10 and all(r["seed"] == 0 for r in est.history)


def test_a_failing_step_leaves_the_state_exactly_as_before():
    model, data = mlp(4), batches(6, seed=9)
    fail = {"now": False}

    def loss_fn(out, y):
        if fail["now"]:
            raise RuntimeError("product failed")
        return nn.functional.cross_entropy(out, y)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(
        model, methods=("secant", "quadratic", "sharpness", "secant_same_batch"), every=2,
        loss_fn=loss_fn, optimizer=opt,
    )  # fmt: skip
    for batch in data[:4]:
        sgd_step(model, opt, nn.CrossEntropyLoss(), batch)
        est.step(batch)
    sgd_step(model, opt, nn.CrossEntropyLoss(), data[4])
    est.step(data[4])  # not due: the state advances normally
    before = copy.deepcopy(est.state_dict())
    sgd_step(model, opt, nn.CrossEntropyLoss(), data[5])
    fail["now"] = True
    with pytest.raises(RuntimeError, match="product failed"):
        est.step(data[5])
    after = est.state_dict()
    assert after["num_steps"] == before["num_steps"] == 5
    assert strip_seconds(after["history"]) == strip_seconds(before["history"])
    assert after["smoothed"] == before["smoothed"] and after["counts"] == before["counts"]
    assert all(torch.equal(a, b) for a, b in zip(after["snapshots"], before["snapshots"]))
    assert after["span_cur"] == before["span_cur"] and after["span_prev"] == before["span_prev"]
    assert torch.equal(after["generator"], before["generator"])
    assert torch.equal(after["theta_before"], before["theta_before"])
    for m in before["eigenvectors"]:
        assert torch.equal(after["eigenvectors"][m], before["eigenvectors"][m])
    # The retry after the failure is the step that failed.
    fail["now"] = False
    out = est.step(data[5])
    assert est.num_steps == 6 and set(out) == set(est.methods)


def test_observer_contract_gives_the_runner_keys():
    from hessian_lr.observe import Observer, StepContext, run_observers

    model, loss_fn, data = mlp(5), nn.CrossEntropyLoss(), batches(4, seed=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    est = LREstimator(model, methods=("secant", "quadratic"), every=2, loss_fn=loss_fn,
                      optimizer=opt)  # fmt: skip
    assert isinstance(est, Observer)
    recs = []
    for step, batch in enumerate(data):
        sgd_step(model, opt, loss_fn, batch)
        assert est.should_run(step, last=step == 3)
        ctx = StepContext(step=step, model=model, optimizer=opt, batch=batch, lr=0.1)
        recs.append(run_observers([est], ctx, last=step == 3))
    assert recs[0] == {} and recs[2] == {}
    assert set(recs[1]) == {"estimates", "estimates_smoothed"}
    assert recs[3]["estimates"] == est.history[-1]["estimates"]
    assert recs[3]["estimates_smoothed"] == est.history[-1]["smoothed"]
    assert est.num_steps == 4


def spd(n, seed=0):
    return _spd(n, seed, lo=1.0, hi=10.0)
