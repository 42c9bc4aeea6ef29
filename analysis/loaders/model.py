"""What every loader returns (:class:`LoadedModel`) and what every loader builds with: device, seed, size."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator

import torch

from intradist.errors import UserError

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


@dataclass
class LoadedModel:
    """A model ready for forward passes, with how to compute its loss and make its batches."""

    model: torch.nn.Module  # on the requested device, eval mode
    framework: str  # one of intradist.analysis.loading.FRAMEWORKS
    path: Path
    sha256: str  # of the checkpoint file (for a model folder: of its weights file)
    description: str  # one line: what was detected and built
    loss_fn: LossFn  # mean loss of one batch (a scalar)
    extras: Dict[str, Any]  # what intradist.analysis.batches needs (fairseq task, tokenizer, number of classes, ...)


def check_device(device: str) -> torch.device:
    """``device`` as a torch device, refused in one line when malformed or absent on this machine."""
    try:
        target = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if target.type == "cuda" and (target.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    return target


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build with torch's CPU generator seeded, leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _count(number: int) -> str:
    if number >= 1e6:
        return f"{number / 1e6:.1f}M"
    return f"{number / 1e3:.1f}k" if number >= 1e3 else str(number)


def parameter_count(model: torch.nn.Module) -> str:
    """``"1.2M parameters"``: the model's size as the loaders' descriptions give it."""
    return f"{_count(sum(p.numel() for p in model.parameters()))} parameters"
