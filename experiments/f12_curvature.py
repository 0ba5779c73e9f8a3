"""F12 -- curvature during training: λ_max, Hessian trace and spectral densities, 1cycle vs PC.

Beyond the papers: Super-Convergence (Smith & Topin 2017, arXiv:1708.07120, Sec. 5) argues
that large learning rates find wide, flat minima (their Hessian-free LR estimate stays large);
here the flatness is measured directly. The F3 protocol (SC Fig. 1a: 1cycle vs the
piecewise-constant baseline, which runs longer) is trained while λ_max (warm-started Lanczos) and
the Hessian trace (Hutchinson) are probed on a fixed batch of ``probe_size`` training examples,
``probes_per_run`` times per run at the same fractions of each run; at ``density_fractions`` of
each run the spectral density of that Hessian is estimated by stochastic Lanczos quadrature
(Ghorbani, Krishnan & Xiao 2019). The claim: λ_max stays lower under 1cycle / large LR, and
the density snapshots show it. For scale: gradient descent with heavy-ball momentum β is stable
on a quadratic while LR·λ_max < 2 + 2β (Cohen et al. 2021), so a large LR caps λ_max.

Each run is ``hessian_lr.training.train`` with the curvature probe on; a ``train()`` callback,
``DensitySnapshots``, computes the densities from the live weights at the chosen updates (update
0: the initial weights) on the probe's batch. train() checkpoints every ``checkpoint_every``
steps and resumes (a density already on disk is not recomputed); finished runs are skipped.

Runs (per seed s): ``onecycle_seed<s>``, ``pc_seed<s>``. Each run folder holds train()'s
files (config.json with the TrainConfig, meta.json, records.jsonl with ``lambda_max`` and
``trace`` at the probe steps and ``density_file`` at the snapshot steps) and
``density_u<updates>.json`` files with ``grid``, ``density``, ``nodes``, ``weights`` (SLQ
quadrature, one row per probe), ``sigma``, ``dim``, ``updates`` (optimizer steps done),
``fraction``, ``lr`` (the LR the optimizer holds at that point: the next update's, the last
update's at the end), ``num_matvecs``, ``seconds``, ``lambda_max_slq`` (largest node) and
``trace_slq``.

summary.json (first seed):

* ``steps``, ``lr`` (1cycle bounds, PC LR).
* ``runs.<name>``: ``final_test_accuracy``; ``lambda_max`` [[step, fraction, λ_max, lr], ...];
  ``trace`` [[step, fraction, trace], ...]; ``lambda_max_final``, ``lambda_max_max``,
  ``lambda_max_median``; ``trace_final``; ``lr_times_lambda_max_max`` (max of LR·λ_max);
  ``densities`` [{updates, fraction, file, lambda_max_slq, trace_slq}].
* ``checks.lambda_lower_under_onecycle``: {"holds": 1cycle's final λ_max < PC's final λ_max,
  "final": {run: λ_max}, "median": {run: λ_max}, "fraction_of_probes_lower": share of the
  matched probe points (same fraction of each run) where 1cycle's λ_max is lower}.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from _common import (
    arms_main,
    cli,
    experiment_name,
    onecycle_pc_schedules,
    result_from_folder,
    summarize_only,
    train_kwargs,
)
from _presets import Base, presets
from torch import nn

from hessian_lr.curvature import spectral_density
from hessian_lr.curvature.hessian import HessianOperator
from hessian_lr.lr.defaults import DEFAULT_BN_MODE
from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.schedules import schedule_from_dict
from hessian_lr.training.data import Dataset, load_dataset
from hessian_lr.training.run import Run
from hessian_lr.training.runner import TrainConfig, TrainResult, train
from hessian_lr.training.setup import probe_batch

EXPERIMENT = experiment_name(__file__)
COST_FACTOR = 2.5  # probes and densities on top of training (run_all's scheduling estimate)


@dataclass(frozen=True)
class Config(Base):
    onecycle_steps: int = 700
    pc_steps: int = 2800  # 4x (F3 uses 8x; shortened for the probes' cost)
    evals_per_run: int = 8
    probes_per_run: int = 12  # λ_max and trace every steps / probes_per_run
    probe_size: int = 256
    trace_probes: int = 10
    density_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    density_steps: int = 60  # Lanczos steps (quadrature nodes) per SLQ probe
    density_probes: int = 1

    SCALED = ("onecycle_steps", "pc_steps")


PRESETS = presets(
    Config,
    paper=dict(
        onecycle_steps=10_000,
        pc_steps=80_000,
        evals_per_run=20,
        probes_per_run=40,
        probe_size=1000,
        trace_probes=50,
        density_fractions=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
        density_steps=100,
        density_probes=3,
    ),
    gpu=dict(
        onecycle_steps=300,
        pc_steps=1200,
        evals_per_run=12,
        probes_per_run=16,
        probe_size=512,
        trace_probes=20,
        density_steps=80,
        density_probes=2,
        seeds=(0,),
    ),
    cpu=dict(onecycle_steps=700, pc_steps=2800, seeds=(0,)),
    smoke=dict(
        onecycle_steps=24,
        pc_steps=48,
        evals_per_run=2,
        probes_per_run=3,
        probe_size=64,
        trace_probes=3,
        density_fractions=(0.0, 1.0),
        density_steps=12,
    ),
)


def arms(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    """The two runs of one seed (the F3 schedules), with the curvature probe on."""
    common = dict(
        train_kwargs(cfg, seed),
        probe_size=cfg.probe_size,
        trace_probes=cfg.trace_probes,
    )
    n1, n2 = cfg.onecycle_steps, cfg.pc_steps
    schedules = onecycle_pc_schedules(cfg, n1, n2)
    out = {}
    for name, n in (("onecycle", n1), ("pc", n2)):
        sched = schedules[name]
        out[name] = TrainConfig(
            **common,
            steps=n,
            schedule=sched,
            eval_every=max(1, n // cfg.evals_per_run),
            probe_every=max(1, n // cfg.probes_per_run),
        )
    return out


def density_updates(cfg: Config, steps: int) -> list[int]:
    """Optimizer updates done at each density snapshot (0 = the initialization)."""
    return sorted({min(steps, max(0, round(f * steps))) for f in cfg.density_fractions})


def _density(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], cfg: Config, *, seed: int, u: int
) -> dict[str, Any]:
    # The probe's BatchNorm mode (every LR measurement's), so densities and λ_max agree.
    op = HessianOperator(model, nn.CrossEntropyLoss(), batch, bn_mode=DEFAULT_BN_MODE)
    g = torch.Generator(device=op.device).manual_seed(seed * 1_000_003 + u)
    sd = spectral_density(
        op, num_probes=cfg.density_probes, num_steps=cfg.density_steps, generator=g
    )
    return {
        "grid": sd.grid,
        "density": sd.density,
        "nodes": sd.nodes,
        "weights": sd.weights,
        "sigma": sd.sigma,
        "dim": sd.dim,
        "num_matvecs": sd.num_matvecs,
        "seconds": sd.seconds,
        "lambda_max_slq": float(sd.nodes.max()),
        "bn_mode": DEFAULT_BN_MODE,
        "trace_slq": sd.trace(),
    }


class DensitySnapshots:
    """``train()`` callback: the SLQ density of the probe batch's Hessian after chosen updates.

    Writes ``<run_dir>/density_u<updates>.json`` after each update count in
    ``density_updates(cfg, tcfg.steps)`` (0: the initial weights, seen at the callback's step -1)
    and names the file in that step's record (``density_file``). A file already on disk (written
    before an interruption) is kept, so repeated calls after a resume are harmless.
    """

    def __init__(self, tcfg: TrainConfig, cfg: Config, run_dir: Path, train_data: Dataset) -> None:
        self.tcfg, self.cfg, self.run_dir = tcfg, cfg, Path(run_dir)
        self.wanted = set(density_updates(cfg, tcfg.steps))
        self.schedule = schedule_from_dict(tcfg.schedule)
        self.batch = probe_batch(tcfg, train_data)  # CPU; moved to the model's device when used

    def __call__(self, step: int, model: nn.Module, record: dict[str, Any]) -> None:
        u = step + 1  # optimizer updates done
        if u not in self.wanted:
            return
        name = f"density_u{u:06d}.json"
        if step >= 0:
            record["density_file"] = name
        path = self.run_dir / name
        if path.exists():  # computed before an interruption
            return
        device = next(model.parameters()).device
        if self.batch[0].device != device:
            self.batch = tuple(t.to(device) for t in self.batch)
        steps = self.tcfg.steps
        info = _density(model, self.batch, self.cfg, seed=self.tcfg.seed, u=u)
        # The LR the optimizer holds after u updates (ScheduleLR; not stepped after the last).
        lr = self.schedule.lr(min(u, steps - 1))
        info.update(updates=u, fraction=u / steps, lr=lr)
        write_json_atomic(path, info)


def train_with_densities(
    tcfg: TrainConfig,
    *,
    cfg: Config,
    root: str | Path,
    experiment: str,
    run: str,
    progress: bool,
    callback: Any = None,
) -> TrainResult:
    """``train()`` for ``tcfg`` with ``DensitySnapshots`` as its callback; resumable.

    Called as ``train()`` is (``cfg`` bound), so it serves as ``run_arms``' ``train_fn``;
    ``callback`` (``run_all``'s stop check) runs after the snapshot of each step.
    """
    if summarize_only():
        return result_from_folder(root, experiment, run)
    run_obj = Run(root, experiment, run)
    if run_obj.meta().get("status") in ("finished", "diverged"):  # train() returns it as is
        return train(tcfg, root=root, experiment=experiment, run=run, progress=progress)
    train_data = load_dataset(
        tcfg.dataset, split="train", root=tcfg.data_root, subset=tcfg.subset, seed=tcfg.seed
    )
    snapshots = DensitySnapshots(tcfg, cfg, run_obj.dir, train_data)

    def both(step: int, model: nn.Module, record: dict[str, Any]) -> None:
        snapshots(step, model, record)
        if callback is not None:
            callback(step, model, record)

    return train(
        tcfg,
        root=root,
        experiment=experiment,
        run=run,
        progress=progress,
        train_data=train_data,
        callback=both,
    )


def train_fn_for(cfg: Config):
    """The ``train_fn`` of this experiment's runs (``run_all`` and ``main`` use it)."""
    return partial(train_with_densities, cfg=cfg)


def summarize_run(run_dir: Path, records: list[dict], steps: int) -> dict[str, Any]:
    """λ_max / trace series and their statistics, and the density index, of one run."""
    lam = [
        [r["step"], (r["step"] + 1) / steps, r["lambda_max"], r["lr"]]
        for r in records
        if r.get("lambda_max") is not None
    ]
    trace = [
        [r["step"], (r["step"] + 1) / steps, r["trace"]]
        for r in records
        if r.get("trace") is not None
    ]
    accs = [r["test_accuracy"] for r in records if r.get("test_accuracy") is not None]
    densities = []
    for path in sorted(run_dir.glob("density_u*.json")):
        d = read_json(path)
        densities.append(
            {
                "updates": d["updates"],
                "fraction": d["fraction"],
                "file": path.name,
                "lambda_max_slq": d["lambda_max_slq"],
                "trace_slq": d["trace_slq"],
            }
        )
    values = [v for _, _, v, _ in lam]
    return {
        "final_test_accuracy": accs[-1] if accs else None,
        "lambda_max": lam,
        "trace": trace,
        "lambda_max_final": values[-1] if values else None,
        "lambda_max_max": max(values) if values else None,
        "lambda_max_median": statistics.median(values) if values else None,
        "trace_final": trace[-1][2] if trace else None,
        "lr_times_lambda_max_max": max((v * lr for _, _, v, lr in lam), default=None),
        "densities": densities,
    }


def summarize(cfg: Config, _results: dict, *, out: str) -> dict:
    """The summary of every arm's runs (``_results``: arm -> one ``TrainResult`` per seed)."""
    seed = cfg.seeds[0]
    runs = {}
    for name, tcfg in arms(cfg, seed).items():
        run_obj = Run(out, EXPERIMENT, f"{name}_seed{seed}")
        runs[name] = summarize_run(run_obj.dir, run_obj.records(), tcfg.steps)
    one, pc = runs["onecycle"], runs["pc"]
    pairs = list(zip(one["lambda_max"], pc["lambda_max"]))
    lower = sum(a[2] < b[2] for a, b in pairs)
    checks = {}
    if one["lambda_max_final"] is not None and pc["lambda_max_final"] is not None:
        checks["lambda_lower_under_onecycle"] = {
            "holds": one["lambda_max_final"] < pc["lambda_max_final"],
            "final": {"onecycle": one["lambda_max_final"], "pc": pc["lambda_max_final"]},
            "median": {"onecycle": one["lambda_max_median"], "pc": pc["lambda_max_median"]},
            "fraction_of_probes_lower": lower / len(pairs) if pairs else None,
        }
    return {
        "steps": {"onecycle": cfg.onecycle_steps, "pc": cfg.pc_steps},
        "lr": {"onecycle": [cfg.base_lr, cfg.max_lr], "pc": cfg.pc_lr},
        "seed": seed,
        "runs": runs,
        "checks": checks,
    }


main = arms_main(arms, summarize, EXPERIMENT, train_fn_for=train_fn_for)


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
