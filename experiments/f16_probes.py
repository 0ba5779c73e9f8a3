"""F16's measurements on one cell: a constant-LR run, the ramp, the estimates at θ₀, the probes.

Helpers of ``f16_lr_that_works.py`` (its docstring states the protocol and the criteria). Each
function rebuilds θ₀ with ``t.build()`` (seeded), so the pieces are independent and resumable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from hessian_lr.curvature.linop import params_to_vector
from hessian_lr.lr import CurvatureOptions, estimate_lr, secant_lr
from hessian_lr.lr.stability import preconditioned_sharpness
from hessian_lr.lr.update import update_lr

Batches = Callable[..., tuple]


def make_optimizer(cfg: Any, optimizer: str, model: torch.nn.Module, lr: float):
    """Heavy-ball SGD (β = ``cfg.momentum``) or Adam (β₁ = ``cfg.momentum``, β₂ = 0.999)."""
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum)
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(cfg.momentum, 0.999))


def constant(cfg: Any, optimizer: str) -> float:
    """c: 2 + 2β (heavy ball), (2 + 2β₁)/(1 − β₁) (Adam)."""
    b = cfg.momentum
    return 2 + 2 * b if optimizer == "sgd" else (2 + 2 * b) / (1 - b)


def _step(model, opt, loss_fn, batch) -> tuple[float, float]:
    """One update; (loss, accuracy) before it. A non-finite loss is not applied."""
    opt.zero_grad(set_to_none=True)
    out = model(batch[0])
    loss = loss_fn(out, batch[1])
    acc = float((out.detach().argmax(-1) == batch[1]).float().mean())
    value = float(loss.detach())
    if math.isfinite(value):
        loss.backward()
        opt.step()
    return value, acc


def verdict(cfg: Any, losses: list[float], accs: list[float], classes: int) -> tuple[str, str]:
    """The pre-registered η_max criterion (``f16_lr_that_works`` docstring): (verdict, reason)."""
    l0 = losses[0]
    if not all(math.isfinite(x) and x <= cfg.blowup * l0 for x in losses):
        return "too_large", "non-finite or blown up"
    if len(losses) < cfg.steps:
        return "too_large", "stopped"
    end = sum(losses[-cfg.window :]) / cfg.window
    acc = sum(accs[-cfg.window :]) / cfg.window
    if end >= l0 or end >= math.log(classes):
        return "too_large", f"loss ended at {end:.3f} (L0 {l0:.3f}, ln C {math.log(classes):.3f})"
    if end > (1 - cfg.lower_by) * l0:
        return "too_small", f"loss fell only to {end:.3f} of L0 {l0:.3f}"
    if acc < cfg.chance_factor / classes:
        return "too_large", f"accuracy {acc:.3f} below {cfg.chance_factor}/C"
    return "works", f"loss {l0:.3f} -> {end:.3f}, accuracy {acc:.3f}"


def constant_run(cfg: Any, cell: dict, t: Any, lr: float, batch_at: Batches) -> dict:
    """``cfg.steps`` updates at constant ``lr`` from θ₀; stops early once blown up."""
    model = t.build()
    model.train()
    opt = make_optimizer(cfg, cell["optimizer"], model, lr)
    losses, accs = [], []
    for i in range(cfg.steps):
        loss, acc = _step(model, opt, t.loss_fn, batch_at(t, cell["seed"], i))
        losses.append(loss)
        accs.append(acc)
        if not math.isfinite(loss) or loss > cfg.blowup * losses[0]:
            break
    v, why = verdict(cfg, losses, accs, t.classes)
    stride = max(1, cfg.steps // 30)
    return {
        "lr": lr,
        "verdict": v,
        "reason": why,
        "steps_run": len(losses),
        "losses": [x if math.isfinite(x) else None for x in losses[::stride]],
    }


def _warm(cfg: Any, cell: dict, t: Any, batch_at: Batches):
    """θ₀ with the optimizer's state filled by ``warm_steps`` steps at ``warm_lr``."""
    model = t.build()
    model.train()
    opt = make_optimizer(cfg, cell["optimizer"], model, cfg.warm_lr)
    for i in range(cfg.warm_steps):
        _step(model, opt, t.loss_fn, batch_at(t, cell["seed"], i))
    return model, opt


