"""Checkpointing of ``LREstimator``: ``state_dict`` / ``load_state_dict`` (a mixin).

Kept apart from the estimator's logic: what is saved (plain containers and tensors, loadable with
``torch.load(..., weights_only=True)``), the configuration check on load, and the upgrade of
version-1 states (before the spacing convention and the noise window existed).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["EstimatorCheckpoint"]

_STATE_VERSION = 2


class EstimatorCheckpoint:
    """``state_dict`` / ``load_state_dict`` for :class:`~hessian_lr.lr.estimator.LREstimator`."""

    def _config(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "every": self.every,
            "norm": self.norm,
            "secant_lr_rule": self.secant_lr_rule,
            "secant_scale": self.secant_scale,
            "num_params": sum(p.numel() for p in self._params),
        }

    def state_dict(self) -> dict[str, Any]:
        """The estimator's state, loadable with ``torch.load(..., weights_only=True)``.

        Step count, iterates, LR spans, EMA, history, warm starts, the noise window and the
        generator state.
        """
        vecs = self._eigenvectors
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "num_steps": self.num_steps,
            "snapshots": [s.clone() for s in self._snapshots],
            "span_prev": list(self._span_prev),
            "span_cur": list(self._span_cur),
            "smoothed": dict(self._smoothed),
            "counts": dict(self._counts),
            "history": [json.loads(json.dumps(r)) for r in self._history],
            "eigenvector": vecs["sharpness"].clone() if "sharpness" in vecs else None,
            "eigenvectors": {m: v.clone() for m, v in vecs.items()},
            "noise_ratios": list(self._noise_ratios),
            "theta_before": None if self._theta_before is None else self._theta_before.clone(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the configuration must match."""
        version = state.get("version")
        if version not in (1, _STATE_VERSION):
            raise ValueError(f"unsupported LREstimator state version {version!r}")
        mine, theirs = self._config(), dict(state["config"])
        theirs.setdefault("secant_scale", "per_step")  # version 1 had only the per-step form
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            raise ValueError(f"state_dict configuration differs (saved, here): {diff}")
        dev = self.storage_device
        self.num_steps = int(state["num_steps"])
        self._snapshots = [s.to(dev) for s in state["snapshots"]]
        self._span_prev = [float(x) for x in state["span_prev"]]
        self._span_cur = [float(x) for x in state["span_cur"]]
        self._smoothed = {k: float(v) for k, v in state["smoothed"].items()}
        self._counts = {k: int(v) for k, v in state["counts"].items()}
        for name in self._tracked:  # tracked here but not in the saved state: start fresh
            self._smoothed.setdefault(name, self.ema_init)
            self._counts.setdefault(name, 0)
        self._history = [dict(r) for r in state["history"]]
        vecs = dict(state.get("eigenvectors") or {})
        if not vecs and state.get("eigenvector") is not None:
            vecs["sharpness"] = state["eigenvector"]
        self._eigenvectors = {m: v.to(dev) for m, v in vecs.items()}
        self._noise_ratios = deque(state.get("noise_ratios", []), maxlen=self.noise_window)
        before = state.get("theta_before")
        self._theta_before = None if before is None else before.to(dev)
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        self._latest = {}
        self._pending_lrs = None
