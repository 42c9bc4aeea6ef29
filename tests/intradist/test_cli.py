"""The `intradist` command family: its listing, the small commands, one-line errors through the group."""

from __future__ import annotations

from click.testing import CliRunner

from intradist.cli import cli


def test_fairseq_flags_lists_the_criterion_and_task_flags_with_help():
    result = CliRunner().invoke(cli, ["fairseq-flags", "intra_distillation"])  # on fairseq's stock translation task
    assert result.exit_code == 0, result.output
    for flag in ("--num-passes", "--adaptive-alpha", "--alpha-p", "--pass-strategy", "--teacher-path"):
        assert flag in result.output, flag
    assert "K: stochastic forward passes per batch" in result.output and "--num-iter" not in result.output
    original = CliRunner().invoke(cli, ["fairseq-flags", "intra_distillation", "--task", "translation_intra_distillation"])
    assert "--num-iter" in original.output  # the authors' flags, on the compatibility task


def test_evaluate_names_the_missing_data_bin_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "translation", str(tmp_path), str(tmp_path / "c.pt")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"intradist evaluate translation: {tmp_path / 'prepare.json'}: not found; "
        "expected a data-bin made by intradist prepare translation"
    )


def test_prepare_names_the_missing_corpus_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["prepare", "translation", "--corpus", str(tmp_path), "--out", str(tmp_path / "bin")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"intradist prepare translation: {tmp_path}: missing train.de(.gz); expected one sentence per line"
    )
    assert not (tmp_path / "bin").exists()


def test_evaluate_reports_a_file_that_is_not_a_checkpoint_in_one_line(tiny_data_bin, tmp_path):
    bogus = tmp_path / "checkpoint.pt"
    bogus.write_text("not a checkpoint\n")
    result = CliRunner().invoke(cli, ["evaluate", "translation", str(tiny_data_bin), str(bogus), "--cpu"])
    assert result.exit_code == 2
    assert result.output.startswith(f"intradist evaluate translation: {bogus}: fairseq-generate failed: ")
    assert len(result.output.strip().splitlines()) == 1


def test_the_family_lists_every_command_without_importing_them():
    import subprocess
    import sys

    probe = ("import sys; from click.testing import CliRunner; from intradist.cli import cli; "
             "out = CliRunner().invoke(cli, ['train', '--help']).output; "
             "print(out); print('transformers' in sys.modules, 'torchvision' in sys.modules, 'fairseq' in sys.modules)")  # fmt: skip
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    for name in ("glue", "xtreme", "vision", "vision-grid", "translation", "self-distill"):
        assert f"  {name} " in completed.stdout, name
    assert completed.stdout.strip().splitlines()[-1] == "False False False"


def test_every_command_of_the_family_answers_help():
    from intradist.cli import LazyGroup

    def leaves(group, path):
        for name in group.list_commands(None):
            command = group.get_command(None, name)
            if isinstance(command, LazyGroup) or hasattr(command, "list_commands"):
                yield from leaves(command, [*path, name])
            else:
                yield [*path, name]

    paths = list(leaves(cli, []))
    assert len(paths) >= 18
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith(f"Usage: intradist {' '.join(path)}"), (path, result.output[:80])


def test_a_user_error_raised_in_a_command_is_one_line_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(cli, ["results", "glue", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"intradist results glue: {tmp_path}: no metrics.json below this folder"
