"""The README's first command at a tiny budget: both methods trained, translated, scored and analysed."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import warnings

import pytest
from click.testing import CliRunner
from PIL import Image

from intradist.studies.quickstart import main


def test_quickstart_tiny_budget_writes_both_methods_with_bleu(tmp_path):
    out = tmp_path / "quickstart"
    flags = ["--updates", "8", "--train-lines", "1000", "--test-lines", "10", "--vocab-size", "300",
             "--max-tokens", "1000", "--cpu", "--out", str(out)]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:  # what a newcomer would see printed, pytest aside
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, flags)
    assert result.exit_code == 0, result.output
    hidden_by_default = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    assert [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(w.category, hidden_by_default)] == []
    assert not re.search(r"\b(DEBUG|INFO|WARNING)\b", result.output)
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

    # the balance half: both methods, raw and loss-normalized, finite, in the printed table and the report
    for row in rows:
        for normalization in ("raw", "loss-normalized"):
            stats = row["balance"][normalization]
            assert all(math.isfinite(stats[key]) for key in ("std", "cv", "gini", "top1_share"))
            assert stats["std"] > 0 and 0 < stats["gini"] < 1 and 0 < stats["top1_share"] <= 1
    printed = [line for line in result.output.splitlines() if line.startswith("| ")]
    assert printed[0].startswith("| method | updates | wall time (s) | tokens/s | BLEU | std (raw) | CV (raw) |")
    assert printed[0].endswith("| Gini (loss-norm.) | top-1 % (loss-norm.) |")
    assert [line.split(" | ")[0] for line in printed[1:]] == ["| baseline", "| intra-distillation (K=2, α=0.3)"]
    assert all(len(line.split(" | ")) == 13 for line in printed)
    report = out / "sensitivity"
    for name in ("report.html", "report.md", "balance.json", "sensitivity.csv"):
        assert (report / name).is_file()
    assert f"sensitivity report: {report / 'report.html'}" in result.output

    # the report is self-contained: it opens offline and every image decodes
    html = (out / "sensitivity" / "report.html").read_text()
    # no network resource: no URL in a src, href, @import or url(), no external script or stylesheet
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"""url\(\s*["']?\s*(https?:)?//|@import""", html, re.IGNORECASE)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)
    assert len(sources) >= 2
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1], validate=True)))
        image.load()  # decodes every pixel
        assert image.width > 100 and image.height > 100

    prepared = (out / "data-bin" / "prepare.json").stat().st_mtime_ns
    again = CliRunner().invoke(main, [*flags, "--updates", "2"])
    assert again.exit_code == 0, again.output
    assert (out / "data-bin" / "prepare.json").stat().st_mtime_ns == prepared  # data reused, not rebuilt


def test_quickstart_rejects_bad_budget_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["--updates", "0", "--out", str(tmp_path / "q")])
    assert result.exit_code == 2
    assert result.output.strip() == "intradist quickstart: --updates must be positive, got 0"
    assert not (tmp_path / "q").exists()


def test_quickstart_refuses_a_file_as_output_folder(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    result = CliRunner().invoke(main, ["--out", str(target)])
    assert result.exit_code == 2
    assert result.output.strip() == f"intradist quickstart: --out {target}: exists and is not a folder"
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("flags, message", [
    (["--alpha", "-1"], "--alpha must be at least 0, got -1.0"),
    (["--out", "{foreign}"], "--out {foreign}: exists and was not written by intradist quickstart; "
                             "choose a new folder or pass --overwrite to replace it"),
    (["--out", "{below_a_file}"], "--out {below_a_file}: cannot write in {file}"),
])  # fmt: skip
def test_quickstart_refuses_bad_input_in_one_line_before_work(tmp_path, flags, message):
    """Each refusal is one line and exit 2; a folder the quick start did not write keeps every byte."""
    foreign, file = tmp_path / "mine", tmp_path / "notes.txt"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work\n")
    file.write_text("keep me\n")
    names = {"foreign": foreign, "below_a_file": file / "out", "file": file}
    result = CliRunner().invoke(main, [flag.format(**names) for flag in flags] + (
        [] if "--out" in flags else ["--out", str(tmp_path / "q")]))  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip() == "intradist quickstart: " + message.format(**names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt"]
    assert (foreign / "thesis.tex").read_text() == "years of work\n" and file.read_text() == "keep me\n"
