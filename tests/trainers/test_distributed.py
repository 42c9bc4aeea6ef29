"""``intradist train glue`` and ``train vision`` in two processes on the CPU (torchrun, gloo), against one process.

What runs in two processes must give what one process gives with the same global batch: with
the randomness switched off (no dropout, no augmentation) the losses and weights agree to float
rounding. Each run is a real ``torchrun --nproc_per_node 2 -m intradist train ...`` on the real
MiniLM and RTE sample or the digits, with a budget of a few updates.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest
import torch

from intradist.run_folder import LOCK, STAGING_SUFFIX
from tests.conftest import run_process_group
from tests.trainers import ddp_step_worker

#: A transformers run of three updates of K = 2 passes (divergence on) on 32 RTE examples.
GLUE = ["--task", "RTE", "--max-length", "32", "--max-train-examples", "32", "--max-eval-examples", "8",
        "--max-steps", "3", "--logging-steps", "1", "--num-passes", "2", "--alpha", "1", "--constant-alpha",
        "--device", "cpu"]  # fmt: skip
#: A vision run of three updates without randomness: no dropout (so K = 1), no augmentation.
VISION = ["--data", "digits", "--max-steps", "3", "--dropout", "0", "--no-augment", "--seed", "3", "--device", "cpu"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def launch(arguments: Sequence[str], processes: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m intradist ARGS``, or the same under ``torchrun --nproc_per_node PROCESSES``."""
    command: List[str] = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr", "127.0.0.1",
                    "--master_port", str(free_port())]  # fmt: skip
    command += ["-m", "intradist", *(str(argument) for argument in arguments)]
    done = run_process_group(command, timeout, env=environment())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def assert_alone(out: Path) -> dict:
    """``out`` is complete, with nothing of the run beside it or left inside; its metrics.json."""
    beside = [path.name for path in out.parent.iterdir() if path.name.startswith(out.name) and path != out]
    assert beside == [], beside
    assert not (out / LOCK).exists() and not out.with_name(out.name + STAGING_SUFFIX).exists()
    return json.loads((out / "metrics.json").read_text())


def logged_losses(folder: Path) -> List[float]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if "loss" in record]


@pytest.fixture(scope="module")
def dropout_free_minilm(tmp_path_factory, minilm_folder) -> Path:
    """The MiniLM with every dropout probability 0 (its weights linked, its config edited): passes are identical."""
    folder = tmp_path_factory.mktemp("minilm-no-dropout")
    for item in minilm_folder.iterdir():
        if item.is_file() and item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((minilm_folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_glue_in_two_processes_matches_one_process_with_the_same_global_batch(tmp_path, dropout_free_minilm):
    two, one = tmp_path / "two", tmp_path / "one"
    common = [*GLUE, "--model", dropout_free_minilm]
    done = launch(["train", "glue", *common, "--batch-size", "4", "--out", two], processes=2)
    launch(["train", "glue", *common, "--batch-size", "8", "--out", one])
    assert done.stdout.count("RTE intra seed 1: dev accuracy") == 1  # rank 0 alone reports
    both = {folder.name: assert_alone(folder) for folder in (two, one)}
    assert (both["two"]["world_size"], both["one"]["world_size"]) == (2, 1)
    assert both["two"]["global_batch_size"] == both["one"]["global_batch_size"] == 8
    assert both["two"]["per_device_batch_size"] == 4
    # the loss of each update (the mean over both ranks' halves), and the dev loss of the final weights
    assert logged_losses(two) == pytest.approx(logged_losses(one), rel=1e-5)
    assert len(logged_losses(one)) == 3
    assert both["two"]["dev"]["dev"]["loss"] == pytest.approx(both["one"]["dev"]["dev"]["loss"], rel=1e-5)
    assert both["two"]["dev"]["dev"]["accuracy"] == both["one"]["dev"]["dev"]["accuracy"]


def test_vision_in_two_processes_matches_one_process_with_micro_batches(tmp_path):
    """Two ranks of 30 images = one process with batches of 60 in micro-batches of 30: batch norm sees the same groups."""
    two, one = tmp_path / "two", tmp_path / "one"
    done = launch(["train", "vision", *VISION, "--batch-size", "30", "--out", two], processes=2)
    launch(["train", "vision", *VISION, "--batch-size", "60", "--micro-batch-size", "30", "--out", one])
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == 1  # rank 0 alone reports
    both = {folder.name: assert_alone(folder) for folder in (two, one)}
    assert (both["two"]["world_size"], both["one"]["world_size"]) == (2, 1)
    assert both["two"]["global_batch_size"] == both["one"]["global_batch_size"] == 60
    assert both["two"]["steps_run"] == both["one"]["steps_run"] == 3
    history = {name: (folder / "history.csv").read_text().splitlines()[1].split(",") for name, folder in
               (("two", two), ("one", one))}  # fmt: skip
    assert float(history["two"][3]) == pytest.approx(float(history["one"][3]), rel=1e-6)  # train_loss of 3 updates
    # the weights after three updates; batch norm's running averages differ (DDP keeps rank 0's)
    weights = {name: torch.load(folder / "model_last.pt", weights_only=True) for name, folder in
               (("two", two), ("one", one))}  # fmt: skip
    for name, value in weights["one"].items():
        if "running_" in name or "num_batches_tracked" in name:
            continue
        torch.testing.assert_close(weights["two"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_the_k_passes_of_a_rank_through_ddp_give_the_gradient_of_one_process(tmp_path):
    """K = 2 forwards through the DDP module, one backward: the averaged gradient is one process's over both halves."""
    out = tmp_path / "gradients.pt"
    worker = Path(ddp_step_worker.__file__)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(worker), str(out)]  # fmt: skip
    done = run_process_group(command, 300, env=environment())
    assert done.returncode == 0, done.stderr[-5000:]
    distributed = torch.load(out, weights_only=True)
    model, images, labels = ddp_step_worker.model_and_batch()
    single = ddp_step_worker.gradients(model, images, labels, micro_batch_size=ddp_step_worker.BATCH // 2)
    assert set(distributed) == set(single)
    assert any(gradient.abs().sum() > 0 for gradient in single.values())
    for name, gradient in single.items():
        torch.testing.assert_close(distributed[name], gradient, rtol=1e-5, atol=1e-6, msg=name)


def test_the_vision_grid_refuses_to_run_under_torchrun(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from intradist.trainers.vision import grid_command

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(grid_command, ["--out", str(tmp_path / "grid")])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("intradist train vision-grid: runs in one process")
    assert not (tmp_path / "grid").exists()
