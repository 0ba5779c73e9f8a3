"""Property tests over every schedule's constructor (issue 11).

Any arguments give a clear ValueError/TypeError, or a schedule whose LRs are finite and within
its stated ``lr_bounds()`` and whose momenta lie in [0, 1], each call within a time bound.
"""

import math
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hessian_lr.schedules import SCHEDULES, SGDR, schedule_names

PROPS = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
CALL_SECONDS = 0.5  # generous: a call is microseconds to milliseconds

_valid = st.floats(0.0, 1.0)  # drawn most often, so that valid schedules are generated
reals = st.one_of(
    _valid,
    _valid,
    _valid,
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(-2.0, 5.0),
    st.integers(-3, 50),
    st.sampled_from([0, 1, 0.5, 1e-300, 1e300, 1.0001]),
)
ints = st.one_of(st.integers(1, 40), st.integers(1, 40), st.integers(-3, 60), st.floats(0, 5))

FIELDS = {
    "base_lr": reals, "max_lr": st.one_of(st.floats(1.0, 3.0), reals), "eta_max": reals,
    "eta_min": reals, "peak_lr": reals,
    "min_lr": reals, "gamma": reals, "power": reals, "decay": reals, "final_fraction": reals,
    "pct_start": reals, "div_factor": reals, "final_div_factor": reals, "start_factor": reals,
    "decay_fraction": reals, "base_momentum": reals, "max_momentum": reals,
    "step_size": st.one_of(st.integers(1, 5), ints), "step_size_up": ints,
    "step_size_down": st.one_of(st.none(), ints),
    "total_steps": st.one_of(st.none(), st.integers(20, 60), ints),
    "warmup_steps": st.one_of(st.integers(0, 5), ints),
    "decay_steps": st.one_of(st.none(), ints), "steps_per_epoch": ints,
    "T_0": st.one_of(reals, st.sampled_from([Fraction(1, 3), 0.01])),
    "T_mult": st.one_of(reals, st.sampled_from([1.0001, 1.5, 2, Fraction(101, 100)])),
    "milestones": st.lists(st.integers(-1, 60), max_size=6),
    "mode": st.sampled_from(["triangular", "triangular2", "exp_range", "nope"]),
    "tail": st.sampled_from(["linear", "cos", "exp", "x"]),
    "anneal_strategy": st.sampled_from(["cos", "linear", "x"]),
    "decay_shape": st.sampled_from(["linear", "cosine", "sqrt", "x"]),
    "three_phase": st.booleans(),
}  # fmt: skip


def _fields(cls):
    import dataclasses

    return [f.name for f in dataclasses.fields(cls) if f.init]


def test_every_schedule_is_covered():
    assert len(schedule_names()) >= 12
    for name in schedule_names():
        missing = [f for f in _fields(SCHEDULES[name]) if f not in FIELDS]
        assert not missing, f"{name}: add strategies for {missing}"


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    assert time.perf_counter() - t0 < CALL_SECONDS, f"{fn.__qualname__}{args} too slow"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", schedule_names())
def test_constructor_property(name):
    cls = SCHEDULES[name]
    built = []
    import dataclasses

    fields = [f for f in dataclasses.fields(cls) if f.init]
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    required |= {"total_steps"} & {f.name for f in fields}  # None is tested separately
    kwargs = st.fixed_dictionaries(
        {f: FIELDS[f] for f in required},
        optional={f.name: FIELDS[f.name] for f in fields if f.name not in required},
    )

    @PROPS
    @given(kw=kwargs, steps=st.lists(st.integers(0, 10**6), min_size=1, max_size=5))
    def check(kw, steps):
        try:
            s = _build(cls, kw)
        except (ValueError, TypeError) as err:
            assert str(err), "errors must say what is wrong"
            return
        built.append(s)
        lo, hi = s.lr_bounds()
        assert math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi
        end = s.total_steps
        probe = [0, 1, 2] + steps + ([end - 1] if end else [])
        for t in probe:
            if end is not None and t >= end:
                continue
            lr = timed(s.lr, t)
            assert math.isfinite(lr) and lo * (1 - 1e-12) <= lr <= hi * (1 + 1e-12), (t, lr)
            m = timed(s.momentum, t)
            assert m is None or 0.0 <= m <= 1.0, (t, m)
        n = min(end or 200, 200)
        prev = timed(s.preview, n)
        assert len(prev.lr) == n

    check()
    assert built, f"no valid {name} was generated: the property never ran"


def _build(cls, kw):
    t0 = time.perf_counter()
    try:
        return cls(**kw)
    finally:
        assert time.perf_counter() - t0 < CALL_SECONDS


def test_sgdr_sub_step_cycles_and_t_mult_near_one_stay_cheap():
    """Issue 11 item 9: exact fractions grew without bound (> 60 s for preview(1000))."""
    for T_0, T_mult, spe in [(0.01, 1.0001, 1), (0.1, 1.0001, 3), (Fraction(1, 7), 1.00001, 1)]:
        s = SGDR(eta_max=1.0, T_0=T_0, T_mult=T_mult, steps_per_epoch=spe)
        t0 = time.perf_counter()
        p = s.preview(1000)
        assert time.perf_counter() - t0 < 2.0
        t0 = time.perf_counter()
        for t in (999, 10**5, 10**6):
            assert 0.0 <= s.lr(t) <= 1.0
        assert time.perf_counter() - t0 < 2.0
        assert p.lr.min() >= 0.0 and p.lr.max() <= 1.0
        assert p.lr[0] == 1.0
