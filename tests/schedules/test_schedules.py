"""Closed-form schedules: hand-written targets, the papers' formulas, shapes, exactness, validation.

Step-for-step comparisons with the PyTorch schedulers (through ``ScheduleLR``) live in
tests/test_lr_scheduler.py; here the pure functions are checked on their own.
"""

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hessian_lr.schedules import (
    SGDR,
    Constant,
    Cyclic,
    ExpDecay,
    InvDecay,
    MultiStep,
    OneCycle,
    OneCycleCosine,
    StepDecay,
    schedule_from_dict,
)

FAST = settings(max_examples=40, deadline=None)


def lrs(schedule, n):
    return [schedule.lr(t) for t in range(n)]


# ----------------------------------------------------------------------- hand-written targets


def test_triangular_targets():
    s = Cyclic(base_lr=1.0, max_lr=3.0, step_size_up=2, base_momentum=0.8, max_momentum=0.9)
    assert lrs(s, 9) == pytest.approx([1, 2, 3, 2, 1, 2, 3, 2, 1], rel=1e-15)
    moms = [s.momentum(t) for t in range(5)]
    assert moms == pytest.approx([0.9, 0.85, 0.8, 0.85, 0.9], rel=1e-15)


def test_triangular2_targets():
    s = Cyclic(base_lr=0.0, max_lr=4.0, step_size_up=2, mode="triangular2")
    target = [0, 2, 4, 2] + [0, 1, 2, 1] + [0, 0.5, 1, 0.5] + [0]
    assert lrs(s, 13) == pytest.approx(target, abs=1e-15)
    # the momentum amplitude halves with the LR amplitude (as in PyTorch's CyclicLR)
    assert s.momentum(6) == pytest.approx(0.9 - 0.1 * 0.5, rel=1e-15)


def test_asymmetric_and_exp_range_targets():
    s = Cyclic(base_lr=0.0, max_lr=3.0, step_size_up=1, step_size_down=3)
    assert lrs(s, 9) == pytest.approx([0, 3, 2, 1, 0, 3, 2, 1, 0], abs=1e-15)
    e = Cyclic(base_lr=0.0, max_lr=8.0, step_size_up=1, mode="exp_range", gamma=0.5)
    assert lrs(e, 4) == pytest.approx([0, 8 * 0.5, 0, 8 * 0.125], abs=1e-15)


def test_onecycle_sc_targets():
    s = OneCycle(base_lr=1.0, max_lr=4.0, step_size=3, total_steps=10, final_fraction=0.1)
    target = [1, 2, 3, 4, 3, 2, 1, 1 - 0.9 / 3, 1 - 1.8 / 3, 0.1]
    assert lrs(s, 10) == pytest.approx(target, rel=1e-14)
    m = [s.momentum(t) for t in range(10)]
    third = 0.1 / 3
    target_m = [0.95, 0.95 - third, 0.95 - 2 * third, 0.85, 0.85 + third, 0.85 + 2 * third]
    assert m == pytest.approx(target_m + [0.95] * 4, rel=1e-14)
    geo = OneCycle(
        base_lr=1.0, max_lr=4.0, step_size=3, total_steps=10, final_fraction=1e-3, tail="exp"
    )
    assert lrs(geo, 10)[6:] == pytest.approx([1.0, 0.1, 0.01, 0.001], rel=1e-12)


def test_onecycle_cosine_targets():
    # PyTorch OneCycleLR defaults, T = 10: phase 1 ends at step 0.3*10 - 1 = 2.
    s = OneCycleCosine(max_lr=1.0, total_steps=10)
    assert s.lr(0) == pytest.approx(0.04, rel=1e-15)
    assert s.lr(1) == pytest.approx(1 - 0.96 / 2, rel=1e-15)  # cos(pi/2) = 0: halfway
    assert s.lr(2) == pytest.approx(1.0, rel=1e-15)
    assert s.lr(9) == pytest.approx(0.04 / 1e4, rel=1e-12)
    # second phase: 7 steps from 2 to 9, step 5 at pct 3/7
    assert s.lr(5) == pytest.approx(4e-6 + (1 - 4e-6) / 2 * (1 + math.cos(math.pi * 3 / 7)))
    assert s.momentum(0) == 0.95 and s.momentum(2) == pytest.approx(0.85, rel=1e-15)


