"""``intradist train vision``: image classifiers (torchvision ResNets, CIFAR-style ResNets) with intra-distillation.

A plain torch loop around the one step objective of :mod:`intradist.settings`, which calls
:mod:`intradist.losses` (label-smoothed cross-entropy, X-divergence between the K passes, the
paper's adaptive α, knowledge distillation from a teacher). Nothing here computes a loss itself.

How the K passes differ. A ResNet has no dropout: with the same batch, K train-mode passes would
give identical logits and the intra-distillation term would be zero. ``--dropout P`` (default
0.1) adds dropout where ``--dropout-placement`` says: ``fc`` (default) between the global
average pool and the final ``fc`` layer; ``relu`` after every ReLU module of a torchvision ResNet,
as the reproduction study's notebooks do (``set_dropout``, e.g. IntraSmooth.ipynb cell 5). Each
pass sees other dropout masks, the sub-model view of the paper. Dropout holds no parameters, so
the saved state dict is torchvision's. It is on in every run (K = 1 too), so that a grid compares
the same model with and without the divergence term. The batch is augmented once, so all passes
see the same pixels. Batch normalisation uses the batch statistics in each pass (identical
across passes) and updates its running averages once per pass.

Generic defaults: AdamW (β 0.9/0.999, weight decay 1e-3), batch 60, learning rate warmed up
linearly from 2e-5 to 1e-3 over 50 updates, then fairseq's inverse square root, 80 epochs; the
checkpoint of the lowest validation negative log-likelihood is kept (``model.pt``, the last one
too: ``model_last.pt``) and scored on the test split (NLL and accuracy).

The reproduction study's recipe (``configs/vision/pet_*.yaml``, ``docs/fidelity/vision.yaml``) also
sets what its notebooks do differently, each through a named flag whose default is ours:
micro-batches of 4 images accumulated into updates of 60 (``--micro-batch-size``, BN statistics
per micro-batch; ``--micro-batch-reduction sum`` for the classic students, which skip the
division), the schedule ``2e-5·u`` then ``1e-3/√(u−49)`` over updates counted from 1
(``--lr-schedule reproduction --first-update 1``), torch's label smoothing (ε over all classes:
``--label-smoothing-style torch``), the teacher term added to the loss (``--teacher-weight``) and
dropped after epoch 75 (``--kd-epochs``), a classifier without bias (``--no-fc-bias``), ImageNet
weights (``--pretrained-weights IMAGENET1K_V1``) and the 3,000/680 ``random_split`` of Pet's trainval.

``intradist train vision-grid`` trains an eight-model grid (intra-distillation × self-distillation × label
smoothing) with our generic objective and writes its NLL table; ``scripts/vision/grid.sh`` runs
the reproduction's eight configs. See ``docs/vision.md``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import click
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from analysis.loading import check_device
from intradist.errors import UserError
from intradist.provenance import git_commit, package_versions, sha256_of
from intradist.results import format_mean_std, markdown_table
from intradist import losses
from intradist.settings import DistillationSettings, distillation_options, settings_from
from intradist.trainers.config_file import config_file_option, config_text
from intradist.trainers.vision_data import (
    AUGMENTATIONS, HOLDOUT_METHODS, Holdout, ImageData, default_image_size, load_image_data, make_transform,
    resolve_augmentation,
)  # fmt: skip

#: torchvision architectures (weights=None): each has ``avgpool`` then ``fc``, where the dropout goes.
TORCHVISION_ARCHES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: CIFAR-style ResNets of He et al. (2016, section 4.2): depth 6n + 2.
CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56}
ARCHES = TORCHVISION_ARCHES + tuple(CIFAR_DEPTHS)
#: Where ``--dropout`` goes: before the classifier, or after every ReLU module (torchvision ResNets).
DROPOUT_PLACEMENTS = ("fc", "relu")
#: ``--lr-schedule``: fairseq's inverse square root, or the reproduction notebooks' shifted one.
LR_SCHEDULES = ("inverse-sqrt", "reproduction")
#: ``--label-smoothing-style``: ε spread over the C - 1 other classes (fairseq, intradist.losses) or all C (torch).
SMOOTHING_STYLES = ("fairseq", "torch")
#: ``--micro-batch-reduction``: each micro-batch's loss divided by their number (a mean), or not (a sum).
MICRO_BATCH_REDUCTIONS = ("mean", "sum")


# ---------------------------------------------------------------------------------------------
# Models


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; a parameter-free shortcut (He et al. 2016, option A)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.extra_channels = stride, out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.extra_channels:  # subsample, then zero-pad the new channels
            half = self.extra_channels // 2
            shortcut = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, half, self.extra_channels - half))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016, section 4.2) for small images (CIFAR 32x32, digits 8x8).

    A 3x3 convolution with ``width`` (16) channels, then three stages of n basic blocks with
    ``width``, 2·``width`` and 4·``width`` channels (strides 1, 2, 2; depth = 6n + 2: ResNet-20 has
    n = 3, 0.27M parameters), global average pooling, dropout (``dropout``, see the module docstring),
    and a linear classifier. Shortcuts that change shape subsample and zero-pad (option A: no
    parameters). Names follow torchvision (``conv1``, ``bn1``, ``layer1`` … ``layer3``, ``fc``), so
    analysis groups its layers the same way.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for index, out_channels in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for block in range(blocks):
                layers.append(_BasicBlock(channels, out_channels, 2 if index > 0 and block == 0 else 1))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def resnet20(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-20; with no arguments a 10-class model (digits, CIFAR-10) for ``--model-factory``."""
    return CifarResNet(20, num_classes, dropout=dropout)


