"""Weights-only loading of checkpoints that hold configs and numpy values, under torch >= 2.6.

torch >= 2.6 unpickles with ``weights_only=True``: only tensors, containers and allow-listed types
may appear. Checkpoints of fairseq 0.12 (and many training scripts) also store an
``argparse.Namespace`` (legacy configs), omegaconf ``DictConfig`` objects (fairseq's Hydra
configs) and numpy scalars and dtypes (training state). These are plain data; we add exactly them
to torch's allow-list, which keeps every other global (and so any code a crafted pickle would
run) refused. Weights-only loading is never switched off. This module imports no fairseq: the
analysis reads fairseq checkpoints from disk without it; the fairseq plugin adds the one type of
fairseq's own that appears only inside multi-process training (``user_dir.checkpoint_safety``).
"""

from __future__ import annotations

import argparse
import collections
import pickle
import re
import typing
from pathlib import Path
from typing import List, Optional

import numpy as np
import omegaconf
import torch
from omegaconf import base as omegaconf_base
from omegaconf import nodes as omegaconf_nodes


def plain_checkpoint_types() -> List[object]:
    """The non-tensor types a fairseq 0.12 checkpoint file holds, all plain data."""
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
        argparse.Namespace,  # fairseq's legacy model configs
        *omegaconf_types,
        np.dtype,
        np.ndarray,
        np._core.multiarray.scalar,
        np._core.multiarray._reconstruct,
        *numpy_dtype_classes,
    ]


def allow_plain_checkpoint_types() -> None:
    """Allow-list :func:`plain_checkpoint_types` for ``torch.load(weights_only=True)``; idempotent."""
    torch.serialization.add_safe_globals(plain_checkpoint_types())


def refusal(error: BaseException, path: Optional[Path] = None) -> Optional[str]:
    """Why weights-only loading refused a file, in words; None when ``error`` is no such refusal.

    torch raises the same ``UnpicklingError`` for a pickle that needs a global it does not allow
    (say ``posix.system``: code a crafted file would run) and for bytes it cannot read at all
    ("Unsupported operand 63"); the two need different advice. An unreadable operand in a file
    that starts as a pickle does (``path``, a protocol 2-5 header) is still a pickle to refuse.
    """
    message = str(error)
    if not isinstance(error, pickle.UnpicklingError) or not message.startswith("Weights only load failed"):
        return None
    operand = re.search(r"Unsupported operand \d+", message)
    if operand is not None and not (path is not None and _starts_as_a_pickle(path)):
        return f"not a PyTorch checkpoint ({operand.group(0)})"
    found = re.search(r"GLOBAL ([\w.]+)", message)
    return f"needs arbitrary unpickling ({found.group(1) if found else 'a type torch does not allow'})"


def _starts_as_a_pickle(path: Path) -> bool:
    """Whether a file begins with a pickle's PROTO opcode and a protocol number of 2 to 5."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5
