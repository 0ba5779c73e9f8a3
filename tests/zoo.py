"""A model zoo shared by the test suite: small models that real users bring, with dense references.

Each case is named after what it exercises and returns a :class:`Case` -- ``model``, ``loss_fn``
(``loss_fn(outputs, targets)``, or ``loss_fn(model, batch)`` when ``closure``), ``data`` (one
batch, a list of batches, or a DataLoader) and ``meta`` -- unpackable as
``model, loss_fn, data, meta = case``. Every case is tiny (N ≤ ~2k parameters) so that its dense
float64 Hessian takes well under a second.

``dense_hessian(case, bn_mode=...)`` is the independent reference: ``jacfwd(grad(f))`` over
``functional_call`` (never ``torch.func.hessian``: wrong on train-mode BatchNorm in torch 2.13),
in float64 on an upcast copy of the model, differentiating w.r.t. the *unique* trainable
parameters (tied weights counted once, tied by ``functional_call(..., tie_weights=True)``), with
every module in eval mode except BatchNorm in ``bn_mode``, under the math attention kernel. The
objective follows the case's definition: ``mean`` = Σ_b c_b L_b / Σ_b c_b with c_b the number of
elements the batch's mean averaged over (``meta["count_fn"]``: targets ≠ ignore_index for token
losses), ``sum`` = Σ_b L_b.

Usage::

    from zoo import ZOO, dense_hessian
    case = ZOO["tiny_gpt"]()
    H, names = dense_hessian(case)
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacfwd
from torch.nn.utils.stateless import _reparametrize_module

DT = torch.float64
IGNORE = -100

__all__ = [
    "Case",
    "ZOO",
    "EXACT_CASES",
    "LOW_PRECISION_CASES",
    "CHANGING_CASES",
    "dense_hessian",
    "dense_gradient",
    "reference_objective",
    "rel_error",
    "unique_params",
]


@dataclass
class Case:
    """One zoo entry. ``meta`` gathers everything but model, loss and data."""

    name: str
    model: nn.Module
    loss_fn: Callable[..., torch.Tensor]
    data: Any
    closure: bool = False
    single_batch: bool = True
    reduction: str = "mean"  # the objective: mean over counted elements, or the sum
    bn_modes: tuple[str, ...] = ("eval",)
    count_fn: Callable[[Any], int] | None = None  # elements a batch's mean averages over
    smooth: bool = True  # twice differentiable everywhere (finite differences meaningful)
    changing: bool = False  # the data changes between passes: the operator must refuse it
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "closure": self.closure,
            "single_batch": self.single_batch,
            "reduction": self.reduction,
            "bn_modes": self.bn_modes,
            "count_fn": self.count_fn,
            "smooth": self.smooth,
            "changing": self.changing,
            "notes": self.notes,
            **self.extra,
        }

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.loss_fn, self.data, self.meta))

    def batches(self) -> list[Any]:
        """The batches of one pass (a single batch becomes a list of one)."""
        return [self.data] if self.single_batch else list(self.data)

    def operator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that tell ``HessianOperator`` what this case's objective is."""
        kw: dict[str, Any] = {"closure": self.closure}
        if self.reduction != "mean" or self.closure:
            kw["reduction"] = self.reduction
        return kw


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _targets_count(batch: Any) -> int:
    """Counted tokens: targets ≠ IGNORE (the mean of CrossEntropyLoss(ignore_index=IGNORE))."""
    return int((batch[1] != IGNORE).sum())


# ---------------------------------------------------------------------------------- models
class TinyGPT(nn.Module):
    """nanoGPT in miniature: tied token embedding / head, LayerNorm, causal SDPA, GELU, dropout."""

    def __init__(self, vocab: int = 9, d: int = 6, heads: int = 2, block: int = 5, p=0.1):
        super().__init__()
        self.heads, self.p = heads, p
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(block, d)
        self.drop = nn.Dropout(p)
        self.ln1, self.ln2, self.ln_f = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight  # weight tying (nanoGPT, GPT-2)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        x = self.drop(self.tok(idx) + self.pos(torch.arange(T, device=idx.device)))
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, -1)))
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))
        return self.head(self.ln_f(x))


def token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the tokens of (B, T, V) logits and (B, T) targets."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


