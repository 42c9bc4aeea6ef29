"""The schedules of a vision run: the learning rate per update, and the epochs that use the teacher."""

from __future__ import annotations

import math
from typing import Optional

#: ``--lr-schedule``: fairseq's inverse square root, or the reproduction notebooks' shifted one.
LR_SCHEDULES = ("inverse-sqrt", "reproduction")


def inverse_sqrt_lr(step: int, peak: float, warmup_init: float, warmup_steps: int) -> float:
    """Learning rate of update ``step`` (0-based): fairseq's ``inverse_sqrt`` schedule.

    lr(t) = warmup_init + t (peak - warmup_init) / warmup_steps   for t < warmup_steps
    lr(t) = peak * sqrt(warmup_steps / t)                         for t >= warmup_steps
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_init + step * (peak - warmup_init) / warmup_steps
    return peak * math.sqrt(max(warmup_steps, 1) / max(step, 1))


def reproduction_lr(update: int, peak: float, warmup_init: float, warmup_steps: int) -> float:
    """Learning rate of update ``update`` (counted from 1) in the reproduction's notebooks.

    lr(u) = warmup_init * u                      for u < warmup_steps
    lr(u) = peak / sqrt(u - warmup_steps + 1)    for u >= warmup_steps

    With 2e-5, 1e-3 and 50: ``base_lr * num_update`` below 50, then ``0.001 / np.sqrt(num_update-49)``
    (IntraSmooth.ipynb cell 7 lines 30-33): it decays as 1/√u from the peak, not fairseq's √(W/t).
    """
    if update < warmup_steps:
        return warmup_init * update
    return peak / math.sqrt(update - warmup_steps + 1)


def learning_rate(schedule: str, update: int, peak: float, warmup_init: float, warmup_steps: int) -> float:
    """``--lr-schedule``'s learning rate for update number ``update`` (as counted from ``--first-update``)."""
    if schedule == "reproduction":
        return reproduction_lr(update, peak, warmup_init, warmup_steps)
    return inverse_sqrt_lr(update, peak, warmup_init, warmup_steps)


def teacher_in_epoch(epoch: int, kd_epochs: Optional[int]) -> bool:
    """Whether epoch ``epoch`` (counted from 1) uses the teacher term: all do, or the first ``kd_epochs``."""
    return kd_epochs is None or epoch <= kd_epochs
