"""Our ``intra_distillation`` on fairseq's stock translation task against the authors' computation.

The authors (fe1ixxu/Intra-Distillation at 6304a78) train IWSLT'14 with their own task,
``Machine_Translation/fairseq/tasks/intra_distillation.py``, whose ``train_step`` (lines 166-207)
runs K forwards, takes fairseq's label-smoothed cross-entropy of each, the X-divergence of their
softmaxes (``X_loss``, lines 25-38) and the adaptive alpha (``_get_alpha``, lines 219-226). The
functions below restate that computation from reading the code (not copied), in float32 as they
run it, so that the recipe's objective (``--task translation --criterion intra_distillation``,
intradist/recipes/translation.py) can be compared with it number for number.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import pytest
import torch
from fairseq.tasks.translation import TranslationTask

from tests.user_dir.test_criterions import build

#: The recipe's intra-distillation flags (Recipe(method="intra").criterion_args()) on a 2,000-update run.
N = 2000
RECIPE_INTRA = ["--task", "translation", "--criterion", "intra_distillation", "--label-smoothing", "0.1",
                "--num-passes", "3", "--alpha", "5", "--adaptive-alpha", "1", "--alpha-p", "5", "--alpha-q", "10",
                "--divergence", "x", "--max-update", str(N)]  # fmt: skip


def authors_alpha(alpha: float, update: int, max_update: int, p: float, q: float) -> float:
    """``_get_alpha`` (tasks/intra_distillation.py:219-226), restated: alpha itself from update N/p on
    (or for alpha <= 1); before, alpha * (p * t / N)^gamma with gamma = ln(1/alpha) / ln(p/q), the
    whole in float32 tensors as there."""
    if update >= max_update / p or alpha <= 1:
        return alpha
    weight = torch.tensor([alpha], dtype=torch.float32)
    exponent = torch.log(1 / weight) / torch.log(torch.tensor([p / q], dtype=torch.float32))
    return float((weight * (p**exponent) * (update**exponent) / (max_update**exponent)).item())


def authors_smoothed_ce(logits: torch.Tensor, target: torch.Tensor, epsilon: float, pad: int) -> torch.Tensor:
    """fairseq's label-smoothed CE as their criterion computes it (criterions/label_smoothed_cross_entropy.py:33-50):
    log-softmax in float32; per position (1 - eps - eps/(V-1)) * nll + eps/(V-1) * sum over the vocabulary of
    -log p; positions whose target is padding count zero; summed."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    vocab = log_p.size(-1)
    keep = target.ne(pad)
    nll = -log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1)[keep].sum()
    smooth = -log_p.sum(-1)[keep].sum()
    uniform = epsilon / (vocab - 1)
    return (1.0 - epsilon - uniform) * nll + uniform * smooth


def authors_x_divergence(pass_logits: Sequence[torch.Tensor], target: torch.Tensor, pad: int) -> torch.Tensor:
    """``X_loss`` (tasks/intra_distillation.py:25-38), restated: p_i = softmax of pass i in float32,
    m their mean; at the positions whose target is not padding, sum over passes, positions and the
    vocabulary of (p_i - m)(log p_i - log m), divided by K."""
    probs = [torch.softmax(logits.float(), dim=-1) for logits in pass_logits]
    keep = target.ne(pad)
    mean = torch.stack(probs).mean(0)[keep]
    total = sum(((p[keep] - mean) * (p[keep].log() - mean.log())).sum() for p in probs)
    return total / len(probs)


def authors_objective(pass_logits: List[torch.Tensor], target, epsilon, pad, alpha: float) -> torch.Tensor:
    """``train_step``'s loss (tasks/intra_distillation.py:174-191): mean CE of the passes + alpha * X."""
    ce = [authors_smoothed_ce(logits, target, epsilon, pad) for logits in pass_logits]
    return sum(ce) / len(ce) + authors_x_divergence(pass_logits, target, pad) * alpha


class RecordedPasses(torch.nn.Module):
    """The real model, except that its k-th call returns the k-th of K recorded net outputs."""

    def __init__(self, model, net_outputs):
        super().__init__()
        self.model = model
        self.net_outputs = list(net_outputs)

    def forward(self, **net_input):
        return self.net_outputs.pop(0)

    def get_targets(self, sample, net_output):
        return self.model.get_targets(sample, net_output)

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        return self.model.get_normalized_probs(net_output, log_probs, sample)


class PlainBackward:
    """The one thing fairseq's ``train_step`` asks of an optimizer: ``backward(loss)``."""

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()


@pytest.mark.parametrize("update", [0, 37, 150, 199, 200, 301, 399, 400, 1999])
def test_on_the_stock_translation_task_alpha_follows_the_update_number_train_step_receives(tiny_data_bin, update):
    """The design's command line: fairseq's own ``translation`` task, ``train_step(update_num=t)``
    as the trainer calls it, alpha = the authors' schedule at t (N = 2000: 1 at N/q = 200, 5 from N/p = 400)."""
    task, model, criterion, batch = build(tiny_data_bin, *RECIPE_INTRA)
    assert type(task) is TranslationTask
    _, sample_size, log = task.train_step(sample=batch, model=model, criterion=criterion, optimizer=PlainBackward(),
                                          update_num=update, ignore_grad=False)  # fmt: skip
    alpha = log["alpha_x_sample_size"] / sample_size
    assert alpha == pytest.approx(authors_alpha(5.0, update, N, 5.0, 10.0), rel=1e-6, abs=1e-12)
    expected_by_hand = {0: 0.0, 200: 1.0, 400: 5.0, 1999: 5.0}
    if update in expected_by_hand:
        assert alpha == pytest.approx(expected_by_hand[update], rel=1e-6)