class OptionABlock(nn.Module):
    """ResNet basic block with the parameter-free option-A shortcut (He et al. 2016, CIFAR)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        sc = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            sc = F.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return torch.relu(out + sc)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 3, 3, 1, 1, bias=False), nn.BatchNorm2d(3))
        self.b1 = OptionABlock(3, 3, 1)
        self.b2 = OptionABlock(3, 4, 2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b2(self.b1(torch.relu(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


class RecurrentClassifier(nn.Module):
    def __init__(self, cell: type[nn.RNNBase] = nn.GRU):
        super().__init__()
        self.rnn = cell(3, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class WithUnused(nn.Module):
    """A module the forward never touches and an auxiliary head this loss does not use."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
        self.never_called = nn.Linear(4, 4)
        self.main_head = nn.Linear(6, 3)
        self.aux_head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.main_head(h), self.aux_head(h)


class DictInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
        self.scale = nn.Parameter(torch.ones(5))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(inputs["x"] * self.scale + inputs["offset"])


class SequenceTagger(nn.Module):
    """Per-token logits (B, V, T), the layout ``nn.CrossEntropyLoss`` takes for sequences."""

    def __init__(self, vocab: int = 7, d: int = 5, classes: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mix = nn.Conv1d(d, d, 3, padding=1)
        self.out = nn.Linear(d, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.mix(self.emb(idx).transpose(1, 2))).transpose(1, 2)
        return self.out(h).transpose(1, 2)


class MHAModel(nn.Module):
    def __init__(self, d: int = 6):
        super().__init__()
        self.inp = nn.Linear(3, d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head((h + a).mean(dim=1))


class EncoderLayerModel(nn.Module):
    """``nn.TransformerEncoderLayer`` (fused fast path and SDPA inside) + a pooled head."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.inp = nn.Linear(3, d)
        self.enc = nn.TransformerEncoderLayer(d, 2, 12, dropout=0.1, batch_first=True)
        self.head = nn.Linear(d, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x)).mean(dim=1))


def _tanh_mlp(seed: int = 0, sizes=(5, 7, 3)) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.Tanh(), nn.Linear(sizes[1], sizes[2]))


def _xy(n: int, shape: tuple[int, ...], classes: int = 3, seed: int = 0, dtype=DT):
    g = _gen(seed)
    return torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(
        0, classes, (n,), generator=g
    )


def _randomize_bn(model: nn.Module) -> None:
    g = _gen(99)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.normal_(0, 0.2, generator=g)


# ---------------------------------------------------------------------------------- cases
def tiny_gpt(dtype: torch.dtype = DT) -> Case:
    """Tied embedding/head, LayerNorm, causal SDPA, GELU; dropout ON (module in train mode)."""
    torch.manual_seed(0)
    model = TinyGPT().to(dtype).train()
    g = _gen(1)
    idx = torch.randint(0, 9, (3, 5), generator=g)
    tgt = torch.randint(0, 9, (3, 5), generator=g)
    return Case(
        "tiny_gpt",
        model,
        token_ce,
        (idx, tgt),
        count_fn=_targets_count,
        notes="tied tok/head weights; SDPA needs the math kernel for double backward/forward AD",
    )


def tiny_gpt_bfloat16() -> Case:
    case = tiny_gpt(torch.bfloat16)
    case.name = "tiny_gpt_bfloat16"
    return case


def bn_resnet(dtype: torch.dtype = DT) -> Case:
    """Tiny option-A ResNet with BatchNorm (non-trivial running stats); both BN modes."""
    torch.manual_seed(2)
    model = TinyResNet()
    _randomize_bn(model)
    model = model.to(dtype).train()
    x, y = _xy(8, (1, 6, 6), seed=3, dtype=dtype)
    return Case("bn_resnet", model, nn.CrossEntropyLoss(), (x, y), bn_modes=("eval", "train"))


def gru_classifier(dtype: torch.dtype = DT) -> Case:
    """GRU over a (B, T, 3) sequence, last hidden state -> 3 classes."""
    torch.manual_seed(4)
    model = RecurrentClassifier(nn.GRU).to(dtype)
    x, y = _xy(6, (4, 3), seed=5, dtype=dtype)
    return Case("gru_classifier", model, nn.CrossEntropyLoss(), (x, y))


def lstm_classifier(dtype: torch.dtype = DT) -> Case:
    torch.manual_seed(6)
    model = RecurrentClassifier(nn.LSTM).to(dtype)
    x, y = _xy(6, (4, 3), seed=7, dtype=dtype)
    return Case("lstm_classifier", model, nn.CrossEntropyLoss(), (x, y))


def unused_parameters(dtype: torch.dtype = DT) -> Case:
    """A never-called module and an auxiliary head: their rows/columns of H are zero."""
    torch.manual_seed(8)
    model = WithUnused().to(dtype)
    x, y = _xy(7, (5,), seed=9, dtype=dtype)

    def main_loss(outputs, targets):
        return F.cross_entropy(outputs[0], targets)

    return Case(
        "unused_parameters",
        model,
        main_loss,
        (x, y),
        extra={"unused": ("never_called.weight", "never_called.bias", "aux_head.")},
    )


def dict_input(dtype: torch.dtype = DT) -> Case:
    """One batch ``({"x": X, "offset": O}, y)``: a pytree input, not an iterable of two batches."""
    torch.manual_seed(10)
    model = DictInput().to(dtype)
    x, y = _xy(6, (5,), seed=11, dtype=dtype)
    offset = torch.randn(6, 5, generator=_gen(12), dtype=dtype)
    return Case("dict_input", model, nn.CrossEntropyLoss(), ({"x": x, "offset": offset}, y))


def dict_batch_closure(dtype: torch.dtype = DT) -> Case:
    """A closure over a dict batch ``{"image": X, "label": y}`` (one batch)."""
    model = _tanh_mlp(13).to(dtype)
    x, y = _xy(6, (5,), seed=14, dtype=dtype)

    def closure(m, batch):
        return F.cross_entropy(m(batch["image"]), batch["label"])

    return Case("dict_batch_closure", model, closure, {"image": x, "label": y}, closure=True)


def sequence_ignore_index(dtype: torch.dtype = DT) -> Case:
    """Token CE with ``ignore_index`` over two batches of sequence length 5 and 8."""
    torch.manual_seed(15)
    model = SequenceTagger().to(dtype)
    g = _gen(16)
    batches = []
    for n, t in ((3, 5), (2, 8)):
        idx = torch.randint(0, 7, (n, t), generator=g)
        tgt = torch.randint(0, 4, (n, t), generator=g)
        tgt[torch.rand(n, t, generator=g) < 0.3] = IGNORE
        batches.append((idx, tgt))
    return Case(
        "sequence_ignore_index",
        model,
        nn.CrossEntropyLoss(ignore_index=IGNORE),
        batches,
        single_batch=False,
        count_fn=_targets_count,
    )


def mse_mean_unequal_batches(dtype: torch.dtype = DT) -> Case:
    """nn.MSELoss (mean) over three batches of 3, 7 and 1 samples: the mean over all samples."""
    model = _tanh_mlp(17, (4, 6, 2)).to(dtype)
    g = _gen(18)
    x, y = (
        torch.randn(11, 4, generator=g, dtype=dtype),
        torch.randn(11, 2, generator=g, dtype=dtype),
    )
    batches = [(x[:3], y[:3]), (x[3:10], y[3:10]), (x[10:], y[10:])]
    return Case("mse_mean_unequal_batches", model, nn.MSELoss(), batches, single_batch=False)


def mse_sum_unequal_batches(dtype: torch.dtype = DT) -> Case:
    """nn.MSELoss(reduction="sum") over unequal batches: the Hessian of the summed objective."""
    case = mse_mean_unequal_batches(dtype)
    return Case(
        "mse_sum_unequal_batches",
        case.model,
        nn.MSELoss(reduction="sum"),
        case.data,
        single_batch=False,
        reduction="sum",
    )


def ce_unequal_batches(dtype: torch.dtype = DT) -> Case:
    model = _tanh_mlp(19).to(dtype)
    x, y = _xy(11, (5,), seed=20, dtype=dtype)
    batches = [(x[:3], y[:3]), (x[3:10], y[3:10]), (x[10:], y[10:])]
    return Case("ce_unequal_batches", model, nn.CrossEntropyLoss(), batches, single_batch=False)


def closure_sum_batches(dtype: torch.dtype = DT) -> Case:
    """A closure whose loss is a sum over its batch; the user says ``reduction="sum"``."""
    model = _tanh_mlp(21).to(dtype)
    x, y = _xy(9, (5,), seed=22, dtype=dtype)

    def closure(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1], reduction="sum")

    return Case(
        "closure_sum_batches",
        model,
        closure,
        [(x[:4], y[:4]), (x[4:], y[4:])],
        closure=True,
        single_batch=False,
        reduction="sum",
    )


def loader_fixed_order(dtype: torch.dtype = DT) -> Case:
    """A plain (non-shuffling) DataLoader with a short last batch."""
    model = _tanh_mlp(23).to(dtype)
    x, y = _xy(10, (5,), seed=24, dtype=dtype)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    return Case("loader_fixed_order", model, nn.CrossEntropyLoss(), loader, single_batch=False)


def loader_shuffle_full_epoch(dtype: torch.dtype = DT) -> Case:
    """Shuffling without drop_last: batches change, the mean over the epoch does not."""
    model = _tanh_mlp(25).to(dtype)
    x, y = _xy(10, (5,), seed=26, dtype=dtype)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=True, generator=_gen(27)
    )
    return Case(
        "loader_shuffle_full_epoch", model, nn.CrossEntropyLoss(), loader, single_batch=False
    )


def loader_shuffle_drop_last(dtype: torch.dtype = DT) -> Case:
    """Shuffling with drop_last: each pass sees other samples. Must be detected."""
    model = _tanh_mlp(28).to(dtype)
    x, y = _xy(10, (5,), seed=29, dtype=dtype)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=4,
        shuffle=True,
        drop_last=True,
        generator=_gen(30),
    )
    return Case(
        "loader_shuffle_drop_last",
        model,
        nn.CrossEntropyLoss(),
        loader,
        single_batch=False,
        changing=True,
    )


def loader_shuffle_bn_train(dtype: torch.dtype = DT) -> Case:
    """Train-mode BatchNorm over reshuffled batches: batch statistics change. Must be detected."""
    torch.manual_seed(31)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
    _randomize_bn(model)
    model = model.to(dtype)
    x, y = _xy(12, (5,), seed=32, dtype=dtype)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=4, shuffle=True, generator=_gen(33)
    )
    return Case(
        "loader_shuffle_bn_train",
        model,
        nn.CrossEntropyLoss(),
        loader,
        single_batch=False,
        bn_modes=("train",),
        changing=True,
    )


def multihead_attention(dtype: torch.dtype = DT) -> Case:
    """nn.MultiheadAttention in eval mode (its fused fast path would be taken without grad)."""
    torch.manual_seed(34)
    model = MHAModel().to(dtype).eval()
    g = _gen(35)
    x, y = torch.randn(5, 4, 3, generator=g, dtype=dtype), torch.randint(0, 2, (5,), generator=g)
    return Case("multihead_attention", model, nn.CrossEntropyLoss(), (x, y))


def transformer_encoder_layer(dtype: torch.dtype = DT) -> Case:
    """nn.TransformerEncoderLayer (SDPA inside, fast path in eval), dropout 0.1."""
    torch.manual_seed(36)
    model = EncoderLayerModel().to(dtype).eval()
    g = _gen(37)
    x, y = torch.randn(4, 5, 3, generator=g, dtype=dtype), torch.randint(0, 2, (4,), generator=g)
    return Case("transformer_encoder_layer", model, nn.CrossEntropyLoss(), (x, y))


def mlp_low_precision(dtype: torch.dtype) -> Case:
    model = _tanh_mlp(38).to(dtype)
    x, y = _xy(8, (5,), seed=39, dtype=dtype)
    return Case(f"mlp_{str(dtype).split('.')[-1]}", model, nn.CrossEntropyLoss(), (x, y))


ZOO: dict[str, Callable[[], Case]] = {
    "tiny_gpt": tiny_gpt,
    "bn_resnet": bn_resnet,
    "gru_classifier": gru_classifier,
    "lstm_classifier": lstm_classifier,
    "unused_parameters": unused_parameters,
    "dict_input": dict_input,
    "dict_batch_closure": dict_batch_closure,
    "sequence_ignore_index": sequence_ignore_index,
    "mse_mean_unequal_batches": mse_mean_unequal_batches,
    "mse_sum_unequal_batches": mse_sum_unequal_batches,
    "ce_unequal_batches": ce_unequal_batches,
    "closure_sum_batches": closure_sum_batches,
    "loader_fixed_order": loader_fixed_order,
    "loader_shuffle_full_epoch": loader_shuffle_full_epoch,
    "loader_shuffle_drop_last": loader_shuffle_drop_last,
    "loader_shuffle_bn_train": loader_shuffle_bn_train,
    "multihead_attention": multihead_attention,
    "transformer_encoder_layer": transformer_encoder_layer,
    "mlp_float16": lambda: mlp_low_precision(torch.float16),
    "mlp_bfloat16": lambda: mlp_low_precision(torch.bfloat16),
    "tiny_gpt_bfloat16": tiny_gpt_bfloat16,
}
#: Cases with low-precision parameters: products in float32, compared at float32 tolerance.
LOW_PRECISION_CASES = ["mlp_float16", "mlp_bfloat16", "tiny_gpt_bfloat16"]
#: Cases whose data changes between passes: the operator must refuse them.
CHANGING_CASES = ["loader_shuffle_drop_last", "loader_shuffle_bn_train"]
#: Cases whose operator must match the dense float64 reference to ~1e-10.
EXACT_CASES = [n for n in ZOO if n not in LOW_PRECISION_CASES + CHANGING_CASES]


# ---------------------------------------------------------------------------------- reference
def unique_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters, each tensor once (the first name of a tied weight)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_cast(v, dtype) for v in tree)
    return tree


@contextlib.contextmanager
def _twice_differentiable() -> Iterator[None]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def _count(case: Case, batch: Any) -> float:
    if case.count_fn is not None:
        return float(case.count_fn(batch))
    loss = case.loss_fn
    target = batch[1] if isinstance(batch, (tuple, list)) else None
    if isinstance(loss, nn.MSELoss) and target is not None:
        return float(target.numel())
    first = batch[0] if isinstance(batch, (tuple, list)) else next(iter(batch.values()))
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return float(first.shape[0])


def reference_objective(
    case: Case, bn_mode: str = "eval", names: list[str] | None = None
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, list[str]]:
    """(f, θ0, names): the case's objective as a function of a flat float64 parameter vector.

    ``names`` restricts to a subset (in the given order); the rest stay fixed.
    """
    model = copy.deepcopy(case.model).to(DT)
    for m in model.modules():
        m.training = False
        if bn_mode == "train" and isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.training, m.track_running_stats = True, False
    named = dict(unique_params(model))
    if names is None:
        names = list(named)
    sel = [named[n].detach() for n in names]
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in names}
    batches = [_cast(b, DT) for b in case.batches()]
    counts = [_count(case, b) for b in batches]
    total = sum(counts)

    def loss_of(ps: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        if case.closure:
            with _reparametrize_module(model, ps, tie_weights=True):
                return case.loss_fn(model, batch)
        inputs, targets = batch
        out = functional_call(model, ps, (inputs,), tie_weights=True)
        if type(case.loss_fn) is nn.MSELoss and case.loss_fn.reduction == "mean":
            # the same number; mean-reduced mse_loss has no forward AD in torch 2.13
            return (
                F.mse_loss(out, targets, reduction="sum")
                / torch.broadcast_shapes(out.shape, targets.shape).numel()
            )
        return case.loss_fn(out, targets)

    def f(flat: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(flat, [p.numel() for p in sel])
        ps = {**fixed, **{n: t.view_as(p) for n, t, p in zip(names, pieces, sel)}}
        with _twice_differentiable():
            losses = [loss_of(ps, b) for b in batches if case.reduction == "sum" or _count(case, b)]
        if case.reduction == "sum":
            return sum(losses)
        kept = [c for c in counts if c]
        return sum(c * loss for c, loss in zip(kept, losses)) / total

    return f, torch.cat([p.reshape(-1) for p in sel]), names


def dense_hessian(
    case: Case, bn_mode: str = "eval", names: list[str] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """(H, names): the float64 Hessian of the case's objective w.r.t. its unique parameters.

    ``names`` restricts to a subset (in the given order); the rest stay fixed.
    """
    f, theta, names = reference_objective(case, bn_mode, names)
    H = jacfwd(grad(f))(theta)
    scale = float(H.abs().max())
    if not torch.allclose(H, H.T, rtol=0, atol=1e-11 * max(scale, 1e-300)):
        raise AssertionError(f"{case.name}: reference Hessian not symmetric")
    return H, names


def dense_gradient(
    case: Case, bn_mode: str = "eval", names: list[str] | None = None
) -> tuple[float, torch.Tensor]:
    """(objective, gradient) in float64 at the case's parameters."""
    f, theta, _ = reference_objective(case, bn_mode, names)
    return float(f(theta)), grad(f)(theta)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (0 when both are zero)."""
    denom = float(b.norm())
    diff = float((a - b).norm())
    return diff / denom if denom > 0 else (0.0 if diff == 0 else math.inf)
