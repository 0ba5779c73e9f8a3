"""``python -m paper_figures [--results DIR] [--out DIR] [--no-claims] [F1 F3 F5 ...]``.

Redraws all figures (or the ones named) from saved results as PNG + PDF, prints each caption,
and rewrites ``paper_figures/CLAIMS.md`` when all figures are drawn from the default location.
A figure whose results are missing prints the experiment command that produces them and the
others go on; the exit code is non-zero only if a requested figure failed for another reason.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from . import FIGURES, MissingResults, default_results, figure_module


def _stale_outputs(name: str, dest: Path) -> list[Path]:
    """The PNG/PDF files an earlier run drew for figure ``name`` in ``dest``."""
    stem = figure_module(name).__name__.rsplit(".", 1)[-1].removeprefix("fig_")
    return sorted(p for p in Path(dest).glob(f"{stem}*") if p.suffix in (".png", ".pdf"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m paper_figures",
        description="Redraw the papers' figures F1-F15 from saved results (PNG + PDF).",
    )
    parser.add_argument(
        "figures",
        nargs="*",
        metavar="FIG",
        help=f"figures to draw (default all: {' '.join(FIGURES)})",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results folder (default: results_cpu if it exists, else results)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "out", help="output folder"
    )
    parser.add_argument(
        "--claims",
        type=Path,
        default=None,
        help="also write the claims table here (default: paper_figures/CLAIMS.md when all "
        "figures are drawn; pass --no-claims to skip)",
    )
    parser.add_argument("--no-claims", action="store_true", help="do not write CLAIMS.md")
    parser.add_argument(
        "--gpu-results",
        type=Path,
        default=None,
        help="gpu-preset results, drawn into <out>/gpu and put beside the cpu ones in CLAIMS.md "
        "(default: results_gpu if it exists and --results is not given)",
    )
    args = parser.parse_args(argv)
    results = args.results if args.results is not None else default_results()
    gpu_results = args.gpu_results
    if gpu_results is None and args.results is None:
        from .claims import default_gpu_results

        gpu_results = default_gpu_results()
    names = [f.upper() for f in args.figures] or list(FIGURES)
    unknown = [f for f in names if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {' '.join(unknown)}; known: {' '.join(FIGURES)}")
    print(f"results: {results}  ->  {args.out}", flush=True)
    failed, missing = [], []
    jobs = [(name, results, args.out) for name in names]
    if gpu_results is not None:
        print(f"gpu results: {gpu_results}  ->  {args.out / 'gpu'}", flush=True)
        jobs += [(name, gpu_results, args.out / "gpu") for name in names if name != "F1"]
    for name, source, dest in jobs:
        t0 = time.perf_counter()
        try:
            mod = figure_module(name)
            paths = mod.draw(source, dest)
        except MissingResults as e:
            missing.append(name)
            stale = _stale_outputs(name, dest)
            for path in stale:  # a figure whose results are gone must not stay behind
                path.unlink()
            note = f" (removed the old {', '.join(p.name for p in stale)})" if stale else ""
            print(f"{name}: skipped -- {e}{note}", flush=True)
            continue
        except Exception:  # noqa: BLE001 - report and go on with the other figures
            failed.append(name)
            print(f"{name}: FAILED", flush=True)
            traceback.print_exc()
            continue
        shown = ", ".join(str(p) for p in paths)
        print(f"{name}: {shown} ({time.perf_counter() - t0:.1f}s)", flush=True)
    claims_path = args.claims
    if claims_path is None and not args.no_claims and not args.figures:
        claims_path = Path(__file__).parent / "CLAIMS.md"
    if claims_path is not None and not args.no_claims:
        from .claims import write_claims

        write_claims(results, claims_path, gpu_results=gpu_results)
        print(f"claims: {claims_path}", flush=True)
    if missing:
        print(f"missing results for {' '.join(missing)} (commands above)", flush=True)
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
