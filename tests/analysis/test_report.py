"""The report: the summary sentence names the more balanced checkpoint, the difference view shows
log10 ratios to the first checkpoint, and paths are shown relative to the working folder."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from intradist.analysis.report import CheckpointAnalysis, balance_summary, difference_table, shown_path, shown_text, write_report
from intradist.analysis.sensitivity import ParameterSensitivity

NAMES = ["embed.weight", "layers.0.fc1.weight", "layers.0.fc2.weight", "layers.1.fc1.weight", "layers.1.fc2.weight"]


def analysis(label: str, values, path="model.pt", description="a constructed model") -> CheckpointAnalysis:
    result = ParameterSensitivity(dict(values), [1.0], "taylor", None, 1)
    return CheckpointAnalysis(label, Path(path), "state_dict", description, "0" * 64, {None: result})


def even(label="even", **kwargs) -> CheckpointAnalysis:
    """Every parameter equally sensitive: as balanced as a model can be."""
    return analysis(label, {name: torch.full((4, 3), 1.0) for name in NAMES}, **kwargs)


def peaked(label="peaked", **kwargs) -> CheckpointAnalysis:
    """Sensitivity concentrated in one tensor (layers.0.fc1): 100 there, 0.01 everywhere else."""
    return analysis(label, {name: torch.full((4, 3), 100.0 if name == "layers.0.fc1.weight" else 0.01) for name in NAMES},
                    **kwargs)  # fmt: skip


@pytest.mark.parametrize("order", ["peaked first", "even first"])
def test_the_sentence_names_the_more_balanced_checkpoint_by_each_statistic(order):
    analyses = [peaked(), even()] if order == "peaked first" else [even(), peaked()]
    sentence = balance_summary(analyses)
    clauses = sentence.rstrip(".").split("; ")
    names = ["std", "coefficient of variation", "Gini", "normalized entropy (higher is more balanced)", "top 1 % share",
             "top 10 % share"]  # fmt: skip
    assert [clause.split(", ")[0].lower() for clause in clauses] == [f"by {name}".lower() for name in names]
    for clause in clauses:
        assert ", even is more balanced (" in clause, clause
    first_std = f"{analyses[0].balance['raw']['std']:.4g} vs {analyses[1].balance['raw']['std']:.4g}"
    assert clauses[0] == f"By std, even is more balanced ({first_std})"  # values in checkpoint order


def test_equal_checkpoints_tie_and_a_single_one_has_no_sentence():
    sentence = balance_summary([even("a"), even("b")])
    assert sentence.startswith("By std, a and b tie (0 vs 0); by coefficient of variation, a and b tie")
    assert sentence.count(", a and b tie (") == 6 and " is more balanced" not in sentence.replace("(higher is", "")
    assert balance_summary([even()]) is None
    three = balance_summary([even("a"), peaked("b"), even("c")])
    assert three.startswith("By std, a and c tie as the most balanced (")


def test_normalizations_that_disagree_are_named():
    first, second = even("a"), peaked("b")
    first.sensitivities["loss"] = second.sensitivities[None]
    second.sensitivities["loss"] = first.sensitivities[None]
    first.balance, second.balance = {}, {}
    first.__post_init__(), second.__post_init__()
    sentence = balance_summary([first, second])
    assert sentence.startswith("By std, raw: a is more balanced, loss-normalized: b is more balanced (raw ")


def test_the_difference_is_the_log10_ratio_of_mean_sensitivities_per_layer_and_role():
    table = difference_table([even(), peaked()]).set_index(["layer", "role"])
    assert set(table["checkpoint"]) == {"peaked"} and set(table["normalization"]) == {"raw"}
    assert table.loc[("layers.0", "fc1"), "log10_ratio"] == pytest.approx(2.0)  # 100 against 1
    assert table.loc[("layers.1", "fc2"), "log10_ratio"] == pytest.approx(-2.0)  # 0.01 against 1
    assert table.loc[("embed", "(outside blocks)"), "log10_ratio"] == pytest.approx(-2.0)
    assert len(table) == 5
    assert difference_table([even()]).empty


def _embedded_images(html: str):
    return dict(re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html))


def test_the_report_shows_the_sentence_first_and_embeds_the_difference_view(tmp_path):
    write_report(tmp_path, [even(), peaked()], granularity="tensor", settings={"seed": 1}, command="analyze-sensitivity x")
    assert (tmp_path / "difference.png").is_file()
    Image.open(tmp_path / "difference.png").verify()
    markdown = (tmp_path / "report.md").read_text().splitlines()
    assert markdown[2].startswith("**By std, even is more balanced (")  # under the title, before anything else
    assert "![difference](difference.png)" in markdown
    html = (tmp_path / "report.html").read_text()
    assert "<script" not in html and not re.search(r"(src|href)=\"(https?:)?//", html)
    images = _embedded_images(html)
    assert {"distribution", "layers", "heatmap", "difference"} <= set(images)
    Image.open(io.BytesIO(base64.b64decode(images["difference"]))).verify()
    assert html.index("By std, even is more balanced") < html.index("<h2>Balance</h2>")
    record = json.loads((tmp_path / "balance.json").read_text())
    assert record["summary"].startswith("By std, even is more balanced")
    assert pd.read_csv(tmp_path / "difference.csv")["log10_ratio"].abs().max() == pytest.approx(2.0)


def test_paths_under_the_working_folder_are_shown_relative_and_others_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "runs" / "a.pt") == "runs/a.pt"
    assert shown_path(tmp_path) == "."
    assert shown_path("../elsewhere/b.pt") == "../elsewhere/b.pt"  # relative: never resolved
    assert shown_path("/opt/models/c.pt") == "/opt/models/c.pt"  # outside: as given
    assert shown_text(f"dictionaries from {tmp_path}/data-bin, run in {tmp_path}") == "dictionaries from data-bin, run in ."
    assert shown_text(f"{tmp_path}-other/x") == f"{tmp_path}-other/x"  # another folder that starts alike
    out = tmp_path / "report"
    out.mkdir()
    analyses = [even(path=tmp_path / "runs" / "a.pt", description=f"dictionaries from {tmp_path}/data-bin"),
                peaked(path="../elsewhere/b.pt")]  # fmt: skip
    write_report(out, analyses, granularity="tensor", settings={"seed": 1, "batches": {"data": str(tmp_path / "data")}},
                 command=f"analyze-sensitivity {tmp_path}/runs/a.pt ../elsewhere/b.pt", plots=False)  # fmt: skip
    for name in ("report.md", "report.html", "balance.json"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text, name
        assert "runs/a.pt" in text and "../elsewhere/b.pt" in text
    record = json.loads((out / "balance.json").read_text())
    assert [c["path"] for c in record["checkpoints"]] == ["runs/a.pt", "../elsewhere/b.pt"]
    assert record["settings"]["batches"]["data"] == "data"
    assert set(record["checkpoints"][0]) >= {"label", "path", "sha256", "framework", "description", "batches", "balance"}


def test_the_command_run_from_the_parent_folder_shows_no_temporary_path(tiny_data_bin, teacher_checkpoint, tmp_path,
                                                                        monkeypatch, tmp_path_factory):  # fmt: skip
    """One checkpoint typed relative, the same one typed absolute, the data absolute: the report names
    them all relative to the working folder, and compares two equal checkpoints as ties."""
    from intradist.analysis.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint_last.pt").symlink_to(teacher_checkpoint)
    (tmp_path / "data-bin").symlink_to(tiny_data_bin, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run/checkpoint_last.pt", str(tmp_path / "run" / "checkpoint_last.pt"),
                                       "--labels", "a,b", "--data", str(tmp_path / "data-bin"), "--max-batches", "2",
                                       "--max-tokens", "300", "--out", "report"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    for name in ("report.md", "report.html", "balance.json"):
        text = (report / name).read_text()
        assert str(tmp_path_factory.getbasetemp()) not in text, name
    record = json.loads((report / "balance.json").read_text())
    assert [c["path"] for c in record["checkpoints"]] == ["run/checkpoint_last.pt"] * 2
    assert "dictionaries from data-bin" in record["checkpoints"][0]["description"]
    assert record["summary"].startswith("By std, a and b tie")
    Image.open(report / "difference.png").verify()
    assert (pd.read_csv(report / "difference.csv")["log10_ratio"] == 0).all()
    assert not math.isnan(record["checkpoints"][1]["balance"]["raw"]["std"])