def resnet32(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-32 (10 classes without arguments)."""
    return CifarResNet(32, num_classes, dropout=dropout)


def resnet44(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-44 (10 classes without arguments)."""
    return CifarResNet(44, num_classes, dropout=dropout)


def resnet56(num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    """CIFAR-style ResNet-56 (10 classes without arguments)."""
    return CifarResNet(56, num_classes, dropout=dropout)


def default_arch(data: ImageData) -> str:
    """ResNet-50, the reproduction's model; ResNet-20 for digits, whose 8x8 images a 224-pixel stem would erase."""
    return "resnet20" if data.kind == "digits" else "resnet50"


def add_dropout_after_relus(model: nn.Module, p: float) -> nn.Module:
    """Replace every ``nn.ReLU`` child by ``Sequential(ReLU, Dropout(p))``, in place (no new parameters).

    The reproduction's ``set_dropout`` (IntraSmooth.ipynb cell 5 lines 3-7) does this to torchvision's
    ResNet-50, whose only ReLU children are the stem's and each bottleneck's ``relu``; a bottleneck
    calls its ``relu`` three times, so dropout follows all three of its ReLUs.
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Sequential(child, nn.Dropout(p)))
    return model


def build_model(arch: str, num_classes: int, dropout: float = 0.0, placement: str = "fc",
                fc_bias: bool = True) -> nn.Module:  # fmt: skip
    """``arch`` with ``num_classes`` outputs, randomly initialised, dropout ``dropout`` at ``placement``."""
    if placement not in DROPOUT_PLACEMENTS:
        raise UserError(f"--dropout-placement {placement}: choose one of {', '.join(DROPOUT_PLACEMENTS)}")
    if arch in CIFAR_DEPTHS:
        if placement != "fc":
            raise UserError(f"--dropout-placement {placement}: the CIFAR ResNets apply ReLU as a function; "
                            f"use fc, or a torchvision --arch ({', '.join(TORCHVISION_ARCHES)})")  # fmt: skip
        model: nn.Module = CifarResNet(CIFAR_DEPTHS[arch], num_classes, dropout=dropout)
    elif arch in TORCHVISION_ARCHES:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if placement == "fc":
            model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(dropout))  # no parameters: torchvision's state dict
        else:
            add_dropout_after_relus(model, dropout)
    else:
        raise UserError(f"--arch {arch}: unknown; choose one of {', '.join(ARCHES)}")
    if not fc_bias:  # the reproduction's classifier: nn.Linear(2048, 37, bias=False) (IntraSmooth.ipynb cell 5 line 10)
        model.fc = nn.Linear(model.fc.in_features, num_classes, bias=False)
    return model


def reproduction_resnet50() -> nn.Module:
    """The reproduction study's model, for ``analyze-sensitivity --model-factory``: ResNet-50, 37 classes,
    dropout 0.1 after every ReLU, a classifier without bias (weights come from the checkpoint)."""
    return build_model("resnet50", 37, 0.1, placement="relu", fc_bias=False)


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


# ---------------------------------------------------------------------------------------------
# The recipe


def inverse_sqrt_lr(step: int, peak: float, warmup_init: float, warmup_steps: int) -> float:
    """Learning rate of update ``step`` (0-based): fairseq's ``inverse_sqrt`` schedule.

    lr(t) = warmup_init + t (peak - warmup_init) / warmup_steps   for t < warmup_steps
    lr(t) = peak * sqrt(warmup_steps / t)                         for t >= warmup_steps
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_init + step * (peak - warmup_init) / warmup_steps
    return peak * math.sqrt(max(warmup_steps, 1) / max(step, 1))


def reproduction_lr(update: int, peak: float, warmup_init: float, warmup_steps: int) -> float:
    """Learning rate of update ``update`` (counted from 1) in the reproduction's notebooks.

    lr(u) = warmup_init * u                      for u < warmup_steps
    lr(u) = peak / sqrt(u - warmup_steps + 1)    for u >= warmup_steps

    With 2e-5, 1e-3 and 50: ``base_lr * num_update`` below 50, then ``0.001 / np.sqrt(num_update-49)``
    (IntraSmooth.ipynb cell 7 lines 30-33): it decays as 1/√u from the peak, not fairseq's √(W/t).
    """
    if update < warmup_steps:
        return warmup_init * update
    return peak / math.sqrt(update - warmup_steps + 1)


def learning_rate(schedule: str, update: int, peak: float, warmup_init: float, warmup_steps: int) -> float:
    """``--lr-schedule``'s learning rate for update number ``update`` (as counted from ``--first-update``)."""
    if schedule == "reproduction":
        return reproduction_lr(update, peak, warmup_init, warmup_steps)
    return inverse_sqrt_lr(update, peak, warmup_init, warmup_steps)


@dataclass
class VisionConfig:
    """Everything of a run but the distillation switches; every field is a flag of the same name."""

    data: str
    out: Path
    arch: Optional[str] = None  # default_arch(data)
    pretrained_weights: Optional[str] = None  # a file, or a torchvision weights name (IMAGENET1K_V1)
    dropout: float = 0.1
    dropout_placement: str = "fc"
    fc_bias: bool = True
    image_size: Optional[int] = None  # the source's: digits 8, CIFAR 32, photos 224
    augment: str = "auto"
    epochs: int = 80
    max_steps: Optional[int] = None
    batch_size: int = 60
    micro_batch_size: Optional[int] = None  # None: the whole batch in one forward
    micro_batch_reduction: str = "mean"
    lr: float = 1e-3
    lr_schedule: str = "inverse-sqrt"
    first_update: int = 0
    warmup_init_lr: float = 2e-5
    warmup_steps: int = 50
    weight_decay: float = 1e-3
    betas: Tuple[float, float] = (0.9, 0.999)
    label_smoothing_style: str = "fairseq"
    teacher_weight: Optional[float] = None  # None: the convex mix of --kd-weight
    kd_epochs: Optional[int] = None  # None: the teacher term in every epoch
    val_split: str = "stratified"
    val_size: Optional[int] = None
    val_split_seed: int = 0
    seed: int = 1
    device: Optional[str] = None  # cuda when available
    workers: Optional[int] = None  # 0 for data in memory (digits, CIFAR), else min(4, CPUs)


def resolve_device(device: Optional[str]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


def versions() -> Dict[str, str]:
    return package_versions(("torch", "torchvision", "numpy", "scikit-learn", "intradist"))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> Dict[str, float]:
    """Mean negative log-likelihood (natural log, no smoothing) and accuracy over ``loader``, in eval mode."""
    model.eval()
    total_nll, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        _, nll = losses.label_smoothed_nll_loss(F.log_softmax(logits.float(), dim=-1), labels, 0.0, reduction="sum")
        total_nll += nll.item()
        correct += (logits.argmax(dim=-1) == labels).sum().item()
        count += len(labels)
    return {"nll": total_nll / count, "accuracy": correct / count}


def analysis_command(out: Path, arch: str, data: ImageData, image_size: int, data_arg: str,
                     fc_bias: bool = True) -> str:  # fmt: skip
    """The ``analyze-sensitivity`` command line for the saved model (printed and stored in metrics.json)."""
    note = ""
    if not fc_bias:  # torchvision's own models have a biased classifier: analysis needs a factory
        model = "--model-factory factory.py:model"
        note = (f"  # factory.py: from intradist.trainers.vision import build_model; def model(): return "
                f"build_model({arch!r}, {data.num_classes}, fc_bias=False)")
        if (arch, data.num_classes) == ("resnet50", 37):
            model, note = "--model-factory intradist.trainers.vision:reproduction_resnet50", ""
    elif arch not in CIFAR_DEPTHS:
        model = f"--arch {arch} --num-classes {data.num_classes}"
    elif data.num_classes == 10:
        model = f"--model-factory intradist.trainers.vision:{arch}"
    else:
        model = "--model-factory factory.py:model"
        note = (f"  # factory.py: from intradist.trainers.vision import {arch}; "
                f"def model(): return {arch}({data.num_classes})")
    if data.kind == "digits":
        batches = "--batches intradist.trainers.vision_data:digits_batches"
    elif data.kind == "folder":
        batches = f"--data {Path(data_arg) / data.test_split} --image-size {image_size}"
    else:  # CIFAR and Pet: analysis reads image folders
        batches = f"--data IMAGE_FOLDER --image-size {image_size}"
    return f"analyze-sensitivity {out / 'model.pt'} {model} {batches} --out {out / 'sensitivity'}{note}"


def teacher_in_epoch(epoch: int, kd_epochs: Optional[int]) -> bool:
    """Whether epoch ``epoch`` (counted from 1) uses the teacher term: all do, or the first ``kd_epochs``."""
    return kd_epochs is None or epoch <= kd_epochs


def effective_settings(settings: DistillationSettings, style: str, num_classes: int) -> DistillationSettings:
    """``settings`` with ε in intradist.losses' (fairseq's) convention, whatever ``--label-smoothing-style`` says.

    torch's ``CrossEntropyLoss(label_smoothing=ε)`` gives every class ε/C; fairseq's formula gives
    the C - 1 others ε'/(C - 1). The two losses are identical when ε' = ε (C - 1) / C.
    """
    if style not in SMOOTHING_STYLES:
        raise UserError(f"--label-smoothing-style {style}: choose one of {', '.join(SMOOTHING_STYLES)}")
    if style == "fairseq":
        return settings
    return replace(settings, label_smoothing=settings.label_smoothing * (num_classes - 1) / num_classes)


def step_objective(model: Callable[[torch.Tensor], torch.Tensor], settings: DistillationSettings,
                   images: torch.Tensor, labels: torch.Tensor, update: int, total_steps: int,
                   teacher_logits: Optional[torch.Tensor] = None,
                   teacher_weight: Optional[float] = None) -> Dict[str, torch.Tensor]:  # fmt: skip
    """The objective of one (micro-)batch: K passes of ``model`` combined by the shared objective.

    With ``teacher_weight`` None the teacher enters through the shared convex mix
    ((1 - β) supervised + β KD); with a weight W the objective is supervised + α·intra + W·KD, the
    KD term the mean over the passes of :func:`intradist.losses.kd_loss` (the reproduction's form).
    ``update`` is the update number the adaptive α sees.
    """
    outputs: List[torch.Tensor] = []

    def forward() -> torch.Tensor:
        outputs.append(model(images))
        return outputs[-1]

    if teacher_weight is None:
        return settings.objective(forward=forward, targets=labels, step=update, max_step=total_steps,
                                  teacher_logits=teacher_logits)  # fmt: skip
    terms = settings.objective(forward=forward, targets=labels, step=update, max_step=total_steps)
    if teacher_logits is not None:
        kd = sum(losses.kd_loss(output, teacher_logits, settings.kd_temperature, reduction="mean")
                 for output in outputs) / len(outputs)  # fmt: skip
        terms = {**terms, "loss": terms["loss"] + teacher_weight * kd, "kd": kd.detach()}
    return terms


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, settings: DistillationSettings,
                  images: torch.Tensor, labels: torch.Tensor, update: int, total_steps: int, lr: float,
                  teacher: Optional[nn.Module] = None, micro_batch_size: Optional[int] = None,
                  micro_batch_reduction: str = "mean",
                  teacher_weight: Optional[float] = None) -> Dict[str, torch.Tensor]:  # fmt: skip
    """One update: per micro-batch the teacher's logits (eval mode) and :func:`step_objective`, then AdamW.

    The batch is cut into micro-batches of ``micro_batch_size`` (batch normalisation sees each
    alone); each one's loss is divided by the number of micro-batches in the batch (``mean``) or not
    (``sum``) before its backward, as the reproduction's notebooks do with ``iter_batch``. Returns
    the terms (``loss``, ``supervised``, ``intra``, ``kd``, ``alpha``), averaged over the micro-batches.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    size = micro_batch_size or len(labels)
    nominal = max(1, round(len(labels) / size)) if micro_batch_reduction == "mean" else 1
    totals: Dict[str, torch.Tensor] = {}
    for start in range(0, len(labels), size):
        chunk, chunk_labels = images[start : start + size], labels[start : start + size]
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(chunk)
        terms = step_objective(model, settings, chunk, chunk_labels, update, total_steps, teacher_logits,
                               teacher_weight)  # fmt: skip
        (terms["loss"] / nominal).backward()
        share = len(chunk_labels) / len(labels)
        for name in ("loss", "supervised", "intra", "kd", "alpha"):
            totals[name] = totals.get(name, 0.0) + terms[name].detach().float() * share
    optimizer.step()
    return totals


def _check_recipe(config: VisionConfig, settings: DistillationSettings) -> None:
    """One-line refusals of flags that do not fit together (the choice flags are checked by click)."""
    if config.micro_batch_size is not None and config.batch_size % config.micro_batch_size:
        raise UserError(f"--micro-batch-size {config.micro_batch_size}: must divide --batch-size {config.batch_size}")
    if config.micro_batch_reduction not in MICRO_BATCH_REDUCTIONS:
        raise UserError(f"--micro-batch-reduction {config.micro_batch_reduction}: choose one of "
                        f"{', '.join(MICRO_BATCH_REDUCTIONS)}")  # fmt: skip
    if config.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"--lr-schedule {config.lr_schedule}: choose one of {', '.join(LR_SCHEDULES)}")
    if settings.teacher is None and (config.teacher_weight is not None or config.kd_epochs is not None):
        flag = "--teacher-weight" if config.teacher_weight is not None else "--kd-epochs"
        raise UserError(f"{flag}: needs --teacher (it weighs or limits the teacher term)")


def _check_data(data: ImageData) -> None:
    for split, size in data.sizes().items():
        if size == 0:
            raise UserError(f"--data {data.description}: the {split} split is empty")


def train(config: VisionConfig, settings: DistillationSettings, data: Optional[ImageData] = None,
          progress: Optional[bool] = None, extra_files: Optional[Dict[str, str]] = None) -> Dict[str, Any]:  # fmt: skip
    """Train one model with ``settings`` per :class:`VisionConfig`; write ``config.out``; return metrics.json's content.

    ``config.out`` is written as ``OUT.partial`` and renamed at the end: ``model.pt`` (the state
    dict of the best validation NLL), ``metrics.json``, ``history.csv`` and ``extra_files`` (name ->
    text, e.g. the run's ``config.yaml``). ``progress``: tqdm bars (None: only on a terminal).
    """
    from tqdm.auto import tqdm

    out = Path(config.out)
    if out.exists():
        raise UserError(f"--out {out}: exists; choose another folder or remove it")
    holdout = Holdout(config.val_split, config.val_size, config.val_split_seed)
    data = data if data is not None else load_image_data(config.data, holdout)
    _check_data(data)
    _check_recipe(config, settings)
    settings = effective_settings(settings, config.label_smoothing_style, data.num_classes)
    arch = config.arch or default_arch(data)
    if arch not in ARCHES:
        raise UserError(f"--arch {arch}: unknown; choose one of {', '.join(ARCHES)}")
    if settings.num_passes > 1 and config.dropout <= 0:
        raise UserError(f"--num-passes {settings.num_passes} needs --dropout > 0: a ResNet has no other dropout, "
                        f"so identical passes would make the intra-distillation term zero")  # fmt: skip
    if not 0 <= config.dropout < 1:
        raise UserError(f"--dropout {config.dropout}: must lie in [0, 1)")
    image_size = config.image_size or default_image_size(data)
    augment = resolve_augmentation(config.augment, data.kind)
    device = resolve_device(config.device)
    workers = config.workers if config.workers is not None else (0 if data.in_memory else min(4, os.cpu_count() or 1))
    teacher, teacher_file = (load_teacher(settings.teacher, arch, data.num_classes, device, config.fc_bias)
                             if settings.teacher else (None, None))  # fmt: skip

    torch.manual_seed(config.seed)
    model = build_model(arch, data.num_classes, config.dropout, config.dropout_placement, config.fc_bias)
    new_keys: List[str] = []
    weights_file: Optional[Path] = None
    if config.pretrained_weights is not None:
        weights_file = pretrained_weights_file(str(config.pretrained_weights), arch)
        new_keys = load_pretrained_weights(model, weights_file)
    model.to(device)

    transform = {split: make_transform(image_size, split == "train", augment, data.kind, data.native_size)
                 for split in ("train", "eval")}  # fmt: skip
    data.train.transform = transform["train"]
    data.val.transform = data.test.transform = transform["eval"]
    loader_options = {"batch_size": config.batch_size, "num_workers": workers, "pin_memory": device.type == "cuda"}
    train_loader = DataLoader(data.train, shuffle=True, generator=torch.Generator().manual_seed(config.seed),
                              persistent_workers=workers > 0, **loader_options)  # fmt: skip
    val_loader = DataLoader(data.val, shuffle=False, **loader_options)
    test_loader = DataLoader(data.test, shuffle=False, **loader_options) if data.test is not data.val else val_loader
    steps_per_epoch = len(train_loader)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.warmup_init_lr, betas=config.betas,
                                  weight_decay=config.weight_decay)  # fmt: skip

    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    click.echo(f"intradist train vision: {arch} on {data.description}; {data.sizes()}; image size {image_size}, augment "
               f"{augment}; K={settings.num_passes}, label smoothing {settings.label_smoothing}, teacher "
               f"{teacher_file or 'none'}; {total_steps} updates on {device}", err=True)  # fmt: skip
    history: List[Dict[str, Any]] = []
    best: Optional[Dict[str, Any]] = None
    step, started = 0, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        if step >= total_steps:
            break
        model.train()
        sums = {"loss": 0.0, "supervised": 0.0, "intra": 0.0, "kd": 0.0, "alpha": 0.0}
        seen = 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, unit="batch",
                   disable=None if progress is None else not progress)  # fmt: skip
        epoch_teacher = teacher if teacher_in_epoch(epoch, config.kd_epochs) else None
        for images, labels in bar:
            if step >= total_steps:
                break
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            update = step + config.first_update
            lr = learning_rate(config.lr_schedule, update, config.lr, config.warmup_init_lr, config.warmup_steps)
            terms = training_step(model, optimizer, settings, images, labels, update, total_steps, lr, epoch_teacher,
                                  config.micro_batch_size, config.micro_batch_reduction,
                                  config.teacher_weight)  # fmt: skip
            step += 1
            for name in sums:
                sums[name] += terms[name].item() * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}", lr=f"{lr:.2e}")
        bar.close()
        validation = evaluate(model, val_loader, device)
        row = {"epoch": epoch, "steps": step, "lr": lr, **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
               "val_nll": validation["nll"], "val_accuracy": validation["accuracy"],
               "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
        history.append(row)
        improved = best is None or validation["nll"] < best["val_nll"]
        if improved:
            best = {"epoch": epoch, "steps": step, "val_nll": validation["nll"], "val_accuracy": validation["accuracy"]}
            torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, partial / "model.pt")
        click.echo(f"epoch {epoch}: train loss {row['train_loss']:.4f} (intra {row['train_intra']:.4f}, alpha "
                   f"{row['train_alpha']:.2f}), val NLL {validation['nll']:.4f}, val accuracy "
                   f"{100 * validation['accuracy']:.1f}%{' *' if improved else ''}", err=True)  # fmt: skip
    train_seconds = time.perf_counter() - started
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, partial / "model_last.pt")

    model.load_state_dict(torch.load(partial / "model.pt", map_location=device, weights_only=True))
    test = evaluate(model, test_loader, device)
    with (partial / "history.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    metrics = {
        "arch": arch, "num_classes": data.num_classes, "classes": data.classes,
        "data": str(config.data), "data_kind": data.kind, "data_description": data.description,
        "split_sizes": data.sizes(), "test_split": data.test_split, "image_size": image_size, "augment": augment,
        "dropout": config.dropout, "dropout_placement": config.dropout_placement, "fc_bias": config.fc_bias,
        "holdout": asdict(holdout),
        "pretrained_weights": None if weights_file is None else {
            "given": str(config.pretrained_weights), "path": str(weights_file), "sha256": sha256_of(weights_file),
            "newly_initialised": new_keys},
        "recipe": {"optimizer": "AdamW", "betas": list(config.betas), "weight_decay": config.weight_decay,
                   "lr": config.lr, "warmup_init_lr": config.warmup_init_lr, "warmup_steps": config.warmup_steps,
                   "schedule": config.lr_schedule, "first_update": config.first_update,
                   "batch_size": config.batch_size, "micro_batch_size": config.micro_batch_size,
                   "micro_batch_reduction": config.micro_batch_reduction,
                   "label_smoothing_style": config.label_smoothing_style, "teacher_weight": config.teacher_weight,
                   "kd_epochs": config.kd_epochs,
                   "epochs": config.epochs, "max_steps": config.max_steps, "steps_per_epoch": steps_per_epoch,
                   "total_steps": total_steps, "selection": "lowest validation NLL (model.pt; model_last.pt: last)"},
        "distillation": {**asdict(settings),
                         "teacher_sha256": sha256_of(teacher_file) if teacher_file is not None else None},
        "seed": config.seed, "device": str(device), "workers": workers, "versions": versions(),
        "git_commit": git_commit(),
        "best_epoch": best["epoch"], "best_steps": best["steps"], "best_val_nll": best["val_nll"],
        "best_val_accuracy": best["val_accuracy"], "test_nll": test["nll"], "test_accuracy": test["accuracy"],
        "epochs_run": len(history), "steps_run": step, "train_seconds": round(train_seconds, 2),
        "model_sha256": sha256_of(partial / "model.pt"),
        "analyze": analysis_command(out, arch, data, image_size, str(config.data), config.fc_bias),
    }  # fmt: skip
    (partial / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for name, text in (extra_files or {}).items():
        (partial / name).write_text(text)
    partial.rename(out)
    click.echo(f"intradist train vision: best epoch {best['epoch']} (val NLL {best['val_nll']:.4f}); {data.test_split} NLL "
               f"{test['nll']:.4f}, accuracy {100 * test['accuracy']:.2f}%; written to {out}", err=True)  # fmt: skip
    return metrics


# ---------------------------------------------------------------------------------------------
# The eight-model grid


@dataclass(frozen=True)
class GridCell:
    """One model of the grid: which of intra-distillation, self-distillation and label smoothing it uses."""

    intra: bool
    self_distillation: bool
    label_smoothing: bool

    @property
    def name(self) -> str:
        parts = [part for part, on in (("intra", self.intra), ("sd", self.self_distillation),
                                       ("ls", self.label_smoothing)) if on]  # fmt: skip
        return "-".join(parts) or "baseline"

    @property
    def teacher(self) -> "GridCell":
        """The matching teacher: the same intra-distillation and label smoothing, without self-distillation."""
        return replace(self, self_distillation=False)


#: Table order: baseline and label smoothing, self-distillation, then the same with intra-distillation.
GRID = tuple(GridCell(intra, sd, ls) for intra in (False, True) for sd in (False, True) for ls in (False, True))


@dataclass
class GridSettings:
    """The grid's switches: K, α and its schedule for the intra cells, ε for LS cells, β and τ for SD cells."""

    passes: int = 3
    alpha: float = 5.0
    alpha_p: float = 5.0
    alpha_q: float = 10.0
    label_smoothing: float = 0.1
    kd_weight: float = 0.5
    kd_temperature: float = 1.0
    seeds: Tuple[int, ...] = (1,)

    def for_cell(self, cell: GridCell, teacher: Optional[Path]) -> DistillationSettings:
        return DistillationSettings(
            num_passes=self.passes if cell.intra else 1, alpha=self.alpha, adaptive_alpha=True,
            alpha_p=self.alpha_p, alpha_q=self.alpha_q, divergence="x",
            label_smoothing=self.label_smoothing if cell.label_smoothing else 0.0,
            teacher=str(teacher) if cell.self_distillation else None,
            kd_weight=self.kd_weight, kd_temperature=self.kd_temperature,
        )  # fmt: skip


def run_grid(config: VisionConfig, grid: GridSettings, progress: Optional[bool] = None) -> List[Dict[str, Any]]:
    """Train the eight models per seed under ``config.out/seedS/CELL`` (teachers first); write grid.json and grid.md.

    A cell whose folder exists is read back, not retrained, so a rerun resumes.
    """
    root = Path(config.out)
    if grid.passes < 2:
        raise UserError(f"--passes {grid.passes}: the intra-distillation cells need at least 2 passes")
    data = load_image_data(config.data, Holdout(config.val_split, config.val_size, config.val_split_seed))
    records = []
    for seed in grid.seeds:
        for cell in sorted(GRID, key=lambda c: c.self_distillation):  # teachers before their students
            out = root / f"seed{seed}" / cell.name
            teacher = root / f"seed{seed}" / cell.teacher.name / "model.pt"
            if (out / "metrics.json").is_file():
                metrics = json.loads((out / "metrics.json").read_text())
                click.echo(f"grid: {out} exists, reusing it", err=True)
            else:
                click.echo(f"grid: seed {seed}, {cell.name}", err=True)
                cell_config = replace(config, out=out, seed=seed)
                metrics = train(cell_config, grid.for_cell(cell, teacher), data=data, progress=progress)
            kept = ("test_nll", "test_accuracy", "best_epoch", "best_val_nll", "train_seconds", "arch", "test_split")
            records.append({"cell": cell.name, "intra": cell.intra, "self_distillation": cell.self_distillation,
                            "label_smoothing": cell.label_smoothing, "seed": seed, "out": str(out),
                            **{key: metrics[key] for key in kept}})  # fmt: skip
    (root / "grid.json").write_text(json.dumps({"settings": asdict(grid), "records": records}, indent=2) + "\n")
    (root / "grid.md").write_text(grid_report(config, grid, records, data) + "\n")
    return records


def grid_table(records: Sequence[Dict[str, Any]]) -> str:
    """The NLL table: one row per grid cell, test NLL and accuracy as mean ± std over seeds."""
    rows = []
    for cell in GRID:
        mine = [r for r in records if r["cell"] == cell.name]
        if not mine:
            continue
        mark = lambda on: "✓" if on else "—"  # noqa: E731
        rows.append([cell.name, mark(cell.intra), mark(cell.self_distillation), mark(cell.label_smoothing),
                     format_mean_std([r["test_nll"] for r in mine], digits=4),
                     format_mean_std([100 * r["test_accuracy"] for r in mine], digits=2),
                     format_mean_std([r["best_epoch"] for r in mine], digits=1),
                     format_mean_std([r["train_seconds"] for r in mine], digits=0), len(mine)])  # fmt: skip
    header = ["model", "intra-distillation", "self-distillation", "label smoothing", "test NLL",
              "test accuracy (%)", "best epoch", "train time (s)", "seeds"]  # fmt: skip
    return markdown_table(header, rows)


def grid_report(config: VisionConfig, grid: GridSettings, records: Sequence[Dict[str, Any]], data: ImageData) -> str:
    arch = records[0]["arch"] if records else config.arch
    lines = [
        f"# Vision grid: {arch} on {data.description}",
        "",
        f"Recipe: AdamW (weight decay {config.weight_decay}), batch {config.batch_size}"
        + (f" in micro-batches of {config.micro_batch_size}" if config.micro_batch_size else "")
        + f", lr {config.lr} (warm-up from {config.warmup_init_lr} over {config.warmup_steps} updates, then "
        f"{config.lr_schedule}), {config.epochs} epochs"
        + (f" (at most {config.max_steps} updates)" if config.max_steps else "")
        + f", dropout {config.dropout} "
        + ("before the classifier" if config.dropout_placement == "fc" else "after every ReLU")
        + "; model of the lowest validation NLL, scored on "
        f"{records[0]['test_split'] if records else 'test'}.",
        f"Intra-distillation: K = {grid.passes}, α = {grid.alpha}, adaptive (p = {grid.alpha_p}, q = {grid.alpha_q}), "
        f"X-divergence. Label smoothing ε = {grid.label_smoothing}. Self-distillation: β = {grid.kd_weight}, "
        f"τ = {grid.kd_temperature}, teacher = the model with the same intra-distillation and label smoothing "
        f"without self-distillation. Seeds: {', '.join(map(str, grid.seeds))}.",
        "",
        grid_table(records),
    ]  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line


def _training_options(data_default: Optional[str], out_default: Optional[Path]) -> Callable[[Callable], Callable]:
    """The flags of a run that the grid shares (everything but the distillation switches)."""
    options = [
        click.option("--data", required=data_default is None, default=data_default, show_default=True,
                     help="digits, a CIFAR-10/100 python folder, an Oxford-IIIT Pet folder, or an image folder "
                          "with train/ and val/ (test/ optional)."),
        click.option("--out", type=click.Path(path_type=Path), required=out_default is None, default=out_default,
                     show_default=True, help="Output folder (each run is written as RUN.partial, renamed when done)."),
        click.option("--arch", default=None,
                     help=f"One of {', '.join(ARCHES)}; default resnet50 (resnet20 for digits)."),
        click.option("--pretrained-weights", default=None,
                     help="A local state dict, or a torchvision weights name of --arch (IMAGENET1K_V1, read from "
                          "the torch hub cache) to start from; a classifier of another size is re-initialised."),
        click.option("--dropout", type=float, default=0.1, show_default=True,
                     help="Dropout probability: what makes the K passes differ."),
        click.option("--dropout-placement", type=click.Choice(DROPOUT_PLACEMENTS), default="fc", show_default=True,
                     help="fc: before the final layer; relu: after every ReLU module (torchvision ResNets; the "
                          "reproduction's notebooks)."),
        click.option("--fc-bias/--no-fc-bias", default=True, show_default=True,
                     help="A bias in the classifier (the reproduction's has none)."),
        click.option("--image-size", type=click.IntRange(min=1), default=None,
                     help="Side of the crops; default 8 for digits, 32 for CIFAR, 224 for photos."),
        click.option("--augment", type=click.Choice(AUGMENTATIONS), default="auto", show_default=True,
                     help="auto: pad-crop for digits, imagenet (RandomResizedCrop + flip) otherwise."),
        click.option("--no-augment", is_flag=True, help="Same as --augment none."),
        click.option("--epochs", type=click.IntRange(min=1), default=80, show_default=True),
        click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many updates."),
        click.option("--batch-size", type=click.IntRange(min=1), default=60, show_default=True,
                     help="Images per update."),
        click.option("--micro-batch-size", type=click.IntRange(min=1), default=None,
                     help="Run each batch as micro-batches of this many images (batch norm sees each alone) and "
                          "accumulate their gradients; default: the whole batch at once."),
        click.option("--micro-batch-reduction", type=click.Choice(MICRO_BATCH_REDUCTIONS), default="mean",
                     show_default=True,
                     help="mean: each micro-batch's loss is divided by their number; sum: not (the reproduction's "
                          "classic students)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
                     help="Peak learning rate, reached after the warm-up."),
        click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="inverse-sqrt", show_default=True,
                     help="inverse-sqrt: fairseq's (linear warm-up from --warmup-init-lr, then lr·sqrt(W/t)); "
                          "reproduction: warmup-init-lr·u below W, then lr/sqrt(u-W+1)."),
        click.option("--first-update", type=click.IntRange(0, 1), default=0, show_default=True,
                     help="The number of the first update, as the lr schedule and the adaptive alpha see it "
                          "(the reproduction's notebooks count from 1)."),
        click.option("--warmup-init-lr", type=click.FloatRange(min=0), default=2e-5, show_default=True),
        click.option("--warmup-steps", type=click.IntRange(min=0), default=50, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-3, show_default=True),
        click.option("--label-smoothing-style", type=click.Choice(SMOOTHING_STYLES), default="fairseq",
                     show_default=True,
                     help="fairseq: epsilon spread over the other classes; torch: over all classes "
                          "(torch.nn.CrossEntropyLoss, the reproduction's)."),
        click.option("--teacher-weight", type=click.FloatRange(min=0), default=None,
                     help="With --teacher: loss = supervised + W·KD (the reproduction's form) instead of the "
                          "convex mix of --kd-weight."),
        click.option("--kd-epochs", type=click.IntRange(min=0), default=None,
                     help="With --teacher: use the teacher term in the first N epochs only (the reproduction: 75)."),
        click.option("--val-split", type=click.Choice(HOLDOUT_METHODS), default="stratified", show_default=True,
                     help="CIFAR and Pet: how validation images are held out of the training set "
                          "(random-split: torch.utils.data.random_split, the reproduction's)."),
        click.option("--val-size", type=click.IntRange(min=1), default=None,
                     help="CIFAR and Pet: validation images held out (default: a tenth)."),
        click.option("--val-split-seed", type=int, default=0, show_default=True,
                     help="CIFAR and Pet: seed of the hold-out (the reproduction: 42)."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)."),
        click.option("--workers", type=click.IntRange(min=0), default=None,
                     help="Data loader processes (default: 0 for digits and CIFAR, which sit in memory; else 4)."),
    ]  # fmt: skip

    def decorate(function: Callable) -> Callable:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _config(options: Dict[str, Any], **overrides: Any) -> VisionConfig:
    if options.pop("no_augment"):
        options["augment"] = "none"
    fields = VisionConfig.__dataclass_fields__
    return VisionConfig(**{name: value for name, value in {**options, **overrides}.items() if name in fields})


def _fail(command: str, error: Exception) -> None:
    """One line on stderr, exit 2 (an error raised in a data loader worker carries a traceback: keep its last line)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    click.echo(f"{command}: {lines[-1] if lines else type(error).__name__}", err=True)
    sys.exit(2)


@click.command("intradist train vision", context_settings={"help_option_names": ["-h", "--help"]})
@_training_options(data_default=None, out_default=None)
@click.option("--seed", default=1, show_default=True)
@distillation_options
@config_file_option
def train_command(**options: Any) -> None:
    """Train an image classifier with the reproduction's recipe, optionally with intra-distillation and a teacher.

    `intradist train vision-grid --help`: the eight-model grid. Details: docs/vision.md.
    """
    try:
        settings = settings_from(options)
    except ValueError as error:
        _fail("intradist train vision", error)
    try:
        ctx = click.get_current_context()
        metrics = train(_config(options), settings, extra_files={"config.yaml": config_text(ctx)})
    except UserError as error:
        _fail("intradist train vision", error)
    click.echo(json.dumps({key: metrics[key] for key in ("best_epoch", "best_val_nll", "test_nll", "test_accuracy")}))


@click.command("intradist train vision-grid", context_settings={"help_option_names": ["-h", "--help"]})
@_training_options(data_default="digits", out_default=Path("runs/vision-grid"))
@click.option("--seeds", default="1", show_default=True, help="Comma-separated seeds; the table gives mean ± std.")
@click.option("--passes", type=click.IntRange(min=2), default=3, show_default=True, help="K of the intra cells.")
@click.option("--alpha", type=click.FloatRange(min=0), default=5.0, show_default=True)
@click.option("--alpha-p", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True)
@click.option("--alpha-q", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="epsilon of the label-smoothing cells.")  # fmt: skip
@click.option("--kd-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="beta of the self-distillation cells.")  # fmt: skip
@click.option("--kd-temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True)
@config_file_option
def grid_command(**options: Any) -> None:
    """The reproduction's grid: intra-distillation x self-distillation x label smoothing, eight models per seed.

    Self-distillation students learn from the matching teacher (same intra-distillation and label
    smoothing, no self-distillation). Writes OUT/seedS/CELL/, OUT/grid.json and OUT/grid.md (the NLL table).
    """
    try:
        seeds = tuple(int(seed) for seed in options.pop("seeds").split(",") if seed.strip())
    except ValueError:
        _fail("intradist train vision-grid", UserError("--seeds: give comma-separated integers, e.g. 1,2,3"))
    if not seeds:
        _fail("intradist train vision-grid", UserError("--seeds: give at least one seed"))
    grid = GridSettings(seeds=seeds, **{name: options.pop(name) for name in (
        "passes", "alpha", "alpha_p", "alpha_q", "label_smoothing", "kd_weight", "kd_temperature")})  # fmt: skip
    try:
        run_grid(_config(options, seed=seeds[0]), grid)
    except UserError as error:
        _fail("intradist train vision-grid", error)
    (Path(options["out"]) / "config.yaml").write_text(config_text(click.get_current_context()))
    click.echo((Path(options["out"]) / "grid.md").read_text())


if __name__ == "__main__":
    train_command()
