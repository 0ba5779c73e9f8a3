"""R^N split into shards like FSDP2's parameters: the vector space of a sharded Hessian.

The flat parameter vector of an operator is the concatenation of its parameters (each
flattened in row-major order), as for every operator of this package. Under FSDP2
(``fully_shard``) parameter i is a ``Shard(0)`` DTensor: rank r holds rows [a_r, b_r) of it,
i.e. one contiguous range of the flat vector. Rank r's part of a vector is the concatenation of
those ranges over the parameters -- exactly the layout of its local parameter and gradient
shards, so a product reads and writes shards with no communication.

:class:`ShardSpace` is the :mod:`._space` interface for that layout:

* reductions (``reduce``, ``norm``, ``dot``) all-reduce partial sums in float64 over the shard
  group (one collective; the same bits on every rank, so every rank runs the same recurrence);
* random vectors are defined entry by entry from their *global* index: the flat vector is cut
  into blocks of :data:`BLOCK` entries, block b of probe j is drawn from its own generator seeded
  by (seed, j, b), and a rank draws only the blocks its ranges touch. The result does not depend
  on the number of ranks; the seed is one draw from the caller's generator, broadcast from rank
  0 so that ranks whose generators differ still agree;
* ``qr`` is TSQR (Demmel et al. 2012, "Communication-optimal parallel and sequential QR and LU
  factorizations"): a local QR per rank, then the QR of the stacked R factors (one collective).

Memory per rank: the local part, O(N/p), per vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .distributed import Reducer

__all__ = ["ShardSpace", "BLOCK"]

#: Entries per independently seeded block of a random vector.
BLOCK = 4096
_MIX = (0x5851F42D4C957F2D, 0x14057B7EF767814F, 0x9E3779B97F4A7C15)


class ShardSpace:
    """R^N as the union of the ranks' contiguous ranges (see the module docstring).

    Args:
        pieces: this rank's ranges, in local order: (global start, length) per parameter.
        dim: N.
        reducer: the collectives of the shard group.
        device: where the vectors live.
    """

    sharded = True

    def __init__(
        self,
        pieces: Sequence[tuple[int, int]],
        dim: int,
        reducer: Reducer,
        device: torch.device,
    ) -> None:
        self.pieces = [(int(g), int(n)) for g, n in pieces]
        self.dim = int(dim)
        self.local_size = sum(n for _, n in self.pieces)
        self.reducer = reducer
        self.device = device
        parts = [torch.arange(g, g + n, dtype=torch.int64) for g, n in self.pieces]
        self.index = (torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)).to(device)

    def __repr__(self) -> str:
        return (
            f"ShardSpace(N={self.dim}, local={self.local_size}, rank={self.reducer.rank}"
            f"/{self.reducer.world_size})"
        )

    # ----------------------------------------------------------------------------- reductions
    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over the shard group of ``t`` (partial sums), same dtype and device."""
        return self.reducer.sum_([t])[0][0]

    def norm(self, x: torch.Tensor, dim: Any = None, keepdim: bool = False) -> torch.Tensor:
        """2-norm over the vector dimension(s) ``dim`` (all entries when None), all shards."""
        sq = x.double().square()
        sq = sq.sum() if dim is None else sq.sum(dim=dim, keepdim=keepdim)
        return self.reduce(sq).sqrt().to(x.dtype)

    def dot(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """uᵀv over all shards."""
        return self.reduce(torch.dot(u, v))

    def qr(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Thin QR of the tall (local, k) matrix Y by TSQR: Q (local, k), R (k, k) everywhere."""
        n, k = Y.shape
        q_loc, r_loc = torch.linalg.qr(Y)  # (n, min(n,k)), (min(n,k), k)
        p, rank = self.reducer.world_size, self.reducer.rank
        stacked = Y.new_zeros(p * k, k)
        stacked[rank * k : rank * k + r_loc.shape[0]] = r_loc
        stacked = self.reduce(stacked)  # every rank's R, each in its own block
        q2, r = torch.linalg.qr(stacked)  # identical inputs: identical factors on every rank
        block = q2[rank * k : rank * k + r_loc.shape[0]]  # (min(n,k), k)
        return q_loc @ block, r

    # ----------------------------------------------------------------------------- layout
    def eye(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """This rank's rows of the N x N identity, (local, N)."""
        E = torch.zeros(self.local_size, self.dim, dtype=dtype, device=device)
        E[torch.arange(self.local_size, device=device), self.index.to(device)] = 1
        return E

    def diagonal_sum(self, P: torch.Tensor) -> torch.Tensor:
        """Σ_i P[i, i] for P laid out like :meth:`eye` (local rows, all N columns)."""
        rows = torch.arange(self.local_size, device=P.device)
        return self.reduce(P[rows, self.index.to(P.device)].sum())

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The full (N, ...) vector(s) from every rank's part (O(N) memory: small models, tests)."""
        full = x.new_zeros((self.dim, *x.shape[1:]))
        full[self.index.to(x.device)] = x
        return self.reduce(full)

    def local_part(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's part (local, ...) of a full (N, ...) vector."""
        return full[self.index.to(full.device)].clone()

    # ----------------------------------------------------------------------------- random
    def _seed(self, generator: torch.Generator | None) -> int:
        dev = "cpu" if generator is None else generator.device
        s = torch.randint(0, 2**62, (1,), generator=generator, device=dev, dtype=torch.int64)
        return int(self.reducer.agree_(s.cpu())[0])

    def _draw(
        self,
        lead: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype,
        kind: str,
    ) -> torch.Tensor:
        seed = self._seed(generator)
        count = 1
        for d in lead:
            count *= int(d)
        out = torch.empty(count, self.local_size, dtype=dtype)
        for j in range(count):
            cache: dict[int, torch.Tensor] = {}
            pos = 0
            for start, length in self.pieces:
                for b in range(start // BLOCK, (start + length - 1) // BLOCK + 1 if length else 0):
                    if b not in cache:
                        cache = {b: _block(seed, j, b, dtype, kind)}
                    lo, hi = max(start, b * BLOCK), min(start + length, (b + 1) * BLOCK)
                    out[j, pos + lo - start : pos + hi - start] = cache[b][
                        lo - b * BLOCK : hi - b * BLOCK
                    ]
                pos += length
        return out.reshape(*lead, self.local_size).to(self.device)

    def randn(
        self, lead: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """Standard normal vectors (*lead, local), defined by global index (rank-count free)."""
        return self._draw(lead, generator, dtype, "normal")

    def rademacher(
        self, lead: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype
    ) -> torch.Tensor:
        """Independent ±1 vectors (*lead, local), defined by global index."""
        return self._draw(lead, generator, dtype, "rademacher")


def _block(seed: int, probe: int, block: int, dtype: torch.dtype, kind: str) -> torch.Tensor:
    """Block ``block`` of probe ``probe``: BLOCK entries from a generator of their own."""
    s = (seed * _MIX[0] + (probe + 1) * _MIX[1] + (block + 1) * _MIX[2]) % (2**63)
    g = torch.Generator().manual_seed(s)
    if kind == "normal":
        return torch.randn(BLOCK, generator=g, dtype=dtype)
    return torch.randint(0, 2, (BLOCK,), generator=g, dtype=torch.int64).to(dtype).mul_(2).sub_(1)
