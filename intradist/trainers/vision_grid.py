"""``intradist train vision-grid``'s eight models: intra-distillation x self-distillation x label smoothing.

Each cell is one :func:`intradist.trainers.vision_training.train` run; the cells share one
:class:`DistillationSettings` (K, α and its schedule, ε, β, τ), each using the switches it is named for.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import click

from intradist.errors import UserError
from intradist.results import format_mean_std, markdown_table
from intradist.settings import DistillationSettings
from intradist.trainers.vision_data import Holdout, ImageData, load_image_data
from intradist.trainers.vision_training import VisionConfig, train


@dataclass(frozen=True)
class GridCell:
    """One model of the grid: which of intra-distillation, self-distillation and label smoothing it uses."""

    intra: bool
    self_distillation: bool
    label_smoothing: bool

    @property
    def name(self) -> str:
        parts = [part for part, on in (("intra", self.intra), ("sd", self.self_distillation),
                                       ("ls", self.label_smoothing)) if on]  # fmt: skip
        return "-".join(parts) or "baseline"

    @property
    def teacher(self) -> "GridCell":
        """The matching teacher: the same intra-distillation and label smoothing, without self-distillation."""
        return replace(self, self_distillation=False)


#: Table order: baseline and label smoothing, self-distillation, then the same with intra-distillation.
GRID = tuple(GridCell(intra, sd, ls) for intra in (False, True) for sd in (False, True) for ls in (False, True))


#: The grid's distillation switches unless the command says otherwise: K = 3, α = 5 on the paper's
#: adaptive schedule, X-divergence, ε = 0.1, β = 0.5, τ = 1 (each used only by the cells named for it).
GRID_DISTILLATION = DistillationSettings(num_passes=3, alpha=5.0, adaptive_alpha=True, alpha_p=5.0, alpha_q=10.0,
                                         divergence="x", label_smoothing=0.1, kd_weight=0.5, kd_temperature=1.0)


@dataclass(frozen=True)
class GridSettings:
    """The grid's switches: the shared distillation settings, and the seeds every cell is trained with."""

    distillation: DistillationSettings = GRID_DISTILLATION
    seeds: Tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if self.distillation.num_passes < 2:
            raise UserError(f"--passes {self.distillation.num_passes}: the intra-distillation cells need at least "
                            f"2 passes")  # fmt: skip
        if not self.seeds:
            raise UserError("--seeds: give at least one seed")

    def for_cell(self, cell: GridCell, teacher: Optional[Path]) -> DistillationSettings:
        """The cell's settings: K passes, ε and the teacher where the cell uses them, plain training elsewhere."""
        shared = self.distillation
        return replace(shared, num_passes=shared.num_passes if cell.intra else 1,
                       label_smoothing=shared.label_smoothing if cell.label_smoothing else 0.0,
                       teacher=str(teacher) if cell.self_distillation else None)  # fmt: skip


def run_grid(config: VisionConfig, grid: GridSettings, progress: Optional[bool] = None) -> List[Dict[str, Any]]:
    """Train the eight models per seed under ``config.out/seedS/CELL`` (teachers first); write grid.json and grid.md.

    A cell whose folder exists is read back, not retrained, so a rerun resumes.
    """
    root = Path(config.out)
    data = load_image_data(config.data, Holdout(config.val_split, config.val_size, config.val_split_seed))
    records = []
    for seed in grid.seeds:
        for cell in sorted(GRID, key=lambda c: c.self_distillation):  # teachers before their students
            out = root / f"seed{seed}" / cell.name
            teacher = root / f"seed{seed}" / cell.teacher.name / "model.pt"
            if (out / "metrics.json").is_file():
                metrics = json.loads((out / "metrics.json").read_text())
                click.echo(f"grid: {out} exists, reusing it", err=True)
            else:
                click.echo(f"grid: seed {seed}, {cell.name}", err=True)
                cell_config = replace(config, out=out, seed=seed)
                metrics = train(cell_config, grid.for_cell(cell, teacher), data=data, progress=progress)
            kept = ("test_nll", "test_accuracy", "best_epoch", "best_val_nll", "train_seconds", "arch", "test_split")
            records.append({"cell": cell.name, "intra": cell.intra, "self_distillation": cell.self_distillation,
                            "label_smoothing": cell.label_smoothing, "seed": seed, "out": str(out),
                            **{key: metrics[key] for key in kept}})  # fmt: skip
    (root / "grid.json").write_text(json.dumps({"settings": asdict(grid), "records": records}, indent=2) + "\n")
    (root / "grid.md").write_text(grid_report(config, grid, records, data) + "\n")
    return records


def grid_table(records: Sequence[Dict[str, Any]]) -> str:
    """The NLL table: one row per grid cell, test NLL and accuracy as mean ± std over seeds."""
    rows = []
    for cell in GRID:
        mine = [r for r in records if r["cell"] == cell.name]
        if not mine:
            continue
        mark = lambda on: "✓" if on else "—"  # noqa: E731
        rows.append([cell.name, mark(cell.intra), mark(cell.self_distillation), mark(cell.label_smoothing),
                     format_mean_std([r["test_nll"] for r in mine], digits=4),
                     format_mean_std([100 * r["test_accuracy"] for r in mine], digits=2),
                     format_mean_std([r["best_epoch"] for r in mine], digits=1),
                     format_mean_std([r["train_seconds"] for r in mine], digits=0), len(mine)])  # fmt: skip
    header = ["model", "intra-distillation", "self-distillation", "label smoothing", "test NLL",
              "test accuracy (%)", "best epoch", "train time (s)", "seeds"]  # fmt: skip
    return markdown_table(header, rows)


def grid_report(config: VisionConfig, grid: GridSettings, records: Sequence[Dict[str, Any]], data: ImageData) -> str:
    """grid.md: the recipe and the switches in words, then :func:`grid_table`."""
    arch = records[0]["arch"] if records else config.arch
    shared = grid.distillation
    alpha_schedule = (f"adaptive (p = {shared.alpha_p}, q = {shared.alpha_q})" if shared.adaptive_alpha
                      else "constant")  # fmt: skip
    lines = [
        f"# Vision grid: {arch} on {data.description}",
        "",
        f"Recipe: AdamW (weight decay {config.weight_decay}), batch {config.batch_size}"
        + (f" in micro-batches of {config.micro_batch_size}" if config.micro_batch_size else "")
        + f", lr {config.lr} (warm-up from {config.warmup_init_lr} over {config.warmup_steps} updates, then "
        f"{config.lr_schedule}), {config.epochs} epochs"
        + (f" (at most {config.max_steps} updates)" if config.max_steps else "")
        + f", dropout {config.dropout} "
        + ("before the classifier" if config.dropout_placement == "fc" else "after every ReLU")
        + "; model of the lowest validation NLL, scored on "
        f"{records[0]['test_split'] if records else 'test'}.",
        f"Intra-distillation: K = {shared.num_passes}, α = {shared.alpha}, {alpha_schedule}, "
        f"{shared.divergence.upper()}-divergence. Label smoothing ε = {shared.label_smoothing}. Self-distillation: "
        f"β = {shared.kd_weight}, τ = {shared.kd_temperature}, teacher = the model with the same intra-distillation "
        f"and label smoothing without self-distillation. Seeds: {', '.join(map(str, grid.seeds))}.",
        "",
        grid_table(records),
    ]  # fmt: skip
    return "\n".join(lines)
