"""Build ``paper_figures/CLAIMS.md``: every claim of figures.md, the paper's number, ours, verdict.

Each figure module's ``claims(results)`` computes our numbers from the saved results (the ``cpu``
preset's, committed in ``results_cpu/``), the same numbers its figure prints in the caption. A
claim that does not hold is reported as not holding, with a sentence on why it might not; the
thresholds are the claims' plain reading, fixed before looking at the numbers and never tuned.
The file carries no timestamps or absolute paths, so regenerating from the same results gives an
identical file (a test checks this).

Usage: ``python -m paper_figures.claims [--results DIR] [--out FILE]`` (``python -m
paper_figures`` also rewrites it after drawing all figures).
"""

from __future__ import annotations

import argparse
import json
import traceback
from pathlib import Path

from . import FIGURES, default_results, figure_module
from ._data import Claim, MissingResults
from .criteria import PAPER_NUMBERS

__all__ = ["collect_claims", "render_claims", "write_claims", "default_gpu_results"]

CLAIMS_PATH = Path(__file__).parent / "CLAIMS.md"


def collect_claims(results: str | Path) -> list[Claim]:
    """Every figure's claims, in figure order; missing results give an undecided row."""
    out: list[Claim] = []
    for fig in FIGURES:
        try:
            out.extend(figure_module(fig).claims(results))
        except MissingResults as e:
            out.append(
                Claim(
                    figure=fig,
                    claim=_CLAIM_TEXT.get(fig, ""),
                    paper="",
                    ours=f"no results: run `{e.command.replace(str(e.results), _name(results))}`",
                    holds=None,
                    not_run=True,
                )
            )
        except Exception as e:  # noqa: BLE001 - one broken figure must not hide the others
            traceback.print_exc()
            out.append(
                Claim(
                    figure=fig,
                    claim=_CLAIM_TEXT.get(fig, ""),
                    paper="",
                    ours=f"error while reading results: {type(e).__name__}: {e}",
                    holds=None,
                )
            )
    return out


# The claims of figures.md, used for rows whose results are missing.
_CLAIM_TEXT = {
    "F1": "curves equal PyTorch's schedulers where both define them",
    "F2": "accuracy rises then turns ragged/falls; suggested max/min drawn",
    "F3": "1cycle reaches ≥ the baseline's final accuracy in a fraction of its iterations",
    "F4": "longer cycles gain, short cycles stay competitive",
    "F5": "estimates are far above the fixed LR; fixed-LR estimate spikes then collapses; CLR "
    "estimate stays high, peaks with the LR, settles late",
    "F6": "the 1cycle advantage grows as data shrinks",
    "F7": "train loss rises while test loss still falls as LR grows",
    "F8": "too much weight decay kills the effect; momentum matters little; larger batch "
    "slightly better",
    "F9": "1cycle matches or beats in ~1/7 of the epochs",
    "F10": "CLR reaches the fixed-LR accuracy in ~1/3 of the iterations",
    "F11": "SGDR reaches a given error 2–4× sooner and ends comparable or better",
    "F12": "λ_max stays lower under 1cycle / large LR; density snapshots show it",
    "F13": "Eq. 8's ratio estimate/LR sits at the momentum-noise null c(μ, s); the same-batch "
    "secant does not follow the LR",
    "F14": "Eq. 8 tracks the LR in use, not the curvature; the same-batch secant tracks the exact "
    "curvature",
    "F15": "sharpness (raw for SGD, preconditioned for Adam) rises to its stability threshold "
    "(3.8/η heavy ball, 38/η Adam) and hovers there",
    "F16": "which estimate predicts the LR that works (η_max), H1-H5 of issue 24",
    "F17": "a curvature mode within 0.5 points of the tuned reference, no LR sweep (issue 27)",
}


def _name(results: str | Path) -> str:
    return Path(results).name or str(results)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _pairs(cpu: list[Claim], gpu: list[Claim] | None) -> list[tuple[Claim, Claim | None]]:
    """Rows: each figure's cpu claims beside its gpu claims (in order; padded where one lacks)."""
    if gpu is None:
        return [(c, None) for c in cpu]
    rows: list[tuple[Claim, Claim | None]] = []
    figures = list(dict.fromkeys([c.figure for c in cpu] + [c.figure for c in gpu]))
    for fig in figures:
        a = [c for c in cpu if c.figure == fig]
        b = [c for c in gpu if c.figure == fig]
        for i in range(max(len(a), len(b))):
            left = a[i] if i < len(a) else None
            right = b[i] if i < len(b) else None
            if left is None:  # the cpu side has fewer rows (e.g. missing results): show the claim
                assert right is not None
                left = Claim(fig, right.claim, right.paper, "no results", None, not_run=True)
            rows.append((left, right))
    return rows


