"""One training arm instrumented for the secant-estimate studies (F5, F13, F14).

Trains one model with SGD (momentum μ, optional Nesterov, weight decay) under a closed-form
schedule and, at every step, records the secant estimate of Smith & Topin (*Super-Convergence*,
§5, Eq. 8) in the **paper's convention** -- iterates θ_i, θ_{i+s}, θ_{i+2s} and the single-step
LR ε_i, estimate = ε_i Σ|θ_{i+s} − θ_i| / Σ|2θ_{i+s} − θ_i − θ_{i+2s}| -- for every spacing s in
``spacings`` (a new triple every s steps), the **same-batch secant** (the gradient change along
the step actually taken, on the batch that took it: Σ|Δθ| / Σ|∇f_B(θ_{t+1}) − ∇f_B(θ_t)|, one
extra gradient; it removes the batch-to-batch noise that Eq. 8's two gradients carry), and every
``probe_every`` steps (and at the end) the exact-HVP estimates on a fixed held-out batch in each
BatchNorm mode: Σ|g|/Σ|Hg|, gᵀg/gᵀHg and λ_max (Lanczos, warm-started) -> 1/λ_max.

Everything is stored as the ratio estimate/ε next to ε, so the momentum-noise null
``hessian_lr.lr.noise.noise_null(μ, s)`` can be drawn directly. The loss differentiated is the
mean cross-entropy (weight decay is in the trajectory, not in the HVPs; at 5e-4 it shifts the
curvature by 5e-4).

Determinism and resuming: the batch of step t is a pure function of (seed, t) (a seeded
permutation per epoch), the model is built under ``torch.manual_seed(seed)``, and Lanczos probes
use a generator seeded by (seed, step). An arm lives in the run folder
``<out>/<experiment>/<arm>/``: ``arm.json`` (the records, written at the end), ``meta.json``
(``status``, ``steps_done``, as every run folder, so ``run_all`` reads it) and, every
``checkpoint_seconds`` or when a stop is requested, ``checkpoint.pt`` (model, optimizer,
spacing buffers, records, warm-start vectors); rerunning resumes from it, and a finished arm
is skipped. Measurements never touch the training state: the probes use ``HessianOperator``
(modes and BN buffers restored).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hessian_lr.curvature import HessianOperator, lanczos, params_to_vector
from hessian_lr.lr import noise_null, secant_lr
from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.schedules import schedule_from_dict
from hessian_lr.training.data import load_dataset
from hessian_lr.training.models import build_model

__all__ = [
    "ArmSpec",
    "StopArm",
    "run_arm",
    "run_arms_parallel",
    "arm_path",
    "load_arm",
    "arm_macs",
    "stop_requested",
    "install_stop_handler",
]

_DATA: dict[tuple, Any] = {}
_PERM: dict[str, Any] = {}


@dataclass(frozen=True)
class ArmSpec:
    """One instrumented training run (see the module docstring)."""

    name: str
    schedule: dict[str, Any]  # Schedule.to_dict() form
    steps: int
    dataset: str = "fashion-mnist"
    data_root: str = ""
    model: str = "resnet8"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 128
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    seed: int = 0
    spacings: tuple[int, ...] = (1, 10)
    same_batch: bool = True
    same_batch_every: int = 1  # the same-batch secant at steps that are multiples of this
    probe_every: int = 0  # 0: no exact-HVP probes
    probe_batch: int = 128
    bn_modes: tuple[str, ...] = ("train", "eval")
    lanczos_tol: float = 1e-2
    lanczos_max_iter: int = 30
    eval_size: int = 2000  # test images for the final accuracy (0: none)
    checkpoint_seconds: float = 60.0


class StopArm(KeyboardInterrupt):
    """Raised by ``run_arm`` after checkpointing when ``stop()`` asked it to stop."""


def arm_path(out: str | Path, experiment: str, name: str) -> Path:
    return Path(out) / experiment / name / "arm.json"


def _meta(path: Path, **fields: Any) -> None:
    write_json_atomic(path.parent / "meta.json", fields)


def load_arm(out: str | Path, experiment: str, name: str) -> dict[str, Any] | None:
    path = arm_path(out, experiment, name)
    return read_json(path) if path.exists() else None


def stop_requested() -> bool:
    """Whether ``run_all`` asked this process to stop (``_common.request_stop``)."""
    import _common

    return bool(_common._STATE.get("stop"))


def install_stop_handler() -> None:
    """Make SIGUSR1 (``run_all``'s deadline) request a clean stop at the next step.

    The arm then checkpoints and raises :class:`StopArm`; a rerun resumes. Only in the main
    thread (signal handlers cannot be set elsewhere).
    """
    import signal
    import threading

    import _common

    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _common.request_stop)


def arm_macs(spec: ArmSpec, forward_macs_per_image: float) -> float:
    """Estimated multiply-accumulates of an arm (for ``run_all``'s scheduling).

    Training 3 forward-equivalents per image per step; the same-batch secant 3 more every
    ``same_batch_every`` steps; each probe and BN mode about 1 gradient + 12 HVPs (≈ 5
    forward-equivalents each) on ``probe_batch`` images.
    """
    per_step = (
        3.0 * spec.batch_size * (1.0 + (1.0 / spec.same_batch_every if spec.same_batch else 0))
    )
    probes = (spec.steps // spec.probe_every + 1) if spec.probe_every else 0
    per_probe = len(spec.bn_modes) * (3.0 + 12 * 5.0) * spec.probe_batch
    return forward_macs_per_image * (spec.steps * per_step + probes * per_probe)


def _data(spec: ArmSpec, device: torch.device):
    key = (spec.dataset, spec.data_root, str(device))
    if key not in _DATA:
        root = spec.data_root or None
        train = load_dataset(spec.dataset, root=root).to(device)
        test = load_dataset(spec.dataset, split="test", root=root).to(device)
        _DATA[key] = (train, test)
    return _DATA[key]


def _batch_indices(n: int, batch: int, seed: int, step: int, device) -> torch.Tensor:
    per_epoch = n // batch
    epoch, i = divmod(step, per_epoch)
    key = (n, seed, epoch, str(device))
    if _PERM.get("key") != key:  # one permutation per epoch, kept for the epoch's steps
        gen = torch.Generator().manual_seed(1_000_003 * seed + epoch)
        _PERM.update(key=key, perm=torch.randperm(n, generator=gen).to(device))
    return _PERM["perm"][i * batch : (i + 1) * batch]


def _r(x: float) -> float | None:
    """Round to 6 significant digits for compact JSON; nan/inf -> None."""
    return float(f"{x:.6g}") if math.isfinite(x) else None


def _flat(model: nn.Module) -> torch.Tensor:
    return params_to_vector([p.detach() for p in model.parameters()]).clone()


def _probe(model, loss_fn, batch, mode, v0, gen, spec) -> tuple[dict[str, float], torch.Tensor]:
    op = HessianOperator(model, loss_fn, batch, bn_mode=mode)
    loss, g = op.gradient()
    g64 = g.double()
    hg = (op @ g).double()
    ghg = float(g64 @ hg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # recorded as "converged" instead
        res = lanczos(
            op,
            k=1,
            which="LA",
            tol=spec.lanczos_tol,
            max_iter=spec.lanczos_max_iter,
            v0=v0,
            generator=gen,
            progress=False,
        )
    lam = float(res.eigenvalues[0])
    out = {
        "loss": loss,
        "secant_hvp": float(g64.abs().sum()) / float(hg.abs().sum()),
        "quadratic": float(g64 @ g64) / ghg if ghg > 0 else math.nan,
        "lambda_max": lam,
        "newton": 1.0 / lam if lam > 0 else math.nan,
        "hvps": float(op.num_hvps),
        "converged": float(bool(res.converged)),
    }
    return out, res.eigenvectors[:, 0].detach()


def _new_records(spec: ArmSpec) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "lr": [],
        "loss": [],
        "secant": {str(s): {"step": [], "ratio": []} for s in spec.spacings},
        "same_batch": {"step": [], "ratio": []},
        "probes": {"step": [], "lr": [], **{m: {} for m in spec.bn_modes}},
    }
    return rec


def run_arm(
    spec: ArmSpec,
    out: str | Path,
    experiment: str,
    device: str = "cpu",
    *,
    stop: Callable[[], bool] | None = None,
) -> dict:
    """Train one arm (or resume it, or return it if finished); write and return its record.

    ``stop``: polled every step; when it returns True the arm checkpoints and raises
    :class:`StopArm` (a rerun resumes).
    """
    path = arm_path(out, experiment, spec.name)
    if path.exists():
        done = read_json(path)
        if done.get("spec") == _jsonable_spec(spec):
            return done
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    train, test = _data(spec, dev)
    model, sched, opt = _build(spec, train, dev)
    loss_fn = nn.CrossEntropyLoss()
    pgen = torch.Generator().manual_seed(12345)
    pidx = torch.randperm(len(test), generator=pgen)[: spec.probe_batch].to(dev)
    probe_batch = (test.x[pidx], test.y[pidx])
    ckpt = path.parent / "checkpoint.pt"
    state = _resume(ckpt, spec, model, opt, dev)
    bufs = {s: deque(state["buf"].get(s, []), maxlen=3) for s in spec.spacings}
    rec, secs = state["rec"], state["seconds"]
    last_ckpt = time.perf_counter()
    step = state["step"]
    while step < spec.steps:
        t0 = time.perf_counter()
        lr = sched.lr(step)
        for group in opt.param_groups:
            group["lr"] = lr
        if spec.probe_every and step % spec.probe_every == 0:
            _run_probes(model, loss_fn, probe_batch, spec, state, step, lr)
            secs["probe"] += time.perf_counter() - t0
            t0 = time.perf_counter()
        for s in spec.spacings:
            if step % s == 0:
                bufs[s].append((step, _flat(model)))
        idx = _batch_indices(len(train), spec.batch_size, spec.seed, step, dev)
        xb, yb = train.x[idx], train.y[idx]
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        if not math.isfinite(loss.item()):
            state["status"] = "diverged"
            break
        do_sb = spec.same_batch and step % spec.same_batch_every == 0
        theta0 = _flat(model) if do_sb else None
        g0 = _grad_vector(model) if do_sb else None
        opt.step()
        rec["lr"].append(_r(lr))
        rec["loss"].append(_r(loss.item()))
        secs["train"] += time.perf_counter() - t0
        if do_sb:
            t1 = time.perf_counter()
            ratio = _same_batch_ratio(model, loss_fn, (xb, yb), theta0, g0, lr)
            rec["same_batch"]["step"].append(step)
            rec["same_batch"]["ratio"].append(_r(ratio))
            secs["same_batch"] += time.perf_counter() - t1
        step += 1
        t2 = time.perf_counter()
        _secant_triples(model, sched, spec, bufs, rec, step)
        secs["secant"] += time.perf_counter() - t2
        stopping = stop is not None and stop()
        due = time.perf_counter() - last_ckpt > spec.checkpoint_seconds
        if (due or stopping) and step < spec.steps:
            state["step"] = step
            state["buf"] = {s: list(bufs[s]) for s in spec.spacings}
            _save_ckpt(ckpt, spec, model, opt, state)
            _meta(path, status="interrupted", steps_done=step)
            last_ckpt = time.perf_counter()
            if stopping:
                raise StopArm(f"{spec.name}: stopped at step {step} (checkpointed)")
    if state["status"] == "running" and spec.probe_every and step % spec.probe_every == 0:
        t0 = time.perf_counter()
        _run_probes(model, loss_fn, probe_batch, spec, state, step, sched.lr(step - 1))
        secs["probe"] += time.perf_counter() - t0
    result = _arm_result(spec, state, step, model, test, dev)
    write_json_atomic(path, result)
    _meta(path, status=result["status"], steps_done=step, seconds=sum(secs.values()))
    if ckpt.exists():
        ckpt.unlink()
    return result


def _resume(ckpt: Path, spec: ArmSpec, model: nn.Module, opt: Any, dev: torch.device) -> dict:
    """The loop's state at step 0, or the checkpoint's (model and optimizer loaded) if any."""
    state = {"step": 0, "rec": _new_records(spec), "buf": {}, "warm": {}, "status": "running"}
    state["seconds"] = {"train": 0.0, "secant": 0.0, "same_batch": 0.0, "probe": 0.0}
    if ckpt.exists():
        saved = torch.load(ckpt, map_location=dev, weights_only=False)
        if saved["spec"] == _jsonable_spec(spec):
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["opt"])
            state = saved["state"]
    return state


def _grad_vector(model: nn.Module) -> torch.Tensor:
    """A copy of the flat gradient in ``.grad`` (before the optimizer steps)."""
    return params_to_vector([p.grad.detach() for p in model.parameters()]).clone()


def _build(spec: ArmSpec, train: Any, dev: torch.device) -> tuple[nn.Module, Any, Any]:
    """The arm's model (seeded), schedule and SGD optimizer."""
    torch.manual_seed(spec.seed)
    model = build_model(
        spec.model,
        num_classes=train.num_classes,
        in_channels=train.in_channels,
        input_size=train.input_size,
        **spec.model_kwargs,
    ).to(dev)
    sched = schedule_from_dict(spec.schedule)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=sched.lr(0),
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
    )
    return model, sched, opt


def _same_batch_ratio(model, loss_fn, batch, theta0, g0, lr: float) -> float:
    """Σ|Δθ| / Σ|Δg| / lr with Δg the gradient change on the same batch across the step."""
    op = HessianOperator(model, loss_fn, batch, bn_mode="train", cache_graph=False)
    _, g1 = op.gradient()
    dtheta = (_flat(model) - theta0).double()
    dg = (g1 - g0).double()
    den = float(dg.abs().sum())
    return float(dtheta.abs().sum()) / den / lr if den > 0 else math.nan


def _secant_triples(model, sched, spec: ArmSpec, bufs: dict, rec: dict, step: int) -> None:
    """Eq. 8's ratio for every spacing whose triple the new iterate (θ at ``step``) completes."""
    for s in spec.spacings:
        if step % s == 0 and len(bufs[s]) == 2:
            (t_a, th_a), (_, th_b) = bufs[s][0], bufs[s][1]
            th_c = _flat(model)
            eps = sched.lr(t_a)
            # lr_l1: Eq. 8's value with its absolute values, unflagged (the paper keeps it
            # when Δ₁·(Δ₁ − Δ₂) ≤ 0); steps=1 is the paper's single-step ε convention.
            res = secant_lr(th_a, th_b, th_c, eps)
            rec["secant"][str(s)]["step"].append(t_a)
            rec["secant"][str(s)]["ratio"].append(_r(res.lr_l1 / eps))
            bufs[s].popleft()


def _arm_result(spec: ArmSpec, state: dict, step: int, model, test, dev) -> dict[str, Any]:
    """The arm's record: status, noise nulls, final accuracy, time split, the series."""
    secs = state["seconds"]
    return {
        "name": spec.name,
        "spec": _jsonable_spec(spec),
        "status": "finished" if state["status"] == "running" else state["status"],
        "steps_done": step,
        "null": {
            str(s): noise_null(spec.momentum, s, nesterov=spec.nesterov) for s in spec.spacings
        },
        "final_test_accuracy": _accuracy(model, test, spec.eval_size),
        "seconds": {k: round(v, 3) for k, v in secs.items()},
        "seconds_per_step": round(sum(secs.values()) / max(step, 1), 5),
        "device": str(dev),
        **state["rec"],
    }


def _run_probes(model, loss_fn, batch, spec, state, step, lr) -> None:
    probes = state["rec"]["probes"]
    probes["step"].append(step)
    probes["lr"].append(_r(lr))
    for mode in spec.bn_modes:
        gen = torch.Generator().manual_seed(7919 * spec.seed + step)
        v0 = state["warm"].get(mode)
        try:
            vals, vec = _probe(model, loss_fn, batch, mode, v0, gen, spec)
            state["warm"][mode] = vec
        except Exception as e:  # noqa: BLE001 - a non-finite probe is recorded, not fatal
            vals = {"error": math.nan}
            print(f"  probe {mode} at step {step} failed: {type(e).__name__}: {e}", flush=True)
        for k, v in vals.items():
            probes[mode].setdefault(k, [None] * (len(probes["step"]) - 1)).append(_r(v))
        for lst in probes[mode].values():  # keep lists aligned when a key is missing
            if len(lst) < len(probes["step"]):
                lst.append(None)


@torch.no_grad()
def _accuracy(model: nn.Module, test, n: int) -> float | None:
    if n <= 0:
        return None
    was = model.training
    model.eval()
    correct = 0
    m = min(n, len(test))
    for i in range(0, m, 1000):
        xb, yb = test.x[i : min(i + 1000, m)], test.y[i : min(i + 1000, m)]
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was)
    return correct / m


