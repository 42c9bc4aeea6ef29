"""The loss math of intra-distillation, in one framework-free place.

Every trainer of this project (the fairseq criterions, the transformers and torchvision
trainers) calls these functions; no formula is written twice. Plain torch only: this module
must never import fairseq, transformers or torchvision.

All functions compute in at least float32 (inputs in fp16/bf16 are upcast, float64 stays) and work from log-softmax,
never ``log(softmax(.))``, so they stay finite where a probability underflows.

Reference: Xu, Koehn and Murray, "The Importance of Being Parameters: An Intra-Distillation
Method for Serious Gains", EMNLP 2022.
"""

from __future__ import annotations

import math
from typing import Dict, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

Divergence = Literal["x", "js"]
Reduction = Literal["sum", "mean", "none"]
Positions = Literal["labelled", "all"]

DIVERGENCES: Tuple[str, ...] = ("x", "js")
REDUCTIONS: Tuple[str, ...] = ("sum", "mean", "none")
#: How the intra-distillation term of a classifier is reduced over its positions: a mean over the
#: counted positions (ours, independent of batch size and padding) or their sum (the authors'
#: transformers scripts, docs/fidelity.md).
INTRA_REDUCTIONS: Tuple[str, ...] = ("mean", "sum")
#: Which positions the intra-distillation term of a classifier counts: those with a target
#: (``labelled``: not ``ignore_index``) or every position of the padded batch (``all``: padding,
#: special tokens and non-first sub-tokens too, as the authors' XTREME scripts do).
INTRA_POSITIONS: Tuple[str, ...] = ("labelled", "all")


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half-precision inputs to float32; keep float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _reduce(per_position: torch.Tensor, mask: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    """Zero the positions outside ``mask``, then sum, average over counted positions, or keep."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mask is not None:
        mask = mask.to(device=per_position.device, dtype=torch.bool)
        if mask.shape != per_position.shape:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not match the positions {tuple(per_position.shape)}"
            )
        per_position = per_position.masked_fill(~mask, 0.0)
        count = mask.sum()
    else:
        count = torch.tensor(per_position.numel(), device=per_position.device)
    if reduction == "sum":
        return per_position.sum()
    if reduction == "mean":
        return per_position.sum() / count.clamp(min=1).to(per_position.dtype)
    return per_position


def intra_distillation_loss(
    logits: Sequence[torch.Tensor],
    divergence: Divergence = "x",
    mask: Optional[torch.Tensor] = None,
    reduction: Reduction = "sum",
    inputs_are_log_probs: bool = False,
) -> torch.Tensor:
    """Divergence between K stochastic passes and their mean distribution (Xu et al. 2022, Eq. 3).

    ``logits`` holds K >= 2 tensors of shape ``[..., V]``, one per pass over the same input
    (different dropout masks). With p_i = softmax(logits_i) and m = (1/K) sum_i p_i:

    - ``"x"`` (X-divergence): (1/K) sum_i sum_v (p_i - m)(log p_i - log m),
      which equals the mean over passes of KL(p_i || m) + KL(m || p_i);
    - ``"js"`` (generalised Jensen-Shannon): (1/K) sum_i KL(p_i || m).

    ``mask`` (shape ``[...]``, True = the position counts) drops padding. ``reduction`` is
    ``"sum"`` over positions (fairseq's convention), ``"mean"`` over counted positions, or
    ``"none"`` (one value per position, zero where masked out). ``inputs_are_log_probs=True``
    says the tensors are already log-softmax outputs (as a criterion has them for its
    cross-entropy), which saves recomputing K log-softmaxes over the vocabulary.
    """
    if len(logits) < 2:
        raise ValueError(f"intra-distillation needs at least 2 passes, got {len(logits)}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if inputs_are_log_probs:
        log_p = torch.stack([_at_least_float32(x) for x in logits])  # [K, ..., V]
    else:
        log_p = torch.stack([F.log_softmax(_at_least_float32(x), dim=-1) for x in logits])
    per_position = _PassDivergence.apply(log_p, divergence == "x")
    return _reduce(per_position, mask, reduction)


class _PassDivergence(torch.autograd.Function):
    """Per-position divergence of K passes from their mean, with a closed-form gradient.

    Input: log-probabilities l_i = log p_i, stacked ``[K, ..., V]``; output ``[...]``.
    Autograd through the plain expression would keep about five ``[K, ..., V]`` tensors for the
    backward; this keeps only the input and recomputes p_i. With m = mean_i p_i and L = log m,
    the gradients with respect to l_j (using sum_i (p_i - m) = 0 and sum_i p_i = K m) are

        X:  dX/dl_j = (p_j (l_j - mean_i l_i + 1) - m) / K
        JS: dJ/dl_j = p_j (l_j - L) / K
    """

    @staticmethod
    def forward(ctx, log_p: torch.Tensor, x_divergence: bool) -> torch.Tensor:
        p = log_p.exp()
        mean_p = p.mean(dim=0)
        # where m underflows to 0 every p_i is 0 too; the clamp keeps 0 * log(tiny) = 0, not 0 * inf
        log_m = mean_p.clamp_min(torch.finfo(mean_p.dtype).tiny).log()
        weighted = log_p - log_m
        weighted.mul_(p.sub_(mean_p) if x_divergence else p)  # in place: these are full-vocabulary tensors
        per_position = weighted.sum(dim=-1).mean(dim=0)
        ctx.save_for_backward(log_p)
        ctx.x_divergence = x_divergence
        return per_position

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (log_p,) = ctx.saved_tensors
        num_passes = log_p.size(0)
        p = log_p.exp()
        scale = grad_output.unsqueeze(-1) / num_passes
        if ctx.x_divergence:
            grad = log_p - log_p.mean(dim=0)
            grad.add_(1.0).mul_(p).sub_(p.mean(dim=0))
        else:
            grad = log_p - p.mean(dim=0).clamp_min(torch.finfo(p.dtype).tiny).log()
            grad.mul_(p)
        grad.mul_(scale)
        return grad, None


def adaptive_alpha(step: float, max_step: float, alpha: float, p: float, q: float) -> float:
    """The paper's adaptive weight of the intra-distillation term (Xu et al. 2022, Eq. 4).

    With N = ``max_step`` and gamma = ln(1/alpha) / ln(p/q)::

        alpha(t) = alpha * (p * t / N) ** gamma   for t <  N / p
        alpha(t) = alpha                          for t >= N / p

    so alpha(N/q) = 1 and alpha(N/p) = alpha: the weight starts near zero, while the passes
    still disagree wildly, and grows to ``alpha``. For alpha <= 1 the schedule is constant.
    """
    if not 0 < p < q:
        raise ValueError(f"adaptive alpha needs 0 < p < q, got p={p}, q={q}")
    if max_step <= 0:
        raise ValueError(f"adaptive alpha needs a positive number of updates N, got N={max_step}")
    if alpha <= 1:
        return float(alpha)
    if step >= max_step / p:
        return float(alpha)
    gamma = math.log(1.0 / alpha) / math.log(p / q)
    return float(alpha * (p * max(step, 0) / max_step) ** gamma)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: Union[torch.Tensor, Sequence[torch.Tensor]],
    temperature: float = 1.0,
    mask: Optional[torch.Tensor] = None,
    reduction: Reduction = "sum",
) -> torch.Tensor:
    """Knowledge distillation, Hinton et al. (2015): tau^2 * KL(softmax(t/tau) || softmax(s/tau)).

    Computed per position and reduced like :func:`intra_distillation_loss`. ``teacher_logits``
    may be a sequence of tensors from an ensemble: the teacher distribution is then the mean of
    the members' softmax(t_j/tau). The teacher side carries no gradient.
    """
    if temperature <= 0:
        raise ValueError(f"kd temperature must be positive, got {temperature}")
    members = [teacher_logits] if isinstance(teacher_logits, torch.Tensor) else list(teacher_logits)
    if not members:
        raise ValueError("kd_loss needs at least one teacher")
    with torch.no_grad():
        member_log_probs = torch.stack([F.log_softmax(_at_least_float32(t) / temperature, dim=-1) for t in members])
        teacher_log_probs = torch.logsumexp(member_log_probs, dim=0) - math.log(len(members))
    student_log_probs = F.log_softmax(_at_least_float32(student_logits) / temperature, dim=-1)
    per_position = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1)
    return _reduce(per_position * temperature**2, mask, reduction)


def check_kd_weight(kd_weight: float, name: str = "kd weight") -> float:
    """``kd_weight`` if it is a convex weight beta in [0, 1] (the one check every trainer and criterion uses)."""
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {kd_weight}")
    return kd_weight


def mix_with_distillation(supervised: torch.Tensor, distillation: torch.Tensor, kd_weight: float) -> torch.Tensor:
    """The KD objective of Hinton et al. (2015): (1 - beta) * supervised loss + beta * KD loss."""
    check_kd_weight(kd_weight)
    return (1.0 - kd_weight) * supervised + kd_weight * distillation


def regression_pass_divergence(
    predictions: Sequence[torch.Tensor], mask: Optional[torch.Tensor] = None, reduction: Reduction = "sum"
) -> torch.Tensor:
    """Intra-distillation for regression (e.g. STS-B): K passes' predictions against their mean.

    With y_i the prediction of pass i and y_bar = (1/K) sum_i y_i, per position:
    (1/K) sum_i (y_i - y_bar)^2, the variance of the passes. It plays the role the X-divergence
    plays for distributions: zero exactly when all passes agree, and its gradient pulls each pass
    toward the mean. Reduced like :func:`intra_distillation_loss`.
    """
    if len(predictions) < 2:
        raise ValueError(f"intra-distillation needs at least 2 passes, got {len(predictions)}")
    stacked = torch.stack([_at_least_float32(y) for y in predictions])
    per_position = (stacked - stacked.mean(dim=0, keepdim=True)).pow(2).mean(dim=0)
    return _reduce(per_position, mask, reduction)


def combine_pass_losses(
    supervised: Sequence[torch.Tensor],
    distillation: Optional[Sequence[torch.Tensor]] = None,
    kd_weight: float = 0.0,
    intra: Optional[torch.Tensor] = None,
    alpha: float = 0.0,
) -> torch.Tensor:
    """The whole objective from its per-pass parts (Xu et al. 2022, Eq. 5, with optional KD):

        loss = (1/K) sum_i [(1 - beta) * supervised_i + beta * KD_i] + alpha * intra

    ``supervised`` holds each pass's (label-smoothed) loss; ``distillation`` each pass's KD
    loss against the teacher (None: no teacher, beta ignored); ``intra`` the divergence between
    the passes (None for a single pass). Every trainer (fairseq, transformers, torchvision)
    composes its loss here.
    """
    num_passes = len(supervised)
    total = 0.0
    for index, loss in enumerate(supervised):
        if distillation is not None:
            loss = mix_with_distillation(loss, distillation[index], kd_weight)
        total = total + loss / num_passes
    if intra is not None:
        total = total + alpha * intra
    return total


def classification_objective(
    pass_logits: Sequence[torch.Tensor],
    targets: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    alpha: float = 0.0,
    divergence: Divergence = "x",
    teacher_logits: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None,
    kd_weight: float = 0.0,
    kd_temperature: float = 1.0,
    regression: bool = False,
    ignore_index: Optional[int] = None,
    intra_reduction: Literal["mean", "sum"] = "mean",
    intra_positions: Positions = "labelled",
) -> Dict[str, torch.Tensor]:
    """Loss of K passes of a classifier (or regressor) over one batch; supervised and KD terms are means over examples.

    ``pass_logits``: K tensors ``[N, C]`` (or ``[N, L, C]`` for token classification; ``[N]`` or
    ``[N, 1]`` predictions with ``regression``). Supervised term: label-smoothed cross-entropy
    (mean squared error for regression). Intra term (K >= 2): :func:`intra_distillation_loss`
    (:func:`regression_pass_divergence` for regression). KD term with ``teacher_logits``:
    :func:`kd_loss` (squared error to the teacher's prediction for regression). Combined by
    :func:`combine_pass_losses`. Returns ``loss``, ``supervised``, ``intra`` and ``kd`` (the last
    two are zero when absent), all detached but ``loss``.

    The intra term is reduced over positions by ``intra_reduction`` (``"mean"``, or ``"sum"`` as
    the authors' GLUE and XTREME scripts do, which makes its weight grow with the batch size)
    over the positions ``intra_positions`` names: ``"labelled"`` (targets other than
    ``ignore_index``) or ``"all"`` (every position of the padded batch, the authors' NER and QA).
    """
    if intra_reduction not in INTRA_REDUCTIONS:
        raise ValueError(f"intra_reduction must be one of {INTRA_REDUCTIONS}, got {intra_reduction!r}")
    if intra_positions not in INTRA_POSITIONS:
        raise ValueError(f"intra_positions must be one of {INTRA_POSITIONS}, got {intra_positions!r}")
    mask = targets.ne(ignore_index) if ignore_index is not None else None
    if mask is not None:  # an ignored target may be out of range (-100): any class id will do, it counts zero
        targets = targets.masked_fill(~mask, 0)
        ignore_index = None
    supervised, distillation = [], None if teacher_logits is None else []
    for logits in pass_logits:
        if regression:
            prediction = _at_least_float32(logits).reshape(targets.shape)
            supervised.append(F.mse_loss(prediction, _at_least_float32(targets)))
            if distillation is not None:
                teacher = _at_least_float32(torch.as_tensor(teacher_logits)).reshape(targets.shape).detach()
                distillation.append(F.mse_loss(prediction, teacher))
        else:
            lprobs = F.log_softmax(_at_least_float32(logits), dim=-1)
            per_position, _ = label_smoothed_nll_loss(lprobs, targets, label_smoothing, reduction="none")
            supervised.append(_reduce(per_position, mask, "mean"))
            if distillation is not None:
                distillation.append(kd_loss(logits, teacher_logits, kd_temperature, mask=mask, reduction="mean"))
    intra = None
    if len(pass_logits) > 1:
        intra_mask = mask if intra_positions == "labelled" else None
        if regression:
            predictions = [y.reshape(targets.shape) for y in pass_logits]
            intra = regression_pass_divergence(predictions, mask=intra_mask, reduction=intra_reduction)
        else:
            intra = intra_distillation_loss(pass_logits, divergence, mask=intra_mask, reduction=intra_reduction)
    loss = combine_pass_losses(supervised, distillation, kd_weight, intra, alpha)
    zero = loss.new_zeros(())
    return {
        "loss": loss,
        "supervised": (sum(supervised) / len(supervised)).detach(),
        "intra": zero if intra is None else intra.detach(),
        "kd": zero if distillation is None else (sum(distillation) / len(distillation)).detach(),
    }


def label_smoothed_nll_loss(
    lprobs: torch.Tensor,
    target: torch.Tensor,
    epsilon: float,
    ignore_index: Optional[int] = None,
    reduction: Reduction = "sum",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Label-smoothed negative log-likelihood, numerically identical to fairseq's.

    With eps_i = epsilon / (V - 1), per position::

        loss = (1 - epsilon - eps_i) * (-log p(target)) + eps_i * (-sum_v log p(v))

    Positions whose target is ``ignore_index`` count zero. Returns ``(loss, nll_loss)``, each
    reduced per ``reduction`` (``"mean"`` averages over the counted positions).
    """
    if target.dim() == lprobs.dim():
        target = target.squeeze(-1)
    lprobs = _at_least_float32(lprobs)
    nll = -lprobs.gather(dim=-1, index=target.unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.sum(dim=-1)
    mask = target.ne(ignore_index) if ignore_index is not None else None
    nll, smooth = _reduce(nll, mask, reduction), _reduce(smooth, mask, reduction)
    # Reduce first, combine second: the order of fairseq's own operations, so the floats match.
    eps_i = epsilon / (lprobs.size(-1) - 1)
    return (1.0 - epsilon - eps_i) * nll + eps_i * smooth, nll
