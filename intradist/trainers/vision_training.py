"""One run of ``intradist train vision``: :class:`VisionConfig` and :func:`train`, its outputs and its score.

A plain torch loop: AdamW, the learning rate of :mod:`intradist.trainers.vision_schedules`, each
update by :func:`intradist.trainers.vision_step.training_step`; the model of the lowest validation
negative log-likelihood is kept (``model.pt``, the last one too: ``model_last.pt``) and scored on
the test split.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import click
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from intradist.analysis.loading import check_device
from intradist import losses
from intradist.errors import UserError
from intradist.provenance import git_commit, package_versions, sha256_of
from intradist.settings import DistillationSettings
from intradist.trainers.vision_data import Holdout, ImageData, default_image_size, load_image_data
from intradist.trainers.vision_models import ARCHES, CIFAR_DEPTHS, build_model, default_arch
from intradist.trainers.vision_schedules import LR_SCHEDULES, learning_rate, teacher_in_epoch
from intradist.trainers.vision_step import MICRO_BATCH_REDUCTIONS, effective_settings, training_step
from intradist.trainers.vision_transforms import make_transform, resolve_augmentation
from intradist.trainers.vision_weights import load_pretrained_weights, load_teacher, pretrained_weights_file


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
        note = (f"  # factory.py: from intradist.trainers.vision_models import build_model; def model(): return "
                f"build_model({arch!r}, {data.num_classes}, fc_bias=False)")
        if (arch, data.num_classes) == ("resnet50", 37):
            model, note = "--model-factory intradist.trainers.vision_models:reproduction_resnet50", ""
    elif arch not in CIFAR_DEPTHS:
        model = f"--arch {arch} --num-classes {data.num_classes}"
    elif data.num_classes == 10:
        model = f"--model-factory intradist.trainers.vision_models:{arch}"
    else:
        model = "--model-factory factory.py:model"
        note = (f"  # factory.py: from intradist.trainers.vision_models import {arch}; "
                f"def model(): return {arch}({data.num_classes})")
    if data.kind == "digits":
        batches = "--batches intradist.trainers.vision_data:digits_batches"
    elif data.kind == "folder":
        batches = f"--data {Path(data_arg) / data.test_split} --image-size {image_size}"
    else:  # CIFAR and Pet: analysis reads image folders
        batches = f"--data IMAGE_FOLDER --image-size {image_size}"
    return f"analyze-sensitivity {out / 'model.pt'} {model} {batches} --out {out / 'sensitivity'}{note}"


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


Run = TypeVar("Run", bound=Callable[..., Any])


def worker_errors_in_one_line(run: Run) -> Run:
    """``run`` with a user mistake raised in a data loader worker cut to the last line of its message.

    torch re-raises a worker's exception with the worker's traceback in its message; its last line
    is the mistake itself (an unreadable image), and a user mistake is one line.
    """

    @functools.wraps(run)
    def one_line(*args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        except UserError as error:
            lines = [line for line in error.message.strip().splitlines() if line.strip()]
            if len(lines) <= 1:
                raise
            raise UserError(lines[-1]) from None

    return one_line  # type: ignore[return-value]


@worker_errors_in_one_line
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
