"""Paper figures: every figure script draws from `smoke` results; CLAIMS.md regenerates identically.

The smoke results are produced once per session by the experiment scripts themselves
(``experiments/<name>.py --preset smoke``, two subprocesses at a time) into a temporary folder;
set ``HESSIAN_LR_SMOKE_RESULTS=DIR`` to reuse a folder that already holds them.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import paper_figures  # noqa: E402
from paper_figures import FIGURES, figure_module  # noqa: E402
from paper_figures.__main__ import main as figures_main  # noqa: E402
from paper_figures.claims import collect_claims, render_claims  # noqa: E402


def _experiments() -> list[str]:
    """Experiment names the figures read (F1 reads none), in figure order, deduplicated."""
    names: list[str] = []
    for fig in FIGURES:
        for exp in figure_module(fig).EXPERIMENTS:
            if exp not in names:
                names.append(exp)
    return names


def _run_smoke(exp: str, out: Path) -> tuple[str, int, str]:
    script = REPO / "experiments" / f"{exp}.py"
    if not script.exists():
        return exp, -1, f"{script} does not exist"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script), "--preset", "smoke", "--out", str(out), "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return exp, proc.returncode, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, str]]]:
    """(results folder with every experiment's smoke results, {experiment: (rc, log)})."""
    given = os.environ.get("HESSIAN_LR_SMOKE_RESULTS")
    if given:
        return Path(given), {}
    out = tmp_path_factory.mktemp("smoke_results")
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = list(pool.map(lambda e: _run_smoke(e, out), _experiments()))
    return out, {exp: (rc, log) for exp, rc, log in done}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
@pytest.mark.parametrize("fig", list(FIGURES))
def test_figure_draws_from_smoke_results(fig, smoke_results, tmp_path):
    results, logs = smoke_results
    mod = figure_module(fig)
    for exp in mod.EXPERIMENTS:
        rc, log = logs.get(exp, (0, ""))
        if rc == -1:
            pytest.skip(log)
        assert rc == 0, f"experiments/{exp}.py --preset smoke failed:\n{log}"
    paths = mod.draw(results, tmp_path)
    png = tmp_path / f"{mod.NAME}.png"
    pdf = tmp_path / f"{mod.NAME}.pdf"
    assert {png, pdf} <= set(paths)  # a figure may draw variants beside its main PNG + PDF
    width, height = _png_size(png)
    assert width >= 800 and height >= 300, (width, height)  # readable at README width
    assert png.stat().st_size > 20_000 and pdf.stat().st_size > 5_000
    claims = mod.claims(results)
    assert claims and all(c.figure == fig for c in claims)
    for c in claims:
        assert c.holds in (True, False, None)
        assert c.ours and c.claim
        if c.holds is False:
            assert c.note, f"{fig}: a claim that does not hold needs a reason"


@pytest.mark.slow
def test_claims_render_deterministically_from_smoke_results(smoke_results, tmp_path):
    results, _ = smoke_results
    first = render_claims(collect_claims(results), results)
    second = render_claims(collect_claims(results), results)
    assert first == second
    table = first.split("\n## ")[0]  # the claims table (notes, compute, criteria follow)
    assert table.count("\n| F") == len(collect_claims(results))
    assert "| yes |" in first and "| NO |" not in first  # every criterion passes on the papers
    for fig in FIGURES:  # a study of the project's own (F17) has only "(project)" rows
        assert f"| {fig} |" in first or f"| {fig} (project) |" in first
    assert "## Compute, cpu results" in first  # smoke runs have meta.json seconds


def test_compute_table_sums_run_seconds_and_counts_copies_apart(tmp_path):
    from hessian_lr.records import write_json_atomic
    from paper_figures.claims import _compute_lines

    for run, meta in {
        "onecycle_seed0": {"seconds": 1800.0},
        "pc_seed0": {"seconds": 5400.0},
        "pc_same_seed0": {"seconds": 99.0, "copied_from": "elsewhere"},
        "running_seed1": {"status": "running"},  # no seconds yet: not counted
    }.items():
        write_json_atomic(tmp_path / "f3_onecycle_vs_pc" / run / "meta.json", meta)
    write_json_atomic(tmp_path / "f8_sweeps" / "base_seed0" / "meta.json", {"seconds": 360.0})
    lines = _compute_lines("cpu", tmp_path)
    assert "| F3 | 2 (+1 copied) | 2.00 |" in lines
    assert "| F8 | 1 | 0.10 |" in lines
    assert lines[-1] == "| all | 3 | 2.10 |"
    assert _compute_lines("cpu", tmp_path / "nothing") == []


def test_f1_schedules_equal_torch():
    """F1's claim is a real comparison: our schedules vs torch.optim.lr_scheduler, per batch."""
    mod = figure_module("F1")
    diffs = mod._data()["diff"]
    assert len(diffs) == 12
    assert max(diffs.values()) <= 1e-12, diffs
    (claim,) = mod.claims(None)
    assert claim.holds is True


def test_missing_results_name_the_command(tmp_path, capsys):
    rc = figures_main(["--results", str(tmp_path / "nothing"), "--out", str(tmp_path), "F3", "F5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "python experiments/f3_onecycle_vs_pc.py --preset cpu" in text
    assert "python experiments/f5_lr_estimates.py --preset cpu" in text
    assert not list(tmp_path.glob("*.png"))


def test_a_figure_whose_results_are_gone_is_removed_not_left_stale(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("f7_large_lr.png", "f7_large_lr.pdf", "f1_schedules.png", "f10_clr_vs_fixed.png"):
        (out / name).write_bytes(b"old")
    args = ["--results", str(tmp_path / "nothing"), "--out", str(out), "F7", "--no-claims"]
    rc = figures_main(args)
    assert rc == 0 and "removed the old f7_large_lr.pdf, f7_large_lr.png" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["f10_clr_vs_fixed.png", "f1_schedules.png"]


def test_failure_other_than_missing_results_gives_nonzero_exit(tmp_path, capsys):
    bad = tmp_path / "results" / "f3_onecycle_vs_pc" / "onecycle_seed0"
    bad.mkdir(parents=True)
    (bad / "meta.json").write_text('{"status": "finished"}')
    (bad / "records.jsonl").write_text('{"step": 0, "lr": "not a number"}\n')
    pc = bad.parent / "pc_seed0"
    pc.mkdir()
    (pc / "meta.json").write_text("{broken json")
    rc = figures_main(["--results", str(tmp_path / "results"), "--out", str(tmp_path), "F3"])
    assert rc == 1
    assert "F3: FAILED" in capsys.readouterr().out


def test_unknown_figure_is_an_error():
    with pytest.raises(SystemExit):
        figures_main(["F99"])


def test_committed_claims_regenerate_identically(tmp_path):
    """CLAIMS.md is a pure function of the committed cpu (and gpu, if any) results."""
    results = REPO / "results_cpu"
    gpu = REPO / "results_gpu"
    committed = Path(paper_figures.__file__).parent / "CLAIMS.md"
    if not results.is_dir() or not committed.exists():
        pytest.skip("no committed results_cpu/ and CLAIMS.md")
    from paper_figures.claims import write_claims

    fresh = write_claims(results, tmp_path / "CLAIMS.md", gpu_results=gpu if gpu.is_dir() else None)
    assert fresh.read_text(encoding="utf-8") == committed.read_text(encoding="utf-8")
