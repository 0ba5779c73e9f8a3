"""The runner's observers: the LR estimator, the curvature probe, evaluation, user callbacks.

Each is a :class:`hessian_lr.observe.Observer` (``should_run(step)`` -> ``observe(ctx)`` -> a
record's new keys, ``state_dict`` for resume), so :func:`hessian_lr.training.runner.train` runs
them all the same way and a new diagnostic needs no change to the loop. The runner passes a
:class:`RunContext`, a ``StepContext`` that also carries the step's record so far (an observer
later in the list sees the keys of those before it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..curvature.lanczos import lanczos
from ..curvature.trace import trace_estimate
from ..lr.options import CurvatureOptions, as_options, rejects_operator_keywords
from ..observe import CallbackObserver, Observer, StepContext
from .data import Dataset, trace_seed

__all__ = [
    "RunContext",
    "EstimatorObserver",
    "CurvatureProbe",
    "EvalObserver",
    "RecordCallback",
    "evaluate",
]


@dataclass
class RunContext(StepContext):
    """A :class:`~hessian_lr.observe.StepContext` plus the step's record so far.

    Attributes:
        record: the keys written for this step by the loop (step, epoch, lr, momentum,
            train_loss) and by the observers that ran before; observers return new keys rather
            than editing it (only :class:`RecordCallback` edits it, as the old ``callback`` did).
    """

    record: dict[str, Any] = field(default_factory=dict)


class EstimatorObserver(Observer):
    """Adapter: an :class:`hessian_lr.lr.estimator.LREstimator` as an observer.

    The estimator must see every optimizer step (it accumulates the LRs of the secant's span),
    so ``every = 1``; it returns the keys ``estimates`` and ``estimates_smoothed`` on the steps
    where the estimator estimated (every ``estimator.every`` steps).
    """

    name = "estimator"
    every = 1

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def observe(self, ctx: StepContext) -> Mapping[str, Any] | None:  # noqa: D102
        if self.estimator.step(ctx.batch, lr=ctx.lr):
            latest = self.estimator.history[-1]
            return {"estimates": latest["estimates"], "estimates_smoothed": latest["smoothed"]}
        return None

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return self.estimator.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: D102
        self.estimator.load_state_dict(dict(state))

    def close(self) -> None:  # noqa: D102
        self.estimator.close()


class CurvatureProbe(Observer):
    """λ_max (warm-started Lanczos) and a Hutchinson trace on a fixed training batch.

    Runs after updates ``0, every, 2 every, ...`` and after the last one. The Hessian is that of
    the mean cross-entropy over ``batch``, built as ``curvature`` says (BatchNorm in
    ``curvature.bn_mode``, default :data:`hessian_lr.lr.defaults.DEFAULT_BN_MODE`, the mode of
    every LR measurement), recorded as ``bn_mode``. Record keys: ``lambda_max``,
    ``lambda_max_hvps``, ``bn_mode``, ``trace`` and ``trace_std_error`` (when ``trace_probes``)
    and ``probe_seconds``. The trace's Rademacher
    vectors come from a generator seeded :func:`~hessian_lr.training.data.trace_seed`.

    Args:
        batch: ``(x, y)`` on the model's device (:func:`hessian_lr.training.setup.probe_batch`).
        every: the probe's interval in updates.
        trace_probes: Hutchinson vectors per trace (0: no trace).
        seed: the run's seed.
        curvature: how the operator is built (:class:`~hessian_lr.lr.CurvatureOptions`; its
            ``closure`` must stay False: the probe's loss is ``CrossEntropyLoss()(outputs, y)``).
    """

    name = "probe"
    at_last = True

    @rejects_operator_keywords
    def __init__(
        self,
        batch: tuple[torch.Tensor, torch.Tensor],
        *,
        every: int,
        trace_probes: int = 0,
        seed: int = 0,
        curvature: CurvatureOptions | None = None,
    ) -> None:
        self.batch = batch
        self.every = every
        self.trace_probes = trace_probes
        self.seed = seed
        self.curvature = as_options(curvature)
        if self.curvature.closure:
            raise ValueError(
                "CurvatureProbe computes CrossEntropyLoss()(outputs, y): closure=False"
            )
        self.bn_mode = self.curvature.bn_mode
        self.v0: torch.Tensor | None = None

    def should_run(self, step: int, *, last: bool = False) -> bool:
        """After updates 0, every, 2 every, ... and after the last."""
        return self.every > 0 and (step % self.every == 0 or last)

    def observe(self, ctx: StepContext) -> Mapping[str, Any]:  # noqa: D102
        op = self.curvature.operator(ctx.model, nn.CrossEntropyLoss(), self.batch)
        t0 = time.perf_counter()
        res = lanczos(op, k=1, which="LA", tol=1e-3, v0=self.v0, stop="eigenvalue", progress=False)
        self.v0 = res.eigenvectors[:, 0].detach().clone() if res.eigenvectors is not None else None
        out: dict[str, Any] = {
            "lambda_max": float(res.eigenvalues[0]),
            "lambda_max_hvps": res.num_matvecs,
            "bn_mode": self.bn_mode,
        }
        if self.trace_probes:
            g = torch.Generator(device=op.device).manual_seed(trace_seed(self.seed, ctx.step))
            # XTrace (Epperly, Tropp & Webber 2024): the most accurate per HVP (issue 17)
            method = "xtrace" if self.trace_probes >= 4 else "hutchinson"
            tr = trace_estimate(op, self.trace_probes, method=method, generator=g)
            out["trace"] = tr.estimate
            out["trace_std_error"] = tr.std_error
            out["trace_method"] = method
        out["probe_seconds"] = time.perf_counter() - t0
        return out

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"v0": None if self.v0 is None else self.v0.cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: D102
        device = self.batch[0].device
        self.v0 = None if state["v0"] is None else state["v0"].to(device)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Dataset, *, batch_size: int = 1000, device: torch.device | None = None
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) of ``model`` on ``data`` in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for start in range(0, len(data.y), batch_size):
            x = data.x[start : start + batch_size].to(device)
            y = data.y[start : start + batch_size].to(device)
            out = model(x)
            loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
    finally:
        model.train(was_training)
    n = len(data.y)
    return loss_sum / n, correct / n


class EvalObserver(Observer):
    """Test loss and accuracy (``test_loss``, ``test_accuracy``) every ``every`` updates and last.

    Args:
        data: the held-out set.
        every: interval in updates.
        batch_size: evaluation batch size.
    """

    name = "eval"
    at_last = True

    def __init__(self, data: Dataset, *, every: int, batch_size: int = 1000) -> None:
        self.data = data
        self.every = every
        self.batch_size = batch_size

    def observe(self, ctx: StepContext) -> Mapping[str, Any]:  # noqa: D102
        test_loss, acc = evaluate(ctx.model, self.data, batch_size=self.batch_size)
        return {"test_loss": test_loss, "test_accuracy": acc}


class RecordCallback(CallbackObserver):
    """The runner's ``callback(step, model, record)``: sees the step's complete record.

    Called after every update, last among the observers, with the record being built (it may
    add keys in place), and once before the first update of a fresh run with ``step = -1``, the
    initial model and an empty record that is not written (:meth:`on_train_start`).
    """

    name = "callback"

    def __init__(self, fn: Callable[[int, nn.Module, dict], None]) -> None:
        super().__init__(fn, every=1)

    def on_train_start(self, ctx: StepContext) -> None:
        """The ``step = -1`` call on the initial model (fresh runs only)."""
        self.fn(-1, ctx.model, {})

    def observe(self, ctx: StepContext) -> None:  # noqa: D102
        record = ctx.record if isinstance(ctx, RunContext) else {}
        self.fn(ctx.step, ctx.model, record)
        return None
