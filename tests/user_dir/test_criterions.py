"""The criterions in process on a real batch, against fairseq's own label_smoothed_cross_entropy."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import user_dir  # noqa: F401  (registers the plugin)
from intradist.recipes.fairseq_runs import USER_DIR
from intradist import fairseq_dictionaries, losses
from user_dir.criterions.common import ConfigurationError
from intradist.paths import corpus_dir
from intradist.prepare.translation import PrepareConfig, prepare
from tests.conftest import TINY_MODEL, run_fairseq_train


def build(data_bin, *flags: str, dropout: str = "0.3"):
    """(task, model, criterion, batch) the way fairseq-train builds them from flags."""
    parser = options.get_training_parser()
    model_flags = list(TINY_MODEL)
    model_flags[model_flags.index("--dropout") + 1] = dropout
    args = options.parse_args_and_arch(parser, [str(data_bin), "--user-dir", str(USER_DIR), *model_flags, *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("valid")
    torch.manual_seed(0)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    iterator = task.get_batch_iterator(dataset=task.dataset("valid"), max_tokens=400, seed=1)
    batch = next(iter(iterator.next_epoch_itr(shuffle=False)))
    return task, model, criterion, batch


def loss_and_gradients(model, criterion, batch, seed: int = 0):
    model.zero_grad()
    torch.manual_seed(seed)
    loss, sample_size, logging_output = criterion(model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, logging_output


def test_label_smoothed_kd_without_teacher_equals_fairseq_criterion(tiny_data_bin):
    _, model, fairseq_criterion, batch = build(tiny_data_bin, "--criterion", "label_smoothed_cross_entropy")
    ours = build(tiny_data_bin, "--criterion", "label_smoothed_kd")[2]
    model.train()
    expected_loss, expected_grads, expected_log = loss_and_gradients(model, fairseq_criterion, batch)
    loss, grads, log = loss_and_gradients(model, ours, batch)
    assert torch.equal(loss, expected_loss)
    assert torch.equal(log["nll_loss"], expected_log["nll_loss"])
    assert expected_grads.keys() == grads.keys()
    for name in grads:
        assert torch.equal(grads[name], expected_grads[name]), name


def test_label_smoothed_kd_with_zero_weight_equals_fairseq_criterion(tiny_data_bin, teacher_checkpoint):
    _, model, fairseq_criterion, batch = build(tiny_data_bin, "--criterion", "label_smoothed_cross_entropy")
    ours = build(tiny_data_bin, "--criterion", "label_smoothed_kd", "--kd-weight", "0",
                 "--teacher-path", str(teacher_checkpoint))[2]  # fmt: skip
    model.eval()  # dropout off, so both criterions see the same network
    expected_loss, expected_grads, _ = loss_and_gradients(model, fairseq_criterion, batch)
    loss, grads, log = loss_and_gradients(model, ours, batch)
    assert torch.equal(loss, expected_loss)
    assert log["kd_loss"] > 0
    for name in grads:
        assert torch.equal(grads[name], expected_grads[name]), name


@pytest.mark.parametrize("strategy", ["batch", "sequential"])
def test_intra_distillation_without_dropout_is_label_smoothed_ce(tiny_data_bin, strategy):
    """With dropout 0 all passes agree: the divergence is 0 and the loss is fairseq's CE."""
    _, model, fairseq_criterion, batch = build(tiny_data_bin, "--criterion", "label_smoothed_cross_entropy", dropout="0")
    intra = build(tiny_data_bin, "--criterion", "intra_distillation", "--num-passes", "3",
                  "--pass-strategy", strategy, dropout="0")[2]  # fmt: skip
    model.train()
    expected_loss, expected_grads, _ = loss_and_gradients(model, fairseq_criterion, batch)
    loss, grads, log = loss_and_gradients(model, intra, batch)
    assert log["intra_distillation_loss"].abs() < 1e-4
    assert torch.allclose(loss, expected_loss, rtol=1e-5)
    assert grads.keys() == expected_grads.keys()
    flat, expected_flat = (torch.cat([g[name].flatten() for name in sorted(g)]) for g in (grads, expected_grads))
    # the same gradient up to float32 summation order (some entries, e.g. key biases, are ~0)
    assert torch.allclose(flat, expected_flat, rtol=1e-4, atol=1e-5 * expected_flat.abs().max())


def test_intra_distillation_loss_is_mean_ce_plus_alpha_times_divergence(tiny_data_bin):
    """Recompute the criterion's total from K independent forwards with the same dropout seed."""
    _, model, _, batch = build(tiny_data_bin, "--criterion", "intra_distillation", "--num-passes", "2",
                               "--pass-strategy", "sequential", "--alpha", "3")  # fmt: skip
    criterion = build(tiny_data_bin, "--criterion", "intra_distillation", "--num-passes", "2",
                      "--pass-strategy", "sequential", "--alpha", "3", "--label-smoothing", "0.1")[2]  # fmt: skip
    model.train()
    torch.manual_seed(5)
    loss, _, log = criterion(model, batch)
    torch.manual_seed(5)
    outputs = [model(**batch["net_input"]) for _ in range(2)]
    target = batch["target"]
    pad = target.eq(criterion.padding_idx)
    ce = []
    for logits, _ in outputs:
        lprobs = torch.log_softmax(logits.double(), -1)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        smooth = -lprobs.sum(-1)
        eps_i = 0.1 / (lprobs.size(-1) - 1)
        ce.append(((1 - 0.1 - eps_i) * nll + eps_i * smooth).masked_fill(pad, 0).sum())
    divergence = losses.intra_distillation_loss([o[0] for o in outputs], "x", mask=~pad).double()
    assert loss.double().item() == pytest.approx((sum(ce) / 2 + 3 * divergence).item(), rel=1e-5)
    assert log["alpha_x_sample_size"] == 3 * log["sample_size"]


