"""Edge-of-stability tracking: the sharpness that governs the optimizer, against its threshold.

Cohen et al. (2021, ICLR, "Gradient descent on neural networks typically occurs at the edge of
stability") found that under full-batch GD the sharpness λ_max(H) rises during training
("progressive sharpening") until it reaches 2/η and then hovers there; under Adam the
*preconditioned* sharpness λ_max(P⁻¹H) rises to ≈ (2 + 2β₁)/((1 − β₁)η) = 38/η at β₁ = 0.9
(Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"). The
:class:`EdgeOfStability` observer records, every ``every`` steps, the sharpness that matters for
the optimizer in use (:func:`~hessian_lr.lr.stability.preconditioned_sharpness`: λ_max(H) for SGD,
λ_max(P⁻¹H) for Adam/RMSprop), η × that sharpness, the threshold and the ratio to it; optionally
the raw λ_max(H) beside the preconditioned one and the GeN estimate along the update
(:func:`~hessian_lr.lr.update.update_lr`). :func:`plot_edge_of_stability` draws saved records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from ..curvature._space import space_of
from ..curvature.hessian import HessianOperator, NonFiniteError
from ..observe import Observer, StepContext
from ._optim import optimizer_parameters
from .options import CurvatureOptions, as_options, rejects_operator_keywords
from .stability import _lanczos_top, preconditioned_sharpness_from_operator
from .update import update_lr_from_operator

__all__ = ["EdgeOfStability", "plot_edge_of_stability"]


class EdgeOfStability(Observer):
    """Every ``every`` steps: sharpness, η·sharpness, threshold c/η and their ratio, recorded.

    Record keys (prefix ``eos_``): ``sharpness`` (λ_max(P⁻¹H) for Adam/RMSprop, λ_max(H) for SGD),
    ``threshold`` (c/η), ``lr`` (η, the weighted mean LR), ``lr_x_sharpness`` (η·λ, to compare
    with ``constant`` c), ``ratio`` (η·λ/c; 1 = the edge), ``kind``, ``constant``,
    ``preconditioned``, ``residual``, ``flags``, ``bn_mode``, ``curvature`` (the matrix),
    ``num_hvps``, ``seconds``; with ``raw`` also ``raw_sharpness`` (λ_max(H)); with ``update``
    also ``update_lr`` (the GeN η*), ``update_multiplier`` (η*/η) and ``update_curvature``
    (dᵀHd/‖d‖²).

    Args:
        every: observe after every ``every``-th update (0: off).
        loss_fn: ``loss_fn(outputs, targets)`` (default: the run's ``ctx.loss_fn``).
        batch: a fixed measurement batch (e.g. a few hundred training examples, as a stand-in for
            the full-batch loss of Cohen et al.); default the batch the step trained on.
        raw: also λ_max(H) when the measured sharpness is preconditioned (one more Lanczos run);
            default True.
        update: also the GeN estimate along the optimizer's update (one more HVP).
        lanczos_tol, lanczos_max_iter: for Lanczos.
        warm_start: start each Lanczos run from the previous eigenvector.
        curvature: how the operator is built (:class:`~hessian_lr.lr.CurvatureOptions`: back
            end, BatchNorm mode (recorded as ``eos_bn_mode``), parameters, closure form, ...),
            or a matrix name: ``curvature="ggn"`` tracks the GGN's sharpness (recorded as
            ``eos_curvature``; Cohen et al. 2021 report it beside the Hessian's).
        at_last: also observe after the run's last update.
        on_nonfinite: ``"flag"`` (default) or ``"raise"``.
        generator: random source for cold Lanczos starts (default: a fixed seed, so that the
            global RNGs are never touched).
    """

    name = "edge_of_stability"

    @rejects_operator_keywords
    def __init__(
        self,
        *,
        every: int = 10,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        batch: Any = None,
        raw: bool = True,
        update: bool = False,
        lanczos_tol: float = 1e-2,
        lanczos_max_iter: int | None = None,
        warm_start: bool = True,
        at_last: bool = False,
        on_nonfinite: Literal["raise", "flag"] = "flag",
        generator: torch.Generator | None = None,
        curvature: CurvatureOptions | str | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be a non-negative integer, got {every!r}")
        self.curvature = as_options(curvature)
        if not lanczos_tol > 0:
            raise ValueError(f"lanczos_tol must be positive, got {lanczos_tol}")
        if on_nonfinite not in ("raise", "flag"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'flag', got {on_nonfinite!r}")
        self.every = every
        self.loss_fn = loss_fn
        self.batch = batch
        self.bn_mode = self.curvature.bn_mode
        self.raw = raw
        self.update = update
        self.lanczos_tol = lanczos_tol
        self.lanczos_max_iter = lanczos_max_iter
        self.warm_start = warm_start
        self.at_last = at_last
        self.on_nonfinite = on_nonfinite
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self._v_pre: torch.Tensor | None = None
        self._v_raw: torch.Tensor | None = None

    def _warm(self, v: torch.Tensor | None, n: int) -> torch.Tensor | None:
        return v if self.warm_start and v is not None and v.numel() == n else None

    def observe(self, ctx: StepContext) -> Mapping[str, Any]:
        """Measure at the current parameters (after update ``ctx.step``); return the record."""
        if ctx.optimizer is None:
            raise ValueError("EdgeOfStability needs the optimizer (StepContext.optimizer)")
        loss_fn = self.loss_fn if self.loss_fn is not None else ctx.loss_fn
        batch = self.batch if self.batch is not None else ctx.batch
        if loss_fn is None or batch is None:
            raise ValueError(
                "EdgeOfStability needs a loss_fn and a batch: pass them to the constructor or "
                "run it in a loop whose StepContext carries them"
            )
        t0 = time.perf_counter()
        names = optimizer_parameters(
            ctx.model, ctx.optimizer, self.curvature.params, moving_only=True
        )
        named = dict(ctx.model.named_parameters())
        params = [named[n] for n in names]
        op = self.curvature.operator(ctx.model, loss_fn, batch, params=names)
        n = space_of(op).local_size  # N, or this rank's part of it on an FSDP2 model
        try:
            res = preconditioned_sharpness_from_operator(
                op,
                ctx.optimizer,
                params,
                lanczos_tol=self.lanczos_tol,
                lanczos_max_iter=self.lanczos_max_iter,
                v0=self._warm(self._v_pre, n),
                on_nonfinite=self.on_nonfinite,
                generator=self.generator,
            )
            if res.eigenvector is not None:
                self._v_pre = res.eigenvector.detach().cpu()
            rec: dict[str, Any] = {
                "eos_sharpness": res.lambda_max,
                "eos_threshold": res.threshold,
                "eos_lr": res.lr_in_use,
                "eos_lr_x_sharpness": res.lr_times_sharpness,
                "eos_ratio": res.stability_ratio,
                "eos_constant": res.constant,
                "eos_kind": res.kind,
                "eos_preconditioned": res.preconditioned,
                "eos_residual": res.residual,
                "eos_flags": list(res.flags),
                "eos_bn_mode": self.bn_mode,
                "eos_curvature": self.curvature.matrix,
            }
            if self.raw and res.preconditioned and "nonfinite_loss" not in res.flags:
                raw = self._raw_sharpness(op, n)
                rec["eos_raw_sharpness"] = raw
            if self.update:
                up = update_lr_from_operator(
                    op, ctx.optimizer, params, on_nonfinite=self.on_nonfinite
                )
                rec["eos_update_lr"] = up.lr
                rec["eos_update_multiplier"] = up.lr_multiplier
                rec["eos_update_curvature"] = up.curvature
                rec["eos_update_flags"] = list(up.flags)
        finally:
            op.release_graph()
        rec["eos_num_hvps"] = int(op.num_hvps)
        rec["eos_seconds"] = time.perf_counter() - t0
        return rec

    def _raw_sharpness(self, op: HessianOperator, n: int) -> float:
        v0 = self._warm(self._v_raw, n)
        try:
            res = _lanczos_top(op, self.lanczos_tol, self.lanczos_max_iter, v0, self.generator)
        except NonFiniteError:
            if self.on_nonfinite == "raise":
                raise
            return math.nan
        self._v_raw = res.eigenvectors[:, 0].detach().cpu()
        return float(res.eigenvalues[0])

    def state_dict(self) -> dict[str, Any]:
        """Warm-start vectors and the generator state (a resumed run continues exactly)."""
        return {
            "v_pre": self._v_pre,
            "v_raw": self._v_raw,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._v_pre = state.get("v_pre")
        self._v_raw = state.get("v_raw")
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])


def plot_edge_of_stability(
    records: Sequence[Mapping[str, Any]], *, ax: Any = None, title: str | None = None
) -> Any:
    """Sharpness against its threshold over training, from saved records (matplotlib Figure).

    Draws ``eos_sharpness`` (and ``eos_raw_sharpness`` when recorded) against ``step`` with the
    threshold c/η dashed, on a log scale. Records without ``eos_sharpness`` are skipped.

    Args:
        records: dicts with ``step`` (else their position is used) and the ``eos_*`` keys.
        ax: an existing matplotlib Axes to draw on (default: a new figure).
        title: the axes title.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt  # lazy: matplotlib is needed for plots only

    rows = [(r.get("step", i), r) for i, r in enumerate(records) if "eos_sharpness" in r]
    if not rows:
        raise ValueError("no record holds 'eos_sharpness': nothing to plot")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.2))
    else:
        fig = ax.figure
    steps = [s for s, _ in rows]

    def col(key: str) -> list[float]:
        out = []
        for _, r in rows:
            v = r.get(key)
            out.append(float(v) if isinstance(v, (int, float)) and v is not None else math.nan)
        return out

    pre = bool(rows[-1][1].get("eos_preconditioned"))
    mat = {"ggn": "G", "fisher": "F", "fisher_mc": "F"}.get(rows[-1][1].get("eos_curvature"), "H")
    label = f"λ_max(P⁻¹{mat})" if pre else f"λ_max({mat})"
    ax.plot(steps, col("eos_sharpness"), color="C0", label=label)
    if any("eos_raw_sharpness" in r for _, r in rows):
        ax.plot(steps, col("eos_raw_sharpness"), color="C2", lw=1.0, label=f"λ_max({mat})")
    kind = rows[-1][1].get("eos_kind", "")
    c = rows[-1][1].get("eos_constant", math.nan)
    ax.plot(steps, col("eos_threshold"), "k--", lw=1.0, label=f"threshold {c:.3g}/η ({kind})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("sharpness")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return fig
