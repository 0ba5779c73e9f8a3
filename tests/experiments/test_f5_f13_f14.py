"""The secant studies F5, F13, F14: the instrumented arm, its statistics, scripts and figures.

Fast tier: the arm's recorded numbers against independent recomputations (Eq. 8 in the paper's
convention, the same-batch secant, the exact-HVP probe against a dense float64 Hessian built with
``jacfwd(grad)``), interruption + resume equals an uninterrupted run, the correlation and slope
helpers on synthetic data with known answers. Slow tier: each script's ``smoke`` preset as a
user runs it, then its figure and claims.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _secant_lab import ArmSpec, StopArm, _batch_indices, _data, run_arm  # noqa: E402
from _secant_stats import corr_tables, ema, pooled_corr, window_table  # noqa: E402

from hessian_lr.lr.noise import noise_null  # noqa: E402
from hessian_lr.training.models import build_model  # noqa: E402


def _spec(**kw) -> ArmSpec:
    base = dict(
        name="t",
        schedule={"type": "Constant", "base_lr": 0.05},
        steps=6,
        dataset="digits",
        model="logreg",
        batch_size=32,
        momentum=0.0,
        weight_decay=0.0,
        spacings=(1, 2),
        probe_every=0,
        eval_size=0,
        checkpoint_seconds=1e9,
    )
    base.update(kw)
    return ArmSpec(**base)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()


def _replay(spec: ArmSpec, steps: int):
    """Independent plain-SGD replay: iterates θ_0..θ_steps and same-batch gradient pairs."""
    train, _ = _data(spec, torch.device("cpu"))
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, num_classes=10, in_channels=1, input_size=train.input_size)
    lr = spec.schedule["base_lr"]
    thetas, pairs = [_flat(model)], []
    for t in range(steps):
        idx = _batch_indices(len(train), spec.batch_size, spec.seed, t, "cpu")
        x, y = train.x[idx], train.y[idx]

        def g_at(m, x=x, y=y):
            m.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            return torch.cat([p.grad.reshape(-1) for p in m.parameters()]).double()

        g0 = g_at(model)
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        pairs.append((g0, g_at(model)))
        thetas.append(_flat(model))
    return thetas, pairs


def test_arm_records_match_independent_recomputation(tmp_path):
    spec = _spec()
    arm = run_arm(spec, tmp_path, "t")
    assert arm["status"] == "finished" and arm["steps_done"] == 6
    thetas, pairs = _replay(spec, 6)
    eps = 0.05
    for k, (t, ratio) in enumerate(zip(arm["secant"]["1"]["step"], arm["secant"]["1"]["ratio"])):
        a, b, c = thetas[t], thetas[t + 1], thetas[t + 2]
        ref = float((b - a).abs().sum() / (2 * b - a - c).abs().sum())
        assert ratio == pytest.approx(ref, rel=1e-4), k
    # spacing 2 (paper's convention: single-step ε, iterates 2 apart)
    t = arm["secant"]["2"]["step"][0]
    a, b, c = thetas[t], thetas[t + 2], thetas[t + 4]
    ref = float((b - a).abs().sum() / (2 * b - a - c).abs().sum())
    assert arm["secant"]["2"]["ratio"][0] == pytest.approx(ref, rel=1e-4)
    assert len(arm["secant"]["1"]["ratio"]) == 5 and len(arm["secant"]["2"]["ratio"]) == 2
    for t, ratio in zip(arm["same_batch"]["step"], arm["same_batch"]["ratio"]):
        g0, g1 = pairs[t]
        ref = float((thetas[t + 1] - thetas[t]).abs().sum() / (g1 - g0).abs().sum()) / eps
        assert ratio == pytest.approx(ref, rel=1e-4)
    assert arm["null"] == {"1": noise_null(0.0, 1), "2": noise_null(0.0, 2)}


def test_probe_matches_dense_hessian(tmp_path):
    spec = _spec(
        steps=2,
        probe_every=2,
        probe_batch=40,
        lanczos_tol=1e-8,
        lanczos_max_iter=300,
        same_batch=False,
        bn_modes=("eval",),
    )
    arm = run_arm(spec, tmp_path, "t")
    _, test = _data(spec, torch.device("cpu"))
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(12345))[:40]
    x, y = test.x[idx].double(), test.y[idx]
    torch.manual_seed(spec.seed)
    model = build_model("logreg", num_classes=10, in_channels=1, input_size=8).double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def loss(vec):
        parts = dict(zip(names, (v.reshape(s) for v, s in zip(vec.split(sizes), shapes))))
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    g = grad(loss)(theta)
    h = jacfwd(grad(loss))(theta)
    assert torch.allclose(h, h.T, atol=1e-12)
    hg = h @ g
    probes = arm["probes"]
    assert probes["step"] == [0, 2]
    ev = probes["eval"]
    assert ev["secant_hvp"][0] == pytest.approx(float(g.abs().sum() / hg.abs().sum()), rel=1e-4)
    assert ev["quadratic"][0] == pytest.approx(float(g @ g / (g @ hg)), rel=1e-4)
    lam = float(np.linalg.eigvalsh(h.numpy()).max())
    assert ev["lambda_max"][0] == pytest.approx(lam, rel=1e-4)
    assert ev["newton"][0] == pytest.approx(1 / lam, rel=1e-4)


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    spec = _spec(
        model="resnet8",
        model_kwargs={"width": 2},
        steps=8,
        momentum=0.9,
        weight_decay=1e-4,
        probe_every=4,
        probe_batch=16,
        lanczos_max_iter=5,
        bn_modes=("train", "eval"),
        same_batch_every=2,
    )
    ref = run_arm(spec, tmp_path / "a", "t")
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] == 5

    with pytest.raises(StopArm):
        run_arm(spec, tmp_path / "b", "t", stop=stop)
    folder = tmp_path / "b" / "t" / "t"
    assert (folder / "checkpoint.pt").exists()
    assert '"interrupted"' in (folder / "meta.json").read_text()
    res = run_arm(spec, tmp_path / "b", "t")
    assert not (folder / "checkpoint.pt").exists()
    for key in ("lr", "loss", "secant", "same_batch", "probes", "final_test_accuracy"):
        assert res[key] == ref[key], key
    # A finished arm is returned as is, not retrained.
    assert run_arm(spec, tmp_path / "b", "t", stop=lambda: True)["loss"] == ref["loss"]


def test_ema_is_the_papers():
    assert ema([1.0, 1.0]) == pytest.approx([0.19, 0.271])  # 0.1*1 + 0.9*0.1, then again
    assert ema([float("nan"), 2.0]) == pytest.approx([0.1, 0.29])


def _synthetic_arm(n_steps, probe_every, lr_fn, est_fn, curv_fn):
    """An arm record whose estimates are known functions of the LR and of a 'curvature'."""
    lrs = [lr_fn(t) for t in range(n_steps)]
    steps = list(range(n_steps))
    probes = list(range(0, n_steps + 1, probe_every))
    return {
        "lr": lrs,
        "secant": {"1": {"step": steps, "ratio": [est_fn(t) / lrs[t] for t in steps]}},
        "same_batch": {"step": steps, "ratio": [curv_fn(t) / lrs[t] for t in steps]},
        "probes": {
            "step": probes,
            "lr": [lr_fn(min(t, n_steps - 1)) for t in probes],
            "train": {"secant_hvp": [curv_fn(t) for t in probes]},
        },
    }


def test_window_table_and_partial_correlation():
    lr = lambda t: 0.1 * (1 + 0.9 * math.sin(t / 15))  # noqa: E731
    curv = lambda t: 1.0 + 0.5 * math.cos(t / 60)  # noqa: E731 - independent of the LR
    arm = _synthetic_arm(400, 10, lr, lambda t: 2.236 * lr(t), curv)
    table = window_table(arm, (1,))
    assert table["step"] == list(range(10, 401, 10))
    # the geometric mean of a constant ratio × LR over a window is ratio × geo-mean LR
    assert np.allclose(np.asarray(table["secant_s1"]) / np.asarray(table["lr"]), 2.236)
    corr = corr_tables(table)
    i = corr["names"].index("secant_s1")
    assert corr["with_lr"]["secant_s1"] == pytest.approx(1.0, abs=1e-9)
    # the LR explains the secant exactly: its residual is ~0, so its partial correlations are
    # undefined (nan), while same-batch vs exact (both the curvature) stay near 1
    assert math.isnan(corr["partial"][i][corr["names"].index("same_batch")])
    j, k = corr["names"].index("same_batch"), corr["names"].index("sum|g|/sum|Hg| [train]")
    assert corr["partial"][j][k] > 0.9
    pooled = pooled_corr(
        [table, window_table(_synthetic_arm(200, 10, lambda t: 0.1, lambda t: 0.2236, curv), (1,))]
    )
    assert pooled["n"] == 60 and pooled["partial"][j][k] > 0.9


def test_f13_slope_with_group_effects():
    import f13_noise_null as f13

    rows = [(g, lr, off * lr**0.7) for g, off in (("a", 1.0), ("b", 5.0)) for lr in (0.01, 0.1, 1)]
    assert f13._slope(rows) == pytest.approx(0.7, abs=1e-12)


def test_presets_and_plans():
    import f5_lr_estimates as f5
    import f13_noise_null as f13
    import f14_what_tracks as f14

    for mod in (f5, f13, f14):
        assert {"paper", "gpu", "cpu", "smoke"} <= set(mod.PRESETS)
        assert mod.RESUMABLE
        for preset in ("paper", "gpu", "cpu", "smoke"):
            units = mod.plan(mod.PRESETS[preset])
            assert units and all(u["macs"] > 0 for u in units)
            assert len({u["name"] for u in units}) == len(units)
    assert len(f13.plan(f13.PRESETS["cpu"])) == 3 * 4 * 2
    assert {u["name"] for u in f14.plan(f14.PRESETS["cpu"])} == {
        f"{s}_seed0" for s in ("fixed", "clr", "onecycle", "pc", "sgdr")
    }
    cfg = f14.PRESETS["cpu"]
    from hessian_lr.schedules import schedule_from_dict

    for name in f14.SCHEDULES:  # every schedule is defined over the whole run
        sched = schedule_from_dict(f14.schedule(cfg, name))
        assert all(sched.lr(t) > 0 for t in (0, cfg.steps // 2, cfg.steps - 1))
    clr = schedule_from_dict(f5.specs(f5.PRESETS["cpu"])[1].schedule)
    assert clr.lr(f5.PRESETS["cpu"].steps // 2) == pytest.approx(3.0)  # the paper's 0.1 -> 3


# ------------------------------------------------------------------------------ slow: scripts
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("secant_results")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "experiments" / f"{name}.py"),
                "--preset",
                "smoke",
                "--out",
                str(out),
                "--no-progress",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("f5_lr_estimates", "f13_noise_null", "f14_what_tracks")
    }
    codes = {name: (p.wait(timeout=900), p.stdout.read()) for name, p in procs.items()}
    return out, codes


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "figure"),
    [
        ("f5_lr_estimates", "fig_f5_lr_estimates"),
        ("f13_noise_null", "fig_f13_noise_null"),
        ("f14_what_tracks", "fig_f14_what_tracks"),
    ],
)
def test_smoke_script_figure_and_claims(smoke, tmp_path, experiment, figure):
    import importlib

    from hessian_lr.records import read_json

    out, codes = smoke
    code, log = codes[experiment]
    assert code == 0, log[-3000:]
    summ = read_json(out / experiment / "summary.json")
    assert summ["preset"] == "smoke"
    mod_exp = importlib.import_module(experiment)
    for unit in mod_exp.plan(mod_exp.PRESETS["smoke"]):
        meta = read_json(out / experiment / unit["name"] / "meta.json")
        assert meta["status"] == "finished", (unit, meta)
    assert summ["checks"], "the smoke preset must give numbers to every check"
    mod = importlib.import_module(f"paper_figures.{figure}")
    paths = mod.draw(out, tmp_path)
    assert paths and all(p.exists() and p.stat().st_size > 1000 for p in paths)
    rows = mod.claims(out)
    assert rows and all(r.holds in (True, False, None) for r in rows)
    assert all(r.note for r in rows if r.holds is False and r.figure == "F5" and "far" in r.claim)


def test_missing_results_name_the_command(tmp_path):
    from paper_figures import MissingResults
    from paper_figures import fig_f5_lr_estimates as f5
    from paper_figures import fig_f13_noise_null as f13
    from paper_figures import fig_f14_what_tracks as f14

    for mod in (f5, f13, f14):
        with pytest.raises(MissingResults, match=f"experiments/{mod.EXPERIMENTS[0]}.py"):
            mod.claims(tmp_path)
