"""Per-layer sharpness during training: λ_max of each layer's curvature block every k steps.

Layer-wise LR methods (LARS, You et al. 2017; LAMB, You et al. 2020) and per-layer studies of
the edge of stability ask how sharp each layer is on its own: λ_max(A_BB) for the diagonal block
of a curvature matrix A (Hessian, GGN, Fisher) that belongs to the parameters of layer B, with
2/λ_max(A_BB) the largest stable plain-SGD step for that layer alone. The
:class:`LayerSharpnessObserver` records it (cockpit-style: an observer of the loop, one record
per ``every`` steps, never the loop's owner) through
:func:`~hessian_lr.curvature.layer_sharpness`; :func:`plot_layer_sharpness` draws saved records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..curvature.blocks import layer_sharpness
from ..observe import Observer, StepContext
from .options import CurvatureOptions, as_options

__all__ = ["LayerSharpnessObserver", "plot_layer_sharpness", "PREFIX"]

#: Record keys are ``PREFIX + block name`` (λ_max of that block).
PREFIX = "layer_sharpness/"


class LayerSharpnessObserver(Observer):
    """Every ``every`` steps: λ_max of each layer's block of the curvature, one key per layer.

    Record keys: ``layer_sharpness/<block>`` (λ_max), ``layer_sharpness_curvature``,
    ``layer_sharpness_num_matvecs``, ``layer_sharpness_seconds`` and
    ``layer_sharpness_not_converged`` (blocks whose Lanczos run stopped above ``tol``).

    Args:
        every: observe after every ``every``-th update (0: off).
        curvature: the matrix by name (``"hessian"``, ``"ggn"``, ``"fisher"``,
            ``"fisher_mc"``) or a :class:`~hessian_lr.lr.CurvatureOptions` (matrix, back end,
            BatchNorm mode -- default ``DEFAULT_BN_MODE`` --, dtype, ...; ``params`` is not
            used: the blocks say which parameters).
        blocks: {block name: parameter names}; default one block per module that owns
            parameters (:func:`~hessian_lr.curvature.layer_blocks`).
        loss_fn: ``loss_fn(outputs, targets)`` (default: the run's ``ctx.loss_fn``).
        batch: a fixed measurement batch (default: the batch the step trained on).
        tol: Lanczos relative residual per block.
        max_iter: Lanczos Krylov dimension cap per block.
        at_last: also observe after the run's last update.
        generator: random source of the Lanczos starts (default seeded 0: global RNG untouched).
    """

    name = "layer_sharpness"

    def __init__(
        self,
        *,
        every: int = 10,
        curvature: CurvatureOptions | str | None = None,
        blocks: Mapping[str, Sequence[str]] | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        batch: Any = None,
        tol: float = 1e-2,
        max_iter: int | None = None,
        at_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be a non-negative integer, got {every!r}")
        self.curvature = as_options(curvature)
        if not tol > 0:
            raise ValueError(f"tol must be positive, got {tol}")
        self.every, self.blocks = every, blocks
        self.loss_fn, self.batch = loss_fn, batch
        self.tol, self.max_iter, self.at_last = tol, max_iter, at_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def observe(self, ctx: StepContext) -> Mapping[str, Any]:
        """Measure at the current parameters (after update ``ctx.step``); return the record."""
        loss_fn = self.loss_fn if self.loss_fn is not None else ctx.loss_fn
        batch = self.batch if self.batch is not None else ctx.batch
        if loss_fn is None or batch is None:
            raise ValueError(
                "LayerSharpnessObserver needs a loss_fn and a batch: pass them to the "
                "constructor or run it in a loop whose StepContext carries them"
            )
        t0 = time.perf_counter()
        kw = self.curvature.operator_kwargs()
        kw.pop("params", None)
        res = layer_sharpness(
            ctx.model,
            loss_fn,
            batch,
            curvature=self.curvature.matrix,
            blocks=self.blocks,
            tol=self.tol,
            max_iter=self.max_iter,
            generator=self.generator,
            **kw,
        )
        rec: dict[str, Any] = {PREFIX + b: lam for b, lam in zip(res.blocks, res.lambda_max)}
        rec["layer_sharpness_curvature"] = self.curvature.matrix
        rec["layer_sharpness_num_matvecs"] = res.num_matvecs
        rec["layer_sharpness_not_converged"] = [
            b for b, ok in zip(res.blocks, res.converged) if not ok
        ]
        rec["layer_sharpness_seconds"] = time.perf_counter() - t0
        return rec

    def state_dict(self) -> dict[str, Any]:
        """The generator state (a resumed run draws the same Lanczos starts)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])


def plot_layer_sharpness(
    records: Sequence[Mapping[str, Any]],
    *,
    lr: float | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """λ_max per layer over training, from saved records (a matplotlib Figure).

    One line per ``layer_sharpness/<block>`` key against ``step`` (log scale); with ``lr`` the
    plain-SGD stability threshold 2/η is drawn dashed.

    Args:
        records: dicts with ``step`` (else their position) and ``layer_sharpness/*`` keys.
        lr: the learning rate η for the 2/η line (None: no line).
        ax: an existing matplotlib Axes (default: a new figure).
        title: the axes title.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt  # lazy: plots only

    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k.startswith(PREFIX) and k not in keys]
    if not keys:
        raise ValueError(f"no record holds a '{PREFIX}*' key: nothing to plot")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.2))
    else:
        fig = ax.figure
    rows = [(r.get("step", i), r) for i, r in enumerate(records) if any(k in r for k in keys)]
    steps = [s for s, _ in rows]
    for i, k in enumerate(keys):
        ys = [float(r[k]) if isinstance(r.get(k), (int, float)) else math.nan for _, r in rows]
        ax.plot(steps, ys, color=f"C{i % 10}", label=k[len(PREFIX) :])
    if lr is not None:
        ax.axhline(2.0 / lr, color="k", ls="--", lw=1.0, label="2/η")
    curv = rows[-1][1].get("layer_sharpness_curvature", "hessian")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"λ_max of the layer's {curv} block")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig
