"""Weights-only loading of fairseq checkpoints under torch >= 2.6.

torch >= 2.6 unpickles checkpoints with ``weights_only=True``: only tensors, containers and
allow-listed types may appear. A fairseq 0.12 checkpoint also stores an ``argparse.Namespace``
(legacy model configs), and numpy scalars and dtypes in its training state. We add exactly those
types to torch's allow-list, which keeps every other global (and so any code a crafted pickle
would run) refused. Weights-only loading is never switched off.
"""

from __future__ import annotations

import argparse
from typing import List

import numpy as np
import torch


def fairseq_checkpoint_types() -> List[object]:
    """The non-tensor types a fairseq 0.12 checkpoint holds, all of them plain data."""
    numpy_dtype_classes = [type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return [
        argparse.Namespace,
        np.dtype,
        np.ndarray,
        np._core.multiarray.scalar,
        np._core.multiarray._reconstruct,
        *numpy_dtype_classes,
    ]


def allow_fairseq_checkpoint_types() -> None:
    """Allow-list :func:`fairseq_checkpoint_types` for ``torch.load(weights_only=True)``; idempotent."""
    torch.serialization.add_safe_globals(fairseq_checkpoint_types())
