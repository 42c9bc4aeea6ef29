"""Weights-only loading of fairseq checkpoints under torch >= 2.6.

torch >= 2.6 unpickles checkpoints with ``weights_only=True``: only tensors, containers and
allow-listed types may appear. A fairseq 0.12 checkpoint also stores an ``argparse.Namespace``
(legacy model configs) and may hold numpy scalars and dtypes in its training state; in
multi-process training fairseq broadcasts the loaded state, whose config is then an omegaconf
``DictConfig``, through ``torch.load`` too (with its tensors replaced by index placeholders). We add exactly those plain-data types to torch's
allow-list, which keeps every other global (and so any code a crafted pickle would run)
refused. Weights-only loading is never switched off.
"""

from __future__ import annotations

import argparse
import collections
import typing
from typing import List

import numpy as np
import omegaconf
import torch
from fairseq.distributed.utils import _TensorPlaceholder
from omegaconf import base as omegaconf_base
from omegaconf import nodes as omegaconf_nodes


def fairseq_checkpoint_types() -> List[object]:
    """The non-tensor types a fairseq 0.12 checkpoint (or its broadcast state) holds, all plain data."""
    numpy_dtype_classes = [type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool")]
    omegaconf_types = [
        omegaconf.DictConfig,
        omegaconf.ListConfig,
        omegaconf_base.Metadata,
        omegaconf_base.ContainerMetadata,
        *(getattr(omegaconf_nodes, name) for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode")),
        typing.Any,  # the declared type of untyped config values
        collections.defaultdict,  # omegaconf's metadata flags; its factory must be allow-listed too
        dict,
        list,
        int,
        float,
        str,
        bool,
    ]
    return [
        argparse.Namespace,
        _TensorPlaceholder,  # a frozen dataclass holding one int: where a broadcast tensor goes back
        *omegaconf_types,
        np.dtype,
        np.ndarray,
        np._core.multiarray.scalar,
        np._core.multiarray._reconstruct,
        *numpy_dtype_classes,
    ]


def allow_fairseq_checkpoint_types() -> None:
    """Allow-list :func:`fairseq_checkpoint_types` for ``torch.load(weights_only=True)``; idempotent."""
    torch.serialization.add_safe_globals(fairseq_checkpoint_types())
