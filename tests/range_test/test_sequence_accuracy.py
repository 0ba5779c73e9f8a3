"""Issue 22: held-out accuracy for sequence outputs (B, T, C) in the evaluation and range test."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessian_lr.range_test.evaluation import evaluate


class TokenModel(nn.Module):
    """(B, T) token ids -> (B, T, C) logits; C classes."""

    def __init__(self, vocab: int = 7) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.out = nn.Linear(8, vocab)

    def forward(self, ids):
        return self.out(torch.tanh(self.emb(ids)))


class SeqLoss(nn.Module):
    """Token-level cross-entropy for (B, T, C) logits, ignore_index like nn.CrossEntropyLoss."""

    ignore_index = -100

    def forward(self, logits, targets):
        return nn.functional.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=-100
        )


def _data():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (6, 5), generator=g)
    targets = torch.randint(0, 7, (6, 5), generator=g)
    targets[0, 3:] = -100  # padding
    return ids, targets


def test_sequence_accuracy_counts_labelled_tokens():
    torch.manual_seed(0)
    model = TokenModel()
    ids, targets = _data()
    ev = evaluate(model, [(ids[:3], targets[:3]), (ids[3:], targets[3:])], SeqLoss())
    with torch.no_grad():
        pred = model(ids).argmax(-1)
    mask = targets != -100
    want = ((pred == targets) & mask).sum().item() / mask.sum().item()
    assert ev.accuracy == pytest.approx(want, rel=1e-15)
    # cross_entropy's own layout (B, C, T) gives the same number

    class Transposed(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x).transpose(1, 2)

    ev3 = evaluate(Transposed(model), (ids, targets), nn.CrossEntropyLoss())
    assert ev3.accuracy == pytest.approx(want, rel=1e-15)


def test_range_test_reports_accuracy_for_sequence_outputs():
    from hessian_lr.range_test import lr_range_test

    torch.manual_seed(0)
    model = TokenModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids, targets = _data()
    res = lr_range_test(
        model, opt, [(ids, targets)] * 4, loss_fn=SeqLoss(), start_lr=1e-3, end_lr=1.0,
        num_steps=4, val_data=[(ids, targets)], curvature_check=False,
    )  # fmt: skip
    accs = res.val_accuracies
    assert accs is not None and len(accs) > 0
    assert all(a is not None and 0.0 <= a <= 1.0 for a in accs)
