"""F15 -- does training sit at the edge of stability? Raw and preconditioned sharpness vs threshold.

Beyond the papers. Cohen et al. (2021, ICLR, "Gradient descent on neural networks typically occurs
at the edge of stability") found that under full-batch gradient descent the sharpness λ_max(H)
rises during training (progressive sharpening) until η·λ_max reaches the stability limit of the
local quadratic -- 2 for GD, 2 + 2β for heavy-ball momentum β -- and then hovers there; Cohen et
al. (2022, "Adaptive gradient methods at the edge of stability") found the same for Adam with the
*preconditioned* sharpness λ_max(P⁻¹H), P = diag(√v̂ + ε), and the limit (2 + 2β₁)/(1 − β₁) = 38
at β₁ = 0.9. Here: heavy-ball SGD and Adam, each at two or three LRs, on two tasks --

* ``vision``: a fixed subset of Fashion-MNIST (``train_size`` images) trained full-batch
  (``batch_size`` ≥ ``train_size``; Cohen's protocol) or mini-batch, LeNet-5 (cpu) or a BatchNorm
  ResNet (gpu; Hessians with BatchNorm in train mode, ``DEFAULT_BN_MODE``);
* ``gpt``: a tiny character-level GPT (``gpt_layers`` blocks, causal attention written out) on
  ``gpt_sequences`` fixed windows of a text file present on the machine (a license text).

Every ``measure_every`` steps the :class:`hessian_lr.lr.eos.EdgeOfStability` observer measures, on
the measurement batch (the full training set when it fits in ``probe_size``), the sharpness that
governs the optimizer (λ_max(H) for SGD, λ_max(P⁻¹H) for Adam; Lanczos, warm-started), the raw
λ_max(H) for Adam too, the threshold c/η, and the GeN LR along the optimizer's own update
η* = −gᵀd/dᵀHd (``hessian_lr.lr.update``), compared with the LR in use.

Units (one per run, resumable: a checkpoint every ``checkpoint_every`` steps; finished runs are
skipped): ``<task>_<optimizer>_lr<lr>_seed<s>``. Each run folder holds ``config.json``,
``meta.json`` and ``records.jsonl`` (per step: ``loss``, ``train_accuracy`` (token accuracy for
the GPT), both before the update; at measurements: the ``eos_*`` keys of
the observer, see its docstring; at the end: ``test_loss`` and, for vision, ``test_accuracy``).

summary.json: ``runs.<unit>``: ``task``, ``optimizer``, ``lr``, ``threshold``, ``status``,
``sharpness`` [[step, λ, ratio], ...] (every measurement), ``raw_sharpness``; judged from step
``transient_fraction`` × steps on (Adam's first steps, where v̂ ≈ g² of one or two gradients makes
P⁻¹H briefly huge, are not judged): ``first``/``max``/``final`` sharpness,
``max_ratio`` (η·λ/c), ``reached_edge`` (max ratio ≥ ``edge_level``), ``hover_fraction`` (share of
the measurements after the edge is first reached with ratio in [``hover_low``, ``hover_high``]),
``edge_step``, ``progressive_sharpening`` (sharpness before reaching the edge rose by
``sharpening_factor`` ×), ``final_loss``, ``final_train_accuracy``,
``update_multiplier_median`` (median η*/η) and ``update_flagged`` (share of flagged estimates);
``checks``: the share of runs per (task, optimizer) that reached the edge and hovered.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import cli, experiment_name, summarize_only
from _presets import Base, presets, train_macs
from torch import nn

from hessian_lr.lr import CurvatureOptions
from hessian_lr.lr.defaults import DEFAULT_BN_MODE
from hessian_lr.lr.eos import EdgeOfStability
from hessian_lr.observe import StepContext, run_observers
from hessian_lr.records import RecordWriter, write_json_atomic
from hessian_lr.rng import get_rng_state, set_rng_state
from hessian_lr.training.data import load_dataset
from hessian_lr.training.models import build_model
from hessian_lr.training.run import Run, run_metadata
from hessian_lr.training.setup import resolve_device

EXPERIMENT = experiment_name(__file__)
TEXT_FALLBACKS = ("/usr/share/common-licenses", "/usr/share/doc", "/usr/share/dict")


@dataclass(frozen=True)
class Config(Base):
    tasks: tuple[str, ...] = ("vision", "gpt")
    optimizers: tuple[str, ...] = ("sgd", "adam")
    vision_sgd_lrs: tuple[float, ...] = (0.02, 0.05)
    vision_adam_lrs: tuple[float, ...] = (5e-4, 1e-3, 2e-3)
    gpt_sgd_lrs: tuple[float, ...] = (0.1, 0.3, 1.0)
    gpt_adam_lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    train_size: int = 1024  # vision: training images (stratified subset)
    steps: int = 600
    gpt_steps: int = 600
    measure_every: int = 20
    probe_size: int = 1024  # measurement batch: the first probe_size training examples
    lanczos_tol: float = 1e-2
    eval_size: int = 2000  # vision test images evaluated at the end
    text_file: str = "/usr/share/common-licenses/GPL-3"
    gpt_context: int = 32
    gpt_width: int = 32
    gpt_layers: int = 2
    gpt_heads: int = 2
    gpt_sequences: int = 128  # training windows (the full batch)
    edge_level: float = 0.9
    hover_low: float = 0.7
    hover_high: float = 1.3
    sharpening_factor: float = 1.5
    transient_fraction: float = 0.05  # measurements in the first 5 % of a run are not judged

    SCALED = ("steps", "gpt_steps", "measure_every")


PRESETS = presets(
    Config,
    paper=dict(
        model="resnet20",
        train_size=5000,
        batch_size=5000,
        probe_size=5000,
        weight_decay=0.0,
        steps=5000,
        gpt_steps=5000,
        measure_every=50,
        gpt_width=128,
        gpt_layers=4,
        gpt_heads=4,
        gpt_context=64,
        gpt_sequences=512,
    ),
    # Measured on an H200 (torch 2.11): ResNet-20, full batch 4096: 0.28 s/step, 5-11 s per
    # measurement; the GPT (width 64, 256 windows of 64): 0.009 s/step, 0.1-0.3 s per
    # measurement. So ≈ 6 min per vision run and < 1 min per GPT run.
    gpu=dict(
        model="resnet20",
        train_size=4096,
        batch_size=4096,
        probe_size=4096,
        weight_decay=0.0,
        steps=800,
        gpt_steps=2000,
        measure_every=40,
        gpt_width=64,
        gpt_layers=2,
        gpt_heads=4,
        gpt_context=64,
        gpt_sequences=256,
        vision_sgd_lrs=(0.01, 0.02, 0.05),
        vision_adam_lrs=(1e-4, 3e-4, 1e-3),
        gpt_sgd_lrs=(0.1, 0.3),
        gpt_adam_lrs=(1e-3, 3e-3, 1e-2),
    ),
    # LeNet-5 full batch on 1024 images and the GPT below, one thread per run, measured on a
    # 16-core x86 machine: 155-230 s per vision run, 60-105 s per GPT run (600 steps, 30
    # measurements each): ≈ 24 core-minutes for the 11 runs, ≈ 12 min on 2 cores. The LRs
    # come from a scan (vision SGD 0.1 and 0.2 killed the network -- constant output --, 0.5
    # diverged; GPT SGD 1.0 diverges in 20 steps and is kept as the "above the edge" run).
    cpu=dict(model="lenet5", width=None, batch_size=1024, weight_decay=0.0, seeds=(0,)),
    smoke=dict(
        model="resnet8",
        train_size=128,
        batch_size=128,
        probe_size=64,
        weight_decay=0.0,
        steps=6,
        gpt_steps=6,
        measure_every=3,
        eval_size=100,
        gpt_width=16,
        gpt_layers=1,
        gpt_heads=2,
        gpt_context=16,
        gpt_sequences=16,
        vision_sgd_lrs=(0.05,),
        vision_adam_lrs=(1e-3,),
        gpt_sgd_lrs=(0.1,),
        gpt_adam_lrs=(1e-3,),
    ),
)


# ----------------------------------------------------------------------------------- the GPT
class Block(nn.Module):
    """Pre-LN transformer block; causal attention written out (smooth, twice differentiable)."""

    def __init__(self, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        mask = torch.triu(torch.ones(context, context, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.heads)
        att = att.masked_fill(self.mask[:T, :T], float("-inf")).softmax(dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class TinyGPT(nn.Module):
    """A character-level GPT (Radford et al. 2018 layout, nanoGPT-sized down): logits (B, T, V)."""

    def __init__(self, vocab: int, context: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(0.02 * torch.randn(context, width))
        self.blocks = nn.ModuleList(Block(width, heads, context) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every token."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def find_text(path: str) -> Path:
    """``path`` if readable, else the largest text file in a few system folders."""
    if Path(path).is_file():
        return Path(path)
    for folder in TEXT_FALLBACKS:
        files = [p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in ("", ".txt")]
        files = [p for p in files if 5_000 < p.stat().st_size < 2_000_000]
        if files:
            return max(files, key=lambda p: p.stat().st_size)
    raise FileNotFoundError(f"no text file at {path} nor in {TEXT_FALLBACKS}; pass --text-file")


def text_data(cfg: Config, seed: int) -> dict[str, Any]:
    """Fixed training windows (the full batch) and held-out windows of a character-level text."""
    path = find_text(cfg.text_file)
    text = path.read_text(errors="replace")
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    T = cfg.gpt_context
    g = torch.Generator().manual_seed(seed)

    def windows(lo: int, hi: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(lo, hi - T - 1, (n,), generator=g)
        x = torch.stack([ids[s : s + T] for s in starts])
        return x, torch.stack([ids[s + 1 : s + T + 1] for s in starts])

    info = {"file": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}
    return {
        "train": windows(0, split, cfg.gpt_sequences),
        "test": windows(split, len(ids), cfg.gpt_sequences),
        "vocab": len(chars),
        "text": info,
    }


# ------------------------------------------------------------------------------------ units
def units(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{unit name: {task, optimizer, lr, seed, steps}}`` in run order."""
    out = {}
    for seed in cfg.seeds:
        for task in cfg.tasks:
            for opt in cfg.optimizers:
                for lr in getattr(cfg, f"{task}_{opt}_lrs"):
                    steps = cfg.steps if task == "vision" else cfg.gpt_steps
                    spec = dict(task=task, optimizer=opt, lr=lr, seed=seed, steps=steps)
                    out[f"{task}_{opt}_lr{lr:g}_seed{seed}"] = spec
    return out


