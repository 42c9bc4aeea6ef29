"""``translation_intra_distillation``: fairseq's translation task that accepts the original code's flags.

The ``intra_distillation`` criterion needs no special task: it records the update number from
any task's ``train_step`` itself (``IntraDistillationCriterion.follow_update_number``), so
``--task translation`` is the way to train it. This task exists for compatibility: an existing
command of the authors' repository (fe1ixxu/Intra-Distillation, ``--task
translation_intra_distillation --num-iter 3 --temperature-p 5 ...``) runs with ``--user-dir
user_dir`` added (docs/criterions.md maps its flags to the criterion's).
"""

import logging
from dataclasses import dataclass, field

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II

from user_dir.criterions.common import ConfigurationError
from user_dir.criterions.intra_distillation import IntraDistillationConfig, IntraDistillationCriterion

logger = logging.getLogger(__name__)


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
class TranslationIntraDistillationTask(TranslationTask):
    """fairseq's translation task with the original code's flags understood."""

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
