"""find_lr against the classic range test and torch-lr-finder on the F16 models (issue 24).

For each F16 model (MLP, LeNet-5, BN ResNet-8 on Fashion-MNIST; the tiny char-GPT) and optimizer
(heavy-ball SGD β = 0.9, Adam β₁ = 0.9), seed 0, the same θ₀, the same batches and the same
exponential ladder (SGD 1e-4 → 30, Adam 1e-5 → 3, ``--steps`` updates, F16's ramp):

* ``range_test``: ``hessian_lr.lr_range_test`` (ramp="exp", no curvature cross-check), stopping
  at 4× the best smoothed loss; its suggestion ``max_lr`` (smoothed-loss rules, no held-out set)
  and the LR where it stopped;
* ``torch_lr_finder``: the real package (``LRFinder.range_test``, step_mode="exp", its defaults
  otherwise: diverge_th 5, smooth_f 0.05) and its steepest-gradient suggestion (as its
  ``plot(suggest_lr=True)`` computes it);
* ``find_lr``: ``hessian_lr.find_lr`` (measure every 5 updates), stopping at η·λ/c = 1.

Reported per row: updates taken, HVPs, seconds (each method timed once, next to the others in
the same process, so compare the ratios, not the absolute times), the suggestion, and F16's
η_max for that cell when ``results_cpu/f16_lr_that_works/<cell>/result.json`` exists.

    python benchmarks/bench_finder.py            # every model, 200-step ladder
    python benchmarks/bench_finder.py --quick    # MLP only, 60 steps (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "experiments")]

from _timing import configure_threads, timed  # noqa: E402
from f16_lr_that_works import PRESETS, batch_at, task  # noqa: E402
from f16_probes import make_optimizer  # noqa: E402

from hessian_lr import find_lr, lr_range_test  # noqa: E402

RAMPS = {"sgd": (1e-4, 30.0), "adam": (1e-5, 3.0)}


def _tlf(model, opt, loss_fn, batches, start, end, steps):
    from torch_lr_finder import LRFinder

    finder = LRFinder(model, opt, loss_fn, device="cpu")
    finder.range_test(batches, start_lr=start, end_lr=end, num_iter=steps, step_mode="exp")
    lrs, losses = finder.history["lr"], finder.history["loss"]
    finder.reset()
    grads = np.gradient(np.array(losses[10:-5])) if len(losses) > 17 else None
    suggestion = lrs[10 + int(np.argmin(grads))] if grads is not None else math.nan
    return {"steps": len(lrs), "suggestion": suggestion, "stop_lr": lrs[-1], "hvps": 0}


def row(cfg, model_name: str, opt_name: str, steps: int) -> dict:
    t = task(cfg, model_name, 0, torch.device("cpu"))
    xs, ys = zip(*(batch_at(t, 0, i) for i in range(steps)))
    loader = torch.utils.data.DataLoader(  # the same batches, in order, for all three
        torch.utils.data.TensorDataset(torch.cat(xs), torch.cat(ys)), batch_size=len(xs[0])
    )
    start, end = RAMPS[opt_name]
    out = {"model": model_name, "optimizer": opt_name}

    def fresh():
        model = t.build()
        return model, make_optimizer(cfg, opt_name, model, start)

    model, opt = fresh()
    rt, sec = timed(
        lambda: lr_range_test(
            model,
            opt,
            loader,
            loss_fn=t.loss_fn,
            start_lr=start,
            end_lr=end,
            num_steps=steps,
            ramp="exp",
            curvature_check=False,
        )
    )
    out["range_test"] = {
        "steps": len(rt.lrs),
        "hvps": 0,
        "seconds": sec,
        "suggestion": rt.suggestions.max_lr.lr,
        "stop_lr": rt.lrs[-1],
    }
    model, opt = fresh()
    res, sec = timed(lambda: _tlf(model, opt, t.loss_fn, loader, start, end, steps))
    out["torch_lr_finder"] = {**res, "seconds": sec}
    model, opt = fresh()
    fl, sec = timed(
        lambda: find_lr(
            model,
            t.loss_fn,
            loader,
            opt,
            start_lr=start,
            end_lr=end,
            num_steps=steps,
            measure_every=5,
        )
    )
    out["find_lr"] = {
        "steps": fl.num_steps,
        "hvps": fl.num_hvps,
        "seconds": sec,
        "suggestion": fl.max_lr,
        "edge_lr": fl.edge_lr,
        "stop": fl.stop_reason,
    }
    cell = ROOT / "results_cpu" / "f16_lr_that_works" / f"{model_name}_{opt_name}_seed0"
    if (cell / "result.json").exists():
        out["eta_max"] = json.loads((cell / "result.json").read_text())["eta_max"]
    return out


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet5", "resnet8", "gpt"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    configure_threads(1)
    models, steps = (["mlp"], 60) if args.quick else (args.models, args.steps)
    cfg = PRESETS["cpu"]
    rows = [row(cfg, m, o, steps) for m in models for o in ("sgd", "adam")]
    lines = [
        f"bench_finder: {steps}-step exp ladder, seed 0, torch {torch.__version__}, "
        f"{platform.machine()}, 1 thread (seconds: one call each, same process)"
    ]
    lines.append("model opt | method: steps, HVPs, seconds (×range test), suggestion | η_max")
    for r in rows:
        base = r["range_test"]["seconds"]
        for m in ("range_test", "torch_lr_finder", "find_lr"):
            x = r[m]
            lines.append(
                f"{r['model']} {r['optimizer']} | {m}: {x['steps']} steps, {x['hvps']} HVPs, "
                f"{x['seconds']:.2f}s (×{x['seconds'] / base:.2f}), suggestion "
                f"{_fmt(x['suggestion'])} | η_max {_fmt(r.get('eta_max'))}"
            )
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cpu_bench_finder.txt").write_text(text + "\n")
        (args.out / "cpu_bench_finder.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
