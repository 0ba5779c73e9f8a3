"""The demo's stability-aware finder and the estimates at θ₀ that study F16 calibrated.

Both run on the range test's model and data: LeNet-5 built right after
``torch.manual_seed(cfg.seed)`` (as :func:`~hessian_lr.training.recipes.range_test_from_config`
and ``train`` build it), SGD with the demo's momentum and weight decay, the run's batch order
(:func:`~hessian_lr.training.data.batch_stream` with ``cfg.seed``). Everything happens inside
:func:`~hessian_lr.rng.preserved_rng`, so the demo's later runs see the same global RNGs.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from .config import DemoConfig
from .f16 import F16_PROBE

__all__ = ["finder_phase", "theta0_estimates"]


def _setup(cfg: DemoConfig, train_data: Any, device: Any, lr: float):
    """The range test's model (seeded), an SGD optimizer at ``lr``, the run's batch stream."""
    from ..training.data import batch_stream
    from ..training.models import build_model
    from ..training.setup import make_optimizer

    torch.manual_seed(cfg.seed)
    model = build_model(
        cfg.model,
        num_classes=train_data.num_classes,
        in_channels=train_data.in_channels,
        input_size=train_data.input_size,
    ).to(device)
    opt = make_optimizer(
        "sgd", model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    return model, opt, batch_stream(train_data, cfg.batch_size, seed=cfg.seed)


def finder_phase(cfg: DemoConfig, train_data: Any, device: Any) -> tuple[Any, dict[str, Any]]:
    """Run :func:`hessian_lr.find_lr` on the demo's model and data; the result and its numbers.

    The ladder is exponential from ``cfg.finder_start_lr`` to ``cfg.finder_end_lr`` over at most
    ``cfg.finder_steps`` updates, the sharpness measured every ``cfg.finder_measure_every`` on
    the first training batch (the finder's default probe).
    """
    from ..range_test import find_lr
    from ..rng import preserved_rng

    with preserved_rng():
        model, opt, stream = _setup(cfg, train_data, device, cfg.finder_start_lr)
        batches = [stream.batch(i) for i in range(cfg.finder_steps)]
        res = find_lr(
            model,
            nn.CrossEntropyLoss(),
            batches,
            opt,
            start_lr=cfg.finder_start_lr,
            end_lr=cfg.finder_end_lr,
            num_steps=cfg.finder_steps,
            measure_every=cfg.finder_measure_every,
        )
    numbers = {
        "max_lr": _finite(res.max_lr),
        "interval": [_finite(v) for v in res.interval],
        "edge_lr": _finite(res.edge_lr),
        "stop_reason": res.stop_reason,
        "kind": res.kind,
        "constant": res.constant,
        "calibration": res.calibration,
        "factor": res.factor,
        "num_steps": res.num_steps,
        "num_hvps": res.num_hvps,
        "seconds": res.seconds,
        "num_measurements": len(res.ratios),
        "sharpness_first_last": [res.sharpness[0], res.sharpness[-1]] if res.sharpness else None,
        "last_ratio": res.ratios[-1] if res.ratios else None,
        "flags": list(res.flags),
    }
    return res, numbers


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _eq8_probe(cfg: DemoConfig, train_data: Any, device: Any) -> dict[str, Any]:
    """Eq. 8 on the last three iterates of a short run at F16's probe LR (F16's ``eq8_p1``)."""
    from ..curvature.linop import params_to_vector
    from ..lr import secant_lr

    lr, steps = F16_PROBE["lr"], F16_PROBE["steps"]
    model, opt, stream = _setup(cfg, train_data, device, lr)
    model.train()
    loss_fn, thetas = nn.CrossEntropyLoss(), []
    for i in range(steps):
        x, y = stream.batch(i)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x.to(device)), y.to(device)).backward()
        opt.step()
        thetas = [*thetas, params_to_vector([p.detach() for p in model.parameters()])][-3:]
    s = secant_lr(*thetas, lr, momentum=cfg.momentum)
    return {
        "lr": _finite(s.lr_l1),
        "probe_lr": lr,
        "probe_steps": steps,
        "noise_null": s.noise_null,
        "noise_ratio": _finite(s.noise_ratio),
        "num_hvps": 0,
    }


def theta0_estimates(cfg: DemoConfig, train_data: Any, device: Any) -> dict[str, Any]:
    """The estimates F16 takes at θ₀, measured on the demo's model: name -> {lr, num_hvps, ...}.

    ``sharpness`` = (2 + 2β)/λ_max (F16's c/λ_max for heavy ball), ``quadratic`` = gᵀg/gᵀHg and
    ``secant_hvp`` = Σ|g|/Σ|Hg| on the first training batch (one gradient, one Hg, one Lanczos
    run); ``eq8_p1`` = Eq. 8 after a short run at F16's probe LR. F16's ``update`` (η* along the
    optimizer's update) needs a filled momentum buffer and is left out.
    """
    from ..lr import estimate_lrs
    from ..rng import preserved_rng

    t0 = time.perf_counter()
    with preserved_rng():
        model, _, stream = _setup(cfg, train_data, device, 1e-3)
        x, y = stream.batch(0)
        est = estimate_lrs(
            model,
            nn.CrossEntropyLoss(),
            (x.to(device), y.to(device)),
            methods=("sharpness", "quadratic", "secant_hvp"),
            momentum=cfg.momentum,
            on_nonfinite="flag",
        )
        eq8 = _eq8_probe(cfg, train_data, device)
    sharp = est["sharpness"]
    out = {
        "sharpness": {
            "lr": _finite(sharp.lr_stable_momentum),
            "lambda_max": _finite(sharp.lambda_max),
            "num_hvps": sharp.num_hvps,
        },
        "quadratic": {"lr": _finite(est["quadratic"].lr), "num_hvps": est["quadratic"].num_hvps},
        "secant_hvp": {
            "lr": _finite(est["secant_hvp"].lr),
            "num_hvps": est["secant_hvp"].num_hvps,
        },
        "eq8_p1": eq8,
    }
    return {"estimates": out, "seconds": time.perf_counter() - t0}
