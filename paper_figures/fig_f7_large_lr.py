"""F7 -- large-LR regularization: training and test loss during an LR range test.

Super-Convergence (Smith & Topin 2017, arXiv:1708.07120) Fig. 4 and Sec. 4: in a range test on
ResNet-56 / CIFAR-10 the test loss keeps falling over a range of LRs where the training loss
already rises -- a large LR regularizes. Reads ``f7_large_lr_regularization``: runs
``seed<s>`` with ``curves.json`` (per evaluation: step, lr, train_loss, train_accuracy,
test_loss, test_accuracy, smoothed_batch_loss; train loss on a fixed training subset in eval
mode, the same weights as the test loss) and ``summary.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hessian_lr.records import read_json

from . import _style
from ._data import Claim, MissingResults, experiment_runs, fmt_num, preset, summary
from .criteria import decide

FIGURE = "F7"
NAME = "f7_large_lr"
EXPERIMENTS = ("f7_large_lr_regularization",)
PAPER = "ResNet-56, CIFAR-10, range test LR 0 → 3: test loss still falls where training loss rises"


def _load(results) -> dict[str, dict]:
    out = {}
    for run in experiment_runs(results, EXPERIMENTS[0]):
        path = run.dir / "curves.json"
        if path.exists():
            out[run.name] = read_json(path)
    if not out:
        raise MissingResults(EXPERIMENTS[0], results, "no curves.json")
    return out


def _arr(xs) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in xs], dtype=float)


def claims(results) -> list[Claim]:
    summ = summary(results, EXPERIMENTS[0])
    runs = summ.get("runs", {})
    each = "; ".join(
        f"{n}: train-loss min at LR {fmt_num(r['lr_at_min_train_loss'], 2)}, test-loss min at LR "
        f"{fmt_num(r['lr_at_min_test_loss'], 2)} (train loss there "
        f"+{fmt_num(r['train_loss_rise'], 2)}; test falls while train rises in "
        f"{fmt_num(100 * (r['falling_test_rising_train_fraction'] or 0), 2)}% of evaluation steps; "
        f"smoothed mini-batch loss min at LR {fmt_num(r.get('lr_at_min_smoothed_batch_loss'), 2)})"
        for n, r in sorted(runs.items())
    )
    # Margin per seed: how far (in LR) the test-loss minimum lies beyond the train-loss minimum.
    # One LR step of the evaluation grid is the measurement's resolution: a mean margin within it
    # is undecided whatever the test says.
    margins = [r["lr_at_min_test_loss"] - r["lr_at_min_train_loss"] for r in runs.values()]
    grid = [np.diff(_arr(c["lr"])) for c in _load(results).values()]
    step = float(np.nanmedian(np.concatenate(grid))) if grid else 0.0
    decision = decide(margins, resolution=step, unit="LR")
    return [
        Claim(
            "F7",
            "train loss rises while test loss still falls as LR grows",
            PAPER,
            f"{each}; test-loss min − train-loss min {decision.text()} (criterion: the "
            f"test-loss minimum lies at a larger LR than the train-loss minimum; evaluation grid "
            f"step {step:.2g} LR) "
            f"[{preset(results, EXPERIMENTS[0])}]",
            decision.holds,
            _why_not(runs) if decision.holds is False else "",
        )
    ]


def _why_not(runs: dict) -> str:
    """The measured reason: where each seed's test-loss minimum lies against its train-loss one."""
    parts = []
    for n, r in sorted(runs.items()):
        tr, te = r["lr_at_min_train_loss"], r["lr_at_min_test_loss"]
        where = "at the same LR as" if te == tr else ("below" if te < tr else "above")
        parts.append(
            f"{n}: test-loss minimum at LR {fmt_num(te, 2)}, {where} the train-loss minimum at "
            f"{fmt_num(tr, 2)}"
        )
    return "Measured: " + "; ".join(parts) + "."


def draw(results, out) -> list[Path]:
    data = _load(results)
    summ = summary(results, EXPERIMENTS[0])
    (claim,) = claims(results)
    fig, axes = _style.figure(1, 2, height=5.0, gridspec_kw={"width_ratios": [1.5, 1]})
    ax, ax_acc = axes[0]
    for i, (name, c) in enumerate(sorted(data.items())):
        lr = _arr(c["lr"])
        tag = f" ({name})" if len(data) > 1 else ""
        alpha = 1.0 if i == 0 else 0.45
        tr, te = _arr(c["train_loss"]), _arr(c["test_loss"])
        ax.plot(
            lr,
            tr,
            "o-",
            ms=3,
            color=_style.color("train"),
            alpha=alpha,
            label=f"training loss (eval mode, fixed subset){tag}",
        )
        ax.plot(
            lr, te, "o-", ms=3, color=_style.color("test"), alpha=alpha, label=f"test loss{tag}"
        )
        if i == 0:
            ax.plot(
                lr,
                _arr(c["smoothed_batch_loss"]),
                color=_style.color("train"),
                ls=":",
                lw=1.4,
                label="mini-batch loss (smoothed)",
            )
        r = summ.get("runs", {}).get(name, {})
        for key, col in (("lr_at_min_train_loss", "train"), ("lr_at_min_test_loss", "test")):
            if r.get(key) is not None:
                ax.axvline(r[key], color=_style.color(col), ls="--", lw=1.1, alpha=alpha)
        ax_acc.plot(
            lr,
            _arr(c["train_accuracy"]),
            "o-",
            ms=3,
            color=_style.color("train"),
            alpha=alpha,
            label=f"training{tag}",
        )
        ax_acc.plot(
            lr,
            _arr(c["test_accuracy"]),
            "o-",
            ms=3,
            color=_style.color("test"),
            alpha=alpha,
            label=f"test{tag}",
        )
    allv = np.concatenate([_arr(c[k]) for c in data.values() for k in ("train_loss", "test_loss")])
    finite = allv[np.isfinite(allv)]
    if len(finite):
        lo, hi = np.min(finite), np.percentile(finite, 90)
        ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.25 * (hi - lo))
    ax.set(
        xlabel="learning rate (rising linearly during the test)",
        ylabel="cross-entropy loss",
        title="(a) loss vs LR (dashed: minima)",
    )
    ax.legend(loc="upper left", fontsize=9)
    _style.percent(ax_acc)
    ax_acc.set(xlabel="learning rate", ylabel="accuracy", title="(b) accuracy vs LR")
    ax_acc.legend(loc="lower center", fontsize=9)
    _style.title(fig, "F7 (SC Fig. 4): large LRs regularize", preset(results, EXPERIMENTS[0]))
    _style.add_caption(
        fig,
        [f"Ours: {claim.ours}.", f"Paper: {PAPER}.", f"Claim: {claim.claim} — {claim.verdict}."],
    )
    return _style.save(fig, out, NAME)
