"""Parameter names map to layers, modules and module types for fairseq, BERT and torchvision naming;
attention heads map to the query/key/value rows that make them up."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from intradist.analysis.grouping import (
    BLOCK_ROLE,
    GRANULARITIES,
    ROOT_MODULE,
    attention_head_groups,
    group_of,
    layer_of,
    module_of,
    module_type_of,
    role_of,
)
from intradist.errors import UserError

# name -> (layer, module, module type, role)
NAMES = {
    # fairseq transformer
    "encoder.layers.3.self_attn.k_proj.weight": ("encoder.layers.3", "encoder.layers.3.self_attn.k_proj", "encoder.layers.*.self_attn.k_proj", "self_attn.k_proj"),
    "decoder.layers.0.encoder_attn_layer_norm.bias": ("decoder.layers.0", "decoder.layers.0.encoder_attn_layer_norm", "decoder.layers.*.encoder_attn_layer_norm", "encoder_attn_layer_norm"),
    "decoder.embed_tokens.weight": ("decoder.embed_tokens", "decoder.embed_tokens", "decoder.embed_tokens", None),
    # Hugging Face BERT
    "bert.encoder.layer.3.attention.self.query.weight": ("bert.encoder.layer.3", "bert.encoder.layer.3.attention.self.query", "bert.encoder.layer.*.attention.self.query", "attention.self.query"),
    "bert.encoder.layer.11.output.LayerNorm.weight": ("bert.encoder.layer.11", "bert.encoder.layer.11.output.LayerNorm", "bert.encoder.layer.*.output.LayerNorm", "output.LayerNorm"),
    "bert.embeddings.word_embeddings.weight": ("bert.embeddings.word_embeddings", "bert.embeddings.word_embeddings", "bert.embeddings.word_embeddings", None),
    "classifier.bias": ("classifier", "classifier", "classifier", None),
    # torchvision ResNet and VGG: only the first index is the layer; later ones stay in the type
    "layer2.1.conv1.weight": ("layer2.1", "layer2.1.conv1", "layer2.*.conv1", "conv1"),
    "layer3.0.downsample.1.running_var": ("layer3.0", "layer3.0.downsample.1", "layer3.*.downsample.1", "downsample.1"),
    "features.10.weight": ("features.10", "features.10", "features.*", BLOCK_ROLE),
    "fc.weight": ("fc", "fc", "fc", None),
    # a parameter of the root module itself (e.g. a bare nn.Linear)
    "weight": (ROOT_MODULE, ROOT_MODULE, ROOT_MODULE, None),
}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_layer_module_type_and_role_follow_the_first_numeric_component(name):
    layer, module, module_type, role = NAMES[name]
    assert layer_of(name) == layer
    assert module_of(name) == module
    assert module_type_of(name) == module_type
    assert role_of(name) == role


def test_a_component_with_digits_and_letters_is_not_a_layer_index():
    assert layer_of("encoder.layer2x.fc.weight") == "encoder.layer2x.fc"
    assert module_type_of("blocks.07.mlp.weight") == "blocks.*.mlp"


def test_group_of_picks_the_granularity():
    name = "encoder.layers.3.fc1.weight"
    assert [group_of(name, g) for g in GRANULARITIES] == [name, name, "encoder.layers.3.fc1", "encoder.layers.3", "encoder.layers.*.fc1"]
    with pytest.raises(UserError, match="unknown granularity 'block'.*parameter, tensor, module, layer, module_type"):
        group_of(name, "block")


class FairseqMultiheadAttention(nn.Module):
    """fairseq's MultiheadAttention layout (attribute and child names), with add_bias_kv."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(embed_dim, embed_dim) for _ in range(4))
        self.bias_k = nn.Parameter(torch.randn(1, 1, embed_dim))
        self.bias_v = nn.Parameter(torch.randn(1, 1, embed_dim))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head outputs before out_proj, [batch, heads, length, head_dim] (no bias_kv position)."""
        batch, length, _ = x.shape
        q, k, v = (p(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        return weights @ v


class BertSelfAttention(nn.Module):
    """Hugging Face BERT's self-attention layout (attribute and child names)."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, hidden // heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))


def fairseq_like() -> nn.Module:
    layer = nn.Module()
    layer.self_attn = FairseqMultiheadAttention(8, 2)
    layer.fc1 = nn.Linear(8, 8)
    encoder = nn.Module()
    encoder.layers = nn.ModuleList([layer])
    model = nn.Module()
    model.encoder = encoder
    return model


