"""The small commands: flag listing, data preparation and evaluation errors."""

from __future__ import annotations

from click.testing import CliRunner

from intradist.cli import evaluate_translation, fairseq_flags, prepare_translation


def test_fairseq_flags_lists_the_criterion_and_task_flags_with_help():
    result = CliRunner().invoke(fairseq_flags, ["intra_distillation"])
    assert result.exit_code == 0, result.output
    for flag in ("--num-passes", "--adaptive-alpha", "--alpha-p", "--pass-strategy", "--teacher-path", "--num-iter"):
        assert flag in result.output, flag
    assert "K: stochastic forward passes per batch" in result.output


def test_evaluate_names_the_missing_data_bin_in_one_line(tmp_path):
    result = CliRunner().invoke(evaluate_translation, [str(tmp_path), str(tmp_path / "c.pt")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"intradist-evaluate-translation: {tmp_path / 'prepare.json'}: not found; "
        "expected a data-bin made by intradist-prepare-translation"
    )


def test_prepare_names_the_missing_corpus_in_one_line(tmp_path):
    result = CliRunner().invoke(prepare_translation, ["--corpus", str(tmp_path), "--out", str(tmp_path / "bin")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"intradist-prepare-translation: {tmp_path}: missing train.de(.gz); expected one sentence per line"
    )
    assert not (tmp_path / "bin").exists()


def test_evaluate_reports_a_file_that_is_not_a_checkpoint_in_one_line(tiny_data_bin, tmp_path):
    bogus = tmp_path / "checkpoint.pt"
    bogus.write_text("not a checkpoint\n")
    result = CliRunner().invoke(evaluate_translation, [str(tiny_data_bin), str(bogus), "--cpu"])
    assert result.exit_code == 2
    assert result.output.startswith(f"intradist-evaluate-translation: {bogus}: fairseq-generate failed: ")
    assert len(result.output.strip().splitlines()) == 1
