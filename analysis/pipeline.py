"""From checkpoint paths to a written report: the library call behind ``analyze-sensitivity``.

    from intradist.analysis.pipeline import AnalysisOptions, analyze
    analyses = analyze(["base.pt", "intra.pt"], AnalysisOptions(data="data-bin", max_batches=20), out="report")
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
import torch

from intradist.analysis.balance import balance_statistics
from intradist.analysis.batches import BatchOptions, make_batches
from intradist.analysis.loading import load_checkpoint
from intradist.analysis.report import (
    CheckpointAnalysis, markdown, shown_path, shown_settings, shown_text, versions, write_report,
)
from intradist.analysis.sensitivity import ablation_sensitivity, taylor_sensitivity
from intradist.errors import UserError
from intradist.results import run_labels
from intradist.run_folder import RunFolder

#: The command whose marker a report folder carries (the library call and the CLI write the same folder).
REPORT_COMMAND = "analyze-sensitivity"

NORMALIZE_CHOICES = {"none": (None,), "loss": ("loss",), "both": (None, "loss")}


@dataclass
class AnalysisOptions:
    """How to load the checkpoints, which batches to use and what to compute."""

    framework: str = "auto"
    method: str = "taylor"
    granularity: str = "tensor"
    normalize: str = "both"  # none | loss | both
    trust_checkpoint: bool = False
    arch: Optional[str] = None
    num_classes: Optional[int] = None
    num_labels: Optional[int] = None
    model_factory: Optional[str] = None
    head: Optional[str] = None  # transformers: the folder's own head unless given
    batches: BatchOptions = field(default_factory=BatchOptions)
    plots: bool = True


def _labels(paths: Sequence[Path], labels: Optional[Sequence[str]]) -> List[str]:
    return run_labels([p.stem if p.is_file() else p.name for p in paths], labels, "checkpoints")


def analyze(paths: Sequence[Union[str, Path]], options: AnalysisOptions, out: Union[str, Path],
            labels: Optional[Sequence[str]] = None, command: str = "", overwrite: bool = False) -> Path:  # fmt: skip
    """Load every checkpoint, compute its sensitivities on its batches and write the report into ``out``.

    ``out`` follows :mod:`intradist.run_folder`: checked before anything loads (never a folder
    holding a checkpoint or the data; an earlier report is replaced, anything else only with
    ``overwrite``), written complete or not at all.
    """
    paths = [Path(p) for p in paths]
    names = _labels(paths, labels)
    if options.normalize not in NORMALIZE_CHOICES:
        raise UserError(f"--normalize {options.normalize!r}: choose from {', '.join(NORMALIZE_CHOICES)}")
    if options.method not in ("taylor", "ablation"):
        raise UserError(f"--method {options.method!r}: choose taylor or ablation")
    inputs = [*paths, *([Path(options.batches.data)] if options.batches.data else [])]
    folder = RunFolder(Path(out), REPORT_COMMAND, inputs=inputs, overwrite=overwrite, replace_earlier=True).check()
    with folder as run:
        _analyze_into(run.staging, paths, names, options, command)
        run.commit()
    return folder.out


def _analyze_into(staging: Path, paths: List[Path], names: List[str], options: AnalysisOptions, command: str) -> None:
    settings = {**{k: v for k, v in asdict(options).items() if k != "batches"},
                "batches": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options.batches).items()},
                "seed": options.batches.seed}  # fmt: skip
    loaded_runs = []
    for path, label in zip(paths, names):
        torch.manual_seed(options.batches.seed)
        loaded = load_checkpoint(path, options.framework, trust_checkpoint=options.trust_checkpoint,
                                 data=options.batches.data, arch=options.arch, num_classes=options.num_classes,
                                 num_labels=options.num_labels, model_factory=options.model_factory,
                                 device=options.batches.device, seed=options.batches.seed,
                                 head=options.head)  # fmt: skip
        batches = make_batches(loaded, options.batches)
        if not batches:
            raise UserError(f"{path}: the data gave no batches (check --data, --split and --max-batches)")
        loaded_runs.append((label, loaded, batches))
    if options.method == "ablation":
        return _write_ablation(staging, loaded_runs, options, settings, command)
    analyses = []
    for label, loaded, batches in loaded_runs:
        results = {n: taylor_sensitivity(loaded.model, batches, loaded.loss_fn, normalize=n)
                   for n in NORMALIZE_CHOICES[options.normalize]}  # fmt: skip
        analyses.append(CheckpointAnalysis(label, loaded.path, loaded.framework, loaded.description, loaded.sha256, results))
    write_report(staging, analyses, granularity=options.granularity, settings=settings, command=command,
                 plots=options.plots)  # fmt: skip


def _write_ablation(staging: Path, runs: List[Tuple[str, object, list]], options: AnalysisOptions,
                    settings: Dict[str, object], command: str) -> None:  # fmt: skip
    """Exact ablation per group into ``staging``: ablation.csv, balance.json over the group sensitivities, report.md."""
    frames, balance = [], {}
    for label, loaded, batches in runs:
        normalize = "loss" if options.normalize == "loss" else None
        frame = ablation_sensitivity(loaded.model, batches, loaded.loss_fn, granularity=options.granularity,
                                     normalize=normalize)  # fmt: skip
        frame.insert(0, "checkpoint", label)
        frames.append(frame)
        balance[label] = balance_statistics(torch.tensor(frame["sensitivity"].to_numpy(), dtype=torch.float64))
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(staging / "ablation.csv", index=False, float_format="%.8g")
    command = shown_text(command)
    record = {"command": command, "settings": shown_settings(settings), "versions": versions(),
              "checkpoints": [{"label": l, "path": shown_path(x.path), "sha256": x.sha256, "description": shown_text(x.description),
                               "balance_over_groups": balance[l]} for l, x, _ in runs]}  # fmt: skip
    (staging / "balance.json").write_text(json.dumps(record, indent=2) + "\n")
    top = table.sort_values("sensitivity", ascending=False).groupby("checkpoint").head(20).set_index("group")
    summary = pd.DataFrame(balance)
    lines = ["# Ablation sensitivity", "", f"`{command}`", "",
             f"Exact |L(Θ) − L(Θ with the {options.granularity} zeroed)| on the same batches.", "",
             "## Balance over groups", "", markdown(summary, "statistic"), "",
             "## Most sensitive groups", "", markdown(top[["checkpoint", "num_params", "sensitivity"]], "group"), ""]  # fmt: skip
    (staging / "report.md").write_text("\n".join(lines))
