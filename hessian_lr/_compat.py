"""Deprecated module paths of hessian_lr 0.1 (a flat package), mapped to their rooms.

``import hessian_lr.hvp`` still works: it warns once (``DeprecationWarning``) and returns the
module that now lives at ``hessian_lr.curvature.hessian``. Names re-exported from ``hessian_lr``
itself did not move.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "linop": "curvature.linop",
    "hvp": "curvature.hessian",
    "lanczos": "curvature.lanczos",
    "power": "curvature.power",
    "trace": "curvature.trace",
    "estimate": "lr.estimate",
    "estimator": "lr.estimator",
    "curvature_lr": "lr.curvature_lr",
    "lr_scheduler": "schedules.scheduler",
    "range_test": "schedules.range_test",
    "data": "training.data",
    "models": "training.models",
    "train": "training.runner",
    "results": "records",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # noqa: D102
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # noqa: D102
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        pkg, _, name = fullname.rpartition(".")
        if pkg != "hessian_lr" or name not in MOVED:
            return None
        new = f"hessian_lr.{MOVED[name]}"
        warnings.warn(
            f"{fullname} moved to {new}; the old path will be removed in a later release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Put the finder for the old paths on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