def test_the_update_number_reaches_the_criterion_at_every_step_of_a_sequence(tiny_data_bin):
    """Steps 10, 11, 250 in turn (as after a resume): each step's alpha is that step's, not the previous one's."""
    task, model, criterion, batch = build(tiny_data_bin, *RECIPE_INTRA)
    for update in (10, 11, 250):
        _, sample_size, log = task.train_step(batch, model, criterion, PlainBackward(), update)
        assert log["alpha_x_sample_size"] / sample_size == pytest.approx(authors_alpha(5.0, update, N, 5.0, 10.0),
                                                                         rel=1e-6)  # fmt: skip


def test_a_task_that_builds_several_criteria_is_wrapped_once_and_steps_reach_the_criterion_they_train(tiny_data_bin):
    """A second criterion from the same task (as a teacher or an evaluation might build) does not wrap
    train_step again, and the update number goes to the criterion the step trains, not the last built."""
    from user_dir.criterions.intra_distillation import IntraDistillationConfig

    task, model, first, batch = build(tiny_data_bin, *RECIPE_INTRA)
    wrapped = task.train_step
    second = type(first)(task, IntraDistillationConfig(num_passes=3, adaptive_alpha=True, max_update=N))
    assert task.train_step is wrapped
    task.train_step(batch, model, first, PlainBackward(), 123)
    assert (first.num_updates, second.num_updates) == (123, 0)


def test_recipe_objective_equals_the_authors_on_fixed_logits_of_a_padded_batch(tiny_data_bin):
    """K = 3 fixed logits of one padded batch (padding and end-of-sentence positions in the target):
    the recipe's loss, sample size and gradient with respect to each pass's logits equal the
    restated authors' computation, at an update where the adaptive alpha is neither 0 nor 5."""
    task, model, criterion, batch = build(tiny_data_bin, *RECIPE_INTRA)
    target = batch["target"]
    pad, eos = task.target_dictionary.pad(), task.target_dictionary.eos()
    assert target.eq(pad).any() and target.eq(eos).any()
    assert target.eq(pad).sum() >= 10  # several padded positions, whose logits are not zero
    model.train()
    torch.manual_seed(3)
    recorded = []
    for _ in range(3):
        logits, extra = model(**batch["net_input"])
        # sharper and more different passes than an untrained model gives, so the divergence matters
        logits = (3 * logits + torch.randn_like(logits)).detach().requires_grad_()
        recorded.append((logits, extra))
    update = 300
    alpha = authors_alpha(5.0, update, N, 5.0, 10.0)
    assert 1.0 < alpha < 5.0

    criterion.set_num_updates(update)
    loss, sample_size, log = criterion(RecordedPasses(model, recorded), batch)
    loss.backward()
    ours_grads = [logits.grad.clone() for logits, _ in recorded]

    fresh = [logits.detach().clone().requires_grad_() for logits, _ in recorded]
    expected = authors_objective(fresh, target, 0.1, pad, alpha)
    expected.backward()

    assert sample_size == batch["ntokens"] == target.ne(pad).sum().item()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    divergence = authors_x_divergence(fresh, target, pad).item()
    assert log["intra_distillation_loss"].item() == pytest.approx(divergence, rel=1e-5)
    assert divergence * alpha > 0.05 * expected.item()  # the divergence is a real part of the loss
    for ours, theirs in zip(ours_grads, (logits.grad for logits in fresh)):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * theirs.abs().max().item())
        assert ours[target.eq(pad)].abs().max() == 0  # padding gets no gradient, there as here


def test_the_restated_authors_divergence_counts_padding_out_and_divides_by_k():
    """The restatement itself, on a hand-sized case: 2 passes, 2 classes, one real and one padded position.
    Real position: p1 = (0.5, 0.5), p2 = (0.9, 0.1), m = (0.7, 0.3): the sum over passes and classes of
    (p_i - m)(log p_i - log m), divided by K = 2; the padded position (any logits) adds nothing."""
    logits = [torch.tensor([[[0.0, 0.0], [5.0, -5.0]]]), torch.tensor([[[math.log(9.0), 0.0], [-5.0, 5.0]]])]
    target = torch.tensor([[0, 1]])  # position 2 is padding (index 1 here)
    terms = [(0.5 - 0.7) * math.log(0.5 / 0.7), (0.5 - 0.3) * math.log(0.5 / 0.3),
             (0.9 - 0.7) * math.log(0.9 / 0.7), (0.1 - 0.3) * math.log(0.1 / 0.3)]  # fmt: skip
    assert authors_x_divergence(logits, target, pad=1).item() == pytest.approx(sum(terms) / 2, rel=1e-6)
