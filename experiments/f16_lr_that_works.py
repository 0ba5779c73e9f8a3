"""F16 -- the LR that works: which estimate taken at θ₀ (or along a ramp) predicts it?

Beyond the papers (issue 24; methods notes §7). Per *cell* (model × optimizer × seed):

* **η_max**, the largest LR on a √2 grid whose constant-LR run of ``steps`` updates from θ₀
  (same data order for every LR) *works*. Criterion, fixed before running (``verdict``):
  every loss finite and ≤ ``blowup`` × L₀; the mean loss of the last ``window`` steps
  ≤ (1 − ``lower_by``) · L₀ (L₀: the loss of the first batch at θ₀); the mean train accuracy
  of those steps ≥ ``chance_factor`` / C (C classes, or the GPT's vocabulary). A failure is
  *too large* (non-finite, blown up, loss ended ≥ L₀ or ≥ ln C) or *too small* (finite, fell,
  but not by the margin). Search (``eta_max``): start at the curvature guess (the
  ``sharpness`` estimate below), ×4 up while it works or is too small, ×4 down while too
  large, then bisect the bracket on the √2 grid (resolution ±0.17 in log).
* **η_div**: Smith's range test, an exponential ramp of ``ramp_steps`` updates from
  ``*_ramp[0]`` to ``*_ramp[1]`` recording separately the first LR where the bias-corrected
  smoothed loss (β = 0.98) exceeds 4× its best (``eta_div``), the first non-finite loss
  (``eta_nan``), and a dead network (loss ≥ ln C for ``dead_steps`` steps, ``eta_dead``); the
  same on a short ramp of ``short_ramp_steps`` (no curvature) to see the ramp dependence. Along
  the long ramp, every ``measure_every`` steps, λ_max(H) (SGD) or λ_max(P⁻¹H) (Adam) on the
  probe batch (Lanczos warm-started from the previous vector) and the ratio η_t·λ_t/c; its
  first crossing of 1 (log-interpolated) is ``ramp_cross``.
* **Estimates at θ₀** on a fixed probe batch (``probe_size`` training examples), after
  ``warm_steps`` steps at a tiny LR fill Adam's v̂ (and SGD's momentum buffer):
  ``sharpness`` = c/λ_max(P⁻¹H) (c = 2 + 2β = 3.8 heavy ball; (2 + 2β₁)/(1 − β₁) = 38 Adam;
  BatchNorm in train mode) and ``sharpness_eval`` (BN models: eval mode); ``update`` = the GeN
  LR along the optimizer's update η* = −gᵀd/dᵀHd (1 HVP); ``quadratic`` = gᵀg/gᵀHg;
  ``secant_hvp`` = Σ|g|/Σ|Hg|; from short runs (``probe_steps``) at the two probe LRs η_p:
  Eq. 8 of Super-Convergence on the last three iterates (``eq8_p1``, ``eq8_p2``) and the
  same-batch secant Σ|Δθ|/Σ|Δg| (``same_batch_p1``). Exploratory, added after the
  pre-registration and not part of any hypothesis (issue 26): ``sharpness_ggn`` =
  c/λ_max(P⁻¹G) and ``quadratic_ggn`` = gᵀg/gᵀGg on the generalized Gauss-Newton matrix G.

Pre-registered hypotheses and statistics (decided in ``paper_figures/fig_f16_lr_that_works.py``;
written before any result existed):

* Calibration: one constant k per estimator × optimizer, fitted leave-one-model-out as the
  geometric mean of η_max/E over the other *training* models' cells; error of a cell
  |log(η_max/(k·E))|; factor error exp(median error) with a 95 % bootstrap CI (2000 resamples of
  cells, seed 0, the same resamples for every estimator: paired); Spearman ρ(E, η_max) across
  cells (scipy). "Predicts" = factor error ≤ 2 AND ρ ≥ 0.8 AND held-out within 2× (held-out
  models of the ``gpu`` preset with k fitted on all training models; where none was run, every
  left-out model's median factor error ≤ 2).
* H1: Eq. 8 at η_p returns ≈ c·η_p and has no skill beyond η_p: holds iff the median over cells
  of log(E8(η_p2)/E8(η_p1)) / log(η_p2/η_p1) lies in [0.7, 1.3] AND ``eq8_p1`` does not predict.
* H2: ``sharpness`` predicts (per optimizer) AND the per-model constants k_m lie within 4×
  (max/min; "k constant within 2×" around their centre).
* H3: on the BN model (ResNet-8), with k of ``sharpness`` fitted on the other models: the
  train-mode factor error ≤ 2 AND the eval-mode factor error ≥ 5.
* H4: (a) median η_div/η_max ≥ 2 with the bootstrap CI's lower end > 1; (b) ramp-dependent:
  median η_div(short)/η_div(long) outside [1/√2, √2]; (c) ``ramp_cross`` has a lower median
  error than every θ₀ estimate, the paired bootstrap CI of (its median error − the best θ₀
  estimate's) below 0.
* H5: ``update`` predicts AND its factor error ≤ 1.25 × that of ``sharpness`` AND it used
  ≤ 1/5 of ``sharpness``'s HVPs (mean over cells).

Budget (measured on this 2-core shared machine, one thread; batch 64; 200-step runs): first
timing MLP ≈ 2 ms/step, LeNet-5 ≈ 25 ms, BN ResNet-8 (width 16) ≈ 150 ms, the tiny GPT (32
windows) ≈ 30 ms; one HVP on the probe batch ≈ 2× a step. Measured per cell (process CPU
seconds, ``cpu_seconds`` in each result): MLP 3-7 s, GPT 23-56 s, LeNet-5 21-38 s (4-10 constant
runs: more when the θ₀ guess is far off), ResNet-8 ≈ 115 s for the estimates and both ramps plus
≈ 100 s per constant run (≈ 5 runs). 24 cells ≈ 1.1 CPU-hours (ResNet-8 ≈ 80 % of it), within
the ≤ 2.5 CPU-hour budget; wall time was 5-8× the CPU time at the machine's load (10-20).
``gpu``: adds the held-out ResNet-20 and a 4-layer width-128 GPT (never used to fit k).

Resumable: ``<out>/f16_lr_that_works/<cell>/result.json`` is written when a cell completes
(``partial.json`` holds its finished pieces meanwhile); finished cells are skipped.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from _common import cli, experiment_name, summarize_only
from _presets import Base, presets
from f15_edge_of_stability import TinyGPT, text_data, token_loss
from f16_probes import constant_run, estimates_at_init, probe_runs, ramp
from torch import nn

from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.training.data import load_dataset
from hessian_lr.training.models import build_model

EXPERIMENT = experiment_name(__file__)
TRAIN_MODELS = ("mlp", "lenet5", "resnet8", "gpt")


@dataclass(frozen=True)
class Config(Base):
    models: tuple[str, ...] = TRAIN_MODELS
    heldout: tuple[str, ...] = ()  # gpu: ("resnet20", "gpt4"); never used to fit k
    optimizers: tuple[str, ...] = ("sgd", "adam")
    steps: int = 200  # constant-LR run for η_max
    lower_by: float = 0.2
    window: int = 20
    chance_factor: float = 2.0
    blowup: float = 100.0
    grid_span: int = 30  # at most √2^30 ≈ 33,000× from the guess either way
    ramp_steps: int = 200
    short_ramp_steps: int = 80
    sgd_ramp: tuple[float, float] = (1e-4, 30.0)
    adam_ramp: tuple[float, float] = (1e-5, 3.0)
    smoothing: float = 0.98
    diverge_factor: float = 4.0
    dead_steps: int = 20
    measure_every: int = 10
    probe_size: int = 128
    warm_steps: int = 5
    warm_lr: float = 1e-8
    sgd_probe_lrs: tuple[float, float] = (1e-3, 1e-2)
    adam_probe_lrs: tuple[float, float] = (1e-4, 1e-3)
    probe_steps: int = 20
    lanczos_tol: float = 1e-2
    lanczos_max_iter: int = 40
    text_file: str = "/usr/share/common-licenses/GPL-3"
    gpt_context: int = 32
    gpt_width: int = 32
    gpt_layers: int = 2
    gpt_heads: int = 2
    gpt_sequences: int = 4096  # training windows
    gpt_batch: int = 32

    SCALED = ("steps", "ramp_steps", "short_ramp_steps", "probe_steps")


_COMMON = dict(weight_decay=0.0, batch_size=64, momentum=0.9)
PRESETS = presets(
    Config,
    paper=dict(**_COMMON, model="resnet20", heldout=("resnet20", "gpt4"), steps=1000),
    gpu=dict(**_COMMON, heldout=("resnet20", "gpt4")),
    cpu=dict(**_COMMON, width=16),
    smoke=dict(
        **{**_COMMON, "batch_size": 16},
        width=4,
        models=("mlp", "resnet8", "gpt"),
        seeds=(0, 1),
        steps=12,
        window=4,
        grid_span=6,
        ramp_steps=16,
        short_ramp_steps=8,
        measure_every=4,
        probe_size=32,
        probe_steps=4,
        dead_steps=4,
        lanczos_max_iter=8,
        gpt_sequences=64,
        gpt_batch=8,
        gpt_context=16,
        gpt_width=16,
        gpt_layers=1,
    ),
)


# ------------------------------------------------------------------------------- cells
def cells(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{cell: {model, optimizer, seed, heldout}}``, seed-major (seed 0 of every model first)."""
    out = {}
    for seed in cfg.seeds:
        for model in sorted((*cfg.models, *cfg.heldout), key=_COST.get):
            for opt in cfg.optimizers:
                held = model in cfg.heldout and model not in cfg.models
                out[f"{model}_{opt}_seed{seed}"] = dict(
                    model=model, optimizer=opt, seed=seed, heldout=held
                )
    return out


