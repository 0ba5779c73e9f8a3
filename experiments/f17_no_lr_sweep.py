"""F17 -- training without an LR sweep: curvature-set LRs against the parameter-free optimizers.

Beyond the papers (issue 27). Per task × optimizer (heavy-ball SGD β = 0.9; AdamW β₁ = 0.9,
WD ``adamw_wd``), the same budget of ``steps`` updates of batch ``batch_size`` on the same data
order (``batch(step)``, a pure function of seed and step) for every method:

* **Reference** (the tuned baseline): constant LR + cosine decay to 0 at each LR of a ×2 grid of
  ``grid_size`` ≥ 6 LRs (``sgd_grid``/``adamw_grid``: the first LR; seed ``sweep_seed``); the LR
  with the best final metric is rerun on the other seeds (``sweep__*`` then ``cosine__*`` units).
* **Contenders** (``experiments/f17_methods.py``): the three curvature modes (``stability``:
  ``fraction`` · c/λ_max, preconditioned for AdamW; ``update``: GeN's η*; ``find_onecycle``:
  the stability-aware finder's max LR, then 1cycle), started from ``start_lr`` (the optimizer's
  LR until the first estimate), ``measure_every`` k; and the peers Prodigy, D-Adaptation, DoG,
  schedule-free (the real packages, the ``peers`` extra; skipped with a message when absent; the
  versions of torch and of every peer are in every record).
* Metric: final test accuracy in % (vision; ``test_size`` test images) or held-out loss in nats
  (the GPT), at the last iterate (DoG: its polynomial-decay average; schedule-free: ``eval()``).

Pre-registered decision rule (written before any result existed; applied in
``paper_figures/fig_f17_no_lr_sweep.py``): per task × optimizer × method, Δ_s = metric(method,
seed s) − metric(reference, seed s) (paired by seed), mean over the 3 seeds with a 95 % t
interval (df = 2). "Within the margin of the reference" holds iff the CI lies inside ±margin,
fails iff it lies wholly outside, undecided otherwise. Margin: 0.5 accuracy points (vision);
0.05 nats of test loss (the GPT: the issue's "0.5 points" has no meaning for a loss, and 0.05
nats is ≈ 0.5 % of the char-GPT's initial loss ln V; chosen here, before data). Secondary
(informational): mean Δ of the best curvature mode vs each peer over tasks; HVP overhead
(seconds of estimates / seconds of training, ≤ 10 % the goal).

Budget (``cpu``; one thread; 600 steps, batch 64). Per-step times from F16 on this machine:
MLP ≈ 2 ms, LeNet-5 ≈ 25 ms, BN ResNet-8 width 16 ≈ 150 ms, tiny GPT ≈ 30 ms; one HVP ≈ 2× a
step; an estimate of ``stability`` ≈ 10-14 HVPs, of ``update`` 1 HVP plus ≈ 50 ms of fixed
cost (``benchmarks/results/cpu_bench_curvature_modes.txt``); the finder ≈ 130 steps + 100 HVPs.
Per task × optimizer: 7 sweep + 2 reference + 12 peer runs (AdamW: 9, no DoG) at the plain
step cost, 3 ``stability`` runs at ≈ 3-4× it (k = 10), 3 ``update`` at ≈ 1.5×, 3
``find_onecycle`` at ≈ 1× plus the finder. ResNet-8 ≈ 2 × 3,700 s ≈ 2.0 CPU-h, LeNet-5 ≈ 0.35 h,
GPT ≈ 0.4 h, MLP ≈ 0.1 h: ≈ 3 CPU-hours in all (≤ 4), one process; a second process with
``--tasks`` naming other tasks may share the machine (the sweeps come first per process). Smoke
preset (2 tasks × 2 optimizers × 2 seeds, 12 steps) takes ≈ 20 CPU-s. ``gpu``: ResNet-20 and a
4-layer width-128 GPT, 2000 steps (``--device cuda``; not timed yet).

    python experiments/f17_no_lr_sweep.py --preset cpu --out results_cpu --threads 1

Resumable: each unit writes ``<out>/f17_no_lr_sweep/<unit>/result.json`` and ``meta.json``
when done; finished units are skipped. The sweep runs on ``sweep_seed`` whatever ``--seeds``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from _common import cli, experiment_name, summarize_only
from _presets import Base, presets
from f15_edge_of_stability import TinyGPT, text_data, token_loss
from f17_methods import METHODS, PEERS_DIST, PeerMissing, build, peer_versions, train
from torch import nn

from hessian_lr.records import read_json, write_json_atomic
from hessian_lr.training.data import load_dataset
from hessian_lr.training.models import build_model

EXPERIMENT = experiment_name(__file__)
MARGIN = {"accuracy": 0.5, "loss": 0.05}  # pre-registered (module docstring)
__all__ = ["Config", "PRESETS", "PEERS_DIST", "units", "grid", "best_lr", "run_unit", "main"]


@dataclass(frozen=True)
class Config(Base):
    tasks: tuple[str, ...] = ("mlp", "lenet5", "resnet8", "gpt")
    optimizers: tuple[str, ...] = ("sgd", "adamw")
    methods: tuple[str, ...] = METHODS
    steps: int = 600
    grid_size: int = 7
    sweep_seed: int = 0
    sgd_grid: float = 0.005  # 0.005 ... 0.32
    adamw_grid: float = 1.25e-4  # 1.25e-4 ... 8e-3
    adamw_wd: float = 0.01
    start_lr: dict = field(default_factory=lambda: {"sgd": 0.01, "adamw": 1e-3})
    fraction: float = 0.5
    update_fraction: float = 1.0
    measure_every: int = 10
    lanczos_max_iter: int = 20
    finder_ramp: dict = field(default_factory=lambda: {"sgd": (1e-4, 30.0), "adamw": (1e-5, 3.0)})
    finder_steps: int = 200
    finder_every: int = 5
    log_every: int = 5
    test_size: int = 2000
    text_file: str = "/usr/share/common-licenses/GPL-3"
    gpt_context: int = 32
    gpt_width: int = 32
    gpt_layers: int = 2
    gpt_heads: int = 2
    gpt_sequences: int = 4096
    gpt_batch: int = 32

    SCALED = ("steps", "finder_steps")


_COMMON = dict(weight_decay=0.0, batch_size=64, momentum=0.9, seeds=(0, 1, 2))
PRESETS = presets(
    Config,
    paper=dict(**_COMMON, tasks=("resnet20", "gpt4"), steps=5000),
    gpu=dict(**_COMMON, tasks=("resnet20", "gpt4"), steps=2000, test_size=10000),
    cpu=dict(**_COMMON, width=16),
    smoke=dict(
        **{**_COMMON, "batch_size": 16, "seeds": (0, 1)},
        width=4,
        tasks=("mlp", "gpt"),
        steps=12,
        grid_size=6,
        measure_every=4,
        lanczos_max_iter=6,
        finder_steps=16,
        finder_every=4,
        log_every=2,
        test_size=64,
        gpt_sequences=64,
        gpt_batch=8,
        gpt_context=16,
        gpt_width=16,
        gpt_layers=1,
    ),  # fmt: skip
)


# -------------------------------------------------------------------------------- units
def grid(cfg: Config, optimizer: str) -> list[float]:
    """The reference sweep's ×2 LR grid."""
    lo = cfg.sgd_grid if optimizer == "sgd" else cfg.adamw_grid
    return [lo * 2.0**i for i in range(cfg.grid_size)]


