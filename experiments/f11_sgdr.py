"""F11 -- SGDR anytime performance: test error vs epoch, step schedule vs warm restarts.

SGDR (Loshchilov & Hutter, ICLR 2017, arXiv:1608.03983), Fig. 2 (and Table 1): WRN-28-10 on
CIFAR-10/100, 200 epochs, batch 128, Nesterov momentum 0.9, weight decay 5e-4. The default
step schedule (LR 0.1, or the tuned 0.05, x0.2 at epochs 60, 120, 160) against cosine annealing
with warm restarts (η_max = 0.05, η_min = 0, T_0 = 1 or 10 epochs, T_mult = 2; restarts at
1, 3, 7, 15, 31, 63, 127 or 10, 30, 70, 150). The claim: SGDR reaches a given test error 2–4x
sooner and ends comparable or better (CIFAR-10, WRN-28-10: about 4 % test error for both
after 200 epochs, SGDR slightly lower; the paper's Table 1). The ``paper`` preset uses
ResNet-56 (WRN-28-10 is not built here); ``cpu`` is LeNet-5 on Fashion-MNIST with a "paper
epoch" of ``epoch_steps`` = 7 optimizer steps, so the 200-epoch protocol (milestones, T_0,
restarts) is kept exactly, in 1,400 steps (~3 real epochs). Epochs in the summary are paper
epochs (steps / epoch_steps).

Runs (per seed s): ``step_lr0.1_seed<s>``, ``step_lr0.05_seed<s>``, ``sgdr_T0_1_seed<s>``,
``sgdr_T0_10_seed<s>`` (names from the values: ``sgdr_T0_<T_0>``).

summary.json:

* ``epochs`` (paper epochs), ``epoch_steps``, ``real_epochs``, ``restarts`` {run: [epochs]}.
* ``final_test_error`` / ``best_test_error``: {run: [per seed]} (fractions).
* ``curves``: {run: [[epoch, test error], ...]} (first seed).
* ``target``: the best final error of the step runs (first seed); ``targets``: target + 0, 0.5,
  1, 2 points; ``epochs_to_target``: {f"{t:.4f}": {run: first evaluated epoch with error ≤ t,
  or null}}; ``speedup``: {f"{t:.4f}": {sgdr run: (earliest epoch a step run reaches t) /
  (epoch this SGDR run reaches t)}} (null when either never does).
* ``checks``: ``sgdr_sooner`` (holds: some SGDR run reaches ``target`` ≥ 2x sooner than the
  step runs; "speedup"), ``sgdr_ends_comparable`` (holds: the best SGDR final error ≤ the best
  step final error + 0.5 points; the errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from _common import arms_main, cli, experiment_name, train_kwargs
from _presets import Base, presets

from hessian_lr.training.data import dataset_info
from hessian_lr.training.run import Run
from hessian_lr.training.runner import TrainConfig

EXPERIMENT = experiment_name(__file__)


@dataclass(frozen=True)
class Config(Base):
    optimizer: str = "nesterov"
    epochs: int = 200  # paper epochs
    epoch_steps: int | None = 7  # optimizer steps per paper epoch; None: a real epoch
    step_lrs: tuple[float, ...] = (0.1, 0.05)
    step_milestones: tuple[int, ...] = (60, 120, 160)  # paper epochs
    step_gamma: float = 0.2
    sgdr_eta_max: float = 0.05
    sgdr_eta_min: float = 0.0
    sgdr_T0s: tuple[int, ...] = (1, 10)
    sgdr_T_mult: int = 2
    eval_every_epochs: int = 10

    SCALED = ()


# SGDR's setting (WRN-28-10 on CIFAR: Nesterov, WD 5e-4, batch 128); our models per family.
_SGDR = dict(weight_decay=5e-4, batch_size=128)
PRESETS = presets(
    Config,
    paper=dict(_SGDR, epoch_steps=None, eval_every_epochs=1),
    # 200 paper epochs of 10 steps at batch 128 (2,000 iterations, 4.3 real epochs per arm).
    gpu=dict(_SGDR, epoch_steps=10, eval_every_epochs=5, seeds=(0,)),
    # 200 paper epochs of 7 steps at batch 128 (1,400 iterations, 3 real epochs per arm); 3 seeds:
    # SGDR and the step default end within 3 points of each other.
    cpu=dict(_SGDR, epoch_steps=7, eval_every_epochs=10, seeds=(0, 1, 2)),
    smoke=dict(weight_decay=5e-4, epoch_steps=1, eval_every_epochs=50),
)


def epoch_steps(cfg: Config) -> int:
    if cfg.epoch_steps is not None:
        return cfg.epoch_steps
    return dataset_info(cfg.dataset).train_size // cfg.batch_size


def schedules(cfg: Config) -> dict[str, dict[str, Any]]:
    k = epoch_steps(cfg)
    out: dict[str, dict[str, Any]] = {}
    for lr in cfg.step_lrs:
        out[f"step_lr{lr:g}"] = {
            "type": "MultiStep",
            "base_lr": lr,
            "milestones": [m * k for m in cfg.step_milestones],
            "gamma": cfg.step_gamma,
        }
    for t0 in cfg.sgdr_T0s:
        out[f"sgdr_T0_{t0:g}"] = {
            "type": "SGDR",
            "eta_max": cfg.sgdr_eta_max,
            "eta_min": cfg.sgdr_eta_min,
            "T_0": t0,
            "T_mult": cfg.sgdr_T_mult,
            "steps_per_epoch": k,
        }
    return out


def restarts(cfg: Config) -> dict[str, list[int]]:
    """Restart epochs (< ``cfg.epochs``) of each SGDR run."""
    out = {}
    for t0 in cfg.sgdr_T0s:
        epochs, length, e = [], t0, t0
        while e < cfg.epochs:
            epochs.append(e)
            length *= cfg.sgdr_T_mult
            e += length
        out[f"sgdr_T0_{t0:g}"] = epochs
    return out


def arms(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    k = epoch_steps(cfg)
    common = dict(
        train_kwargs(cfg, seed),
        optimizer=cfg.optimizer,
        steps=cfg.epochs * k,
        eval_every=cfg.eval_every_epochs * k,
    )
    return {name: TrainConfig(**common, schedule=s) for name, s in schedules(cfg).items()}


def curve(records: list[dict], k: int) -> list[list[float]]:
    """[[paper epoch, test error], ...]."""
    return [
        [(r["step"] + 1) / k, 1.0 - r["test_accuracy"]]
        for r in records
        if r.get("test_accuracy") is not None
    ]


def first_epoch_below(points: list[list[float]], target: float) -> float | None:
    return next((e for e, err in points if err <= target + 1e-12), None)


def summarize(cfg: Config, results: dict, *, out: str) -> dict:
    """The summary of every arm's runs (``results``: arm -> one ``TrainResult`` per seed)."""
    names = list(schedules(cfg))
    finals = {n: [1.0 - r.final_test_accuracy for r in results[n]] for n in names}
    bests = {n: [1.0 - r.best_test_accuracy for r in results[n]] for n in names}
    k = epoch_steps(cfg)
    seed = cfg.seeds[0]
    curves = {n: curve(Run(out, EXPERIMENT, f"{n}_seed{seed}").records(), k) for n in names}
    step_runs = [n for n in names if n.startswith("step")]
    sgdr_runs = [n for n in names if n.startswith("sgdr")]
    target = min(finals[n][0] for n in step_runs)
    targets = [target + d / 100 for d in (0.0, 0.5, 1.0, 2.0)]
    reach = {f"{t:.4f}": {n: first_epoch_below(curves[n], t) for n in names} for t in targets}
    speedup: dict[str, dict[str, float | None]] = {}
    for key, r in reach.items():
        step_epochs = [r[n] for n in step_runs if r[n] is not None]
        ref = min(step_epochs) if step_epochs else None
        speedup[key] = {n: None if ref is None or r[n] is None else ref / r[n] for n in sgdr_runs}
    main_speed = [s for s in speedup[f"{target:.4f}"].values() if s is not None]
    best_sgdr = min(finals[n][0] for n in sgdr_runs)
    return {
        "epochs": cfg.epochs,
        "epoch_steps": k,
        "real_epochs": cfg.epochs * k / (dataset_info(cfg.dataset).train_size // cfg.batch_size),
        "restarts": restarts(cfg),
        "final_test_error": finals,
        "best_test_error": bests,
        "curves": curves,
        "target": target,
        "targets": targets,
        "epochs_to_target": reach,
        "speedup": speedup,
        "checks": {
            "sgdr_sooner": {
                "holds": bool(main_speed) and max(main_speed) >= 2.0,
                "speedup": speedup[f"{target:.4f}"],
            },
            "sgdr_ends_comparable": {
                "holds": best_sgdr <= target + 0.005,
                "best_sgdr_final_error": best_sgdr,
                "best_step_final_error": target,
            },
        },
    }


main = arms_main(arms, summarize, EXPERIMENT)


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
