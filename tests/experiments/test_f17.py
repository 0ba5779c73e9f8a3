"""F17 end to end on a tiny config: units, the reference's LR choice, every method, the rule."""

import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "experiments")]

import f17_no_lr_sweep as f17  # noqa: E402
from f17_methods import peer_versions  # noqa: E402

from paper_figures import figure_module  # noqa: E402
from paper_figures.stats import t_test  # noqa: E402

TINY = replace(
    f17.PRESETS["smoke"], tasks=("mlp",), steps=8, grid_size=6, finder_steps=12, test_size=32
)


def test_units_put_every_sweep_first_and_skip_the_reference_seed0():
    names = list(f17.units(TINY))
    sweeps = [n for n in names if n.startswith("sweep__")]
    assert names[: len(sweeps)] == sweeps and len(sweeps) == 6 * 2  # 6 LRs × 2 optimizers
    assert "cosine__mlp_sgd_seed0" not in names and "cosine__mlp_sgd_seed1" in names
    assert f17.grid(TINY, "sgd") == pytest.approx([0.005 * 2**i for i in range(6)])


def test_pipeline_end_to_end(tmp_path):
    out = str(tmp_path)
    records = {n: f17.run_unit(TINY, n, out=out, device="cpu") for n in f17.units(TINY)}
    lr, unit = f17.best_lr(TINY, "mlp", "sgd", out)
    sweep = {r["lr"]: r["metric"] for n, r in records.items() if n.startswith("sweep__mlp_sgd")}
    assert sweep[lr] == max(v for v in sweep.values() if math.isfinite(v))
    assert records["cosine__mlp_sgd_seed1"]["lr"] == lr and unit.startswith("sweep__mlp_sgd")
    stab = records["stability__mlp_sgd_seed1"]
    assert stab["overhead"]["calls"] == TINY.steps // TINY.measure_every
    assert stab["overhead"]["hvps"] > 0 and stab["versions"] == peer_versions()
    assert records["find_onecycle__mlp_adamw_seed0"]["finder"]["num_steps"] > 0
    assert records["dog__mlp_adamw_seed0"]["status"] == "skipped"  # an SGD method
    for m in ("prodigy", "dadapt", "dog", "schedulefree"):
        r = records[f"{m}__mlp_sgd_seed0"]
        if peer_versions()[f17.PEERS_DIST[m]] is None:
            assert r["status"] == "skipped" and "pip install" in r["reason"]
        else:
            assert r["status"] == "finished" and len(r["lrs"]) == TINY.steps // TINY.log_every
    again = f17.run_unit(TINY, "stability__mlp_sgd_seed1", out=out, device="cpu")
    assert again == stab  # resumable: a finished unit is read, not rerun
    fig = figure_module("F17")
    rows = fig.claims(out)
    decided = [c for c in rows if "`stability`" in c.claim and "mlp sgd" in c.claim][0]
    d = fig.deltas(fig.load(out), "mlp", "sgd", "stability")
    t = t_test(d)
    inside = -0.5 <= t.low and t.high <= 0.5
    outside = t.high < -0.5 or t.low > 0.5
    assert decided.holds == (True if inside else False if outside else None)
    assert fig.draw(out, tmp_path / "fig")[0].exists()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.1, 0.2, 0.15], True),
        ([-2.0, -2.2, -2.1], False),
        ([0.0, 3.0, -3.0], None),
        ([1.0], None),
    ],
)
def test_pre_registered_rule(values, expected):
    assert figure_module("F17").verdict(values, 0.5)[0] is expected