def test_sgdr_targets():
    # T_0 = 2 epochs, T_mult = 2, 2 steps per epoch: cycles of 4 and 8 steps, eta in [0, 1]
    s = SGDR(eta_max=1.0, T_0=2, T_mult=2, steps_per_epoch=2)
    c = [(1 + math.cos(math.pi * k / 8)) / 2 for k in range(8)]
    target = [1.0, c[2], 0.5, c[6]] + c
    assert lrs(s, 12) == pytest.approx(target, rel=1e-14)
    assert s.lr(12) == 1.0  # restart at epoch 2 + 4 = 6
    assert s.cycle(12) == (2, Fraction(6), Fraction(8))
    decayed = SGDR(eta_max=1.0, T_0=2, T_mult=2, steps_per_epoch=2, decay=0.5, eta_min=0.1)
    assert [decayed.lr(t) for t in (0, 4, 12)] == pytest.approx([1.0, 0.5, 0.25], rel=1e-15)


def test_piecewise_and_caffe_targets():
    assert lrs(MultiStep(base_lr=1.0, milestones=[2, 4], gamma=0.1), 6) == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01], rel=1e-14
    )
    assert lrs(StepDecay(base_lr=1.0, step_size=2, gamma=0.5), 5) == [1, 1, 0.5, 0.5, 0.25]
    assert lrs(ExpDecay(base_lr=2.0, gamma=0.5), 4) == [2, 1, 0.5, 0.25]
    inv = InvDecay(base_lr=0.01, gamma=1e-4, power=0.75)  # Caffe LeNet solver
    assert inv.lr(10_000) == pytest.approx(0.01 * 2**-0.75, rel=1e-14)
    assert lrs(Constant(base_lr=0.1), 3) == [0.1, 0.1, 0.1]


def test_sc_multistep_baseline():
    pc = MultiStep.from_fractions(total_steps=8000)  # 0.35, x0.1 at 62.5 % and 87.5 %
    assert pc.milestones == (5000, 7000)
    assert [pc.lr(t) for t in (0, 4999, 5000, 6999, 7000, 7999)] == pytest.approx(
        [0.35, 0.35, 0.035, 0.035, 0.0035, 0.0035], rel=1e-14
    )
    with pytest.raises(ValueError, match="past the end"):
        pc.lr(8000)


# -------------------------------------------------------------------------- the CLR formula


@FAST
@given(
    base=st.floats(1e-4, 1.0),
    ratio=st.floats(1.0, 100.0),
    s=st.integers(1, 500),
    t=st.integers(0, 100_000),
    mode=st.sampled_from(["triangular", "triangular2", "exp_range"]),
    gamma=st.floats(0.99, 1.0),
)
def test_paper_clr_formula(base, ratio, s, t, mode, gamma):
    """CLR Sec. 3.1: cycle = floor(1 + t/2s), x = |t/s - 2 cycle + 1|, max(0, 1 - x) * phi."""
    top = base * ratio
    cycle = math.floor(1 + t / (2 * s))
    x = abs(t / s - 2 * cycle + 1)
    phi = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**t}[mode]
    paper = base + (top - base) * max(0.0, 1 - x) * phi
    ours = Cyclic(base_lr=base, max_lr=top, step_size_up=s, mode=mode, gamma=gamma).lr(t)
    assert ours == pytest.approx(paper, rel=1e-9, abs=1e-12 * top)


# ---------------------------------------------------------------------------- the SC 1cycle


