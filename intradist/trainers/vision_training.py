"""One run of ``intradist train vision``: :class:`VisionConfig` and :func:`train`, its outputs and its score.

A plain torch loop: AdamW, the learning rate of :mod:`intradist.trainers.vision_schedules`, each
update by :func:`intradist.trainers.vision_step.training_step`; the model of the lowest validation
negative log-likelihood is kept (``model.pt``, the last one too: ``model_last.pt``) and scored on
the test split.

Under ``torchrun --nproc_per_node N`` the same loop runs in N processes
(:mod:`intradist.trainers.distributed`): the model is wrapped in DistributedDataParallel, each rank
trains on its block of every global batch (:class:`~intradist.trainers.distributed.GlobalBatchSampler`,
``--batch-size`` images per rank) with its own K passes, the logged sums and the evaluation sums are
added across ranks, and rank 0 alone writes. The output folder is a
:class:`~intradist.run_folder.RunFolder`: written as ``OUT.partial`` with a checkpoint every
``--save-steps`` updates (``checkpoint.pt``: model, optimizer, gradient scaler, the position in the
epoch, each rank's random state and partial sums, the history and the best model so far); an
interrupted run, rerun with the same command, continues from it, and the number of the update,
which sets the learning rate and the adaptive alpha, with it.

``--log-balance-every N``: every N updates, once the update's gradient is complete (all
micro-batches, the ranks averaged) and before the optimizer step, rank 0 computes the balance
statistics of its parameter sensitivities (:mod:`intradist.live_balance`), prints them as a line
(``update 100: balance std ..., cv ..., gini ..., top-1% share ...``) and appends them to
``balance_log.jsonl`` in the run folder.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import click
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from intradist.analysis.loading import check_device
from intradist import losses
from intradist.errors import UserError
from intradist.live_balance import BalanceLog, balance_record, summary
from intradist.provenance import git_commit, package_versions, sha256_of
from intradist.run_folder import RunFolder
from intradist.settings import DistillationSettings
from intradist.trainers import distributed
from intradist.trainers.distributed import GlobalBatchSampler, Ranks
from intradist.trainers.vision_data import Holdout, ImageData, default_image_size, load_image_data
from intradist.trainers.vision_models import ARCHES, CIFAR_DEPTHS, build_model, default_arch
from intradist.trainers.vision_schedules import LR_SCHEDULES, learning_rate, teacher_in_epoch
from intradist.trainers.vision_step import MICRO_BATCH_REDUCTIONS, Precision, effective_settings, training_step
from intradist.trainers.vision_transforms import make_transform, resolve_augmentation
from intradist.trainers.vision_weights import load_pretrained_weights, load_teacher, pretrained_weights_file

COMMAND = "intradist train vision"
#: The checkpoint inside ``OUT.partial`` (replaced atomically; removed before the folder is committed).
CHECKPOINT = "checkpoint.pt"
#: Sums of an epoch's training terms (weighted by images) that the history reports as means.
TERMS = ("loss", "supervised", "intra", "kd", "alpha")


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
    precision: str = "fp32"  # bf16 or fp16: autocast on a GPU
    save_steps: int = distributed.SAVE_STEPS  # a checkpoint in OUT.partial every N updates
    log_balance_every: int = 0  # every N updates the gradient's balance statistics to stderr and balance_log.jsonl
    overwrite: bool = False  # replace an earlier run's OUT


def resolve_device(device: Optional[str], ranks: Ranks = Ranks()) -> torch.device:
    """``--device`` (default: cuda when available); under torchrun ``cuda`` is the GPU of this rank's LOCAL_RANK."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{ranks.local_rank}"
    return check_device(device)


def versions() -> Dict[str, str]:
    return package_versions(("torch", "torchvision", "numpy", "scikit-learn", "intradist"))


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             precision: Optional[Precision] = None) -> Dict[str, float]:  # fmt: skip
    """Mean negative log-likelihood (natural log, no smoothing) and accuracy over ``loader``, in eval mode.

    Under torchrun each rank's ``loader`` holds its share of the set; the sums are added across ranks.
    """
    model.eval()
    total_nll, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with (precision or Precision()).autocast():
            logits = model(images)
        _, nll = losses.label_smoothed_nll_loss(F.log_softmax(logits.float(), dim=-1), labels, 0.0, reduction="sum")
        total_nll += nll.item()
        correct += (logits.argmax(dim=-1) == labels).sum().item()
        count += len(labels)
    total_nll, correct, count = distributed.sum_across([total_nll, correct, count], device)
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


