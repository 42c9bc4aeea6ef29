"""Tests of intradist study balance: the claims check on hand-made numbers, and both studies at a tiny budget."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from intradist.errors import UserError

from intradist.studies.balance import command as balance_study
from intradist.studies.balance.claims import check_claims
from intradist.studies.balance.models import StudyModel, train_study_models


def _model(label, kind, round_number):
    return StudyModel(label, kind, round_number, None, f"{label}.pt", 1.0, 1.0)


def _stats(std, cv, gini):
    return {"std": std, "cv": cv, "gini": gini}


def test_claims_are_checked_per_statistic_and_normalization():
    models = [_model("round0", "baseline", 0), _model("round1", "self-distill", 1), _model("round2", "self-distill", 2),
              _model("intra", "intra", None)]  # fmt: skip
    balance = {
        # raw std falls 3 -> 2 -> 1, intra 2.5: below round 0, not below round 2
        # raw cv rises then falls: 1 -> 2 -> 0.5: not every round, but the last is below the baseline
        # raw gini never falls: 0.5 -> 0.5 -> 0.6, intra 0.4
        "round0": {"raw": _stats(3.0, 1.0, 0.5), "loss-normalized": _stats(1.0, 1.0, 0.5)},
        "round1": {"raw": _stats(2.0, 2.0, 0.5), "loss-normalized": _stats(1.0, 1.0, 0.5)},
        "round2": {"raw": _stats(1.0, 0.5, 0.6), "loss-normalized": _stats(1.0, 1.0, 0.5)},
        "intra": {"raw": _stats(2.5, 0.4, 0.4), "loss-normalized": _stats(1.0, 1.0, 0.5)},
    }
    checks = {(c["statistic"], c["normalization"]): c for c in check_claims(models, balance)}
    assert len(checks) == 6
    std = checks[("std", "raw")]
    assert std["rounds"] == [3.0, 2.0, 1.0] and std["intra"] == 2.5
    assert (std["falls_every_round"], std["last_round_below_baseline"], std["intra_below_baseline"],
            std["intra_below_last_round"]) == (True, True, True, False)  # fmt: skip
    cv = checks[("cv", "raw")]
    assert (cv["falls_every_round"], cv["last_round_below_baseline"], cv["intra_below_last_round"]) == (False, True, True)
    gini = checks[("gini", "raw")]
    assert (gini["falls_every_round"], gini["last_round_below_baseline"], gini["intra_below_baseline"]) == (False, False, True)
    flat = checks[("std", "loss-normalized")]  # equal values are no improvement
    assert not any(flat[key] for key in ("falls_every_round", "last_round_below_baseline", "intra_below_baseline"))


def test_translation_study_at_a_tiny_budget_writes_the_report(tiny_data_bin, tmp_path):
    out = tmp_path / "study"
    args = ["translation", "--out", out, "--data-bin", tiny_data_bin, "--updates", "3", "--rounds", "2",
            "--analysis-batches", "2", "--num-passes", "2", "--jobs", "1", "--cpu"]  # fmt: skip
    result = CliRunner().invoke(balance_study.main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "study.json").read_text())
    assert [m["label"] for m in record["models"]] == ["round0", "round1", "round2", "intra"]
    assert [m["teacher"] for m in record["models"]] == [None, "round0", "round1", None]
    assert (record["settings"]["num_passes"], record["settings"]["alpha"], record["settings"]["data_bin"]) == (
        2, 0.3, str(tiny_data_bin))  # fmt: skip
    assert "--label-smoothing 0.1" in (out / "models" / "intra" / "command.txt").read_text()  # the recipe's, kept
    for model in record["models"]:
        assert model["score"] >= 0 and model["train_seconds"] > 0
        for normalization in ("raw", "loss-normalized"):
            assert record["balance"][model["label"]][normalization]["std"] > 0
    analysis = json.loads((out / "analysis" / "balance.json").read_text())
    batch_losses = {c["label"]: c["batches"]["raw"]["count"] for c in analysis["checkpoints"]}
    assert batch_losses == {"round0": 2, "round1": 2, "round2": 2, "intra": 2}  # the same batches for every model
    text = (out / "study.md").read_text()
    assert "| round2 | self-distill | round1 |" in text and "## The paper's claims, checked" in text
    assert (out / "study.png").stat().st_size > 0 and (out / "analysis" / "report.html").is_file()


def test_vision_study_on_digits_at_a_tiny_budget(tmp_path):
    out = tmp_path / "vision"
    args = ["vision", "--out", out, "--epochs", "1", "--rounds", "1", "--analysis-batches", "2", "--jobs", "1"]
    result = CliRunner().invoke(balance_study.main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "study.json").read_text())
    assert [m["label"] for m in record["models"]] == ["round0", "round1", "intra"]
    assert all(0 <= m["score"] <= 100 for m in record["models"])
    assert record["score"] == "accuracy %"
    # the settings as the flags gave them, the distillation switches among the others
    assert {key: record["settings"][key] for key in ("rounds", "num_passes", "alpha", "adaptive_alpha", "kd_weight")} == {
        "rounds": 1, "num_passes": 3, "alpha": 5.0, "adaptive_alpha": True, "kd_weight": 0.5}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [(["translation", "--dataset", "iwslt14", "--data-bin", "{tmp}/none"], "no IWSLT'14 data-bin"),
     (["vision", "--data", "{tmp}"], "--data")],
)  # fmt: skip
def test_bad_input_is_one_line(tmp_path, args, message):
    result = CliRunner().invoke(balance_study.main, [a.replace("{tmp}", str(tmp_path)) for a in args] + [
        "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("study", ["translation", "vision"])
def test_an_out_that_is_a_file_is_refused_in_one_line_before_any_training(tmp_path, study):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    result = CliRunner().invoke(balance_study.main, [study, "--out", str(target)])
    assert result.exit_code == 2
    assert result.output.strip() == f"intradist study balance {study}: --out {target}: exists and is not a folder"
    assert target.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_mistake_found_by_the_job_beside_the_rounds_names_the_command():
    def train_and_score(label, kind, round_number, teacher):
        if kind == "intra":
            raise UserError("--pretrained-weights w.pt: no such file")
        return _model(label, kind, round_number)

    @click.command("intradist study balance vision")
    def study():
        train_study_models(train_and_score, rounds=1, jobs=2)

    result = CliRunner().invoke(study, [])
    assert result.exit_code == 2
    assert result.output.strip() == "intradist study balance vision: --pretrained-weights w.pt: no such file"
