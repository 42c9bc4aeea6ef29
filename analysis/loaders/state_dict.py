"""State dicts: a torchvision architecture (``--arch``) or the user's model factory, filled strictly.

The checkpoint of an ``intradist train vision`` run (:mod:`intradist.analysis.loaders.vision_run`)
brings its class list and evaluation transform for the batches, and its torchvision architecture
and number of classes where no flag names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from intradist.analysis.loaders.model import LoadedModel, LossFn, parameter_count, seeded
from intradist.analysis.loaders.user_code import import_callable
from intradist.analysis.loaders.vision_run import vision_run
from intradist.errors import UserError
from intradist.provenance import sha256_of


def _as_state_dict(content: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The tensors of a state dict, unwrapping ``{"state_dict": ...}``/``{"model": ...}`` and ``module.``."""
    if not isinstance(content, Mapping):
        return None
    for key in ("state_dict", "model"):
        inner = content.get(key)
        if isinstance(inner, Mapping) and _all_tensors(inner):
            content = inner
            break
    if not _all_tensors(content):
        return None
    if all(key.startswith("module.") for key in content):
        return {key[len("module.") :]: value for key, value in content.items()}
    return dict(content)


def _all_tensors(mapping: Mapping[Any, Any]) -> bool:
    return bool(mapping) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in mapping.items())


def _describe_content(content: Any) -> str:
    if isinstance(content, Mapping):
        keys = ", ".join(map(repr, list(content)[:5])) + (", ..." if len(content) > 5 else "")
        return f"a dict with keys {keys}"
    return f"a {type(content).__name__}"


def load_state_dict_model(
    path: Path,
    content: Any,
    framework: str,
    arch: Optional[str],
    num_classes: Optional[int],
    model_factory: Optional[str],
    seed: int,
) -> LoadedModel:
    """A torchvision architecture (``arch``) or the user's factory, filled strictly from a state dict."""
    state_dict = _as_state_dict(content)
    if state_dict is None:
        raise UserError(f"{path}: holds {_describe_content(content)}, neither a fairseq checkpoint nor a state dict")
    run = vision_run(path)
    if (run is not None and framework != "state_dict" and arch is None and model_factory is None and run.fc_bias
            and _is_torchvision(run.arch)):  # fmt: skip
        arch, num_classes = run.arch, num_classes if num_classes is not None else len(run.classes)
    if framework == "auto":
        if arch is not None and model_factory is not None:
            raise UserError(f"{path}: pass either --arch (torchvision) or --model-factory, not both")
        if arch is None and model_factory is None:
            raise UserError(
                f"{path}: a state dict of {len(state_dict)} tensors says nothing about its architecture; pass "
                f"--arch NAME [--num-classes N] for a torchvision model or --model-factory module:function"
            )
        framework = "torchvision" if arch is not None else "state_dict"
    kind = f"state dict ({path.suffix or 'no suffix'})"
    if framework == "torchvision":
        model = _torchvision_model(path, arch, num_classes, seed)
        _load_strictly(model, state_dict, path, f"torchvision {arch} with {num_classes} classes")
        description = f"torchvision {kind}: {arch}, {num_classes} classes, {parameter_count(model)}"
        loss_fn: LossFn = image_classification_loss
        extras: Dict[str, Any] = {"arch": arch, "num_classes": num_classes}
    else:
        if model_factory is None:
            raise UserError(f"{path}: framework state_dict needs --model-factory module:function")
        module, factory = import_callable(model_factory, "--model-factory")
        with seeded(seed):
            model = factory()
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"--model-factory {model_factory}: returned a {type(model).__name__}, not a torch.nn.Module")
        _load_strictly(model, state_dict, path, f"the model of {model_factory}")
        custom_loss = getattr(module, "loss_fn", None)
        loss_fn = custom_loss if callable(custom_loss) else image_classification_loss
        description = (
            f"{kind} for {model_factory}: {type(model).__name__}, {parameter_count(model)}, loss "
            + ("loss_fn of the factory's module" if callable(custom_loss) else "cross-entropy")
        )
        extras = {"factory": model_factory}
    if run is not None:
        extras["vision_run"] = run
        description += (f"; images read as its intradist train vision run evaluated them ({len(run.classes)} "
                        f"classes, image size {run.image_size})")  # fmt: skip
    return LoadedModel(
        model=model,
        framework=framework,
        path=path,
        sha256=sha256_of(path),
        description=description,
        loss_fn=loss_fn,
        extras=extras,
    )


def _is_torchvision(arch: str) -> bool:
    import torchvision

    return arch in torchvision.models.list_models()


def _torchvision_model(path: Path, arch: Optional[str], num_classes: Optional[int], seed: int) -> torch.nn.Module:
    import torchvision

    if arch is None or num_classes is None:
        raise UserError(
            f"{path}: a torchvision model needs --arch NAME (a torchvision.models name, e.g. resnet18) "
            f"and --num-classes N"
        )
    names = torchvision.models.list_models()
    if arch not in names:
        raise UserError(f"--arch {arch}: not a torchvision.models name (e.g. {', '.join(names[:4])}, ...)")
    with seeded(seed):
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def _load_strictly(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``load_state_dict(strict=True)``, with a one-line error listing what does not fit."""
    expected = model.state_dict()
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} in the file, {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    problems: List[str] = []
    for label, items in (
        ("missing", [key for key in expected if key not in state_dict]),
        ("unexpected", [key for key in state_dict if key not in expected]),
        ("shape mismatch", mismatched),
    ):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise UserError(f"{path}: the state dict does not fit {what}; " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def image_classification_loss(model: torch.nn.Module, batch: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of ``model(inputs)`` against integer ``targets`` for a batch ``(inputs, targets)``."""
    inputs, targets = batch
    return F.cross_entropy(model(inputs), targets)
