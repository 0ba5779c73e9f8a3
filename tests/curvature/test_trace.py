"""Hutchinson and Hutch++ trace estimators on symmetric matrices with known traces (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spectra import NaNOperator, gen, spectrum_op

from hessian_lr.curvature.linop import DenseOperator
from hessian_lr.curvature.trace import (
    TRACE_METHODS,
    TraceResult,
    hutchinson_trace,
    hutchpp_trace,
    trace_estimate,
    xnystrace,
    xtrace,
)


def test_hutchinson_unbiased_and_std_error_calibrated():
    op, A = spectrum_op(np.linspace(-2.0, 5.0, 40), seed=0)
    exact = np.trace(A)
    runs = [
        hutchinson_trace(op, num_probes=10, batch_size=10, generator=gen(s)) for s in range(400)
    ]
    est = np.array([r.estimate for r in runs])
    se_of_mean = est.std(ddof=1) / np.sqrt(est.size)
    assert abs(est.mean() - exact) <= 4 * se_of_mean
    # the reported standard error matches the spread of the estimates across seeds
    reported = np.sqrt(np.mean([r.std_error**2 for r in runs]))
    assert reported == pytest.approx(est.std(ddof=1), rel=0.15)
    # Rademacher variance: 2 Σ_{i≠j} A_ij² per probe
    var_theory = 2 * (np.sum(A**2) - np.sum(np.diag(A) ** 2)) / 10
    assert est.var(ddof=1) == pytest.approx(var_theory, rel=0.2)
    assert all(isinstance(r, TraceResult) and r.method == "hutchinson" for r in runs[:3])


def test_hutchinson_exact_on_diagonal_and_counts():
    d = torch.tensor([1.0, -2.0, 3.5, 7.0], dtype=torch.float64)
    op = DenseOperator(torch.diag(d))
    before = op.num_matvecs
    res = hutchinson_trace(op, num_probes=7, batch_size=3, generator=gen())
    assert res.estimate == pytest.approx(9.5, abs=1e-12)
    assert res.std_error == pytest.approx(0.0, abs=1e-12)
    assert res.num_matvecs == 7 == op.num_matvecs - before
    assert np.isnan(hutchinson_trace(op, num_probes=1, generator=gen()).std_error)


def test_hutchinson_batching_does_not_change_the_draws():
    op, _ = spectrum_op(np.linspace(0, 1, 30), seed=1)
    one = hutchinson_trace(op, num_probes=20, batch_size=1, generator=gen(3))
    many = hutchinson_trace(op, num_probes=20, batch_size=8, generator=gen(3))
    assert one.estimate == pytest.approx(many.estimate, rel=1e-12)
    assert one.std_error == pytest.approx(many.std_error, rel=1e-9)


def test_hutchpp_unbiased():
    op, A = spectrum_op(np.linspace(-1.0, 3.0, 60), seed=2)
    exact = np.trace(A)
    est = np.array(
        [
            hutchpp_trace(op, num_matvecs=12, batch_size=4, generator=gen(s)).estimate
            for s in range(300)
        ]
    )
    assert abs(est.mean() - exact) <= 4 * est.std(ddof=1) / np.sqrt(est.size)


def test_hutchpp_beats_hutchinson_on_low_rank_dominated_matrix():
    # a Hessian-like spectrum: 10 large eigenvalues carry most of the trace
    lam = np.concatenate(
        [np.linspace(50.0, 100.0, 10), 0.1 * np.abs(np.random.default_rng(3).normal(size=190))]
    )
    op, A = spectrum_op(lam, seed=3)
    exact = np.trace(A)
    budget = 36
    err_h, err_pp = [], []
    for s in range(40):
        h = hutchinson_trace(op, num_probes=budget, batch_size=budget, generator=gen(s))
        pp = hutchpp_trace(op, num_matvecs=budget, batch_size=budget, generator=gen(s))
        assert h.num_matvecs == pp.num_matvecs == budget
        err_h.append(h.estimate - exact)
        err_pp.append(pp.estimate - exact)
    rmse_h = np.sqrt(np.mean(np.square(err_h)))
    rmse_pp = np.sqrt(np.mean(np.square(err_pp)))
    assert rmse_pp <= 0.1 * rmse_h, (rmse_pp, rmse_h)
    # the Hutchinson part's standard error is honest
    pp = hutchpp_trace(op, num_matvecs=budget, generator=gen(99))
    assert abs(pp.estimate - exact) <= 5 * pp.std_error


def test_hutchpp_exact_when_sketch_spans_the_space():
    op, A = spectrum_op(np.linspace(-3.0, 4.0, 8), seed=4)
    before = op.num_matvecs
    res = hutchpp_trace(op, num_matvecs=30, generator=gen())
    assert res.estimate == pytest.approx(np.trace(A), abs=1e-10)
    assert res.std_error == 0.0 and res.method == "hutch++"
    assert res.num_matvecs == op.num_matvecs - before == 10 + 8


def test_bad_inputs():
    op, _ = spectrum_op(np.arange(1.0, 6.0))
    with pytest.raises(ValueError, match="num_probes"):
        hutchinson_trace(op, num_probes=0)
    with pytest.raises(ValueError, match="batch_size"):
        hutchinson_trace(op, batch_size=0)
    with pytest.raises(ValueError, match="num_matvecs"):
        hutchpp_trace(op, num_matvecs=2)
    with pytest.raises(ValueError, match="NaN"):
        hutchinson_trace(NaNOperator(), num_probes=3)
    with pytest.raises(ValueError, match="NaN"):
        hutchpp_trace(NaNOperator(), num_matvecs=6)
    with pytest.raises(TypeError, match="linear operator"):
        hutchinson_trace(np.eye(3))


# ----------------------------------------------------------------------------- XTrace family
HESSIAN_LIKE = np.concatenate(
    [[40.0, 25.0, 10.0, -3.0], np.random.default_rng(0).normal(0, 0.5, 296)]
)


def test_xtrace_unbiased_and_standard_error_covers():
    op, A = spectrum_op(HESSIAN_LIKE, seed=1)
    exact = np.trace(A)
    runs = [xtrace(op, num_matvecs=30, batch_size=15, generator=gen(s)) for s in range(200)]
    est = np.array([r.estimate for r in runs])
    se = np.array([r.std_error for r in runs])
    assert all(r.num_matvecs == 30 and r.method == "xtrace" for r in runs)
    assert abs(est.mean() - exact) <= 4 * est.std(ddof=1) / np.sqrt(est.size)
    coverage = np.mean(np.abs(est - exact) <= 2 * se)
    assert 0.88 <= coverage <= 0.99, coverage  # measured 0.92 (≈ 95 %: see xtrace's docstring)
    assert np.sqrt(np.mean(se**2)) == pytest.approx(est.std(ddof=1), rel=0.3)


def test_xtrace_beats_hutchpp_and_hutchinson_at_equal_budget():
    lam = np.concatenate(
        [np.linspace(50.0, 100.0, 10), 0.1 * np.abs(np.random.default_rng(3).normal(size=190))]
    )
    op, A = spectrum_op(lam, seed=3)
    exact = np.trace(A)
    err = {"xtrace": [], "hutch++": [], "hutchinson": []}
    for s in range(30):
        for method in err:
            r = trace_estimate(op, 30, method=method, batch_size=30, generator=gen(s))
            err[method].append(abs(r.estimate - exact))
    med = {m: np.median(e) for m, e in err.items()}
    assert med["xtrace"] <= 0.7 * med["hutch++"] <= 0.7 * med["hutchinson"], med


def test_xnystrace_on_psd_and_refuses_indefinite():
    lam = 100 * np.arange(1, 201) ** -1.5
    op, A = spectrum_op(lam, seed=5)
    exact = np.trace(A)
    est = np.array([xnystrace(op, num_matvecs=20, generator=gen(s)).estimate for s in range(150)])
    assert abs(est.mean() - exact) <= 4 * est.std(ddof=1) / np.sqrt(est.size)
    assert np.median(np.abs(est - exact)) <= 0.05 * exact
    op_ind, _ = spectrum_op(np.concatenate([[5.0, -5.0], np.linspace(-1, 1, 98)]), seed=6)
    with pytest.raises(ValueError, match="positive semi-definite"):
        xnystrace(op_ind, num_matvecs=20, generator=gen(0))


def test_xtrace_exact_cases():
    # budget ≥ N: the exact trace from N products
    op, A = spectrum_op(np.linspace(-3.0, 4.0, 8), seed=4)
    res = xtrace(op, num_matvecs=10, generator=gen())
    assert res.method == "exact" and res.num_matvecs == 8 and res.std_error == 0.0
    assert res.estimate == pytest.approx(np.trace(A), abs=1e-12)
    # an exactly low-rank operator (rank 3 < m): the sketch holds its whole range
    lam = np.concatenate([[5.0, -2.0, 1.0], np.zeros(97)])
    op, A = spectrum_op(lam, seed=7)
    res = xtrace(op, num_matvecs=20, generator=gen(1))
    assert res.estimate == pytest.approx(4.0, abs=1e-8)


def test_trace_estimate_dispatch_and_bad_inputs():
    op, A = spectrum_op(np.linspace(1.0, 2.0, 50), seed=8)
    for method in TRACE_METHODS:
        r = trace_estimate(op, 12, method=method, generator=gen(0))
        assert r.num_matvecs <= 12 and abs(r.estimate - np.trace(A)) < 10
    assert trace_estimate(op, 12, generator=gen(0)).method == "xtrace"
    with pytest.raises(ValueError, match="method"):
        trace_estimate(op, 12, method="girard")
    with pytest.raises(ValueError, match="num_matvecs"):
        xtrace(op, num_matvecs=3)