def plan(cfg: Config) -> list[dict]:
    """One unit per run; cost: training plus ≈ 40 gradient-equivalents per measurement."""
    out = []
    for name, u in units(cfg).items():
        per_step = cfg.batch_size if u["task"] == "vision" else cfg.gpt_sequences // 8
        extra = 40 * u["steps"] / max(1, cfg.measure_every)
        macs = train_macs(cfg, round(u["steps"] + extra), batch_size=per_step)
        out.append({"name": name, "seed": u["seed"], "macs": macs})
    return out


def _vision(cfg: Config, seed: int, device: torch.device) -> dict[str, Any]:
    train = load_dataset(cfg.dataset, split="train", subset=cfg.train_size, seed=seed)
    test = load_dataset(cfg.dataset, split="test")
    kw = {} if cfg.width is None or not cfg.model.startswith("resnet") else {"width": cfg.width}
    torch.manual_seed(seed)
    model = build_model(
        cfg.model,
        num_classes=train.num_classes,
        in_channels=train.x.shape[1],
        input_size=train.x.shape[-1],
        **kw,
    )
    n = min(cfg.eval_size, len(test))
    return {
        "model": model.to(device),
        "loss_fn": nn.CrossEntropyLoss(),
        "train": (train.x.to(device), train.y.to(device)),
        "test": (test.x[:n].to(device), test.y[:n].to(device)),
        "info": {"dataset": train.name, "train_size": len(train), "model": cfg.model},
    }