def plan(cfg: Config) -> list[dict]:
    return [{"name": n, "seed": c["seed"], "macs": 1.0} for n, c in cells(cfg).items()]


_DATA: dict[tuple, Any] = {}
_COST = {"mlp": 0, "gpt": 1, "lenet5": 2, "resnet8": 3, "gpt4": 4, "resnet20": 5}  # run order


def task(cfg: Config, model: str, seed: int, device: torch.device) -> SimpleNamespace:
    """The cell's data, θ₀ builder, loss and number of classes C (vocabulary for the GPT)."""
    if model.startswith("gpt"):
        gcfg = replace(cfg)
        if model == "gpt4":
            gcfg = replace(cfg, gpt_layers=4, gpt_width=128, gpt_heads=4)
        key = ("gpt", seed)
        if key not in _DATA:
            _DATA[key] = text_data(gcfg, seed)
        d = _DATA[key]
        train = tuple(t.to(device) for t in d["train"])

        def build() -> nn.Module:
            torch.manual_seed(seed)
            m = TinyGPT(
                d["vocab"], gcfg.gpt_context, gcfg.gpt_width, gcfg.gpt_layers, gcfg.gpt_heads
            )
            return m.to(device)

        return SimpleNamespace(
            train=train,
            build=build,
            loss_fn=token_loss,
            classes=d["vocab"],
            batch_size=cfg.gpt_batch,
        )
    if "vision" not in _DATA:
        ds = load_dataset(cfg.dataset, split="train")
        _DATA["vision"] = (ds.x, ds.y, ds.num_classes)
    x, y, classes = _DATA["vision"]
    kw = {"width": cfg.width} if model.startswith("resnet") and cfg.width else {}

    def build_vision() -> nn.Module:
        torch.manual_seed(seed)
        m = build_model(
            model, num_classes=classes, in_channels=x.shape[1], input_size=x.shape[-1], **kw
        )
        return m.to(device)

    return SimpleNamespace(
        train=(x.to(device), y.to(device)),
        build=build_vision,
        loss_fn=nn.CrossEntropyLoss(),
        classes=classes,
        batch_size=cfg.batch_size,
    )


