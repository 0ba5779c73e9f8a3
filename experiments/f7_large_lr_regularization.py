"""F7 -- Large-LR regularization: training and test loss during an LR range test.

Smith & Topin, "Super-Convergence" (2017), Fig. 4 and §4 ("large learning rates regularize"):
in a range test on ResNet-56 / CIFAR-10 the test loss keeps falling over a range of LRs where
the training loss already rises: a large LR acts as a regularizer, which is why other
regularization (weight decay) must be reduced under super-convergence (see F8).

Protocol: one linear range test (``hessian_lr.range_test.lr_range_test``, the F2 protocol:
SGD with momentum and weight decay, the runner's initialisation, stop on divergence) run twice
from the same seed -- bit-identical training trajectories on CPU, checked -- once evaluating a
fixed stratified subset of the *training* examples (``train_eval_size``), once the test set,
both in eval mode at the same updates. So at every evaluation we have the training loss and the
test loss of the same weights. The smoothed mini-batch training loss of the run (what Caffe and
the paper plot) is recorded too.

Runs: ``seed<s>`` (the ``cpu`` preset: 3 seeds, since the two minima lie within a few grid
steps of each other); each folder holds ``config.json``, ``meta.json``, ``range_test_train.json``
and ``range_test_test.json`` (``RangeTestResult.to_dict()``) and ``curves.json`` (columns per
evaluation: step, lr, train_loss, train_accuracy, test_loss, test_accuracy,
smoothed_batch_loss).

summary.json: ``runs`` {run: {lr_at_min_train_loss, lr_at_min_test_loss,
lr_at_min_smoothed_batch_loss, min_train_loss, min_test_loss, train_loss_rise (train loss at the
test-loss minimum minus its minimum), test_loss_drop (test loss at the train-loss minimum minus
its minimum), falling_test_rising_train_fraction (share of consecutive evaluation pairs with the
LR rising where the train loss rose and the test loss fell), stop_lr, trajectories_identical,
holds}}; ``claim`` {holds_all: for every seed the test-loss minimum lies at a larger LR than the
train-loss minimum, i.e. the test loss still falls while the train loss rises}.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from _common import cli, experiment_name, summarize_only
from _presets import Base, presets, train_macs
from f2_range_test import range_test

from hessian_lr.range_test import RangeTestResult
from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.training.data import load_dataset, stratified_indices
from hessian_lr.training.run import Run, now, run_metadata
from hessian_lr.training.setup import resolve_device

EXPERIMENT = experiment_name(__file__)


@dataclass(frozen=True)
class Config(Base):
    start_lr: float = 0.0
    end_lr: float = 3.0
    num_steps: int = 1500
    train_eval_size: int = 5000  # training examples the training loss is evaluated on
    val_points: int = 30  # evaluations per test
    diverge_factor: float = 4.0
    smoothing: float = 0.98
    curvature_check: bool = False

    SCALED = ("num_steps",)


PRESETS = presets(
    Config,
    paper=dict(end_lr=3.0, num_steps=20000),
    gpu=dict(end_lr=3.0, num_steps=1000, seeds=(0,)),
    cpu=dict(end_lr=3.0, num_steps=1500, seeds=(0, 1, 2)),
    smoke=dict(end_lr=2.0, num_steps=30, train_eval_size=300, val_points=5),
)


def plan(cfg: Config) -> list[dict]:
    """One unit per seed, ``seed<s>``: two range-test passes (not resumable)."""
    evals = cfg.val_points * (cfg.train_eval_size + 10_000) / (3.0 * cfg.batch_size)
    macs = train_macs(cfg, 2 * cfg.num_steps + round(evals))
    return [{"name": f"seed{seed}", "seed": seed, "macs": macs} for seed in cfg.seeds]


def run_unit(cfg: Config, name: str, *, out: str, device: str) -> dict | None:
    for seed in cfg.seeds:
        if name == f"seed{seed}":
            return run_seed(cfg, seed, out=out, device=device, progress=False)
    raise KeyError(f"{EXPERIMENT} has no unit {name!r}")


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 1000) -> list[tuple]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def curves(on_train: RangeTestResult, on_test: RangeTestResult) -> dict[str, list]:
    """Per-evaluation columns of the two passes (the shorter pass bounds the length)."""
    n = min(len(on_train.val_steps), len(on_test.val_steps))
    steps = list(on_test.val_steps[:n])
    return {
        "step": steps,
        "lr": list(on_test.val_lrs[:n]),
        "train_loss": list(on_train.val_losses[:n]),
        "train_accuracy": list(on_train.val_accuracies[:n]),
        "test_loss": list(on_test.val_losses[:n]),
        "test_accuracy": list(on_test.val_accuracies[:n]),
        "smoothed_batch_loss": [on_test.smoothed_losses[s] for s in steps],
    }


def _argmin(values: list[float]) -> int | None:
    finite = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    return min(finite, key=lambda i: values[i]) if finite else None


def describe(c: dict[str, list], on_train: RangeTestResult, on_test: RangeTestResult) -> dict:
    """The numbers the claim needs from one pair of passes."""
    i_tr, i_te, i_sb = (_argmin(c[k]) for k in ("train_loss", "test_loss", "smoothed_batch_loss"))
    lr = c["lr"]
    pairs = [
        (c["train_loss"][k + 1] > c["train_loss"][k])
        and (c["test_loss"][k + 1] < c["test_loss"][k])
        for k in range(len(lr) - 1)
    ]
    identical = len(on_train.losses) == len(on_test.losses) and all(
        a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(on_train.losses, on_test.losses)
    )
    out = {
        "lr_at_min_train_loss": None if i_tr is None else lr[i_tr],
        "lr_at_min_test_loss": None if i_te is None else lr[i_te],
        "lr_at_min_smoothed_batch_loss": None if i_sb is None else lr[i_sb],
        "min_train_loss": None if i_tr is None else c["train_loss"][i_tr],
        "min_test_loss": None if i_te is None else c["test_loss"][i_te],
        "train_loss_rise": None,
        "test_loss_drop": None,
        "falling_test_rising_train_fraction": sum(pairs) / len(pairs) if pairs else None,
        "num_evaluations": len(lr),
        "stop_lr": on_test.lrs[-1] if on_test.stopped_early else None,
        "trajectories_identical": bool(identical),
        "holds": False,
    }
    if i_tr is not None and i_te is not None:
        out["train_loss_rise"] = c["train_loss"][i_te] - c["train_loss"][i_tr]
        out["test_loss_drop"] = c["test_loss"][i_tr] - c["test_loss"][i_te]
        out["holds"] = bool(lr[i_te] > lr[i_tr] and out["train_loss_rise"] > 0)
    return out


def run_seed(cfg: Config, seed: int, *, out: str, device: str, progress: bool) -> dict | None:
    """Both passes of seed ``seed`` (or their saved results) -> the run's description."""
    run = Run(out, EXPERIMENT, f"seed{seed}")
    paths = {k: run.dir / f"range_test_{k}.json" for k in ("train", "test")}
    if run.status == "finished" and all(p.exists() for p in paths.values()):
        res = {k: RangeTestResult.from_dict(read_json(p)) for k, p in paths.items()}
        print(f"  {EXPERIMENT}/{run.name}: finished (cached)", flush=True)
        return describe(read_json(run.dir / "curves.json"), res["train"], res["test"])
    if summarize_only():
        return None
    dev = resolve_device(device)
    write_json_atomic(run.config_path, {**dataclasses.asdict(cfg), "seed": seed})
    run.update_meta(
        **run_metadata(device=str(dev), seed=seed),
        status="running",
        started=now(),
        experiment=EXPERIMENT,
    )
    t0 = time.perf_counter()
    train = load_dataset(cfg.dataset, split="train")
    test = load_dataset(cfg.dataset, split="test")
    sub = stratified_indices(train.y, cfg.train_eval_size, seed=seed)
    evals = {"train": _batches(train.x[sub], train.y[sub]), "test": _batches(test.x, test.y)}
    res = {}
    try:
        for k in ("train", "test"):
            res[k] = range_test(
                cfg, seed, cfg.num_steps, train, evals[k], device=dev, progress=progress
            )
            write_json_atomic(paths[k], res[k].to_dict())
    except BaseException:
        run.update_meta(status="failed")
        raise
    c = curves(res["train"], res["test"])
    write_json_atomic(run.dir / "curves.json", c)
    run.update_meta(status="finished", finished=now(), seconds=time.perf_counter() - t0)
    d = describe(c, res["train"], res["test"])
    print(
        f"  {EXPERIMENT}/{run.name}: train-loss min at lr {d['lr_at_min_train_loss']:.3g}, "
        f"test-loss min at lr {d['lr_at_min_test_loss']:.3g}, {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return d


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    runs = {
        f"seed{s}": run_seed(cfg, s, out=out, device=device, progress=progress) for s in cfg.seeds
    }
    runs = {k: v for k, v in runs.items() if v is not None}  # summarize-only: finished ones
    holds = bool(runs) and all(r["holds"] for r in runs.values())
    return {"runs": runs, "claim": {"holds_all": holds}}


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
