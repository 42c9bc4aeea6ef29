"""One update of a vision run: the objective of a (micro-)batch and the accumulation of micro-batches.

The loss itself is :meth:`intradist.settings.DistillationSettings.objective` (K passes, X-divergence,
adaptive α, knowledge distillation); this module adds what the reproduction's notebooks do
differently: torch's label-smoothing convention, an additive teacher term, micro-batches; and
how an update runs: in mixed precision (:class:`Precision`), and under DistributedDataParallel,
where the K passes of a rank go through the wrapped model before its one backward (each rank's
loss is its own batch's; DDP averages the gradients) and only the last micro-batch synchronises.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Callable, ContextManager, Dict, List, Mapping, Optional

import torch
from torch import nn

from intradist import losses
from intradist.errors import UserError
from intradist.settings import DistillationSettings

#: ``--label-smoothing-style``: ε spread over the C - 1 other classes (fairseq, intradist.losses) or all C (torch).
SMOOTHING_STYLES = ("fairseq", "torch")
#: ``--micro-batch-reduction``: each micro-batch's loss divided by their number (a mean), or not (a sum).
MICRO_BATCH_REDUCTIONS = ("mean", "sum")
#: ``--precision``: float32, or autocast to bfloat16 / float16 (the latter with a gradient scaler); GPU only.
PRECISIONS = ("fp32", "bf16", "fp16")


class Precision:
    """``--precision``: the autocast of the forward passes and, for fp16, the gradient scaler of the update.

    fp32 changes nothing. bf16 and fp16 run the passes (and the teacher) under ``torch.autocast``
    on a GPU; the loss is computed in float32 (:mod:`intradist.losses` upcasts the logits). fp16
    scales the loss before each backward and skips an update whose gradients overflowed
    (``torch.amp.GradScaler``). Refused in one line on the CPU.
    """

    def __init__(self, name: str = "fp32", device: torch.device = torch.device("cpu")) -> None:
        if name not in PRECISIONS:
            raise UserError(f"--precision {name}: choose one of {', '.join(PRECISIONS)}")
        if name != "fp32" and device.type != "cuda":
            raise UserError(f"--precision {name}: mixed precision needs a GPU (CUDA); train on the CPU with "
                            f"--precision fp32")  # fmt: skip
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            raise UserError("--precision bf16: this GPU has no bfloat16; use --precision fp16")
        self.name, self.device_type = name, device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None

    def autocast(self) -> ContextManager[Any]:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def gradient_factor(self) -> float:
        """What turns the gradients before :meth:`step` into those of the loss: 1 / the fp16 loss scale, else 1."""
        return 1.0 / float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))


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
                  micro_batch_reduction: str = "mean", teacher_weight: Optional[float] = None,
                  precision: Optional[Precision] = None,
                  before_step: Optional[Callable[[], None]] = None) -> Dict[str, torch.Tensor]:  # fmt: skip
    """One update: per micro-batch the teacher's logits (eval mode) and :func:`step_objective`, then AdamW.

    The batch is cut into micro-batches of ``micro_batch_size`` (batch normalisation sees each
    alone); each one's loss is divided by the number of micro-batches in the batch (``mean``) or not
    (``sum``) before its backward, as the reproduction's notebooks do with ``iter_batch``. Returns
    the terms (``loss``, ``supervised``, ``intra``, ``kd``, ``alpha``), averaged over the micro-batches.
    ``model`` may be wrapped in DistributedDataParallel: the gradients are then averaged across
    ranks once per update, in the last micro-batch's backward. ``before_step`` is called when the
    update's gradient is complete (every micro-batch's backward done, DDP's averaging too), before
    the optimizer step: ``--log-balance-every`` reads the gradient there.
    """
    precision = precision or Precision()
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    size = micro_batch_size or len(labels)
    nominal = max(1, round(len(labels) / size)) if micro_batch_reduction == "mean" else 1
    totals: Dict[str, torch.Tensor] = {}
    starts = range(0, len(labels), size)
    for start in starts:
        chunk, chunk_labels = images[start : start + size], labels[start : start + size]
        last = start == starts[-1]
        no_sync = getattr(model, "no_sync", None)
        with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
            with precision.autocast():
                teacher_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(chunk)
                terms = step_objective(model, settings, chunk, chunk_labels, update, total_steps, teacher_logits,
                                       teacher_weight)  # fmt: skip
            precision.backward(terms["loss"] / nominal)
        share = len(chunk_labels) / len(labels)
        for name in ("loss", "supervised", "intra", "kd", "alpha"):
            totals[name] = totals.get(name, 0.0) + terms[name].detach().float() * share
    if before_step is not None:
        before_step()
    precision.step(optimizer)
    return totals
