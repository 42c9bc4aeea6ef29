"""What the criterions follow of fairseq's training steps: the update number, and ``--log-balance-every``.

fairseq 0.12 hands the update number to the task's ``train_step`` (once per micro-batch of an
update), never to the criterion, and shows a criterion nothing of the update's gradient. The
trainer builds the criterion from the task object whose ``train_step`` it then calls with the
sample, the model, the criterion, the optimizer and ``update_num`` at every step, a resumed run's
first included. :func:`follow_train_steps` wraps the ``train_step`` of that one task instance, once
however many criteria it builds (nothing global is patched), and hands the criterion of the step
the update number (``set_num_updates``: the adaptive alpha schedule) and the step itself
(``balance``: :class:`LiveBalance`).
"""

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from intradist.live_balance import PREFIX, BalanceLog, balance_record, log_values

#: Where the balance statistics stand in a ``train_inner`` line (fairseq orders the values by priority):
#: after ``lr`` (300), ``gnorm`` (400) and ``clip`` (500), before ``train_wall`` (800).
PRIORITY = 600


@dataclass
class BalanceLogConfig(FairseqDataclass):
    """The flag of the plugin's criterions that logs the contribution balance while training."""

    log_balance_every: int = field(
        default=0,
        metadata={
            "help": "every N updates, the balance statistics (std, cv, gini, top1_share) of the parameter "
            "sensitivities |theta * grad| of the update's gradient (unclipped, of the loss per token): in the "
            "train_inner lines (balance_step, balance_std, ...) and appended to SAVE_DIR/balance_log.jsonl; "
            "0: never (docs/criterions.md)"
        },
    )
    balance_log_dir: str = II("checkpoint.save_dir")  # where balance_log.jsonl goes: the run's --save-dir


def follow_train_steps(task) -> None:
    """Wrap ``task.train_step`` (once per task instance) to hand each step's criterion its update number and step."""
    train_step = task.train_step
    if getattr(train_step, "hands_criterion_the_update_number", False):
        return

    @functools.wraps(train_step)
    def recording_train_step(sample, model, criterion, optimizer, update_num, *args, **kwargs):
        if hasattr(criterion, "set_num_updates"):
            criterion.set_num_updates(update_num)
        balance = getattr(criterion, "balance", None)
        if balance is not None:
            balance.before_micro_batch(model, optimizer, update_num)
        return train_step(sample, model, criterion, optimizer, update_num, *args, **kwargs)

    recording_train_step.hands_criterion_the_update_number = True
    task.train_step = recording_train_step


def rank_zero() -> bool:
    """Whether this process is rank 0 of the run (or the only process)."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0


def pending_gradient_factor(optimizer) -> float:
    """What fairseq will still multiply the model's gradients by before the optimizer step.

    In float32 nothing: ``multiply_grads`` has already divided them by the update's sample size.
    The fp16 optimizers apply that division and 1 / the loss scale later (their
    ``_multiply_factor``); with ``--amp`` torch's gradient scaler is undone inside ``clip_grad_norm``.
    """
    factor = getattr(optimizer, "_multiply_factor", 1.0)
    scaler = getattr(optimizer, "scaler", None)
    if hasattr(scaler, "get_scale"):  # torch's GradScaler of --amp
        factor = factor / scaler.get_scale()
    return float(factor)


class LiveBalance:
    """``--log-balance-every N`` of one criterion: the balance of every Nth update's gradient, fairseq's way.

    The gradient is read when it is complete and not yet clipped: fairseq calls the optimizer's
    ``clip_grad_norm`` after the update's micro-batches (``--update-freq``) are accumulated, the
    workers' gradients all-reduced and the sum divided by the update's sample size (its target
    tokens; sentences with ``--sentence-avg``). So the record is of the gradient of the loss per
    token: with label smoothing 0, K = 1 and no dropout, that of the mean token NLL that
    ``analyze-sensitivity`` computes on the same batch. That method of the optimizer the trainer
    hands ``train_step`` is wrapped, on that one instance, at the first step.

    Each record goes, on rank 0, to ``SAVE_DIR/balance_log.jsonl`` and into fairseq's metrics:
    ``balance_step`` (the update it was taken at) and ``balance_std``, ``balance_cv``,
    ``balance_gini``, ``balance_top1_share``, logged with weight 0 at every update from then on, so
    that each ``train_inner`` line (and the epoch's ``train`` line) shows the latest record, whatever
    ``--log-interval`` is. A resumed run drops the records the interrupted run logged after the
    checkpoint it restarts from (its first update number says which).
    """

    def __init__(self, every: int, save_dir: Optional[str]) -> None:
        self.every = every
        self.folder = Path(save_dir) if save_dir and not str(save_dir).startswith("${") else None
        self.log: Optional[BalanceLog] = None
        self.started = False
        self.due: Optional[tuple] = None  # (model, step) of the update whose gradient is awaited
        self.latest: Optional[Dict[str, float]] = None

    def before_micro_batch(self, model, optimizer, update_num: int) -> None:
        """At each micro-batch of update ``update_num + 1``: open the log, watch the optimizer, re-log the latest."""
        if not rank_zero():
            return
        if not self.started:
            self.started = True
            if self.folder is not None:
                self.log = BalanceLog(self.folder, self.every, resumed_at=update_num)
        self.watch(optimizer)
        step = update_num + 1
        self.due = (model, step) if step % self.every == 0 else None
        if self.latest is not None:
            self.log_scalars(self.latest)

    def watch(self, optimizer) -> None:
        """Read the gradient in ``optimizer.clip_grad_norm``, before fairseq clips it (once per optimizer)."""
        clip_grad_norm = optimizer.clip_grad_norm
        if getattr(clip_grad_norm, "reads_balance", False):
            return

        @functools.wraps(clip_grad_norm)
        def reading_clip_grad_norm(*args, **kwargs):
            self.gradient_complete(optimizer)
            return clip_grad_norm(*args, **kwargs)

        reading_clip_grad_norm.reads_balance = True
        optimizer.clip_grad_norm = reading_clip_grad_norm

    def gradient_complete(self, optimizer) -> None:
        """The update's gradient is complete: record it if the update is due."""
        if self.due is None:
            return
        (model, step), self.due = self.due, None
        record = balance_record(step, model.parameters(), scale=pending_gradient_factor(optimizer))
        if record is None:  # an fp16 overflow: fairseq skips the update
            return
        self.latest = record
        if self.log is not None:
            self.log.append(record)
        self.log_scalars(record)

    @staticmethod
    def log_scalars(record: Dict[str, float]) -> None:
        """A record into fairseq's active meters, with weight 0: each meter then shows this last value."""
        metrics.log_scalar(f"{PREFIX}step", record["step"], weight=0, priority=PRIORITY)
        for offset, (key, value) in enumerate(log_values(record).items(), 1):
            metrics.log_scalar(key, value, weight=0, priority=PRIORITY + offset)
