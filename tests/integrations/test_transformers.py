"""HessianLRTrainerCallback inside real Hugging Face ``Trainer`` runs (tiny GPT-2 from a config)."""

from __future__ import annotations

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers not installed")
pytest.importorskip("accelerate", reason="accelerate (needed by Trainer) not installed")

from hessian_lr.integrations.transformers import HessianLRTrainerCallback, hf_loss  # noqa: E402
from hessian_lr.lr import CurvatureOptions  # noqa: E402

VOCAB, SEQ = 40, 12


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0
    )
    return transformers.GPT2LMHeadModel(cfg)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _trainer(tmp_path, model, max_steps=6, save_steps=None):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=_Tokens())


def _held():
    ids = _Tokens(8).ids
    return {"input_ids": ids, "labels": ids}


def test_secant_and_held_batch_estimates_are_logged(tmp_path):
    model = _model()
    trainer = _trainer(tmp_path, model)
    cb = HessianLRTrainerCallback(every=2, held_batch=_held()).attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    logged = [h for h in trainer.state.log_history if any(k.startswith("hessian_lr/") for k in h)]
    keys = set().union(*logged)
    assert any(k.startswith("hessian_lr/held_estimates/quadratic") for k in keys)
    assert any(k.startswith("hessian_lr/estimates/secant") for k in keys)
    # the held-batch quadratic estimate matches a fresh one-shot computation at the same weights
    from hessian_lr import estimate_lr

    last = [r for r in cb.history if "held_estimates" in r][-1]
    assert last["step"] == 5
    one = estimate_lr(
        model, hf_loss, _held(), method="quadratic", curvature=CurvatureOptions(closure=True)
    )
    rec = last["held_estimates"]["quadratic"]
    assert rec["raw_lr"] == pytest.approx(one.raw_lr, rel=1e-5)  # flagged or not: same value
    assert tuple(rec["flags"]) == tuple(one.flags)


def test_callback_does_not_change_training(tmp_path):
    a = _model()
    _trainer(tmp_path / "a", a).train()
    b = _model()
    tb = _trainer(tmp_path / "b", b)
    HessianLRTrainerCallback(every=1, held_batch=_held()).attach(tb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tb.train()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_state_is_saved_with_checkpoints_and_restored(tmp_path):
    model = _model()
    trainer = _trainer(tmp_path, model, max_steps=4, save_steps=4)
    cb = HessianLRTrainerCallback(every=1).attach(trainer)
    trainer.train()
    est = cb.observers[0]
    assert (tmp_path / "checkpoint-4" / "hessian_lr_callback.pt").exists()
    model2 = _model()
    trainer2 = _trainer(tmp_path, model2, max_steps=6, save_steps=100)
    cb2 = HessianLRTrainerCallback(every=1).attach(trainer2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer2.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert [r["step"] for r in cb2.history] == [4, 5]
    assert cb2.observers[0].num_estimates("secant") == est.num_estimates("secant") + 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="every"):
        HessianLRTrainerCallback(every=0)
    with pytest.raises(ValueError, match="nothing to do"):
        HessianLRTrainerCallback(secant=False)
