"""Issue 22's operator-level defects: weight-normalised and compiled models, threads sharing a
model, in-place edits through ``.data``, forwards that write their own parameters. Each against an
independent float64 reference (``jacfwd(grad(f))`` over ``functional_call``, or a hand-written
forward that avoids the op whose double backward is wrong)."""

from __future__ import annotations

import copy
import threading
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd
from torch.nn.utils.parametrizations import weight_norm
from zoo import ZOO, dense_hessian, rel_error

from hessian_lr.curvature import CurvatureOperator, lanczos
from hessian_lr.curvature.hessian import HessianOperator

DT = torch.float64
BACKENDS = ["double-backward", "forward-over-reverse", "finite-difference"]


def _xy(n=10, d=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=DT), torch.randint(0, classes, (n,), generator=g)


def _v(n, k=None, seed=1):
    shape = (n,) if k is None else (n, k)
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def _snapshot(model):
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    flags = [(m.training, dict(vars(m)).get("initialized")) for m in model.modules()]
    return state, flags


def _same(model, snap):
    state, flags = snap
    now = model.state_dict(keep_vars=True)
    return all(torch.equal(now[k].detach(), v) for k, v in state.items()) and flags == [
        (m.training, dict(vars(m)).get("initialized")) for m in model.modules()
    ]


def _dense(model, x, y):
    """jacfwd(grad) of the mean cross-entropy over functional_call, in eval mode (a copy)."""
    model = copy.deepcopy(model).eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        pieces = torch.split(flat, [s.numel() for s in shapes])
        ps = {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}
        return nn.functional.cross_entropy(functional_call(model, ps, (x,)), y)

    return jacfwd(grad(f))(theta)


# ------------------------------------------------------------------ 1. wrong second derivatives
def _weight_norm_mlp():
    torch.manual_seed(0)
    return nn.Sequential(weight_norm(nn.Linear(4, 6)), nn.Tanh(), weight_norm(nn.Linear(6, 3))).to(
        DT
    )


def _weight_norm_reference(model, x, y):
    """The Hessian with W = g v/‖v‖ written by hand: no torch._weight_norm anywhere."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(flat):
        ps = dict(
            zip(
                names,
                (t.view(s) for t, s in zip(torch.split(flat, [s.numel() for s in shapes]), shapes)),
            )
        )
        h = x
        for i in (0, 2):
            g = ps[f"{i}.parametrizations.weight.original0"]
            v = ps[f"{i}.parametrizations.weight.original1"]
            h = h @ (g * v / v.norm(dim=1, keepdim=True)).T + ps[f"{i}.bias"]
            h = torch.tanh(h) if i == 0 else h
        return nn.functional.cross_entropy(h, y)

    H = jacfwd(grad(f))(theta)
    assert (H - H.T).abs().max() < 1e-12
    return H


def test_weight_norm_falls_back_to_finite_differences_with_a_warning():
    model, (x, y) = _weight_norm_mlp(), _xy()
    H = _weight_norm_reference(model, x, y)
    V = _v(H.shape[0], 3)
    raw = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), symmetry_check="off")
    raw_error = rel_error(raw @ V, H @ V)
    if raw_error < 1e-8:
        pytest.skip("this torch's double backward of weight_norm is right")
    for backend in ("auto", "double-backward"):
        op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend=backend)
        with pytest.warns(UserWarning, match="not symmetric"):
            out = op @ V
        assert op.backend == "finite-difference" and "not symmetric" in op.fallback_reason
        assert op.asymmetry > 1e-2  # measured 0.18; float64 rounding would give ~1e-16
        assert rel_error(out, H @ V) < 1e-7  # central differences, measured 1.3e-10
        assert rel_error(op.to_dense(), H) < 1e-7
        w = op.to_scipy().matvec(V[:, 0].numpy())
        assert rel_error(torch.as_tensor(w), H @ V[:, 0]) < 1e-7
    strict = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), symmetry_check="raise")
    with pytest.raises(RuntimeError, match="not symmetric.*finite-difference"):
        strict @ V


def test_any_operator_with_asymmetric_products_is_caught():
    """The probe is the base's: an operator whose products are not symmetric cannot pass."""
    A = torch.randn(3 * 4 + 3, 3 * 4 + 3, dtype=DT, generator=torch.Generator().manual_seed(3))

    class Skewed(CurvatureOperator):
        def _matmat_batch(self, index, batch, V):
            return self.matrix @ V

    data = _xy()
    for matrix, ok in ((A + A.T, True), (A, False)):
        model = nn.Linear(4, 3).to(DT)  # (the verdict is remembered per model)
        op = Skewed(model, nn.CrossEntropyLoss(), data)
        op.matrix = matrix
        v = _v(op.shape[0])
        if ok:
            assert rel_error(op @ v, matrix @ v) < 1e-15 and op.asymmetry < 1e-15
        else:
            with pytest.raises(RuntimeError, match="not symmetric"):
                op @ v
            off = Skewed(model, nn.CrossEntropyLoss(), data, symmetry_check="off")
            off.matrix = matrix
            assert rel_error(off @ v, matrix @ v) < 1e-15


