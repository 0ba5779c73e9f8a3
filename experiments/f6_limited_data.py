"""F6 -- Limited data: final accuracy of 1cycle vs piecewise-constant (PC) on data subsets.

Smith & Topin, "Super-Convergence" (2017), Fig. 6a and Table 1: ResNet-56 on CIFAR-10 with
50k, 20k and 10k training images; the 1cycle run (10k iterations) beats the PC baseline (80k
iterations) by +1.2, +5.2 and +9.2 points: the advantage of super-convergence grows as labelled
data shrinks (large LRs regularize, SC §4).

Protocol: for every fraction of the training set (a stratified subset drawn per seed, the same
for both arms) the F3 pair: 1cycle (``base_lr`` -> ``max_lr`` -> ``base_lr`` over 90 % of
``onecycle_steps``, then annihilation; cyclical momentum 0.95-0.85) and PC (``pc_lr``, x0.1 at
62.5 % and 87.5 % of ``pc_factor`` x ``onecycle_steps``, momentum 0.9). Iteration counts do not
change with the subset size (as in the paper); PC gets the paper's 8x the 1cycle iterations. The
``cpu`` and ``gpu`` presets use the full set and 20 % of it (the paper's 10k of 50k); their
full-data arms are F3's runs (copied, not retrained), and ``cpu`` runs 3 seeds.

Runs: ``onecycle_p<percent>_seed<s>`` and ``pc_p<percent>_seed<s>`` (``p100``, ``p50``, ...).

summary.json: ``fractions``; ``steps`` {onecycle, pc}; ``final_test_accuracy``
{p<percent>: {onecycle: [per seed], pc: [per seed]}}; ``mean_final_accuracy``
{p<percent>: {onecycle, pc}}; ``gain_points`` {p<percent>: mean 1cycle minus mean PC final
accuracy, in points}; ``gain_points_per_seed`` {p<percent>: [per seed]};
``onecycle_steps_to_pc_final`` {p<percent>: [first evaluated step at which the 1cycle run reached
the PC run's final accuracy (same seed), or null]}; ``claim`` {gain_grows: the gain on the
smallest fraction exceeds the gain on the largest, gain_smallest_minus_largest_points,
monotone: the gain never decreases as the fraction shrinks}.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from _common import arms_main, cli, experiment_name, onecycle_pc_schedules, train_kwargs
from _presets import Base, presets

from hessian_lr.records import read_records
from hessian_lr.training.runner import TrainConfig

EXPERIMENT = experiment_name(__file__)


@dataclass(frozen=True)
class Config(Base):
    fractions: tuple[float, ...] = (1.0, 0.4, 0.2)  # the paper's 50k, 20k, 10k of 50k images
    onecycle_steps: int = 700
    pc_factor: int = 8  # PC runs pc_factor x onecycle_steps iterations (paper: 80k / 10k)

    SCALED = ("onecycle_steps",)


PRESETS = presets(
    Config,
    paper=dict(onecycle_steps=10_000),
    gpu=dict(fractions=(1.0, 0.2), onecycle_steps=300, seeds=(0,)),
    # Three seeds: the full-data arms are F3's runs (copied), so a seed costs the two 20 % arms.
    cpu=dict(fractions=(1.0, 0.2), onecycle_steps=700, seeds=(0, 1, 2)),
    smoke=dict(fractions=(1.0, 0.5), onecycle_steps=10, pc_factor=2),
)


def key(fraction: float) -> str:
    """0.25 -> ``p25`` (percent of the training set)."""
    pct = 100 * fraction
    return f"p{round(pct)}" if abs(pct - round(pct)) < 1e-9 else f"p{pct:g}"


def fraction_arms(cfg: Config, fraction: float, seed: int) -> dict[str, TrainConfig]:
    """The 1cycle and PC runs on ``fraction`` of the training set for ``seed``."""
    common = dict(train_kwargs(cfg, seed), subset=None if fraction >= 1.0 else fraction)
    n1, n2 = cfg.onecycle_steps, cfg.pc_factor * cfg.onecycle_steps
    sched = onecycle_pc_schedules(cfg, n1, n2)

    def run(steps: int, schedule: dict) -> TrainConfig:
        every = max(1, steps // cfg.evals_per_run)
        return TrainConfig(**common, steps=steps, schedule=schedule, eval_every=every)

    return {"onecycle": run(n1, sched["onecycle"]), "pc": run(n2, sched["pc"])}


def arms(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    """Every run of one seed: ``<arm>_p<percent>``."""
    return {
        f"{arm}_{key(fraction)}": tcfg
        for fraction in cfg.fractions
        for arm, tcfg in fraction_arms(cfg, fraction, seed).items()
    }


def steps_to_reach(run_dir, target: float | None) -> int | None:
    """First evaluated step (1-based count of updates) with test accuracy >= ``target``."""
    if target is None:
        return None
    for r in read_records(run_dir / "records.jsonl"):
        if r.get("test_accuracy") is not None and r["test_accuracy"] >= target:
            return r["step"] + 1
    return None


def summarize(cfg: Config, results: dict, *, out: str) -> dict:
    """The summary of every arm's runs (``results``: arm -> one ``TrainResult`` per seed)."""
    keys = [key(fraction) for fraction in cfg.fractions]
    final = {
        k: {
            arm: [r.final_test_accuracy for r in results[f"{arm}_{k}"]]
            for arm in ("onecycle", "pc")
        }
        for k in keys
    }
    reach = {
        k: [
            steps_to_reach(one.run_dir, pc.final_test_accuracy)
            for one, pc in zip(results[f"onecycle_{k}"], results[f"pc_{k}"])
        ]
        for k in keys
    }
    mean = {k: {arm: statistics.fmean(v) for arm, v in arms.items()} for k, arms in final.items()}
    gain = {k: 100 * (m["onecycle"] - m["pc"]) for k, m in mean.items()}
    per_seed = {
        k: [100 * (a - b) for a, b in zip(v["onecycle"], v["pc"])] for k, v in final.items()
    }
    order = [key(f) for f in sorted(cfg.fractions, reverse=True)]  # largest fraction first
    return {
        "fractions": sorted(cfg.fractions, reverse=True),
        "steps": {"onecycle": cfg.onecycle_steps, "pc": cfg.pc_factor * cfg.onecycle_steps},
        "final_test_accuracy": final,
        "mean_final_accuracy": mean,
        "gain_points": gain,
        "gain_points_per_seed": per_seed,
        "onecycle_steps_to_pc_final": reach,
        "claim": {
            "gain_grows": gain[order[-1]] > gain[order[0]],
            "gain_smallest_minus_largest_points": gain[order[-1]] - gain[order[0]],
            "monotone": all(gain[a] <= gain[b] for a, b in zip(order, order[1:])),
        },
    }


main = arms_main(arms, summarize, EXPERIMENT)


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
