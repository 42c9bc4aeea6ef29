"""``translation_intra_distillation``: fairseq's translation task that tells the criterion the update.

fairseq 0.12 passes the update number to the task's ``train_step`` and to the model, never to
the criterion; the adaptive alpha schedule needs it, so this task forwards it. It also accepts
the original intra-distillation code's flags, so an existing command of that repository runs
with ``--user-dir user_dir`` added (docs/criterions.md maps them to the criterion's flags).
"""

import logging
from dataclasses import dataclass, field

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from user_dir.criterions.common import ConfigurationError
from user_dir.criterions.intra_distillation import IntraDistillationConfig, IntraDistillationCriterion

logger = logging.getLogger(__name__)


class UpdateNumberForwarding:
    """Task mixin: hand the update number to the criterion before each training step."""

    forwards_update_number_to_criterion = True

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if hasattr(criterion, "set_num_updates"):
            criterion.set_num_updates(update_num)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)


@dataclass
class TranslationIntraDistillationConfig(TranslationConfig):
    """fairseq's translation flags plus the original code's intra-distillation flags."""

    num_iter: int = field(
        default=1, metadata={"help": "original code's K; > 1 trains with intra_distillation (= --num-passes)"}
    )
    alpha: float = field(default=5.0, metadata={"help": "weight of the intra-distillation term (= criterion --alpha)"})
    adaptive_alpha: int = field(
        default=0, metadata={"help": "1: adaptive alpha schedule (= criterion --adaptive-alpha)", "argparse_const": 1}
    )
    temperature_p: float = field(default=5.0, metadata={"help": "original code's p (= --alpha-p)"})
    temperature_q: float = field(default=10.0, metadata={"help": "original code's q (= --alpha-q)"})
    max_updates_train: int = field(
        default=0, metadata={"help": "original code's N for the schedule (default: --max-update)"}
    )
    div: str = field(default="X", metadata={"help": "original code's divergence: X or JS (= --divergence x/js)"})
    max_update: int = II("optimization.max_update")


@register_task("translation_intra_distillation", dataclass=TranslationIntraDistillationConfig)
class TranslationIntraDistillationTask(UpdateNumberForwarding, TranslationTask):
    """Translation with the update number forwarded and the original code's flags understood."""

    def build_criterion(self, cfg, from_checkpoint=False):
        """fairseq's criterion, or with ``--num-iter`` > 1 intra_distillation built from the original flags."""
        if self.cfg.num_iter <= 1:
            return super().build_criterion(cfg, from_checkpoint=from_checkpoint)
        name = cfg._name
        if name == "intra_distillation":
            raise ConfigurationError("give either --num-iter (original code) or --num-passes, not both")
        if name != "label_smoothed_cross_entropy":
            raise ConfigurationError(
                f"--num-iter trains intra-distillation on label-smoothed CE; --criterion {name} cannot be combined"
            )
        divergence = self.cfg.div.lower()
        legacy = IntraDistillationConfig(
            label_smoothing=cfg.label_smoothing,
            report_accuracy=cfg.report_accuracy,
            ignore_prefix_size=cfg.ignore_prefix_size,
            sentence_avg=cfg.sentence_avg,
            num_passes=self.cfg.num_iter,
            alpha=self.cfg.alpha,
            adaptive_alpha=self.cfg.adaptive_alpha,
            alpha_p=self.cfg.temperature_p,
            alpha_q=self.cfg.temperature_q,
            divergence="js" if divergence in ("js", "jsd") else divergence,
            max_update=self.cfg.max_updates_train or self.cfg.max_update,
        )
        logger.info("--num-iter %d: training with the intra_distillation criterion (%s)", self.cfg.num_iter, legacy)
        return IntraDistillationCriterion(self, legacy)
