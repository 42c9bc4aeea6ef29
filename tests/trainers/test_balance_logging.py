"""``--log-balance-every N`` of intradist train glue, xtreme and vision: the records, where they go, what they equal."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from intradist.analysis.balance import balance_statistics
from intradist.analysis.cli import main as analyze_sensitivity
from intradist.analysis.loaders.state_dict import image_classification_loss
from intradist.analysis.report import read_balance
from intradist.analysis.sensitivity import taylor_sensitivity
from intradist.live_balance import LOG_NAME, LOGGED, read_balance_log
from intradist.paths import corpus_dir
from intradist.run_folder import STAGING_SUFFIX
from intradist.settings import DistillationSettings
from intradist.trainers import glue, vision_training, xtreme
from intradist.trainers.vision_models import build_model
from intradist.trainers.vision_training import VisionConfig, train

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xtreme"


def invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def trainer_log(folder: Path):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def assert_same_statistics(logged, analysed):
    assert logged["num_params"] == analysed["num_params"]
    for name in LOGGED:
        assert logged[name] == pytest.approx(analysed[name], rel=1e-5), name


def test_glue_logs_the_balance_analyze_sensitivity_finds_on_the_same_batch_and_weights(tmp_path, minilm_folder):
    """K = 1, MiniLM without dropout, 8 RTE pairs as the one batch of update 1, whose learning rate is 0 (the
    linear warm-up starts there), so the saved model holds the weights the gradient was taken at. The gradient
    is clipped (--max-grad-norm 0.001): the record is of the unclipped one, which the analysis computes."""
    model = tmp_path / "minilm-no-dropout"
    shutil.copytree(minilm_folder, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0,
                                                    "attention_probs_dropout_prob": 0.0}))  # fmt: skip
    data = tmp_path / "rte"
    data.mkdir()
    with gzip.open(corpus_dir("glue/RTE") / "train.tsv.gz", "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()[:9]  # the header and 8 pairs
    for split in ("train", "dev"):
        (data / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    invoke(glue.main, ["--task", "RTE", "--model", model, "--data-dir", data, "--batch-size", "8", "--max-steps", "1",
                       "--warmup", "2", "--max-grad-norm", "0.001", "--select", "last", "--logging-steps", "1",
                       "--device", "cpu", "--log-balance-every", "1", "--out", out])  # fmt: skip
    (logged,) = read_balance_log(out)
    assert logged["step"] == 1
    in_trainer_log = [entry for entry in trainer_log(out) if "balance_std" in entry]
    assert [(entry["step"], entry["balance_gini"]) for entry in in_trainer_log] == [(1, logged["gini"])]

    report = tmp_path / "report"
    result = CliRunner().invoke(analyze_sensitivity, [
        str(out), "--data", str(data / "train.tsv"), "--text-fields", "sentence1,sentence2", "--batch-size", "8",
        "--normalize", "none", "--no-plots", "--labels", "run", "--out", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((report / "balance.json").read_text())["checkpoints"][0]["batches"]["raw"]["count"] == 1
    assert_same_statistics(logged, read_balance(report)["run"]["raw"])


def test_xtreme_logs_every_nth_update_of_accumulated_batches(tmp_path):
    out = tmp_path / "panx"
    invoke(xtreme.main, ["--task", "panx", "--data-dir", FIXTURES, "--max-length", "32", "--max-steps", "4",
                         "--batch-size", "4", "--gradient-accumulation", "2", "--lr", "1e-4", "--logging-steps", "1",
                         "--device", "cpu", "--log-balance-every", "2", "--out", out])  # fmt: skip
    records = read_balance_log(out)
    assert [record["step"] for record in records] == [2, 4]
    assert all(record["std"] > 0 and 0 < record["gini"] < 1 for record in records)
    logged = {entry["step"]: entry for entry in trainer_log(out) if "balance_std" in entry}
    assert sorted(logged) == [2, 4]
    assert all(logged[r["step"]]["balance_top1_share"] == r["top1_share"] for r in records)
    assert [entry["step"] for entry in trainer_log(out) if "loss" in entry] == [1, 2, 3, 4]  # the loss still logged
    assert yaml.safe_load((out / "config.yaml").read_text())["log-balance-every"] == 2


#: Digits at 8x8 without augmentation, K = 1: six updates of 30 images.
VISION = dict(data="digits", epochs=1, max_steps=6, batch_size=30, augment="none", device="cpu")


class Interrupt(KeyboardInterrupt):
    """Stands for a scheduler stopping the run."""


def test_vision_logs_every_nth_update_resumes_without_duplicates_and_trains_the_same(tmp_path, monkeypatch, capsys):
    settings = DistillationSettings()
    plain = train(VisionConfig(out=tmp_path / "plain", **VISION), settings, progress=False)
    logged = train(VisionConfig(out=tmp_path / "logged", log_balance_every=2, **VISION), settings, progress=False)
    assert (logged["test_nll"], logged["best_val_nll"]) == (plain["test_nll"], plain["best_val_nll"])  # only watched
    assert not (tmp_path / "plain" / LOG_NAME).exists()
    records = read_balance_log(tmp_path / "logged")
    assert [record["step"] for record in records] == [2, 4, 6]
    lines = [line for line in capsys.readouterr().err.splitlines() if "balance" in line]
    assert lines[0].startswith("update 2: balance std ") and len(lines) == 3

    # every update logged, a checkpoint at 3, stopped in update 5 (after 4 was logged): the rerun logs 4 again
    train(VisionConfig(out=tmp_path / "every", log_balance_every=1, **VISION), settings, progress=False)
    whole = read_balance_log(tmp_path / "every")
    stopped = VisionConfig(out=tmp_path / "stopped", log_balance_every=1, save_steps=3, **VISION)
    real_step, calls = vision_training.training_step, []

    def stopping_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise Interrupt()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(vision_training, "training_step", stopping_step)
    with pytest.raises(Interrupt):
        train(stopped, settings, progress=False)
    staging = tmp_path / f"stopped{STAGING_SUFFIX}"
    assert [record["step"] for record in read_balance_log(staging)] == [1, 2, 3, 4]
    monkeypatch.setattr(vision_training, "training_step", real_step)
    train(stopped, settings, progress=False)
    assert read_balance_log(tmp_path / "stopped") == whole  # the same records, each once


def test_vision_logs_the_balance_of_the_analysis_on_the_same_batch_and_weights(tmp_path, monkeypatch):
    """Dropout 0, K = 1, no label smoothing, no augmentation: update 1's record is the analysis' Taylor balance
    of the weights and batch of that update. A ResNet normalises with the batch's statistics while it trains,
    and the analysis (eval mode) with the running ones; so the analysis' loss runs the network in train mode
    here, the one difference a batch-norm network makes."""
    seen = {}
    real_step = vision_training.training_step

    def watching_step(model, optimizer, settings, images, labels, *args, **kwargs):
        if not seen:
            seen.update(state={k: v.detach().clone() for k, v in model.state_dict().items()},
                        batch=(images.clone(), labels.clone()))  # fmt: skip
        return real_step(model, optimizer, settings, images, labels, *args, **kwargs)

    monkeypatch.setattr(vision_training, "training_step", watching_step)
    config = VisionConfig(out=tmp_path / "run", dropout=0.0, log_balance_every=1, **{**VISION, "max_steps": 1})
    metrics = train(config, DistillationSettings(), progress=False)
    (logged,) = read_balance_log(tmp_path / "run")

    network = build_model(metrics["arch"], metrics["num_classes"], dropout=0.0)
    network.load_state_dict(seen["state"])

    def batch_statistics_loss(model, batch):
        model.train()  # no dropout: only batch norm differs from eval mode
        return image_classification_loss(model, batch)

    sensitivity = taylor_sensitivity(network, [seen["batch"]], batch_statistics_loss, progress=False)
    assert_same_statistics(logged, balance_statistics(sensitivity))
