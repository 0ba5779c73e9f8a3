"""plot_estimates draws the expected artists from real estimator records (no image comparison)."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from hessian_lr import LREstimator  # noqa: E402
from hessian_lr.lr.plotting import plot_estimates  # noqa: E402


def _history():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    est = LREstimator(
        model,
        methods=("secant", "quadratic"),
        every=1,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=opt,
    )
    for _ in range(12):
        x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        est.step((x, y))
    return est.history


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_plot_estimates_draws_raw_ema_lr_and_null():
    hist = _history()
    fig = plot_estimates(hist)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "LR in use ε" in labels
    assert {"secant (raw)", "secant (EMA)", "quadratic (raw)", "quadratic (EMA)"} <= set(labels)
    null = next(line for line in ax.get_lines() if "noise null" in line.get_label())
    # the dashed line is ε·c(μ, s): raw / noise_ratio of each secant record
    rec = [h for h in hist if "secant" in h["estimates"]][-1]["estimates"]["secant"]
    y = null.get_ydata()[-1]
    assert y == pytest.approx(rec["raw_lr"] / rec["noise_ratio"])
    lr_line = next(line for line in ax.get_lines() if line.get_label() == "LR in use ε")
    assert list(lr_line.get_ydata()) == pytest.approx([h["lr"] for h in hist])


def test_plot_estimates_needs_estimates():
    with pytest.raises(ValueError, match="no estimates"):
        plot_estimates([{"step": 0, "lr": 0.1}])
