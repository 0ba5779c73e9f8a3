"""One configuration language: dataclass <-> flags, the short NAME:k=v form, schedule specs, and
TrainConfig validation at construction (issue 9; issue 11 item 11)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Literal

import pytest

from hessian_lr.schedules import MultiStep, OneCycle, schedule_from_dict, schedule_names
from hessian_lr.training.config import (
    add_dataclass_args,
    dataclass_from_args,
    parse_short_form,
    schedule_spec,
)
from hessian_lr.training.train_config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    steps: int = 10
    lr: float = 0.1
    name: str = "x"
    flag: bool = False
    lengths: tuple[int, ...] = (250, 500)
    decay: float | None = None
    subset: float | int | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ramp: Literal["linear", "exp"] = "linear"


def _parse(argv, base=None):
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Preset, defaults=base)
    return dataclass_from_args(Preset, p.parse_args(argv), base=base)


def test_every_type_round_trips_through_flags():
    cfg = _parse(
        ["--steps", "7", "--lr", "1e-3", "--name", "y", "--flag", "--lengths", "1,2,3",
         "--decay", "none", "--subset", "500", "--kwargs", '{"a": [1, 2]}', "--ramp", "exp"]
    )  # fmt: skip
    assert cfg == Preset(7, 1e-3, "y", True, (1, 2, 3), None, 500, {"a": [1, 2]}, "exp")
    assert isinstance(cfg.subset, int) and _parse(["--subset", "0.25"]).subset == 0.25
    assert _parse(["--lengths", "[4, 5]"]).lengths == (4, 5)
    assert _parse(["--kwargs", "hidden=[64,32],act=tanh"]).kwargs == {
        "hidden": [64, 32],
        "act": "tanh",
    }
    assert _parse(["--no-flag"], base=Preset(flag=True)).flag is False
    # Not given -> the base's value, not the class default.
    assert _parse([], base=Preset(steps=99)).steps == 99


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--steps", "1.5"], "--steps"), (["--ramp", "cubic"], "linear, exp"),
     (["--kwargs", "[1]"], "argument --kwargs: expected JSON or key=value")],
)  # fmt: skip
def test_bad_flag_values_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        _parse(argv)
    assert message in capsys.readouterr().err


def test_short_form():
    assert parse_short_form("onecycle:max_lr=0.2") == ("onecycle", {"max_lr": 0.2})
    name, opts = parse_short_form("multistep:milestones=[3, 7],gamma=0.5,mode=triangular2")
    assert opts == {"milestones": [3, 7], "gamma": 0.5, "mode": "triangular2"}
    assert parse_short_form("a=1,b=x") == ("", {"a": 1, "b": "x"})
    with pytest.raises(ValueError, match="not key=value"):
        parse_short_form("onecycle:max_lr")


def test_schedule_specs_agree_and_use_the_class_names():
    short = schedule_spec("OneCycle:max_lr=0.2", steps=300)
    assert short == OneCycle(base_lr=0.05, max_lr=0.2, step_size=135, total_steps=300).to_dict()
    assert schedule_spec("one-cycle:max_lr=0.2", steps=300) == short  # case, '-' and '_' ignored
    assert (
        schedule_spec("multistep:base_lr=0.05", steps=800)
        == MultiStep(base_lr=0.05, milestones=[500, 700]).to_dict()
    )
    as_dict = {"type": "Constant", "base_lr": 0.3}
    assert (
        schedule_spec(as_dict) == as_dict
        and schedule_spec('{"type": "Constant", "base_lr": 0.3}') == as_dict
    )
    assert {"Constant", "OneCycle", "Cyclic", "SGDR", "MultiStep"} <= set(schedule_names())
    warm = schedule_spec("warmupcosine:peak_lr=0.2,warmup_steps=50", steps=300)
    assert warm["type"] == "WarmupCosine" and warm["total_steps"] == 300
    assert schedule_from_dict(warm).lr(50) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="unknown schedule 'pc'"):
        schedule_spec("pc:base_lr=0.1")  # the old aliases are gone: class names only


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eval_batch_size": 0}, "eval_batch_size must be >= 1"),
        ({"probe_size": 0}, "probe_size must be >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"momentum": 1.5}, "momentum must lie in [0, 1)"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"subset": 0.0}, "subset"),
        ({"schedule": "0"}, "constant LR must be a positive finite number, got 0"),
        ({"schedule": "-0.1"}, "constant LR must be a positive finite number, got -0.1"),
        ({"schedule": {"type": "Constant", "base_lr": 0.0}}, "LR 0 at every step"),
        ({"steps": 200, "schedule": {"type": "OneCycle", "base_lr": 0.1, "max_lr": 1.0,
          "step_size": 40, "total_steps": 100}},
         "ends at total_steps=100 but the run has steps=200"),
        ({"estimator_methods": ("secant", "newton")}, "unknown estimator methods ['newton']"),
    ],
)  # fmt: skip
def test_train_config_rejects_bad_values_at_construction(kwargs, message):
    with pytest.raises(ValueError) as exc:
        TrainConfig(**kwargs)
    assert message in str(exc.value)


def test_train_config_schedule_strings_become_dicts_and_dicts_stay_as_given():
    cfg = TrainConfig(steps=300, schedule="onecycle:max_lr=0.2")
    assert (
        cfg.schedule == OneCycle(base_lr=0.05, max_lr=0.2, step_size=135, total_steps=300).to_dict()
    )
    given = {"type": "Cyclic", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 20}
    assert TrainConfig(steps=100, schedule=given).schedule == given
    assert schedule_from_dict(TrainConfig(schedule="0.2").schedule).lr(5) == 0.2