def _jsonable_spec(spec: ArmSpec) -> dict[str, Any]:
    d = asdict(spec)
    d.pop("checkpoint_seconds")
    d.pop("data_root")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _save_ckpt(path: Path, spec, model, opt, state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(
        {
            "spec": _jsonable_spec(spec),
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "state": state,
        },
        tmp,
    )
    os.replace(tmp, path)


def _worker(args: tuple[ArmSpec, str, str, str]) -> tuple[str, str, float]:
    spec, out, experiment, device = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = run_arm(spec, out, experiment, device)
    return spec.name, res["status"], time.perf_counter() - t0


def run_arms_parallel(
    specs: list[ArmSpec], out: str | Path, experiment: str, *, device: str, jobs: int
) -> dict[str, dict]:
    """Run arms (one process each, one torch thread, ``jobs`` at a time; 1: in this process)."""
    args = [(s, str(out), experiment, device) for s in specs]
    if jobs <= 1 or len(specs) <= 1:
        for a in args:
            name, status, sec = _worker(a)
            print(f"  {experiment}/{name}: {status} ({sec:.1f}s)", flush=True)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(min(jobs, len(specs)), maxtasksperchild=1) as pool:
            for name, status, sec in pool.imap_unordered(_worker, args):
                print(f"  {experiment}/{name}: {status} ({sec:.1f}s)", flush=True)
    return {s.name: load_arm(out, experiment, s.name) for s in specs}
