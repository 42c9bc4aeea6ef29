"""Contribution balance while a model trains: what ``--log-balance-every N`` records.

Every N updates, the Taylor sensitivities |θ_j · ∂L/∂θ_j| of that update's gradient (the
quantity ``analyze-sensitivity`` computes for a finished checkpoint, on the update's batch) are
summarised by :func:`intradist.balance_statistics.balance_statistics`, and the statistics the
paper's story needs are logged: ``std`` (the paper's), ``cv``, ``gini`` and ``top1_share``. Each
record is one JSON line of ``balance_log.jsonl`` in the run folder, ``{"step": N, ...}``, and the
trainers also log it their framework's way (the Trainer's logs, fairseq's ``train_inner`` lines).

Torch only: the transformers and torchvision trainers and the fairseq plugin all use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch

from intradist.balance_statistics import balance_statistics

#: The statistics logged during training (the paper's std and three scale-free ones).
LOGGED = ("std", "cv", "gini", "top1_share")
#: The file, in the run folder, that holds one JSON record per logged update.
LOG_NAME = "balance_log.jsonl"
#: The prefix of the statistics' names in the frameworks' own logs (``balance_std``, ...).
PREFIX = "balance_"


def gradient_sensitivities(parameters: Iterable[torch.nn.Parameter], scale: float = 1.0) -> torch.Tensor:
    """|θ · g| of every element of every parameter that requires grad, flattened, float32 on the CPU.

    ``scale`` multiplies the gradients first: a framework that sums the loss over tokens passes
    1 / tokens, so that ``g`` is the gradient of the mean loss, as the analysis computes it. A
    parameter the loss did not reach (no ``.grad``) counts with sensitivity 0, as in the analysis.
    """
    parts = [(parameter.detach().float() * parameter.grad.detach().float()).abs().reshape(-1).cpu()
             if parameter.grad is not None else torch.zeros(parameter.numel())
             for parameter in parameters if parameter.requires_grad]  # fmt: skip
    if not parts:
        raise ValueError("no parameter requires grad: there is no balance to log")
    flat = torch.cat(parts)
    return flat * scale if scale != 1.0 else flat


def balance_record(step: int, parameters: Iterable[torch.nn.Parameter], scale: float = 1.0) -> Optional[Dict[str, float]]:
    """The record of update ``step``: the :data:`LOGGED` statistics of its gradient's sensitivities.

    None when the gradient holds an infinity or a NaN (a mixed-precision update that overflowed,
    which the gradient scaler skips): such an update has no balance to log.
    """
    sensitivities = gradient_sensitivities(parameters, scale)
    if not bool(torch.isfinite(sensitivities).all()):
        return None
    statistics = balance_statistics(sensitivities)
    return {"step": step, **{name: statistics[name] for name in LOGGED}, "num_params": statistics["num_params"]}


def log_values(record: Dict[str, float]) -> Dict[str, float]:
    """A record as the frameworks' logs show it: each statistic under ``balance_NAME`` (no clash with the loss terms)."""
    return {f"{PREFIX}{name}": record[name] for name in LOGGED}


def summary(record: Dict[str, float]) -> str:
    """One line of a record, for a trainer that logs in lines: ``update 100: balance std 3.1e-07, cv 9.21, ...``."""
    return (f"update {record['step']}: balance std {record['std']:.4g}, cv {record['cv']:.4f}, "
            f"gini {record['gini']:.4f}, top-1% share {record['top1_share']:.4f}")  # fmt: skip


class BalanceLog:
    """Appends records to ``folder/balance_log.jsonl`` every ``every`` updates.

    ``resumed_at``: the update a resumed run restarts after; records of later updates, which the
    interrupted run logged and the resumed one logs again, are dropped first.
    """

    def __init__(self, folder: Path, every: int, resumed_at: Optional[int] = None) -> None:
        if every < 1:
            raise ValueError(f"--log-balance-every must be at least 1, got {every}")
        self.path = Path(folder) / LOG_NAME
        self.every = every
        if resumed_at is not None and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= resumed_at]
            self.path.write_text("".join(line + "\n" for line in kept))

    def due(self, step: int) -> bool:
        """Whether update ``step`` (1-based, as the frameworks count) is one to log."""
        return step % self.every == 0

    def append(self, record: Dict[str, float]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def read_balance_log(path: Path) -> List[Dict[str, float]]:
    """The records of a ``balance_log.jsonl`` (a file, or a run folder holding one), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
