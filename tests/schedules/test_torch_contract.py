"""ScheduleLR against the contract of PyTorch's own test_lrscheduler.py (hand-written targets).

PyTorch's tests use an SGD optimizer with two groups, LR 0.05 and a tensor LR 0.5; the targets
below are written out by hand from the closed forms (ours, not copied), group 1 = 10 × group 0.
"""

import math
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as tls

from hessian_lr.schedules import (
    SGDR,
    Constant,
    Cyclic,
    ExpDecay,
    LinearWarmup,
    MultiStep,
    OneCycle,
    OneCycleCosine,
    ScheduleLR,
    StepDecay,
    WarmupCosine,
    WarmupStableDecay,
)

REL = 1e-6  # group 1 holds a float32 tensor LR, as in PyTorch's tests


def two_groups():
    p0, p1 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [p0]}, {"params": [p1], "lr": torch.tensor(0.5)}], lr=0.05)


def lrs_of(opt):
    return [float(g["lr"]) for g in opt.param_groups]


def run(opt, sched, n, step=None):
    out = []
    for _t in range(n):
        out.append(lrs_of(opt))
        opt.step()
        (step or sched.step)()
    return out


def check(got, single_targets, ratios=(1.0, 10.0)):
    assert len(got) == len(single_targets)
    for t, (row, target) in enumerate(zip(got, single_targets)):
        for lr, r in zip(row, ratios):
            assert lr == pytest.approx(target * r, rel=REL), f"step {t}"


def test_multistep_two_groups_keep_their_ratio():
    opt = two_groups()
    sched = ScheduleLR(opt, MultiStep(base_lr=0.05, milestones=[2, 5, 9], gamma=0.1))
    check(run(opt, sched, 12), [0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 3)
    assert sched.base_lrs == pytest.approx([0.05, 0.5])


def test_step_and_exp_two_groups():
    opt = two_groups()
    check(
        run(opt, ScheduleLR(opt, StepDecay(base_lr=0.05, step_size=3, gamma=0.1)), 12),
        [0.05] * 3 + [0.005] * 3 + [0.0005] * 3 + [0.00005] * 3,
    )
    opt = two_groups()
    check(
        run(opt, ScheduleLR(opt, ExpDecay(base_lr=0.05, gamma=0.9)), 10),
        [0.05 * 0.9**t for t in range(10)],
    )


def test_group_lrs_same_is_cycliclr_scalar_behaviour():
    opt = two_groups()
    sched = ScheduleLR(opt, Cyclic(base_lr=1, max_lr=5, step_size_up=4), group_lrs="same")
    check(run(opt, sched, 11), [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3], ratios=(1.0, 1.0))
    with pytest.raises(ValueError, match="group_lrs"):
        ScheduleLR(two_groups(), Constant(base_lr=0.1), group_lrs="scaled")


def test_group_ratio_needs_positive_group_zero_lr():
    p0, p1 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p0], "lr": 0.0}, {"params": [p1], "lr": 0.1}], lr=0.1)
    with pytest.raises(ValueError, match="group 0 has initial LR 0.0"):
        ScheduleLR(opt, Constant(base_lr=0.1))


def test_repeated_milestones_apply_gamma_squared_like_torch():
    s = MultiStep(base_lr=0.05, milestones=[5, 2, 5], gamma=0.1)  # any order, as MultiStepLR
    assert s.milestones == (2, 5, 5)
    targets = [0.05] * 2 + [0.005] * 3 + [0.00005] * 5
    assert [s.lr(t) for t in range(10)] == pytest.approx(targets, rel=1e-12)
    opt_a, opt_b = two_groups(), two_groups()
    ours = run(opt_a, ScheduleLR(opt_a, s), 10)
    theirs = run(opt_b, tls.MultiStepLR(opt_b, milestones=[5, 2, 5], gamma=0.1), 10)
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=REL)


@pytest.mark.parametrize("order", ["linear_first", "schedule_first"])
def test_chained_scheduler_multiplies_like_torch(order):
    """PyTorch's test_chained_lr3 with MultiStepLR replaced by ScheduleLR(MultiStep)."""
    opt = two_groups()
    make = [
        lambda: tls.LinearLR(opt, start_factor=0.4, total_iters=3),
        lambda: ScheduleLR(opt, MultiStep(base_lr=0.05, milestones=[4, 8, 10], gamma=0.1)),
    ]
    scheds = [f() for f in (make if order == "linear_first" else make[::-1])]
    chained = tls.ChainedScheduler(scheds)
    targets = [0.02, 0.03, 0.04, 0.05] + [0.005] * 4 + [0.0005] * 2 + [0.00005] * 2
    check(run(opt, chained, 12), targets)
    assert chained.get_last_lr() == scheds[-1].get_last_lr()


