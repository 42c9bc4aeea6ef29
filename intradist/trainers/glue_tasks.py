"""The nine GLUE tasks: where their text and labels are in the official files, and their metrics.

Reads the layout of the official GLUE download (``glue_data/TASK/train.tsv``, ``dev.tsv``; MNLI
``dev_matched.tsv`` and ``dev_mismatched.tsv``), gzipped or not, and JSON lines exported from the
Hugging Face ``glue`` data set (``train.jsonl``, ``validation.jsonl``, same field names as there).
Files are read by :func:`intradist.analysis.batches.read_table`, the project's one TSV/JSONL reader.

Labels are mapped to ids in a fixed order per task, the order of the Hugging Face ``glue`` data
set, so a JSONL export with integer labels and the official TSV strings give the same ids:

======  ==============================  =================================================
task    official TSV values -> ids      names in the saved config (id2label)
======  ==============================  =================================================
CoLA    0, 1                            unacceptable, acceptable
SST-2   0, 1                            negative, positive
MRPC    0, 1                            not_equivalent, equivalent
QQP     0, 1                            not_duplicate, duplicate
STS-B   a score in [0, 5]               one output (regression)
MNLI    entailment, neutral,            entailment, neutral, contradiction
        contradiction
QNLI    entailment, not_entailment      entailment, not_entailment
RTE     entailment, not_entailment      entailment, not_entailment
WNLI    0, 1                            not_entailment, entailment
======  ==============================  =================================================

Metrics (computed here with scikit-learn and scipy, nothing downloaded): Matthews correlation
for CoLA, Pearson and Spearman correlation for STS-B, F1 of the positive class and accuracy for
MRPC and QQP, accuracy otherwise; MNLI on its matched and mismatched dev sets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from intradist.errors import UserError

#: File name endings tried for a split, in this order (the first that exists is read).
SPLIT_SUFFIXES = (".tsv", ".tsv.gz", ".jsonl", ".jsonl.gz")


def normalise_task_name(name: str) -> str:
    """``STS-B``, ``sts_b``, ``stsb`` -> ``stsb``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class GlueTask:
    """Where one task's examples are and how they are scored."""

    name: str  # the official name, also the folder of the official download: "RTE", "STS-B"
    text_fields: Tuple[Tuple[str, ...], ...]  # per text slot, the column names accepted (first present wins)
    label_fields: Tuple[str, ...]  # label column names accepted (first present wins)
    labels: Tuple[str, ...]  # id -> name; empty for regression
    raw_labels: Tuple[str, ...]  # id -> the value in the official TSV
    metrics: Tuple[str, ...]  # the metrics reported, the first one selects the best evaluation
    dev_splits: Tuple[Tuple[str, str], ...] = (("dev", "dev"),)  # (name in the metrics, file stem)
    train_split: str = "train"
    headerless_columns: Optional[Tuple[str, ...]] = None  # the official file has no header row (CoLA)

    @property
    def key(self) -> str:
        """The lower-case name without punctuation: ``rte``, ``stsb``, ``sst2``."""
        return normalise_task_name(self.name)

    @property
    def regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def primary_split(self) -> str:
        return self.dev_splits[0][0]


_PAIR = (("sentence1",), ("sentence2",))
_BINARY = ("0", "1")

TASKS: Dict[str, GlueTask] = {
    task.key: task
    for task in (
        GlueTask("CoLA", (("sentence",),), ("label",), ("unacceptable", "acceptable"), _BINARY,
                 ("matthews_correlation", "accuracy"),
                 headerless_columns=("source", "label", "original_label", "sentence")),
        GlueTask("SST-2", (("sentence",),), ("label",), ("negative", "positive"), _BINARY, ("accuracy",)),
        GlueTask("MRPC", (("sentence1", "#1 String"), ("sentence2", "#2 String")), ("label", "Quality"),
                 ("not_equivalent", "equivalent"), _BINARY, ("f1", "accuracy")),
        GlueTask("QQP", (("question1",), ("question2",)), ("is_duplicate", "label"),
                 ("not_duplicate", "duplicate"), _BINARY, ("f1", "accuracy")),
        GlueTask("STS-B", _PAIR, ("score", "label"), (), (), ("pearson", "spearman")),
        GlueTask("MNLI", (("sentence1", "premise"), ("sentence2", "hypothesis")), ("gold_label", "label"),
                 ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
                 ("accuracy",),
                 dev_splits=(("matched", "dev_matched"), ("mismatched", "dev_mismatched"))),
        GlueTask("QNLI", (("question",), ("sentence",)), ("label",), ("entailment", "not_entailment"),
                 ("entailment", "not_entailment"), ("accuracy",)),
        GlueTask("RTE", _PAIR, ("label",), ("entailment", "not_entailment"), ("entailment", "not_entailment"),
                 ("accuracy",)),
        GlueTask("WNLI", _PAIR, ("label",), ("not_entailment", "entailment"), _BINARY, ("accuracy",)),
    )
}  # fmt: skip

