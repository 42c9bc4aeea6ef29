"""Interrupted runs continue from their checkpoint and end where an uninterrupted run ends (on the CPU, same seed).

Each test starts the real command in a subprocess, waits until a checkpoint exists in
``OUT.partial``, stops it (SIGTERM, as a scheduler does, or SIGKILL), checks that ``OUT`` does not
exist and ``OUT.partial`` holds the checkpoint, reruns the same command and compares the final
records with those of a run that was never stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import pytest
import torch

from intradist.run_folder import STAGING_SUFFIX

#: 12 updates of K = 2 passes on 16 RTE examples, a checkpoint every 3, an evaluation every 4.
GLUE = ["train", "glue", "--task", "RTE", "--max-length", "32", "--batch-size", "4", "--max-train-examples", "16",
        "--max-eval-examples", "8", "--max-steps", "12", "--logging-steps", "1", "--save-steps", "3",
        "--eval-steps", "4", "--num-passes", "2", "--alpha", "1", "--device", "cpu"]  # fmt: skip
#: 40 updates of K = 2 over 3 epochs of the digits at 16x16 (slow enough to stop), a checkpoint every 5.
VISION = ["train", "vision", "--data", "digits", "--max-steps", "40", "--epochs", "3", "--num-passes", "2",
          "--image-size", "16", "--save-steps", "5", "--device", "cpu"]  # fmt: skip


def command(arguments: Sequence[object]) -> List[str]:
    return [sys.executable, "-m", "intradist", *(str(argument) for argument in arguments)]


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def finish(arguments: Sequence[object]) -> subprocess.CompletedProcess:
    done = subprocess.run(command(arguments), capture_output=True, text=True, env=environment(), timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    return done


def interrupt(arguments: Sequence[object], checkpoint_exists: Callable[[], bool], signum: int,
              log: Path) -> Tuple[int, str]:  # fmt: skip
    """Start the command, wait for its first checkpoint, send ``signum``; its exit status and stderr.

    Its output goes to ``log`` (a pipe nobody reads while we wait could fill and stall it).
    """
    with log.open("w") as output:
        process = subprocess.Popen(command(arguments), stdout=output, stderr=subprocess.STDOUT, env=environment())
        deadline = time.monotonic() + 300
        while not checkpoint_exists():
            if process.poll() is not None:
                pytest.fail(f"the run ended (status {process.returncode}) before its first checkpoint:\n"
                            f"{log.read_text()[-3000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("no checkpoint within 300 s")
            time.sleep(0.02)
        process.send_signal(signum)
        process.wait(timeout=120)
    return process.returncode, log.read_text()


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_glue_stopped_by_sigterm_continues_from_its_checkpoint_to_the_same_result(tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    finish([*GLUE, "--out", whole])
    staging = stopped.with_name(stopped.name + STAGING_SUFFIX)
    checkpoints = staging / "checkpoints"
    status, stderr = interrupt([*GLUE, "--out", stopped],
                               lambda: any(checkpoints.glob("checkpoint-*/trainer_state.json")), signal.SIGTERM,
                               tmp_path / "stopped.log")
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr and f"{staging} keeps the checkpoints" in stderr
    assert not stopped.exists() and any(checkpoints.glob("checkpoint-*/trainer_state.json"))

    finish([*GLUE, "--out", stopped])
    assert not staging.exists() and not (stopped / "checkpoints").exists()
    first, second = metrics(whole), metrics(stopped)
    assert second["resumed_from_step"] in (3, 6, 9) and first["resumed_from_step"] is None
    assert second["steps"] == first["steps"] == 12
    for key in ("dev", "evaluations", "selected_step", "train_loss_last", "train_loss_first"):
        assert second[key] == first[key], key
    logged = [[json.loads(line).get("loss") for line in (folder / "log.jsonl").read_text().splitlines()]
              for folder in (whole, stopped)]  # fmt: skip
    assert logged[0] == logged[1] and len([loss for loss in logged[0] if loss is not None]) == 12
    assert (whole / "model.safetensors").read_bytes() == (stopped / "model.safetensors").read_bytes()


def test_vision_killed_continues_from_its_checkpoint_to_the_same_model(tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    finish([*VISION, "--out", whole])
    staging = stopped.with_name(stopped.name + STAGING_SUFFIX)
    status, _ = interrupt([*VISION, "--out", stopped], (staging / "checkpoint.pt").is_file, signal.SIGKILL,
                          tmp_path / "stopped.log")
    assert status == -signal.SIGKILL
    assert not stopped.exists()
    step = torch.load(staging / "checkpoint.pt", weights_only=True)["step"]
    assert step % 5 == 0 and step < 40

    finish([*VISION, "--out", stopped])
    assert not staging.exists() and not (stopped / "checkpoint.pt").exists()
    first, second = metrics(whole), metrics(stopped)
    assert second["resumed_from_step"] >= 5 and first["resumed_from_step"] is None
    for key in ("test_nll", "test_accuracy", "best_val_nll", "best_epoch", "steps_run", "model_sha256"):
        assert second[key] == first[key], key
    columns = lambda folder: [row.split(",")[:-1] for row in (folder / "history.csv").read_text().splitlines()]  # noqa: E731
    assert columns(whole) == columns(stopped)  # every epoch's losses and validation, all but the seconds


def test_a_rerun_with_other_settings_starts_afresh(tmp_path):
    out = tmp_path / "run"
    staging = out.with_name(out.name + STAGING_SUFFIX)
    interrupt([*VISION, "--out", out], (staging / "checkpoint.pt").is_file, signal.SIGTERM, tmp_path / "run.log")
    assert (staging / "checkpoint.pt").is_file()
    finish([*VISION, "--max-steps", "6", "--out", out])  # another budget: not the run the checkpoint belongs to
    assert metrics(out)["resumed_from_step"] is None and metrics(out)["steps_run"] == 6
    assert not staging.exists()