def units(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{unit: spec}``: every sweep first (the references need them), then seed-major."""
    out = {}
    s0 = cfg.sweep_seed
    for task in cfg.tasks:
        for opt in cfg.optimizers:
            for i, lr in enumerate(grid(cfg, opt)):
                out[f"sweep__{task}_{opt}_lr{i}"] = dict(
                    task=task, optimizer=opt, method="cosine", seed=s0, lr=lr
                )
    for seed in cfg.seeds:
        for task in cfg.tasks:
            for opt in cfg.optimizers:
                for m in cfg.methods:
                    if m == "cosine" and seed == s0:
                        continue  # the sweep's best run is the reference's first seed
                    out[f"{m}__{task}_{opt}_seed{seed}"] = dict(
                        task=task, optimizer=opt, method=m, seed=seed, lr=None
                    )
    return out


def plan(cfg: Config) -> list[dict]:
    return [{"name": n, "seed": u["seed"], "macs": 1.0} for n, u in units(cfg).items()]


def best_lr(cfg: Config, task: str, opt: str, out: str) -> tuple[float, str]:
    """The sweep's LR with the best final metric (and its unit); KeyError while unfinished."""
    rows = []
    for i, lr in enumerate(grid(cfg, opt)):
        f = Path(out) / EXPERIMENT / f"sweep__{task}_{opt}_lr{i}" / "result.json"
        if not f.exists():
            raise KeyError(f"the sweep {task}/{opt} is unfinished (no {f.parent.name})")
        r = read_json(f)
        score = r["metric"] if r["metric"] == r["metric"] else None  # NaN: diverged
        if score is not None:
            rows.append(((score if r["kind"] == "accuracy" else -score), lr, f.parent.name))
    if not rows:
        raise RuntimeError(f"every LR of the {task}/{opt} sweep diverged")
    _, lr, name = max(rows)
    return lr, name


# -------------------------------------------------------------------------------- tasks
_DATA: dict[Any, Any] = {}


def task(cfg: Config, name: str, seed: int, device: torch.device) -> SimpleNamespace:
    """Data, θ₀ builder, loss, ``batch(step)`` and ``evaluate(model)`` of a task."""
    if name.startswith("gpt"):
        g = cfg if name == "gpt" else _gpt4(cfg)
        key = ("gpt", seed, g.gpt_sequences, g.gpt_context)
        d = _DATA.setdefault(key, text_data(g, seed))
        train_xy, test_xy = ([v.to(device) for v in d[s]] for s in ("train", "test"))

        def build_gpt() -> nn.Module:
            torch.manual_seed(seed)
            return TinyGPT(d["vocab"], g.gpt_context, g.gpt_width, g.gpt_layers, g.gpt_heads)

        return _ns(build_gpt, token_loss, train_xy, test_xy, cfg.gpt_batch, seed, "loss", device)
    if "vision" not in _DATA:
        tr, te = (load_dataset(cfg.dataset, split=s) for s in ("train", "test"))
        _DATA["vision"] = ((tr.x, tr.y), (te.x[: cfg.test_size], te.y[: cfg.test_size]), tr)
    train_xy, test_xy, ds = _DATA["vision"]
    kw = {"width": cfg.width} if name.startswith("resnet") and cfg.width else {}

    def build_vision() -> nn.Module:
        torch.manual_seed(seed)
        x = train_xy[0]
        return build_model(
            name, num_classes=ds.num_classes, in_channels=x.shape[1], input_size=x.shape[-1], **kw
        )

    train_xy, test_xy = [v.to(device) for v in train_xy], [v.to(device) for v in test_xy]
    loss = nn.CrossEntropyLoss()
    return _ns(build_vision, loss, train_xy, test_xy, cfg.batch_size, seed, "accuracy", device)


def _gpt4(cfg: Config) -> Config:
    from dataclasses import replace

    return replace(cfg, gpt_layers=4, gpt_width=128, gpt_heads=4)


def _ns(build, loss_fn, train_xy, test_xy, bs, seed, kind, device) -> SimpleNamespace:
    n = train_xy[0].shape[0]

    def batch(step: int) -> tuple:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, n, (bs,), generator=g).to(device)
        return tuple(v[idx] for v in train_xy)

    @torch.no_grad()
    def evaluate(model: nn.Module) -> float:
        model.eval()
        outs = [model(x) for x in test_xy[0].split(256)]
        out = torch.cat(outs)
        if kind == "loss":
            return float(loss_fn(out, test_xy[1]))
        return 100.0 * float((out.argmax(-1) == test_xy[1]).float().mean())

    return SimpleNamespace(
        build=lambda: build().to(device), loss_fn=loss_fn, batch=batch, evaluate=evaluate,
        kind=kind,
    )  # fmt: skip


