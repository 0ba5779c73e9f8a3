"""The ``hessian-lr`` command: help texts, the demo end to end, train, range-test, dispatch."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hessian_lr import cli
from hessian_lr.range_test import RangeTestResult, lr_ramp
from hessian_lr.records import read_records
from hessian_lr.schedules import MultiStep, OneCycle, schedule_from_dict
from hessian_lr.training.run import Run

COMMANDS = ("demo", "range-test", "train", "experiment", "figures")


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys):
    out = _help(["--help"], capsys)
    for command in COMMANDS:
        assert command in out


@pytest.mark.slow
def test_console_script_and_module_help():
    # What users type: the installed console script, and `python -m hessian_lr.cli`.
    commands = [[sys.executable, "-m", "hessian_lr.cli", "--help"]]
    if shutil.which("hessian-lr"):
        commands.append([shutil.which("hessian-lr"), "--help"])
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, check=True)
        assert proc.stdout.startswith("usage: hessian-lr")
        assert all(c in proc.stdout for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command, capsys):
    out = _help([command, "--help"], capsys)
    assert f"hessian-lr {command}" in out
    expected = {
        "demo": "--quick",
        "range-test": "--end-lr",
        "train": "--schedule",  # every TrainConfig field is a flag
        "experiment": "python experiments/",
        "figures": "python -m paper_figures",
    }[command]
    assert expected in out
    if command == "train":
        for flag in ("--estimator-methods", "--weight-decay", "--probe-every", "--subset"):
            assert flag in out


# ----------------------------------------------------------------------------- schedules
def test_parse_schedule_shorthand_json_and_number_agree():
    steps = 300
    short = cli.parse_schedule("onecycle:max_lr=0.2", steps=steps)
    expected = OneCycle(base_lr=0.05, max_lr=0.2, step_size=135, total_steps=300).to_dict()
    assert short == expected
    assert cli.parse_schedule(json.dumps(expected), steps=999) == expected  # JSON kept as given
    assert cli.parse_schedule("0.1") == {"type": "Constant", "base_lr": 0.1}
    pc = cli.parse_schedule("multistep:base_lr=0.05", steps=800)
    assert pc == MultiStep(base_lr=0.05, milestones=[500, 700]).to_dict()
    clr = cli.parse_schedule(
        "cyclic:base_lr=0.01,max_lr=0.1,step_size_up=20,mode=triangular2", steps=100
    )
    assert schedule_from_dict(clr).lr(20) == pytest.approx(0.1)
    assert schedule_from_dict(clr).lr(60) == pytest.approx(0.055)  # second cycle: half height
    ms = cli.parse_schedule("multistep:base_lr=1,milestones=[3,7],gamma=0.5", steps=10)
    assert [schedule_from_dict(ms).lr(t) for t in (2, 3, 7)] == [1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus:x=1", "unknown schedule"),
        ("onecycle:max_lr", "not key=value"),
        ("{not json", "not valid JSON"),
        ('{"base_lr": 1}', '"type"'),
        ("onecycle:max_lr=0.2,step_size=50", "total_steps"),
    ],
)
def test_parse_schedule_errors_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cli.parse_schedule(text, steps=20)


# ----------------------------------------------------------------------------- train
@pytest.mark.filterwarnings("ignore:LREstimator. the secant estimate")
def test_train_tiny_run_follows_the_schedule(tmp_path, capsys):
    rc = cli.main(
        [
            "train",
            "--model", "mlp",
            "--steps", "20",
            "--batch-size", "32",
            "--eval-every", "10",
            "--schedule", "onecycle:base_lr=0.02,max_lr=0.2",
            "--estimator-methods", "secant,quadratic",
            "--estimator-every", "5",
            "--device", "cpu",
            "--out", str(tmp_path),
            "--run", "tiny",
            "--threads", "1",
            "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    run = Run(tmp_path, "train", "tiny")
    records = run.records()
    assert [r["step"] for r in records] == list(range(20))
    sched = OneCycle(base_lr=0.02, max_lr=0.2, step_size=9, total_steps=20)
    for r in records:
        assert r["lr"] == pytest.approx(sched.lr(r["step"]), rel=1e-12)
        assert r["momentum"] == pytest.approx(sched.momentum(r["step"]), rel=1e-12)
    assert sum("estimates" in r for r in records) == 4  # every 5 of 20 steps
    assert run.config()["schedule"] == sched.to_dict()
    assert run.meta()["status"] == "finished"
    final = records[-1]["test_accuracy"]
    assert f"final test accuracy {100 * final:.2f} %" in out


def test_train_rejects_a_bad_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--batch-size", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--eval-batch-size", "0"], "eval_batch_size must be >= 1"),
        (["--seed", "-1"], "seed must be an integer >= 0"),
        (["--probe-size", "0"], "probe_size must be >= 1"),
        (["--momentum", "1.5"], "momentum must lie in [0, 1)"),
        (["--schedule", "0"], "constant LR must be a positive finite number, got 0"),
        (["--schedule", "-0.1"], "constant LR must be a positive finite number, got -0.1"),
        (["--steps", "300", "--schedule",
          '{"type": "OneCycle", "base_lr": 0.1, "max_lr": 1, "step_size": 40, "total_steps": 100}'],
         "ends at total_steps=100 but the run has steps=300"),
        (["--steps", "ten"], "argument --steps: invalid literal"),
        (["--schedule", "bogus:x=1"], "unknown schedule 'bogus'"),
    ],
)  # fmt: skip
def test_train_flags_are_validated_at_parse_time(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", *flags, "--out", str(tmp_path), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: hessian-lr train" in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_train_resume_with_other_flags_needs_allow_config_change(tmp_path, capsys):
    base = ["train", "--model", "mlp", "--steps", "6", "--eval-every", "3", "--device", "cpu",
            "--out", str(tmp_path), "--run", "r", "--no-progress",
            "--schedule", "0.05"]  # fmt: skip
    assert cli.main(base) == 0
    assert cli.main([*base[:-1], "0.02"]) == 2
    err = capsys.readouterr().err
    assert "schedule" in err and "choose another run name" in err
    # A finished run cannot continue under another config even with the flag: still refused.
    assert cli.main([*base[:-1], "0.02", "--allow-config-change"]) == 2
    # An unfinished one can, with the flag (the change is noted in meta.json).
    run = Run(tmp_path, "train", "r")
    run.update_meta(status="interrupted")
    longer = [*base[:4], "12", *base[5:]]
    assert cli.main(longer) == 2
    assert "--allow-config-change" in capsys.readouterr().err


# ----------------------------------------------------------------------------- range test
def test_range_test_tiny_run(tmp_path, capsys):
    rc = cli.main(
        [
            "range-test",
            "--model", "mlp",
            "--num-steps", "25",
            "--start-lr", "0.001",
            "--end-lr", "3",
            "--ramp", "exp",
            "--val-every", "5",
            "--device", "cpu",
            "--out", str(tmp_path),
            "--threads", "1",
            "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "range_test.json").read_text())
    res = RangeTestResult.from_dict(data)
    assert data["cli"]["model"] == "mlp"
    ladder = lr_ramp(0.001, 3.0, 25, ramp="exp")
    assert len(res.lrs) >= 2
    assert list(res.lrs) == pytest.approx(ladder[: len(res.lrs)].tolist(), rel=1e-12)
    assert res.val_steps[:2] == (4, 9)
    assert (tmp_path / "range_test.png").stat().st_size > 10_000
    max_lr = res.suggestions.max_lr.lr
    assert max_lr is not None and f"{max_lr:.4g}" in out
    assert res.curvature is not None and res.curvature.lambda_max > 0


# ----------------------------------------------------------------------------- demo
def _cells(report: str, first: str) -> list[str]:
    """The cells of the report's table row that starts with ``| first |``."""
    row = next(line for line in report.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def _num(cell: str) -> float:
    return float(re.search(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", cell.replace("*", "")).group())


def _final_accuracy(recs) -> float:
    return [r["test_accuracy"] for r in recs if "test_accuracy" in r][-1]


def test_demo_quick_end_to_end(tmp_path, capsys):
    from hessian_lr.demo.f16 import F16_SGD

    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    pngs = ("range_test.png", "lr_finder.png", "accuracy.png", "lr_estimates.png")
    for name in (*pngs, "range_test.json"):
        assert (out / name).stat().st_size > 5_000, name
        assert name in printed  # the demo says where everything went
    assert "report.md" in printed
    recs = {n: read_records(out / "runs" / "demo" / n / "records.jsonl") for n in summary["runs"]}
    assert set(recs) == {"finder", "range_test", "pc"}
    assert {n: len(r) for n, r in recs.items()} == {"finder": 24, "range_test": 24, "pc": 24}

    # Section 1: both suggestions and their costs, read off the report, are the run's.
    rt = RangeTestResult.from_dict(json.loads((out / "range_test.json").read_text()))
    fnd, rtc = _cells(report, "`find_lr` (stability-aware)"), _cells(report, "classic range test")
    assert _num(fnd[1]) == pytest.approx(max(r["lr"] for r in recs["finder"]), rel=1e-3)
    assert _num(rtc[1]) == pytest.approx(max(r["lr"] for r in recs["range_test"]), rel=1e-3)
    assert _num(rtc[1]) == pytest.approx(rt.suggestions.max_lr.lr, rel=1e-3)
    assert int(rtc[3]) == rt.num_updates == 30 and int(rtc[5]) == rt.curvature.num_hvps
    f = summary["finder"]
    assert int(fnd[3]) == f["num_steps"] <= 110 and int(fnd[5]) == f["num_hvps"]
    assert f["num_hvps"] >= f["num_measurements"] == f["num_steps"] // 10
    lo, hi = (float(x) for x in re.search(r"\[([\d.e-]+), ([\d.e-]+)\]", fnd[2]).groups())
    band = (f["max_lr"] / f["factor"], f["max_lr"] * f["factor"])
    assert (lo, hi) == pytest.approx(band, rel=2e-3)
    assert f["stop_reason"] == "edge" and f["last_ratio"] >= 1.0  # stopped at η·λ/c = 1
    assert f["max_lr"] == pytest.approx(f["calibration"] * f["edge_lr"])

    # Section 2: the three final accuracies are the last evaluations in the run folders; the
    # two 1cycle runs peak at their suggestion and the baseline starts at its LR.
    for name, label in (("finder", "1cycle at find_lr"), ("range_test", "1cycle at the range")):
        row = next(line for line in report.splitlines() if line.startswith(f"| {label}"))
        assert f"**{100 * _final_accuracy(recs[name]):.2f} %**" in row
    pc_row = _cells(report, "piecewise constant")
    assert pc_row[3] == f"**{100 * _final_accuracy(recs['pc']):.2f} %**"
    assert recs["pc"][0]["lr"] == pytest.approx(summary["bounds"]["pc"]["lr"])

    # Section 3: each θ₀ estimate's calibrated reading is F16's k times this run's value, and
    # (2+2β)/λ_max agrees with the range test's own curvature check (an independent Lanczos run
    # on the same first batch of the same initialisation).
    sharp = _cells(report, "(2+2β)/λ_max at θ₀")
    assert _num(sharp[4]) == pytest.approx(rt.curvature.momentum_bound, rel=2e-2)
    assert _num(sharp[5]) == pytest.approx(F16_SGD["sharpness"].k * _num(sharp[4]), rel=2e-3)
    assert "| find_lr edge" in report and "Σ\\|g\\|/Σ\\|Hg\\|" in report

    # Section 4: the secant against its noise null, recomputed from the records.
    for name, run in summary["runs"].items():
        es = [r["estimates"]["secant"] for r in recs[name] if "secant" in r.get("estimates", {})]
        q = sorted(e["noise_ratio"] for e in es if e["lr"] is not None and e["noise_ratio"])
        if q:
            med = q[len(q) // 2] if len(q) % 2 else (q[len(q) // 2 - 1] + q[len(q) // 2]) / 2
            assert run["estimator"]["secant"]["median_noise_ratio"] == pytest.approx(med)
            assert f"estimate / null = **{med:.3g}**" in report
        est = run["estimator"]
        n_est = sum("estimates" in r for r in recs[name])
        assert est["quadratic"]["num_estimates"] + est["quadratic"]["num_flagged"] == n_est
        assert est["sharpness"]["num_hvps"] > n_est  # Lanczos: several HVPs per estimate
    assert re.search(r"Wall time \*\*\d+\.\d s\*\*", report)
    assert summary["seconds"] > 0 and math.isfinite(summary["seconds"])


# ----------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["experiment", "f3_onecycle_vs_pc", "--preset", "smoke"],
         "python experiments/f3_onecycle_vs_pc.py --preset smoke"),
        (["experiment"], "python experiments/f3_onecycle_vs_pc.py --preset smoke"),
        (["figures", "F3"], "python -m paper_figures F3"),
        (["figures", "--", "--results", "x y", "F1"], "python -m paper_figures --results 'x y' F1"),
    ],
)  # fmt: skip
def test_checkout_commands_print_the_exact_command_and_fail(argv, command, capsys):
    # Experiments and figures are checkout scripts: the installed CLI does not run them.
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert command in err
    assert "repository checkout" in err


def test_no_repository_locating_logic_left():
    assert not hasattr(cli, "repo_root") and not hasattr(cli, "find_experiment")
    assert "subprocess" not in Path(cli.__file__).read_text()
