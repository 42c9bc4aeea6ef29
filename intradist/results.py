"""Run records (JSON lines, metrics.json) and the tables built from them: translation BLEU, GLUE, XTREME."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import click

from intradist.errors import UserError


def read_jsonl(path: Path) -> List[Dict[str, object]]:
    """The records of a JSON-lines file; a malformed line is a user error naming file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror})") from error
    return parse_jsonl(path, lines)


def parse_jsonl(path: Path, lines: Iterable[str]) -> List[Dict[str, object]]:
    """One JSON object per non-blank line; anything else is a user error naming ``path`` and the line."""
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not a JSON object ({error.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def read_run_records(paths: Sequence[Path], required: Sequence[str], what: str) -> List[Dict[str, object]]:
    """The run records of JSON-lines files, JSON files (``metrics.json``) and folders (searched for ``metrics.json``).

    Every record must have the ``required`` keys (a user error names the first that lacks one,
    as no ``what`` record); a run found twice (the same task, method and seed, e.g. in a
    results.jsonl and in its own folder) counts once.
    """
    records: List[Dict[str, object]] = []
    for path in paths:
        if path.is_dir():
            files = sorted(path.rglob("metrics.json"))
            if not files:
                raise UserError(f"{path}: no metrics.json below this folder")
            records += [_read_json_object(file) for file in files]
        elif path.suffix == ".jsonl":
            records += read_jsonl(path)
        elif path.is_file():
            records.append(_read_json_object(path))
        else:
            raise UserError(f"{path}: no such file or folder")
    unique: Dict[tuple, Dict[str, object]] = {}
    for number, record in enumerate(records, 1):
        missing = [key for key in required if key not in record]
        if missing:
            raise UserError(f"record {number} is no {what} record (no {', '.join(missing)}): {json.dumps(record)[:100]}")
        unique[(record.get("task"), record.get("method"), record.get("seed"))] = record
    return list(unique.values())


def _read_json_object(path: Path) -> Dict[str, object]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: cannot be read as JSON ({error})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: not a JSON object")
    return record


def run_labels(names: Sequence[str], labels: Optional[Sequence[str]], what: str) -> List[str]:
    """``labels`` checked to give one distinct name to each of the ``what`` (runs, checkpoints), or
    without them ``names``, numbered where two are the same."""
    if labels is None:
        return list(names) if len(set(names)) == len(names) else [f"{i + 1}:{name}" for i, name in enumerate(names)]
    if len(labels) != len(names):
        raise UserError(f"--labels has {len(labels)} names for {len(names)} {what}")
    if len(set(labels)) != len(labels):
        raise UserError(f"--labels must be distinct, got {', '.join(labels)}")
    return list(labels)


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    """``mean ± std`` over seeds, or the single value when there is one."""
    mean, std = mean_and_std(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align_right_from: int = 1) -> str:
    """A GitHub markdown table; columns from ``align_right_from`` on are right-aligned."""
    rule = ["---" if i < align_right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


#: IWSLT'14 test BLEU quoted for comparison: (pair, method) -> BLEU. Only values stated in
#: the sources are listed; the other pairs are left empty rather than guessed.
PUBLISHED_BLEU = {
    "paper (Xu et al. 2022)": {("de-en", "baseline"): 33.07, ("de-en", "intra"): 36.10},
    "reproduction": {("de-en", "baseline"): 32.90, ("de-en", "intra"): 35.11},
}

METHOD_ORDER = ("baseline", "intra", "kd", "self-distill")


def results_table(records: Sequence[Dict[str, object]], digits: int = 2) -> str:
    """Methods × language pairs, BLEU mean ± std over seeds (n runs), then the published numbers.

    A column is a pair (``de-en``); when the records come from several corpora, each column
    names its corpus too. Published numbers are quoted for the IWSLT'14 columns only.
    """
    for index, record in enumerate(records):
        missing = [key for key in ("pair", "method", "bleu") if key not in record]
        if missing:
            raise UserError(f"record {index + 1} has no {', '.join(missing)}: {json.dumps(record)[:120]}")
    columns = sorted({(str(r.get("corpus", "iwslt14")), str(r["pair"])) for r in records})
    several_corpora = len({corpus for corpus, _ in columns}) > 1
    methods = sorted({str(r["method"]) for r in records},
                     key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))  # fmt: skip
    rows = []
    for method in methods:
        cells = []
        for corpus, pair in columns:
            scores = [float(r["bleu"]) for r in records
                      if r["method"] == method and r["pair"] == pair and r.get("corpus", "iwslt14") == corpus]  # fmt: skip
            cells.append(f"{format_mean_std(scores, digits)} ({len(scores)})" if scores else "—")
        rows.append([method, *cells])
    for source, numbers in PUBLISHED_BLEU.items():
        for method in methods:
            quoted = [numbers.get((pair, method)) if corpus == "iwslt14" else None for corpus, pair in columns]
            if any(value is not None for value in quoted):
                rows.append([f"{method}, {source}", *("—" if value is None else f"{value:.2f}" for value in quoted)])
    header = [f"{corpus} {pair}" if several_corpora else pair for corpus, pair in columns]
    return markdown_table(["method", *header], rows)


#: The first line of a table file ``intradist results --out`` writes: a file without it is never replaced.
TABLE_MARKER = "<!-- written by intradist results; rerunning it replaces this file -->"


def check_table_out(out: Optional[Path], inputs: Sequence[Path]) -> None:
    """Refuse, before anything is read, an ``--out`` file this command may not write (one line, exit 2)."""
    if out is None:
        return
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; name a file for the table")
    if any(Path(path).resolve() == out.resolve() for path in inputs):
        raise UserError(f"--out {out}: is one of the inputs; name another file for the table")
    if out.exists():
        with open(out, encoding="utf-8", errors="replace") as handle:
            if handle.readline().rstrip("\n") != TABLE_MARKER:
                raise UserError(f"--out {out}: exists and was not written by intradist results; name another file")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {parent}")


def emit_table(table: str, out: Optional[Path]) -> None:
    """Print a markdown table and, with ``out``, also write it there (atomically, under :data:`TABLE_MARKER`)."""
    click.echo(table)
    if out is not None:
        staging = out.with_name(out.name + ".partial")
        staging.write_text(f"{TABLE_MARKER}\n{table}\n")
        staging.replace(out)


#: Order of the tasks (the GLUE paper's) and of the methods in the table.
GLUE_TASK_ORDER = ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI")
TRAINER_METHOD_ORDER = ("baseline", "intra", "self-distill", "intra+self-distill", "kd", "intra+kd")
METRIC_NAMES = {
    "matthews_correlation": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman",
}  # fmt: skip


def glue_table(records: Sequence[Dict[str, object]], digits: int = 1) -> str:
    """Methods × (task, dev set, metric), 100 × mean ± std over seeds (number of runs)."""
    columns = []  # (task, split, metric)
    tasks = sorted({str(r["task"]) for r in records}, key=lambda t: (GLUE_TASK_ORDER.index(t) if t in GLUE_TASK_ORDER else 99, t))
    for task in tasks:
        for record in records:
            if record["task"] != task:
                continue
            for split, metrics in record["dev"].items():
                for metric in metrics:
                    if metric != "loss" and (task, split, metric) not in columns:
                        columns.append((task, split, metric))
    methods = sorted({str(r["method"]) for r in records},
                     key=lambda m: (TRAINER_METHOD_ORDER.index(m) if m in TRAINER_METHOD_ORDER else len(TRAINER_METHOD_ORDER), m))  # fmt: skip
    rows = []
    for method in methods:
        cells = []
        for task, split, metric in columns:
            values = [100 * float(r["dev"][split][metric]) for r in records if r["task"] == task
                      and r["method"] == method and r["dev"].get(split, {}).get(metric) is not None]  # fmt: skip
            cells.append(f"{format_mean_std(values, digits)} ({len(values)})" if values else "—")
        rows.append([method, *cells])
    header = [f"{task}{'' if split == 'dev' else '-' + ('m' if split == 'matched' else 'mm')} "
              f"{METRIC_NAMES.get(metric, metric)}" for task, split, metric in columns]  # fmt: skip
    return markdown_table(["method", *header], rows)


def xtreme_task_table(records: Sequence[Dict[str, object]], metric: str, digits: int = 1) -> str:
    """Methods × (languages, avg) for the records of one task."""
    languages = sorted({lang for r in records for lang in r["languages"]}, key=lambda lang: (lang != "en", lang))
    methods = sorted({str(r["method"]) for r in records},
                     key=lambda m: (TRAINER_METHOD_ORDER.index(m) if m in TRAINER_METHOD_ORDER else len(TRAINER_METHOD_ORDER), m))  # fmt: skip

    def cell(values: List[float]) -> str:
        return f"{format_mean_std(values, digits)} ({len(values)})" if values else "—"

    rows = []
    for method in methods:
        runs = [r for r in records if r["method"] == method]
        cells = [cell([float(r["languages"][lang][metric]) for r in runs
                       if r["languages"].get(lang, {}).get(metric) is not None]) for lang in languages]  # fmt: skip
        average = [float(r["average"][metric]) for r in runs if r["average"].get(metric) is not None]
        rows.append([method, *cells, cell(average)])
    return markdown_table(["method", *languages, "avg"], rows)


def xtreme_tables(records: Sequence[Dict[str, object]], metric: Optional[str] = None) -> str:
    """One titled table per task, on ``metric`` (default: each record's primary metric)."""
    parts = []
    for task in sorted({str(r["task"]) for r in records}):
        runs = [r for r in records if r["task"] == task]
        name = metric or str(runs[0].get("primary_metric", "f1"))
        if not any(name in r["average"] for r in runs):
            raise UserError(f"--metric {name}: the {task} records have {', '.join(runs[0]['average'])}")
        split = runs[0].get("split", "test")
        parts.append(f"**{task}** ({split} {name}, zero-shot from {runs[0].get('train_language', 'en')})\n\n"
                     + xtreme_task_table(runs, name))  # fmt: skip
    return "\n\n".join(parts)


def translation_table_of(paths: Sequence[Path]) -> str:
    """The translation table of the evaluation JSON lines in ``paths`` (``intradist evaluate``'s records)."""
    records = [record for path in paths for record in read_jsonl(path)]
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no evaluation records")
    return results_table(records)


def glue_table_of(paths: Sequence[Path]) -> str:
    """The GLUE table of ``intradist train glue`` runs: JSON-lines files, metrics.json files or folders of them."""
    records = read_run_records(paths, ("task", "method", "seed", "dev"), "intradist train glue")
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no intradist train glue records")
    return glue_table(records)


def xtreme_tables_of(paths: Sequence[Path], metric: Optional[str] = None) -> str:
    """The XTREME tables (one per task) of ``intradist train xtreme`` runs, on ``metric``."""
    records = read_run_records(paths, ("task", "method", "seed", "languages", "average"), "intradist train xtreme")
    if not records:
        raise UserError(f"{', '.join(map(str, paths))}: no intradist train xtreme records")
    return xtreme_tables(records, metric)