def _output_folder(config: VisionConfig, settings: DistillationSettings, ranks: Ranks) -> RunFolder:
    """``--out`` as a resumable :class:`RunFolder`: the same flags (but ``--out``) and world size resume a run."""
    inputs = [Path(config.data)] if config.data != "digits" else []
    inputs += [Path(p) for p in (config.pretrained_weights, settings.teacher) if p is not None and Path(p).exists()]
    settings_record = {**asdict(config), "distillation": asdict(settings), "world_size": ranks.world_size}
    return RunFolder(Path(config.out), COMMAND, inputs=inputs, overwrite=config.overwrite, resumable=True,
                     fingerprint=distributed.fingerprint(settings_record), writer=ranks.writer)  # fmt: skip


def _cpu_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


@dataclass
class _Progress:
    """Where the loop stands: what a checkpoint holds besides the model, optimizer and scaler."""

    step: int = 0
    epoch: int = 1
    batches_done: int = 0  # of this rank's batches in ``epoch``
    history: List[Dict[str, Any]] = field(default_factory=list)
    best: Optional[Dict[str, Any]] = None
    best_state: Optional[Dict[str, torch.Tensor]] = None
    seconds: float = 0.0
    sums: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(TERMS, 0.0))  # this rank's, of the epoch
    seen: int = 0
    resumed_from: Optional[int] = None


def _save_checkpoint(staging: Path, progress: _Progress, network: nn.Module, optimizer: torch.optim.Optimizer,
                     precision: Precision, device: torch.device, writer: bool) -> None:  # fmt: skip
    """Every rank hands its random state and partial sums to the writer, which replaces ``checkpoint.pt`` atomically."""
    mine = {"rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "sums": dict(progress.sums), "seen": progress.seen}  # fmt: skip
    ranks = distributed.gathered(mine)
    if not writer:
        return
    state = {"step": progress.step, "epoch": progress.epoch, "batches_done": progress.batches_done,
             "history": progress.history, "best": progress.best, "best_state": progress.best_state,
             "seconds": progress.seconds, "ranks": ranks, "model": network.state_dict(),
             "optimizer": optimizer.state_dict(), "scaler": precision.state_dict()}  # fmt: skip
    temporary = staging / (CHECKPOINT + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, staging / CHECKPOINT)


def _resume(staging: Path, network: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
            device: torch.device, ranks: Ranks) -> Optional[_Progress]:  # fmt: skip
    """The loop's state from ``OUT.partial/checkpoint.pt`` (None without one), with this rank's random state."""
    if not distributed.from_writer((staging / CHECKPOINT).is_file()):
        return None
    state = torch.load(staging / CHECKPOINT, map_location="cpu", weights_only=True)
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    precision.load_state_dict(state["scaler"])
    mine = state["ranks"][ranks.rank]
    torch.set_rng_state(mine["rng"])
    if mine["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda_rng"], device)
    return _Progress(step=state["step"], epoch=state["epoch"], batches_done=state["batches_done"],
                     history=state["history"], best=state["best"], best_state=state["best_state"],
                     seconds=state["seconds"], sums=mine["sums"], seen=mine["seen"], resumed_from=state["step"])  # fmt: skip


@worker_errors_in_one_line
def train(config: VisionConfig, settings: DistillationSettings, data: Optional[ImageData] = None,
          progress: Optional[bool] = None, extra_files: Optional[Dict[str, str]] = None) -> Dict[str, Any]:  # fmt: skip
    """Train one model with ``settings`` per :class:`VisionConfig`; write ``config.out``; return metrics.json's content.

    ``config.out`` is written as ``OUT.partial`` and put in place at the end: ``model.pt`` (the state
    dict of the best validation NLL), ``model_last.pt``, ``metrics.json``, ``history.csv`` and
    ``extra_files`` (name -> text, e.g. the run's ``config.yaml``). An interrupted run leaves
    ``OUT.partial`` with its last checkpoint; the same call continues from it. ``progress``: tqdm
    bars (None: only on a terminal). Under torchrun every rank calls it; rank 0 writes.
    """
    ranks = distributed.launched_ranks()
    folder = _output_folder(config, settings, ranks)
    folder.check()
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
    if config.save_steps < 1:
        raise UserError(f"--save-steps {config.save_steps}: must be at least 1")
    if config.log_balance_every < 0:
        raise UserError(f"--log-balance-every {config.log_balance_every}: must be 0 (never) or more")
    image_size = config.image_size or default_image_size(data)
    augment = resolve_augmentation(config.augment, data.kind)
    device = resolve_device(config.device, ranks)
    teacher, teacher_file = (load_teacher(settings.teacher, arch, data.num_classes, device, config.fc_bias)
                             if settings.teacher else (None, None))  # fmt: skip
    plan = _Plan(arch, image_size, augment, device, Precision(config.precision, device), ranks, holdout, teacher,
                 teacher_file)  # fmt: skip
    started_group = distributed.start_process_group(ranks, device)
    try:
        with distributed.shared_run(folder) as run:
            return _train(config, settings, data, plan, run, progress, extra_files)
    finally:
        distributed.end_process_group(started_group)


