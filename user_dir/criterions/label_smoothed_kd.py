"""``label_smoothed_kd`` and ``self_distillation``: label-smoothed CE plus KD from a frozen teacher."""

from dataclasses import dataclass

from fairseq.criterions import register_criterion

from intradist import losses
from user_dir.criterions.common import (
    ConfigurationError,
    DistillationCriterion,
    LabelSmoothingConfig,
    TeacherConfig,
)
from user_dir.criterions.train_steps import BalanceLogConfig


@dataclass
class LabelSmoothedKDConfig(LabelSmoothingConfig, TeacherConfig, BalanceLogConfig):
    """Flags of ``label_smoothed_kd``: fairseq's label smoothing flags plus the teacher's (and ``--log-balance-every``)."""


@register_criterion("label_smoothed_kd", dataclass=LabelSmoothedKDConfig)
class LabelSmoothedKDCriterion(DistillationCriterion):
    """loss = (1 - beta) * label-smoothed CE + beta * tau^2 KL(teacher || student) (Hinton et al. 2015).

    Without ``--teacher-path`` (or with beta = 0) it is fairseq's ``label_smoothed_cross_entropy``.
    """

    def __init__(self, task, cfg: LabelSmoothedKDConfig):
        super().__init__(task, cfg)

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        target = self.target_of(model, sample, net_output)
        lprobs = self.log_probs_of(model, net_output)
        loss, nll_loss = self.smoothed_ce(lprobs, target, reduce)
        teacher_logits = self.teacher_logits(model, sample)
        kd = None
        if teacher_logits is not None:
            self.check_teacher(model)
            mask = target.ne(self.padding_idx)
            kd = self.distill(self.logits_of(model, net_output), teacher_logits, mask, reduce)
            loss = losses.mix_with_distillation(loss, kd, self.kd_weight)
        logging_output = self.base_logging_output(sample, loss, nll_loss)
        if kd is not None:
            logging_output["kd_loss"] = kd.data
        if self.report_accuracy:
            logging_output["n_correct"], logging_output["total"] = self.accuracy(lprobs, target)
        return loss, logging_output["sample_size"], logging_output

    def check_teacher(self, model) -> None:
        """Hook for subclasses to vet the teacher against the student; KD accepts any teacher."""


@register_criterion("self_distillation", dataclass=LabelSmoothedKDConfig)
class SelfDistillationCriterion(LabelSmoothedKDCriterion):
    """Knowledge distillation from an earlier round of the same model (Furlanello et al. 2018).

    Same loss as ``label_smoothed_kd``; the teacher is required and must have the student's
    architecture (parameter names and shapes) and dictionary.
    """

    def __init__(self, task, cfg: LabelSmoothedKDConfig):
        if not cfg.teacher_path:
            raise ConfigurationError("self_distillation needs --teacher-path (the previous round's checkpoint)")
        super().__init__(task, cfg)
        self._teacher_checked = False

    def check_teacher(self, model) -> None:
        if not self._teacher_checked:
            self.teacher.check_same_architecture(model)
            self._teacher_checked = True
