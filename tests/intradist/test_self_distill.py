"""Self-distillation rounds: each round taught by the previous round's checkpoint, each scored."""

from __future__ import annotations

import json

from click.testing import CliRunner

from intradist.recipes.self_distill import main

SMALL = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
         "--decoder-ffn-embed-dim", "64", "--encoder-layers", "1", "--decoder-layers", "1"]  # fmt: skip


def test_two_rounds_each_teach_the_next_and_are_scored(tiny_data_bin, tmp_path):
    out = tmp_path / "rounds"
    flags = [str(tiny_data_bin), "--out", str(out), "--rounds", "2", "--updates", "4", "--max-tokens", "1000",
             "--cpu", "--", *SMALL]  # fmt: skip
    result = CliRunner().invoke(main, flags)
    assert result.exit_code == 0, result.output
    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["teacher"] is None
    assert rounds[1]["teacher"] == rounds[0]["checkpoint"] and rounds[2]["teacher"] == rounds[1]["checkpoint"]
    assert all(0 <= r["bleu"] <= 100 for r in rounds)
    assert "self_distillation" in (out / "round2" / "command.txt").read_text()
    assert '"train_kd_loss"' in (out / "round2" / "train.log").read_text()


def test_rounds_refuse_a_folder_that_is_not_a_data_bin(tmp_path):
    result = CliRunner().invoke(main, [str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip() == f"intradist train self-distill: {tmp_path}: not a data-bin made by intradist prepare translation"
