"""``analyze-sensitivity`` end to end on real checkpoints of each framework, and its refusals."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from intradist.analysis.cli import main

REPORT_FILES = {"sensitivity.csv", "balance_by_layer.csv", "balance.json", "report.md", "report.html",
                "distribution.png", "layers.png"}  # fmt: skip


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _check_report(out: Path, labels, num_params: int) -> dict:
    assert REPORT_FILES <= {p.name for p in out.iterdir()}
    assert not out.with_name(out.name + ".partial").exists()
    record = json.loads((out / "balance.json").read_text())
    assert [c["label"] for c in record["checkpoints"]] == list(labels)
    for checkpoint in record["checkpoints"]:
        assert re.fullmatch(r"[0-9a-f]{64}", checkpoint["sha256"])
        for statistics in checkpoint["balance"].values():
            assert statistics["num_params"] == num_params
            assert 0.0 <= statistics["gini"] <= 1.0 and statistics["std"] >= 0.0
    table = pd.read_csv(out / "sensitivity.csv")
    for (label, normalization), group in table.groupby(["checkpoint", "normalization"]):
        assert group["num_params"].sum() == num_params  # every parameter in exactly one tensor row
    return record


def _html_is_self_contained(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<script" not in text and "@import" not in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) >= 2
    for encoded in images:
        Image.open(io.BytesIO(base64.b64decode(encoded))).verify()  # every embedded image decodes


def test_fairseq_checkpoints_are_compared_on_the_same_batches(tiny_data_bin, teacher_checkpoint, tmp_path):
    out = tmp_path / "report"
    result = _run([teacher_checkpoint, teacher_checkpoint, "--labels", "a,b", "--data", tiny_data_bin,
                   "--max-batches", "3", "--max-tokens", "500", "--out", out])  # fmt: skip
    assert result.exit_code == 0, result.output
    from intradist.analysis.loading import load_checkpoint

    model = load_checkpoint(teacher_checkpoint, data=tiny_data_bin).model  # tied embeddings count once
    record = _check_report(out, ["a", "b"], sum(p.numel() for p in model.parameters()))
    assert record["checkpoints"][0]["balance"] == record["checkpoints"][1]["balance"]  # same model, same batches
    assert "fairseq checkpoint" in record["checkpoints"][0]["description"]
    assert (out / "heatmap.png").is_file()
    _html_is_self_contained(out / "report.html")


def test_the_same_seed_and_data_give_identical_csvs(tiny_data_bin, teacher_checkpoint, tmp_path):
    args = [teacher_checkpoint, "--data", tiny_data_bin, "--max-batches", "2", "--max-tokens", "400", "--no-plots"]
    first, second = tmp_path / "one", tmp_path / "two"
    assert _run([*args, "--out", first]).exit_code == 0
    assert _run([*args, "--out", second]).exit_code == 0
    for name in ("sensitivity.csv", "balance_by_layer.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_minilm_with_a_new_head_on_rte(minilm_folder, rte_dev, tmp_path):
    out = tmp_path / "report"
    result = _run([minilm_folder, "--num-labels", "2", "--data", rte_dev, "--text-fields", "sentence1,sentence2",
                   "--max-batches", "1", "--batch-size", "4", "--max-length", "48", "--normalize", "loss",
                   "--granularity", "layer", "--out", out])  # fmt: skip
    assert result.exit_code == 0, result.output
    from intradist.analysis.loading import load_checkpoint

    num_params = sum(p.numel() for p in load_checkpoint(minilm_folder, num_labels=2).model.parameters())
    record = _check_report(out, ["model"], num_params)
    assert list(record["checkpoints"][0]["balance"]) == ["loss-normalized"]
    layers = set(pd.read_csv(out / "sensitivity.csv")["group"])
    assert {f"bert.encoder.layer.{i}" for i in range(6)} <= layers


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_torchvision_resnet18_state_dict_on_real_digits(digits_folder, tmp_path, suffix):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    out = tmp_path / "report"
    result = _run([path, "--arch", "resnet18", "--num-classes", "3", "--data", digits_folder, "--image-size", "32",
                   "--batch-size", "5", "--max-batches", "2", "--out", out])  # fmt: skip
    assert result.exit_code == 0, result.output
    _check_report(out, ["resnet18"], sum(p.numel() for p in model.parameters()))
    _html_is_self_contained(out / "report.html")


def test_ablation_over_layers_writes_its_table(tiny_data_bin, teacher_checkpoint, tmp_path):
    out = tmp_path / "ablation"
    result = _run([teacher_checkpoint, "--data", tiny_data_bin, "--method", "ablation", "--granularity", "layer",
                   "--max-batches", "2", "--max-tokens", "400", "--out", out])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "ablation.csv")
    assert {"encoder.layers.0", "decoder.layers.0"} <= set(table["group"])
    assert (table["sensitivity"] == table["delta"].abs()).all()
    assert "## Most sensitive groups" in (out / "report.md").read_text()


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("analyze-sensitivity: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_refusals_are_one_line_with_exit_2(tmp_path, digits_folder):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    import pickle

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil.write_bytes(pickle.dumps({"model": Exploit()}))
    _one_line_error(_run([evil, "--out", tmp_path / "r1"]), "evil.pt", "--trust-checkpoint")
    assert not marker.exists()

    good = tmp_path / "resnet.pt"
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    _one_line_error(_run([truncated, "--arch", "resnet18", "--num-classes", "3", "--out", tmp_path / "r2"]), "truncated.pt")
    (tmp_path / "empty_dir").mkdir()
    _one_line_error(_run([tmp_path / "empty_dir", "--out", tmp_path / "r3"]), "empty_dir")
    _one_line_error(_run([good, "--arch", "resnet18", "--num-classes", "5", "--out", tmp_path / "r4"]), "resnet.pt", "fc.weight")
    empty_images = tmp_path / "no_images"
    (empty_images / "class0").mkdir(parents=True)
    _one_line_error(_run([good, "--arch", "resnet18", "--num-classes", "3", "--data", empty_images, "--out", tmp_path / "r5"]),
                    "no_images")  # fmt: skip
    _one_line_error(_run([good, good, "--labels", "only-one", "--arch", "resnet18", "--num-classes", "3",
                          "--data", digits_folder, "--out", tmp_path / "r6"]), "--labels")  # fmt: skip
    assert not any((tmp_path / f"r{i}").exists() for i in range(1, 7))


def test_help_shows_examples():
    result = subprocess.run([sys.executable, "-m", "intradist.analysis.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "Examples:" in result.stdout and "--trust-checkpoint" in result.stdout


def test_out_is_checked_before_any_work_and_nothing_is_lost(tmp_path, monkeypatch):
    """--out naming a folder with an input, the parent, a file, a place below a file or someone else's folder:
    one line, exit 2, and every byte of what was there before is still there (the issue's deleted checkpoint)."""
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "work").mkdir()
    checkpoint = run / "checkpoint.pt"
    checkpoint.write_bytes(b"not even read")
    (run / "notes.txt").write_text("mine\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path / "work")
    cases = [(run, "holds an input of this run"), (Path(".."), "the current folder or one above it"),
             (run / "notes.txt", "exists and is not a folder"), (run / "notes.txt" / "report", "cannot write in"),
             (tmp_path, "the current folder or one above it")]  # fmt: skip
    for out, problem in cases:
        _one_line_error(_run([checkpoint, "--out", out, "--overwrite"]), f"--out {out}: ", problem)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "data.csv").write_text("1,2\n")
    before[tmp_path / "theirs" / "data.csv"] = b"1,2\n"
    _one_line_error(_run([checkpoint, "--out", tmp_path / "theirs"]), "not written by analyze-sensitivity", "--overwrite")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.rglob("*.partial"))