def test_the_probe_runs_once_per_model_and_back_end():
    case = ZOO["ce_unequal_batches"]()
    widths = []

    def spying(op):
        inner = op._matmat_batch
        op._matmat_batch = lambda i, b, V: widths.append(V.shape[1]) or inner(i, b, V)
        return op

    for backend in ("double-backward", "double-backward", "forward-over-reverse"):
        op = spying(HessianOperator(case.model, case.loss_fn, case.data, backend=backend))
        op @ _v(op.shape[0])
        op @ _v(op.shape[0])
    probe, product = [3] * 3, [1] * 3  # three batches: a pass is three per-batch products
    assert widths == probe + product * 2 + product * 2 + probe + product * 2
    model, (x, y) = _weight_norm_mlp(), _xy()
    HessianOperator(model, nn.CrossEntropyLoss(), (x, y), symmetry_check="raise")  # not run
    for _ in range(2):  # the second operator knows the verdict without a probe
        op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
        with pytest.warns(UserWarning, match="not symmetric"):
            op @ _v(op.shape[0])
        assert op.backend == "finite-difference" and op.asymmetry > 1e-2


def test_the_probe_does_not_move_the_global_rng_or_count_as_products():
    model, data = ZOO["ce_unequal_batches"]().model, _xy(d=5)
    state = torch.get_rng_state()
    op = HessianOperator(model, nn.CrossEntropyLoss(), data)
    op @ _v(op.shape[0])
    assert torch.equal(torch.get_rng_state(), state)
    assert op.num_hvps == 1 and op.num_matvecs == 1 and op.asymmetry < 1e-12


# ------------------------------------------------------------------------------ 3. threads
def test_threads_sharing_a_model_never_see_its_flags_flipped():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.1), nn.Tanh(), nn.Linear(8, 3)
    ).to(DT)
    model.train()
    x, y = _xy(n=16)
    fast = torch.backends.mha.get_fastpath_enabled()
    stop, seen = threading.Event(), []
    steps, tracked = 40, []

    def watch():
        while not stop.is_set():
            flags = [m.training for m in model.modules()]
            seen.append((all(flags), model[1].track_running_stats))
            seen.append((torch.backends.mha.get_fastpath_enabled() == fast, True))

    def measure(bn_mode):
        for _ in range(6):
            op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), bn_mode=bn_mode)
            op @ _v(op.shape[0], 2)
            op.gradient()

    def train_forwards():  # a training thread: BatchNorm must keep updating its statistics
        for _ in range(steps):
            before = int(model[1].num_batches_tracked)
            with torch.no_grad():
                model(x)
            tracked.append(int(model[1].num_batches_tracked) - before)

    threads = [threading.Thread(target=measure, args=(m,)) for m in ("eval", "train")]
    threads += [threading.Thread(target=train_forwards), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join()
    stop.set()
    threads[-1].join()
    assert len(seen) > 10 and all(s == (True, True) for s in seen)
    assert tracked == [1] * steps  # every training forward updated the running statistics
    assert all(m.training for m in model.modules()) and model[1].track_running_stats


def _sdpa_flags():
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled())


def test_concurrent_measurements_leave_the_attention_switches_as_found():
    """PyTorch's SDPA kernel switches are process-wide: interleaved save/restore by two threads
    used to leave them flipped; they are now reference-counted (set by the first pass, restored
    by the last)."""
    case = ZOO["tiny_gpt"]()
    before = _sdpa_flags()
    errors = []

    def measure():
        try:
            for _ in range(4):
                op = HessianOperator(case.model, case.loss_fn, case.data)
                op @ _v(op.shape[0])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=measure) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and _sdpa_flags() == before and before[0]


class _ListNet(nn.Module):
    """Submodules also held in a plain list attribute (the forward uses the list)."""

    def __init__(self):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)
        self.layers = [self.a, nn.Tanh(), self.drop, self.b]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_the_shadow_tree_follows_modules_held_in_plain_attributes():
    torch.manual_seed(0)
    model, (x, y) = _ListNet().to(DT).train(), _xy()
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y))
    V = _v(op.shape[0], 2)
    assert rel_error(op @ V, _dense(model, x, y) @ V) < 1e-10  # dropout off in the operator
    assert model.training and model.drop.training and model.layers[2] is model.drop