def test_evaluation_runs_one_pass_and_no_divergence(tiny_data_bin):
    _, model, criterion, batch = build(tiny_data_bin, "--criterion", "intra_distillation")
    model.eval()
    with torch.no_grad():
        _, _, log = criterion(model, batch)
    assert "intra_distillation_loss" not in log and "alpha_x_sample_size" not in log


def test_self_distillation_refuses_a_teacher_of_another_architecture(tiny_data_bin, teacher_checkpoint):
    parser_flags = ["--criterion", "self_distillation", "--teacher-path", str(teacher_checkpoint)]
    task, _, criterion, batch = build(tiny_data_bin, *parser_flags)
    wider = build(tiny_data_bin, "--criterion", "label_smoothed_cross_entropy", "--encoder-ffn-embed-dim", "96")[1]
    wider.train()
    with pytest.raises(ConfigurationError, match="self-distillation needs the student's architecture"):
        criterion(wider, batch)


def test_teacher_with_another_dictionary_is_refused(tiny_data_bin, tmp_path):
    other = prepare(corpus_dir("multi30k"), tmp_path / "other-bin", PrepareConfig(vocab_size=400, max_train_lines=500))
    run_fairseq_train(other, tmp_path / "other", ["--criterion", "label_smoothed_cross_entropy", "--max-update", "1"])
    with pytest.raises(ConfigurationError, match="share the student's dictionary"):
        build(tiny_data_bin, "--criterion", "label_smoothed_kd", "--teacher-path", str(tmp_path / "other" / "checkpoint_last.pt"))


def test_teacher_that_is_not_a_checkpoint_is_refused_in_one_line(tiny_data_bin, tmp_path):
    not_a_checkpoint = tmp_path / "teacher.pt"
    not_a_checkpoint.write_text("these are not weights\n")
    with pytest.raises(ConfigurationError, match=f"--teacher-path {not_a_checkpoint}: cannot load it as a fairseq"):
        build(tiny_data_bin, "--criterion", "label_smoothed_kd", "--teacher-path", str(not_a_checkpoint))


def _permuted_teacher(teacher_checkpoint, tmp_path, stored: bool) -> Path:
    """The teacher with two symbols of its dictionary swapped: same size, same shapes, other tokens.

    ``stored``: in the symbols the plugin's criterions store in ``task_state``; else in the
    ``dict.*.txt`` files of the data folder its config records (a stock criterion's teacher).
    """
    state = torch.load(teacher_checkpoint, weights_only=True)
    data = Path(state["cfg"]["task"]["data"])
    symbols = {side: fairseq_dictionaries.file_symbols(data / "dict.en.txt") for side in ("source", "target")}
    symbols["target"][10], symbols["target"][11] = symbols["target"][11], symbols["target"][10]
    if stored:
        state["task_state"] = {fairseq_dictionaries.STATE_KEY: symbols}
    else:
        copy = shutil.copytree(data, tmp_path / "permuted-bin")
        for lang in ("de", "en"):
            lines = (copy / f"dict.{lang}.txt").read_text().splitlines(keepends=True)
            lines[10], lines[11] = lines[11], lines[10]
            (copy / f"dict.{lang}.txt").write_text("".join(lines))
        state["cfg"]["task"]["data"] = str(copy)
    permuted = tmp_path / f"permuted-{'stored' if stored else 'recorded'}.pt"
    torch.save(state, permuted)
    return permuted


@pytest.mark.parametrize("stored", [True, False], ids=["stored-symbols", "recorded-data-folder"])
def test_a_teacher_with_a_permuted_dictionary_of_the_same_size_is_refused(tiny_data_bin, teacher_checkpoint,
                                                                          tmp_path, stored):  # fmt: skip
    permuted = _permuted_teacher(teacher_checkpoint, tmp_path, stored)
    build(tiny_data_bin, "--criterion", "label_smoothed_kd", "--teacher-path", str(teacher_checkpoint))  # the original fits
    with pytest.raises(ConfigurationError, match=r"another dictionary \(target dictionary: entry 10 is "):
        build(tiny_data_bin, "--criterion", "label_smoothed_kd", "--teacher-path", str(permuted))


def test_the_criterions_store_the_dictionaries_they_train_with(tiny_data_bin):
    task, _, _, _ = build(tiny_data_bin, "--criterion", "intra_distillation")
    stored = task.state_dict()[fairseq_dictionaries.STATE_KEY]  # fairseq saves task.state_dict() as task_state
    assert stored["target"] == fairseq_dictionaries.file_symbols(tiny_data_bin / "dict.en.txt")
    assert stored["source"] == fairseq_dictionaries.file_symbols(tiny_data_bin / "dict.de.txt")
