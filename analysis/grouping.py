"""Which group a parameter belongs to, from its dotted name alone, for any framework's naming.

A transformer block is the module whose name ends in the first all-digit component of a
parameter's dotted path: fairseq ``encoder.layers.3``, Hugging Face BERT ``bert.encoder.layer.3``,
torchvision ResNet ``layer2.1``. Grouping by names (not by module classes) works the same for
fairseq, transformers, torchvision and plain torch models without importing any of them.

Attention heads cannot be read from names; :func:`attention_head_groups` finds them from the
attention modules' attributes (``num_heads``/``head_dim`` or ``num_attention_heads``/
``attention_head_size``).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from torch import nn

from intradist.errors import UserError

#: The granularities a per-parameter sensitivity can be summarised at (see :func:`group_of`).
GRANULARITIES: Tuple[str, ...] = ("parameter", "tensor", "module", "layer", "module_type")

#: The module path of a parameter that belongs to the root module itself (name without a dot).
ROOT_MODULE = "(root)"

#: The role of a parameter owned by the numbered block itself (e.g. ``features.0.weight``).
BLOCK_ROLE = "(block)"

#: What a layer index becomes in a module type: ``encoder.layers.3.fc1`` -> ``encoder.layers.*.fc1``.
LAYER_WILDCARD = "*"

#: A parameter slice: its name and the index that selects the slice (``tensor[index]``).
ParameterSlice = Tuple[str, tuple]

_INDEX = re.compile(r"[0-9]+")


def _split(name: str) -> Tuple[List[str], Optional[int]]:
    """The module path's components and the position of the first all-digit one (None if none)."""
    components = name.split(".")[:-1]
    position = next((i for i, part in enumerate(components) if _INDEX.fullmatch(part)), None)
    return components, position


def module_of(name: str) -> str:
    """The module path: the name without its final attribute (``encoder.layers.3.fc1.weight`` ->
    ``encoder.layers.3.fc1``); :data:`ROOT_MODULE` for a parameter of the root module."""
    components, _ = _split(name)
    return ".".join(components) if components else ROOT_MODULE


def layer_of(name: str) -> str:
    """The block a parameter sits in: the prefix up to and including the first all-digit component
    (``bert.encoder.layer.3.attention.self.query.weight`` -> ``bert.encoder.layer.3``,
    ``layer2.1.conv1.weight`` -> ``layer2.1``); without one, the module path
    (``decoder.embed_tokens.weight`` -> ``decoder.embed_tokens``)."""
    components, position = _split(name)
    if position is None:
        return module_of(name)
    return ".".join(components[: position + 1])


def module_type_of(name: str) -> str:
    """The module path with the layer index replaced by ``*``, to group the same module across
    layers (``encoder.layers.3.fc1.weight`` -> ``encoder.layers.*.fc1``); without an index, the
    module path."""
    components, position = _split(name)
    if position is None:
        return module_of(name)
    return ".".join([*components[:position], LAYER_WILDCARD, *components[position + 1 :]])


def role_of(name: str) -> Optional[str]:
    """The module path inside the block (``encoder.layers.3.self_attn.k_proj.weight`` ->
    ``self_attn.k_proj``), :data:`BLOCK_ROLE` for the block's own parameters, None outside any
    numbered block. With :func:`layer_of` it indexes a layer x module-type heatmap."""
    components, position = _split(name)
    if position is None:
        return None
    return ".".join(components[position + 1 :]) or BLOCK_ROLE


def group_of(name: str, granularity: str) -> str:
    """The group of parameter ``name`` at ``granularity`` (one of :data:`GRANULARITIES`).

    "parameter" and "tensor" both give the tensor's name: per-parameter values are summarised per
    tensor, never listed one row per scalar.
    """
    if granularity in ("parameter", "tensor"):
        return name
    if granularity == "module":
        return module_of(name)
    if granularity == "layer":
        return layer_of(name)
    if granularity == "module_type":
        return module_type_of(name)
    raise UserError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")


def _projection_rows(module: nn.Module, name: str, projections: Tuple[str, str, str]) -> List[Tuple[str, int]]:
    """The weight and bias (when present) of each projection child, each with row offset 0."""
    children = dict(module.named_children())
    return [(f"{name}{child}.{attribute}", 0) for child in projections for attribute in ("weight", "bias")
            if getattr(children[child], attribute, None) is not None]  # fmt: skip


def _attention_layout(module: nn.Module, prefix: str) -> Optional[Tuple[int, int, List[Tuple[str, int]], List[str]]]:
    """For an attention module: (number of heads, head size d, the (tensor, row offset) pairs whose
    rows offset + h*d .. offset + (h+1)*d - 1 belong to head h, the tensors whose last dimension
    is split by head); None for any other module."""
    children = set(dict(module.named_children()))
    name = f"{prefix}." if prefix else ""
    split = [f"{name}{bias}" for bias in ("bias_k", "bias_v") if getattr(module, bias, None) is not None]
    fairseq = ("q_proj", "k_proj", "v_proj")
    if hasattr(module, "num_heads") and hasattr(module, "head_dim") and set(fairseq) <= children:
        return int(module.num_heads), int(module.head_dim), _projection_rows(module, name, fairseq), split
    bert = ("query", "key", "value")
    if hasattr(module, "num_attention_heads") and hasattr(module, "attention_head_size") and set(bert) <= children:
        return int(module.num_attention_heads), int(module.attention_head_size), _projection_rows(module, name, bert), split
    if isinstance(module, nn.MultiheadAttention):
        width = module.embed_dim
        if module.in_proj_weight is not None:  # packed: query rows, then key rows, then value rows
            rows = [(f"{name}in_proj_weight", block * width) for block in range(3)]
        else:  # separate weights when the key/value sizes differ
            rows = [(f"{name}{part}_proj_weight", 0) for part in "qkv"]
        if module.in_proj_bias is not None:
            rows += [(f"{name}in_proj_bias", block * width) for block in range(3)]
        return module.num_heads, module.head_dim, rows, split
    return None


def attention_head_groups(model: nn.Module) -> Dict[str, List[ParameterSlice]]:
    """Every attention head of ``model`` -> the parameter slices whose zeroing removes that head.

    Detected by attributes and child names, without importing the frameworks: fairseq's
    MultiheadAttention (``num_heads``, ``head_dim``, children ``q_proj``/``k_proj``/``v_proj``),
    Hugging Face BERT-style self-attention (``num_attention_heads``, ``attention_head_size``,
    children ``query``/``key``/``value``) and torch.nn.MultiheadAttention. Group names are the
    module's name plus the head index: ``encoder.layers.0.self_attn.head3``.

    Head h owns rows h*d..(h+1)*d-1 of the query, key and value projections' weights and biases
    (d = head size). Zeroing them makes the head's values zero, so its output (attention-weighted
    values) is zero: the head is removed. Also zeroed: the head's part of fairseq's and torch's
    extra key/value biases (``add_bias_kv``, split along the last dimension).
    """
    groups: Dict[str, List[ParameterSlice]] = {}
    for prefix, module in model.named_modules():
        layout = _attention_layout(module, prefix)
        if layout is None:
            continue
        heads, size, rows, split = layout
        for h in range(heads):
            slices = [(tensor, (slice(offset + h * size, offset + (h + 1) * size),)) for tensor, offset in rows]
            slices += [(tensor, (Ellipsis, slice(h * size, (h + 1) * size))) for tensor in split]
            groups[f"{prefix}.head{h}" if prefix else f"head{h}"] = slices
    return groups
