"""Training runs: data, models, the runner, observers and run records.

Uses ``curvature``, ``lr`` and ``schedules``; nothing in the library imports it except the CLI
and the demo. Submodules are imported on use (``from hessian_lr.training.runner import train``).
"""