_VERDICT = {True: "✅ holds", False: "❌ does not hold", None: "— undecided"}


def _verdict(c: Claim | None) -> str:
    if c is None or c.not_run:
        return "· not run"
    return _VERDICT[c.holds]


def counts(side: list[Claim | None], kind: str) -> str:
    """ "a hold, b do not hold, c undecided, d not run (of n)" over the rows of one kind."""
    got = [c for c in side if c is not None and c.origin == kind]
    run = [c for c in got if not c.not_run]
    n = {v: sum(c.holds is v for c in run) for v in (True, False, None)}
    return (
        f"{n[True]} hold, {n[False]} do not hold, {n[None]} undecided, "
        f"{len(got) - len(run)} not run (of {len(got)})"
    )


#: The one decision rule behind every ✅/❌ (issue 25), printed at the top of CLAIMS.md.
DECISION_RULE = (
    "**Decision rule (every verdict).** A verdict is a test at a two-sided 5 % error rate "
    "(`paper_figures/stats.py`, `criteria.decide`). Each claim is a *margin*, ours minus the "
    "claim's threshold (> 0: as the paper says). Several seeds: a one-sample t-test of the mean "
    "per-seed margin against 0, with its 95 % CI; ✅/❌ by the sign when p < 0.05, undecided "
    "otherwise. One seed: undecided, unless the margin lies beyond the measured seed spread of a "
    "sibling study (a z-test with that s.d. taken as known; the row names the sibling, e.g. F3's "
    "per-seed 1cycle − PC margins for accuracy margins, F13's cells for Eq. 8 ratios). Where the "
    "statistic is not a mean (a correlation, a median over a run, a fraction of cells), a 95 % "
    "bootstrap CI (a moving-block bootstrap within each run for time series): ✅ when the CI "
    "lies wholly on the claim's side of its threshold, ❌ when wholly on the other, undecided "
    "when it straddles it. A margin within the measurement's grid step (an LR grid, a fraction "
    'of the run) is undecided. "· not run" marks a study without results (not counted as '
    "undecided). Rows marked (project) are the project's own findings, counted apart from the "
    "papers' claims. F13 and F14 (one seed) are decided by block-bootstrap CIs within their "
    "runs: those intervals hold the noise within a run, not the spread between seeds."
)


def _gpu_note(gpu_results: str | Path | None) -> list[str]:
    """GPU runs are not bit-reproducible (issue 25): the spread measured on identical configs
    (F3's 1cycle seed 0 and F4's cycle of the same length and seed), read from the results."""
    if gpu_results is None:
        return []
    from ._data import experiment_runs, finals
    from .fig_f3_onecycle_vs_pc import _steps, sibling_spread

    try:
        f3 = {r.name: r for r in experiment_runs(gpu_results, "f3_onecycle_vs_pc")}
        f4 = {r.name: r for r in experiment_runs(gpu_results, "f4_cycle_length")}
        a = f3["onecycle_seed0"]
        b = f4[f"onecycle_{_steps(a)}_seed0"]
    except (MissingResults, KeyError):
        return []
    x, y = finals([a])[0], finals([b])[0]
    sib = sibling_spread(gpu_results)
    spread = f" (gpu F3's per-seed margins, s.d. {sib.sd:.2g} points)" if sib else ""
    return [
        "**GPU non-determinism.** The gpu runs use cuDNN's non-deterministic kernels: two runs "
        f"of the identical gpu 1cycle config ({_steps(a)} iterations, seed 0: F3's "
        f"`{a.name}` and F4's `{b.name}`) end at {100 * x:.2f} % and {100 * y:.2f} %, "
        f"{100 * abs(x - y):.2f} points apart. One-seed gpu margins therefore carry about that "
        f"much noise beyond seed noise; the sibling spread they are judged against{spread} was "
        "measured under the same non-determinism.",
        "",
    ]


def _count_lines(cpu: list[Claim | None], gpu: list[Claim | None] | None) -> list[str]:
    out = []
    for kind, label in (("paper", "papers' claims"), ("project", "project's own findings")):
        gpu_text = counts(gpu, kind) if gpu is not None else "not run"
        out.append(f"**{label}: cpu {counts(cpu, kind)}; gpu {gpu_text}.**  ")
    out[-1] = out[-1].rstrip()
    return out


