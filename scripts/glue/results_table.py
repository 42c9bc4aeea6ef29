#!/usr/bin/env python
"""Collect train-glue results into a markdown table: methods × GLUE tasks, mean ± std over seeds.

    .venv/bin/python scripts/glue/results_table.py checkpoints/glue/results.jsonl [--out docs/glue-results.md]
    .venv/bin/python scripts/glue/results_table.py checkpoints/glue            # every metrics.json below

Inputs: JSON-lines files (one train-glue record per line, as scripts/glue/run.sh appends them),
``metrics.json`` files, or folders searched for ``metrics.json``. A run found twice (the same
task, method and seed, e.g. in results.jsonl and in its folder) counts once. Each column is one
metric of one task (one per dev set for MNLI), scaled by 100 as in the GLUE papers; each cell is
mean ± sample std over the seeds, with the number of runs in parentheses.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Sequence

import click

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a file: make the project importable without installing it
    sys.path.insert(0, str(REPO_ROOT))

from intradist.errors import UserError  # noqa: E402
from intradist.results import emit_table, format_mean_std, markdown_table, read_run_records  # noqa: E402

#: Order of the tasks (the GLUE paper's) and of the methods in the table.
TASK_ORDER = ("CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI")
METHOD_ORDER = ("baseline", "intra", "self-distill", "intra+self-distill", "kd", "intra+kd")
METRIC_NAMES = {
    "matthews_correlation": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman",
}  # fmt: skip


def results_table(records: Sequence[Dict[str, object]], digits: int = 1) -> str:
    """Methods × (task, dev set, metric), 100 × mean ± std over seeds (number of runs)."""
    columns = []  # (task, split, metric)
    tasks = sorted({str(r["task"]) for r in records}, key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else 99, t))
    for task in tasks:
        for record in records:
            if record["task"] != task:
                continue
            for split, metrics in record["dev"].items():
                for metric in metrics:
                    if metric != "loss" and (task, split, metric) not in columns:
                        columns.append((task, split, metric))
    methods = sorted({str(r["method"]) for r in records},
                     key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))  # fmt: skip
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


@click.command("glue-results-table", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the table to this markdown file.")
def main(paths: Sequence[Path], out: Path | None) -> None:
    """Methods × GLUE tasks from train-glue results (JSON lines, metrics.json files or folders)."""
    try:
        records = read_run_records(paths, ("task", "method", "seed", "dev"), "train-glue")
        if not records:
            raise UserError(f"{', '.join(map(str, paths))}: no train-glue records")
        table = results_table(records)
    except UserError as error:
        click.echo(f"results_table.py: {error}", err=True)
        sys.exit(2)
    emit_table(table, out)


if __name__ == "__main__":
    main()
