"""Intra-distillation for your own Hugging Face code: :class:`IntraDistillationTrainer`.

A drop-in ``transformers.Trainer`` for any model whose outputs hold logits: pass it what you
would pass a ``Trainer``, plus K, α and its schedule. It is the trainer of ``intradist train
glue`` and ``intradist train xtreme`` (:class:`intradist.trainers.hf.DistillationTrainer`) with
the settings as keyword arguments. :class:`OutputHead` and its three instances say which outputs
are the logits and which batch entries the targets. ``callbacks=[BalanceCallback(100, Path("out"))]``
logs the balance of every 100th update's gradient, as ``--log-balance-every 100`` does. For a
plain PyTorch loop, call :mod:`intradist.losses` directly (README, "Library use"), and
:func:`intradist.live_balance.balance_record` for the balance.
"""

from __future__ import annotations

from typing import Any

from intradist.settings import DistillationSettings
from intradist.trainers.hf import (
    EXTRACTIVE_QA,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    BalanceCallback,
    DistillationTrainer,
    OutputHead,
)

__all__ = ["IntraDistillationTrainer", "OutputHead", "SEQUENCE_CLASSIFICATION", "TOKEN_CLASSIFICATION", "EXTRACTIVE_QA",
           "BalanceCallback"]  # fmt: skip


class IntraDistillationTrainer(DistillationTrainer):
    """``transformers.Trainer`` that trains on K stochastic passes: mean cross-entropy + α · divergence.

    ``num_passes``: K (1 trains without intra-distillation). ``alpha``: the divergence's weight;
    with ``adaptive_alpha`` it follows the paper's schedule over ``args.max_steps`` (1 at step
    N/``alpha_q``, ``alpha`` from N/``alpha_p`` on; :func:`intradist.losses.adaptive_alpha`).
    ``divergence``: ``"x"`` (the paper's X-divergence) or ``"js"``. ``label_smoothing``: of the
    cross-entropy. ``head``: :data:`SEQUENCE_CLASSIFICATION` (default), :data:`TOKEN_CLASSIFICATION`,
    :data:`EXTRACTIVE_QA` or your own :class:`OutputHead`. The defaults are the paper's translation
    recipe (K = 3, α = 5, adaptive, p = 5, q = 10). Log records gain ``supervised_loss``,
    ``intra_loss`` and ``alpha``; evaluation runs one pass and reports the supervised loss.
    """

    def __init__(self, *args: Any, num_passes: int = 3, alpha: float = 5.0, adaptive_alpha: bool = True,
                 alpha_p: float = 5.0, alpha_q: float = 10.0, divergence: str = "x", label_smoothing: float = 0.0,
                 head: OutputHead = SEQUENCE_CLASSIFICATION, **kwargs: Any) -> None:  # fmt: skip
        settings = DistillationSettings(
            num_passes=num_passes, alpha=alpha, adaptive_alpha=adaptive_alpha, alpha_p=alpha_p, alpha_q=alpha_q,
            divergence=divergence, label_smoothing=label_smoothing,
        )  # fmt: skip
        super().__init__(*args, settings=settings, head=head, **kwargs)
