"""``intra_distillation``: K stochastic passes, label-smoothed CE per pass, and their divergence.

loss = (1/K) sum_i CE_i  +  alpha(t) * D(p_1..p_K)            (Xu et al. 2022, Eq. 3-4)

where CE_i is label-smoothed cross-entropy of pass i and D the X-divergence (or JS) between each
pass and the passes' mean, summed over the target positions. With a teacher, the CE part becomes
(1 - beta) * CE_i + beta * KD_i per pass, as in the reproduction's intra x self-distillation grid.
"""

from dataclasses import dataclass, field
from typing import List

import torch
from fairseq.criterions import register_criterion
from fairseq.dataclass import ChoiceEnum
from omegaconf import II

from intradist import losses
from user_dir.criterions.common import (
    ConfigurationError,
    DistillationCriterion,
    LabelSmoothingConfig,
    TeacherConfig,
)
from user_dir.criterions.train_steps import BalanceLogConfig, follow_train_steps

PASS_STRATEGIES = ("batch", "sequential")


@dataclass
class IntraDistillationConfig(LabelSmoothingConfig, TeacherConfig, BalanceLogConfig):
    """Flags of ``intra_distillation`` (see docs/criterions.md for the formulas)."""

    num_passes: int = field(default=3, metadata={"help": "K: stochastic forward passes per batch (K >= 2)"})
    alpha: float = field(default=5.0, metadata={"help": "weight of the intra-distillation term (its maximum when adaptive)"})
    adaptive_alpha: int = field(
        default=0,
        metadata={
            "help": "grow alpha with the paper's schedule, alpha(N/q) = 1 to alpha(N/p) = alpha, N = --max-update "
            "(a bare flag or 1 turns it on, 0 off)",
            "argparse_const": 1,
        },
    )
    alpha_p: float = field(default=5.0, metadata={"help": "p of the adaptive schedule: alpha is reached at update N/p"})
    alpha_q: float = field(default=10.0, metadata={"help": "q of the adaptive schedule: alpha is 1 at update N/q (q > p)"})
    divergence: ChoiceEnum(list(losses.DIVERGENCES)) = field(
        default="x", metadata={"help": "x: X-divergence (the paper's), js: Jensen-Shannon to the mean"}
    )
    pass_strategy: ChoiceEnum(list(PASS_STRATEGIES)) = field(
        default="sequential",
        metadata={
            "help": "sequential: K forwards one after another (measured faster on CPU, docs/benchmarks.md); "
            "batch: one forward over the batch repeated K times (fewer, larger kernels)"
        },
    )
    max_update: int = II("optimization.max_update")