def test_chained_closed_form_schedule_with_linear_warmup_factor():
    """ChainedScheduler([LinearLR, ScheduleLR(Cyclic)]): the product, never above max_lr."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cyc = Cyclic(base_lr=0.01, max_lr=0.03, step_size_up=2)
    chained = tls.ChainedScheduler(
        [tls.LinearLR(opt, start_factor=0.5, total_iters=4), ScheduleLR(opt, cyc)]
    )
    got = [lr for (lr,) in run(opt, chained, 10)]
    factor = [0.5 + 0.5 * min(t, 4) / 4 for t in range(10)]
    assert got == pytest.approx([cyc.lr(t) * f for t, f in zip(range(10), factor)], rel=1e-12)
    assert max(got) <= 0.03


def test_sequential_then_closed_form_restart():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    seq = tls.SequentialLR(
        opt,
        [
            tls.ConstantLR(opt, factor=0.1, total_iters=3),
            ScheduleLR(opt, ExpDecay(base_lr=0.05, gamma=0.9)),
        ],
        milestones=[3],
    )
    got = [lr for (lr,) in run(opt, seq, 13)]
    assert got == pytest.approx([0.005] * 3 + [0.05 * 0.9**t for t in range(10)], rel=1e-12)


def test_epoch_argument_is_deprecated_closed_form_like_torch():
    """step(epoch): PyTorch's deprecation warning, the closed form at that epoch (constant)."""
    opt = two_groups()
    sched = ScheduleLR(opt, StepDecay(base_lr=0.05, step_size=2, gamma=0.1))
    seen = []
    for _ in range(5):
        opt.step()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            sched.step(2)
        assert [str(x.message) for x in w] == [tls.EPOCH_DEPRECATION_WARNING]
        seen.append(lrs_of(opt)[0])
    assert min(seen) == max(seen) == pytest.approx(0.005)
    # epochs out of order, as _test_with_epoch does: each value is the closed form there
    for epoch, want in [(7, 0.00005), (0, 0.05), (3, 0.005)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step(epoch)
        assert lrs_of(opt) == pytest.approx([want, 10 * want], rel=REL)


def test_float_epochs_like_cosine_annealing_warm_restarts():
    """PyTorch's interleaved float-epoch test of CosineAnnealingWarmRestarts (T_mult = 3)."""
    eta_min = 1e-10
    epochs = [0, 0.1, 0.2, 0.3, 1.3, 2.3, 17.5, 18.5, 19.5, 29.5, 30.5, 31.5, 50]
    T_curs = [0, 0.1, 0.2, 0.3, 1.3, 2.3, 7.5, 8.5, 9.5, 19.5, 20.5, 21.5, 10]
    T_is = [10, 10, 10, 10, 10, 10, 30, 30, 30, 30, 30, 30, 90]
    opt = two_groups()
    sched = ScheduleLR(opt, SGDR(eta_max=0.05, T_0=10, T_mult=3, eta_min=eta_min))
    for epoch, T_cur, T_i in zip(epochs, T_curs, T_is):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step(epoch)
        want = eta_min + (0.05 - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2
        assert lrs_of(opt)[0] == pytest.approx(want, rel=1e-9), epoch
        assert lrs_of(opt)[1] == pytest.approx(10 * want - 9 * 0, rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=">= 0"):
            sched.step(-0.5)
        with pytest.raises(TypeError, match="epoch"):
            sched.step("1")


def test_float_epoch_inside_a_cycle():
    s = Cyclic(base_lr=0.1, max_lr=0.5, step_size_up=2, mode="triangular2")
    assert s.lr_at(1.5) == pytest.approx(0.1 + 0.4 * 0.75)
    assert s.lr_at(5.0) == s.lr(5)  # integral values are the integer steps
    assert OneCycleCosine(max_lr=1.0, total_steps=10).lr_at(9.0) == OneCycleCosine(
        max_lr=1.0, total_steps=10
    ).lr(9)
    with pytest.raises(ValueError, match="past the end"):
        OneCycleCosine(max_lr=1.0, total_steps=10).lr_at(9.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OneCycleCosine(max_lr=1.0),
        lambda: OneCycle(base_lr=0.1, max_lr=1.0, step_size=5),
        lambda: WarmupCosine(peak_lr=1.0, warmup_steps=5),
        lambda: WarmupStableDecay(peak_lr=1.0, warmup_steps=5),
    ],
)
def test_missing_total_steps_is_a_value_error_like_torch(make):
    with pytest.raises(ValueError, match="needs total_steps"):
        make()
    with pytest.raises(ValueError):
        tls.OneCycleLR(two_groups(), max_lr=1.0)  # PyTorch: ValueError as well


def test_state_dict_round_trip_keeps_chain_factor():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lin = tls.LinearLR(opt, start_factor=0.5, total_iters=10)
    ours = ScheduleLR(opt, LinearWarmup(peak_lr=0.1, warmup_steps=4, start_factor=0.2))
    chained = tls.ChainedScheduler([lin, ours])
    run(opt, chained, 3)  # three steps: LinearLR's factor is 0.5 + 0.5 * 3/10
    state = ours.state_dict()
    assert state["chain_factors"][0] == pytest.approx(0.65, rel=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * (0.2 + 0.8 * 3 / 4) * 0.65)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    other = ScheduleLR(opt2, Constant(base_lr=0.1))
    other.load_state_dict(state)
    assert other.chain_factors == ours.chain_factors and other.last_epoch == ours.last_epoch


def test_resume_by_last_epoch_is_closed_form():
    opt = two_groups()
    for g in opt.param_groups:
        g["initial_lr"] = float(g["lr"])
    sched = ScheduleLR(opt, ExpDecay(base_lr=0.05, gamma=0.9), last_epoch=4)
    assert lrs_of(opt) == pytest.approx([0.05 * 0.9**5, 0.5 * 0.9**5], rel=REL)
    assert sched.chain_factors == [1.0, 1.0]
