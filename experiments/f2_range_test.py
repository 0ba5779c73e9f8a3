"""F2 -- LR range test: held-out accuracy and smoothed loss vs a linearly rising LR.

Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV 2017), §3.3 and Fig. 3, and
Smith & Topin, "Super-Convergence" (2017), §3 and Fig. 2: train once with the LR rising linearly
from ~0 to a large value and watch the accuracy. It rises while the LR is too small, then turns
ragged and falls where the LR is too large; the LR at the peak is the cycle's ``max_lr`` and
``base_lr`` = ``max_lr``/3 (CLR) or /4 (SC). A curve that stays high over a wide range of large
LRs (ResNet-56 on CIFAR-10 up to LR 3 in SC) signals super-convergence potential. Several test
lengths are run because a longer test trains more at each LR: its curve sits higher and shows
how much the suggestion depends on the test's length.

Protocol: SGD with the training run's momentum and weight decay, the model initialised exactly
as ``hessian_lr.training.train`` does for the same seed, LR ramp from ``start_lr`` to ``end_lr``
over ``num_steps`` updates (``hessian_lr.training.recipes.range_test_from_config``, the
library's one range-test setup; stops on divergence). The held-out set is a stratified split
of the *training* data (never the test set: the suggestions choose hyper-parameters), evaluated
``val_points`` times per test. The curvature cross-check
(λ_max by Lanczos and 2/λ_max at the start) is on.

Runs: ``len<num_steps>_seed<s>``, one per length and seed; each folder holds ``config.json``,
``meta.json`` and ``range_test.json`` (``RangeTestResult.to_dict()``; rebuild it with
``RangeTestResult.from_dict``).

summary.json: ``runs`` {run: {num_steps, end_lr, seed, max_lr, base_lr_third, base_lr_quarter,
steepest_lr, suggestion_flags, peak_val_accuracy, peak_lr, first_val_accuracy,
last_val_accuracy, rises_then_falls, plateau_lrs, plateau_ratio, stopped_early, stop_lr,
stop_reason, lambda_max, two_over_lambda, seconds}}; ``recommended`` {max_lr, base_lr_quarter,
base_lr_third, from_run}: the suggestion of the longest test of the first seed (the one closest
to a real training run); ``claim`` {rises_then_falls_all: the accuracy of every test rose by at
least ``margin`` from its first evaluation to its peak and then fell by at least ``margin`` or
the test diverged, margin}.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from _common import cli, experiment_name, summarize_only
from _presets import Base, presets, train_fields, train_macs

from hessian_lr.range_test import RangeTestResult
from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.training.data import (
    Dataset,
    load_dataset,
    stratified_indices,
)
from hessian_lr.training.recipes import RangeTestSetup, range_test_from_config
from hessian_lr.training.run import Run, now, run_metadata
from hessian_lr.training.setup import resolve_device

EXPERIMENT = experiment_name(__file__)
MARGIN = 0.02  # accuracy change (fraction) that counts as "rose" / "fell"


@dataclass(frozen=True)
class Config(Base):
    start_lr: float = 0.0
    end_lr: float = 3.0
    lengths: tuple[int, ...] = (500, 1000, 2000)  # updates per range test
    val_size: int = 5000  # held-out training examples (stratified)
    val_points: int = 40  # evaluations per test
    diverge_factor: float = 4.0
    smoothing: float = 0.98
    curvature_check: bool = True

    SCALED = ("lengths",)


PRESETS = presets(
    Config,
    paper=dict(end_lr=3.0, lengths=(5000, 10000, 20000, 40000)),
    gpu=dict(end_lr=3.0, lengths=(250, 500, 1000), seeds=(0,)),
    # One 500-update test with 20 evaluations on CPU (the gpu preset shows the three lengths):
    # the claims read the curve's rise, fall and plateau, and the budget goes to seeds elsewhere.
    cpu=dict(end_lr=3.0, lengths=(500,), val_points=20, seeds=(0,)),
    smoke=dict(end_lr=2.0, lengths=(20, 40), val_size=300, val_points=5),
)


def plan(cfg: Config) -> list[dict]:
    """One unit per range test: ``len<n>_seed<s>`` (range tests run whole; not resumable)."""
    evals = cfg.val_points * cfg.val_size / (3.0 * cfg.batch_size)  # forward-only, in steps
    return [
        {"name": f"len{n}_seed{seed}", "seed": seed, "macs": train_macs(cfg, n + round(evals))}
        for seed in cfg.seeds
        for n in cfg.lengths
    ]


def run_unit(cfg: Config, name: str, *, out: str, device: str) -> RangeTestResult | None:
    for seed in cfg.seeds:
        for n in cfg.lengths:
            if name == f"len{n}_seed{seed}":
                data = split_train(cfg, seed)
                return run_range_test(cfg, seed, n, data, out=out, device=device, progress=False)
    raise KeyError(f"{EXPERIMENT} has no unit {name!r}")


def split_train(cfg: Config, seed: int) -> tuple[Dataset, list[tuple[torch.Tensor, ...]]]:
    """(training part, held-out batches): a stratified held-out split of the training set."""
    full = load_dataset(cfg.dataset, split="train")
    held = stratified_indices(full.y, cfg.val_size, seed=seed)
    keep = torch.ones(len(full), dtype=torch.bool)
    keep[held] = False
    train_part = dataclasses.replace(full, x=full.x[keep], y=full.y[keep], indices=None)
    xv, yv = full.x[held], full.y[held]
    val = [(xv[i : i + 1000], yv[i : i + 1000]) for i in range(0, len(yv), 1000)]
    return train_part, val


def range_test(
    cfg: Config,
    seed: int,
    num_steps: int,
    train_part: Dataset,
    val: list,
    *,
    device: torch.device,
    progress: bool,
    curvature_check: bool | None = None,
) -> RangeTestResult:
    """One range test from the runner's initialisation for ``seed`` (the library's recipe)."""
    fields = train_fields(cfg, seed)
    setup = RangeTestSetup(
        dataset=cfg.dataset,
        model=cfg.model,
        model_kwargs=fields["model_kwargs"],
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        augment=fields["augment"],
        start_lr=cfg.start_lr,
        end_lr=cfg.end_lr,
        num_steps=num_steps,
        val_every=max(1, num_steps // cfg.val_points),
        smoothing=cfg.smoothing,
        diverge_factor=cfg.diverge_factor,
        curvature_check=cfg.curvature_check if curvature_check is None else curvature_check,
        seed=seed,
        device=str(device),
    )
    return range_test_from_config(
        setup,
        train_data=train_part,
        val_data=val,
        restore=False,
        generator=torch.Generator(device=device).manual_seed(seed),
        progress=progress,
    )


def describe(res: RangeTestResult, *, margin: float = MARGIN) -> dict:
    """The numbers the claim needs from one range test."""
    s = res.suggestions
    accs = [a for a in res.val_accuracies if a is not None and math.isfinite(a)]
    peak = max(accs) if accs else None
    peak_lr = res.val_lrs[res.val_accuracies.index(peak)] if accs else None
    rises = accs and peak - accs[0] >= margin
    falls = accs and (res.stopped_early or peak - accs[-1] >= margin)
    cur = res.curvature
    return {
        "max_lr": s.max_lr.lr,
        "base_lr_third": s.base_lr_third.lr,
        "base_lr_quarter": s.base_lr_quarter.lr,
        "steepest_lr": s.steepest.lr,
        "suggestion_flags": {k: list(v.flags) for k, v in s.as_dict().items()},
        "peak_val_accuracy": peak,
        "peak_lr": peak_lr,
        "first_val_accuracy": accs[0] if accs else None,
        "last_val_accuracy": accs[-1] if accs else None,
        "rises_then_falls": bool(rises and falls),
        "plateau_lrs": s.plateau_lrs,
        "plateau_ratio": s.plateau_ratio,
        "stopped_early": res.stopped_early,
        "stop_lr": res.lrs[-1] if res.stopped_early else None,
        "stop_reason": res.stop_reason,
        "lambda_max": None if cur is None else cur.lambda_max,
        "two_over_lambda": None if cur is None else cur.two_over_lambda,
        "seconds": res.seconds,
    }


def run_range_test(
    cfg: Config, seed: int, num_steps: int, data, *, out: str, device: str, progress: bool
) -> RangeTestResult | None:
    """Run (or load, if finished) the range test ``len<num_steps>_seed<seed>``.

    In summarize-only mode an unfinished test gives ``None`` (nothing is run).
    """
    run = Run(out, EXPERIMENT, f"len{num_steps}_seed{seed}")
    path = run.dir / "range_test.json"
    if run.status == "finished" and path.exists():
        res = RangeTestResult.from_dict(read_json(path))
        print(f"  {EXPERIMENT}/{run.name}: finished (cached)", flush=True)
        return res
    if summarize_only():
        return None
    dev = resolve_device(device)
    write_json_atomic(
        run.config_path, {**dataclasses.asdict(cfg), "seed": seed, "num_steps": num_steps}
    )
    run.update_meta(
        **run_metadata(device=str(dev), seed=seed),
        status="running",
        started=now(),
        experiment=EXPERIMENT,
    )
    t0 = time.perf_counter()
    try:
        res = range_test(cfg, seed, num_steps, *data, device=dev, progress=progress)
    except BaseException:
        run.update_meta(status="failed")
        raise
    write_json_atomic(path, res.to_dict())
    run.update_meta(status="finished", finished=now(), seconds=time.perf_counter() - t0)
    peak = max((a for a in res.val_accuracies if a is not None), default=float("nan"))
    print(
        f"  {EXPERIMENT}/{run.name}: {len(res.lrs)} updates, "
        f"{'stopped at lr ' + format(res.lrs[-1], '.3g') if res.stopped_early else 'no divergence'}"
        f", peak val acc {100 * peak:.2f}%, max_lr {res.max_lr}, {res.seconds:.1f}s",
        flush=True,
    )
    return res


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    runs: dict[str, dict] = {}
    recommended = None
    for seed in cfg.seeds:
        data = None if summarize_only() else split_train(cfg, seed)
        for n in cfg.lengths:
            res = run_range_test(cfg, seed, n, data, out=out, device=device, progress=progress)
            if res is None:
                continue
            name = f"len{n}_seed{seed}"
            runs[name] = {"num_steps": n, "end_lr": cfg.end_lr, "seed": seed, **describe(res)}
        done = [n for n in sorted(cfg.lengths) if f"len{n}_seed{seed}" in runs]
        if recommended is None and done:
            name = f"len{done[-1]}_seed{seed}"
            r = runs[name]
            recommended = {
                "max_lr": r["max_lr"],
                "base_lr_quarter": r["base_lr_quarter"],
                "base_lr_third": r["base_lr_third"],
                "from_run": name,
            }
    return {
        "runs": runs,
        "recommended": recommended,
        "claim": {
            "rises_then_falls_all": bool(runs)
            and all(r["rises_then_falls"] for r in runs.values()),
            "margin": MARGIN,
        },
    }


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
