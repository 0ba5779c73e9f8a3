"""Training batches, resumably: the sampler, the loader and the one batch stream of a run.

The order of the examples is a pure function of ``(seed, epoch)`` (:class:`ResumableBatchSampler`),
so a resumed run replays exactly the same batches; the only other random source of the stream is
the augmentation generator, whose state is checkpointed. :func:`batch_stream` is the one place
that turns a run's seed into its random streams (:func:`augment_seed`, :func:`probe_seed`,
:func:`trace_seed`): the runner, the range-test recipe and the experiments all use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .transforms import augment_batch

__all__ = [
    "ResumableBatchSampler",
    "make_loader",
    "BatchStream",
    "batch_stream",
    "probe_indices",
    "augment_seed",
    "probe_seed",
    "trace_seed",
]


# The offsets below derive a run's independent random streams from its seed. They are part of
# the records' reproducibility: changing one changes every saved run's batches or probes.
def augment_seed(seed: int) -> int:
    """Seed of the augmentation generator of a run with seed ``seed`` (``seed + 777``)."""
    return int(seed) + 777


def probe_seed(seed: int) -> int:
    """Seed choosing the curvature probe's fixed examples (``seed + 12345``)."""
    return int(seed) + 12345


def trace_seed(seed: int, step: int) -> int:
    """Seed of the curvature probe's Hutchinson vectors at ``step`` (``seed * 100003 + step``)."""
    return int(seed) * 100003 + int(step)


def probe_indices(n: int, size: int, *, seed: int) -> torch.Tensor:
    """``size`` distinct example indices out of ``n`` for the curvature probe of run ``seed``.

    Drawn without replacement by a generator seeded with :func:`probe_seed` (the global RNG is
    untouched); int64, shape (min(size, n),).
    """
    g = torch.Generator().manual_seed(probe_seed(seed))
    return torch.randperm(int(n), generator=g)[: int(size)]