#: Other names of the dev files: the Hugging Face export calls them validation(_matched).
_DEV_ALIASES = {"dev": "validation", "dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}


def get_task(name: str) -> GlueTask:
    """The task of a name in any spelling (``RTE``, ``rte``, ``STS-B``, ``sst2``); a user error otherwise."""
    task = TASKS.get(normalise_task_name(name))
    if task is None:
        raise UserError(f"--task {name}: not a GLUE task; choose one of {', '.join(t.name for t in TASKS.values())}")
    return task


# ---------------------------------------------------------------------------------------------
# Reading examples


@dataclass
class Examples:
    """One split of a task: the texts per slot (one list per text column) and the label ids or scores."""

    path: Path
    texts: List[List[str]]
    labels: List[Union[int, float]]

    def __len__(self) -> int:
        return len(self.labels)


def split_file(data_dir: Path, stem: str) -> Path:
    """The file of split ``stem`` in ``data_dir`` (``.tsv``, ``.tsv.gz``, ``.jsonl``, ``.jsonl.gz``)."""
    stems = [stem] + ([_DEV_ALIASES[stem]] if stem in _DEV_ALIASES else [])
    for name in stems:
        for suffix in SPLIT_SUFFIXES:
            if (data_dir / f"{name}{suffix}").is_file():
                return data_dir / f"{name}{suffix}"
    raise UserError(f"{data_dir}: no {stem}.tsv (nor {stem}.tsv.gz, .jsonl, .jsonl.gz); is it a GLUE task folder?")


def read_split(task: GlueTask, path: Path) -> Examples:
    """The examples of one file of ``task``: text columns and labels found by name, labels mapped to ids."""
    from intradist.analysis.batches import read_table  # the project's TSV/JSONL reader (analysis imports fairseq: lazily)

    columns, rows = read_table(path)
    if task.headerless_columns and not any(name in columns for slot in task.text_fields for name in slot):
        columns, rows = _add_header(path, task.headerless_columns, columns, rows)
    if not rows:
        raise UserError(f"{path}: no examples (no data rows)")
    text_columns = [_column(path, columns, slot, "text") for slot in task.text_fields]
    label_column = _column(path, columns, task.label_fields, "label")
    texts: List[List[str]] = [[] for _ in text_columns]
    labels: List[Union[int, float]] = []
    for number, row in enumerate(rows, 1):
        for slot, column in zip(texts, text_columns):
            value = row.get(column)
            slot.append("" if value is None else str(value))
        labels.append(_label(task, path, number, row.get(label_column), label_column))
    return Examples(path=path, texts=texts, labels=labels)


def _add_header(
    path: Path, names: Tuple[str, ...], columns: List[str], rows: List[Dict[str, str]]
) -> Tuple[List[str], List[Dict[str, str]]]:
    """A file without a header row: its first line was read as the header; make it the first example."""
    if len(columns) != len(names):
        raise UserError(
            f"{path}: no header row and {len(columns)} fields on the first line; the official layout without a "
            f"header has {len(names)} ({', '.join(names)})"
        )
    if len(set(columns)) != len(columns):  # the reader keyed the rows by the first line: repeated fields collapsed
        raise UserError(f"{path}: no header row and repeated fields on the first line; add the header line "
                        f"{chr(9).join(names)!r}")  # fmt: skip
    first = dict(zip(names, columns))
    return list(names), [first] + [dict(zip(names, (row[column] for column in columns))) for row in rows]


def _column(path: Path, columns: Sequence[str], accepted: Sequence[str], what: str) -> str:
    found = next((name for name in accepted if name in columns), None)
    if found is None:
        names = " or ".join(repr(name) for name in accepted)
        raise UserError(f"{path}: no {what} column {names}; its columns: {', '.join(map(str, columns))}")
    return found


def _label(task: GlueTask, path: Path, number: int, value: object, column: str) -> Union[int, float]:
    if value is None:
        raise UserError(f"{path}, example {number}: no {column!r}")
    if task.regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise UserError(f"{path}, example {number}: {column} {value!r} is not a number (STS-B scores are 0-5)")
        return score
    text = str(value).strip()
    for names in (task.raw_labels, task.labels):
        if text in names:
            return names.index(text)
    if re.fullmatch(r"\d+", text) and int(text) < task.num_labels:  # integer ids of a Hugging Face export
        return int(text)
    raise UserError(f"{path}, example {number}: {column} {value!r} is not a {task.name} label "
                    f"({', '.join(task.raw_labels)})")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Metrics


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """The fraction of predictions equal to the reference."""
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(references, predictions))


def f1(predictions: Sequence[int], references: Sequence[int]) -> float:
    """F1 of the positive class (id 1: equivalent, duplicate), 2PR/(P+R); 0 when nothing is positive."""
    from sklearn.metrics import f1_score

    return float(f1_score(references, predictions, pos_label=1, average="binary", zero_division=0.0))


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Matthews correlation (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when a factor is 0."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(references, predictions))


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant."""
    return _correlation("pearsonr", predictions, references)


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman rank correlation (ties get their mean rank); NaN when either side is constant."""
    return _correlation("spearmanr", predictions, references)


def _correlation(name: str, predictions: Sequence[float], references: Sequence[float]) -> float:
    import scipy.stats

    predictions, references = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return math.nan
    return float(getattr(scipy.stats, name)(predictions, references)[0])


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearman": spearman,
}


def task_metrics(task: GlueTask, outputs: np.ndarray, references: np.ndarray) -> Dict[str, float]:
    """The task's metrics from the model outputs (logits ``[N, C]``; ``[N]`` or ``[N, 1]`` scores for STS-B)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task.regression:
        predictions = outputs.reshape(-1)
        references = np.asarray(references, dtype=np.float64).reshape(-1)
    else:
        predictions = outputs.reshape(-1, outputs.shape[-1]).argmax(axis=-1)
        references = np.asarray(references).reshape(-1).astype(np.int64)
    return {name: METRIC_FUNCTIONS[name](predictions, references) for name in task.metrics}
