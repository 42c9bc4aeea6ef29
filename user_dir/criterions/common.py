"""What the distillation criterions share: config fields, passes, teachers and metrics.

The formulas come from :mod:`intradist.losses`; this module only turns fairseq samples, models
and checkpoints into the tensors those functions take, and reports metrics fairseq's way.
"""

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from fairseq import checkpoint_utils, utils
from fairseq.criterions import FairseqCriterion
from fairseq.dataclass import FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.logging import metrics
from omegaconf import II

from intradist import fairseq_dictionaries, losses
from intradist.checkpoint_safety import refusal
from user_dir.criterions.train_steps import LiveBalance, follow_train_steps


class ConfigurationError(ValueError):
    """A criterion flag that cannot work; raised while building, before the first update."""


def report_configuration_errors_in_one_line() -> None:
    """Make an uncaught :class:`ConfigurationError`, or a checkpoint that weights-only loading refused,
    print one line and exit 2 instead of a traceback.

    ``fairseq-train`` builds the criterion inside its own ``main``, and ``fairseq-generate`` loads
    ``--path`` there; a bad flag or file is a user mistake, so the command line should say what
    to fix, not show a stack. Other exceptions, and code that catches the error itself, are
    unaffected.
    """
    previous_hook = sys.excepthook
    if getattr(previous_hook, "reports_configuration_errors", False):
        return

    def hook(kind, error, traceback):
        path = _path_argument()
        refused = refusal(error, Path(path) if path and Path(path).is_file() else None)
        if refused is None and _raised_reading_a_checkpoint(traceback):
            refused = f"not a PyTorch checkpoint, or truncated or corrupt ({kind.__name__})"
        if issubclass(kind, ConfigurationError) or refused is not None:
            print(f"error: {error if refused is None else refused_checkpoint(refused)}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)  # a plain return would exit 1; atexit handlers have nothing to save here
        previous_hook(kind, error, traceback)

    hook.reports_configuration_errors = True
    sys.excepthook = hook



def _raised_reading_a_checkpoint(traceback) -> bool:
    """Whether the exception came out of torch's unpickler inside fairseq's ``load_checkpoint_to_cpu``."""
    names = []
    while traceback is not None:
        code = traceback.tb_frame.f_code
        names.append((code.co_name, Path(code.co_filename).name))
        traceback = traceback.tb_next
    inside = ("load_checkpoint_to_cpu", "checkpoint_utils.py") in names
    return inside and any(file in ("serialization.py", "_weights_only_unpickler.py") for _, file in names)


def _path_argument() -> Optional[str]:
    """The ``--path`` of the running fairseq command (fairseq-generate's checkpoint), None without one."""
    arguments = sys.argv[1:]
    return next((arguments[i + 1] for i, flag in enumerate(arguments[:-1]) if flag == "--path"), None)


def refused_checkpoint(reason: str) -> str:
    """The one line for a checkpoint that weights-only loading refused, naming ``--path`` when the command has one."""
    path = _path_argument()
    named = f"--path {path}" if path else "a checkpoint"
    safety = "; refused: checkpoints load weights-only here" if reason.startswith("needs arbitrary") else ""
    return f"{named}: {reason}{safety}"


@dataclass
class LabelSmoothingConfig(FairseqDataclass):
    """Fields of fairseq's own ``label_smoothed_cross_entropy``, with the same names and meaning."""

    label_smoothing: float = field(
        default=0.0, metadata={"help": "epsilon for label smoothing, 0 means no label smoothing"}
    )
    report_accuracy: bool = field(default=False, metadata={"help": "report accuracy metric"})
    ignore_prefix_size: int = field(default=0, metadata={"help": "ignore the first N target tokens in the loss"})
    sentence_avg: bool = II("optimization.sentence_avg")


@dataclass
class TeacherConfig(FairseqDataclass):
    """A frozen teacher (one checkpoint, or several averaged as an ensemble) for distillation."""

    teacher_path: Optional[str] = field(
        default=None,
        metadata={"help": "teacher checkpoint(s), separated by ':' for an ensemble whose probabilities are averaged"},
    )
    kd_weight: float = field(
        default=0.5,
        metadata={"help": "beta: loss = (1 - beta) * label-smoothed CE + beta * KD; ignored without a teacher"},
    )
    kd_temperature: float = field(
        default=1.0, metadata={"help": "tau: KD compares softmax(logits / tau), scaled by tau^2 (Hinton et al.)"}
    )


class DistillationCriterion(FairseqCriterion):
    """Base of this plugin's criterions: label-smoothed CE per pass, an optional teacher, metrics.

    With ``--log-balance-every N`` (a config with :class:`~user_dir.criterions.train_steps.BalanceLogConfig`)
    it logs the balance of every Nth update's gradient (:class:`~user_dir.criterions.train_steps.LiveBalance`).
    """

    def __init__(self, task, cfg: FairseqDataclass):
        super().__init__(task)
        self.eps = cfg.label_smoothing
        self.sentence_avg = cfg.sentence_avg
        self.ignore_prefix_size = cfg.ignore_prefix_size
        self.report_accuracy = cfg.report_accuracy
        self.kd_weight = cfg.kd_weight
        self.kd_temperature = cfg.kd_temperature
        try:
            losses.check_kd_weight(self.kd_weight, "--kd-weight")
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        if self.kd_temperature <= 0:
            raise ConfigurationError(f"--kd-temperature must be positive, got {self.kd_temperature}")
        self.teacher = TeacherEnsemble(cfg.teacher_path.split(":"), task) if cfg.teacher_path else None
        every = getattr(cfg, "log_balance_every", 0)
        if every < 0:
            raise ConfigurationError(f"--log-balance-every must be 0 (never) or more, got {every}")
        self.balance = LiveBalance(every, getattr(cfg, "balance_log_dir", None)) if every > 0 else None
        if self.balance is not None:
            follow_train_steps(task)
        store_dictionaries(task)

    @classmethod
    def add_args(cls, parser: argparse.ArgumentParser) -> None:
        """Add this criterion's flags; a flag the task already defines identically is taken over.

        ``translation_intra_distillation`` accepts the original code's ``--alpha`` and
        ``--adaptive-alpha`` (same type and default as ours), so both may define them.
        """
        group = parser.add_argument_group(cls.__name__, conflict_handler="resolve")
        gen_parser_from_dataclass(group, getattr(cls, "__dataclass")())

    def drop_prefix(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (``[B, T, ...]``) without its first ``--ignore-prefix-size`` target positions."""
        return tensor[:, self.ignore_prefix_size :].contiguous() if self.ignore_prefix_size > 0 else tensor

    def target_of(self, model, sample, net_output) -> torch.Tensor:
        """The target ``[B, T]`` whose positions the loss counts."""
        return self.drop_prefix(model.get_targets(sample, net_output))

    def logits_of(self, model, net_output) -> torch.Tensor:
        """The logits ``[B, T, V]`` of one pass at the counted positions (for KD)."""
        if getattr(getattr(model, "decoder", None), "adaptive_softmax", None) is not None:
            raise ConfigurationError("distillation from a teacher needs full logits; adaptive softmax is not supported")
        return self.drop_prefix(net_output[0])

    def log_probs_of(self, model, net_output) -> torch.Tensor:
        """The model's own log-probabilities ``[B, T, V]`` (float32) at the counted positions."""
        return self.drop_prefix(model.get_normalized_probs(net_output, log_probs=True))

    def smoothed_ce(self, lprobs: torch.Tensor, target: torch.Tensor, reduce: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """fairseq's label-smoothed CE (and NLL) of one pass, from its log-probabilities."""
        return losses.label_smoothed_nll_loss(
            lprobs.view(-1, lprobs.size(-1)),
            target.view(-1),
            self.eps,
            ignore_index=self.padding_idx,
            reduction="sum" if reduce else "none",
        )

    def teacher_logits(self, model, sample) -> Optional[List[torch.Tensor]]:
        """Each teacher's logits for the sample (no gradient), or None without a teacher."""
        if self.teacher is None:
            return None
        return [self.drop_prefix(logits) for logits in self.teacher.logits(model, sample)]

    def distill(self, student_logits, teacher_logits, mask, reduce: bool) -> torch.Tensor:
        """KD of one student pass towards the teacher (ensemble)."""
        loss = losses.kd_loss(
            student_logits,
            teacher_logits,
            temperature=self.kd_temperature,
            mask=mask,
            reduction="sum" if reduce else "none",
        )
        return loss if reduce else loss.reshape(-1)

    def accuracy(self, lprobs: torch.Tensor, target: torch.Tensor) -> Tuple[int, int]:
        """Correct argmax predictions and counted positions, for ``--report-accuracy``."""
        mask = target.ne(self.padding_idx)
        n_correct = lprobs.argmax(-1).masked_select(mask).eq(target.masked_select(mask)).sum()
        return utils.item(n_correct.data), utils.item(mask.sum().data)

    def base_logging_output(self, sample, loss, nll_loss) -> Dict[str, object]:
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        return {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
        }

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Log loss/nll_loss/ppl like fairseq, plus each distillation term per token and alpha."""

        def total(key: str) -> float:
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size, ntokens = total("sample_size"), total("ntokens")
        metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / ntokens / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))
        for term in ("intra_distillation_loss", "kd_loss"):
            if any(term in log for log in logging_outputs):
                metrics.log_scalar(term, total(term) / sample_size / math.log(2), sample_size, round=4)
        if any("alpha_x_sample_size" in log for log in logging_outputs):
            # alpha is logged weighted by sample size so that the sum over workers stays meaningful
            metrics.log_scalar("alpha", total("alpha_x_sample_size") / sample_size, sample_size, round=4)
        correct_total = utils.item(total("total"))
        if correct_total > 0:
            metrics.log_scalar("total", correct_total)
            metrics.log_scalar("n_correct", utils.item(total("n_correct")))
            metrics.log_derived(
                "accuracy",
                lambda meters: round(meters["n_correct"].sum * 100.0 / meters["total"].sum, 3)
                if meters["total"].sum > 0
                else float("nan"),
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        """Every logged value is a sum (alpha is logged times the sample size), so workers may add them."""
        return True


def store_dictionaries(task) -> None:
    """Put the symbols of the task's dictionaries into its checkpointed state (fairseq saves it as ``task_state``).

    Teachers and analyses compare them with their own symbol for symbol (:mod:`intradist.fairseq_dictionaries`).
    """
    if getattr(task, "state", None) is not None and getattr(task, "target_dictionary", None) is not None:
        task.state.merge_state_dict({fairseq_dictionaries.STATE_KEY: task_symbols(task)})


def task_symbols(task) -> Dict[str, Optional[List[str]]]:
    """The symbols of a task's source and target dictionaries (source None for a task without one)."""
    source = getattr(task, "source_dictionary", None)
    return {"source": fairseq_dictionaries.dictionary_symbols(source) if source is not None else None,
            "target": fairseq_dictionaries.dictionary_symbols(task.target_dictionary)}  # fmt: skip


class TeacherEnsemble:
    """Frozen teacher models from fairseq checkpoints, checked against the student's dictionary.

    The models are kept in eval mode without gradients and moved to the student's device and
    dtype at the first use (fairseq moves the student only after the criterion is built).
    """

    def __init__(self, paths: Sequence[str], task):
        self.paths = [Path(p) for p in paths]
        self.models = [self._load(path, task) for path in self.paths]
        self._placed = False

    @classmethod
    def _load(cls, path: Path, task):
        """One teacher: read once (weights-only), checked, built by the student's task, frozen."""
        if not path.is_file():
            raise ConfigurationError(f"--teacher-path {path}: no such checkpoint file")
        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
        except Exception as error:  # not a checkpoint, or a pickle that weights-only loading refuses
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigurationError(f"--teacher-path {path}: cannot load it as a fairseq checkpoint ({first_line})")
        cls._check_dictionary(path, state, task)
        (model,), _ = checkpoint_utils.load_model_ensemble([str(path)], task=task, state=state)
        model.eval()
        model.requires_grad_(False)
        return model

    @staticmethod
    def _check_dictionary(path: Path, state: dict, task) -> None:
        """Refuse a teacher whose dictionaries are not the student's, symbol for symbol (sizes alone prove nothing)."""
        teacher = fairseq_dictionaries.checkpoint_symbols(state)
        if teacher is None:
            raise ConfigurationError(
                f"--teacher-path {path}: its dictionary cannot be checked (not stored in it, and its recorded data "
                f"folder {fairseq_dictionaries.recorded_data(state)} has none); the teacher must share the student's"
            )
        difference = fairseq_dictionaries.mismatch(teacher, task_symbols(task))
        if difference is not None:
            raise ConfigurationError(
                f"--teacher-path {path}: the teacher was trained with another dictionary ({difference}); "
                f"the teacher must share the student's dictionary"
            )

    def check_same_architecture(self, student) -> None:
        """Refuse a teacher whose parameters differ in name or shape from the student's."""
        student_shapes = {k: tuple(v.shape) for k, v in student.state_dict().items()}
        for path, model in zip(self.paths, self.models):
            teacher_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            if teacher_shapes != student_shapes:
                differing = sorted(set(teacher_shapes.items()) ^ set(student_shapes.items()))[:3]
                raise ConfigurationError(
                    f"--teacher-path {path}: self-distillation needs the student's architecture; "
                    f"parameters differ, e.g. {differing}"
                )

    def logits(self, student, sample) -> List[torch.Tensor]:
        if not self._placed:
            reference = next(student.parameters())
            for model in self.models:
                model.to(device=reference.device, dtype=reference.dtype)
            self._placed = True
        with torch.no_grad():
            return [model(**sample["net_input"])[0] for model in self.models]