@register_criterion("intra_distillation", dataclass=IntraDistillationConfig)
class IntraDistillationCriterion(DistillationCriterion):
    """Intra-distillation for sequence-to-sequence models, on fairseq's label-smoothed CE."""

    def __init__(self, task, cfg: IntraDistillationConfig):
        if cfg.num_passes < 2:
            raise ConfigurationError(f"--num-passes must be at least 2, got {cfg.num_passes}")
        if cfg.alpha < 0:
            raise ConfigurationError(f"--alpha must be non-negative, got {cfg.alpha}")
        if str(cfg.divergence) not in losses.DIVERGENCES:
            raise ConfigurationError(f"--divergence must be one of {losses.DIVERGENCES}, got {cfg.divergence!r}")
        if str(cfg.pass_strategy) not in PASS_STRATEGIES:
            raise ConfigurationError(f"--pass-strategy must be one of {PASS_STRATEGIES}, got {cfg.pass_strategy!r}")
        if cfg.adaptive_alpha:
            if not 0 < cfg.alpha_p < cfg.alpha_q:
                raise ConfigurationError(f"--alpha-p and --alpha-q need 0 < p < q, got p={cfg.alpha_p}, q={cfg.alpha_q}")
            if cfg.max_update <= 0:
                raise ConfigurationError("--adaptive-alpha needs --max-update > 0: the schedule is a fraction of it")
        super().__init__(task, cfg)
        self.num_passes = cfg.num_passes
        self.alpha = cfg.alpha
        self.adaptive_alpha = bool(cfg.adaptive_alpha)
        self.alpha_p, self.alpha_q = cfg.alpha_p, cfg.alpha_q
        self.max_update = cfg.max_update
        self.divergence = str(cfg.divergence)
        self.pass_strategy = str(cfg.pass_strategy)
        self.num_updates = 0
        self.follow_update_number(task)

    @staticmethod
    def follow_update_number(task) -> None:
        """Hand the criterion of each training step the update number the trainer gives ``task.train_step``.

        fairseq 0.12 gives the update number to the task's ``train_step`` (and, from there, to
        ``model.set_num_updates``, which no module of a stock transformer keeps), never to the
        criterion; the adaptive schedule needs it. :func:`~user_dir.criterions.train_steps.follow_train_steps`
        wraps the ``train_step`` of this one task instance (nothing global is patched) to pass it on:
        any task, fairseq's stock ``translation`` included, then trains with the adaptive schedule.
        """
        follow_train_steps(task)

    def set_num_updates(self, num_updates: int) -> None:
        """Receive the update number (from the task's ``train_step``) for the alpha schedule."""
        self.num_updates = num_updates

    def current_alpha(self) -> float:
        """alpha at the current update: constant, or the paper's adaptive schedule."""
        if not self.adaptive_alpha:
            return self.alpha
        return losses.adaptive_alpha(self.num_updates, self.max_update, self.alpha, self.alpha_p, self.alpha_q)

    def run_passes(self, model, net_input: dict, num_passes: int) -> List[tuple]:
        """K stochastic forward passes over the same input, as a list of net outputs.

        ``sequential`` runs K forwards; ``batch`` runs one forward over the input repeated K
        times along the batch dimension (each copy gets its own dropout masks) and splits the
        logits. Both keep the K graphs until the backward, so their memory is alike; on CPU
        ``sequential`` measured 1-7% faster (docs/benchmarks.md), hence the default.
        """
        if num_passes == 1 or self.pass_strategy == "sequential":
            return [model(**net_input) for _ in range(num_passes)]
        repeated = {
            key: value.repeat(num_passes, *([1] * (value.dim() - 1))) if torch.is_tensor(value) else value
            for key, value in net_input.items()
        }
        logits, *rest = model(**repeated)
        return [(chunk, *rest) for chunk in logits.chunk(num_passes, dim=0)]

    def forward(self, model, sample, reduce=True):
        # In evaluation dropout is off, so all passes would agree: one pass and no divergence.
        num_passes = self.num_passes if model.training else 1
        net_outputs = self.run_passes(model, sample["net_input"], num_passes)
        target = self.target_of(model, sample, net_outputs[0])
        mask = target.ne(self.padding_idx)
        teacher_logits = self.teacher_logits(model, sample)

        pass_log_probs, pass_ce, pass_kd, nll_loss = [], [], [], 0.0
        for net_output in net_outputs:
            lprobs = self.log_probs_of(model, net_output)
            pass_log_probs.append(lprobs)
            ce, nll = self.smoothed_ce(lprobs, target, reduce)
            nll_loss = nll_loss + nll / num_passes
            pass_ce.append(ce)
            if teacher_logits is not None:
                pass_kd.append(self.distill(self.logits_of(model, net_output), teacher_logits, mask, reduce))

        intra, alpha = None, 0.0
        if num_passes > 1:
            alpha = self.current_alpha()
            # the log-probabilities the CE used, so the vocabulary-wide log-softmax runs once per pass
            intra = losses.intra_distillation_loss(
                pass_log_probs, self.divergence, mask=mask, reduction="sum" if reduce else "none",
                inputs_are_log_probs=True,
            )  # fmt: skip
            intra = intra if reduce else intra.reshape(-1)
        loss = losses.combine_pass_losses(pass_ce, pass_kd if teacher_logits is not None else None, self.kd_weight,
                                          intra, alpha)  # fmt: skip
        kd = sum(k / num_passes for k in pass_kd) if pass_kd else None
        logging_output = self.base_logging_output(sample, loss, nll_loss)
        if intra is not None:
            logging_output["intra_distillation_loss"] = intra.data
            logging_output["alpha_x_sample_size"] = alpha * logging_output["sample_size"]
        if teacher_logits is not None:
            logging_output["kd_loss"] = kd.data
        if self.report_accuracy:
            logging_output["n_correct"], logging_output["total"] = self.accuracy(pass_log_probs[0], target)
        return loss, logging_output["sample_size"], logging_output
