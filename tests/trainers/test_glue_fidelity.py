"""The GLUE recipe computes the authors' objective (github.com/fe1ixxu/Intra-Distillation @ 6304a78).

The references below are our own re-statements of ``Natural_Language_Understanding/run_glue_no_trainer.py``,
written from reading it: ``intra_distillation`` (lines 201-219), ``intra_distillation_mse``
(lines 221-239) and ``get_consistency_alpha`` (lines 191-198). The recipe side is the settings a
config file of ``configs/glue/`` gives ``intradist train glue``, through ``DistillationSettings.objective``,
the call ``DistillationTrainer.compute_loss`` makes.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from intradist.settings import DistillationSettings
from tests.recipes import authors_consistency_alpha as authors_alpha
from tests.recipes import recipe_settings as settings_of

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs" / "glue"


def recipe_settings(config: str) -> DistillationSettings:
    """The distillation switches of one shipped GLUE config file, as `intradist train glue` reads them."""
    return settings_of(CONFIGS / config)


def authors_classification_loss(pass_logits, labels, alpha):
    """run_glue_no_trainer.py:201-219: mean of the K model losses (batch-mean CE) + alpha * X / K, X summed over batch and classes."""
    loss, probabilities = 0.0, []
    for logits in pass_logits:
        loss = loss + F.cross_entropy(logits, labels)  # what BertForSequenceClassification returns as outputs.loss
        probabilities.append(F.softmax(logits, dim=-1))
    mean = sum(probabilities) / len(probabilities)
    divergence = sum(((p - mean) * (torch.log(p) - torch.log(mean))).sum() for p in probabilities) / len(probabilities)
    return loss / len(pass_logits) + alpha * divergence


def authors_regression_loss(pass_predictions, targets, alpha):
    """run_glue_no_trainer.py:221-239: mean of the K MSE losses + alpha * (sum over passes of mean (y_i - m)^2) / K."""
    loss = sum(F.mse_loss(y.squeeze(-1), targets) for y in pass_predictions) / len(pass_predictions)
    mean = sum(pass_predictions) / len(pass_predictions)
    spread = sum(((y - mean) ** 2).mean() for y in pass_predictions) / len(pass_predictions)
    return loss + alpha * spread


def fixed_passes(shape, k=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64) * 2 for _ in range(k)]


@pytest.mark.parametrize("config", ["rte_intra.yaml", "mnli_intra.yaml", "qqp_intra.yaml", "cola_intra.yaml"])
def test_glue_classification_objective_is_the_authors(config):
    settings = recipe_settings(config)
    num_classes = 3 if config.startswith("mnli") else 2
    passes = fixed_passes((32, num_classes))
    labels = torch.randint(0, num_classes, (32,), generator=torch.Generator().manual_seed(1))
    ours = settings.objective(forward=iter(passes).__next__, targets=labels, step=10, max_step=1000)["loss"]
    expected = authors_classification_loss(passes, labels, authors_alpha(0.5, 10, 1000, 6.67, 10.0))
    assert settings.num_passes == 3
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=0)


def test_the_generic_default_differs_from_the_authors_by_the_batch_size():
    """intradist train glue's own default averages the divergence: at the same alpha its term is 1/B of the recipe's."""
    passes, labels = fixed_passes((32, 2)), torch.zeros(32, dtype=torch.long)
    mean_settings = DistillationSettings(num_passes=3, alpha=0.5)
    sum_settings = DistillationSettings(num_passes=3, alpha=0.5, intra_reduction="sum")
    mean_terms = mean_settings.objective(forward=iter(passes).__next__, targets=labels, step=0, max_step=10)
    sum_terms = sum_settings.objective(forward=iter(passes).__next__, targets=labels, step=0, max_step=10)
    torch.testing.assert_close(sum_terms["intra"], 32 * mean_terms["intra"], rtol=1e-6, atol=0)


def test_stsb_regression_objective_is_the_authors():
    settings = recipe_settings("stsb_intra.yaml")
    passes = fixed_passes((32, 1))
    targets = torch.rand(32, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 5
    ours = settings.objective(forward=iter(passes).__next__, targets=targets, step=3, max_step=1000, regression=True)
    expected = authors_regression_loss(passes, targets, authors_alpha(0.5, 3, 1000, 6.67, 10.0))
    torch.testing.assert_close(ours["loss"].double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("alpha,p,q", [(0.5, 6.67, 10.0), (5.0, 5.0, 10.0), (1.0, 2.0, 5.0)])
def test_the_adaptive_alpha_is_the_authors(alpha, p, q):
    settings = DistillationSettings(num_passes=3, alpha=alpha, adaptive_alpha=True, alpha_p=p, alpha_q=q)
    for step in (0, 1, 37, 99, 100, 150, 199, 200, 1000):
        assert settings.alpha_at(step, 1000) == pytest.approx(authors_alpha(alpha, step, 1000, p, q), rel=1e-9, abs=1e-12)


def test_run_sh_takes_the_recipe_from_the_config_files_and_refuses_a_task_without_one():
    import subprocess

    script = CONFIGS.parent.parent / "scripts" / "glue" / "run.sh"
    assert script.read_text().count('--config "$repo/configs/glue/${slug}_') == 2  # baseline and intra rows
    completed = subprocess.run(["bash", str(script), "WNLI", "intra"], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert completed.stderr.strip().startswith("run.sh: TASK WNLI: no paper recipe in configs/glue/")
