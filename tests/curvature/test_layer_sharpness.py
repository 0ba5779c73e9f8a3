"""Block restriction and per-layer λ_max against eigenvalues of dense float64 diagonal blocks."""

from __future__ import annotations

import pytest
import torch
from output_reference import dense_empirical_fisher, dense_ggn
from zoo import ZOO, dense_hessian, rel_error

from hessian_lr.curvature import (
    BlockOperator,
    DenseOperator,
    FisherOperator,
    GGNOperator,
    HessianOperator,
    LayerSharpness,
    layer_blocks,
    layer_sharpness,
)

DT = torch.float64
REFERENCES = {
    "hessian": lambda case, names: dense_hessian(case, names=names)[0],
    "ggn": lambda case, names: dense_ggn(case, names=names),
    "fisher": lambda case, names: dense_empirical_fisher(case, names=names),
}
OPERATORS = {"hessian": HessianOperator, "ggn": GGNOperator, "fisher": FisherOperator}


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "fisher"])
def test_block_operator_is_the_dense_diagonal_block(curvature):
    case = ZOO["unused_parameters"]()
    op = OPERATORS[curvature](case.model, case.loss_fn, case.data)
    names = ["main_head.bias", "body.0.weight"]  # any order: the block follows op's order
    block = BlockOperator(op, names)
    assert block.names == ["body.0.weight", "main_head.bias"]
    ref = REFERENCES[curvature](case, block.names)
    assert rel_error(block.to_dense(), ref) < 1e-10


def test_layer_blocks_group_by_module_and_count_tied_weights_once():
    case = ZOO["tiny_gpt"]()
    blocks = layer_blocks(case.model)
    assert blocks["tok"] == ["tok.weight"] and "head" not in blocks  # head.weight is tok.weight
    assert blocks["qkv"] == ["qkv.weight", "qkv.bias"]
    flat = [n for names in blocks.values() for n in names]
    assert flat == [n for n, _ in case.model.named_parameters()]


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "fisher"])
def test_layer_sharpness_equals_the_top_eigenvalue_of_each_dense_block(curvature):
    case = ZOO["sequence_ignore_index"]()
    state = torch.get_rng_state()
    res = layer_sharpness(case.model, case.loss_fn, case.data, curvature=curvature, tol=1e-8)
    assert torch.equal(state, torch.get_rng_state())
    assert isinstance(res, LayerSharpness) and res.curvature == curvature
    assert res.blocks == ("emb", "mix", "out")
    for block, lam, n, conv in zip(res.blocks, res.lambda_max, res.num_params, res.converged):
        names = layer_blocks(case.model)[block]
        ref = REFERENCES[curvature](case, names)
        top = float(torch.linalg.eigvalsh(ref)[-1])
        assert conv and n == ref.shape[0]
        assert abs(lam - top) <= 1e-7 * abs(top), (block, lam, top)
    assert res.as_dict()["out"] == res.lambda_max[2]
    assert res.num_matvecs > 0
    with pytest.raises(AttributeError):
        res.curvature = "ggn"  # frozen


@pytest.mark.slow
def test_layer_sharpness_on_tied_weights_and_train_mode_batchnorm():
    case = ZOO["tiny_gpt"]()
    blocks = {"embedding (tied head)": ["head.weight"], "attention": ["qkv.weight", "qkv.bias"]}
    res = layer_sharpness(
        case.model,
        case.loss_fn,
        case.data,
        curvature="ggn",
        blocks=blocks,
        tol=1e-8,
        batch_size_fn=case.count_fn,
    )
    for lam, names in zip(res.lambda_max, (["tok.weight"], ["qkv.weight", "qkv.bias"])):
        top = float(torch.linalg.eigvalsh(dense_ggn(case, names=names))[-1])
        assert abs(lam - top) <= 1e-7 * top
    bn = ZOO["bn_resnet"]()
    res = layer_sharpness(
        bn.model, bn.loss_fn, bn.data, blocks={"fc": ["fc.weight", "fc.bias"]}, bn_mode="train"
    )
    top = float(torch.linalg.eigvalsh(dense_hessian(bn, "train", ["fc.weight", "fc.bias"])[0])[-1])
    assert abs(res.lambda_max[0] - top) <= 1e-5 * abs(top)


def test_bad_arguments():
    case = ZOO["dict_input"]()
    with pytest.raises(ValueError, match="blocks="):
        layer_sharpness(case.model, case.loss_fn, case.data, params=["scale"])
    with pytest.raises(ValueError, match="curvature"):
        layer_sharpness(case.model, case.loss_fn, case.data, curvature="kfac")
    with pytest.raises(ValueError, match="empty"):
        layer_sharpness(case.model, case.loss_fn, case.data, blocks={})
    op = HessianOperator(case.model, case.loss_fn, case.data)
    with pytest.raises(ValueError, match="not parameters"):
        BlockOperator(op, ["nope"])
    with pytest.raises(TypeError, match="names"):
        BlockOperator(DenseOperator(torch.eye(3, dtype=DT)), ["a"])
