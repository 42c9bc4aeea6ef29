"""Weights read into the vision models: ImageNet (or any local) starting weights, and the teacher.

Every file is read weights-only (no code runs), and a file that does not fit the model is refused
in one line naming the first mismatches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch import nn

from intradist.errors import UserError
from intradist.trainers.vision_models import TORCHVISION_ARCHES, build_model


def _read_state_dict(path: Path, flag: str) -> Dict[str, torch.Tensor]:
    """A state dict read weights-only (``{"state_dict": ...}`` and ``module.`` prefixes unwrapped)."""
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch reports unsafe, truncated and corrupt files with many exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{flag} {path}: not a weights-only state dict ({first[:160]})") from None
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not content or not all(torch.is_tensor(v) for v in content.values()):
        raise UserError(f"{flag} {path}: holds no state dict (a mapping of parameter names to tensors)")
    if all(key.startswith("module.") for key in content):
        content = {key[len("module.") :]: value for key, value in content.items()}
    return content


def _fit_problems(model: nn.Module, state: Dict[str, torch.Tensor]) -> List[str]:
    """What keeps ``state`` from loading strictly into ``model`` (empty when it fits)."""
    expected = model.state_dict()
    problems = [f"missing {key}" for key in expected if key not in state]
    problems += [f"unexpected {key}" for key in state if key not in expected]
    problems += [f"{key} is {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model"
                 for key, value in expected.items() if key in state and state[key].shape != value.shape]  # fmt: skip
    return problems


def pretrained_weights_file(value: str, arch: str) -> Path:
    """The local file of ``--pretrained-weights``: a path, or a torchvision weights name of ``arch``.

    A name (``IMAGENET1K_V1`` or ``ResNet50_Weights.IMAGENET1K_V1``) is looked up in torchvision's
    weights enum of ``arch`` and read from the torch hub cache, where torchvision keeps it; when it
    is not there torchvision downloads it (a machine without network gets a one-line error naming
    the file to copy there).
    """
    if Path(value).is_file() or "/" in value or value.endswith((".pt", ".pth")):
        return Path(value)
    import torchvision

    if arch not in TORCHVISION_ARCHES:
        raise UserError(f"--pretrained-weights {value}: no such file (torchvision weights names are for "
                        f"{', '.join(TORCHVISION_ARCHES)})")  # fmt: skip
    enum = torchvision.models.get_model_weights(arch)
    prefix, _, name = value.rpartition(".")
    if (prefix and prefix != enum.__name__) or name not in enum.__members__:
        raise UserError(f"--pretrained-weights {value}: no such file, nor a weights name of {arch} "
                        f"({', '.join(f'{enum.__name__}.{member}' for member in enum.__members__)})")  # fmt: skip
    weights = enum[name]
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not file.is_file():
        try:
            torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
        except Exception as error:  # no network, a proxy, a truncated download: urllib and torch raise many kinds
            raise UserError(f"--pretrained-weights {value}: not in the torch hub cache ({file}) and not "
                            f"downloadable here ({type(error).__name__}); copy {weights.url} to {file}") from None
    return file


def load_pretrained_weights(model: nn.Module, path: Path) -> List[str]:
    """Fill ``model`` from a local state dict; a classifier of another size (or without bias) stays new.

    Returns the keys of ``model`` left as initialised.
    """
    state = _read_state_dict(path, "--pretrained-weights")
    expected = model.state_dict()
    new = [key for key in expected
           if key.startswith("fc.") and key in state and state[key].shape != expected[key].shape]  # fmt: skip
    state = {key: value for key, value in state.items()
             if key not in new and not (key.startswith("fc.") and key not in expected)}  # fmt: skip
    problems = [problem for problem in _fit_problems(model, state) if problem.split()[-1] not in new]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(f"--pretrained-weights {path}: does not fit the model: {'; '.join(problems[:3])}{more}")
    model.load_state_dict(state, strict=False)
    return new


def load_teacher(path: str, arch: str, num_classes: int, device: torch.device,
                 fc_bias: bool = True) -> Tuple[nn.Module, Path]:  # fmt: skip
    """A model saved by ``intradist train vision`` (a ``model.pt``/``model_last.pt`` or output folder), frozen, in eval mode."""
    given = Path(path)
    file = given / "model.pt" if given.is_dir() else given
    if not file.is_file():
        raise UserError(f"--teacher {path}: no such file (the model.pt of a intradist train vision run, or its --out folder)")
    metrics_file = file.parent / "metrics.json"
    if metrics_file.is_file():
        recorded = json.loads(metrics_file.read_text())
        if recorded.get("arch") != arch:
            raise UserError(f"--teacher {path}: is a {recorded.get('arch')}, this run trains a {arch}; "
                            f"the teacher must have the student's architecture (--arch)")  # fmt: skip
        if recorded.get("num_classes") != num_classes:
            raise UserError(f"--teacher {path}: has {recorded.get('num_classes')} classes, the data has {num_classes}")
    teacher = build_model(arch, num_classes, fc_bias=fc_bias)
    state = _read_state_dict(file, "--teacher")
    problems = _fit_problems(teacher, state)
    if problems:
        raise UserError(f"--teacher {path}: is not a {arch} with {num_classes} classes ({problems[0]})")
    teacher.load_state_dict(state)
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher, file