def test_data_with_a_foreign_dictionary_is_refused(tiny_data_bin, teacher_checkpoint, tmp_path):
    """Same size, two symbols swapped: the shapes fit, the tokens would not; refused before any batch."""
    import shutil

    foreign = shutil.copytree(tiny_data_bin, tmp_path / "foreign-bin")
    lines = (foreign / "dict.en.txt").read_text().splitlines(keepends=True)
    lines[10], lines[11] = lines[11], lines[10]
    (foreign / "dict.en.txt").write_text("".join(lines))
    result = _run([teacher_checkpoint, "--data", foreign, "--out", tmp_path / "report"])
    _one_line_error(result, f"--data {foreign}: its dictionaries are not those", "target dictionary: entry 10 is")
    assert not (tmp_path / "report").exists()


def test_an_image_analysis_prints_no_third_party_debug_lines(digits_folder, tmp_path):
    """PIL logs a DEBUG line per PNG chunk once anything puts a DEBUG handler on the root logger (fairseq's
    import does); the analysis of images never imports fairseq, so stderr holds progress bars only."""
    import torchvision

    path = tmp_path / "resnet.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    completed = subprocess.run([sys.executable, "-m", "intradist.analysis.cli", str(path), "--arch", "resnet18",
                                "--num-classes", "3", "--data", str(digits_folder), "--image-size", "32",
                                "--batch-size", "5", "--max-batches", "1", "--out", str(tmp_path / "report")],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    noise = [line for line in completed.stderr.splitlines() if "DEBUG" in line or "Warning" in line or "INFO" in line]
    assert noise == []


def test_an_interrupted_analysis_leaves_the_earlier_report_and_the_rerun_gives_the_same(digits_folder, tmp_path):
    signum = 15  # SIGTERM here, Ctrl-C in the preparation's test; both in tests/intradist/test_run_folder.py
    """Fault injection: the analysis is interrupted at a random point; the earlier report stays byte for byte,
    nothing else is left beside it, and a rerun writes what an uninterrupted run writes."""
    import random
    import signal
    import time

    import torchvision

    path = tmp_path / "resnet.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    out = tmp_path / "report"
    command = [sys.executable, "-m", "intradist.analysis.cli", str(path), "--arch", "resnet18", "--num-classes", "3",
               "--data", str(digits_folder), "--image-size", "32", "--batch-size", "1", "--max-batches", "6",
               "--no-plots", "--out", str(out)]  # fmt: skip
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    earlier = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(random.Random(signum).uniform(0.5, 3.0))  # while it imports, loads, batches or computes
    child.send_signal(signal.Signals(signum))
    child.communicate(timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "resnet.pt"]
    if child.returncode != 0:  # interrupted (not already finished): the earlier report, byte for byte
        assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == earlier
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    rerun = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert rerun[Path("sensitivity.csv")] == earlier[Path("sensitivity.csv")]