def test_concurrent_measurements_agree_with_a_lone_one():
    case = ZOO["bn_resnet"]()
    H, _ = dense_hessian(case)
    v = _v(H.shape[0])
    results = []

    def measure():
        op = HessianOperator(case.model, case.loss_fn, case.data)
        results.append(rel_error(op @ v, H @ v))

    threads = [threading.Thread(target=measure) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and max(results) < 1e-10


# --------------------------------------------------------------------- 4. in-place .data edits
def _flip(model):
    model[0].weight.data.neg_()  # norms and |sums| unchanged; the version counter not bumped


def _permute(model):
    perm = torch.arange(model[0].out_features).flip(0)
    model[0].weight.data[:] = model[0].weight.data[perm]
    model[0].bias.data[:] = model[0].bias.data[perm]
    model[2].weight.data[:] = model[2].weight.data[:, perm]  # the same function, permuted H


@pytest.mark.parametrize("edit", [_flip, _permute])
def test_a_reused_operator_sees_norm_preserving_data_edits(edit):
    case = ZOO["ce_unequal_batches"]()
    case.data, case.single_batch = case.data[1], True
    with torch.no_grad():  # multiples of 1/8: every norm and sum is exact in any order, so the
        for p in case.model.parameters():  # edits keep them bit for bit
            p.copy_(torch.round(p * 8) / 8)
    op = HessianOperator(case.model, case.loss_fn, case.data, backend="double-backward")
    v = _v(op.shape[0])
    before = op @ v
    op.gradient()
    edit(case.model)
    H, _ = dense_hessian(case)
    assert rel_error(H @ v, before) > 1e-2  # the edit changed the Hessian
    assert rel_error(op @ v, H @ v) < 1e-10
    g = torch.Generator().manual_seed(0)
    top = lanczos(op, k=1, tol=1e-10, generator=g, progress=False)
    assert float(top.eigenvalues[0]) == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)


@pytest.mark.parametrize("block", [8, 1 << 20])  # several blocks, and one
def test_the_fingerprint_sees_norm_preserving_edits_across_blocks(block, monkeypatch):
    from hessian_lr.curvature import _evaluation

    monkeypatch.setattr(_evaluation, "_BLOCK", block)
    monkeypatch.setattr(_evaluation, "_WEIGHTS", {})
    t = torch.round(torch.randn(6, 7, generator=torch.Generator().manual_seed(0)) * 8) / 8
    key = _evaluation.fingerprint([t])[1]
    edits = [-t, t.flip(0), t.flip(1), t.roll(8), torch.cat([t[3:], t[:3]])]  # same norm and |sum|
    for edited in edits:
        assert float(edited.norm()) == float(t.norm())
        assert _evaluation.fingerprint([edited])[1] != key
    assert _evaluation.fingerprint([t.clone()])[1] == key


# ------------------------------------------------------- 5. forwards that write their parameters
class ActNorm(nn.Module):
    """Glow's ActNorm: the first forward sets loc/log-scale from the data (through ``.data``)."""

    def __init__(self, d):
        super().__init__()
        self.loc, self.logs = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        self.register_buffer("inited", torch.tensor(0))

    def forward(self, x):
        if not bool(self.inited):
            with torch.no_grad():
                self.loc.data.copy_(-x.mean(0))
                self.logs.data.copy_(-torch.log(x.std(0) + 1e-6))
                self.inited.fill_(1)
        return (x + self.loc) * torch.exp(self.logs)


class LSUVLinear(nn.Linear):
    """LSUV-style: the first forward rescales the weight to unit output variance."""

    initialized = False

    def forward(self, x):
        out = super().forward(x)
        if not self.initialized:
            self.weight.data.copy_(self.weight.data / out.std())
            self.initialized = True
            out = super().forward(x)
        return out


def _actnorm():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), ActNorm(5), nn.Tanh(), nn.Linear(5, 3)).to(DT)


def _lsuv():
    torch.manual_seed(0)
    return nn.Sequential(LSUVLinear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)


@pytest.mark.parametrize("make", [_actnorm, _lsuv])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_forward_that_writes_its_parameters(make, backend):
    model, (x, y) = make(), _xy()
    snap = _snapshot(model)
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend=backend)
    with pytest.raises(ValueError, match="writes to its own parameters.*forward pass"):
        op @ _v(op.shape[0])
    assert _same(model, snap)  # bit-identical: parameters, buffers, flags
    with torch.no_grad():
        model(x)  # the caller finishes the initialisation: now there is a Hessian
    H = _dense(model, x, y)
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), backend=backend)
    V = _v(op.shape[0], 2)
    assert rel_error(op @ V, H @ V) < (1e-7 if backend == "finite-difference" else 1e-10)


# ------------------------------------------------------------------------- torch.compile
def test_a_compiled_model_is_measured_through_its_original_module():
    case = ZOO["ce_unequal_batches"]()
    case.data, case.single_batch = case.data[1], True
    compiled = torch.compile(case.model)
    H, _ = dense_hessian(case)
    for backend in BACKENDS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no recompilation warnings: nothing is compiled
            op = HessianOperator(compiled, case.loss_fn, case.data, backend=backend)
            V = _v(op.shape[0], 2)
            tol = 1e-7 if backend == "finite-difference" else 1e-10
            assert op.model is case.model and rel_error(op @ V, H @ V) < tol
