"""F8 -- Sweeps under 1cycle: weight decay, momentum (constant and cyclical), batch size.

Smith & Topin, "Super-Convergence" (2017), Figs. 9-10 and Tables 5-6 (and Smith 2018,
"A disciplined approach to neural network hyper-parameters", §4): with the large LRs of
super-convergence, (a) weight decay must be small -- too much (1e-3 against 1e-4 for ResNet-56
on CIFAR-10) kills the effect, because large LRs already regularize; (b) the momentum value
(0.8 ... 0.95, or cycled in counter-phase to the LR) changes the result little; (c) larger
batches do slightly better.

Protocol: the F3 1cycle (45 % up, 45 % down, 10 % annihilation; ``base_lr``/``max_lr`` the
family's fixed values, not F2's suggestion: see ``_presets.Base``) around a base setting
(``weight_decay``, cyclical momentum 0.95 -> 0.85 -> 0.95,
``batch_size``), changing one factor at a time. Constant momentum m is a 1cycle whose momentum
bounds are both m. Batch-size runs keep the iteration count, as the paper does
(``batch_protocol = "steps"``; ``"epochs"`` sees the same number of examples instead:
``onecycle_steps`` x ``batch_size`` / b iterations), with the same LRs.

Runs: ``base_seed<s>`` (the base setting: it is the cyclical-momentum point of the momentum
sweep and the base point of the other two), ``wd<value>_seed<s>`` (``wd1e-04``),
``mom<value>_seed<s>`` (``mom0.85``), ``bs<value>_seed<s>``.

summary.json: ``base`` {weight_decay, momentum: "cyclical", batch_size, steps};
``final_test_accuracy`` {weight_decay: {value: [per seed]}, momentum: {value or "cyclical": [...]},
batch_size: {value: [...]}} (each sweep includes the base run at its value); ``mean`` (same
layout, means); ``steps`` {batch size: iterations}; ``claim`` {weight_decay: {largest,
largest_is_worst, drop_points (best mean minus the largest value's mean)}, momentum:
{spread_points (max minus min mean), cyclical_minus_best_constant_points}, batch_size:
{largest_minus_smallest_points, monotone_increasing}}.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from _common import arms_main, cli, experiment_name, train_kwargs
from _presets import Base, presets

from hessian_lr.training.runner import TrainConfig

EXPERIMENT = experiment_name(__file__)


@dataclass(frozen=True)
class Config(Base):
    onecycle_steps: int = 700  # at every batch size (batch_protocol "steps")
    weight_decays: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    momenta: tuple[float, ...] = (0.8, 0.85, 0.9, 0.95)  # constant; the base run is cyclical
    cyclical_momentum: tuple[float, float] = (0.85, 0.95)  # (at the LR peak, at base LR)
    batch_sizes: tuple[int, ...] = (64, 256)
    batch_protocol: str = "steps"  # "steps": same iterations (the paper); "epochs": same examples

    SCALED = ("onecycle_steps",)


PRESETS = presets(
    Config,
    paper=dict(
        onecycle_steps=10_000, weight_decays=(1e-3, 1e-4, 1e-5, 1e-6), batch_sizes=(256, 512, 1536)
    ),
    # One seed on the GPU (as F6, F7, F9, F10): three everywhere would take the F2-F12 gpu set
    # from ~440 s to ~710 s by run_all's cost model, over its 10-minute budget. The seed rule
    # leaves a gpu margin under 3 points undecided; rerun with --seeds 0 1 2 when there is time.
    gpu=dict(onecycle_steps=300, batch_sizes=(256, 1024), seeds=(0,)),
    # 12 evaluations a run (not 20): 30 runs, and an evaluation of the 10k test images costs
    # as much as ~26 training steps (20 evaluations would add ~0.5 CPU-hour to the family).
    cpu=dict(onecycle_steps=700, batch_sizes=(64, 256), evals_per_run=12),
    smoke=dict(onecycle_steps=12, weight_decays=(1e-3, 1e-5), momenta=(0.9,), batch_sizes=(32,)),
)


def _fmt(kind: str, value: float) -> str:
    if kind == "wd":
        return f"wd{value:.0e}"
    if kind == "mom":
        return f"mom{value:.2f}"
    return f"bs{int(value)}"


def run_configs(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    """{arm name: TrainConfig} for one seed (the base run once; run ``<arm>_seed<seed>``)."""
    if cfg.batch_protocol not in ("epochs", "steps"):
        raise ValueError(f"batch_protocol must be 'epochs' or 'steps', got {cfg.batch_protocol!r}")

    def make(*, wd: float, momentum: tuple[float, float], batch: int) -> TrainConfig:
        scale = cfg.batch_size / batch if cfg.batch_protocol == "epochs" else 1.0
        steps = max(4, round(cfg.onecycle_steps * scale))
        schedule = {
            "type": "OneCycle",
            "base_lr": cfg.base_lr,
            "max_lr": cfg.max_lr,
            "step_size": int(0.45 * steps),
            "total_steps": steps,
            "base_momentum": momentum[0],
            "max_momentum": momentum[1],
        }
        fields = {
            **train_kwargs(cfg, seed),
            "batch_size": batch,
            "weight_decay": wd,
            "momentum": momentum[1],
        }
        return TrainConfig(
            **fields,
            steps=steps,
            schedule=schedule,
            eval_every=max(1, steps // cfg.evals_per_run),
        )

    base = dict(wd=cfg.weight_decay, momentum=tuple(cfg.cyclical_momentum), batch=cfg.batch_size)
    runs = {"base": make(**base)}
    for wd in cfg.weight_decays:
        if wd != cfg.weight_decay:
            runs[_fmt("wd", wd)] = make(**{**base, "wd": wd})
    for m in cfg.momenta:
        runs[_fmt("mom", m)] = make(**{**base, "momentum": (m, m)})
    for b in cfg.batch_sizes:
        if b != cfg.batch_size:
            runs[_fmt("bs", b)] = make(**{**base, "batch": b})
    return runs


def arms(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    return run_configs(cfg, seed)


def _mean(d: dict[str, list]) -> dict[str, float]:
    return {k: statistics.fmean(v) for k, v in d.items()}


def summarize(cfg: Config, runs: dict, *, out: str) -> dict:
    """The summary of every arm's runs (``runs``: arm -> one ``TrainResult`` per seed)."""
    acc: dict[str, dict[str, list]] = {"weight_decay": {}, "momentum": {}, "batch_size": {}}
    steps = {str(t.batch_size): t.steps for t in run_configs(cfg, cfg.seeds[0]).values()}
    for i in range(len(cfg.seeds)):
        results = {name: per_seed[i] for name, per_seed in runs.items()}
        base = results["base"].final_test_accuracy
        for wd in sorted({*cfg.weight_decays, cfg.weight_decay}, reverse=True):
            r = base if wd == cfg.weight_decay else results[_fmt("wd", wd)].final_test_accuracy
            acc["weight_decay"].setdefault(f"{wd:g}", []).append(r)
        for m in cfg.momenta:
            acc["momentum"].setdefault(f"{m:g}", []).append(
                results[_fmt("mom", m)].final_test_accuracy
            )
        acc["momentum"].setdefault("cyclical", []).append(base)
        for b in sorted({*cfg.batch_sizes, cfg.batch_size}):
            r = base if b == cfg.batch_size else results[_fmt("bs", b)].final_test_accuracy
            acc["batch_size"].setdefault(str(b), []).append(r)
    mean = {sweep: _mean(d) for sweep, d in acc.items()}
    wd_mean = mean["weight_decay"]
    largest_wd = f"{max({*cfg.weight_decays, cfg.weight_decay}):g}"
    mom = mean["momentum"]
    constant = [v for k, v in mom.items() if k != "cyclical"]
    bs = mean["batch_size"]
    bs_keys = sorted(bs, key=int)
    return {
        "base": {
            "weight_decay": cfg.weight_decay,
            "momentum": "cyclical",
            "cyclical_momentum": list(cfg.cyclical_momentum),
            "batch_size": cfg.batch_size,
            "steps": cfg.onecycle_steps,
        },
        "batch_protocol": cfg.batch_protocol,
        "final_test_accuracy": acc,
        "mean": mean,
        "steps": steps,
        "claim": {
            "weight_decay": {
                "largest": float(largest_wd),
                "largest_is_worst": wd_mean[largest_wd] == min(wd_mean.values()),
                "drop_points": 100 * (max(wd_mean.values()) - wd_mean[largest_wd]),
            },
            "momentum": {
                "spread_points": 100 * (max(mom.values()) - min(mom.values())),
                "cyclical_minus_best_constant_points": (
                    100 * (mom["cyclical"] - max(constant)) if constant else None
                ),
            },
            "batch_size": {
                "largest_minus_smallest_points": 100 * (bs[bs_keys[-1]] - bs[bs_keys[0]]),
                "monotone_increasing": all(bs[a] <= bs[b] for a, b in zip(bs_keys, bs_keys[1:])),
            },
        },
    }


main = arms_main(run_configs, summarize, EXPERIMENT)


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
