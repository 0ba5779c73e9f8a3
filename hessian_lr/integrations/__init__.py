"""Adapters that run hessian_lr observers inside other training loops.

* :mod:`hessian_lr.integrations.lightning` -- ``HessianLRCallback`` for PyTorch Lightning
  (``pip install "hessian-lr[lightning]"``).
* :mod:`hessian_lr.integrations.transformers` -- ``HessianLRTrainerCallback`` for the Hugging
  Face ``Trainer`` (``pip install "hessian-lr[transformers]"``).

Both are thin: the measuring is done by observers (:mod:`hessian_lr.observe`), the adapters only
build a ``StepContext`` from the framework's hook, log the records through the framework's own
logger, and keep the observers' state in the framework's checkpoints. Nothing here is imported by
``import hessian_lr``; each module imports its framework on first use.
"""

from ._common import flatten_metrics

__all__ = ["flatten_metrics"]