def batch_at(t: SimpleNamespace, seed: int, step: int, size: int | None = None) -> tuple:
    """The batch of ``step`` (a pure function of seed and step: the same order for every LR)."""
    n = t.train[0].shape[0]
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(0, n, (size or t.batch_size,), generator=g).to(t.train[0].device)
    return tuple(v[idx] for v in t.train)


def probe_batch(cfg: Config, t: SimpleNamespace, seed: int) -> tuple:
    return batch_at(t, seed, 10**7, cfg.probe_size)


# ------------------------------------------------------------------------------- η_max search
def eta_max(
    cfg: Config, cell: dict, t: SimpleNamespace, guess: float, saved: dict, save: Any
) -> dict:
    """Bisection on the √2 grid lr_k = guess·√2^k (module docstring).

    ``saved``: the runs done so far ({k: run}); ``save(saved)`` is called after every run.
    """
    runs: dict[int, dict] = {int(k): v for k, v in saved.items()}

    def verdict(k: int) -> str:
        if k not in runs:
            runs[k] = constant_run(cfg, cell, t, guess * math.sqrt(2) ** k, batch_at)
            saved[str(k)] = runs[k]
            save(saved)
        return runs[k]["verdict"]

    k = 0
    while abs(k) <= cfg.grid_span:
        verdict(k)
        works = [j for j, r in runs.items() if r["verdict"] == "works"]
        large = [j for j, r in runs.items() if r["verdict"] == "too_large"]
        below = [j for j, r in runs.items() if r["verdict"] != "too_large"]
        lo = max(works) if works else None
        hi = min((j for j in large if lo is None or j > lo), default=None)
        if hi is None:
            k = max(runs) + 4
        elif lo is None:
            low = max((j for j in below if j < hi), default=None)
            if low is None:
                k = hi - 4
            elif hi - low > 1:
                k = (low + hi) // 2
            else:
                return _eta_result(guess, runs, None, "nothing_works")
        elif hi - lo > 1:
            k = (lo + hi) // 2
        else:
            return _eta_result(guess, runs, lo, "bracketed")
    works = [j for j, r in runs.items() if r["verdict"] == "works"]
    return _eta_result(guess, runs, max(works) if works else None, "censored")