def _gpt(cfg: Config, seed: int, device: torch.device) -> dict[str, Any]:
    data = text_data(cfg, seed)
    torch.manual_seed(seed)
    model = TinyGPT(data["vocab"], cfg.gpt_context, cfg.gpt_width, cfg.gpt_layers, cfg.gpt_heads)
    return {
        "model": model.to(device),
        "loss_fn": token_loss,
        "train": tuple(t.to(device) for t in data["train"]),
        "test": tuple(t.to(device) for t in data["test"]),
        "info": {**data["text"], "vocab": data["vocab"], "model": "tiny-gpt"},
    }


def _optimizer(cfg: Config, spec: dict, model: nn.Module) -> torch.optim.Optimizer:
    if spec["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=spec["lr"], momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(
        model.parameters(),
        lr=spec["lr"],
        betas=(cfg.momentum, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )


def _batch(train: tuple, size: int, seed: int, step: int) -> tuple:
    """Full batch when ``size`` covers the set, else a sample that is a pure function of step."""
    n = train[0].shape[0]
    if size >= n:
        return train
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randperm(n, generator=g)[:size].to(train[0].device)
    return tuple(t[idx] for t in train)


@torch.no_grad()
def _evaluate(model: nn.Module, loss_fn: Any, data: tuple, task: str) -> dict[str, float]:
    was = model.training
    model.eval()
    try:
        out = model(data[0])
        rec = {"test_loss": float(loss_fn(out, data[1]))}
        if task == "vision":
            rec["test_accuracy"] = float((out.argmax(1) == data[1]).float().mean())
        return rec
    finally:
        model.train(was)


def _observer(cfg: Config, spec: dict, loss_fn: Any, train: tuple) -> EdgeOfStability:
    """The run's observer: measurements on the first ``probe_size`` training examples."""
    return EdgeOfStability(
        every=cfg.measure_every,
        loss_fn=loss_fn,
        batch=tuple(t[: cfg.probe_size] for t in train),
        curvature=CurvatureOptions(bn_mode=DEFAULT_BN_MODE),
        update=True,
        lanczos_tol=cfg.lanczos_tol,
        at_last=True,
        generator=torch.Generator().manual_seed(spec["seed"]),
    )


def _save_checkpoint(
    path: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, eos: EdgeOfStability
) -> None:
    """Model, optimizer, observer and RNG states after ``step`` updates, replaced atomically."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "observer": eos.state_dict(),
        "rng": get_rng_state(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume(
    run: Run,
    dev: torch.device,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    eos: EdgeOfStability,
    writer: RecordWriter,
) -> int:
    """Load the checkpoint if there is one (records after it are dropped); the first step."""
    if not run.checkpoint_path.exists():
        if run.records_path.exists():
            writer.truncate_after(-1)  # records of a run that died before its first checkpoint
        return 0
    ck = torch.load(run.checkpoint_path, map_location=dev, weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    eos.load_state_dict(ck["observer"])
    set_rng_state(ck["rng"])
    writer.truncate_after(ck["step"] - 1)
    return ck["step"]


def run_unit(cfg: Config, name: str, *, out: str, device: str) -> str:
    """Train (or resume, or skip) one unit; return its status."""
    spec = units(cfg).get(name)
    if spec is None:
        raise KeyError(f"{EXPERIMENT} has no unit {name!r}")
    run = Run(out, EXPERIMENT, name)
    if run.meta().get("status") in ("finished", "diverged") or summarize_only():
        return run.meta().get("status", "missing")
    dev = resolve_device(device)
    task = (_vision if spec["task"] == "vision" else _gpt)(cfg, spec["seed"], dev)
    model, loss_fn, train = task["model"], task["loss_fn"], task["train"]
    opt = _optimizer(cfg, spec, model)
    eos = _observer(cfg, spec, loss_fn, train)
    run.dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.config_path, {"experiment_config": asdict(cfg), **spec, **task["info"]})
    writer = RecordWriter(run.records_path)
    start = _resume(run, dev, model, opt, eos, writer)
    meta = {} if run.meta() else run_metadata(device=str(dev), seed=spec["seed"])
    run.update_meta(**meta, status="running", steps=spec["steps"])
    t0, status, steps = time.perf_counter(), "finished", spec["steps"]
    t = start - 1
    model.train()
    for t in range(start, steps):
        batch = _batch(
            train, cfg.batch_size if spec["task"] == "vision" else 10**9, spec["seed"], t
        )
        opt.zero_grad(set_to_none=True)
        out = model(batch[0])
        loss = loss_fn(out, batch[1])
        acc = (out.detach().argmax(-1) == batch[1]).float().mean().item()
        record: dict[str, Any] = {"step": t, "loss": loss.item(), "lr": spec["lr"]}
        record["train_accuracy"] = acc
        if not math.isfinite(record["loss"]) or record["loss"] > 1e6:
            record["loss"] = None if not math.isfinite(record["loss"]) else record["loss"]
            writer.write(record)
            status = "diverged"
            break
        loss.backward()
        opt.step()
        ctx = StepContext(
            step=t,
            model=model,
            optimizer=opt,
            batch=batch,
            loss=record["loss"],
            lr=spec["lr"],
            loss_fn=loss_fn,
            total_steps=steps,
        )
        record.update(run_observers([eos], ctx, last=t + 1 == steps))
        if t + 1 == steps:
            record.update(_evaluate(model, loss_fn, task["test"], spec["task"]))
        writer.write(_finite(record))
        if (t + 1) % cfg.checkpoint_every == 0 and t + 1 < steps:
            _save_checkpoint(run.checkpoint_path, t + 1, model, opt, eos)
    writer.close()
    seconds = run.meta().get("seconds", 0.0) + time.perf_counter() - t0
    run.update_meta(status=status, steps_done=t + 1, seconds=seconds)
    run.checkpoint_path.unlink(missing_ok=True)
    print(f"  {EXPERIMENT}/{name}: {status}, {t + 1} steps, {seconds:.1f}s", flush=True)
    return status


def _finite(record: dict) -> dict:
    """NaN/inf floats -> None (JSON has no NaN)."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


# ---------------------------------------------------------------------------------- summary
def summarize_run(cfg: Config, spec: dict, records: list[dict], status: str) -> dict[str, Any]:
    """Sharpness series against the threshold, and the edge-of-stability statistics of one run."""
    every = [r for r in records if r.get("eos_sharpness") is not None]
    # Adam's first steps: v̂ ≈ g² of one or two gradients, tiny where a gradient is, so P⁻¹H can
    # be huge for a few steps; the statistics below start after that transient.
    start = cfg.transient_fraction * spec["steps"]
    meas = [r for r in every if r["step"] >= start]
    sharp = [[r["step"], r["eos_sharpness"], r["eos_ratio"]] for r in meas]
    raw = [[r["step"], r["eos_raw_sharpness"]] for r in every if r.get("eos_raw_sharpness")]
    ratios = [r["eos_ratio"] for r in meas]
    first_edge = next((i for i, q in enumerate(ratios) if q >= cfg.edge_level), None)
    after = ratios[first_edge:] if first_edge is not None else []
    hover = sum(cfg.hover_low <= q <= cfg.hover_high for q in after) / len(after) if after else 0.0
    before = [s for _, s, _ in sharp[: (first_edge + 1 if first_edge is not None else None)]]
    mult = [r["eos_update_multiplier"] for r in meas if r.get("eos_update_multiplier")]
    flagged = [bool(r.get("eos_update_flags")) for r in meas]
    tests = [r for r in records if "test_loss" in r]
    return {
        **spec,
        "status": status,
        "threshold": meas[0]["eos_threshold"] if meas else None,
        "constant": meas[0]["eos_constant"] if meas else None,
        "kind": meas[0]["eos_kind"] if meas else None,
        "sharpness": [[r["step"], r["eos_sharpness"], r["eos_ratio"]] for r in every],
        "judged_from_step": start,
        "raw_sharpness": raw,
        "first": sharp[0][1] if sharp else None,
        "max": max((s for _, s, _ in sharp), default=None),
        "final": sharp[-1][1] if sharp else None,
        "max_ratio": max(ratios, default=None),
        "reached_edge": first_edge is not None,
        "hover_fraction": hover,
        "progressive_sharpening": bool(
            before and before[0] > 0 and max(before) >= cfg.sharpening_factor * before[0]
        ),
        "update_multiplier_median": statistics.median(mult) if mult else None,
        "update_flagged": sum(flagged) / len(flagged) if flagged else None,
        "edge_step": sharp[first_edge][0] if first_edge is not None else None,
        "final_loss": next(
            (r["loss"] for r in reversed(records) if r.get("loss") is not None), None
        ),
        "final_train_accuracy": records[-1].get("train_accuracy") if records else None,
        "test_loss": tests[-1]["test_loss"] if tests else None,
        "test_accuracy": tests[-1].get("test_accuracy") if tests else None,
    }


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    runs = {}
    for name, spec in units(cfg).items():
        status = run_unit(cfg, name, out=out, device=device)
        run = Run(out, EXPERIMENT, name)
        records = run.records() if run.records_path.exists() else []
        runs[name] = summarize_run(cfg, spec, records, status)
    checks = {}
    for task in cfg.tasks:
        for opt in cfg.optimizers:
            group = [r for r in runs.values() if r["task"] == task and r["optimizer"] == opt]
            done = [r for r in group if r["status"] == "finished"]
            checks[f"{task}_{opt}"] = {
                "runs": len(group),
                "finished": len(done),
                "reached_edge": sum(r["reached_edge"] for r in done),
                "hovered": sum(r["reached_edge"] and r["hover_fraction"] >= 0.5 for r in done),
                "progressive_sharpening": sum(r["progressive_sharpening"] for r in done),
            }
    return {"runs": runs, "checks": checks, "bn_mode": DEFAULT_BN_MODE}


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
