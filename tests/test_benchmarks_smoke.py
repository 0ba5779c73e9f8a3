"""Smoke tests of benchmarks/: bench_curvature.py --smoke end to end, and the timing helpers."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


timing = _load("_timing")


def test_smoke_subprocess_prints_ratio_table(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_curvature.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "Ratio table (issue #2 targets" in text
    for model in ("mlp", "lenet", "resnet20"):
        assert f"{model}: HVP in a solver / gradient" in text
    assert "mlp: k=8 vmapped, per HVP / gradient" in text
    assert " PASS, " in text and " MISS, " in text

    res = json.loads(out.read_text())
    assert set(res["models"]) == {"mlp", "lenet", "resnet20"}
    for model in res["models"].values():
        ratios = model["hvp"]["ratio"]
        # Every exact back end ran and costs at least as much as a gradient... minus timer noise.
        assert {"fwd-over-rev", "db-cached", "db-uncached", "fd-central", "db-first"} <= set(ratios)
        assert all(0.2 < r < 200 for r in ratios.values()), ratios
    # The tanh MLP is smooth: central differences are accurate; ReLU nets are not (kinks).
    assert res["models"]["mlp"]["fd"]["default"] < 1e-2
    # Our Lanczos reaches the 1e-4 against the float64 eigsh reference.
    solvers = res["models"]["mlp"]["solvers"]
    assert solvers["lmax"]["ours lanczos"]["rel_error"] < 1e-4
    assert solvers["top5"]["ours lanczos"]["rel_error"] < 1e-4
    assert solvers["slq"]["ours"]["hvps"] == 100
    ref = solvers["reference"]["eigenvalues"]
    assert ref == sorted(ref, reverse=True) and len(ref) == 5


def test_run_without_peers_skips_them_cleanly(monkeypatch):
    bench = _load("bench_curvature")
    lighter = dataclasses.replace(
        bench.MODES["smoke"], batched_rounds={}, solver_sections={"mlp": ("lmax", "extras")}
    )
    monkeypatch.setitem(bench.MODES, "smoke", lighter)
    lines: list[str] = []
    threads = torch.get_num_threads()
    try:
        args = bench.parse_args(["--smoke", "--models", "mlp", "--peers", "none"])
        res = bench.run(args, log=lines.append)
    finally:
        torch.set_num_threads(threads)
    text = "\n".join(lines)
    assert all("skipped (not requested" in m for m in res["peers"].values())
    assert "note: pyhessian: skipped" in text
    assert "PyHessian" not in bench.render_table(res)  # no peer rows without peers
    lmax = res["models"]["mlp"]["solvers"]["lmax"]
    assert set(lmax) == {"ours lanczos", "ours power"}
    assert lmax["ours lanczos"]["rel_error"] < 1e-4


def test_missing_peer_is_reported_not_raised(monkeypatch):
    bench = _load("bench_curvature")
    real = bench.importlib.import_module

    def fake(name, *a, **k):
        if name == "curvlinops":
            raise ImportError("No module named 'curvlinops'")
        return real(name, *a, **k)

    monkeypatch.setattr(bench.importlib, "import_module", fake)
    peers = bench.load_peers(("curvlinops",))
    assert peers.get("curvlinops") is None
    assert "not importable" in peers.messages["curvlinops"]
    assert "skipped (not requested" in peers.messages["pyhessian"]


def test_row_verdicts():
    Row = _load("bench_curvature").Row
    assert Row("x", 1.2, 1.5).verdict() == "PASS"
    assert Row("x", 1.84, 1.5).verdict() == "MISS by 23%"
    assert Row("x", None, 1.5).verdict() == "n/a"
    assert Row("x", float("nan"), 1.5).status == "n/a"


def test_interleaved_rotates_order_and_pairs_rounds():
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    t = timing.interleaved(fns, rounds=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(x.samples) == 3 for x in t.values())
    # Median of same-round ratios: one outlier round does not move it.
    num = timing.Timing("n", (2.0, 2.0, 100.0))
    den = timing.Timing("d", (1.0, 1.0, 1.0))
    assert timing.paired_ratio(num, den) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="equally many"):
        timing.paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="rounds"):
        timing.interleaved(fns, rounds=0)