def _eta_result(guess: float, runs: dict, k: int | None, status: str) -> dict:
    return {
        "eta_max": None if k is None else guess * math.sqrt(2) ** k,
        "status": status,
        "guess": guess,
        "tried": {
            f"{guess * math.sqrt(2) ** j:.6g}": r["verdict"] for j, r in sorted(runs.items())
        },
        "runs": {str(j): r for j, r in sorted(runs.items())},
    }


# ------------------------------------------------------------------------------- one cell
def _save_partial(folder: Path, update: dict) -> None:
    path = folder / "partial.json"
    data = read_json(path) if path.exists() else {}
    data.update(update)
    write_json_atomic(path, data)


def _write_meta(folder: Path, result: dict) -> None:
    """``meta.json`` as every run folder has it (status, seconds), for run_all and CLAIMS.md."""
    meta = {"status": "finished", "seconds": result["seconds"]}
    write_json_atomic(folder / "meta.json", {**meta, "cpu_seconds": result.get("cpu_seconds")})


def run_cell(cfg: Config, name: str, *, out: str, device: str) -> dict:
    """Run (or skip, or resume from ``partial.json``) one cell; its result dict."""
    spec = cells(cfg).get(name)
    if spec is None:
        raise KeyError(f"{EXPERIMENT} has no cell {name!r}")
    cell = {"name": name, **spec}
    folder = Path(out) / EXPERIMENT / name
    if (folder / "result.json").exists():
        result = read_json(folder / "result.json")
        if not (folder / "meta.json").exists():
            _write_meta(folder, result)
        return result
    folder.mkdir(parents=True, exist_ok=True)
    part = read_json(folder / "partial.json") if (folder / "partial.json").exists() else {}
    t0, c0 = time.perf_counter(), time.process_time()
    dev = torch.device(
        "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    t = task(cfg, spec["model"], spec["seed"], dev)
    probe = probe_batch(cfg, t, spec["seed"])
    for piece, fn in (
        ("estimates", lambda: estimates_at_init(cfg, cell, t, probe, batch_at)),
        ("probes", lambda: probe_runs(cfg, cell, t, probe, batch_at)),
        ("ramp", lambda: ramp(cfg, cell, t, probe, batch_at, cfg.ramp_steps, measure=True)),
        ("short_ramp", lambda: ramp(cfg, cell, t, probe, batch_at, cfg.short_ramp_steps)),
    ):
        if piece not in part:
            part[piece] = fn()
            part["seconds"] = part.get("seconds", 0.0) + time.perf_counter() - t0
            part["cpu_seconds"] = part.get("cpu_seconds", 0.0) + time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            _save_partial(
                folder,
                {
                    piece: part[piece],
                    "seconds": part["seconds"],
                    "cpu_seconds": part["cpu_seconds"],
                },
            )
    guess = part["estimates"]["sharpness"]["lr"]
    save = lambda runs: _save_partial(folder, {"runs": runs})  # noqa: E731
    search = eta_max(cfg, cell, t, guess, part.get("runs", {}), save)
    result = {
        **cell,
        "classes": t.classes,
        "eta_max": search["eta_max"],
        "search": {k: v for k, v in search.items() if k != "runs"},
        "constant_runs": search["runs"],
        "estimates": part["estimates"],
        "probes": part["probes"],
        "ramp": part["ramp"],
        "short_ramp": part["short_ramp"],
        "seconds": part.get("seconds", 0.0) + time.perf_counter() - t0,
        "cpu_seconds": part.get("cpu_seconds", 0.0) + time.process_time() - c0,
    }
    write_json_atomic(folder / "result.json", result)
    _write_meta(folder, result)
    (folder / "partial.json").unlink(missing_ok=True)
    print(
        f"  {EXPERIMENT}/{name}: η_max {result['eta_max']} ({search['status']}), guess "
        f"{guess:.3g}, η_div {result['ramp']['eta_div']}, {result['seconds']:.0f}s",
        flush=True,
    )
    return result


def run_unit(cfg: Config, name: str, *, out: str, device: str) -> dict:
    return run_cell(cfg, name, out=out, device=device)


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    results = {}
    for name in cells(cfg):
        done = Path(out) / EXPERIMENT / name / "result.json"
        if summarize_only():  # read what finished; run nothing
            if done.exists():
                results[name] = read_json(done)
            continue
        results[name] = run_cell(cfg, name, out=out, device=device)
    table = {
        n: {
            "eta_max": r["eta_max"],
            "eta_div": r["ramp"]["eta_div"],
            "ramp_cross": r["ramp"]["eta_cross"],
            **{e: v["lr"] for e, v in r["estimates"].items()},
            **{e: v for e, v in r["probes"].items() if not isinstance(v, dict)},
        }
        for n, r in results.items()
    }
    cpu = sum(r.get("cpu_seconds", 0.0) for r in results.values())
    missing = [n for n in cells(cfg) if n not in results]
    return {"cells": table, "missing": missing, "config": asdict(cfg), "cpu_seconds": cpu}


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