@dataclass
class _Plan:
    """What the checks of :func:`train` settled before any training work."""

    arch: str
    image_size: int
    augment: str
    device: torch.device
    precision: Precision
    ranks: Ranks
    holdout: Holdout
    teacher: Optional[nn.Module]
    teacher_file: Optional[Path]


def _train(config: VisionConfig, settings: DistillationSettings, data: ImageData, plan: _Plan, run: RunFolder,
           show_progress: Optional[bool], extra_files: Optional[Dict[str, str]]) -> Dict[str, Any]:  # fmt: skip
    from tqdm.auto import tqdm

    arch, image_size, augment, device, precision = plan.arch, plan.image_size, plan.augment, plan.device, plan.precision
    ranks, holdout, teacher, teacher_file = plan.ranks, plan.holdout, plan.teacher, plan.teacher_file
    out, staging, writer = Path(config.out), run.staging, ranks.writer
    say = (lambda text: click.echo(text, err=True)) if writer else (lambda text: None)  # noqa: E731
    workers = config.workers if config.workers is not None else (0 if data.in_memory else min(4, os.cpu_count() or 1))

    torch.manual_seed(config.seed)
    network = build_model(arch, data.num_classes, config.dropout, config.dropout_placement, config.fc_bias)
    new_keys: List[str] = []
    weights_file: Optional[Path] = None
    if config.pretrained_weights is not None:
        weights_file = pretrained_weights_file(str(config.pretrained_weights), arch)
        new_keys = load_pretrained_weights(network, weights_file)
    network.to(device)
    torch.manual_seed(config.seed + ranks.rank)  # each rank its own dropout masks and augmentations
    if device.type == "cuda":
        torch.cuda.manual_seed(config.seed + ranks.rank)
    model: nn.Module = network
    if ranks.world_size > 1:
        model = nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

    transform = {split: make_transform(image_size, split == "train", augment, data.kind, data.native_size)
                 for split in ("train", "eval")}  # fmt: skip
    data.train.transform = transform["train"]
    data.val.transform = data.test.transform = transform["eval"]
    loader_options = {"batch_size": config.batch_size, "num_workers": workers, "pin_memory": device.type == "cuda"}
    sampler = GlobalBatchSampler(data.train, config.batch_size, ranks, seed=config.seed)
    # the loaders draw their workers' seeds from their own generators, not from the random state that a
    # checkpoint restores (dropout, augmentation in the main process), which an epoch's new iterator would shift
    train_loader = DataLoader(data.train, sampler=sampler, persistent_workers=workers > 0,
                              generator=torch.Generator().manual_seed(config.seed + ranks.rank), **loader_options)

    def shard(dataset: Any) -> DataLoader:
        mine = dataset if ranks.world_size == 1 else Subset(dataset, distributed.rank_share(len(dataset), ranks))
        return DataLoader(mine, shuffle=False, generator=torch.Generator().manual_seed(config.seed), **loader_options)

    val_loader = shard(data.val)
    test_loader = shard(data.test) if data.test is not data.val else val_loader
    steps_per_epoch = sampler.batches_per_epoch()
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.warmup_init_lr, betas=config.betas,
                                  weight_decay=config.weight_decay)  # fmt: skip

    state = (_resume(staging, network, optimizer, precision, device, ranks) if run.resuming else None) or _Progress()
    if state.resumed_from is not None:
        say(f"{COMMAND}: resuming {staging} at update {state.step} (epoch {state.epoch})")
    global_batch = config.batch_size * ranks.world_size
    say(f"{COMMAND}: {arch} on {data.description}; {data.sizes()}; image size {image_size}, augment "
        f"{augment}; K={settings.num_passes}, label smoothing {settings.label_smoothing}, teacher "
        f"{teacher_file or 'none'}; {total_steps} updates of {global_batch} images on {device}"
        + (f" x {ranks.world_size} processes" if ranks.world_size > 1 else "")
        + (f", {precision.name}" if precision.name != "fp32" else ""))  # fmt: skip
    lr = learning_rate(config.lr_schedule, state.step + config.first_update, config.lr, config.warmup_init_lr,
                       config.warmup_steps)  # fmt: skip
    balance = (BalanceLog(staging, config.log_balance_every, state.resumed_from)
               if config.log_balance_every and writer else None)  # fmt: skip

    def log_balance() -> None:
        """The balance of the update about to be taken (its gradient complete), on rank 0."""
        record = balance_record(state.step + 1, network.parameters(), precision.gradient_factor())
        if record is not None:
            balance.append(record)
            tqdm.write(summary(record), file=sys.stderr)

    started = time.perf_counter() - state.seconds
    for epoch in range(state.epoch, config.epochs + 1):
        if state.step >= total_steps:
            break
        if epoch != state.epoch:
            state.epoch, state.batches_done, state.sums, state.seen = epoch, 0, dict.fromkeys(TERMS, 0.0), 0
        sampler.set_epoch(epoch, skip_batches=state.batches_done)
        model.train()
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, unit="batch",
                   disable=(not writer) or (None if show_progress is None else not show_progress))  # fmt: skip
        epoch_teacher = teacher if teacher_in_epoch(epoch, config.kd_epochs) else None
        for images, labels in bar:
            if state.step >= total_steps:
                break
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            update = state.step + config.first_update
            lr = learning_rate(config.lr_schedule, update, config.lr, config.warmup_init_lr, config.warmup_steps)
            due = balance is not None and balance.due(state.step + 1)
            terms = training_step(model, optimizer, settings, images, labels, update, total_steps, lr, epoch_teacher,
                                  config.micro_batch_size, config.micro_batch_reduction, config.teacher_weight,
                                  precision, log_balance if due else None)  # fmt: skip
            state.step += 1
            state.batches_done += 1
            for name in TERMS:
                state.sums[name] += terms[name].item() * len(labels)
            state.seen += len(labels)
            bar.set_postfix(loss=f"{terms['loss'].item():.3f}", lr=f"{lr:.2e}")
            if state.step % config.save_steps == 0 and state.step < total_steps:
                state.seconds = time.perf_counter() - started
                _save_checkpoint(staging, state, network, optimizer, precision, device, writer)
        bar.close()
        *sums, seen = distributed.sum_across([*(state.sums[name] for name in TERMS), state.seen], device)
        validation = evaluate(network, val_loader, device, precision)
        row = {"epoch": epoch, "steps": state.step, "lr": lr,
               **{f"train_{name}": value / max(seen, 1) for name, value in zip(TERMS, sums)},
               "val_nll": validation["nll"], "val_accuracy": validation["accuracy"],
               "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
        state.history.append(row)
        improved = state.best is None or validation["nll"] < state.best["val_nll"]
        if improved:
            state.best = {"epoch": epoch, "steps": state.step, "val_nll": validation["nll"],
                          "val_accuracy": validation["accuracy"]}  # fmt: skip
            state.best_state = _cpu_state(network)
        say(f"epoch {epoch}: train loss {row['train_loss']:.4f} (intra {row['train_intra']:.4f}, alpha "
            f"{row['train_alpha']:.2f}), val NLL {validation['nll']:.4f}, val accuracy "
            f"{100 * validation['accuracy']:.1f}%{' *' if improved else ''}")  # fmt: skip
    train_seconds = time.perf_counter() - started
    best, history = state.best, state.history

    last_state = _cpu_state(network)
    network.load_state_dict(state.best_state)
    test = evaluate(network, test_loader, device, precision)
    if writer:
        torch.save(state.best_state, staging / "model.pt")
        torch.save(last_state, staging / "model_last.pt")
        (staging / CHECKPOINT).unlink(missing_ok=True)
        with (staging / "history.csv").open("w", newline="") as handle:
            writer_csv = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer_csv.writeheader()
            writer_csv.writerows(history)
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
        "seed": config.seed, "device": str(device), "precision": precision.name, "workers": workers,
        **distributed.world_record(ranks, config.batch_size),
        "save_steps": config.save_steps, "resumed_from_step": state.resumed_from,
        "log_balance_every": config.log_balance_every,
        "versions": versions(), "git_commit": git_commit(),
        "best_epoch": best["epoch"], "best_steps": best["steps"], "best_val_nll": best["val_nll"],
        "best_val_accuracy": best["val_accuracy"], "test_nll": test["nll"], "test_accuracy": test["accuracy"],
        "epochs_run": len(history), "steps_run": state.step, "train_seconds": round(train_seconds, 2),
        "model_sha256": sha256_of(staging / "model.pt") if writer else None,
        "analyze": analysis_command(out, arch, data, image_size, str(config.data), config.fc_bias),
    }  # fmt: skip
    if writer:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
    distributed.commit(run)
    say(f"{COMMAND}: best epoch {best['epoch']} (val NLL {best['val_nll']:.4f}); {data.test_split} NLL "
        f"{test['nll']:.4f}, accuracy {100 * test['accuracy']:.2f}%; written to {out}")  # fmt: skip
    return metrics
