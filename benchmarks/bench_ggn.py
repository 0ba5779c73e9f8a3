"""Cost of GGN and Fisher products ÷ one gradient, beside the Hessian's and curvlinops' (issue 26).

Workloads (float32, one batch, models at initialization, eval mode, mean cross-entropy):

* ``mlp``: MLP 784-256-128-10, tanh, 256 random 28x28 images (N = 235,146);
* ``lenet``: LeNet-5 (6/16 filters, fc120-84), ReLU, max-pool, the same 256 images (N = 61,706);
* ``gpt``: nanoGPT-shaped ``gpt-tiny`` of ``bench_models.py`` (vocab 64, width 32, 2 blocks,
  context 32, batch 8; tied embedding/head), next-token cross-entropy on random tokens.

Every row is the median over interleaved rounds of (one product ``op @ v``) / (one gradient:
``torch.autograd.grad`` of the mean loss, forward included), all timed next to each other
(``_timing.interleaved``), operators built once outside the timed calls (a solver's view: the
cached graphs of one batch are built by the warm-up call). Ours: Hessian (its default back end),
GGN and Fisher (empirical; MC with one label) with the default back end (on one batch: autograd
on cached graphs) and with ``torch.func`` (JVP + VJP, nothing cached). curvlinops (when
installed): ``HessianLinearOperator``, ``GGNLinearOperator``, ``EFLinearOperator``,
``FisherMCLinearOperator`` on the same batch, under the math attention kernel (as ours).

Run ``python benchmarks/bench_ggn.py --quick`` (a few minutes on one CPU thread); ``--out PATH``
writes the table, ``--json PATH`` the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import configure_threads, interleaved, paired_ratio  # noqa: E402
from bench_models import CONFIGS, TokenCE, make, token_ce  # noqa: E402

from hessian_lr.curvature import (  # noqa: E402
    FisherOperator,
    GGNOperator,
    HessianOperator,
    categorical_sampler,
    token_cross_entropy_hessian,
)
from hessian_lr.training import models  # noqa: E402

WORKLOADS = ("mlp", "lenet", "gpt")


def build(key: str) -> tuple[nn.Module, Any, Any, str, dict[str, Any]]:
    """(model, loss_fn, batch, label, extra GGN/Fisher keywords)."""
    g = torch.Generator().manual_seed(0)
    if key in ("mlp", "lenet"):
        torch.manual_seed(0)
        if key == "mlp":
            model = models.MLP(784, (256, 128), 10, activation="tanh")
            label = "MLP 784-256-128-10, tanh"
        else:
            model = models.LeNet5(1, 10, input_size=28)
            label = "LeNet-5 (6/16 filters, fc120-84), ReLU, max-pool"
        x = torch.randn(256, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (256,), generator=g)
        return model.eval(), nn.CrossEntropyLoss(), (x, y), label + ", batch 256", {}
    cfg = CONFIGS["gpt-tiny"]
    model, batch = make(cfg, torch.device("cpu"))
    label = f"gpt-tiny (vocab {cfg.vocab}, width {cfg.width}, {cfg.blocks} blocks), batch 8x32"
    return model, token_ce, batch, label, {}


def _math_attention() -> Any:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _curvlinops(model: nn.Module, loss_fn: Any, batch: Any, v: torch.Tensor) -> dict[str, Any]:
    try:
        import curvlinops
    except ImportError:
        return {}
    loss = TokenCE() if loss_fn is token_ce else loss_fn
    params = [p for p in model.parameters() if p.requires_grad]
    out: dict[str, Callable[[], Any]] = {}
    was = model.training
    model.eval()
    for name, cls in [
        ("curvlinops hessian", "HessianLinearOperator"),
        ("curvlinops ggn", "GGNLinearOperator"),
        ("curvlinops ef", "EFLinearOperator"),
        ("curvlinops fisher mc", "FisherMCLinearOperator"),
    ]:
        try:
            op = getattr(curvlinops, cls)(model, loss, params, [batch], check_deterministic=False)
            with _math_attention():  # the fused SDPA kernels have no forward-mode AD
                op @ v  # a peer that cannot run this workload is reported, not fatal

            def product(op: Any = op) -> Any:
                with _math_attention():
                    return op @ v

            out[name] = product
        except Exception as err:  # noqa: BLE001
            print(f"  {name}: skipped ({type(err).__name__}: {str(err)[:120]})")
    model.train(was)
    return out


def run(key: str, rounds: int) -> dict[str, Any]:
    model, loss_fn, batch, label, _ = build(key)
    params = [p for p in model.parameters() if p.requires_grad]
    N = sum(p.numel() for p in params)
    v = torch.randn(N, generator=torch.Generator().manual_seed(1))
    mc_kw: dict[str, Any] = {"kind": "mc"}
    if key == "gpt":
        mc_kw["sampler"] = categorical_sampler()

    def gradient() -> None:
        was = model.training
        model.eval()
        loss = loss_fn(model(batch[0]), batch[1])
        torch.autograd.grad(loss, params)
        model.train(was)

    func = {"backend": "forward-over-reverse"}
    ops = {
        "hessian (ours, auto)": HessianOperator(model, loss_fn, batch),
        "ggn (ours, auto: cached autograd)": GGNOperator(model, loss_fn, batch),
        "ggn (ours, torch.func)": GGNOperator(model, loss_fn, batch, **func),
        "fisher ef (ours, auto: cached autograd)": FisherOperator(model, loss_fn, batch),
        "fisher ef (ours, torch.func)": FisherOperator(model, loss_fn, batch, **func),
        "fisher mc (ours, auto: cached autograd)": FisherOperator(model, loss_fn, batch, **mc_kw),
    }
    if key == "gpt":
        ops["ggn (ours, auto, closed-form token CE)"] = GGNOperator(
            model, loss_fn, batch, output_hessian=token_cross_entropy_hessian()
        )
    fns: dict[str, Callable[[], Any]] = {"gradient": gradient}
    fns.update({name: (lambda op=op: op @ v) for name, op in ops.items()})
    fns.update(_curvlinops(model, loss_fn, batch, v))
    t = interleaved(fns, rounds=rounds, warmup=1)
    ratios = {n: paired_ratio(t[n], t["gradient"]) for n in fns if n != "gradient"}
    return {
        "key": key,
        "label": label,
        "N": N,
        "gradient_ms": 1e3 * t["gradient"].median,
        "ratios": ratios,
        "spread": {n: t[n].spread for n in fns},
    }


def report(results: list[dict[str, Any]], header: str) -> str:
    lines = [header, ""]
    for r in results:
        lines.append(f"== {r['key']}: {r['label']}; N = {r['N']:,}")
        lines.append(f"   one gradient: {r['gradient_ms']:.1f} ms (median)")
        for name, ratio in r["ratios"].items():
            lines.append(f"   {name:48s} {ratio:6.2f} x gradient")
        lines.append("")
    names = sorted({n for r in results for n in r["ratios"]}, key=lambda n: ("curvlinops" in n, n))
    lines.append("| product ÷ gradient | " + " | ".join(r["key"] for r in results) + " |")
    lines.append("| --- |" + " --- |" * len(results))
    for n in names:
        cells = [f"{r['ratios'][n]:.2f}" if n in r["ratios"] else "—" for r in results]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--smoke", action="store_true", help="gpt only, 2 rounds (tests)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the table here")
    ap.add_argument("--json", default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    threads = configure_threads(args.threads)
    keys = ["gpt"] if args.smoke else [k for k in args.workloads.split(",") if k]
    bad = [k for k in keys if k not in WORKLOADS]
    if bad:
        raise SystemExit(f"unknown workloads {bad}; choose from {WORKLOADS}")
    rounds = 2 if args.smoke else (5 if args.quick else 15)
    try:
        from importlib.metadata import version

        import curvlinops  # noqa: F401

        peer = f"curvlinops-for-pytorch {version('curvlinops-for-pytorch')}"
    except ImportError:
        peer = "curvlinops not installed (its rows are absent)"
    header = (
        f"hessian_lr GGN/Fisher benchmark: {rounds} interleaved rounds, cpu, float32, torch "
        f"{torch.__version__}, {threads} thread(s), python {platform.python_version()}; peer: "
        f"{peer}"
    )
    print(header)
    results = []
    for key in keys:
        print(f"== {key} ...", flush=True)
        results.append(run(key, rounds))
    text = report(results, header)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
