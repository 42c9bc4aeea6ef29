"""Evaluation records and the results table."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from intradist.errors import UserError
from intradist.cli import cli
from intradist.results import TABLE_MARKER, format_mean_std, read_jsonl, results_table


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_mean_and_sample_std_over_seeds_by_hand():
    # mean(35, 36, 37) = 36; sample variance = (1 + 0 + 1) / 2 = 1
    assert format_mean_std([35.0, 36.0, 37.0]) == "36.00 ± 1.00"
    assert format_mean_std([33.3]) == "33.30"


def test_table_has_methods_as_rows_pairs_as_columns_and_the_published_numbers(tmp_path):
    records = [
        {"corpus": "iwslt14", "pair": "de-en", "method": "intra", "bleu": 35.0},
        {"corpus": "iwslt14", "pair": "de-en", "method": "intra", "bleu": 36.0},
        {"corpus": "iwslt14", "pair": "de-en", "method": "baseline", "bleu": 33.0},
        {"corpus": "iwslt14", "pair": "it-en", "method": "baseline", "bleu": 30.0},
    ]
    lines = results_table(records).splitlines()
    assert lines[0] == "| method | de-en | it-en |"
    assert lines[2] == "| baseline | 33.00 (1) | 30.00 (1) |"
    assert lines[3] == "| intra | 35.50 ± 0.71 (2) | — |"  # sample std of (35, 36) = 0.7071
    assert "| baseline, paper (Xu et al. 2022) | 33.07 | — |" in lines
    assert "| intra, reproduction | 35.11 | — |" in lines


def test_columns_name_the_corpus_when_records_mix_corpora():
    records = [{"corpus": "iwslt14", "pair": "de-en", "method": "baseline", "bleu": 33.0},
               {"corpus": "multi30k", "pair": "de-en", "method": "baseline", "bleu": 20.0}]  # fmt: skip
    lines = results_table(records).splitlines()
    assert lines[0] == "| method | iwslt14 de-en | multi30k de-en |"
    assert "| baseline, paper (Xu et al. 2022) | 33.07 | — |" in lines


def test_a_malformed_line_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"pair": "de-en"}\n{oops\n')
    with pytest.raises(UserError, match=r"runs.jsonl:2: not a JSON object"):
        read_jsonl(path)


def test_command_prints_and_writes_the_table_and_refuses_bad_records(tmp_path):
    records = _write(tmp_path / "r.jsonl", [{"pair": "de-en", "method": "baseline", "bleu": 33.0}])
    result = CliRunner().invoke(cli, ["results", "translation", str(records), "--out", str(tmp_path / "table.md")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "table.md").read_text().strip() == f"{TABLE_MARKER}\n{result.output.strip()}"
    again = CliRunner().invoke(cli, ["results", "translation", str(records), "--out", str(tmp_path / "table.md")])
    assert again.exit_code == 0, again.output  # its own earlier table is replaced
    missing = _write(tmp_path / "bad.jsonl", [{"pair": "de-en", "bleu": 1.0}])
    result = CliRunner().invoke(cli, ["results", "translation", str(missing)])
    assert result.exit_code == 2 and "record 1 has no method" in result.output
    empty = _write(tmp_path / "empty.jsonl", [])
    assert CliRunner().invoke(cli, ["results", "translation", str(empty)]).exit_code == 2


@pytest.mark.parametrize("target, problem", [
    ("notes.md", "exists and was not written by intradist results; name another file"),
    ("r.jsonl", "is one of the inputs; name another file for the table"),
    ("folder", "is a folder; name a file for the table"),
    ("notes.md/table.md", "cannot write in"),
])  # fmt: skip
def test_the_table_file_is_checked_first_and_nothing_else_is_overwritten(tmp_path, target, problem):
    records = _write(tmp_path / "r.jsonl", [{"pair": "de-en", "method": "baseline", "bleu": 33.0}])
    (tmp_path / "notes.md").write_text("my notes\n")
    (tmp_path / "folder").mkdir()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    out = tmp_path / target
    result = CliRunner().invoke(cli, ["results", "translation", str(records), "--out", str(out)])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"intradist results translation: --out {out}: {problem}" + (f" {out.parent}" if problem == "cannot write in" else "")]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def _balance_log(folder, steps):
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder / "balance_log.jsonl", [{"step": s, "std": 1e-3 / s, "cv": 4.0 + s, "gini": 0.7, "top1_share": 0.3,
                                                   "num_params": 10} for s in steps])  # fmt: skip


def test_balance_command_tabulates_the_last_record_and_plots_every_run(tmp_path):
    _balance_log(tmp_path / "baseline", [100, 200, 300])
    intra_log = _balance_log(tmp_path / "intra", [100, 200])
    figure = tmp_path / "balance.png"
    result = CliRunner().invoke(cli, ["results", "balance", str(tmp_path / "baseline"), str(intra_log),
                                      "--out", str(figure)])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "| run | records | last update | std | cv | gini | top1_share |"
    assert lines[2:] == ["| baseline | 3 | 300 | 3.333e-06 | 304 | 0.7 | 0.3 |", "| intra | 2 | 200 | 5e-06 | 204 | 0.7 | 0.3 |",
                         f"figure: {figure}"]  # fmt: skip
    assert figure.read_bytes().startswith(b"\x89PNG")
    labelled = CliRunner().invoke(cli, ["results", "balance", str(tmp_path / "baseline"), "--labels", "base"])
    assert labelled.exit_code == 0 and "| base | 3 | 300 |" in labelled.output


@pytest.mark.parametrize("arguments, problem", [
    (["--out", "{tmp}/notes.png"], "--out {tmp}/notes.png: exists; name another file, or replace it with --overwrite"),
    (["--out", "{tmp}/balance.txt"], "--out {tmp}/balance.txt: name an image file (.png, .pdf, .svg)"),
    (["--labels", "a,b"], "--labels has 2 names for 1 runs"),
    (["{tmp}/empty"], "{tmp}/empty: no balance_log.jsonl in this folder (train with --log-balance-every N)"),
])  # fmt: skip
def test_balance_command_refuses_in_one_line_and_writes_nothing(tmp_path, arguments, problem):
    _balance_log(tmp_path / "run", [1])
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.png").write_bytes(b"mine")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    given = [argument.format(tmp=tmp_path) for argument in arguments]
    result = CliRunner().invoke(cli, ["results", "balance", str(tmp_path / "run"), *given])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"intradist results balance: {problem.format(tmp=tmp_path)}"]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    replaced = CliRunner().invoke(cli, ["results", "balance", str(tmp_path / "run"), "--out", str(tmp_path / "notes.png"),
                                        "--overwrite"])  # fmt: skip
    assert replaced.exit_code == 0 and (tmp_path / "notes.png").read_bytes().startswith(b"\x89PNG")