@FAST
@given(
    base=st.floats(1e-3, 1.0),
    ratio=st.floats(1.5, 20.0),
    s=st.integers(1, 200),
    tail_len=st.integers(1, 200),
    tail=st.sampled_from(["linear", "cos", "exp"]),
)
def test_onecycle_sc_shape(base, ratio, s, tail_len, tail):
    top, total = base * ratio, 2 * s + 1 + tail_len
    sched = OneCycle(base_lr=base, max_lr=top, step_size=s, total_steps=total, tail=tail)
    lr, mom = sched.preview()
    assert lr.shape == mom.shape == (total,)
    assert int(np.argmax(lr)) == s and lr[s] == pytest.approx(top, rel=1e-14)
    assert lr[0] == base and lr[2 * s] == pytest.approx(base, rel=1e-14)
    assert lr[-1] == pytest.approx(base * 1e-3, rel=1e-9)  # three orders below base
    assert np.all(np.diff(lr[: s + 1]) > 0) and np.all(np.diff(lr[s : 2 * s + 1]) < 0)
    assert np.all(np.diff(lr[2 * s :]) < 0)  # the annihilation tail keeps falling
    # momentum in counter-phase: an affine, decreasing function of the LR during the cycle
    up = (lr[: 2 * s + 1] - base) / (top - base)
    down = (0.95 - mom[: 2 * s + 1]) / (0.95 - 0.85)
    np.testing.assert_allclose(up, down, rtol=0, atol=1e-12)
    assert mom[s] == pytest.approx(0.85) and np.all(mom[2 * s :] == 0.95)


@FAST
@given(
    base=st.floats(1e-3, 1.0),
    ratio=st.floats(1.5, 20.0),
    s=st.integers(1, 100),
    tail_len=st.integers(1, 100),
    ff=st.floats(1e-4, 0.5),
)
def test_onecycle_sc_is_torch_three_phase_linear(base, ratio, s, tail_len, ff):
    """SC 1cycle = OneCycleLR(three_phase, linear) with pct_start = (s + 1)/T."""
    top, total = base * ratio, 2 * s + 1 + tail_len
    ours = OneCycle(base_lr=base, max_lr=top, step_size=s, total_steps=total, final_fraction=ff)
    theirs = OneCycleCosine(
        max_lr=top,
        total_steps=total,
        pct_start=(s + 1) / total,
        anneal_strategy="linear",
        div_factor=ratio,
        final_div_factor=1 / ff,
        three_phase=True,
    )
    a, b = ours.preview(), theirs.preview()
    np.testing.assert_allclose(a.lr, b.lr, rtol=1e-9, atol=0)
    np.testing.assert_allclose(a.momentum, b.momentum, rtol=1e-9, atol=0)


# ------------------------------------------------------------------- SGDR exact restarts


def _restart_epochs(T_0, T_mult, until, most=60):
    e, length, out = Fraction(0), Fraction(T_0), []
    while e <= until and len(out) < most:
        out.append(e)
        e, length = e + length, length * T_mult
    return out


@FAST
@given(
    T_0=st.sampled_from([1, 2, 3, 5, Fraction(1, 2), Fraction(7, 3), 0.1]),
    T_mult=st.sampled_from([1, 2, 3, 9, 10, 1.5, Fraction(4, 3), 1.1]),
    spe=st.integers(1, 12),
    decay=st.sampled_from([1.0, 0.5, 0.9]),
)
def test_sgdr_restarts_exact(T_0, T_mult, spe, decay):
    """At each restart step lr is exactly the (decayed) peak; the step before ends the cycle."""
    s = SGDR(eta_max=1.0, T_0=T_0, T_mult=T_mult, eta_min=0.01, steps_per_epoch=spe, decay=decay)
    starts = _restart_epochs(s.T_0, s.T_mult, until=100_000)
    for i, e in enumerate(starts):
        if (e * spe).denominator != 1:  # this restart falls between two steps
            continue
        t = int(e * spe)
        assert s.cycle(t)[:2] == (i, e)
        assert s.lr(t) == 0.01 + (decay**i - 0.01)  # cos(0) = 1: exactly the peak
        if i > 0 and starts[i - 1] * spe < t - 1:  # the previous cycle spans several steps
            prev = s.cycle(t - 1)
            assert prev[0] == i - 1 and prev[1] == starts[i - 1]
            length = (starts[i] - starts[i - 1]) * spe  # steps in the previous cycle
            pct = float((t - 1 - starts[i - 1] * spe) / length)
            end = 0.01 + (decay ** (i - 1) - 0.01) * (1 + math.cos(math.pi * pct)) / 2
            assert s.lr(t - 1) == pytest.approx(end, rel=1e-12)


