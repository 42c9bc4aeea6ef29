"""The README's first command at a tiny budget: both methods trained, translated and scored."""

from __future__ import annotations

import json
import math

from click.testing import CliRunner

from intradist.quickstart import main


def test_quickstart_tiny_budget_writes_both_methods_with_bleu(tmp_path):
    out = tmp_path / "quickstart"
    flags = ["--updates", "8", "--train-lines", "1000", "--test-lines", "10", "--vocab-size", "300",
             "--max-tokens", "1000", "--cpu", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, flags)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    rows = report["rows"]
    assert [row["method"].split(" ")[0] for row in rows] == ["baseline", "intra-distillation"]
    for row in rows:
        assert row["updates"] == 8
        assert math.isfinite(row["bleu"]) and 0 <= row["bleu"] <= 100
        assert row["tokens_per_second"] > 0
        assert len((out / row["method"].split(" ")[0] / "test.hyp").read_text().splitlines()) == 10
    assert "| baseline | 8 |" in (out / "results.md").read_text()
    assert "sacreBLEU signature: nrefs:1|" in result.output

    prepared = (out / "data-bin" / "prepare.json").stat().st_mtime_ns
    again = CliRunner().invoke(main, [*flags, "--updates", "2"])
    assert again.exit_code == 0, again.output
    assert (out / "data-bin" / "prepare.json").stat().st_mtime_ns == prepared  # data reused, not rebuilt


def test_quickstart_rejects_bad_budget_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["--updates", "0", "--out", str(tmp_path / "q")])
    assert result.exit_code == 2
    assert result.output.strip() == "intradist-quickstart: --updates must be positive, got 0"
    assert not (tmp_path / "q").exists()


def test_quickstart_refuses_a_file_as_output_folder(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    result = CliRunner().invoke(main, ["--out", str(target)])
    assert result.exit_code == 2
    assert result.output.strip() == f"intradist-quickstart: --out {target}: exists and is not a folder"
    assert target.read_text() == "keep me\n"
