"""``--log-balance-every N`` of the plugin's criterions: records in SAVE_DIR/balance_log.jsonl and train_inner,
and the numbers of ``analyze-sensitivity`` on the same batch and weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from intradist.analysis.cli import main as analyze_sensitivity
from intradist.analysis.report import read_balance
from intradist.live_balance import LOGGED, read_balance_log
from tests.conftest import TINY_MODEL, run_fairseq_train


def test_every_nth_update_is_logged_to_the_file_and_to_train_inner(tiny_data_bin, tmp_path):
    """6 updates of 2 micro-batches each (--update-freq 2), every 2nd logged; train_inner every 3 updates."""
    _, log = run_fairseq_train(tiny_data_bin, tmp_path, [
        "--criterion", "intra_distillation", "--num-passes", "2", "--max-update", "6", "--update-freq", "2",
        "--log-balance-every", "2", "--log-interval", "3"])  # fmt: skip
    records = read_balance_log(tmp_path)
    assert [record["step"] for record in records] == [2, 4, 6]
    assert all(set(record) == {"step", *LOGGED, "num_params"} for record in records)
    assert all(0 < record["gini"] < 1 and 0 < record["top1_share"] < 1 and record["std"] > 0 for record in records)
    # each train_inner line shows the latest record: update 3 the one of update 2, update 6 its own
    shown = [(int(line["num_updates"]), int(line["balance_step"]), float(line["balance_gini"])) for line in log.inner]
    by_step = {record["step"]: record for record in records}
    assert [(updates, step) for updates, step, _ in shown] == [(3, 2), (6, 6)]
    assert all(gini == pytest.approx(by_step[step]["gini"], rel=1e-5) for _, step, gini in shown)


def test_a_resumed_run_drops_the_records_after_its_checkpoint(tiny_data_bin, tmp_path):
    """A run that logged past its last checkpoint (update 5 here, after checkpoint_last at 4) logs it again, once."""
    common = ["--criterion", "label_smoothed_kd", "--log-balance-every", "1"]
    run_fairseq_train(tiny_data_bin, tmp_path, [*common, "--max-update", "4"])
    with open(tmp_path / "balance_log.jsonl", "a") as handle:  # what an interrupted run would have left
        handle.write(json.dumps({"step": 5, "std": -1.0, "cv": -1.0, "gini": -1.0, "top1_share": -1.0}) + "\n")
    run_fairseq_train(tiny_data_bin, tmp_path, [*common, "--max-update", "6"])
    records = read_balance_log(tmp_path)
    assert [record["step"] for record in records] == [1, 2, 3, 4, 5, 6]
    assert records[4]["std"] > 0


def test_the_logged_balance_is_that_of_analyze_sensitivity_on_the_same_batch_and_weights(tiny_data_bin, tmp_path):
    """K = 1, no dropout, no label smoothing; the 20 test sentences are the one batch of update 1, whose learning
    rate is 0 (the warm-up starts at --warmup-init-lr 0), so checkpoint_last.pt holds the weights it was taken at."""
    flags = list(TINY_MODEL)
    for flag, value in (("--dropout", "0"), ("--label-smoothing", "0"), ("--max-tokens", "4000")):
        flags[flags.index(flag) + 1] = value
    run_fairseq_train(tiny_data_bin, tmp_path / "run", [
        "--criterion", "label_smoothed_kd", "--train-subset", "test", "--max-update", "1", "--warmup-init-lr", "0",
        "--log-balance-every", "1"], model_flags=flags)  # fmt: skip
    (logged,) = read_balance_log(tmp_path / "run")
    result = CliRunner().invoke(analyze_sensitivity, [
        str(tmp_path / "run" / "checkpoint_last.pt"), "--data", str(tiny_data_bin), "--split", "test",
        "--max-tokens", "4000", "--normalize", "none", "--no-plots", "--labels", "run", "--out", str(tmp_path / "report")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report" / "balance.json").read_text())["checkpoints"][0]["batches"]["raw"]["count"] == 1
    analysed = read_balance(tmp_path / "report")["run"]["raw"]
    assert logged["num_params"] == analysed["num_params"]
    for name in LOGGED:
        assert logged[name] == pytest.approx(analysed[name], rel=1e-5), name
