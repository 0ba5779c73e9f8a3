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

``train()`` deletes its weights at the end, so this script runs the same loop itself (the data
order, model initialization, optimizer, schedule, probe and evaluation of
``hessian_lr.train.train``; with the same ``TrainConfig`` its records equal train()'s) and
computes the densities from the live weights at the chosen updates. It checkpoints every
``checkpoint_every`` steps and resumes; finished runs are skipped.

Runs (per seed s): ``onecycle_seed<s>``, ``pc_seed<s>``. Each run folder holds train()'s
files (config.json with the TrainConfig, meta.json, records.jsonl with ``lambda_max`` and
``trace`` at the probe steps) and ``density_u<updates>.json`` files with ``grid``, ``density``,
``nodes``, ``weights`` (SLQ quadrature, one row per probe), ``sigma``, ``dim``,
``updates`` (optimizer steps done), ``fraction``, ``lr`` (at that point), ``num_matvecs``,
``seconds``, ``lambda_max_slq`` (largest node) and ``trace_slq``.

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

import math
import os
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from _common import cli, experiment_name
from torch import nn
from tqdm.auto import tqdm

from hessian_lr.data import ResumableBatchSampler, augment_batch, load_dataset
from hessian_lr.hvp import HessianOperator
from hessian_lr.lanczos import spectral_density
from hessian_lr.lr_scheduler import ScheduleLR
from hessian_lr.models import build_model
from hessian_lr.results import (
    RecordWriter,
    Run,
    now,
    read_json,
    run_metadata,
    write_json_atomic,
)
from hessian_lr.schedules import schedule_from_dict
from hessian_lr.train import (
    TrainConfig,
    _current,
    _CurvatureProbe,
    _make_optimizer,
    _rng_state,
    _seed_everything,
    _set_rng_state,
    evaluate,
    resolve_device,
)

EXPERIMENT = experiment_name(__file__)


@dataclass(frozen=True)
class Config:
    dataset: str = "fashion-mnist"
    model: str = "lenet5"
    batch_size: int = 128
    weight_decay: float = 5e-4
    momentum: float = 0.9
    onecycle_steps: int = 600
    pc_steps: int = 2400  # 4x (F3 uses 8x; shortened for the probes' cost on CPU)
    base_lr: float = 0.01
    max_lr: float = 0.2
    pc_lr: float = 0.05
    evals_per_run: int = 8
    probes_per_run: int = 12  # λ_max and trace every steps / probes_per_run
    probe_size: int = 256
    trace_probes: int = 10
    density_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    density_steps: int = 60  # Lanczos steps (quadrature nodes) per SLQ probe
    density_probes: int = 1
    checkpoint_every: int = 500
    seeds: tuple[int, ...] = (0,)
    bn_momentum: float | None = None


PRESETS = {
    "paper": Config(
        dataset="cifar10",
        model="resnet56",
        batch_size=1000,
        weight_decay=1e-4,
        onecycle_steps=10_000,
        pc_steps=80_000,
        base_lr=0.1,
        max_lr=3.0,
        pc_lr=0.35,
        evals_per_run=20,
        probes_per_run=40,
        probe_size=1000,
        trace_probes=50,
        density_fractions=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
        density_steps=100,
        density_probes=3,
        checkpoint_every=1000,
        bn_momentum=0.05,
    ),
    "cpu": Config(),
    "smoke": Config(
        dataset="digits",
        batch_size=64,
        onecycle_steps=24,
        pc_steps=48,
        evals_per_run=2,
        probes_per_run=3,
        probe_size=64,
        trace_probes=3,
        density_fractions=(0.0, 1.0),
        density_steps=12,
    ),
}


def configs(cfg: Config, seed: int) -> dict[str, TrainConfig]:
    """The two runs of one seed (the F3 schedules), with the curvature probe on."""
    model_kwargs = {} if cfg.bn_momentum is None else {"bn_momentum": cfg.bn_momentum}
    common = dict(
        dataset=cfg.dataset,
        model=cfg.model,
        model_kwargs=model_kwargs,
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        seed=seed,
        augment=cfg.dataset.startswith("cifar"),
        probe_size=cfg.probe_size,
        trace_probes=cfg.trace_probes,
        checkpoint_every=cfg.checkpoint_every,
    )
    n1, n2 = cfg.onecycle_steps, cfg.pc_steps
    onecycle = {
        "type": "OneCycle",
        "base_lr": cfg.base_lr,
        "max_lr": cfg.max_lr,
        "step_size": int(0.45 * n1),
        "total_steps": n1,
    }
    pc = {
        "type": "MultiStep",
        "base_lr": cfg.pc_lr,
        "milestones": [int(0.625 * n2), int(0.875 * n2)],
        "gamma": 0.1,
    }
    out = {}
    for name, n, sched in (("onecycle", n1, onecycle), ("pc", n2, pc)):
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
    op = HessianOperator(model, nn.CrossEntropyLoss(), batch)
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
        "trace_slq": sd.trace(),
    }