def _epoch_seed(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence((int(seed), int(epoch))).generate_state(1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


class ResumableBatchSampler(Sampler[torch.Tensor]):
    """Yields index batches (int64 tensors) in an order fixed by ``(seed, epoch)``.

    Epoch e uses ``permutation(e)``, a ``torch.randperm`` drawn from a generator seeded with a
    hash of ``(seed, e)`` (identity order when ``shuffle=False``), cut into batches of
    ``batch_size`` (the last one shorter unless ``drop_last``). Iterating runs one epoch starting
    at batch ``step`` of epoch ``epoch``, then advances to the next epoch at step 0; so plain
    ``for epoch in ...: for x, y in loader`` sees a fresh order each epoch.

    To resume after a restart at global step s (batches already consumed)::

        epoch, step = divmod(s, len(loader))
        loader.sampler.set_epoch(epoch, step=step)
        for x, y in loader: ...   # the exact batches the uninterrupted run would have seen

    No hidden random state is consumed, so this works without saving anything but ``s``.
    """

    def __init__(
        self, n: int, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last=False
    ) -> None:
        if n < 1:
            raise ValueError(f"the dataset is empty (n={n})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > n:
            raise ValueError(f"drop_last with batch_size {batch_size} > {n} examples: no batches")
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.step = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The order of the examples in epoch ``epoch``, shape (n,) int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """The index batches of epoch ``epoch`` from batch ``start`` on."""
        perm = self.permutation(epoch)
        for b in range(start, len(self)):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size]

    def set_epoch(self, epoch: int, step: int = 0) -> None:
        """Make the next iteration start at batch ``step`` of epoch ``epoch``."""
        if epoch < 0 or not 0 <= step <= len(self):
            raise ValueError(f"need epoch >= 0 and 0 <= step <= {len(self)}, got {epoch}, {step}")
        self.epoch, self.step = int(epoch), int(step)

    def state_dict(self) -> dict:
        """``{"epoch", "step"}``: where the next iteration starts (not what a loop consumed)."""
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.set_epoch(state["epoch"], step=state["step"])

    def __iter__(self) -> Iterator[torch.Tensor]:
        epoch, start = self.epoch, self.step
        yield from self.batches(epoch, start)
        self.epoch, self.step = epoch + 1, 0


def make_loader(
    dataset: Any,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over an in-memory ``Dataset`` with a reproducible, resumable order.

    Batches are fetched with one indexing operation (``dataset[index_tensor]``), not example by
    example. The order is that of ``ResumableBatchSampler`` (reachable as ``loader.sampler``):
    a pure function of ``(seed, epoch)``. Resume at global step s with
    ``loader.sampler.set_epoch(*divmod(s, len(loader)))`` -- see the sampler's docstring.

    Args:
        dataset: a ``Dataset`` (or anything with ``len`` and tensor indexing).
        batch_size: examples per batch.
        shuffle: a fresh permutation each epoch (else the stored order).
        seed: seeds every epoch's permutation.
        drop_last: drop the last, shorter batch of each epoch.
        num_workers: passed to ``DataLoader``.
        pin_memory: passed to ``DataLoader``.

    Returns:
        A ``DataLoader`` yielding ``(x, y)`` with x (B, C, H, W) and y (B,).
    """
    sampler = ResumableBatchSampler(
        len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


class BatchStream:
    """The training batches of one run: step ``t`` -> ``(x, y)``, reproducible and resumable.

    Step ``t`` takes batch ``t mod E`` of epoch ``t // E`` of a :class:`ResumableBatchSampler`
    (``E`` batches per epoch, seeded with ``seed``); with ``augment`` each batch goes through
    :func:`augment_batch` with a CPU generator seeded :func:`augment_seed` (``seed + 777``),
    whose state :meth:`state_dict` saves. Augmentation draws depend on the order of calls, so
    take the batches in step order (as a training loop does).

    Iterating yields the batches from the current position to the end of its epoch, then the
    next iteration continues with the next epoch: a re-iterable stream for
    :func:`hessian_lr.range_test.lr_range_test` that sees the runner's batches.

    Args:
        data: anything with ``x`` (N, ...) and ``y`` (N,) tensors (a ``Dataset``).
        batch_size: examples per batch.
        seed: the run's seed.
        augment: pad-4 crop + flip (CIFAR).
        drop_last: drop each epoch's last, shorter batch (the runner does).
        shuffle: a fresh permutation per epoch (else the stored order).
    """

    def __init__(
        self,
        data: Any,
        batch_size: int,
        *,
        seed: int = 0,
        augment: bool = False,
        drop_last: bool = True,
        shuffle: bool = True,
    ) -> None:
        self.data = data
        self.sampler = ResumableBatchSampler(
            len(data.y), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.augment = bool(augment)
        self.generator = torch.Generator().manual_seed(augment_seed(seed))
        self.position = 0

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch."""
        return len(self.sampler)

    def epoch(self, step: int) -> float:
        """Fractional epoch of update ``step`` (``step / steps_per_epoch``)."""
        return step / len(self.sampler)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of update ``step``: x (B, C, H, W), y (B,), on the data's device."""
        epoch, pos = divmod(int(step), len(self.sampler))
        idx = next(self.sampler.batches(epoch, pos))
        x, y = self.data.x[idx], self.data.y[idx]
        if self.augment:
            x = augment_batch(x, self.generator)
        self.position = int(step) + 1
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = self.position
        end = (start // len(self.sampler) + 1) * len(self.sampler)
        for step in range(start, end):
            yield self.batch(step)

    def state_dict(self) -> dict[str, Any]:
        """``{"position", "aug_gen"}``: the next step and the augmentation generator's state."""
        return {"position": self.position, "aug_gen": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.position = int(state.get("position", 0))
        self.generator.set_state(state["aug_gen"])


def batch_stream(
    data: Any,
    batch_size: int,
    *,
    seed: int = 0,
    augment: bool = False,
    drop_last: bool = True,
) -> BatchStream:
    """The training batches of a run with seed ``seed`` (see :class:`BatchStream`).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> data = SimpleNamespace(x=torch.arange(10.0).view(10, 1, 1, 1), y=torch.arange(10))
        >>> s = batch_stream(data, 4, seed=0)
        >>> s.steps_per_epoch, s.batch(0)[1].shape
        (2, torch.Size([4]))
    """
    return BatchStream(data, batch_size, seed=seed, augment=augment, drop_last=drop_last)
