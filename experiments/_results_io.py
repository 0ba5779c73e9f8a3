"""Bringing a run_all output folder into the repository: import, thinning, stale pruning.

``import_results`` copies ``<out>/gpu`` and ``<out>/cpu`` into ``results_gpu/`` and
``results_cpu/``, thinning the per-step records of long finished runs (never an evaluation);
``prune_stale`` removes result folders an earlier version of a preset produced.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Per-step record keys that thinning may drop; a record with any other key is always kept.
STEP_KEYS = {"step", "epoch", "lr", "momentum", "train_loss"}


def thin_records(path: Path, every: int, *, above: int = 2000) -> int:
    """Keep every ``every``-th per-step record of a long run; never an evaluation or probe.

    A record is kept when its step is a multiple of ``every``, when it is the last one, or when
    it carries anything beyond the per-step keys (test accuracy, estimates, λ_max, densities).
    Runs with at most ``above`` records are left alone. Returns the records dropped.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    if every <= 1 or len(lines) <= above:
        return 0
    kept = []
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec.get("step", 0) % every == 0 or i == len(lines) - 1 or set(rec) - STEP_KEYS:
            kept.append(line)
    tmp = path.with_suffix(".thin.tmp")
    tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return len(lines) - len(kept)


def import_results(src: str, *, repo: Path = ROOT, thin: int = 5) -> None:
    """Copy ``<src>/gpu`` into ``results_gpu/`` and ``<src>/cpu`` into ``results_cpu/``.

    An experiment whose ``experiment_config.json`` differs from the one already there replaces
    the old folder (its results are superseded); otherwise the run folders are merged, the
    imported ones winning. Checkpoints come along only for runs that did not finish (they
    resume from them). Finished runs longer than 2,000 steps keep every ``thin``-th per-step
    record (evaluations, estimates and probes are all kept), to keep the results small.
    """
    for preset, target in (("gpu", "results_gpu"), ("cpu", "results_cpu")):
        base = Path(src) / preset
        if not base.is_dir():
            continue
        for exp in sorted(p for p in base.iterdir() if p.is_dir()):
            dest = repo / target / exp.name
            new_cfg, old_cfg = exp / "experiment_config.json", dest / "experiment_config.json"
            if dest.exists() and (
                not old_cfg.exists()
                or not new_cfg.exists()
                or json.loads(old_cfg.read_text()).get("config")
                != json.loads(new_cfg.read_text()).get("config")
            ):
                shutil.rmtree(dest)
                print(f"{target}/{exp.name}: superseded, replaced", flush=True)
            shutil.copytree(exp, dest, dirs_exist_ok=True)
            dropped = 0
            for meta in dest.glob("*/meta.json"):
                if json.loads(meta.read_text()).get("status") in ("finished", "diverged"):
                    records = meta.parent / "records.jsonl"
                    if records.exists():
                        dropped += thin_records(records, thin)
            for lock in dest.glob("*/.lock"):
                lock.unlink()
            print(f"{target}/{exp.name}: imported ({dropped} per-step records thinned)", flush=True)


def prune_stale(*, repo: Path = ROOT, keep: tuple[str, ...] = ()) -> list[str]:
    """Remove ``results_cpu/<exp>`` / ``results_gpu/<exp>`` made by a preset that has changed.

    A folder is stale when its ``experiment_config.json`` came from an earlier version of the
    experiment's ``cpu`` (``gpu``) preset: a different set of fields, or another model or
    dataset (the LeNet-5 presets before issue 13, say). Runs of the current preset with
    overridden values (``--scale``, ``--seeds``, ``--lengths``) are kept. Experiments run_all
    does not know are left alone.
    """
    from hessian_lr.records import to_jsonable

    removed = []
    from run_all import EXPERIMENTS, _modules

    modules = _modules(list(EXPERIMENTS))
    for preset, target in (("gpu", "results_gpu"), ("cpu", "results_cpu")):
        for name, module in modules.items():
            folder = repo / target / name
            stored = folder / "experiment_config.json"
            if not stored.exists() or preset not in module.PRESETS or name in keep:
                continue
            info = json.loads(stored.read_text())
            old = info.get("config") or {}
            current = to_jsonable(module.PRESETS[preset])
            same = set(old) == set(current) and all(
                old.get(k) == current.get(k) for k in ("dataset", "model", "width")
            )
            if info.get("preset") != preset or not same:
                shutil.rmtree(folder)
                removed.append(f"{target}/{name}")
                print(f"{target}/{name}: made by an earlier {preset} preset, removed", flush=True)
    return removed
