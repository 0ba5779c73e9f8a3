"""Normalisation statistics, stratified subsets and CIFAR augmentation (pure functions).

The CIFAR augmentation is that of He et al., *Deep Residual Learning* (CVPR 2016, §4.2): pad 4
pixels on each side, take a random 32×32 crop, flip horizontally with probability 1/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["channel_stats", "stratified_indices", "augment_batch"]


def channel_stats(images: np.ndarray, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (population) of integer pixels, in [0, 1] units.

    Computed from a histogram of the integer pixel values, so no float copy is made.

    Args:
        images: non-negative integer pixels, shape (N, C, H, W).
        scale: the pixel value that maps to 1.0 (255 for 8-bit images, 16 for digits).

    Returns:
        ``(mean, std)``, one value per channel.
    """
    means, stds = [], []
    values = np.arange(int(images.max()) + 1, dtype=np.float64) / scale
    for c in range(images.shape[1]):
        counts = np.bincount(images[:, c].ravel(), minlength=len(values)).astype(np.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(math.sqrt(var))
    return tuple(means), tuple(stds)


def stratified_indices(
    labels: torch.Tensor | np.ndarray | Sequence[int], size: float | int, *, seed: int = 0
) -> torch.Tensor:
    """Indices of a stratified, deterministic subset (class proportions kept as integers allow).

    The count is ``round(size * N)`` for a fraction, else ``size``. Class c gets
    ``floor(n N_c / N)`` examples plus one for the classes with the largest remainders
    (Hamilton's method, exact integer arithmetic), so every class count is within 1 of
    proportional. Which examples: the first ``k_c`` of a permutation of class c drawn from
    ``numpy.random.SeedSequence((seed, c))``; so for a fixed seed a class's examples at a
    smaller size are (up to the ±1 rounding) among those at a larger size.

    Args:
        labels: (N,) integer labels.
        size: fraction in (0, 1] or count in [1, N].
        seed: which examples are drawn.

    Returns:
        Sorted int64 indices, shape (n,).
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    total = len(y)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise TypeError(f"size must be a fraction or a count, got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < size <= 1.0:
            raise ValueError(f"a fractional size must lie in (0, 1], got {size}")
        n = max(1, round(float(size) * total))
    else:
        n = int(size)
        if not 1 <= n <= total:
            raise ValueError(f"a count must lie in [1, {total}], got {n}")
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts
    take = quota // total
    remainder = quota % total
    extra = n - int(take.sum())
    order = np.argsort(-remainder, kind="stable")  # ties: smaller label first
    take[order[:extra]] += 1
    chosen = []
    for c, k in zip(classes, take):
        members = np.flatnonzero(y == c)
        rng = np.random.default_rng(np.random.SeedSequence((int(seed), int(c))))
        chosen.append(rng.permutation(members)[:k])
    return torch.from_numpy(np.sort(np.concatenate(chosen))).to(torch.int64)


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """Random crop after zero padding, then a random horizontal flip, per example (He et al. 2016).

    Each image is zero-padded by ``padding`` pixels on every side (zero = the mean colour when
    ``x`` is normalized), a window of the original size is cut at a uniform random offset, and
    with probability 1/2 mirrored left-right. Vectorized: one gather for the whole batch.

    Random numbers: first the (N, 2) offsets ``torch.randint(0, 2 * padding + 1)``, then the
    flips ``torch.rand(N) < 0.5``, both drawn from ``generator`` on its own device (CPU when
    None: the global generator), so a seeded CPU generator gives the same result on any device.

    Args:
        x: images (N, C, H, W); not modified.
        generator: the random source (seed it for reproducibility; save its ``get_state()`` to
            resume).
        padding: pixels added on each side (4 for CIFAR).
        flip: also mirror at random.

    Returns:
        Augmented images, same shape, dtype and device as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = x.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=gen_device)
    offsets = offsets.to(x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=gen_device).to(x.device) < 0.5
        cols = torch.where(mirrored[:, None], (w - 1) - cols, cols)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1:] + cols  # (N, W)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
