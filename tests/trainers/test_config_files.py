"""``--config FILE.yaml`` of intradist train glue, intradist train xtreme and intradist train vision, and the config.yaml every run saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from intradist.trainers import glue, vision, xtreme

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xtreme"
GLUE_FAST = ["--task", "RTE", "--max-length", "48", "--batch-size", "8", "--max-train-examples", "16",
             "--max-eval-examples", "16", "--max-steps", "4", "--logging-steps", "1", "--num-passes", "2"]  # fmt: skip


def invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def test_a_saved_glue_config_reruns_the_same_experiment(tmp_path):
    first = invoke(glue.main, [*GLUE_FAST, "--out", tmp_path / "first"])
    assert first.exit_code == 0, first.output
    saved = tmp_path / "first" / "config.yaml"
    content = yaml.safe_load(saved.read_text())
    assert saved.read_text().startswith("# The effective flags of this run. Rerun it: ")
    assert content["task"] == "RTE" and content["num-passes"] == 2 and content["max-steps"] == 4
    assert content["out"] == str(tmp_path / "first") and content["seed"] == 1

    again = invoke(glue.main, ["--config", saved, "--out", tmp_path / "again"])  # the command line's --out wins
    assert again.exit_code == 0, again.output
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("first", "again"))
    assert one["dev"] == two["dev"] and one["train_loss_last"] == two["train_loss_last"]
    assert [e for e in one["evaluations"]] == [e for e in two["evaluations"]]
    assert one["settings"] == {**two["settings"], "out": one["settings"]["out"]}
    assert one["git_commit"] is not None


def test_flags_on_the_command_line_win_over_the_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task: RTE\nmax_steps: 3\nseed: 5\nnum-passes: 1\n")
    result = invoke(glue.main, ["--config", config, *GLUE_FAST[2:], "--seed", "7", "--out", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["seed"] == 7 and record["steps"] == 4  # --seed and --max-steps 4 of GLUE_FAST won


@pytest.mark.parametrize(
    ("text", "message"),
    [("task: RTE\nepoch: 3\n", "unknown key 'epoch'; intradist train glue has no flag --epoch"),
     ("task: RTE\nepochs: three\n", "key 'epochs': expected a number, got a string ('three')"),
     ("task: RTE\nnum-passes: 2.7\n", "key 'num-passes': expected an integer, got a number (2.7)"),
     ("task: RTE\nalpha: true\n", "key 'alpha': expected a number, got a boolean (True)"),
     ("task: RTE\nteacher: [1, 2]\n", "key 'teacher': expected a string, got a list ([1, 2])"),
     ("task: RTE\nmodel: {path: x}\n", "key 'model': expected a string, got a mapping ({'path': 'x'})"),
     ("task: RTE\nadaptive-alpha: 1\n", "key 'adaptive-alpha': expected true or false, got an integer (1)"),
     ("task: RTE\nnum-passes: 0\n", "key 'num-passes': 0 is not in the range x>=1."),
     ("- task\n- RTE\n", "expected a mapping of flags to values, got a list"),
     ("task: [RTE\n", "not YAML (while parsing a flow sequence)")],
)  # fmt: skip
def test_bad_config_files_are_one_line_errors(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = CliRunner().invoke(glue.main, ["--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"intradist train glue: --config {config}: {message}"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [glue.main, xtreme.main, vision.train_command], ids=["glue", "xtreme", "vision"])
def test_a_path_key_given_as_a_list_is_one_line_in_every_trainer(tmp_path, command):
    """The issue's case: ``teacher: [1, 2]`` was a TypeError traceback in all three trainers."""
    config = tmp_path / "bad.yaml"
    config.write_text("teacher: [1, 2]\n")
    result = CliRunner().invoke(command, ["--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"{command.name}: --config {config}: key 'teacher': expected a string, got a list ([1, 2])"]
    assert list(tmp_path.iterdir()) == [config]


def test_a_missing_config_file_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(xtreme.main, ["--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert result.output.strip() == f"intradist train xtreme: --config {tmp_path / 'none.yaml'}: no such file"


def test_xtreme_saves_and_reruns_its_config(tmp_path):
    args = ["--task", "panx", "--data-dir", FIXTURES, "--max-length", "32", "--max-steps", "2", "--batch-size", "4",
            "--gradient-accumulation", "1", "--lr", "1e-4"]  # fmt: skip
    assert invoke(xtreme.main, [*args, "--out", tmp_path / "a"]).exit_code == 0
    content = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert content["task"] == "panx" and content["gradient-accumulation"] == 1
    assert invoke(xtreme.main, ["--config", tmp_path / "a" / "config.yaml", "--out", tmp_path / "b"]).exit_code == 0
    a, b = (json.loads((tmp_path / name / "zero_shot.json").read_text()) for name in ("a", "b"))
    assert a["languages"] == b["languages"]


def test_vision_saves_and_reruns_its_config(tmp_path):
    args = ["--data", "digits", "--epochs", "1", "--max-steps", "3", "--batch-size", "30", "--num-passes", "2"]
    first = CliRunner().invoke(vision.train_command, [*args, "--out", str(tmp_path / "a")], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    saved = tmp_path / "a" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["num-passes"] == 2
    again = CliRunner().invoke(vision.train_command, ["--config", str(saved), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    a, b = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("a", "b"))
    assert (a["test_nll"], a["test_accuracy"]) == (b["test_nll"], b["test_accuracy"])


CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"


@pytest.mark.parametrize(
    "path", sorted(p for folder in ("glue", "xtreme", "vision") for p in (CONFIGS / folder).glob("*.yaml")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_shipped_config_is_valid_for_its_command(path):
    command = {"glue": glue.main, "xtreme": xtreme.main, "vision": vision.train_command}[path.parent.name]
    text = path.read_text()
    assert text.startswith("# ") and "Xu, Koehn & Murray, EMNLP 2022" in text.splitlines()[0]  # names the paper
    assert " table" in text.splitlines()[0] or " grid" in text.splitlines()[0]  # and the table it comes from
    result = CliRunner().invoke(command, ["--config", str(path), "--help"])  # validated, then help: nothing runs
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
