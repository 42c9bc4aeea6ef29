"""Balance during training, several runs side by side: ``intradist results balance``.

A run trained with ``--log-balance-every N`` (``intradist train glue``, ``xtreme``, ``vision``, or
fairseq with the plugin's criterions) holds ``balance_log.jsonl`` (:mod:`intradist.live_balance`):
one record per logged update, the balance statistics of that update's parameter sensitivities.
:func:`read_runs` reads the logs of several runs, :func:`last_records_table` says where each one
ended, and :func:`plot_runs` draws one panel per statistic (std, cv, Gini, top-1 % share) with one
line per run against the update.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from intradist.errors import UserError
from intradist.live_balance import LOG_NAME, LOGGED
from intradist.results import markdown_table, parse_jsonl, run_labels

#: Panel titles of the statistics.
TITLES = {"std": "std (the paper's balance; lower: more balanced)", "cv": "coefficient of variation",
          "gini": "Gini coefficient", "top1_share": "share of the top 1 % of parameters"}  # fmt: skip
#: The image formats ``--out`` may name (what matplotlib writes from its suffix).
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


@dataclass(frozen=True)
class BalanceRun:
    """One run's balance log: its label, the file and the records in update order."""

    label: str
    path: Path
    records: List[Dict[str, float]]


def log_file(path: Path) -> Path:
    """The ``balance_log.jsonl`` a path names: the file itself, or the one in a run folder."""
    path = Path(path)
    if path.is_dir():
        if not (path / LOG_NAME).is_file():
            raise UserError(f"{path}: no {LOG_NAME} in this folder (train with --log-balance-every N)")
        return path / LOG_NAME
    if not path.is_file():
        raise UserError(f"{path}: no such run folder or file")
    return path


def read_log(path: Path) -> List[Dict[str, float]]:
    """The records of one balance log, sorted by update; a record without the statistics names the file and line."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        records = parse_jsonl(path, handle)
    if not records:
        raise UserError(f"{path}: no records (is the run's first logged update done?)")
    for number, record in enumerate(records, 1):
        missing = [key for key in ("step", *LOGGED) if key not in record]
        if missing:
            raise UserError(f"{path}: record {number} has no {missing[0]}; not a balance log of --log-balance-every")
    return sorted(records, key=lambda record: record["step"])


def labels_of(paths: Sequence[Path], labels: Optional[Sequence[str]]) -> List[str]:
    """``labels`` checked against the runs, or each run's folder name (numbered where two are the same)."""
    return run_labels([(path.parent.name if path.name == LOG_NAME else path.stem) for path in paths], labels, "runs")


def read_runs(paths: Sequence[Path], labels: Optional[Sequence[str]] = None) -> List[BalanceRun]:
    """The balance logs of run folders or ``balance_log.jsonl`` files, labelled."""
    files = [log_file(path) for path in paths]
    return [BalanceRun(label, path, read_log(path)) for label, path in zip(labels_of(files, labels), files)]


def last_records_table(runs: Sequence[BalanceRun]) -> str:
    """Markdown: per run the number of records and the statistics of its last one."""
    rows = [[run.label, len(run.records), run.records[-1]["step"], *(f"{run.records[-1][name]:.4g}" for name in LOGGED)]
            for run in runs]  # fmt: skip
    return markdown_table(["run", "records", "last update", *LOGGED], rows)


def check_figure_out(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse, before anything is read, an ``--out`` image this command may not write (one line, exit 2).

    An image carries no mark of who wrote it, so an existing file is replaced only with ``--overwrite``.
    """
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"--out {out}: name an image file ({', '.join(IMAGE_SUFFIXES)})")
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; name a file for the figure")
    if any(Path(path).resolve() == out.resolve() for path in inputs):
        raise UserError(f"--out {out}: is one of the inputs; name another file for the figure")
    if out.exists() and not overwrite:
        raise UserError(f"--out {out}: exists; name another file, or replace it with --overwrite")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot write in {parent}")


def plot_runs(runs: Sequence[BalanceRun], out: Path) -> Path:
    """One panel per statistic, one line per run against the update; written to ``out`` (complete or not at all)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging setup would show its debug lines
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("seaborn-v0_8-whitegrid"):
        figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
        for axis, name in zip(axes.flat, LOGGED):
            for run in runs:
                axis.plot([r["step"] for r in run.records], [r[name] for r in run.records],
                          marker="o" if len(run.records) < 30 else None, markersize=3, label=run.label)  # fmt: skip
            axis.set_title(TITLES[name], fontsize=10)
            if name == "std":
                axis.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        for axis in axes[-1]:
            axis.set_xlabel("update")
        axes.flat[0].legend(fontsize=9)
        figure.suptitle("Contribution balance of the parameters during training (|θ · grad| of the logged updates)",
                        fontsize=11)  # fmt: skip
        figure.tight_layout()
        staging = out.with_name(f".{out.stem}.partial{out.suffix}")
        try:
            figure.savefig(staging, dpi=120)
            staging.replace(out)
        finally:
            plt.close(figure)
            staging.unlink(missing_ok=True)
    return out
