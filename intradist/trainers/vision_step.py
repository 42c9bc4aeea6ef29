"""One update of a vision run: the objective of a (micro-)batch and the accumulation of micro-batches.

The loss itself is :meth:`intradist.settings.DistillationSettings.objective` (K passes, X-divergence,
adaptive α, knowledge distillation); this module adds what the reproduction's notebooks do
differently: torch's label-smoothing convention, an additive teacher term, micro-batches.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from intradist import losses
from intradist.errors import UserError
from intradist.settings import DistillationSettings

#: ``--label-smoothing-style``: ε spread over the C - 1 other classes (fairseq, intradist.losses) or all C (torch).
SMOOTHING_STYLES = ("fairseq", "torch")
#: ``--micro-batch-reduction``: each micro-batch's loss divided by their number (a mean), or not (a sum).
MICRO_BATCH_REDUCTIONS = ("mean", "sum")


def effective_settings(settings: DistillationSettings, style: str, num_classes: int) -> DistillationSettings:
    """``settings`` with ε in intradist.losses' (fairseq's) convention, whatever ``--label-smoothing-style`` says.

    torch's ``CrossEntropyLoss(label_smoothing=ε)`` gives every class ε/C; fairseq's formula gives
    the C - 1 others ε'/(C - 1). The two losses are identical when ε' = ε (C - 1) / C.
    """
    if style not in SMOOTHING_STYLES:
        raise UserError(f"--label-smoothing-style {style}: choose one of {', '.join(SMOOTHING_STYLES)}")
    if style == "fairseq":
        return settings
    return replace(settings, label_smoothing=settings.label_smoothing * (num_classes - 1) / num_classes)


def step_objective(model: Callable[[torch.Tensor], torch.Tensor], settings: DistillationSettings,
                   images: torch.Tensor, labels: torch.Tensor, update: int, total_steps: int,
                   teacher_logits: Optional[torch.Tensor] = None,
                   teacher_weight: Optional[float] = None) -> Dict[str, torch.Tensor]:  # fmt: skip
    """The objective of one (micro-)batch: K passes of ``model`` combined by the shared objective.

    With ``teacher_weight`` None the teacher enters through the shared convex mix
    ((1 - β) supervised + β KD); with a weight W the objective is supervised + α·intra + W·KD, the
    KD term the mean over the passes of :func:`intradist.losses.kd_loss` (the reproduction's form).
    ``update`` is the update number the adaptive α sees.
    """
    outputs: List[torch.Tensor] = []

    def forward() -> torch.Tensor:
        outputs.append(model(images))
        return outputs[-1]

    if teacher_weight is None:
        return settings.objective(forward=forward, targets=labels, step=update, max_step=total_steps,
                                  teacher_logits=teacher_logits)  # fmt: skip
    terms = settings.objective(forward=forward, targets=labels, step=update, max_step=total_steps)
    if teacher_logits is not None:
        kd = sum(losses.kd_loss(output, teacher_logits, settings.kd_temperature, reduction="mean")
                 for output in outputs) / len(outputs)  # fmt: skip
        terms = {**terms, "loss": terms["loss"] + teacher_weight * kd, "kd": kd.detach()}
    return terms


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, settings: DistillationSettings,
                  images: torch.Tensor, labels: torch.Tensor, update: int, total_steps: int, lr: float,
                  teacher: Optional[nn.Module] = None, micro_batch_size: Optional[int] = None,
                  micro_batch_reduction: str = "mean",
                  teacher_weight: Optional[float] = None) -> Dict[str, torch.Tensor]:  # fmt: skip
    """One update: per micro-batch the teacher's logits (eval mode) and :func:`step_objective`, then AdamW.

    The batch is cut into micro-batches of ``micro_batch_size`` (batch normalisation sees each
    alone); each one's loss is divided by the number of micro-batches in the batch (``mean``) or not
    (``sum``) before its backward, as the reproduction's notebooks do with ``iter_batch``. Returns
    the terms (``loss``, ``supervised``, ``intra``, ``kd``, ``alpha``), averaged over the micro-batches.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    size = micro_batch_size or len(labels)
    nominal = max(1, round(len(labels) / size)) if micro_batch_reduction == "mean" else 1
    totals: Dict[str, torch.Tensor] = {}
    for start in range(0, len(labels), size):
        chunk, chunk_labels = images[start : start + size], labels[start : start + size]
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(chunk)
        terms = step_objective(model, settings, chunk, chunk_labels, update, total_steps, teacher_logits,
                               teacher_weight)  # fmt: skip
        (terms["loss"] / nominal).backward()
        share = len(chunk_labels) / len(labels)
        for name in ("loss", "supervised", "intra", "kd", "alpha"):
            totals[name] = totals.get(name, 0.0) + terms[name].detach().float() * share
    optimizer.step()
    return totals
