"""The range-test recipe: the same test as a hand-built setup, from the runner's initialisation,
without touching the caller's RNG."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessian_lr.range_test import lr_range_test
from hessian_lr.training.data import load_dataset, make_loader
from hessian_lr.training.models import build_model
from hessian_lr.training.recipes import RangeTestSetup, range_test_from_config


def test_recipe_equals_the_hand_built_range_test_and_leaves_the_rng_alone():
    cfg = RangeTestSetup(model="mlp", model_kwargs={"hidden": [16]}, batch_size=64,
                          num_steps=12, end_lr=2.0, val_every=4, val_examples=100, seed=3,
                          device="cpu")  # fmt: skip
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    res = range_test_from_config(cfg)
    assert torch.equal(torch.get_rng_state(), before)

    # What cli.py, demo.py and f2 each wrote by hand before the recipe existed.
    train_data = load_dataset("digits", split="train", seed=3)
    test = load_dataset("digits", split="test").subset(100, seed=3)
    torch.manual_seed(3)
    model = build_model("mlp", num_classes=10, in_channels=1, input_size=8, hidden=[16])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    loader = make_loader(train_data, 64, shuffle=True, seed=3, drop_last=True)
    ref = lr_range_test(model, opt, loader, loss_fn=nn.CrossEntropyLoss(), start_lr=0.0,
                        end_lr=2.0, num_steps=12, val_data=test.tensors, val_every=4)  # fmt: skip
    assert res.lrs == ref.lrs and res.losses == ref.losses
    assert res.val_accuracies == ref.val_accuracies
    assert res.curvature.lambda_max == pytest.approx(ref.curvature.lambda_max, rel=1e-6)


def test_recipe_config_validation():
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        RangeTestSetup(start_lr=1.0, end_lr=0.5)
    with pytest.raises(ValueError, match="momentum"):
        RangeTestSetup(momentum=1.0)
    with pytest.raises(ValueError, match="num_steps"):
        RangeTestSetup(num_steps=0)
