"""``torch.optim`` LR schedulers over the closed-form schedules (``schedules.closed_form``).

One class, ``ScheduleLR``, applies a ``Schedule`` (or one per parameter group) to an optimizer,
stepped once per batch (optimizer update), as ``CyclicLR`` and ``OneCycleLR`` are in PyTorch
(CLR: Smith 2017, arXiv:1506.01186; 1cycle: Smith & Topin 2017, arXiv:1708.07120; SGDR:
Loshchilov & Hutter 2017, arXiv:1608.03983). It honours the ``LRScheduler`` contract:
``last_epoch=-1`` and an initial step in the constructor (so the optimizer holds ``lr(0)`` before
the first update), ``base_lrs``, ``get_last_lr()``, ``state_dict()`` / ``load_state_dict()``.

Momentum: where the schedule defines one (``Cyclic``, ``OneCycle``, ``OneCycleCosine``) and
``cycle_momentum=True``, every step also writes ``group["momentum"]`` (SGD, RMSprop) or
``group["betas"][0]`` (Adam-like optimizers), as PyTorch's CyclicLR / OneCycleLR do.

Chaining: like PyTorch's CyclicLR and OneCycleLR, ``ScheduleLR`` is closed form: each step
*overwrites* ``group["lr"]`` with the schedule's value, so it does not compose multiplicatively in
``ChainedScheduler`` (a chainable scheduler stepped after it scales only the current step's value,
once). It does compose in ``SequentialLR`` (e.g. ``LinearLR`` warm-up, then SGDR): at its milestone
``SequentialLR`` restarts it at step 0 through ``_update_lr(0)``, which a closed form handles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from hessian_lr.schedules.closed_form import Schedule, SchedulePreview, schedule_from_dict

__all__ = ["ScheduleLR"]


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
        last_epoch: index of the last batch seen; -1 starts fresh. A value >= 0 resumes and, as
            for every PyTorch scheduler, needs ``group["initial_lr"]`` in the optimizer (present
            after loading an optimizer state saved while a scheduler was attached).

    Example:
        >>> import torch
        >>> from hessian_lr.schedules.closed_form import Cyclic
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
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        n_groups = len(optimizer.param_groups)
        schedules = (schedule,) * n_groups if isinstance(schedule, Schedule) else tuple(schedule)
        if len(schedules) != n_groups:
            raise ValueError(
                f"got {len(schedules)} schedules for {n_groups} parameter groups; pass one "
                "schedule or one per group"
            )
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedule {i} is a {type(s).__name__}, not a Schedule")
        self.schedules: tuple[Schedule, ...] = schedules
        self.cycle_momentum = bool(cycle_momentum) and any(s.defines_momentum for s in schedules)
        self.use_beta1 = "betas" in optimizer.defaults
        if self.cycle_momentum and "momentum" not in optimizer.defaults and not self.use_beta1:
            raise ValueError(
                f"{type(optimizer).__name__} has neither momentum nor betas; pass "
                "cycle_momentum=False to schedule only the learning rate"
            )
        if last_epoch == -1:
            for group, s in zip(optimizer.param_groups, schedules):
                if isinstance(group["lr"], Tensor):  # tensor LRs (capturable/fused) stay tensors
                    group["lr"].fill_(s.lr(0))
                else:
                    group["lr"] = s.lr(0)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = [s.lr(0) for s in schedules]

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

    def get_lr(self) -> list[float]:
        """Closed-form LRs at ``last_epoch`` (side effect: writes momentum if cycled)."""
        t = self.last_epoch
        lrs = []
        for group, s in zip(self.optimizer.param_groups, self.schedules):
            if s.total_steps is not None:
                if t > s.total_steps:
                    raise ValueError(
                        f"tried to step {t} times; the {type(s).__name__} schedule has "
                        f"total_steps={s.total_steps}"
                    )
                t_s = min(t, s.total_steps - 1)
            else:
                t_s = t
            lrs.append(s.lr(t_s))
            if self.cycle_momentum and s.defines_momentum:
                m = s.momentum(t_s)
                if self.use_beta1:
                    group["betas"] = (m, *group["betas"][1:])
                else:
                    group["momentum"] = m
        return lrs

    def preview(self, num_steps: int | None = None) -> list[SchedulePreview]:
        """The schedules' LR (and momentum) at steps 0 .. num_steps - 1, one entry per group.

        Does not touch the optimizer. ``num_steps`` defaults to each schedule's ``total_steps``.
        """
        return [s.preview(num_steps) for s in self.schedules]

    def state_dict(self) -> dict[str, Any]:
        """Counters plus the schedules as plain dicts (``torch.load(weights_only=True)`` works)."""
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