def bert_like() -> nn.Module:
    attention = nn.Module()
    attention.self = BertSelfAttention(12, 3)
    attention.output = nn.Linear(12, 12)
    block = nn.Module()
    block.attention = attention
    encoder = nn.Module()
    encoder.layer = nn.ModuleList([nn.Module(), block])
    bert = nn.Module()
    bert.encoder = encoder
    model = nn.Module()
    model.bert = bert
    return model


def zero(model: nn.Module, slices) -> None:
    with torch.no_grad():
        for tensor, index in slices:
            model.get_parameter(tensor)[index] = 0


def changed_rows(before: torch.Tensor, after: torch.Tensor, dim: int) -> set:
    """Indices along ``dim`` where any entry differs."""
    differs = (before != after).movedim(dim, 0).reshape(before.shape[dim], -1).any(dim=1)
    return set(torch.nonzero(differs).flatten().tolist())


def test_fairseq_heads_are_their_query_key_value_rows_and_bias_kv_entries():
    model = fairseq_like()
    groups = attention_head_groups(model)
    assert list(groups) == ["encoder.layers.0.self_attn.head0", "encoder.layers.0.self_attn.head1"]
    prefix = "encoder.layers.0.self_attn."
    expected = [(f"{prefix}{p}.{a}", (slice(4, 8),)) for p in ("q_proj", "k_proj", "v_proj") for a in ("weight", "bias")]
    expected += [(f"{prefix}bias_k", (Ellipsis, slice(4, 8))), (f"{prefix}bias_v", (Ellipsis, slice(4, 8)))]
    assert groups[f"{prefix}head1"] == expected
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    zero(model, groups[f"{prefix}head1"])
    for name, p in model.named_parameters():
        if name.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias")):
            assert changed_rows(before[name], p, dim=0) == {4, 5, 6, 7}, name
            assert (p[4:8] == 0).all() and torch.equal(p[:4], before[name][:4])
        elif name.endswith(("bias_k", "bias_v")):
            assert changed_rows(before[name], p, dim=2) == {4, 5, 6, 7}, name
        else:
            assert torch.equal(p, before[name]), name


def test_zeroing_a_fairseq_head_makes_that_head_output_zero_and_leaves_the_other():
    model = fairseq_like()
    attention = model.encoder.layers[0].self_attn
    x = torch.randn(3, 5, 8)
    before = attention.heads(x).detach()
    zero(model, attention_head_groups(model)["encoder.layers.0.self_attn.head0"])
    after = attention.heads(x).detach()
    assert (after[:, 0] == 0).all()
    assert torch.equal(after[:, 1], before[:, 1])


def test_bert_heads_are_their_query_key_value_rows():
    model = bert_like()
    groups = attention_head_groups(model)
    prefix = "bert.encoder.layer.1.attention.self."
    assert list(groups) == [f"{prefix}head{h}" for h in range(3)]
    assert groups[f"{prefix}head2"] == [(f"{prefix}{p}.{a}", (slice(8, 12),)) for p in ("query", "key", "value") for a in ("weight", "bias")]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    zero(model, groups[f"{prefix}head2"])
    for name, p in model.named_parameters():
        expected = {8, 9, 10, 11} if ".self." in name else set()
        assert changed_rows(before[name], p, dim=0) == expected, name


@pytest.mark.parametrize("kdim", [None, 6], ids=["packed", "separate"])
def test_zeroing_a_torch_multihead_attention_head_equals_dropping_its_output_columns(kdim):
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 4, kdim=kdim, vdim=kdim, batch_first=True).eval()
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 5, kdim or 8)
    groups = attention_head_groups(attention)
    assert list(groups) == ["head0", "head1", "head2", "head3"]
    # Reference: head 2 removed by zeroing its columns of the output projection instead.
    reference = nn.MultiheadAttention(8, 4, kdim=kdim, vdim=kdim, batch_first=True).eval()
    reference.load_state_dict(attention.state_dict())
    with torch.no_grad():
        reference.out_proj.weight[:, 4:6] = 0
        expected = reference(query, memory, memory, need_weights=False)[0]
    zero(attention, groups["head2"])
    with torch.no_grad():
        actual = attention(query, memory, memory, need_weights=False)[0]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_a_model_without_attention_has_no_head_groups():
    assert attention_head_groups(nn.Sequential(nn.Linear(2, 2), nn.Tanh())) == {}
