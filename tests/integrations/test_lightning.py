"""HessianLRCallback inside real ``lightning`` training runs (CPU, a few steps)."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch", reason="lightning not installed (extra [lightning])")

from hessian_lr import LREstimator  # noqa: E402
from hessian_lr.integrations.lightning import HessianLRCallback  # noqa: E402
from hessian_lr.observe import Observer  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _loader(n: int = 64, bs: int = 8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=False)


class ParamNorm(Observer):
    """A deterministic observer: ‖θ‖ after the step (the value the test can recompute)."""

    name = "param_norm"

    def __init__(self, every: int = 2) -> None:
        self.every = every
        self.calls = 0

    def observe(self, ctx):
        self.calls += 1
        norm = torch.cat([p.detach().flatten() for p in ctx.model.parameters()]).norm()
        return {"param_norm": float(norm), "calls": self.calls}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def _fit(tmp_path, callbacks, max_steps=6, ckpt_path=None, logger=False):
    torch.manual_seed(0)
    model = Tiny()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, _loader(), ckpt_path=ckpt_path)
    return trainer, model


def _estimator_factory(model, opt):
    return LREstimator(
        model,
        methods=("secant", "quadratic"),
        every=2,
        loss_fn=nn.CrossEntropyLoss(),
        optimizer=opt,
    )


def test_records_reach_the_logger_and_history(tmp_path):
    logger = pl.loggers.CSVLogger(tmp_path, name="csv")
    cb = HessianLRCallback([ParamNorm(every=2), _estimator_factory])
    _, model = _fit(tmp_path, [cb], logger=logger)
    assert [r["step"] for r in cb.history] == [1, 3, 5]  # both observers run every 2nd step
    norms = [r for r in cb.history if "param_norm" in r]
    assert [r["step"] for r in norms] == [1, 3, 5]
    final = torch.cat([p.detach().flatten() for p in model.parameters()]).norm()
    assert norms[-1]["param_norm"] == pytest.approx(float(final), rel=1e-6)
    # the quadratic estimate is logged at the estimator's steps, a positive finite LR
    est = [r for r in cb.history if "estimates" in r]
    assert est and all("quadratic" in r["estimates"] for r in est)
    logger.finalize("success")
    with open(logger.experiment.metrics_file_path) as f:
        rows = list(csv.DictReader(f))
    cols = set(rows[0])
    assert "hessian_lr/param_norm" in cols
    assert any(c.startswith("hessian_lr/estimates/quadratic") for c in cols)
    # Lightning repeats a callback's last value until it is logged again: one row per step
    by_step = {float(r["hessian_lr/step"]): float(r["hessian_lr/param_norm"]) for r in rows}
    assert sorted(by_step) == [1.0, 3.0, 5.0]
    assert [by_step[s] for s in (1.0, 3.0, 5.0)] == pytest.approx([r["param_norm"] for r in norms])


def test_callback_does_not_change_training(tmp_path):
    _, plain = _fit(tmp_path / "a", [])
    _, observed = _fit(tmp_path / "b", [HessianLRCallback([ParamNorm(1), _estimator_factory])])
    for p, q in zip(plain.parameters(), observed.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_round_trip_restores_observer_state(tmp_path):
    cb = HessianLRCallback([ParamNorm(every=1)])
    trainer, _ = _fit(tmp_path, [cb], max_steps=4)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    assert cb.observers[0].calls == 4
    cb2 = HessianLRCallback([ParamNorm(every=1)])
    _fit(tmp_path, [cb2], max_steps=6, ckpt_path=str(ckpt))
    assert cb2.observers[0].calls == 6  # 4 restored + 2 new
    assert [r["step"] for r in cb2.history] == [4, 5]


def test_wrong_observer_list_on_resume_is_refused(tmp_path):
    cb = HessianLRCallback([ParamNorm(every=1)])
    trainer, _ = _fit(tmp_path, [cb], max_steps=2)
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    other = HessianLRCallback([ParamNorm(every=1), ParamNorm(every=2)])
    with pytest.raises(ValueError, match="same observers"):
        _fit(tmp_path, [other], max_steps=4, ckpt_path=str(ckpt))


def test_factory_must_return_an_observer(tmp_path):
    with pytest.raises(TypeError, match="Observer"):
        _fit(tmp_path, [HessianLRCallback([lambda m, o: object()])], max_steps=1)


class SeesBatch(Observer):
    """Records the batch each step's observers get (issue 22: gradient accumulation)."""

    name = "sees_batch"

    def __init__(self) -> None:
        self.batches = []

    def observe(self, ctx):
        self.batches.append(ctx.batch)
        return {"n": 1.0}


def test_gradient_accumulation_measures_every_micro_batch(tmp_path):
    from hessian_lr.lr import estimate_lr

    torch.manual_seed(0)
    model = Tiny()
    model.net[2].p = 0.0  # no dropout: the estimate is a function of the batch
    seen = SeesBatch()
    est = []
    cb = HessianLRCallback(
        [
            seen,
            lambda m, o: (
                est.append(
                    LREstimator(
                        m,
                        methods=("quadratic",),
                        every=1,
                        loss_fn=nn.CrossEntropyLoss(),
                        optimizer=o,
                    )  # fmt: skip
                )
                or est[-1]
            ),
        ]
    )
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, accumulate_grad_batches=3, callbacks=[cb], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, _loader())
    assert len(seen.batches) == 2
    loader = list(_loader())
    for step, got in enumerate(seen.batches):
        assert isinstance(got, list) and len(got) == 3  # all three micro-batches
        for (x, y), (x0, y0) in zip(got, loader[3 * step : 3 * step + 3]):
            assert torch.equal(x, x0) and torch.equal(y, y0)
    # the quadratic estimate is the one on the union of the micro-batches (equal sizes: the
    # mean over 24 examples), not on the last micro-batch alone
    last = cb.history[-1]["estimates"]["quadratic"]["lr"]
    xs = torch.cat([b[0] for b in loader[3:6]])
    ys = torch.cat([b[1] for b in loader[3:6]])
    union = estimate_lr(model, nn.CrossEntropyLoss(), (xs, ys), method="quadratic").lr
    only_last = estimate_lr(model, nn.CrossEntropyLoss(), loader[5], method="quadratic").lr
    assert last == pytest.approx(union, rel=1e-5)
    assert abs(only_last - union) > 1e-3 * union
