"""Curvature-engine benchmark: HVP cost per back end, eigensolvers and SLQ against peer tools.

Issue #2's benchmark, as ratios measured in one run (methods notes §1–2). Models, float32, one
batch each, at initialization (seed 0), every module in eval mode (BatchNorm on running stats):

* ``mlp``: MLP 784-256-128-10 with **tanh** (smooth, so finite differences are fair), on 1,024
  Fashion-MNIST training images (a stratified subset; synthetic data of the same shape if the
  files are absent, said in the output);
* ``lenet``: LeNet-5 (ReLU, max pooling) on the same 1,024 images;
* ``resnet20``: CIFAR ResNet-20 (He et al. 2016; ReLU, BatchNorm) on a batch of 128
  (CIFAR-10 when a CIFAR folder is found by ``hessian_lr.training.data``, else synthetic
  CIFAR-shaped data, said in the output).

Sections: [1] HVP time / gradient time per back end, where the gradient is one
``torch.autograd.grad`` of the mean loss (forward included: the work of a training step's
backward); [2] k = 16 vmapped HVPs vs 16 sequential, and k = 8 vmapped per HVP / gradient;
[3] the finite-difference HVP's relative error against the exact HVP; [4] λ_max and the top 5:
HVPs, seconds and relative error against a float64 reference, ours (``lanczos``,
``power_iteration``) vs PyHessian, curvlinops + ``scipy.sparse.linalg.eigsh`` and
hessian-eigenthings (each skipped with a message when not installed); [5] SLQ density with 100
Lanczos steps, ours vs PyHessian. Then the ratio table with issue #2's targets (PASS/MISS).

Run ``python benchmarks/bench_curvature.py --help``; see ``benchmarks/README.md`` for what each
number means.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import inspect
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE), str(_HERE.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _timing import configure_threads, interleaved, median, paired_ratio, timed  # noqa: E402

from hessian_lr.curvature import lanczos, spectral_density  # noqa: E402
from hessian_lr.curvature.hessian import HessianOperator  # noqa: E402
from hessian_lr.curvature.power import power_iteration  # noqa: E402
from hessian_lr.curvature.trace import trace_estimate  # noqa: E402

MODEL_KEYS = ("mlp", "lenet", "resnet20")
PEER_KEYS = ("pyhessian", "curvlinops", "eigenthings")
TOL = 1e-4  # the accuracy target: relative error 1e-4
REF_TOL = 1e-10  # ARPACK tolerance of the float64 reference
SLQ_STEPS = 100
K_TOP = 5

# Targets of issue #2 (ratio <= target).
TARGET_HVP = {"mlp": 1.5, "lenet": 2.5, "resnet20": 2.5}
TARGET_VMAP8_MLP = 1.6
TARGET_LMAX_VS_PYHESSIAN = 0.6  # issue 17: ≤ 0.6× PyHessian's HVPs and time
TARGET_LMAX_VS_CURVLINOPS = 0.3
TARGET_TOP5_VS_PYHESSIAN = 0.5
TARGET_TOP5_HVPS_VS_EIGSH = 1.0
TARGET_SLQ_VS_PYHESSIAN = 0.5
TARGET_AGREEMENT = 1e-4


# ------------------------------------------------------------------------------------ modes
@dataclass(frozen=True)
class Mode:
    """How much work a run does.

    Solver sections per model: "lmax", "top5", "slq"; "extras" adds the runs no target needs
    (our power iteration, hessian-eigenthings); "power5" adds our power iteration for the top 5.
    """

    name: str
    tiny: bool
    hvp_rounds: dict[str, int]
    batched_rounds: dict[str, int]  # models absent: section skipped
    fd_vectors: int
    fd_eps: tuple[float | None, ...]  # None = the operator's default
    solver_sections: dict[str, tuple[str, ...]]
    solver_rounds: dict[str, int]
    overhead: dict[str, tuple[int, int]] = field(default_factory=dict)  # model: (rounds, steps)
    trace: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # (budget, seeds, ref)


MODES = {
    "smoke": Mode(
        name="smoke",
        tiny=True,
        hvp_rounds={"mlp": 2, "lenet": 1, "resnet20": 1},
        batched_rounds={"mlp": 1},
        fd_vectors=1,
        fd_eps=(None, 1e-1),
        solver_sections={"mlp": ("lmax", "top5", "slq", "extras"), "lenet": (), "resnet20": ()},
        solver_rounds={"mlp": 1, "lenet": 1, "resnet20": 1},
        overhead={"mlp": (2, 20)},
        trace={"mlp": (30, 3, 120)},
    ),
    "quick": Mode(
        name="quick",
        tiny=False,
        hvp_rounds={"mlp": 8, "lenet": 3, "resnet20": 2},
        batched_rounds={"mlp": 5},
        fd_vectors=1,
        fd_eps=(1e-3, None, 1e-1),
        solver_sections={
            "mlp": ("lmax", "top5", "slq"),
            "lenet": ("lmax",),
            "resnet20": (),
        },
        solver_rounds={"mlp": 1, "lenet": 1, "resnet20": 1},
        overhead={"mlp": (2, 30)},
        trace={"mlp": (30, 3, 150)},
    ),
    "full": Mode(
        name="full",
        tiny=False,
        hvp_rounds={"mlp": 25, "lenet": 9, "resnet20": 5},
        batched_rounds={"mlp": 9, "lenet": 3, "resnet20": 1},
        fd_vectors=3,
        fd_eps=(1e-4, 1e-3, None, 1e-2, 1e-1),
        solver_sections={
            "mlp": ("lmax", "top5", "slq", "extras", "power5"),
            "lenet": ("lmax", "top5", "slq", "extras"),
            "resnet20": ("lmax", "top5", "slq", "extras"),
        },
        solver_rounds={"mlp": 3, "lenet": 2, "resnet20": 1},
        overhead={"mlp": (5, 100), "lenet": (3, 100)},
        trace={"mlp": (30, 5, 1000), "lenet": (30, 5, 1000)},
    ),
}


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    """One model on one batch."""

    key: str
    label: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    data_note: str
    loss: nn.Module = field(default_factory=nn.CrossEntropyLoss)

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def operator(self, **kw: Any) -> HessianOperator:
        return HessianOperator(self.model, self.loss, (self.x, self.y), **kw)


def _local_models() -> Any:
    """``hessian_lr.training.models`` (the package's MLP, LeNet5, CifarResNet)."""
    return importlib.import_module("hessian_lr.training.models")


def _image_data(n: int, *, synthetic: bool, root: str | None, seed: int) -> tuple[Any, str]:
    """1,024 (or n) Fashion-MNIST training images, or synthetic ones of the same shape."""
    data = importlib.import_module("hessian_lr.training.data")
    if not synthetic:
        try:
            ds = data.load_dataset("fashion-mnist", root=root, subset=n, seed=seed)
            return ds, f"Fashion-MNIST train, {n:,} images (stratified subset, seed {seed})"
        except data.DatasetNotFoundError:
            reason = "Fashion-MNIST files not found"
    else:
        reason = "smoke mode"
    ds = data.synthetic_like("fashion-mnist", n, seed=seed)
    return ds, f"SYNTHETIC Fashion-MNIST-shaped data, {n:,} images ({reason})"


def _cifar_data(n: int, *, synthetic: bool, root: str | None, seed: int) -> tuple[Any, str]:
    data = importlib.import_module("hessian_lr.training.data")
    if not synthetic:
        try:
            ds = data.load_dataset("cifar10", root=root, subset=n, seed=seed)
            return ds, f"CIFAR-10 train, batch of {n} (stratified subset, seed {seed})"
        except data.DatasetNotFoundError:
            reason = "no CIFAR-10 folder configured/found"
    else:
        reason = "smoke mode"
    ds = data.synthetic_like("cifar10", n, seed=seed)
    return ds, f"SYNTHETIC CIFAR-shaped data, batch of {n} ({reason})"


def build_cases(
    keys: tuple[str, ...], mode: Mode, device: torch.device, *, root: str | None, seed: int
) -> list[Case]:
    """The benchmark's models and batches (tiny ones in smoke mode), in eval mode on ``device``."""
    models = _local_models()
    n_img = 64 if mode.tiny else 1024
    n_cifar = 16 if mode.tiny else 128
    cases = []
    images = None
    for key in keys:
        torch.manual_seed(seed)
        if key in ("mlp", "lenet"):
            if images is None:
                images = _image_data(n_img, synthetic=mode.tiny, root=root, seed=seed)
            ds, note = images
            if key == "mlp":
                hidden = (32,) if mode.tiny else (256, 128)
                model = models.MLP(784, hidden, 10, activation="tanh")
                label = f"MLP 784-{'-'.join(map(str, hidden))}-10, tanh"
            else:
                if mode.tiny:
                    model = models.LeNet5(1, 10, input_size=28, channels=(2, 4), hidden=(16,))
                    label = "LeNet-5 (tiny: 2/4 filters, fc16), ReLU, max-pool"
                else:
                    model = models.LeNet5(1, 10, input_size=28)
                    label = "LeNet-5 (6/16 filters, fc120-84), ReLU, max-pool"
        elif key == "resnet20":
            ds, note = _cifar_data(n_cifar, synthetic=mode.tiny, root=root, seed=seed)
            if mode.tiny:
                model = models.CifarResNet(8, 10, width=4)
                label = "ResNet-8 width 4 (tiny stand-in), ReLU, BatchNorm (eval)"
            else:
                model = models.resnet20(10)
                label = "ResNet-20 (CIFAR, option A), ReLU, BatchNorm (eval)"
        else:
            raise ValueError(f"unknown model {key!r}; choose from {MODEL_KEYS}")
        model = model.to(device).eval()
        x, y = ds.x.to(device), ds.y.to(device)
        cases.append(Case(key, label, model, x, y, note))
    return cases


# ------------------------------------------------------------------------------------ peers
@dataclass
class Peers:
    modules: dict[str, Any]
    messages: dict[str, str]

    def get(self, key: str) -> Any:
        return self.modules.get(key)


def load_peers(wanted: tuple[str, ...]) -> Peers:
    """Import the peer tools that are installed; a message for each one skipped."""
    names = {
        "pyhessian": ("pyhessian", "pyhessian"),
        "curvlinops": ("curvlinops", "curvlinops-for-pytorch"),
        "eigenthings": ("hessian_eigenthings", "hessian-eigenthings"),
    }
    modules: dict[str, Any] = {}
    messages: dict[str, str] = {}
    for key in PEER_KEYS:
        module_name, dist = names[key]
        if key not in wanted:
            messages[key] = f"{dist}: skipped (not requested with --peers)"
            continue
        try:
            mod = importlib.import_module(module_name)
        except Exception as err:  # ImportError, or a broken install
            messages[key] = (
                f"{dist}: skipped (not importable: {type(err).__name__}: {err}; "
                "install the 'peers' extra)"
            )
            continue
        version = _dist_version(dist) or getattr(mod, "__version__", "?")
        if key == "pyhessian":
            problem = _check_pyhessian(mod)
            if problem:
                messages[key] = f"{dist} {version}: skipped ({problem})"
                continue
            messages[key] = (
                f"{dist} {version} (HVPs counted by wrapping pyhessian.hessian."
                "hessian_vector_product; density() calls torch.eig, removed in torch 2: "
                "shimmed with torch.linalg.eig for the run)"
            )
        else:
            messages[key] = f"{dist} {version}"
        modules[key] = mod
    return Peers(modules, messages)


def _dist_version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def _check_pyhessian(mod: Any) -> str | None:
    """PyHessian's HVPs all go through the module-level ``hessian_vector_product`` we wrap."""
    hmod = sys.modules.get("pyhessian.hessian")
    if hmod is None or not hasattr(hmod, "hessian_vector_product"):
        return "pyhessian.hessian.hessian_vector_product not found: cannot count HVPs"
    src = inspect.getsource(hmod.hessian)
    if "hessian_vector_product(" not in src:
        return "its eigenvalues()/density() do not call hessian_vector_product: cannot count"
    return None


@contextlib.contextmanager
def _count_pyhessian_hvps() -> Iterator[list[int]]:
    hmod = sys.modules["pyhessian.hessian"]
    original = hmod.hessian_vector_product
    counter = [0]

    def counting(gradsH: Any, params: Any, v: Any) -> Any:
        counter[0] += 1
        return original(gradsH, params, v)

    hmod.hessian_vector_product = counting
    try:
        yield counter
    finally:
        hmod.hessian_vector_product = original


@contextlib.contextmanager
def _torch_eig_shim() -> Iterator[None]:
    """``torch.eig(A, eigenvectors=True)`` (removed in torch 2) via ``torch.linalg.eig``."""
    original = getattr(torch, "eig", None)

    def eig(A: torch.Tensor, eigenvectors: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        L, V = torch.linalg.eig(A)
        vals = torch.stack([L.real, L.imag], dim=1)
        return vals, (V.real if eigenvectors else torch.empty(0, dtype=A.dtype))

    torch.eig = eig
    try:
        yield
    finally:
        if original is None:
            del torch.eig
        else:
            torch.eig = original


@contextlib.contextmanager
def _quiet_pyhessian(model: nn.Module) -> Iterator[None]:
    """Silence the warning of PyHessian's ``backward(create_graph=True)`` and, afterwards, break
    the parameter <-> .grad reference cycle it creates (else each run's graph leaks)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
            yield
    finally:
        for p in model.parameters():
            p.grad = None


# ------------------------------------------------------------------------------------ [1] HVP cost
def _gradient_fn(case: Case) -> Callable[[], Any]:
    params = case.params

    def gradient() -> Any:
        return torch.autograd.grad(case.loss(case.model(case.x), case.y), params)

    return gradient


def bench_hvp(case: Case, rounds: int, seed: int) -> dict[str, Any]:
    """Steady-state HVP time / gradient time per back end, interleaved rounds."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(case.num_params, generator=g).to(case.device)
    ops = {
        "fwd-over-rev": case.operator(backend="forward-over-reverse"),
        "db-cached": case.operator(backend="double-backward", cache_graph=True),
        "db-uncached": case.operator(backend="double-backward", cache_graph=False),
        "fd-central": case.operator(backend="finite-difference", fd_scheme="central"),
    }
    auto = case.operator()
    auto @ v
    fns: dict[str, Callable[[], Any]] = {"gradient": _gradient_fn(case)}
    errors: dict[str, str] = {}
    for name, op in ops.items():
        try:
            op @ v
        except Exception as err:  # a back end that cannot run this model
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        fns[name] = lambda op=op: op @ v
    fns["db-first"] = lambda: case.operator(backend="double-backward") @ v
    t = interleaved(fns, rounds=rounds, warmup=1, device=case.device)
    grad_s = t["gradient"].median
    return {
        "rounds": rounds,
        "gradient_ms": 1e3 * grad_s,
        "gradient_spread": t["gradient"].spread,
        "ms": {k: 1e3 * tm.median for k, tm in t.items()},
        "ratio": {k: paired_ratio(tm, t["gradient"]) for k, tm in t.items() if k != "gradient"},
        "auto_backend": auto.backend,
        "errors": errors,
    }


# ------------------------------------------------------------------------------------ [2] batched
def bench_batched(case: Case, rounds: int, seed: int) -> dict[str, Any]:
    """k = 16 vmapped vs 16 sequential HVPs, and k = 8 vmapped per HVP / gradient."""
    g = torch.Generator().manual_seed(seed + 1)
    V16 = torch.randn(case.num_params, 16, generator=g).to(case.device)
    V8 = V16[:, :8].contiguous()
    cols = [V16[:, j].contiguous() for j in range(16)]
    fns: dict[str, Callable[[], Any]] = {"gradient": _gradient_fn(case)}
    errors: dict[str, str] = {}
    backends = {"db-cached": "double-backward", "fwd-over-rev": "forward-over-reverse"}
    for name, backend in backends.items():
        op = case.operator(backend=backend, chunk_size=16)
        try:
            op @ V8
        except Exception as err:
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        fns[f"{name} vmap16"] = lambda op=op: op @ V16
        fns[f"{name} seq16"] = lambda op=op: [op @ c for c in cols]
        fns[f"{name} vmap8"] = lambda op=op: op @ V8
    t = interleaved(fns, rounds=rounds, warmup=1, device=case.device)
    out: dict[str, Any] = {"rounds": rounds, "errors": errors, "vmap16_over_seq16": {}}
    out["vmap8_per_hvp_over_grad"] = {}
    for name in backends:
        if f"{name} vmap16" not in t:
            continue
        out["vmap16_over_seq16"][name] = paired_ratio(t[f"{name} vmap16"], t[f"{name} seq16"])
        per_hvp = [s / 8 for s in t[f"{name} vmap8"].samples]
        out["vmap8_per_hvp_over_grad"][name] = paired_ratio(per_hvp, t["gradient"])
    return out


# ------------------------------------------------------------------------------------ [3] FD error
def bench_fd_error(
    case: Case, eps_list: tuple[float | None, ...], num_vectors: int, seed: int
) -> dict[str, Any]:
    """‖H_fd v − H v‖ / ‖H v‖ for central differences, per relative step ``fd_eps``."""
    exact = case.operator(backend="double-backward")
    g = torch.Generator().manual_seed(seed + 2)
    vs = [torch.randn(case.num_params, generator=g).to(case.device) for _ in range(num_vectors)]
    hvs = [exact @ v for v in vs]
    out: dict[str, float] = {}
    default_eps = None
    for eps in eps_list:
        op = case.operator(backend="finite-difference", fd_scheme="central", fd_eps=eps)
        if eps is None:
            default_eps = op.fd_eps
        errs = [float((op @ v - hv).norm() / hv.norm()) for v, hv in zip(vs, hvs)]
        out["default" if eps is None else f"{eps:g}"] = median(errs)
    best_key = min(out, key=out.get)
    return {
        "by_eps": out,
        "default_eps": default_eps,
        "default": out.get("default", float("nan")),
        "best": out[best_key],
        "best_eps": best_key,
        "num_vectors": num_vectors,
    }


# ------------------------------------------------------------------------------------ [4] solvers
@dataclass
class Run:
    """One solver run: products, wall time (setup included), eigenvalues (descending)."""

    hvps: int
    seconds: float
    eigenvalues: list[float]
    setup_seconds: float = 0.0
    note: str = ""
    vectors: torch.Tensor | None = None


def _sorted_desc(values: Any) -> list[float]:
    return sorted((float(v) for v in np.asarray(values, dtype=np.float64).ravel()), reverse=True)


def _caught(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(x.message).split(";")[0] for x in w if issubclass(x.category, RuntimeWarning)]


def run_ours_lanczos(case: Case, k: int, seed: int) -> Run:
    def go() -> Any:
        op = case.operator()  # auto: double backward with the graph cached (one batch)
        gen = torch.Generator().manual_seed(seed)
        res = lanczos(
            op, k=k, which="LA", tol=TOL, stop="eigenvalue", generator=gen, progress=False
        )
        return res, op.backend

    ((res, backend), warns), sec = timed(lambda: _caught(go), device=case.device)
    note = backend + ("" if res.converged else " NOT CONVERGED")
    return Run(
        res.num_matvecs, sec, _sorted_desc(res.eigenvalues), note=note, vectors=res.eigenvectors
    )


def run_ours_power(case: Case, k: int, seed: int) -> Run:
    def go() -> Any:
        op = case.operator()
        gen = torch.Generator().manual_seed(seed)
        return power_iteration(op, k=k, which="LA", tol=TOL, generator=gen)

    (res, warns), sec = timed(lambda: _caught(go), device=case.device)
    note = "" if res.converged else "hit max_iter"
    return Run(res.num_matvecs, sec, _sorted_desc(res.eigenvalues), note=note)


def run_pyhessian_eigs(
    case: Case, peers: Peers, k: int, seed: int, *, tol: float, max_iter: int = 100
) -> Run:
    ph = peers.get("pyhessian")
    model = copy.deepcopy(case.model)  # its constructor calls model.eval() and backward()
    torch.manual_seed(seed)  # it draws start vectors from the global generator
    cuda = case.device.type == "cuda"

    def go() -> Any:
        t0 = time.perf_counter()
        h = ph.hessian(model, case.loss, data=(case.x, case.y), cuda=cuda)
        setup = time.perf_counter() - t0
        vals, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        return vals, setup

    with _count_pyhessian_hvps() as count, _quiet_pyhessian(model):
        (vals, setup), sec = timed(go, device=case.device)
    return Run(count[0], sec, _sorted_desc(vals), setup_seconds=setup)


def run_pyhessian_density(case: Case, peers: Peers, seed: int) -> Run:
    ph = peers.get("pyhessian")
    model = copy.deepcopy(case.model)
    torch.manual_seed(seed)
    cuda = case.device.type == "cuda"

    def go() -> Any:
        h = ph.hessian(model, case.loss, data=(case.x, case.y), cuda=cuda)
        return h.density(iter=SLQ_STEPS, n_v=1)

    with _count_pyhessian_hvps() as count, _torch_eig_shim(), _quiet_pyhessian(model):
        (nodes, _weights), sec = timed(go, device=case.device)
    return Run(count[0], sec, [max(nodes[0])])


def run_ours_density(case: Case, seed: int) -> Run:
    def go() -> Any:
        op = case.operator()
        gen = torch.Generator().manual_seed(seed)
        return spectral_density(
            op, num_probes=1, num_steps=SLQ_STEPS, generator=gen, progress=False
        )

    sd, sec = timed(go, device=case.device)
    return Run(sd.num_matvecs, sec, [float(np.max(sd.nodes))])


def run_curvlinops_eigsh(case: Case, peers: Peers, k: int, seed: int) -> Run:
    import scipy.sparse.linalg as sla

    cl = peers.get("curvlinops")
    count = [0]
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(case.num_params)

    def go() -> Any:
        t0 = time.perf_counter()
        H = cl.HessianLinearOperator(case.model, case.loss, case.params, [(case.x, case.y)])
        A = H.to_scipy()  # float64 numpy in and out, float32 products in torch
        setup = time.perf_counter() - t0

        def mv(X: np.ndarray) -> np.ndarray:
            count[0] += 1 if X.ndim == 1 else X.shape[1]
            return A.matvec(X) if X.ndim == 1 else A.matmat(X)

        B = sla.LinearOperator(A.shape, matvec=mv, matmat=mv, dtype=A.dtype)
        vals = sla.eigsh(B, k=k, which="LA", tol=TOL, v0=v0, return_eigenvectors=False)
        return vals, setup

    (vals, setup), sec = timed(go, device=case.device)
    return Run(count[0], sec, _sorted_desc(vals), setup_seconds=setup, note="eigsh tol=1e-4")


def run_eigenthings(case: Case, peers: Peers, k: int, seed: int) -> Run:
    he = peers.get("eigenthings")
    count = [0]

    def go() -> Any:
        op = he.HessianOperator(case.model, [(case.x, case.y)], he.supervised_loss(case.loss))
        inner = op.matvec

        def matvec(v: torch.Tensor) -> torch.Tensor:
            count[0] += 1
            return inner(v)

        op.matvec = matvec
        if k == 1:
            lam, _vec, _res, _it, conv = he.power_iteration_one(
                op, tol=TOL, max_iter=100, seed=seed
            )
            return [lam], "power_iteration_one tol=1e-4" + ("" if conv else " NOT CONVERGED")
        res = he.lanczos(op, k=k, which="LA", tol=TOL, max_iter=50, seed=seed)
        return res.eigenvalues.tolist(), "lanczos, 50 fixed steps (no early stop)"

    (vals, note), sec = timed(go, device=case.device)
    return Run(count[0], sec, _sorted_desc(vals), note=note + ", uncached HVP")


def reference_eigenvalues(case: Case, k: int, v0: torch.Tensor | None) -> dict[str, Any]:
    """Top-k eigenvalues of the float64 Hessian: eigsh(tol=1e-10) on a float64 copy.

    Float32 products carry relative rounding noise of roughly 1e-7 to 1e-6 of ‖H‖, which is the
    floor of any float32 solver; ARPACK's tolerance cannot be pushed near it in float32. A float64
    copy of the model and batch has no such floor, so its eigenvalues are the truth that every
    float32 solver is measured against (its own floor ≪ 1e-4). ``v0`` (our Ritz vectors, summed)
    only speeds ARPACK up: convergence to 1e-10 is still ARPACK's own test.
    """
    import scipy.sparse.linalg as sla

    model64 = copy.deepcopy(case.model).double()
    op = HessianOperator(model64, case.loss, (case.x.double(), case.y), backend="double-backward")
    start = None
    if v0 is not None:
        start = v0.double().reshape(case.num_params, -1).sum(dim=1).cpu().numpy()
    t0 = time.perf_counter()
    ncv = min(case.num_params, 10 if k == 1 else 20)
    vals = sla.eigsh(
        op.to_scipy(), k=k, which="LA", tol=REF_TOL, v0=start, ncv=ncv, return_eigenvectors=False
    )
    return {
        "eigenvalues": _sorted_desc(vals),
        "hvps": op.num_hvps,
        "seconds": time.perf_counter() - t0,
        "k": k,
    }


def _rel_err(values: list[float], ref: list[float], k: int) -> float:
    if len(values) < k:
        return float("nan")
    return max(abs(a - b) / abs(b) for a, b in zip(values[:k], ref[:k]))


def _warm_up(case: Case) -> None:
    """Untimed: graph build, products, Gram-Schmidt, so the first timed solver pays no one-time
    costs (kernel selection, allocator growth) that the others would not."""
    gen = torch.Generator().manual_seed(12345)
    _caught(lambda: lanczos(case.operator(), k=2, tol=1e-1, max_iter=4, generator=gen))
    _gradient_fn(case)()


def bench_solvers(
    case: Case, sections: tuple[str, ...], rounds: int, peers: Peers, seed: int, log: Callable
) -> dict[str, Any]:
    """Eigensolver and SLQ runs, interleaved by round (same seed for every solver in a round)."""
    plan: list[tuple[str, str, Callable[[int], Run]]] = []
    if "lmax" in sections:
        plan.append(("lmax", "ours lanczos", lambda s: run_ours_lanczos(case, 1, s)))
        if "extras" in sections:
            plan.append(("lmax", "ours power", lambda s: run_ours_power(case, 1, s)))
        if peers.get("pyhessian"):
            plan.append(
                (
                    "lmax",
                    "pyhessian tol=1e-4",
                    lambda s: run_pyhessian_eigs(case, peers, 1, s, tol=TOL),
                )
            )
            # PyHessian's tol bounds the change between iterations, not the error: at 1e-4 it
            # stops short of 1e-4 accuracy. Run to 10x tighter too: the equal-accuracy peer.
            plan.append(
                (
                    "lmax",
                    "pyhessian tol=1e-5",
                    lambda s: run_pyhessian_eigs(case, peers, 1, s, tol=TOL / 10),
                )
            )
        if peers.get("curvlinops"):
            plan.append(
                ("lmax", "curvlinops+eigsh", lambda s: run_curvlinops_eigsh(case, peers, 1, s))
            )
        if peers.get("eigenthings") and "extras" in sections:
            plan.append(("lmax", "eigenthings", lambda s: run_eigenthings(case, peers, 1, s)))
    if "top5" in sections:
        plan.append(("top5", "ours lanczos", lambda s: run_ours_lanczos(case, K_TOP, s)))
        if "power5" in sections:
            plan.append(("top5", "ours power", lambda s: run_ours_power(case, K_TOP, s)))
        if peers.get("pyhessian"):
            plan.append(
                (
                    "top5",
                    "pyhessian defaults",
                    lambda s: run_pyhessian_eigs(case, peers, K_TOP, s, tol=1e-3),
                )
            )
        if peers.get("curvlinops"):
            plan.append(
                ("top5", "curvlinops+eigsh", lambda s: run_curvlinops_eigsh(case, peers, K_TOP, s))
            )
        if peers.get("eigenthings") and "extras" in sections:
            plan.append(("top5", "eigenthings", lambda s: run_eigenthings(case, peers, K_TOP, s)))
    if "slq" in sections:
        plan.append(("slq", "ours", lambda s: run_ours_density(case, s)))
        if peers.get("pyhessian"):
            plan.append(("slq", "pyhessian", lambda s: run_pyhessian_density(case, peers, s)))

    _warm_up(case)
    runs: dict[tuple[str, str], list[Run | str]] = {(sec, name): [] for sec, name, _ in plan}
    n = len(plan)
    for r in range(rounds):
        for i in range(n):
            section, name, fn = plan[(r + i) % n]
            try:
                run = fn(1000 + r)
            except Exception as err:  # a peer failing on this model must not end the run
                run = f"failed: {type(err).__name__}: {err}"[:200]
            runs[(section, name)].append(run)
            if isinstance(run, Run):
                msg = f"{run.hvps:5d} HVPs {run.seconds:6.1f} s"
                log(f"    {case.key} {section:4s} {name:20s} {msg}")
            else:
                log(f"    {case.key} {section:4s} {name:20s} {run}")

    # Reference: float64 eigsh, warm-started from our best Ritz vectors.
    k_ref = K_TOP if "top5" in sections else 1
    v0 = None
    for key in (("top5", "ours lanczos"), ("lmax", "ours lanczos")):
        good = [r for r in runs.get(key, []) if isinstance(r, Run) and r.vectors is not None]
        if good:
            v0 = good[0].vectors
            break
    out: dict[str, Any] = {"rounds": rounds, "sections": list(sections)}
    if "lmax" in sections or "top5" in sections:
        ref = reference_eigenvalues(case, k_ref, v0)
        log(
            f"    {case.key} reference (float64 eigsh k={k_ref}): {ref['hvps']} HVPs, "
            f"{ref['seconds']:.1f} s"
        )
        out["reference"] = ref

    for (section, name), rs in runs.items():
        ok = [r for r in rs if isinstance(r, Run)]
        entry: dict[str, Any] = {"failures": [r for r in rs if isinstance(r, str)]}
        if ok:
            entry.update(
                hvps=median([r.hvps for r in ok]),
                seconds=median([r.seconds for r in ok]),
                setup_seconds=median([r.setup_seconds for r in ok]),
                hvps_all=[r.hvps for r in ok],
                seconds_all=[r.seconds for r in ok],
                eigenvalues=ok[0].eigenvalues,
                note=ok[0].note,
            )
            if section in ("lmax", "top5") and "reference" in out:
                k = 1 if section == "lmax" else K_TOP
                errs = [_rel_err(r.eigenvalues, out["reference"]["eigenvalues"], k) for r in ok]
                entry["rel_error"] = max(errs)  # worst over rounds
        out.setdefault(section, {})[name] = entry
    # Paired (same-round) time ratios: ours / peer.
    out["paired"] = {}
    for section, ours in (("lmax", "ours lanczos"), ("top5", "ours lanczos"), ("slq", "ours")):
        mine = runs.get((section, ours), [])
        for (sec, name), rs in runs.items():
            if sec != section or name.startswith("ours"):
                continue
            pairs = [
                (a.seconds / b.seconds, a.hvps / max(b.hvps, 1))
                for a, b in zip(mine, rs)
                if isinstance(a, Run) and isinstance(b, Run)
            ]
            if pairs:
                out["paired"][f"{section}: ours/{name}"] = {
                    "time": median([p[0] for p in pairs]),
                    "hvps": median([p[1] for p in pairs]),
                }
    return out


# ------------------------------------------------------------------------------------ [6] issue 17
def bench_overhead(case: Case, rounds: int, seed: int, steps: int) -> dict[str, Any]:
    """Solver loop vs bare products, interleaved: ``steps`` bare cached double-backward products
    (``torch.autograd.grad`` on one first-order graph), the same through ``op @ v``, SLQ with
    ``steps`` steps and a Lanczos run of at most ``steps`` steps (compared per product)."""
    params = case.params
    g = torch.Generator().manual_seed(seed + 3)
    v = torch.randn(case.num_params, generator=g).to(case.device)
    grads = torch.autograd.grad(case.loss(case.model(case.x), case.y), params, create_graph=True)
    vs = [c.reshape(p.shape) for c, p in zip(torch.split(v, [p.numel() for p in params]), params)]
    op = case.operator(backend="double-backward", cache_graph=True)
    op @ v

    def bare() -> None:
        for _ in range(steps):
            torch.autograd.grad(grads, params, vs, retain_graph=True)

    def through_op() -> None:
        for _ in range(steps):
            op @ v

    def slq() -> Any:
        gen = torch.Generator().manual_seed(seed)
        return spectral_density(op, num_steps=steps, generator=gen, progress=False)

    def slq_plain() -> Any:  # no re-orthogonalization: the products are all the work
        gen = torch.Generator().manual_seed(seed)
        return spectral_density(op, num_steps=steps, generator=gen, progress=False, reorth="none")

    def lz() -> Any:
        gen = torch.Generator().manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lanczos(op, tol=1e-30, max_iter=steps, generator=gen, progress=False)

    t = interleaved(
        {"bare": bare, "op": through_op, "slq": slq, "slq_plain": slq_plain, "lanczos": lz},
        rounds=rounds,
        warmup=1,
        device=case.device,
    )
    lz_steps = lz().num_matvecs  # Lanczos may stop early at the float32 floor: per product
    per_lz = [x / lz_steps for x in t["lanczos"].samples]
    per_bare = [x / steps for x in t["bare"].samples]
    return {
        "steps": steps,
        "rounds": rounds,
        "bare_ms_per_hvp": 1e3 * t["bare"].median / steps,
        "op_over_bare": paired_ratio(t["op"], t["bare"]),
        "slq_over_bare": paired_ratio(t["slq"], t["bare"]),
        "slq_plain_over_bare": paired_ratio(t["slq_plain"], t["bare"]),
        "lanczos_over_bare": paired_ratio(per_lz, per_bare),
        "lanczos_steps": lz_steps,
    }


def _curvlinops_traces(case: Case, peers: Peers, budget: int, seeds: int, seed: int) -> dict:
    """curvlinops' own XTrace and Hutch++ (its random vectors from torch's global RNG, seeded
    per repetition and restored after) at ``budget`` products: ``{name: [estimate per seed]}``."""
    cl = peers.get("curvlinops")
    if cl is None or not hasattr(cl, "xtrace"):
        return {}
    H = cl.HessianLinearOperator(case.model, case.loss, case.params, [(case.x, case.y)])
    out: dict[str, list[float]] = {}
    state = torch.random.get_rng_state()
    try:
        for name, fn, n in (
            ("curvlinops xtrace", cl.xtrace, budget - budget % 2),  # needs an even count
            ("curvlinops hutch++", cl.hutchpp_trace, budget - budget % 3),  # a multiple of 3
        ):
            vals = []
            for s in range(seeds):
                torch.manual_seed(seed + 1000 + s)
                vals.append(float(fn(H, n)))
            out[name] = vals
    finally:
        torch.random.set_rng_state(state)
    return out


def bench_trace(
    case: Case, budget: int, seeds: int, ref_budget: int, seed: int, peers: Peers | None = None
) -> dict[str, Any]:
    """Median relative error over seeds of each trace method at ``budget`` HVPs, against an
    XTrace reference with ``ref_budget`` HVPs (its own standard error reported), ours and,
    when installed, curvlinops' XTrace and Hutch++ at the same budget."""
    op = case.operator()
    ref = trace_estimate(op, ref_budget, generator=torch.Generator().manual_seed(seed + 99))
    out: dict[str, Any] = {"budget": budget, "seeds": seeds, "reference": ref.estimate}
    out["reference_rel_se"] = ref.std_error / abs(ref.estimate)
    for method in ("xtrace", "hutch++", "hutchinson"):
        errs, ses = [], []
        for s in range(seeds):
            r = trace_estimate(
                op, budget, method=method, generator=torch.Generator().manual_seed(seed + s)
            )
            errs.append(abs(r.estimate - ref.estimate) / abs(ref.estimate))
            ses.append(r.std_error / abs(ref.estimate))
        out[method] = {"median_rel_error": median(errs), "median_rel_se": median(ses)}
    peer_vals = _curvlinops_traces(case, peers, budget, seeds, seed) if peers else {}
    for name, vals in peer_vals.items():
        errs = [abs(v - ref.estimate) / abs(ref.estimate) for v in vals]
        out[name] = {"median_rel_error": median(errs), "median_rel_se": None}
    out["peers"] = sorted(peer_vals)
    return out


# ------------------------------------------------------------------------------------ report
@dataclass
class Row:
    what: str
    value: float | None
    target: float
    detail: str = ""

    @property
    def status(self) -> str:
        if self.value is None or not math.isfinite(self.value):
            return "n/a"
        return "PASS" if self.value <= self.target else "MISS"

    def verdict(self) -> str:
        if self.status == "MISS":
            return f"MISS by {100 * (self.value / self.target - 1):.0f}%"
        return self.status


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e5):
        return f"{x:.1e}"
    return f"{x:.{digits}f}"


def ratio_rows(results: dict[str, Any]) -> list[Row]:
    """The issue's targets, one row per (target, model) measured in this run."""
    rows: list[Row] = []
    for key, res in results["models"].items():
        hvp = res.get("hvp")
        if hvp:
            exact = {k: v for k, v in hvp["ratio"].items() if k in ("db-cached", "fwd-over-rev")}
            if exact:
                best = min(exact, key=exact.get)
                rows.append(
                    Row(
                        f"{key}: HVP in a solver / gradient",
                        exact[best],
                        TARGET_HVP.get(key, 2.5),
                        f"best exact back end: {best}; auto picks {hvp['auto_backend']}",
                    )
                )
        bat = res.get("batched")
        if bat and key == "mlp" and bat["vmap8_per_hvp_over_grad"]:
            per = bat["vmap8_per_hvp_over_grad"]
            best = min(per, key=per.get)
            rows.append(
                Row(
                    "mlp: k=8 vmapped, per HVP / gradient",
                    per[best],
                    TARGET_VMAP8_MLP,
                    f"{best} ({', '.join(f'{k} {_fmt(v)}' for k, v in per.items())})",
                )
            )
        if bat and key == "resnet20" and results.get("device", "cpu").startswith("cuda"):
            r16 = bat["vmap16_over_seq16"]
            if r16:
                best = min(r16, key=r16.get)
                rows.append(
                    Row("resnet20 (GPU): 16 vmapped / 16 sequential HVPs", r16[best], 0.25, best)
                )
        ovh = res.get("overhead")
        if ovh:
            rows.append(
                Row(
                    f"{key}: HVP through the operator / bare cached double backward",
                    ovh["op_over_bare"],
                    1.05,
                    f"{ovh['bare_ms_per_hvp']:.1f} ms per bare HVP",
                )
            )
            rows.append(
                Row(
                    f"{key}: SLQ-{ovh['steps']} / {ovh['steps']} bare products",
                    ovh["slq_over_bare"],
                    1.1,
                    f"default reorth='semi' (one pass over the basis per step); Lanczos "
                    f"({ovh['lanczos_steps']} steps) per product / bare: "
                    f"{_fmt(ovh['lanczos_over_bare'])}",
                )
            )
            if "slq_plain_over_bare" in ovh:
                rows.append(
                    Row(
                        f"{key}: SLQ-{ovh['steps']} reorth='none' / {ovh['steps']} bare products",
                        ovh["slq_plain_over_bare"],
                        1.1,
                        "three-term recurrence only: 3N memory, ghost nodes for converged outliers",
                    )
                )
        tr = res.get("trace")
        if tr:
            ratio = tr["xtrace"]["median_rel_error"] / max(
                tr["hutch++"]["median_rel_error"], 1e-300
            )
            best = min(tr[m]["median_rel_error"] for m in ("xtrace", "hutch++", "hutchinson"))
            if tr["reference_rel_se"] > 0.5 * best:  # the reference cannot rank the methods
                ratio = float("nan")
            rows.append(
                Row(
                    f"{key}: trace rel. error at {tr['budget']} HVPs, xtrace / hutch++",
                    ratio,
                    1.0,
                    f"xtrace {_fmt(tr['xtrace']['median_rel_error'])}, hutch++ "
                    f"{_fmt(tr['hutch++']['median_rel_error'])}, hutchinson "
                    f"{_fmt(tr['hutchinson']['median_rel_error'])} (median over {tr['seeds']} "
                    f"seeds vs an XTrace reference with relative s.e. "
                    f"{tr['reference_rel_se']:.1e}; n/a when that exceeds half the best error)",
                )
            )
            if tr.get("peers"):
                peer_best = min(tr["peers"], key=lambda m: tr[m]["median_rel_error"])
                ours = min(
                    ("xtrace", "hutch++", "hutchinson"), key=lambda m: tr[m]["median_rel_error"]
                )
                value = tr[ours]["median_rel_error"] / max(
                    tr[peer_best]["median_rel_error"], 1e-300
                )
                if tr["reference_rel_se"] > 0.5 * min(best, tr[peer_best]["median_rel_error"]):
                    value = float("nan")
                rows.append(
                    Row(
                        f"{key}: trace rel. error at {tr['budget']} HVPs, ours / best peer",
                        value,
                        1.0,
                        f"ours ({ours}) {_fmt(tr[ours]['median_rel_error'])}, {peer_best} "
                        f"{_fmt(tr[peer_best]['median_rel_error'])}; "
                        + ", ".join(f"{m} {_fmt(tr[m]['median_rel_error'])}" for m in tr["peers"]),
                    )
                )
        sol = res.get("solvers")
        if not sol:
            continue
        paired = sol.get("paired", {})
        lm = sol.get("lmax", {})
        ours = lm.get("ours lanczos", {})
        if ours:
            rows.append(
                Row(
                    f"{key}: λ_max rel. error, ours lanczos",
                    ours.get("rel_error"),
                    TOL,
                    "vs float64 eigsh",
                )
            )
        if "lmax: ours/pyhessian tol=1e-4" in paired:
            p = paired["lmax: ours/pyhessian tol=1e-4"]
            err = lm["pyhessian tol=1e-4"].get("rel_error")
            ph_val = (lm["pyhessian tol=1e-4"].get("eigenvalues") or [0.0])[0]
            err_note = " (it found the largest-|λ| eigenvalue, negative)" if ph_val < 0 else ""
            rows.append(
                Row(
                    f"{key}: λ_max HVPs ours / PyHessian(tol=1e-4)",
                    p["hvps"],
                    TARGET_LMAX_VS_PYHESSIAN,
                    f"{_fmt(ours.get('hvps'), 0)} vs "
                    f"{_fmt(lm['pyhessian tol=1e-4'].get('hvps'), 0)}; "
                    f"PyHessian's error {_fmt(err)}{err_note}",
                )
            )
            rows.append(
                Row(
                    f"{key}: λ_max time ours / PyHessian(tol=1e-4)",
                    p["time"],
                    TARGET_LMAX_VS_PYHESSIAN,
                )
            )
        tight = lm.get("pyhessian tol=1e-5", {})
        if "lmax: ours/pyhessian tol=1e-5" in paired and (tight.get("rel_error") or 1.0) <= TOL:
            p = paired["lmax: ours/pyhessian tol=1e-5"]
            rows.append(
                Row(
                    f"{key}: λ_max HVPs ours / PyHessian at equal accuracy (tol=1e-5)",
                    p["hvps"],
                    TARGET_LMAX_VS_PYHESSIAN,
                    f"{_fmt(ours.get('hvps'), 0)} vs {_fmt(tight.get('hvps'), 0)}; errors "
                    f"{_fmt(ours.get('rel_error'))} vs {_fmt(tight.get('rel_error'))}; time "
                    f"ratio {_fmt(p['time'])}",
                )
            )
        if "lmax: ours/curvlinops+eigsh" in paired:
            p = paired["lmax: ours/curvlinops+eigsh"]
            rows.append(
                Row(
                    f"{key}: λ_max time ours / (curvlinops+eigsh)",
                    p["time"],
                    TARGET_LMAX_VS_CURVLINOPS,
                    f"eigsh {_fmt(lm['curvlinops+eigsh'].get('hvps'), 0)} HVPs + "
                    f"{_fmt(lm['curvlinops+eigsh'].get('setup_seconds'))} s setup",
                )
            )
        t5 = sol.get("top5", {})
        ours5 = t5.get("ours lanczos", {})
        if ours5:
            rows.append(
                Row(
                    f"{key}: top-5 rel. error, ours lanczos",
                    ours5.get("rel_error"),
                    TOL,
                    "max over the 5",
                )
            )
        if "top5: ours/pyhessian defaults" in paired:
            p = paired["top5: ours/pyhessian defaults"]
            rows.append(
                Row(
                    f"{key}: top-5 time ours / PyHessian defaults",
                    p["time"],
                    TARGET_TOP5_VS_PYHESSIAN,
                    f"PyHessian's error {_fmt(t5['pyhessian defaults'].get('rel_error'))}",
                )
            )
        if "top5: ours/curvlinops+eigsh" in paired:
            p = paired["top5: ours/curvlinops+eigsh"]
            rows.append(
                Row(
                    f"{key}: top-5 HVPs ours / eigsh",
                    p["hvps"],
                    TARGET_TOP5_HVPS_VS_EIGSH,
                    f"{_fmt(ours5.get('hvps'), 0)} vs "
                    f"{_fmt(t5['curvlinops+eigsh'].get('hvps'), 0)}",
                )
            )
        for section, k in (("top5", K_TOP), ("lmax", 1)):
            a = sol.get(section, {}).get("ours lanczos", {}).get("eigenvalues")
            b = sol.get(section, {}).get("curvlinops+eigsh", {}).get("eigenvalues")
            if a and b:
                rows.append(
                    Row(
                        f"{key}: agreement with curvlinops+eigsh (top-{k})",
                        _rel_err(a, b, k),
                        TARGET_AGREEMENT,
                        "max relative difference; curvlinops+eigsh's own error "
                        f"{_fmt(sol[section]['curvlinops+eigsh'].get('rel_error'))}",
                    )
                )
                break
        if "slq: ours/pyhessian" in paired:
            rows.append(
                Row(
                    f"{key}: SLQ-100 time ours / PyHessian",
                    paired["slq: ours/pyhessian"]["time"],
                    TARGET_SLQ_VS_PYHESSIAN,
                )
            )
    return rows


def render_table(results: dict[str, Any]) -> str:
    """The ratio table: measured, target, PASS/MISS (and by how much), details."""
    rows = ratio_rows(results)
    lines = ["Ratio table (issue #2 targets; ratio <= target passes)"]
    w = max([len(r.what) for r in rows] + [30])
    lines.append(f"  {'what':{w}s}  {'measured':>9s}  {'target':>8s}  verdict")
    for r in rows:
        lines.append(
            f"  {r.what:{w}s}  {_fmt(r.value):>9s}  {'<= ' + _fmt(r.target, 1):>8s}  "
            f"{r.verdict():14s} {r.detail}"
        )
    if not rows:
        lines.append("  (no rows: nothing measured)")
    for msg in results.get("peers", {}).values():
        if "skipped" in msg:
            lines.append(f"  note: {msg}")
    n_pass = sum(r.status == "PASS" for r in rows)
    n_miss = sum(r.status == "MISS" for r in rows)
    lines.append(f"  {n_pass} PASS, {n_miss} MISS, {len(rows) - n_pass - n_miss} n/a")
    return "\n".join(lines)


def _print_hvp(results: dict[str, Any], log: Callable) -> None:
    cols = ["fwd-over-rev", "db-cached", "db-first", "db-uncached", "fd-central"]
    log("\n[1] HVP time / gradient time (median of same-round ratios)")
    log(f"  {'model':9s} {'grad ms':>8s} " + " ".join(f"{c:>12s}" for c in cols) + "  auto picks")
    for key, res in results["models"].items():
        h = res.get("hvp")
        if not h:
            continue
        vals = " ".join(f"{_fmt(h['ratio'].get(c)):>12s}" for c in cols)
        log(
            f"  {key:9s} {h['gradient_ms']:8.1f} {vals}  {h['auto_backend']} ({h['rounds']} rounds)"
        )
        for name, err in h["errors"].items():
            log(f"    {name} failed: {err[:150]}")
    log(
        "  db-cached: steady-state product on the cached first-order graph (inside a solver);"
        "\n  db-first: a new operator's first product (builds the graph); db-uncached rebuilds it"
        "\n  every product; fd-central costs two gradients."
    )


def _print_batched(results: dict[str, Any], log: Callable) -> None:
    log("\n[2] Batched HVPs: op @ V (vmap / is_grads_batched, chunk 16)")
    log(f"  {'model':9s} {'back end':14s} {'vmap16/seq16':>13s} {'vmap8 per HVP/grad':>19s}")
    any_row = False
    for key, res in results["models"].items():
        b = res.get("batched")
        if not b:
            continue
        for name, r in b["vmap16_over_seq16"].items():
            any_row = True
            per = b["vmap8_per_hvp_over_grad"][name]
            log(f"  {key:9s} {name:14s} {_fmt(r):>13s} {_fmt(per):>19s}")
        for name, err in b["errors"].items():
            log(f"  {key:9s} {name:14s} failed: {err[:150]}")
    if not any_row:
        log("  (not run in this mode)")
    skipped = [k for k, r in results["models"].items() if "batched" not in r]
    if skipped:
        log(f"  skipped in --{results['mode']} (too heavy on CPU): {', '.join(skipped)}")


def _print_fd(results: dict[str, Any], log: Callable) -> None:
    log("\n[3] Finite-difference (central) HVP: relative error ‖H_fd v − Hv‖/‖Hv‖, float32")
    for key, res in results["models"].items():
        fd = res.get("fd")
        if not fd:
            continue
        sweep = ", ".join(f"{k}: {_fmt(v, 3)}" for k, v in fd["by_eps"].items())
        log(
            f"  {key:9s} default (fd_eps={fd['default_eps']:.1e}) {_fmt(fd['default'], 3)}; "
            f"best {_fmt(fd['best'], 3)} at {fd['best_eps']}   [{sweep}]"
        )


def _print_solvers(results: dict[str, Any], log: Callable) -> None:
    log("\n[4] Eigensolvers: HVPs, seconds (setup included), relative error vs float64 eigsh")
    for key, res in results["models"].items():
        sol = res.get("solvers")
        if not sol:
            continue
        ref = sol.get("reference")
        if ref:
            ev = ", ".join(f"{v:.6g}" for v in ref["eigenvalues"])
            log(f"  {key}: reference eigenvalues [{ev}] ({ref['hvps']} float64 HVPs)")
        for section, title in (("lmax", "λ_max"), ("top5", "top-5"), ("slq", "SLQ 100 steps")):
            entries = sol.get(section)
            if not entries:
                continue
            log(f"    {title}:")
            for name, e in entries.items():
                if "hvps" not in e:
                    log(f"      {name:20s} {'; '.join(e['failures'])}")
                    continue
                err = e.get("rel_error")
                extra = (
                    f"err {_fmt(err)}" if err is not None else f"max node {e['eigenvalues'][0]:.5g}"
                )
                setup = f" (setup {e['setup_seconds']:.2f} s)" if e["setup_seconds"] else ""
                log(
                    f"      {name:20s} {e['hvps']:6.0f} HVPs {e['seconds']:8.2f} s  {extra:12s}"
                    f"{setup} {e['note']}"
                )
    skipped = [k for k, r in results["models"].items() if not r.get("solvers")]
    if skipped:
        log(f"  not run in --{results['mode']}: {', '.join(skipped)} (use --full)")


# ------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; print as it goes; return every number (also written by --json)."""
    t_start = time.perf_counter()
    mode = MODES[args.mode]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    threads = configure_threads(args.threads)
    keys = tuple(k.strip() for k in args.models.split(",") if k.strip())
    unknown = [k for k in keys if k not in MODEL_KEYS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from {','.join(MODEL_KEYS)}")
    wanted = tuple(p.strip() for p in args.peers.split(",") if p.strip() and p != "none")
    peers = load_peers(wanted)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    log(
        f"hessian_lr curvature benchmark: --{mode.name}, device {device}, float32, "
        f"torch {torch.__version__}, {threads} thread(s) (torch.set_num_threads), "
        f"{os.cpu_count()} CPUs, load avg {load:.1f}, python {platform.python_version()}"
    )
    cases = build_cases(keys, mode, device, root=args.data_root, seed=args.seed)
    for c in cases:
        log(f"  {c.key:9s} {c.label}; N = {c.num_params:,} parameters; data: {c.data_note}")
    for msg in peers.messages.values():
        log(f"  peer: {msg}")

    results: dict[str, Any] = {
        "mode": mode.name,
        "device": str(device),
        "threads": threads,
        "torch": torch.__version__,
        "load_avg_start": load,
        "peers": peers.messages,
        "models": {},
    }
    for c in cases:
        res: dict[str, Any] = {"label": c.label, "num_params": c.num_params, "data": c.data_note}
        results["models"][c.key] = res
        log(f"\n== {c.key}: timing HVP back ends ...")
        res["hvp"] = bench_hvp(c, mode.hvp_rounds[c.key], args.seed)
        batched = dict(mode.batched_rounds)
        if device.type == "cuda":  # the GPU row: 16 vmapped vs 16 sequential on ResNet-20
            batched.setdefault("resnet20", 3)
        if c.key in batched:
            log(f"== {c.key}: batched HVPs ...")
            res["batched"] = bench_batched(c, batched[c.key], args.seed)
        log(f"== {c.key}: finite-difference error ...")
        res["fd"] = bench_fd_error(c, mode.fd_eps, mode.fd_vectors, args.seed)
        sections = mode.solver_sections.get(c.key, ())
        if sections:
            log(f"== {c.key}: eigensolvers {sections} ...")
            res["solvers"] = bench_solvers(
                c, sections, mode.solver_rounds[c.key], peers, args.seed, log
            )

        if c.key in mode.overhead:
            log(f"== {c.key}: solver loop vs bare products ...")
            rounds, steps = mode.overhead[c.key]
            res["overhead"] = bench_overhead(c, rounds, args.seed, steps)
        if c.key in mode.trace:
            log(f"== {c.key}: trace estimators ...")
            res["trace"] = bench_trace(c, *mode.trace[c.key], seed=args.seed, peers=peers)

    _print_hvp(results, log)
    _print_batched(results, log)
    _print_fd(results, log)
    _print_solvers(results, log)
    results["seconds"] = time.perf_counter() - t_start
    log("")
    log(render_table(results))
    results["cpu_seconds"] = time.process_time()
    log(
        f"\ntotal {results['seconds']:.0f} s wall, {results['cpu_seconds']:.0f} s CPU of this "
        f"process (with {threads} thread(s), about the wall time on an idle machine)"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_jsonable(results), indent=1))
        log(f"wrote {args.json}")
    return results


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, torch.Tensor):
        return None
    return x


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="< 5 min on 2 CPU cores"
    )
    g.add_argument(
        "--smoke", dest="mode", action="store_const", const="smoke", help="tiny models, < 40 s"
    )
    g.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the default: all sections on all models",
    )
    p.set_defaults(mode="full")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--models",
        default=",".join(MODEL_KEYS),
        help="comma-separated subset of mlp,lenet,resnet20",
    )
    p.add_argument("--peers", default=",".join(PEER_KEYS), help="peers to compare with, or 'none'")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: stable ratios on a shared machine)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="folder searched first for datasets")
    p.add_argument("--json", default=None, metavar="OUT", help="write every number to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