def test_sgdr_non_integer_t_mult_lengths():
    s = SGDR(eta_max=1.0, T_0=2, T_mult=1.5, steps_per_epoch=4)
    assert s.T_mult == Fraction(3, 2)
    # cycles of 2, 3, 4.5, 6.75 epochs: restarts at epochs 0, 2, 5, 9.5, 16.25
    assert [s.cycle(t)[1] for t in (0, 8, 20, 38, 65)] == [0, 2, 5, Fraction(19, 2), 16.25]
    assert s.cycle(37)[0] == 2 and s.cycle(38)[0] == 3
    assert s.lr(38) == 1.0 and s.lr(65) == 1.0
    np.testing.assert_allclose(s.preview(200).lr, lrs(s, 200), rtol=1e-12, atol=1e-15)


def test_sgdr_where_torch_float_log_misplaces_restarts():
    """PyTorch's step(epoch) takes int(log(e/T_0 (T_mult - 1) + 1, T_mult)) as the cycle index.

    At these restart epochs the log rounds below the integer, so PyTorch stays in the previous
    cycle with T_cur = T_i: lr = eta_min where the restart's eta_max is due. Ours is exact.
    """
    cases = [(3, 1, 121), (3, 2, 242), (3, 1, 29524), (10, 1, 111), (9, 1, 7381)]
    p = torch.nn.Parameter(torch.zeros(1))
    for T_mult, T_0, epoch in cases:
        ours = SGDR(eta_max=1.0, T_0=T_0, T_mult=T_mult, eta_min=0.0, steps_per_epoch=4)
        assert ours.lr(4 * epoch) == 1.0
        assert ours.lr(4 * epoch - 1) < 1e-4  # the end of the previous cycle
        # the float formula PyTorch uses, evaluated independently:
        n_float = int(math.log(epoch / T_0 * (T_mult - 1) + 1, T_mult))
        assert n_float == ours.cycle(4 * epoch)[0] - 1
        opt = torch.optim.SGD([p], lr=1.0)
        theirs = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=T_0, T_mult=T_mult)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.step(epoch)
        if theirs.get_last_lr()[0] != 1.0:  # PyTorch 2.13: 0.0 at all five
            assert theirs.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------- preview, dict, validation


@pytest.mark.parametrize(
    "schedule",
    [
        Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=3, step_size_down=5, mode="triangular2"),
        OneCycle(base_lr=0.1, max_lr=1.0, step_size=5, total_steps=30, tail="cos"),
        OneCycleCosine(max_lr=1.0, total_steps=30, three_phase=True),
        SGDR(eta_max=1.0, T_0=Fraction(5, 3), T_mult=1.5, steps_per_epoch=3, decay=0.8),
        SGDR(eta_max=1.0, T_0=2, steps_per_epoch=3, decay=0.8, eta_min=0.1),
        MultiStep(base_lr=0.35, milestones=[10, 20], total_steps=30),
        StepDecay(base_lr=0.1, step_size=7),
        InvDecay(base_lr=0.01),
    ],
    ids=lambda s: type(s).__name__,
)
def test_preview_and_dict_round_trip(schedule):
    n = 30
    prev = schedule.preview(n)
    np.testing.assert_allclose(prev.lr, lrs(schedule, n), rtol=1e-13, atol=1e-16)
    if schedule.defines_momentum:
        np.testing.assert_allclose(prev.momentum, [schedule.momentum(t) for t in range(n)])
    else:
        assert prev.momentum is None and schedule.momentum(0) is None
    d = schedule.to_dict()
    assert all(isinstance(v, (str, int, float, bool, list)) for v in d.values())
    assert schedule_from_dict(d) == schedule


