"""F4 -- Cycle-length sweep: one 1cycle run per length, test accuracy vs iteration.

Smith & Topin, "Super-Convergence" (2017), Fig. 1b and Table 1: ResNet-56 on CIFAR-10 trained
with a single cycle (LR 0.1 -> 3.0 -> 0.1) of several stepsizes. The claim: longer cycles gain
some accuracy, but short cycles stay competitive (super-convergence means most of the accuracy
arrives in very few iterations; the paper's 10k-iteration cycle already beats the 80k-iteration
piecewise-constant baseline, 92.4 % vs 91.2 %).

Protocol: the F3 1cycle (linear up over 45 % of the run, down over 45 %, a linear annihilation
tail over the last 10 % to 1/1000 of ``base_lr``; momentum 0.95 -> 0.85 -> 0.95), the same
``base_lr``/``max_lr`` (from the F2 range test: ``max_lr`` near the accuracy peak, ``base_lr`` =
``max_lr``/4) for every length, only the length changes.

Runs: ``onecycle_<steps>_seed<s>`` for each length in ``lengths`` (total iterations).

summary.json: ``lengths`` (iterations), ``final_test_accuracy`` {length: [per seed]},
``best_test_accuracy`` {length: [per seed]}, ``mean_final_accuracy`` {length: mean},
``gap_to_longest_points`` {length: mean final of the longest minus this one, in points},
``claim`` {longer_gains: the longest cycle's mean final accuracy exceeds the shortest's,
gain_points: that difference, shortest_competitive: the shortest is within
``competitive_points`` of the longest, competitive_points, monotone: mean final accuracy never
decreases with length}.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from _common import cli, experiment_name, run_arms

from hessian_lr.training.runner import TrainConfig

EXPERIMENT = experiment_name(__file__)
COMPETITIVE_POINTS = 2.0  # "competitive": within this many accuracy points of the longest cycle


@dataclass(frozen=True)
class Config:
    dataset: str = "fashion-mnist"
    model: str = "lenet5"
    batch_size: int = 128
    weight_decay: float = 5e-4
    lengths: tuple[int, ...] = (300, 600, 1200, 2400)  # total iterations of each 1cycle run
    base_lr: float = 0.04  # max_lr / 4 (SC)
    max_lr: float = 0.16  # accuracy peak of the F2 cpu range test (0.165, 2000 updates)
    eval_every: int = 150
    seeds: tuple[int, ...] = (0,)
    bn_momentum: float | None = None  # ResNet only: 0.05 = Caffe's 0.95 moving average


PRESETS = {
    "paper": Config(
        dataset="cifar10",
        model="resnet56",
        batch_size=1000,
        weight_decay=1e-4,
        lengths=(5000, 10_000, 20_000, 40_000),
        base_lr=0.1,
        max_lr=3.0,
        eval_every=1000,
        bn_momentum=0.05,
    ),
    "cpu": Config(),
    "smoke": Config(dataset="digits", batch_size=64, lengths=(10, 20), eval_every=10),
}


def onecycle(steps: int, base_lr: float, max_lr: float) -> dict:
    """The F3 1cycle over ``steps`` iterations: 45 % up, 45 % down, 10 % annihilation."""
    return {
        "type": "OneCycle",
        "base_lr": base_lr,
        "max_lr": max_lr,
        "step_size": int(0.45 * steps),
        "total_steps": steps,
    }


def config(cfg: Config, steps: int, seed: int) -> TrainConfig:
    return TrainConfig(
        dataset=cfg.dataset,
        model=cfg.model,
        model_kwargs={} if cfg.bn_momentum is None else {"bn_momentum": cfg.bn_momentum},
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        steps=steps,
        schedule=onecycle(steps, cfg.base_lr, cfg.max_lr),
        eval_every=min(cfg.eval_every, steps),
        seed=seed,
        augment=cfg.dataset.startswith("cifar"),
    )


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    results = run_arms(
        lambda seed: {f"onecycle_{n}": config(cfg, n, seed) for n in cfg.lengths},
        cfg.seeds,
        out=out,
        experiment=EXPERIMENT,
        device=device,
        progress=progress,
    )
    final = {str(n): [r.final_test_accuracy for r in results[f"onecycle_{n}"]] for n in cfg.lengths}
    best = {str(n): [r.best_test_accuracy for r in results[f"onecycle_{n}"]] for n in cfg.lengths}
    mean = {k: statistics.fmean(v) for k, v in final.items()}
    keys = [str(n) for n in sorted(cfg.lengths)]
    longest, shortest = mean[keys[-1]], mean[keys[0]]
    gain = 100 * (longest - shortest)
    return {
        "lengths": sorted(cfg.lengths),
        "final_test_accuracy": final,
        "best_test_accuracy": best,
        "mean_final_accuracy": mean,
        "gap_to_longest_points": {k: 100 * (longest - mean[k]) for k in keys},
        "claim": {
            "longer_gains": longest > shortest,
            "gain_points": gain,
            "shortest_competitive": gain <= COMPETITIVE_POINTS,
            "competitive_points": COMPETITIVE_POINTS,
            "monotone": all(mean[a] <= mean[b] for a, b in zip(keys, keys[1:])),
        },
    }


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
