"""Warmup schedules against PyTorch's LinearLR / SequentialLR compositions, step for step."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as tls

from hessian_lr.schedules import (
    LinearWarmup,
    ScheduleLR,
    WarmupCosine,
    WarmupStableDecay,
    schedule_from_dict,
)

FAST = settings(max_examples=30, deadline=None)


def torch_trace(peak, make, n):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return out


def ours(schedule, n):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = ScheduleLR(opt, schedule)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@FAST
@given(peak=st.floats(1e-4, 3.0), w=st.integers(1, 20), sf=st.floats(0.01, 1.0))
def test_linear_warmup_is_linearlr(peak, w, sf):
    n = w + 5
    theirs = torch_trace(peak, lambda o: tls.LinearLR(o, start_factor=sf, total_iters=w), n)
    s = LinearWarmup(peak_lr=peak, warmup_steps=w, start_factor=sf)
    assert [s.lr(t) for t in range(n)] == pytest.approx(theirs, rel=1e-9)
    assert ours(s, n) == pytest.approx(theirs, rel=1e-9)


@FAST
@given(
    peak=st.floats(1e-4, 3.0),
    w=st.integers(1, 15),
    rest=st.integers(1, 40),
    sf=st.floats(0.01, 1.0),
    min_frac=st.floats(0.0, 0.5),
)
def test_warmup_cosine_is_sequential_linear_cosine(peak, w, rest, sf, min_frac):
    total, low = w + rest, peak * min_frac

    def make(o):
        return tls.SequentialLR(
            o,
            [
                tls.LinearLR(o, start_factor=sf, total_iters=w),
                tls.CosineAnnealingLR(o, T_max=rest, eta_min=low),
            ],
            milestones=[w],
        )

    theirs = torch_trace(peak, make, total)
    s = WarmupCosine(peak_lr=peak, warmup_steps=w, total_steps=total, start_factor=sf, min_lr=low)
    assert s.preview().lr.tolist() == pytest.approx(theirs, rel=1e-9, abs=1e-15)


@FAST
@given(
    peak=st.floats(1e-4, 3.0),
    w=st.integers(1, 10),
    stable=st.integers(1, 20),
    d=st.integers(1, 15),
    sf=st.floats(0.01, 1.0),
    min_frac=st.floats(0.0, 0.5),
    shape=st.sampled_from(["linear", "cosine"]),
)
def test_wsd_is_sequential_linear_constant_decay(peak, w, stable, d, sf, min_frac, shape):
    total, low = w + stable + d, peak * min_frac

    def make(o):
        decay = (
            tls.LinearLR(o, start_factor=1.0, end_factor=min_frac, total_iters=d)
            if shape == "linear"
            else tls.CosineAnnealingLR(o, T_max=d, eta_min=low)
        )
        return tls.SequentialLR(
            o,
            [
                tls.LinearLR(o, start_factor=sf, total_iters=w),
                tls.ConstantLR(o, factor=1.0, total_iters=stable),
                decay,
            ],
            milestones=[w, w + stable],
        )

    theirs = torch_trace(peak, make, total)
    s = WarmupStableDecay(
        peak_lr=peak, warmup_steps=w, total_steps=total, decay_steps=d, decay_shape=shape,
        start_factor=sf, min_lr=low,
    )  # fmt: skip
    assert s.preview().lr.tolist() == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    assert ours(s, total) == pytest.approx(theirs, rel=1e-9, abs=1e-15)


def test_wsd_sqrt_cooldown_targets():
    """1 - sqrt cooldown (Hägele et al. 2024): hand-written values."""
    s = WarmupStableDecay(peak_lr=2.0, warmup_steps=0, total_steps=10, decay_steps=4)
    assert s.decay_shape == "sqrt"
    want = [2.0] * 6 + [2.0 * (1 - math.sqrt(k / 4)) for k in range(4)]
    assert s.preview().lr.tolist() == pytest.approx(want, rel=1e-15)
    frac = WarmupStableDecay(peak_lr=1.0, warmup_steps=10, total_steps=100, decay_fraction=0.2)
    assert frac.decay_steps == 20 and frac.lr(79) == 1.0 and frac.lr(80) == 1.0
    assert frac.lr(81) < 1.0
    assert schedule_from_dict(frac.to_dict()) == frac


def test_hugging_face_conventions():
    """start_factor=0: lr = peak t / W in the warmup (transformers' get_*_schedule_with_warmup)."""
    s = WarmupCosine(peak_lr=1.0, warmup_steps=4, total_steps=12)
    assert [s.lr(t) for t in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    progress = [(t - 4) / 8 for t in range(4, 12)]
    want = [0.5 * (1 + math.cos(math.pi * p)) for p in progress]
    assert [s.lr(t) for t in range(4, 12)] == pytest.approx(want, rel=1e-15)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: LinearWarmup(peak_lr=0.0, warmup_steps=3), "peak_lr"),
        (lambda: LinearWarmup(peak_lr=1.0, warmup_steps=-1), "warmup_steps"),
        (lambda: LinearWarmup(peak_lr=1.0, warmup_steps=3, start_factor=1.5), "start_factor"),
        (lambda: WarmupCosine(peak_lr=1.0, warmup_steps=10, total_steps=10), "warmup_steps"),
        (lambda: WarmupCosine(peak_lr=1.0, warmup_steps=1, total_steps=5, min_lr=2.0), "min_lr"),
        (
            lambda: WarmupStableDecay(peak_lr=1, warmup_steps=5, total_steps=10, decay_steps=6),
            "warmup_steps \\+ decay_steps",
        ),
        (
            lambda: WarmupStableDecay(peak_lr=1, warmup_steps=1, total_steps=9, decay_shape="x"),
            "decay_shape",
        ),
        (
            lambda: WarmupStableDecay(peak_lr=1, warmup_steps=1, total_steps=9, decay_fraction=0),
            "decay_fraction",
        ),
    ],
)
def test_warmup_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()