def test_preview_needs_length_for_endless_schedules():
    with pytest.raises(ValueError, match="num_steps"):
        Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=3).preview()
    with pytest.raises(ValueError, match="past total_steps"):
        OneCycleCosine(max_lr=1.0, total_steps=30).preview(31)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Cyclic(base_lr=1.0, max_lr=0.5, step_size_up=2), "max_lr .* must be >= base_lr"),
        (lambda: Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=0), "step_size_up"),
        (lambda: Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=2, step_size_down=0), "down"),
        (lambda: Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=2, mode="tri"), "mode"),
        (lambda: Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=2, gamma=0.0), "gamma"),
        (
            lambda: Cyclic(base_lr=0.1, max_lr=1, step_size_up=2, base_momentum=0.95),
            "max_momentum .* must be >= base_momentum",
        ),
        (lambda: OneCycle(base_lr=0.1, max_lr=1, step_size=5, total_steps=11), "tail is not"),
        (lambda: OneCycle(base_lr=0.0, max_lr=1, step_size=5, total_steps=20), "base_lr"),
        (
            lambda: OneCycle(base_lr=0.1, max_lr=1, step_size=5, total_steps=20, tail="step"),
            "tail",
        ),
        (
            lambda: OneCycle(
                base_lr=0.1, max_lr=1, step_size=5, total_steps=20, final_fraction=2.0
            ),
            "final_fraction",
        ),
        (lambda: OneCycleCosine(max_lr=1.0, total_steps=100, pct_start=1.0), "pct_start"),
        (lambda: OneCycleCosine(max_lr=1.0, total_steps=100, pct_start=0.0), "pct_start"),
        (lambda: OneCycleCosine(max_lr=1.0, total_steps=3, pct_start=0.3), "phase 1"),
        (
            lambda: OneCycleCosine(max_lr=1.0, total_steps=100, pct_start=0.6, three_phase=True),
            "phase 3",
        ),
        (lambda: OneCycleCosine(max_lr=1.0, total_steps=100, div_factor=0.5), "div_factor"),
        (lambda: OneCycleCosine(max_lr=1.0, total_steps=100, anneal_strategy="x"), "anneal"),
        (lambda: SGDR(eta_max=1.0, T_0=0), "T_0"),
        (lambda: SGDR(eta_max=1.0, T_0=1, T_mult=0.5), "T_mult"),
        (lambda: SGDR(eta_max=1.0, T_0=1, steps_per_epoch=0), "steps_per_epoch"),
        (lambda: SGDR(eta_max=0.1, T_0=1, eta_min=0.2), "eta_max"),
        (lambda: SGDR(eta_max=1.0, T_0=1, decay=1.5), "decay"),
        (lambda: MultiStep(base_lr=0.1, milestones=[5] * 400, gamma=10.0), "overflows"),
        (lambda: StepDecay(base_lr=0.1, step_size=2, gamma=1.5), "gamma"),
        (lambda: ExpDecay(base_lr=0.1, gamma=1.01), "gamma"),
        (
            lambda: Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=2, mode="exp_range", gamma=1.1),
            "gamma must lie in",
        ),
        (lambda: MultiStep(base_lr=0.1, milestones=[5], gamma=0.0), "gamma"),
        (lambda: MultiStep(base_lr=0.1, milestones=[50], total_steps=50), "before total"),
        (lambda: StepDecay(base_lr=0.1, step_size=2, gamma=-1.0), "gamma"),
        (lambda: ExpDecay(base_lr=0.1, gamma=0.0), "gamma"),
        (lambda: InvDecay(base_lr=0.1, power=0.0), "power"),
        (lambda: Cyclic(base_lr=float("nan"), max_lr=1.0, step_size_up=2), "finite"),
    ],
)
def test_impossible_settings_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_steps_raise():
    s = OneCycleCosine(max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="past the end"):
        s.lr(10)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        s.momentum(-1)
    with pytest.raises(TypeError, match="step must be an integer"):
        s.lr(1.5)
    assert s.lr(np.int64(3)) == s.lr(3)
    with pytest.raises(TypeError, match="step_size_up must be an integer"):
        Cyclic(base_lr=0.1, max_lr=1.0, step_size_up=2.5)
    with pytest.raises(ValueError, match="unknown schedule type"):
        schedule_from_dict({"type": "Nope"})