# -------------------------------------------------------------------------------- running
def run_unit(cfg: Config, name: str, *, out: str, device: str) -> dict:
    """Run (or skip) one unit; its result (``status`` "skipped" for an absent peer)."""
    spec = units(cfg).get(name)
    if spec is None:
        raise KeyError(f"{EXPERIMENT} has no unit {name!r}")
    folder = Path(out) / EXPERIMENT / name
    if (folder / "result.json").exists():
        return read_json(folder / "result.json")
    dev = torch.device(
        "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    lr, source = spec["lr"], None
    if spec["method"] == "cosine" and lr is None:
        lr, source = best_lr(cfg, spec["task"], spec["optimizer"], out)
    t = task(cfg, spec["task"], spec["seed"], dev)
    model = t.build()
    record = {**spec, "lr": lr, "lr_source": source, "kind": t.kind, "versions": peer_versions()}
    t0 = time.perf_counter()
    try:
        setup = build(cfg, spec["method"], spec["optimizer"], model, t, spec["seed"], lr)
    except PeerMissing as err:
        print(f"  {EXPERIMENT}/{name}: {err}", flush=True)
        return {**record, "status": "skipped", "reason": str(err)}
    record.update(train(cfg, setup, model, t, spec["seed"]), status="finished")
    record["total_seconds"] = time.perf_counter() - t0
    write_json_atomic(folder / "result.json", record)
    write_json_atomic(
        folder / "meta.json",
        {"status": "diverged" if record["diverged"] else "finished", "steps_done": cfg.steps},
    )
    print(f"  {EXPERIMENT}/{name}: {t.kind} {record['metric']:.4g}, "
          f"{record['seconds']:.1f}s", flush=True)  # fmt: skip
    return record


def main(cfg: Config, *, out: str, device: str, progress: bool) -> dict:
    results, skipped = {}, {}
    for name in units(cfg):
        done = Path(out) / EXPERIMENT / name / "result.json"
        if summarize_only():
            if done.exists():
                results[name] = read_json(done)
            continue
        r = run_unit(cfg, name, out=out, device=device)
        (skipped if r.get("status") == "skipped" else results)[name] = r
    table = {n: {k: r[k] for k in ("task", "optimizer", "method", "seed", "lr", "metric")}
             for n, r in results.items()}  # fmt: skip
    return {
        "runs": table,
        "skipped": {n: r["reason"] for n, r in skipped.items()},
        "missing": [n for n in units(cfg) if n not in results and n not in skipped],
        "margin": MARGIN,
        "versions": peer_versions(),
        "config": asdict(cfg),
    }


if __name__ == "__main__":
    cli(__doc__, PRESETS, main)
