"""F17 (beyond the papers, issue 27): training without an LR sweep.

Reads ``<results>/f17_no_lr_sweep/*/result.json`` (``experiments/f17_no_lr_sweep.py``). Draws
(a) the table of Δ = metric − tuned reference per task × optimizer × method (mean over seeds,
95 % t CI) and (b...) the LR trajectory each method chose on seed ``seeds[0]``.

Pre-registered decision rule (fixed before any F17 result existed; do not move it): per task ×
optimizer × curvature mode, Δ_s = metric(mode, seed s) − metric(reference, seed s) paired by
seed; mean over the seeds with a 95 % t interval (df = n − 1, ``stats.t_test``); the row
*holds* iff the CI lies inside ±``MARGIN`` (0.5 accuracy points; 0.05 nats for the GPT's test
loss, where lower is better), *does not hold* iff it lies wholly outside, *undecided*
otherwise or with fewer than 2 paired seeds. The peers get one informational row per task ×
optimizer (their Δ means); overhead is reported, not decided.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import _style
from ._data import Claim, MissingResults, fmt_num, preset
from .stats import t_test

FIGURE = "F17"
NAME = "fig_f17_no_lr_sweep"
EXPERIMENTS = ("f17_no_lr_sweep",)
MARGIN = {"accuracy": 0.5, "loss": 0.05}  # pre-registered; the experiment's MARGIN
CURVATURE = ("stability", "update", "find_onecycle")
PEERS = ("prodigy", "dadapt", "dog", "schedulefree")
ISSUE = "not in the papers (issue 27)"


def load(results) -> list[dict]:
    """Every finished unit's record."""
    folder = Path(results) / EXPERIMENTS[0]
    files = sorted(folder.glob("*/result.json"))
    if not files:
        raise MissingResults(EXPERIMENTS[0], results, "no finished unit")
    return [json.loads(f.read_text()) | {"unit": f.parent.name} for f in files]


def reference(runs: list[dict], task: str, opt: str) -> dict[int, dict]:
    """``{seed: record}`` of the tuned reference: the best sweep LR and its reruns."""
    sweep = [r for r in runs if r["unit"].startswith(f"sweep__{task}_{opt}_")]
    if not sweep:
        return {}
    sign = 1.0 if sweep[0]["kind"] == "accuracy" else -1.0
    finite = [r for r in sweep if r["metric"] is not None and math.isfinite(r["metric"])]
    if not finite:
        return {}
    best = max(finite, key=lambda r: sign * r["metric"])
    out = {best["seed"]: best}
    for r in runs:
        if r["unit"].startswith(f"cosine__{task}_{opt}_seed"):
            out[r["seed"]] = r
    return out


def deltas(runs: list[dict], task: str, opt: str, method: str) -> list[float]:
    """Δ_s paired by seed (a diverged run counts as the worst outcome: NaN is dropped)."""
    ref = reference(runs, task, opt)
    out = []
    for r in runs:
        if r["unit"].startswith(f"{method}__{task}_{opt}_seed") and r["seed"] in ref:
            d = (r["metric"] if r["metric"] is not None else math.nan) - ref[r["seed"]]["metric"]
            out.append(d)
    return out


def verdict(values: list[float], margin: float) -> tuple[bool | None, str]:
    """The pre-registered rule: (holds, "mean [low, high]")."""
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return None, f"{len(finite)} paired seed(s)"
    t = t_test(finite)
    text = f"Δ {fmt_num(t.estimate, 3)} [{fmt_num(t.low, 3)}, {fmt_num(t.high, 3)}] (n={t.n})"
    if -margin <= t.low and t.high <= margin:
        return True, text
    if t.high < -margin or t.low > margin:
        return False, text
    return None, text


def _cells(runs: list[dict]) -> list[tuple[str, str, str]]:
    seen = {(r["task"], r["optimizer"], r["kind"]) for r in runs}
    return sorted(seen)