def render_claims(
    claims: list[Claim],
    results: str | Path,
    gpu_claims: list[Claim] | None = None,
    gpu_results: str | Path | None = None,
) -> str:
    """The Markdown text of CLAIMS.md (deterministic: no dates, no absolute paths).

    One row per claim with the ``cpu`` results (``results``) and, beside them, the ``gpu``
    results (``gpu_claims`` from ``gpu_results``; "not run" when there are none).
    """
    rows = _pairs(claims, gpu_claims)
    gpu_side: list[Claim | None] = [
        g if g is not None else Claim(c.figure, c.claim, c.paper, "", None, not_run=True)
        for c, g in rows
    ]

    gpu_name = _name(gpu_results) if gpu_results is not None else "results_gpu"
    models = _models_line("cpu", results)
    if gpu_results is not None:
        models += "  \n" + _models_line("gpu", gpu_results)
    lines = [
        "# The papers' claims, checked on our results",
        "",
        "Generated by `python -m paper_figures` (or `python -m paper_figures.claims`) from "
        f"`{_name(results)}/` (the `cpu` presets) and `{gpu_name}/` (the `gpu` presets); do not "
        "edit by hand. Each row: a claim the figure must show (from the project's figure list), "
        "the paper's numbers (paper scale), ours from the saved results, and the verdict. The "
        "`cpu` presets train a small BatchNorm ResNet (ResNet-8) on Fashion-MNIST, one CPU core "
        "per run; the `gpu` presets ResNet-20 on Fashion-MNIST at the paper's protocol, sized for "
        "minutes on one GPU (F9 and F10 keep LeNet-5; see `experiments/_presets.py`). A run "
        "that ended at chance level is a failed run, reported as such. The criteria are the "
        "papers' plain words and numbers, checked against the papers' own numbers (table below "
        "and `tests/experiments/test_criteria.py`); a claim that does not hold gets a reason "
        "backed by a number from our runs.",
        "",
        DECISION_RULE,
        "",
        *_gpu_note(gpu_results),
        models,
        "",
        *_count_lines([c for c, _ in rows], gpu_side if gpu_claims is not None else None),
        "",
        "| # | claim | paper | ours, cpu | cpu | ours, gpu | gpu |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, g in rows:
        g_ours = "not run" if g is None else g.ours
        kind = "" if c.origin == "paper" else " (project)"
        lines.append(
            f"| {c.figure}{kind} | {_cell(c.claim)} | "
            f"{_cell(c.paper or (g.paper if g else ''))} | {_cell(c.ours)} | {_verdict(c)} | "
            f"{_cell(g_ours)} | {_verdict(g)} |"
        )
    notes = [(c, "cpu") for c, _ in rows if c.note]
    notes += [(g, "gpu") for _, g in rows if g is not None and g.note]
    if notes:
        lines += ["", "## Notes", ""]
        for c, side in notes:
            lines.append(f"- **{c.figure}, {side}** ({c.verdict}): {' '.join(c.note.split())}")
    lines += _changes_lines(rows)
    lines += _compute_lines("cpu", results)
    if gpu_results is not None:
        lines += _compute_lines("gpu", gpu_results)
    lines += ["", "## Criteria and the papers' own numbers", ""]
    lines += ["| # | claim | source | the paper's numbers | criterion passes on them |"]
    lines += ["|---|---|---|---|---|"]
    for e in PAPER_NUMBERS:
        check = "— (no numbers)" if e["check"] is None else ("yes" if e["check"]() else "NO")
        lines.append(
            f"| {e['figure']} | {_cell(e['claim'])} | {_cell(e['source'])} | "
            f"{_cell(e['numbers'])} | {check} |"
        )
    return "\n".join(lines) + "\n"


BEFORE_PATH = Path(__file__).parent / "verdicts_before_issue25.json"


def _norm(claim: str) -> str:
    return " ".join(claim.replace(", new)", ")").replace(" (new)", "").split())


def _deciding(c: Claim) -> str:
    """The row's deciding test: ``Claim.test`` if set, else its first "margin ... (n seeds...)"
    fragment (up to the parenthesis that names the seeds and the test)."""
    if c.test:
        return c.test
    text = c.ours
    i = text.find("margin ")
    if i < 0:
        return ""
    depth, start = 0, -1
    for k in range(i, len(text)):
        if text[k] == "(":
            depth += 1
            start = k if depth == 1 else start
        elif text[k] == ")" and depth:
            depth -= 1
            if depth == 0 and "seed" in text[start:k]:
                return text[i : k + 1]
    return ""


def _changes_lines(rows: list[tuple[Claim, Claim | None]]) -> list[str]:
    """Rows whose verdict differs from the one recorded before issue 25's decision rule."""
    if not BEFORE_PATH.exists():
        return []
    before = json.loads(BEFORE_PATH.read_text(encoding="utf-8"))
    old = {(r["figure"], _norm(r["claim"])): r for r in before["rows"]}
    figures = {r["figure"] for r in before["rows"]}
    out = []
    for c, g in rows:
        r = old.get((c.figure, _norm(c.claim)))
        if r is None and c.figure not in figures:  # a study added after issue 25
            continue
        for side, now in (("cpu", c), ("gpu", g)):
            was = r[side] if r else "—"
            verdict = "not run" if now is None else now.verdict
            if was == verdict or (was in ("undecided", "—") and verdict == "not run"):
                continue
            why = _deciding(now) if now is not None else ""
            out.append(
                f"- **{c.figure}, {side}**: {_norm(c.claim)} — {was} → **{verdict}**"
                + (f" ({why})" if why else "")
            )
    if not out:
        return []
    return [
        "",
        "## Verdicts changed by issue 25",
        "",
        f'Against `{BEFORE_PATH.name}` ({before["source"]}); "—" marks a row that did not '
        'exist. A gpu row that was "undecided" for lack of results and is now "not run" '
        "is not listed.",
        "",
        *out,
    ]


def _compute_lines(side: str, results: str | Path) -> list[str]:
    """What the results cost: runs trained and their summed wall time, per figure.

    Read from each run's ``meta.json`` (``seconds``); a run copied from an identical run of
    another experiment (``copied_from``) cost nothing and is counted apart. cpu runs use one
    torch thread each (two side by side on the 2-core machine); gpu runs share one GPU.
    """
    rows, total, total_runs = [], 0.0, 0
    for fig in FIGURES:
        trained = copied = 0
        seconds = 0.0
        for exp in getattr(figure_module(fig), "EXPERIMENTS", ()):
            for meta in sorted((Path(results) / exp).glob("*/meta.json")):
                info = json.loads(meta.read_text(encoding="utf-8"))
                if info.get("copied_from"):
                    copied += 1
                elif info.get("seconds") is not None:
                    trained += 1
                    seconds += float(info["seconds"])
        if trained or copied:
            twins = f" (+{copied} copied)" if copied else ""
            rows.append(f"| {fig} | {trained}{twins} | {seconds / 3600:.2f} |")
            total += seconds
            total_runs += trained
    if not rows:
        return []
    unit = "CPU-hours (one thread per run)" if side == "cpu" else "hours (processes on one GPU)"
    return [
        "",
        f"## Compute, {side} results",
        "",
        f"Runs trained and their summed wall time in {unit}, from each run's `meta.json`.",
        "",
        f"| # | runs | {'CPU-hours' if side == 'cpu' else 'hours'} |",
        "|---|---|---|",
        *rows,
        f"| all | {total_runs} | {total / 3600:.2f} |",
    ]


def _models_line(side: str, results: str | Path) -> str:
    """Which model produced each figure's results (read from experiment_config.json)."""
    by_model: dict[str, list[str]] = {}
    for fig in FIGURES:
        for exp in getattr(figure_module(fig), "EXPERIMENTS", ()):
            path = Path(results) / exp / "experiment_config.json"
            if not path.exists():
                continue
            cfg = json.loads(path.read_text(encoding="utf-8")).get("config") or {}
            model = str(cfg.get("model", "?"))
            if cfg.get("width"):
                model += f" (width {cfg['width']})"
            if fig not in by_model.setdefault(model, []):
                by_model[model].append(fig)
    shown = "; ".join(f"{m}: {', '.join(figs)}" for m, figs in sorted(by_model.items()))
    return f"Models in the {side} results: {shown or 'none'}."


def default_gpu_results() -> Path | None:
    """``results_gpu`` beside ``results_cpu`` (the committed gpu-preset results), if present."""
    path = default_results().parent / "results_gpu"
    return path if path.is_dir() else None


def write_claims(
    results: str | Path,
    path: str | Path = CLAIMS_PATH,
    *,
    gpu_results: str | Path | None = None,
) -> Path:
    """Compute all claims from ``results`` (and ``gpu_results``) and write them to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gpu = collect_claims(gpu_results) if gpu_results is not None else None
    text = render_claims(collect_claims(results), results, gpu, gpu_results)
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figures.claims", description=__doc__)
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--gpu-results", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=CLAIMS_PATH)
    args = parser.parse_args(argv)
    gpu = args.gpu_results if args.gpu_results is not None else default_gpu_results()
    path = write_claims(args.results or default_results(), args.out, gpu_results=gpu)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
