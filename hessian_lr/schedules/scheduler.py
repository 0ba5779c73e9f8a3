"""``torch.optim`` LR scheduler over the closed-form schedules (``schedules``).

One class, ``ScheduleLR``, applies a ``Schedule`` (or one per parameter group) to an optimizer,
stepped once per batch (optimizer update), as ``CyclicLR`` and ``OneCycleLR`` are in PyTorch
(CLR: Smith 2017, arXiv:1506.01186; 1cycle: Smith & Topin 2017, arXiv:1708.07120; SGDR:
Loshchilov & Hutter 2017, arXiv:1608.03983). It honours the ``LRScheduler`` contract:
``last_epoch=-1`` and an initial step in the constructor (so the optimizer holds ``lr(0)`` before
the first update), ``base_lrs``, ``get_last_lr()``, ``state_dict()`` / ``load_state_dict()``, the
deprecated ``step(epoch)`` (closed form at that epoch, float epochs included, with PyTorch's
``EPOCH_DEPRECATION_WARNING``).

Parameter groups: one schedule on several groups keeps the groups' LR ratios, as PyTorch's
``base_lrs`` schedulers do: group j gets ``schedule.lr(t) * initial_lr_j / initial_lr_0`` (group 0
follows the schedule exactly; with equal initial LRs, the usual case, every group does). Pass
``group_lrs="same"`` for PyTorch CyclicLR/OneCycleLR's scalar behaviour (every group the same
values), or one schedule per group (``per_group``) for independent bounds.

Momentum: where the schedule defines one (``Cyclic``, ``OneCycle``, ``OneCycleCosine``) and
``cycle_momentum=True``, every step also writes ``group["momentum"]`` (SGD, RMSprop) or
``group["betas"][0]`` (Adam-like optimizers), as PyTorch's CyclicLR / OneCycleLR do.

Chaining rules:

* ``ChainedScheduler`` (and stepping several schedulers by hand): ``ScheduleLR`` is chainable, so
  the LRs multiply as with PyTorch's chainable schedulers. Each step it reads ``group["lr"]``,
  takes the factor other schedulers applied since its own last write, and writes
  ``schedule.lr(t) * ratio_j * factor``; in either order, ``ChainedScheduler([LinearLR(opt, 0.4,
  total_iters=3), ScheduleLR(opt, s)])`` gives ``s.lr(t) * LinearLR's factor(t)``. A manual edit
  of ``group["lr"]`` is kept as such a factor too. Where the schedule's value is 0 the factor
  cannot be read and the last one is kept.
* ``SequentialLR`` (e.g. ``LinearLR`` warm-up, then SGDR): at its milestone ``SequentialLR``
  restarts the scheduler at step 0 through the closed form (``_get_closed_form_lr``), which
  returns ``schedule.lr(0) * ratio_j`` and resets the factor to 1.
* ``step(epoch)`` (deprecated in PyTorch, float epochs allowed): the closed form at ``epoch``,
  factor reset to 1, like PyTorch's closed forms.
* ``last_epoch >= 0`` (resume without a state dict): the closed form, factor 1. Resuming through
  ``load_state_dict`` restores the factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .base import Schedule, SchedulePreview, schedule_from_dict

__all__ = ["ScheduleLR"]

GROUP_LRS = ("proportional", "same")


def _group_lr(group: dict[str, Any], key: str = "lr") -> float:
    value = group[key]
    return float(value.item() if isinstance(value, Tensor) else value)


class ScheduleLR(LRScheduler):
    """Set each parameter group's LR (and momentum) to a closed-form schedule, per batch.

    Call ``scheduler.step()`` after every ``optimizer.step()``. After k calls the optimizer holds
    ``schedule.lr(k)``, the LR of update number k (0-based). For a finite schedule (``total_steps``
    T), the T-th call (after the last update) holds the last value, ``lr(T - 1)`` (PyTorch's
    OneCycleLR extrapolates there instead), and any further call raises ``ValueError``.

    Args:
        optimizer: the wrapped optimizer.
        schedule: one ``Schedule`` for all groups, or a sequence with one per parameter group
            (each group its own bounds, as PyTorch's CyclicLR takes per-group base/max lists; see
            ``per_group``).
        cycle_momentum: write the schedule's momentum into ``group["momentum"]`` or
            ``group["betas"][0]`` (only for schedules that define one).
        group_lrs: with one schedule and several groups: ``"proportional"`` (default) keeps the
            groups' initial LR ratios (group j gets ``lr(t) * initial_lr_j / initial_lr_0``, the
            initial LR being ``group["initial_lr"]`` if set, else the LR at construction);
            ``"same"`` gives every group the schedule's values. Ignored with one schedule per
            group.
        last_epoch: index of the last batch seen; -1 starts fresh. A value >= 0 resumes and, as
            for every PyTorch scheduler, needs ``group["initial_lr"]`` in the optimizer (present
            after loading an optimizer state saved while a scheduler was attached).

    Example:
        >>> import torch
        >>> from hessian_lr.schedules import Cyclic
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        >>> sched = ScheduleLR(opt, Cyclic(base_lr=0.1, max_lr=0.5, step_size_up=2))
        >>> lrs = []
        >>> for _ in range(5):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 6))
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.1, 0.3, 0.5, 0.3, 0.1]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule | Sequence[Schedule],
        *,
        cycle_momentum: bool = True,
        group_lrs: Literal["proportional", "same"] = "proportional",
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if group_lrs not in GROUP_LRS:
            raise ValueError(f"group_lrs must be one of {GROUP_LRS}, got {group_lrs!r}")
        n_groups = len(optimizer.param_groups)
        single = isinstance(schedule, Schedule)
        if not single and (
            isinstance(schedule, (str, bytes)) or not isinstance(schedule, Sequence)
        ):
            raise TypeError(
                f"schedule must be a Schedule or a sequence of them, got {type(schedule).__name__}"
            )
        schedules = (schedule,) * n_groups if single else tuple(schedule)  # type: ignore[arg-type]
        if len(schedules) != n_groups:
            raise ValueError(
                f"got {len(schedules)} schedules for {n_groups} parameter groups; pass one "
                "schedule or one per group"
            )
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedule {i} is a {type(s).__name__}, not a Schedule")
        self.schedules: tuple[Schedule, ...] = schedules
        self.group_lrs = group_lrs
        self.ratios = self._ratios(optimizer, single and group_lrs == "proportional")
        self.cycle_momentum = bool(cycle_momentum) and any(s.defines_momentum for s in schedules)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum and "momentum" not in optimizer.defaults and not self.use_beta1:
            raise ValueError(
                f"{type(optimizer).__name__} has neither momentum nor betas; pass "
                "cycle_momentum=False to schedule only the learning rate"
            )
        self.chain_factors = [1.0] * n_groups
        self._written: list[float | None] = [None] * n_groups
        self._restart = last_epoch == -1  # the constructor's step reads the chain factor
        super().__init__(optimizer, last_epoch)
        self.base_lrs = [self._value(j, 0) for j in range(n_groups)]

    @staticmethod
    def _ratios(optimizer: Optimizer, proportional: bool) -> list[float]:
        groups = optimizer.param_groups
        if not proportional or len(groups) == 1:
            return [1.0] * len(groups)
        ref = [_group_lr(g, "initial_lr" if "initial_lr" in g else "lr") for g in groups]
        if ref[0] > 0:
            return [r / ref[0] for r in ref]
        if all(r == ref[0] for r in ref):
            return [1.0] * len(groups)
        raise ValueError(
            f"parameter group 0 has initial LR {ref[0]} but others differ ({ref}): one schedule "
            "scales the groups by their LR ratio to group 0, so give group 0 a positive LR, or "
            "pass group_lrs='same' or one schedule per group (ScheduleLR.per_group)"
        )

    @classmethod
    def per_group(
        cls,
        optimizer: Optimizer,
        schedule_type: type[Schedule],
        *,
        cycle_momentum: bool = True,
        last_epoch: int = -1,
        **params: Any,
    ) -> ScheduleLR:
        """Build one ``schedule_type`` per parameter group, as PyTorch's CyclicLR does.

        Each field listed in ``schedule_type.per_group_fields`` (the LR and momentum bounds) may be
        a list or tuple with one value per group; all other parameters are shared.

        Example: ``ScheduleLR.per_group(opt, Cyclic, base_lr=[1e-4, 1e-3], max_lr=[1e-3, 1e-2],
        step_size_up=2000)``.
        """
        n = len(optimizer.param_groups)
        for key in schedule_type.per_group_fields:
            value = params.get(key)
            if isinstance(value, (list, tuple)) and len(value) != n:
                raise ValueError(
                    f"{key} has {len(value)} values but the optimizer has {n} parameter groups"
                )

        def pick(key: str, value: Any, i: int) -> Any:
            per = key in schedule_type.per_group_fields and isinstance(value, (list, tuple))
            return value[i] if per else value

        schedules = [
            schedule_type(**{k: pick(k, v, i) for k, v in params.items()}) for i in range(n)
        ]
        return cls(optimizer, schedules, cycle_momentum=cycle_momentum, last_epoch=last_epoch)

    # ----------------------------------------------------------------------------- values
    def _step_of(self, s: Schedule, t: float) -> float:
        if s.total_steps is not None and t > s.total_steps - 1:
            if t > s.total_steps:
                raise ValueError(
                    f"tried to step {t} times; the {type(s).__name__} schedule has "
                    f"total_steps={s.total_steps}"
                )
            return s.total_steps - 1
        return t

    def _value(self, j: int, t: float) -> float:
        """Group j's closed-form LR at step t (no chain factor)."""
        s = self.schedules[j]
        return s.lr_at(self._step_of(s, t)) * self.ratios[j]

    def _set_momentum(self, t: float) -> None:
        if not self.cycle_momentum:
            return
        for group, s in zip(self.optimizer.param_groups, self.schedules):
            if s.defines_momentum:
                m = s.momentum_at(self._step_of(s, t))
                if self.use_beta1:
                    group["betas"] = (m, *group["betas"][1:])
                else:
                    group["momentum"] = m

    def get_lr(self) -> list[float]:
        """Chainable form: closed-form LRs at ``last_epoch`` times the other schedulers' factor.

        Side effect: writes the momentum when cycled.
        """
        t = self.last_epoch
        groups = self.optimizer.param_groups
        for j, group in enumerate(groups):
            current = _group_lr(group)
            if self._restart or t == 0:  # a (re)start: factor = LR now / initial LR
                initial = _group_lr(group, "initial_lr") if "initial_lr" in group else current
                factor = current / initial if initial else 1.0
                self.chain_factors[j] = factor if math.isfinite(factor) else 1.0
            elif self._written[j]:  # a change since our last write is another scheduler's
                self.chain_factors[j] *= current / self._written[j]
        self._restart = False
        self._set_momentum(t)
        return [self._value(j, t) * self.chain_factors[j] for j in range(len(groups))]

    def _get_closed_form_lr(self) -> list[float]:
        """Closed form at ``last_epoch`` (``step(epoch)``, ``SequentialLR`` restarts): factor 1."""
        self.chain_factors = [1.0] * len(self.optimizer.param_groups)
        self._restart = False
        self._set_momentum(self.last_epoch)
        return [self._value(j, self.last_epoch) for j in range(len(self.chain_factors))]

    def _update_lr(self, epoch: float | None = None) -> None:
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, float))):
            raise TypeError(f"epoch must be a number of steps, got {type(epoch).__name__}")
        super()._update_lr(epoch)  # type: ignore[arg-type]
        self._written = [_group_lr(g) for g in self.optimizer.param_groups]

    # ----------------------------------------------------------------------------- misc
    def preview(self, num_steps: int | None = None) -> list[SchedulePreview]:
        """The schedules' LR (and momentum) at steps 0 .. num_steps - 1, one entry per group.

        Does not touch the optimizer. ``num_steps`` defaults to each schedule's ``total_steps``.
        LRs include the group ratios (``group_lrs="proportional"``), not other schedulers.
        """
        out = []
        for s, r in zip(self.schedules, self.ratios):
            p = s.preview(num_steps)
            out.append(SchedulePreview(p.lr * r, p.momentum))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Counters, factors and the schedules as plain dicts (``weights_only=True`` loads it)."""
        state = super().state_dict()
        state["schedules"] = [s.to_dict() for s in self.schedules]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore counters and schedules saved by ``state_dict()``."""
        state = dict(state_dict)
        described = state.pop("schedules", None)
        if described is not None:
            if len(described) != len(self.optimizer.param_groups):
                raise ValueError(
                    f"state_dict holds {len(described)} schedules but the optimizer has "
                    f"{len(self.optimizer.param_groups)} parameter groups"
                )
            state["schedules"] = tuple(schedule_from_dict(d) for d in described)
        super().load_state_dict(state)