def claims(results) -> list[Claim]:
    """One row per task × optimizer × curvature mode (decided) and per task × optimizer (peers)."""
    runs = load(results)
    tag = f"[{preset(results, EXPERIMENTS[0])}]"
    out = []
    for task, opt, kind in _cells(runs):
        margin = MARGIN[kind]
        unit = "points" if kind == "accuracy" else "nats"
        for m in CURVATURE:
            holds, text = verdict(deltas(runs, task, opt, m), margin)
            out.append(
                Claim(
                    FIGURE,
                    f"{task} {opt}: the curvature mode `{m}` ends within {margin} {unit} of the "
                    f"tuned constant+cosine reference ({'test accuracy' if kind == 'accuracy' else 'test loss'})",  # noqa: E501
                    ISSUE,
                    f"{text} {tag}",
                    holds,
                    "Pre-registered: 95 % t CI of the seed-paired Δ inside ±margin holds, "
                    "wholly outside fails, else undecided.",
                    test="one-sample t interval of the paired differences",
                )
            )
        peers = [
            f"{m} {fmt_num(sum(d) / len(d), 3)}"
            for m in PEERS
            if (d := [x for x in deltas(runs, task, opt, m) if math.isfinite(x)])
        ]
        out.append(
            Claim(
                FIGURE,
                f"{task} {opt}: the parameter-free peers' mean Δ against the tuned reference",
                ISSUE,
                f"{'; '.join(peers) or 'no peer runs'} {tag}",
                None,
                "Informational (not decided).",
            )
        )
    return out


def _table(ax, rows: list[Claim]) -> None:
    ax.axis("off")
    text = [f"{c.claim.split(':')[0]} {c.claim.split('`')[1]}: {c.ours} → {c.verdict}"
            for c in rows if "`" in c.claim]  # fmt: skip
    ax.text(0, 1, "\n".join(text), va="top", ha="left", fontsize=7, family="monospace")
    ax.set_title("(a) Δ vs tuned reference (mean [95 % CI])", loc="left")


def _trajectories(ax, runs: list[dict], task: str, opt: str, letter: str) -> None:
    seed0 = min(r["seed"] for r in runs)
    methods = ("cosine", *CURVATURE, *PEERS)
    ref = reference(runs, task, opt).get(seed0)
    colors = _style.sequential(len(methods), "tab10")
    for i, m in enumerate(methods):
        rs = [r for r in runs if r["unit"] == f"{m}__{task}_{opt}_seed{seed0}"]
        r = ref if m == "cosine" else (rs[0] if rs else None)
        if r is None or not r.get("lrs"):
            continue
        steps = [j * r["log_every"] for j in range(len(r["lrs"]))]
        lrs = [max(v, 1e-12) for v in r["lrs"]]
        style = "-" if m in ("cosine", *CURVATURE) else "--"
        ax.plot(steps, lrs, style, label=m, color=colors[i], lw=1.4 if style == "-" else 1.0)
    ax.set_yscale("log")
    ax.set_title(f"({letter}) {task} {opt}: LR chosen (seed {seed0})", loc="left")
    ax.set_xlabel("step")
    ax.set_ylabel("LR")


def draw(results, out) -> list[Path]:
    """The Δ table and one LR-trajectory panel per task × optimizer."""
    runs = load(results)
    cells = _cells(runs)
    rows = claims(results)
    ncols = 2
    nrows = 1 + math.ceil(len(cells) / ncols)
    fig, axes = _style.figure(nrows, ncols, height=3.2 * nrows)
    gs = axes[0][0].get_gridspec()
    for ax in axes[0]:
        ax.remove()
    _table(fig.add_subplot(gs[0, :]), rows)
    letters = iter("bcdefghijklmnop")
    flat = [ax for row in axes[1:] for ax in row]
    for ax, (task, opt, _) in zip(flat, cells):
        _trajectories(ax, runs, task, opt, next(letters))
    for ax in flat[len(cells) :]:
        ax.axis("off")
    if flat and cells:
        flat[0].legend(fontsize=7, ncol=2)
    _style.title(fig, "F17 (beyond the papers): choosing an LR without a sweep",
                 preset(results, EXPERIMENTS[0]))  # fmt: skip
    return _style.save(fig, out, NAME)
