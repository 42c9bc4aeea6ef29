#!/usr/bin/env python
"""Collect train-xtreme results into markdown tables: per task, methods × languages, mean ± std over seeds.

    .venv/bin/python scripts/xtreme/results_table.py runs/xtreme            # every metrics.json below
    .venv/bin/python scripts/xtreme/results_table.py runs/xtreme/results.jsonl --metric exact_match

Inputs: JSON-lines files (one train-xtreme record per line, as scripts/xtreme/*.sh append them),
``metrics.json`` files, or folders searched for ``metrics.json``. A run found twice counts once.
One table per task; each cell is the zero-shot score (percent) mean ± sample std over the seeds,
with the number of runs in parentheses; ``avg`` is each run's average over its languages.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a file: make the project importable without installing it
    sys.path.insert(0, str(REPO_ROOT))

from intradist.errors import UserError  # noqa: E402
from intradist.results import emit_table, format_mean_std, markdown_table, read_run_records  # noqa: E402

METHOD_ORDER = ("baseline", "intra", "self-distill", "intra+self-distill", "kd", "intra+kd")


def task_table(records: Sequence[Dict[str, object]], metric: str, digits: int = 1) -> str:
    """Methods × (languages, avg) for the records of one task."""
    languages = sorted({lang for r in records for lang in r["languages"]}, key=lambda lang: (lang != "en", lang))
    methods = sorted({str(r["method"]) for r in records},
                     key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))  # fmt: skip

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


def results_tables(records: Sequence[Dict[str, object]], metric: Optional[str] = None) -> str:
    """One titled table per task, on ``metric`` (default: each record's primary metric)."""
    parts = []
    for task in sorted({str(r["task"]) for r in records}):
        runs = [r for r in records if r["task"] == task]
        name = metric or str(runs[0].get("primary_metric", "f1"))
        if not any(name in r["average"] for r in runs):
            raise UserError(f"--metric {name}: the {task} records have {', '.join(runs[0]['average'])}")
        split = runs[0].get("split", "test")
        parts.append(f"**{task}** ({split} {name}, zero-shot from {runs[0].get('train_language', 'en')})\n\n"
                     + task_table(runs, name))  # fmt: skip
    return "\n\n".join(parts)


@click.command("xtreme-results-table", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--metric", default=None, help="f1, exact_match, precision or recall [default: the task's: f1].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the tables to this markdown file.")
def main(paths: Sequence[Path], metric: Optional[str], out: Optional[Path]) -> None:
    """Methods × languages from train-xtreme results (JSON lines, metrics.json files or folders)."""
    try:
        records = read_run_records(paths, ("task", "method", "seed", "languages", "average"), "train-xtreme")
        if not records:
            raise UserError(f"{', '.join(map(str, paths))}: no train-xtreme records")
        tables = results_tables(records, metric)
    except UserError as error:
        click.echo(f"results_table.py: {error}", err=True)
        sys.exit(2)
    emit_table(tables, out)


if __name__ == "__main__":
    main()
