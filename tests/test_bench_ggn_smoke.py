"""Smoke test of benchmarks/bench_ggn.py: --smoke end to end (gpt-tiny, 2 rounds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_bench_ggn_smoke_writes_ratios(tmp_path):
    out = tmp_path / "ggn.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_ggn.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = json.loads(out.read_text())
    ratios = result["ratios"]
    for row in ("ggn (ours, auto: cached autograd)", "fisher ef (ours, torch.func)"):
        assert ratios[row] > 0
    assert "| product ÷ gradient | gpt |" in proc.stdout
