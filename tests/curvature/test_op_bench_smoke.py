"""Smoke test of benchmarks/bench_models.py (tiny GPT, one round): it runs and its numbers hold."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_bench_models_quick_tiny(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_models", BENCH / "bench_models.py")
        bench = importlib.util.module_from_spec(spec)
        sys.modules["bench_models"] = bench
        spec.loader.exec_module(bench)
        out = tmp_path / "b.json"
        (res,) = bench.main(
            ["--quick", "--models", "gpt-tiny", "--rounds", "1", "--json", str(out)]
        )
    finally:
        sys.path.remove(str(BENCH))
    assert res.params > 20_000
    assert set(res.hvp_over_grad) == {
        "double-backward",
        "forward-over-reverse",
        "finite-difference",
    }
    assert all(r > 0 for r in res.hvp_over_grad.values())
    assert res.lambda_rel_error < 1e-4 and res.lambda_hvps > 1
    assert json.loads(out.read_text())["results"][0]["model"] == "gpt-tiny"
    assert "λ_max to 1e-4" in capsys.readouterr().out
