"""Transformer benchmark of the Hessian operator: HVP / gradient per back end and λ_max time.

Issue 10's benchmark on the models people bring: nanoGPT-style transformers (token embedding
tied to the output head, LayerNorm, causal ``F.scaled_dot_product_attention``, GELU, dropout
0.1 in the module, which the operator turns off), next-token cross-entropy on random tokens,
float32, one batch:

* ``gpt-tiny``: vocab 64, width 32, 2 blocks, context 32, batch 8 (~30k parameters);
* ``gpt-1m``: vocab 512, width 128, 5 blocks, context 64, batch 16 (~1.05M parameters).

Sections per model, all ratios measured in one interleaved run (``_timing.interleaved``: the
compared functions alternate round by round, and ratios are medians of per-round ratios):

[1] HVP time / gradient time, where the gradient is one ``torch.autograd.grad`` of the mean
    loss (forward included) on the model in eval mode, and an HVP is ``op @ v`` on an operator
    built once (as inside a solver: double backward reuses its cached first-order graph). Beside
    them the bare products the operator wraps -- a hand-written cached double backward and
    ``jvp(grad)`` over ``functional_call`` under the math attention kernel -- so that the
    operator's overhead (data loop, modes, fingerprint of the parameters) is visible.
[2] k = 8 columns ``op @ V``: time per column / gradient time.
[3] λ_max to 1e-4 (Lanczos, ``stop="eigenvalue"``): seconds, HVPs, and the relative error
    against a tight reference run (tol 1e-9).
[4] curvlinops' ``HessianLinearOperator`` product (if installed) beside ours.

Run ``python benchmarks/bench_models.py --quick`` (about a minute on one CPU thread) or without
``--quick`` for more rounds; ``--json PATH`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE), str(_HERE.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from _timing import configure_threads, interleaved, paired_ratio, timed  # noqa: E402

from hessian_lr.curvature.hessian import HessianOperator  # noqa: E402
from hessian_lr.curvature.lanczos import lanczos  # noqa: E402

BACKENDS = ("double-backward", "forward-over-reverse", "finite-difference")


@dataclass(frozen=True)
class GPTConfig:
    """A nanoGPT-shaped model and its batch."""

    name: str
    vocab: int
    width: int
    blocks: int
    heads: int
    context: int
    batch: int


CONFIGS = {
    "gpt-tiny": GPTConfig("gpt-tiny", vocab=64, width=32, blocks=2, heads=4, context=32, batch=8),
    "gpt-1m": GPTConfig("gpt-1m", vocab=512, width=128, blocks=5, heads=4, context=64, batch=16),
}


class Block(nn.Module):
    def __init__(self, d: int, heads: int, p: float):
        super().__init__()
        self.heads, self.p = heads, p
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, C)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, p: float = 0.1):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.width)
        self.pos = nn.Embedding(cfg.context, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, p) for _ in range(cfg.blocks))
        self.ln_f = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab, bias=False)
        self.head.weight = self.tok.weight  # tied, as in GPT-2 and nanoGPT
        self.drop = nn.Dropout(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class TokenCE(nn.Module):
    """``token_ce`` as a module with ``reduction = "mean"`` (what curvlinops 3 asks of a loss)."""

    reduction = "mean"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return token_ce(logits, targets)


def make(cfg: GPTConfig, device: torch.device) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = GPT(cfg).to(device).train()  # dropout on in the module: the operator turns it off
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, cfg.vocab, (cfg.batch, cfg.context + 1), generator=g).to(device)
    return model, (idx[:, :-1], idx[:, 1:])


# ------------------------------------------------------------------------------- bare products
def bare_products(model: nn.Module, batch: tuple[torch.Tensor, ...]):
    """The products the operator wraps, written by hand (eval mode, math attention kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = [n for n, _ in model.named_parameters()]
    theta = [p.detach() for _, p in model.named_parameters()]
    x, y = batch

    def loss_of(ts):
        return token_ce(functional_call(model, dict(zip(names, ts)), (x,)), y)

    with sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        leaves = [t.clone().requires_grad_(True) for t in theta]
        gs = torch.autograd.grad(loss_of(leaves), leaves, create_graph=True)

    def double_backward(v: list[torch.Tensor]) -> None:
        torch.autograd.grad(gs, leaves, grad_outputs=v, retain_graph=True)

    grad_fn = grad(lambda ts: loss_of(ts))

    def fwd_over_rev(v: list[torch.Tensor]) -> None:
        with sdpa_kernel(SDPBackend.MATH):
            jvp(grad_fn, (tuple(theta),), (tuple(v),))

    return double_backward, fwd_over_rev


# ------------------------------------------------------------------------------- sections
@dataclass
class ModelResult:
    model: str
    params: int
    grad_ms: float
    hvp_over_grad: dict[str, float]
    bare_over_grad: dict[str, float]
    batched8_per_column_over_grad: float | None
    lambda_max: float | None
    lambda_rel_error: float | None
    lambda_hvps: int | None
    lambda_seconds: float | None
    curvlinops_over_grad: float | None


def run_model(cfg: GPTConfig, device: torch.device, rounds: int, lam: bool) -> ModelResult:
    model, batch = make(cfg, device)
    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)
    ops = {b: HessianOperator(model, token_ce, batch, backend=b) for b in BACKENDS}
    v = torch.randn(n, generator=torch.Generator().manual_seed(2)).to(device)
    vs = ops["double-backward"]._split(v)
    bare_db, bare_fr = bare_products(model, batch)

    def gradient() -> None:
        was = model.training
        model.eval()
        loss = token_ce(model(batch[0]), batch[1])
        torch.autograd.grad(loss, params)
        model.train(was)

    fns = {"grad": gradient}
    fns.update({f"op:{b}": (lambda op=op: op @ v) for b, op in ops.items()})
    fns["bare:double-backward"] = lambda: bare_db(vs)
    fns["bare:forward-over-reverse"] = lambda: bare_fr(vs)
    curv = _curvlinops_product(model, batch, v)
    if curv is not None:
        fns["curvlinops"] = curv
    res = interleaved(fns, rounds=rounds, warmup=1, device=device)
    ratio = {k: paired_ratio(t, res["grad"]) for k, t in res.items() if k != "grad"}

    V = torch.randn(n, 8, generator=torch.Generator().manual_seed(3)).to(device)
    op = ops["double-backward"]
    batched = interleaved(
        {"grad": gradient, "k8": lambda: op @ V}, rounds=max(2, rounds // 2), device=device
    )
    per_col = paired_ratio(batched["k8"], batched["grad"]) / 8

    lam_max = lam_err = lam_hvps = lam_secs = None
    if lam:
        ref = lanczos(
            op,
            k=1,
            tol=1e-9,
            max_iter=min(n, 300),
            stop="eigenvalue",
            generator=torch.Generator().manual_seed(4),
            progress=False,
            return_eigenvectors=False,
        )
        op.release_graph()
        fresh = HessianOperator(model, token_ce, batch)
        out, secs = timed(
            lambda: lanczos(
                fresh,
                k=1,
                tol=1e-4,
                stop="eigenvalue",
                generator=torch.Generator().manual_seed(5),
                progress=False,
            ),
            device=device,
        )
        lam_max = float(out.eigenvalues[0])
        lam_err = abs(lam_max - float(ref.eigenvalues[0])) / abs(float(ref.eigenvalues[0]))
        lam_hvps, lam_secs = out.num_matvecs, secs
    return ModelResult(
        model=cfg.name,
        params=n,
        grad_ms=res["grad"].median * 1e3,
        hvp_over_grad={b: ratio[f"op:{b}"] for b in BACKENDS},
        bare_over_grad={b: ratio[f"bare:{b}"] for b in ("double-backward", "forward-over-reverse")},
        batched8_per_column_over_grad=per_col,
        lambda_max=lam_max,
        lambda_rel_error=lam_err,
        lambda_hvps=lam_hvps,
        lambda_seconds=lam_secs,
        curvlinops_over_grad=ratio.get("curvlinops"),
    )


def _curvlinops_product(model, batch, v):
    try:
        from curvlinops import HessianLinearOperator
    except ImportError:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    try:
        H = HessianLinearOperator(model, TokenCE(), params, [batch], check_deterministic=False)
    except Exception as err:  # noqa: BLE001 - a peer that does not run is reported, not fatal
        print(f"curvlinops: skipped ({type(err).__name__}: {err})")
        return None
    finally:
        model.train(was)
    if hasattr(H, "to_scipy"):  # curvlinops >= 3: a PyTorch operator, tensors in and out
        x = v.detach()
    else:  # curvlinops 1-2: a scipy LinearOperator, numpy in and out
        x = v.detach().cpu().numpy()
    return lambda: H @ x


# ------------------------------------------------------------------------------- report
def report(results: list[ModelResult]) -> str:
    lines = []
    for r in results:
        lines.append(f"\n== {r.model}: N = {r.params:,}, gradient {r.grad_ms:.2f} ms")
        lines.append("[1] HVP / gradient (operator built once, as in a solver)")
        for b, x in r.hvp_over_grad.items():
            bare = r.bare_over_grad.get(b)
            tail = f"   bare {bare:.2f}" if bare is not None else ""
            lines.append(f"    {b:22s} {x:6.2f}{tail}")
        if r.curvlinops_over_grad is not None:
            lines.append(f"    {'curvlinops':22s} {r.curvlinops_over_grad:6.2f}")
        lines.append(
            f"[2] op @ V, k = 8: per column / gradient {r.batched8_per_column_over_grad:.2f}"
        )
        if r.lambda_max is not None:
            lines.append(
                f"[3] λ_max to 1e-4: {r.lambda_max:.6g} (rel. error {r.lambda_rel_error:.1e}) "
                f"in {r.lambda_seconds:.2f} s, {r.lambda_hvps} HVPs"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[ModelResult]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds; λ_max on gpt-tiny only")
    ap.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    threads = configure_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{threads} thread(s), device {device}"
    )
    results = []
    for name in args.models:
        big = name == "gpt-1m"
        rounds = args.rounds or ((3 if big else 7) if args.quick else (7 if big else 21))
        lam = not (args.quick and big)
        t0 = time.perf_counter()
        results.append(run_model(CONFIGS[name], device, rounds, lam))
        print(f"{name}: {time.perf_counter() - t0:.1f} s")
    text = report(results)
    print(text)
    if args.json is not None:
        payload = {
            "device": str(device),
            "threads": threads,
            "torch": torch.__version__,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(payload, indent=2, default=_nan_safe))
    return results


def _nan_safe(x: object) -> object:
    return None if isinstance(x, float) and math.isnan(x) else str(x)


if __name__ == "__main__":
    main()
