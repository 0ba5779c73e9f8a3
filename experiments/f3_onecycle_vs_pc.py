"""F3 -- 1cycle vs a piecewise-constant (PC) schedule: test accuracy vs iteration.

Super-Convergence (Smith & Topin 2017), Fig. 1a: ResNet-56 on CIFAR-10 reaches 92.4 % with one
cycle of 10k iterations (LR 0.1 -> 3.0 -> 0.1) against 91.2 % for the multistep baseline (0.35,
x0.1 at 50k and 70k) after 80k. The claim: 1cycle reaches at least the baseline's final
accuracy in a fraction of its iterations.

Two baselines beside 1cycle (``onecycle_steps`` iterations): ``pc`` at the paper's multiple
(``pc_factor`` x, 8 as 80k / 10k) and ``pc_same`` at the same iterations as 1cycle, so the
figure separates "1cycle beats a long PC run" from "1cycle beats PC at equal cost". The long
baseline must have converged (its accuracy flat over its last quarter: the figure shows it).
Runs: ``onecycle_seed<s>``, ``pc_seed<s>``, ``pc_same_seed<s>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from _common import arms_main, cli, experiment_name, onecycle_pc_schedules, train_kwargs
from _presets import Base, presets

from hessian_lr.training.runner import TrainConfig

EXPERIMENT = experiment_name(__file__)


ARMS = ("onecycle", "pc", "pc_same")


@dataclass(frozen=True)
class Config(Base):
    onecycle_steps: int = 700  # the 1cycle run's length
    pc_factor: int = 8  # the long baseline runs pc_factor x onecycle_steps (paper: 80k / 10k)

    SCALED = ("onecycle_steps",)


PRESETS = presets(
    Config,
    paper=dict(onecycle_steps=10_000),
    # 300 iterations of batch 512 = 2.6 epochs for 1cycle, 20.5 epochs for PC.
    gpu=dict(onecycle_steps=300),
    # 700 iterations of batch 128 = 1.5 epochs for 1cycle, 12 epochs for PC.
    cpu=dict(onecycle_steps=700),
    smoke=dict(onecycle_steps=24, pc_factor=2),
)


def arms(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    """The three runs of one seed, as TrainConfigs."""
    common = train_kwargs(cfg, seed)
    n1, n2 = cfg.onecycle_steps, cfg.pc_factor * cfg.onecycle_steps
    sched = onecycle_pc_schedules(cfg, n1, n2)
    same = onecycle_pc_schedules(cfg, n1, n1)["pc"]

    def run(steps: int, schedule: dict) -> TrainConfig:
        every = max(1, steps // cfg.evals_per_run)
        return TrainConfig(**common, steps=steps, schedule=schedule, eval_every=every)

    return {
        "onecycle": run(n1, sched["onecycle"]),
        "pc": run(n2, sched["pc"]),
        "pc_same": run(n1, same),
    }


def summarize(cfg: Config, results: dict, *, out: str) -> dict:
    """The summary of every arm's runs (``results``: arm -> one ``TrainResult`` per seed)."""
    return {
        "final_test_accuracy": {
            name: [r.final_test_accuracy for r in results[name]] for name in ARMS
        },
        "status": {name: [r.status for r in results[name]] for name in ARMS},
        "steps": {
            "onecycle": cfg.onecycle_steps,
            "pc": cfg.pc_factor * cfg.onecycle_steps,
            "pc_same": cfg.onecycle_steps,
        },
    }


main = arms_main(arms, summarize, EXPERIMENT)


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
