"""The one settings object of the distillation switches, and the objective of one step.

Every trainer (transformers, torchvision) and every study or recipe that starts one takes a
:class:`DistillationSettings`, validated once here. The switches mirror the fairseq criterion's flags (``--num-passes``, ``--alpha``,
``--adaptive-alpha``, ``--alpha-p``, ``--alpha-q``, ``--divergence``, ``--label-smoothing``,
``--teacher``, ``--kd-weight``, ``--kd-temperature``), so one vocabulary serves every trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Dict, Optional, Sequence

import click
import torch

from intradist import losses
from intradist.errors import UserError


@dataclass(frozen=True)
class DistillationSettings:
    """The intra-distillation, label-smoothing and knowledge-distillation settings of a run."""

    num_passes: int = 1
    alpha: float = 0.0
    adaptive_alpha: bool = False
    alpha_p: float = 5.0
    alpha_q: float = 10.0
    divergence: str = "x"
    label_smoothing: float = 0.0
    teacher: Optional[str] = None
    kd_weight: float = 0.5
    kd_temperature: float = 1.0
    intra_reduction: str = "mean"
    intra_positions: str = "labelled"

    def __post_init__(self) -> None:
        if self.num_passes < 1:
            raise ValueError(f"--num-passes must be at least 1, got {self.num_passes}")
        if self.divergence not in losses.DIVERGENCES:
            raise ValueError(f"--divergence must be one of {', '.join(losses.DIVERGENCES)}, got {self.divergence!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"--label-smoothing must lie in [0, 1), got {self.label_smoothing}")
        losses.check_kd_weight(self.kd_weight, "--kd-weight")
        if self.intra_reduction not in losses.INTRA_REDUCTIONS:
            raise ValueError(f"--intra-reduction must be one of {', '.join(losses.INTRA_REDUCTIONS)}, "
                             f"got {self.intra_reduction!r}")  # fmt: skip
        if self.intra_positions not in losses.INTRA_POSITIONS:
            raise ValueError(f"--intra-positions must be one of {', '.join(losses.INTRA_POSITIONS)}, "
                             f"got {self.intra_positions!r}")  # fmt: skip

    def alpha_at(self, step: int, max_step: int) -> float:
        """α for this update: constant, or the paper's adaptive schedule (:func:`intradist.losses.adaptive_alpha`)."""
        if self.num_passes == 1:
            return 0.0
        if self.adaptive_alpha:
            return losses.adaptive_alpha(step, max_step, self.alpha, self.alpha_p, self.alpha_q)
        return self.alpha

    def objective(
        self,
        forward: Callable[[], torch.Tensor],
        targets: torch.Tensor,
        step: int,
        max_step: int,
        teacher_logits: Optional[torch.Tensor] = None,
        regression: bool = False,
        ignore_index: Optional[int] = None,
    ) -> Dict[str, torch.Tensor]:
        """Run ``forward`` K times (dropout differs per pass while the model trains) and combine the losses.

        Returns the terms of :func:`intradist.losses.classification_objective` plus ``alpha``
        and the first pass's output as ``logits`` (for metrics).
        """
        passes: Sequence[torch.Tensor] = [forward() for _ in range(self.num_passes)]
        alpha = self.alpha_at(step, max_step)
        terms = losses.classification_objective(
            passes, targets, label_smoothing=self.label_smoothing, alpha=alpha, divergence=self.divergence,
            teacher_logits=teacher_logits, kd_weight=self.kd_weight if teacher_logits is not None else 0.0,
            kd_temperature=self.kd_temperature, regression=regression, ignore_index=ignore_index,
            intra_reduction=self.intra_reduction, intra_positions=self.intra_positions,
        )  # fmt: skip
        return {**terms, "alpha": torch.tensor(alpha), "logits": passes[0].detach()}


def distillation_options(function: Callable) -> Callable:
    """The shared click options; the command receives them as keyword arguments named like the fields."""
    options = [
        click.option("--num-passes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="K stochastic passes per step; 1 trains without intra-distillation."),
        click.option("--alpha", type=click.FloatRange(min=0), default=5.0, show_default=True,
                     help="Weight of the divergence between the passes (the paper uses 5)."),
        click.option("--adaptive-alpha/--constant-alpha", default=True, show_default=True,
                     help="The paper's schedule: alpha is 1 at step N/q and reaches its value at N/p (docs/criterions.md)."),
        click.option("--alpha-p", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True),
        click.option("--alpha-q", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True),
        click.option("--divergence", type=click.Choice(list(losses.DIVERGENCES)), default="x", show_default=True,
                     help="x: the paper's X-divergence; js: Jensen-Shannon. Regression uses the passes' variance."),
        click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True),
        click.option("--teacher", type=click.Path(), default=None,
                     help="Teacher for knowledge or self-distillation (a model folder or checkpoint of this trainer)."),
        click.option("--kd-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="beta: (1 - beta) * supervised + beta * KD, with a teacher."),
        click.option("--kd-temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True),
        click.option("--intra-reduction", type=click.Choice(list(losses.INTRA_REDUCTIONS)), default="mean",
                     show_default=True,
                     help="The divergence over positions: mean, or sum as the authors' GLUE/XTREME scripts "
                          "(its weight then grows with the batch; docs/fidelity.md)."),
        click.option("--intra-positions", type=click.Choice(list(losses.INTRA_POSITIONS)), default="labelled",
                     show_default=True,
                     help="Positions the divergence counts: labelled ones, or all of the padded batch "
                          "(padding and sub-tokens too, as the authors' XTREME scripts)."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


DISTILLATION_FIELDS = tuple(DistillationSettings.__dataclass_fields__)


def settings_from(options: Dict[str, object], base: DistillationSettings = DistillationSettings()) -> DistillationSettings:
    """Pop the switches a command offers out of its keyword arguments into a :class:`DistillationSettings`.

    Switches the command does not offer keep their value in ``base`` (a recipe's own defaults).
    Inconsistent switches (``--kd-weight`` outside [0, 1]) are a :class:`UserError`: one line, exit 2.
    """
    given = {name: options.pop(name) for name in DISTILLATION_FIELDS if name in options}
    try:
        return replace(base, **given)
    except ValueError as error:
        raise UserError(str(error)) from None


def flat_record(config: object, switches: Sequence[str]) -> Dict[str, object]:
    """A run's settings dataclass as one flat mapping, its ``distillation`` field spelled out as ``switches``.

    The switches take the place of that field, so a saved record (``recipe.json``, ``study.json``)
    lists every flag of the run side by side, as the command line gave them.
    """
    record: Dict[str, object] = {}
    for field in fields(config):
        if field.name == "distillation":
            record.update({name: getattr(config.distillation, name) for name in switches})
        else:
            record[field.name] = getattr(config, field.name)
    return record