def train_with_densities(
    tcfg: TrainConfig,
    cfg: Config,
    *,
    out: str | os.PathLike,
    run: str,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """train()'s loop for ``tcfg``, plus SLQ densities at ``density_updates``; resumable.

    Returns ``{"status", "steps", "final_test_accuracy", "seconds", "resumed_from"}``.
    """
    tcfg = replace(tcfg, device=device)
    run_obj = Run(out, EXPERIMENT, run)
    meta = run_obj.meta()
    if meta.get("status") in ("finished", "diverged"):
        return _result(run_obj, meta["status"], meta.get("steps_done"), meta.get("seconds"), None)

    dev = resolve_device(tcfg.device)
    _seed_everything(tcfg.seed)
    train_data = load_dataset(tcfg.dataset, split="train", root=tcfg.data_root, seed=tcfg.seed)
    test_data = load_dataset(tcfg.dataset, split="test", root=tcfg.data_root)
    model = build_model(
        tcfg.model,
        num_classes=train_data.num_classes,
        in_channels=train_data.x.shape[1],
        input_size=train_data.x.shape[-1],
        **tcfg.model_kwargs,
    ).to(dev)
    schedule = schedule_from_dict(tcfg.schedule)
    optimizer = _make_optimizer(tcfg, model, lr=schedule.lr(0))
    scheduler = ScheduleLR(optimizer, schedule)
    loss_fn = nn.CrossEntropyLoss()
    probe = _CurvatureProbe(tcfg, train_data, dev)
    sampler = ResumableBatchSampler(
        len(train_data.y), tcfg.batch_size, shuffle=True, seed=tcfg.seed, drop_last=True
    )
    aug_gen = torch.Generator().manual_seed(tcfg.seed + 777)
    wanted = density_updates(cfg, tcfg.steps)

    start, resumed_from, elapsed = 0, None, 0.0
    writer = RecordWriter(run_obj.records_path)
    if run_obj.checkpoint_path.exists():
        ckpt = torch.load(run_obj.checkpoint_path, map_location=dev, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        probe.load_state_dict(ckpt["probe"], dev)
        aug_gen.set_state(ckpt["aug_gen"])
        _set_rng_state(ckpt["rng"])
        start = resumed_from = ckpt["step"]
        elapsed = ckpt.get("seconds", 0.0)
        writer.truncate_after(start - 1)
    else:
        writer.truncate_after(-1)
        write_json_atomic(run_obj.config_path, tcfg)
    run_obj.update_meta(
        **run_metadata(device=str(dev), seed=tcfg.seed),
        status="running",
        started=meta.get("started", now()),
        resumed_from=resumed_from,
        experiment=EXPERIMENT,
    )
    t_start = time.perf_counter()

    def snapshot_density(u: int) -> None:
        path = run_obj.dir / f"density_u{u:06d}.json"
        if path.exists():  # computed before an interruption
            return
        lr, _ = _current(optimizer)
        info = _density(model, probe.batch, cfg, seed=tcfg.seed, u=u)
        info.update(updates=u, fraction=u / tcfg.steps, lr=lr)
        write_json_atomic(path, info)

    def checkpoint(step: int) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "probe": probe.state_dict(),
            "aug_gen": aug_gen.get_state(),
            "rng": _rng_state(),
            "seconds": elapsed + time.perf_counter() - t_start,
        }
        tmp = run_obj.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, run_obj.checkpoint_path)

    if start == 0 and 0 in wanted:
        snapshot_density(0)
    per_epoch = len(sampler)
    status = "finished"
    model.train()
    bar = tqdm(total=tcfg.steps, initial=start, disable=not progress, desc=run, leave=False)
    step = start
    try:
        for step in range(start, tcfg.steps):
            epoch, pos = divmod(step, per_epoch)
            idx = next(sampler.batches(epoch, pos))
            x, y = train_data.x[idx], train_data.y[idx]
            if tcfg.augment:
                x = augment_batch(x, aug_gen)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            lr, mom = _current(optimizer)
            loss = loss_fn(model(x), y)
            record: dict[str, Any] = {"step": step, "epoch": step / per_epoch, "lr": lr}
            if mom is not None:
                record["momentum"] = mom
            loss_value = float(loss.detach())
            record["train_loss"] = loss_value
            if not math.isfinite(loss_value):
                status = "diverged"
                writer.write(record)
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step() if step + 1 < tcfg.steps else None
            if step % tcfg.probe_every == 0 or step + 1 == tcfg.steps:
                record.update(probe(model, step))
            if step + 1 in wanted:
                snapshot_density(step + 1)
                record["density_file"] = f"density_u{step + 1:06d}.json"
            if (step + 1) % tcfg.eval_every == 0 or step + 1 == tcfg.steps:
                test_loss, acc = evaluate(model, test_data, batch_size=tcfg.eval_batch_size)
                record.update(test_loss=test_loss, test_accuracy=acc)
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{acc:.3f}")
            writer.write(record)
            bar.update(1)
            if (step + 1) % tcfg.checkpoint_every == 0 and step + 1 < tcfg.steps:
                checkpoint(step + 1)
        else:
            step = tcfg.steps
    except BaseException:
        run_obj.update_meta(status="interrupted", steps_done=step)
        writer.close()
        bar.close()
        raise
    bar.close()
    writer.close()
    seconds = elapsed + time.perf_counter() - t_start
    run_obj.update_meta(status=status, finished=now(), steps_done=step, seconds=seconds)
    if run_obj.checkpoint_path.exists():
        run_obj.checkpoint_path.unlink()
    return _result(run_obj, status, step, seconds, resumed_from)


def _result(run_obj: Run, status: str, steps, seconds, resumed_from) -> dict[str, Any]:
    accs = [r["test_accuracy"] for r in run_obj.records() if r.get("test_accuracy") is not None]
    return {
        "status": status,
        "steps": steps,
        "final_test_accuracy": accs[-1] if accs else None,
        "seconds": seconds,
        "resumed_from": resumed_from,
    }


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


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    for seed in cfg.seeds:
        for name, tcfg in configs(cfg, seed).items():
            t0 = time.perf_counter()
            res = train_with_densities(
                tcfg, cfg, out=out, run=f"{name}_seed{seed}", device=device, progress=progress
            )
            acc = res["final_test_accuracy"]
            acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
            print(
                f"  {EXPERIMENT}/{name}_seed{seed}: {res['status']}, {res['steps']} steps, "
                f"test acc {acc_text}, {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
    seed = cfg.seeds[0]
    runs = {}
    for name, tcfg in configs(cfg, seed).items():
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


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
