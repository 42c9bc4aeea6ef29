"""The CPU study: bookkeeping on hand-made logs, and a tiny real study end to end."""

from __future__ import annotations

import struct

from click.testing import CliRunner

from intradist.studies.cpu_study import main, nearest_in_time, study_runs, tokens_until, wall_seconds_at
from intradist.recipes.fairseq_runs import TrainingLog
from intradist.results import read_jsonl


def _log(records):
    log = TrainingLog()
    log.inner = [{"num_updates": str(u), "wall": str(w), "wpb": str(t)} for u, w, t in records]
    return log


def test_time_and_tokens_up_to_an_update_by_hand():
    log = _log([(25, 3, 100), (50, 7, 200), (75, 12, 300)])
    assert wall_seconds_at(log, 50) == 7.0
    assert wall_seconds_at(log, 40) == 7.0  # the first record at or after the update
    # 25 updates of 100 tokens, then 25 of 200
    assert tokens_until(log, 50) == 25 * 100 + 25 * 200
    assert tokens_until(log, 75) == 25 * 100 + 25 * 200 + 25 * 300


def test_equal_time_picks_the_checkpoint_closest_in_time():
    log = _log([(250, 30, 1), (500, 61, 1), (750, 90, 1), (1000, 121, 1)])
    assert nearest_in_time(log, [250, 500, 750, 1000], 80) == 750
    assert nearest_in_time(log, [250, 500, 750, 1000], 76) == 750  # |90-76| < |61-76|
    assert nearest_in_time(log, [250, 500, 750, 1000], 75.5) == 500  # a tie goes to the earlier checkpoint
    assert nearest_in_time(log, [250, 500, 750, 1000], 500) == 1000


def test_runs_put_the_long_baseline_first_for_each_seed():
    runs = study_runs(100, passes=[2, 3], seeds=[1, 2], baseline_factor=3.2)
    assert [(r.method, r.updates, r.seed) for r in runs] == [
        ("baseline", 320, 1), ("intra K=2", 100, 1), ("intra K=3", 100, 1),
        ("baseline", 320, 2), ("intra K=2", 100, 2), ("intra K=3", 100, 2)]  # fmt: skip


def test_a_tiny_study_trains_evaluates_and_reports(tmp_path, monkeypatch):
    options = ["--out", str(tmp_path), "--updates", "20", "--save-every", "10", "--seeds", "1", "--passes", "2",
               "--baseline-factor", "3", "--train-lines", "500", "--test-lines", "10", "--vocab-size", "200"]  # fmt: skip
    result = CliRunner().invoke(main, options)
    assert result.exit_code == 0, result.output
    records = read_jsonl(tmp_path / "results.jsonl")
    assert [(r["method"], r["comparison"]) for r in records][:2] == [("baseline", "equal updates"), ("intra K=2", "equal updates")]
    equal_time = records[2]
    assert equal_time["comparison"] == "equal time as intra K=2" and equal_time["run"] == "baseline-seed1"
    assert equal_time["updates"] in (10, 20, 30, 40, 50, 60)
    assert all(r["train_seconds"] > 0 and r["tokens_per_second"] > 0 and 0 <= r["bleu"] <= 100 for r in records)
    report = (tmp_path / "results.md").read_text()
    assert "## Equal number of updates" in report and "| intra K=2 | 1 | 20 |" in report
    png = (tmp_path / "loss_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 100
    # A rerun resumes: nothing is trained or evaluated again.
    again = CliRunner().invoke(main, options)
    assert again.exit_code == 0 and "training" not in again.output
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 3


def test_updates_must_be_a_multiple_of_the_checkpoint_interval(tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--updates", "25", "--save-every", "10"])
    assert result.exit_code == 2 and "multiple of --save-every" in result.output