def _nan(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def estimates_at_init(cfg: Any, cell: dict, t: Any, probe: tuple, batch_at: Batches) -> dict:
    """Every estimate at θ₀ on the probe batch: {name: {"lr", "hvps", ...}}."""
    model, opt = _warm(cfg, cell, t, batch_at)
    gen = torch.Generator().manual_seed(cell["seed"])
    out = {}
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for mode in ("train", "eval") if has_bn else ("train",):
        s = preconditioned_sharpness(
            model,
            t.loss_fn,
            probe,
            opt,
            curvature=CurvatureOptions(bn_mode=mode),
            lanczos_tol=cfg.lanczos_tol,
            lanczos_max_iter=cfg.lanczos_max_iter,
            generator=gen,
            on_nonfinite="flag",
        )
        name = "sharpness" if mode == "train" else "sharpness_eval"
        out[name] = {
            "lr": _nan(s.lr_stable),
            "lambda_max": _nan(s.lambda_max),
            "hvps": s.num_hvps,
            "constant": s.constant,
            "flags": list(s.flags),
        }
    # Exploratory, not pre-registered (issue 26): the sharpness and quadratic rules on the GGN.
    ggn = CurvatureOptions(matrix="ggn", bn_mode="train")
    s = preconditioned_sharpness(
        model,
        t.loss_fn,
        probe,
        opt,
        curvature=ggn,
        lanczos_tol=cfg.lanczos_tol,
        lanczos_max_iter=cfg.lanczos_max_iter,
        generator=gen,
        on_nonfinite="flag",
    )
    out["sharpness_ggn"] = {
        "lr": _nan(s.lr_stable),
        "lambda_max": _nan(s.lambda_max),
        "hvps": s.num_hvps,
        "flags": list(s.flags),
    }
    e = estimate_lr(model, t.loss_fn, probe, method="quadratic", curvature=ggn, on_nonfinite="flag")
    out["quadratic_ggn"] = {"lr": _nan(e.lr), "hvps": e.num_hvps, "flags": list(e.flags)}
    u = update_lr(model, t.loss_fn, probe, opt, on_nonfinite="flag")
    out["update"] = {"lr": _nan(u.lr), "hvps": u.num_hvps, "flags": list(u.flags)}
    for method in ("quadratic", "secant_hvp"):
        e = estimate_lr(
            model,
            t.loss_fn,
            probe,
            method=method,
            curvature=CurvatureOptions(bn_mode="train"),
            on_nonfinite="flag",
        )
        out[method] = {"lr": _nan(e.lr), "hvps": e.num_hvps, "flags": list(e.flags)}
    return out


def probe_runs(cfg: Any, cell: dict, t: Any, probe: tuple, batch_at: Batches) -> dict:
    """Eq. 8 (last three iterates) after ``probe_steps`` at each probe LR; same-batch secant."""
    lrs = cfg.sgd_probe_lrs if cell["optimizer"] == "sgd" else cfg.adam_probe_lrs
    out: dict[str, Any] = {"probe_lrs": list(lrs)}
    for j, lr in enumerate(lrs, start=1):
        model = t.build()
        model.train()
        opt = make_optimizer(cfg, cell["optimizer"], model, lr)
        thetas = []
        for i in range(cfg.probe_steps):
            _step(model, opt, t.loss_fn, batch_at(t, cell["seed"], i))
            thetas.append(params_to_vector([p.detach() for p in model.parameters()]))
            thetas = thetas[-3:]
        s = secant_lr(*thetas, lr)
        out[f"eq8_p{j}"] = _nan(s.lr_l1)  # the paper's L1 estimate, unflagged
        if j == 1:
            e = estimate_lr(
                model,
                t.loss_fn,
                probe,
                method="secant_same_batch",
                theta_prev=thetas[-2],
                curvature=CurvatureOptions(bn_mode="train"),
                on_nonfinite="flag",
            )
            out["same_batch_p1"] = _nan(e.lr)
    return out


def _crossing(points: list[tuple[float, float]]) -> float | None:
    """The LR where ratio η·λ/c first reaches 1, log-log interpolated between measurements."""
    prev = None
    for lr, r in points:
        if r is not None and r >= 1:
            if prev is None or prev[1] <= 0:
                return lr
            a = math.log(1 / prev[1]) / math.log(r / prev[1])
            return math.exp(math.log(prev[0]) + a * (math.log(lr) - math.log(prev[0])))
        if r is not None:
            prev = (lr, r)
    return None


def ramp(
    cfg: Any, cell: dict, t: Any, probe: tuple, batch_at: Batches, n: int, *, measure: bool = False
) -> dict:
    """Exponential range test from θ₀; η_div (4×), η_nan, η_dead; the ratio η_t·λ_t/c."""
    lo, hi = cfg.sgd_ramp if cell["optimizer"] == "sgd" else cfg.adam_ramp
    model = t.build()
    model.train()
    opt = make_optimizer(cfg, cell["optimizer"], model, lo)
    gen = torch.Generator().manual_seed(cell["seed"])
    ln_c = math.log(t.classes)
    avg, best, dead = 0.0, math.inf, 0
    ev: dict[str, Any] = {"eta_div": None, "eta_nan": None, "eta_dead": None}
    lrs, losses, points, hvps, v0 = [], [], [], 0, None
    for i in range(n):
        lr = lo * (hi / lo) ** (i / (n - 1))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, _ = _step(model, opt, t.loss_fn, batch_at(t, cell["seed"], i))
        lrs.append(lr)
        losses.append(loss if math.isfinite(loss) else None)
        if not math.isfinite(loss):
            ev["eta_nan"] = lr
            break
        avg = cfg.smoothing * avg + (1 - cfg.smoothing) * loss
        sm = avg / (1 - cfg.smoothing ** (i + 1))
        if ev["eta_div"] is None and i > 0 and sm > cfg.diverge_factor * best:
            ev["eta_div"] = lr
        best = min(best, sm)
        dead = dead + 1 if loss >= ln_c else 0
        if ev["eta_dead"] is None and dead >= cfg.dead_steps:
            ev["eta_dead"] = lr
        crossed = any(r is not None and r >= 1 for _, r in points)
        if measure and (i + 1) % cfg.measure_every == 0 and not (crossed and ev["eta_div"]):
            s = preconditioned_sharpness(
                model,
                t.loss_fn,
                probe,
                opt,
                v0=v0,
                lanczos_tol=cfg.lanczos_tol,
                lanczos_max_iter=cfg.lanczos_max_iter,
                generator=gen,
                on_nonfinite="flag",
            )
            hvps += s.num_hvps
            v0 = s.eigenvector if s.eigenvector is not None else v0
            points.append((lr, _nan(s.stability_ratio)))
    return {
        **ev,
        "eta_cross": _crossing(points) if measure else None,
        "steps_run": len(lrs),
        "hvps": hvps,
        "lrs": lrs[:: max(1, n // 100)],
        "losses": losses[:: max(1, n // 100)],
        "ratios": points,
    }
