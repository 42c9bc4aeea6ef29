"""Reading checkpoint files without running code from them.

Every pickle (``.pt``, ``.pth``, ``.bin``) is read with ``torch.load(weights_only=True)`` after
:mod:`intradist.checkpoint_safety` allow-listed the plain-data types fairseq stores;
``.safetensors`` holds no code at all. A file whose unpickling needs any other global is refused
unless the caller trusts it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Tuple

import safetensors.torch
import torch

from intradist.checkpoint_safety import allow_plain_checkpoint_types, refusal
from intradist.errors import UserError


def read_weights(path: Path, trust_checkpoint: bool) -> Tuple[Any, bool]:
    """The content of a ``.safetensors`` file or a pickle, and whether reading it needed trust."""
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path), device="cpu"), False
        except Exception as error:  # safetensors reports a bad header or truncated data in one exception type
            raise UserError(f"{path}: cannot be read as a .safetensors file, truncated or corrupt ({first_line(error)})")
    return torch_load(path, trust_checkpoint)


def torch_load(path: Path, trust_checkpoint: bool, trust_offered: bool = True) -> Tuple[Any, bool]:
    """``torch.load`` weights-only; with trust, falls back to full unpickling when the file needs it.
    ``trust_offered``: whether the command has ``--trust-checkpoint`` to suggest in a refusal."""
    allow_plain_checkpoint_types()
    try:
        return torch.load(path, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError as error:
        reason = refusal(error, path)
        if reason is None:
            raise UserError(f"{path}: cannot be read as a PyTorch checkpoint, truncated or corrupt ({first_line(error)})")
        if not reason.startswith("needs arbitrary unpickling"):
            raise UserError(f"{path}: {reason}") from None
        if not trust_checkpoint:
            hint = ("pass --trust-checkpoint only if you trust its source" if trust_offered
                    else "weights are read weights-only (save the model with safetensors)")  # fmt: skip
            raise UserError(f"{path}: {reason}; {hint}") from None
    except Exception as error:  # torch reports truncation and corruption with many exception types
        raise UserError(f"{path}: cannot be read as a PyTorch checkpoint, truncated or corrupt ({first_line(error)})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False), True
    except Exception as error:  # the trusted file may still be corrupt
        raise UserError(f"{path}: cannot be unpickled even with --trust-checkpoint ({first_line(error)})")


def first_line(error: BaseException) -> str:
    """The error's type and the first sentence of its message, for a one-line report."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0].split('. ')[0]}" if text else type(error).__name__
