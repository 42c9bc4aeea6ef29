"""Weights-only loading inside fairseq's own training, under torch >= 2.6.

A checkpoint file needs only the plain-data types of :mod:`intradist.checkpoint_safety`
(an ``argparse.Namespace``, omegaconf configs, numpy values). In multi-process training fairseq
also broadcasts the loaded state through ``torch.load``, with its tensors replaced by
``_TensorPlaceholder`` objects (a frozen dataclass holding one int: where a broadcast tensor goes
back). This adds exactly that type; every other global stays refused, and weights-only loading is
never switched off.
"""

from __future__ import annotations

from typing import List

import torch
from fairseq.distributed.utils import _TensorPlaceholder

from intradist.checkpoint_safety import plain_checkpoint_types


def fairseq_checkpoint_types() -> List[object]:
    """The non-tensor types a fairseq 0.12 checkpoint or its broadcast state holds, all plain data."""
    return [*plain_checkpoint_types(), _TensorPlaceholder]


def allow_fairseq_checkpoint_types() -> None:
    """Allow-list :func:`fairseq_checkpoint_types` for ``torch.load(weights_only=True)``; idempotent."""
    torch.serialization.add_safe_globals(fairseq_checkpoint_types())
