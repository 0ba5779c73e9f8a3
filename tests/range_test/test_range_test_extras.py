"""Range test: config object, mixed precision (autocast + GradScaler), low-precision models, BN
mode of the cross-check, models without parameters, the evaluation helper, the figure, and the
cross-check on an attention model against a dense float64 reference."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hessian_lr.range_test import RangeTestConfig, RangeTestResult, lr_range_test
from hessian_lr.range_test.evaluation import evaluate
from hessian_lr.range_test.plot import plot_range_test


def data(n=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 6, generator=g, dtype=dtype), torch.randint(0, 3, (16,), generator=g))
        for _ in range(n)
    ]


def mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def snapshot(model, opt):
    return (
        [p.detach().clone() for p in model.parameters()],
        [b.detach().clone() for b in model.buffers()],
        [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups],
    )


def test_config_object_and_keywords_agree():
    m, d = mlp(), data()
    kw = dict(start_lr=1e-3, end_lr=1.0, num_steps=12, ramp="exp", curvature_check=False)
    a = lr_range_test(m, torch.optim.SGD(m.parameters(), lr=0.1), d, loss_fn=nn.CrossEntropyLoss(),
                      **kw)  # fmt: skip
    cfg = RangeTestConfig(**kw)
    b = lr_range_test(m, torch.optim.SGD(m.parameters(), lr=0.1), d, loss_fn=nn.CrossEntropyLoss(),
                      config=cfg)  # fmt: skip
    c = lr_range_test(m, torch.optim.SGD(m.parameters(), lr=0.1), d, loss_fn=nn.CrossEntropyLoss(),
                      config=cfg, num_steps=6)  # fmt: skip
    assert a.losses == b.losses and len(c.lrs) == 6
    with pytest.raises(TypeError, match="unexpected keyword.*'num_step'"):
        lr_range_test(m, torch.optim.SGD(m.parameters(), lr=0.1), d, loss_fn=nn.CrossEntropyLoss(),
                      end_lr=1.0, num_step=5)  # fmt: skip
    with pytest.raises(ValueError, match="needs end_lr and num_steps"):
        RangeTestConfig(end_lr=1.0)
    with pytest.raises(ValueError, match="amp_dtype"):
        RangeTestConfig(end_lr=1.0, num_steps=5, amp_dtype=torch.float64)
    with pytest.raises(ValueError, match="bn_mode"):
        RangeTestConfig(end_lr=1.0, num_steps=5, bn_mode="batch")


def test_model_without_parameters_is_a_clear_error():
    model = nn.Sequential(nn.Identity())
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="no trainable parameter"):
        lr_range_test(model, opt, data(), loss_fn=nn.MSELoss(), end_lr=1.0, num_steps=4)


def test_bf16_autocast_runs_records_and_restores():
    m, d = mlp(), data()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    before = snapshot(m, opt)
    res = lr_range_test(m, opt, d, loss_fn=nn.CrossEntropyLoss(), end_lr=1.0, num_steps=10,
                        amp_dtype=torch.bfloat16, val_data=d[0])  # fmt: skip
    assert res.config["amp_dtype"] == "torch.bfloat16" and len(res.lrs) >= 2
    assert all(math.isfinite(x) for x in res.losses)
    # the recorded first loss is the bf16-autocast forward of the untouched model
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = float(nn.CrossEntropyLoss()(m(d[0][0]), d[0][1]))
    assert res.losses[0] == pytest.approx(want, rel=1e-6)
    after = snapshot(m, opt)
    assert all(torch.equal(x, y) for x, y in zip(before[0], after[0]))


def test_grad_scaler_skips_overflow_steps_and_is_restored():
    m, d = mlp(), data()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    # the first scaled loss overflows float32: that step is skipped and the scale backs off
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127, backoff_factor=2.0**-20)
    state = scaler.state_dict()

    def loss_fn(out, y):
        return 100.0 * nn.functional.cross_entropy(out, y)

    res = lr_range_test(m, opt, d, loss_fn=loss_fn, end_lr=0.01, num_steps=8,
                        amp_dtype=torch.bfloat16, grad_scaler=scaler,
                        curvature_check=False)  # fmt: skip
    assert res.skipped_updates == (0,)  # calibration, not a stop
    assert len(res.lrs) == 8 and res.num_updates == 8 - len(res.skipped_updates)
    finite = [g for i, g in enumerate(res.grad_norms) if i not in res.skipped_updates]
    assert finite and all(math.isfinite(g) for g in finite)  # recorded unscaled
    assert scaler.state_dict() == state
    rt = RangeTestResult.from_dict(res.to_dict())
    assert rt.skipped_updates == res.skipped_updates


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_model_casts_inputs(dtype):
    m = mlp().to(dtype)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the cross-check may not support it
        res = lr_range_test(m, opt, data(), loss_fn=nn.CrossEntropyLoss(), end_lr=1.0,
                            num_steps=6, val_data=data(1, seed=3))  # fmt: skip
    assert res.config["input_dtype"] == str(dtype)
    assert math.isfinite(res.losses[0]) and res.val_losses and math.isfinite(res.val_losses[0])
    c = res.curvature
    assert c is not None and (c.lambda_max is not None or c.error)  # a number or a clear error


def test_crosscheck_bn_mode_default_selectable_and_recorded():
    from hessian_lr.lr.defaults import DEFAULT_BN_MODE

    m, d = mlp(bn=True), data()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    lams = {}
    for mode in (None, "train", "eval"):
        res = lr_range_test(m, opt, d, loss_fn=nn.CrossEntropyLoss(), end_lr=0.5, num_steps=3,
                            bn_mode=mode)  # fmt: skip
        assert res.curvature.bn_mode == (mode or DEFAULT_BN_MODE)
        assert res.config["bn_mode"] == res.curvature.bn_mode
        lams[mode] = res.curvature.lambda_max
    assert lams[None] == lams[DEFAULT_BN_MODE]
    assert lams["train"] != pytest.approx(lams["eval"], rel=1e-3)  # two different Hessians


def test_evaluate_weights_batches_and_restores_modes():
    m = mlp(bn=True)
    m[1].eval()  # a mixed-mode model: only the BatchNorm in eval mode
    batches = [data(1, seed=s)[0] for s in range(3)]
    batches[2] = (batches[2][0][:5], batches[2][1][:5])  # unequal sizes
    ev = evaluate(m, batches, nn.CrossEntropyLoss())
    ce = nn.CrossEntropyLoss(reduction="sum")
    with torch.no_grad():
        was = [x.training for x in m.modules()]
        m.eval()
        total = sum(float(ce(m(x), y)) for x, y in batches)
        correct = sum(int((m(x).argmax(1) == y).sum()) for x, y in batches)
        for x, t in zip(m.modules(), was):
            x.training = t
    assert ev.num_samples == 37
    assert ev.loss == pytest.approx(total / 37, rel=1e-6)
    assert ev.accuracy == correct / 37
    assert [x.training for x in m.modules()] == [True, True, False, True, True]
    with pytest.raises(ValueError, match="empty"):
        evaluate(m, [], nn.CrossEntropyLoss())


def test_plot_returns_a_figure_with_the_curves():
    pytest.importorskip("matplotlib")
    m, d = mlp(), data()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    res = lr_range_test(
        m, opt, d, loss_fn=nn.CrossEntropyLoss(), end_lr=1.0, num_steps=12, val_data=d[0]
    )
    fig = plot_range_test(res)
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert "train loss (smoothed)" in labels and "val accuracy" in labels
    assert np.allclose(fig.axes[0].get_lines()[1].get_xdata(), res.lrs)


def test_crosscheck_on_tiny_gpt_matches_dense_reference():
    """Attention (causal SDPA), tied embedding/head, dropout: λ_max against jacfwd(grad)."""
    zoo = pytest.importorskip("zoo")
    case = zoo.ZOO["tiny_gpt"]()
    H, _ = zoo.dense_hessian(case, bn_mode="train")
    lam_ref = float(np.linalg.eigvalsh(H.numpy()).max())
    model = case.model
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    res = lr_range_test(model, opt, case.data, loss_fn=case.loss_fn, end_lr=0.1, num_steps=2)
    c = res.curvature
    assert c.error is None, c.error
    assert c.bn_mode == "train"
    assert c.lambda_max == pytest.approx(lam_ref, rel=1e-6)
    f, theta, _ = zoo.reference_objective(case, bn_mode="train")
    g = torch.func.grad(f)(theta)
    g_hg = float(g @ H @ g)
    assert c.g_hg == pytest.approx(g_hg, rel=1e-6)
    assert c.grad_norm == pytest.approx(float(g.norm()), rel=1e-6)
    if g_hg > 0:
        assert c.quadratic_lr == pytest.approx(float(g @ g) / g_hg, rel=1e-6)


def test_device_without_index_is_the_current_device(monkeypatch):
    """``device="cuda"`` must match parameters on ``cuda:0`` (torch.device("cuda") != "cuda:0")."""
    from hessian_lr._device import canonical_device
    from hessian_lr.curvature.linop import LinearOperator

    assert canonical_device("cpu") == torch.device("cpu")
    assert canonical_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert canonical_device("cuda") == torch.device("cuda", 0)
    # The operators share the rule: vectors on cuda:0 match an operator built with "cuda".
    assert LinearOperator(3, torch.float32, "cuda").device == torch.device("cuda", 0)
    # A model on another device than the one named is still refused, by name.
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="live on cpu, not on device=cuda:0"):
        lr_range_test(
            model, opt, data(), loss_fn=nn.MSELoss(), end_lr=1.0, num_steps=3, device="cuda"
        )
