"""Run ``fairseq-train`` as a subprocess with visible progress, and read back what it logged.

fairseq is driven through its own command line (the way users run it), with
``--log-format json`` so that the per-update statistics can be parsed reliably.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from intradist.paths import REPO_ROOT, fairseq_plugin_folder
from intradist.prepare.translation import REQUIRED_BATCH_SIZE_MULTIPLE

#: What --user-dir names in every run of the plugin.
USER_DIR = fairseq_plugin_folder()

_JSON_RECORD = re.compile(r"\| (train_inner|train|valid) \| (\{.*\})\s*$")
_DONE = re.compile(r"done training in ([0-9.]+) seconds")


@dataclass
class TrainingLog:
    """What a ``fairseq-train --log-format json`` run reported."""

    inner: List[Dict[str, str]] = field(default_factory=list)  # one record per --log-interval
    epochs: List[Dict[str, str]] = field(default_factory=list)
    valid: List[Dict[str, str]] = field(default_factory=list)
    training_seconds: Optional[float] = None

    def add_line(self, line: str) -> Optional[Dict[str, str]]:
        """Parse one log line; returns the ``train_inner`` record it held, if any."""
        match = _JSON_RECORD.search(line)
        if match:
            kind, record = match.group(1), json.loads(match.group(2))
            {"train_inner": self.inner, "train": self.epochs, "valid": self.valid}[kind].append(record)
            return record if kind == "train_inner" else None
        done = _DONE.search(line)
        if done:
            self.training_seconds = float(done.group(1))
        return None

    @property
    def num_updates(self) -> int:
        records = self.epochs or self.inner
        return int(records[-1].get("train_num_updates", records[-1].get("num_updates", 0))) if records else 0

    def target_tokens(self) -> float:
        """Target tokens processed: each epoch's words per batch times its updates, summed."""
        tokens, previous = 0.0, 0
        for record in self.epochs:
            updates = int(record["train_num_updates"])
            tokens += float(record["train_wpb"]) * (updates - previous)
            previous = updates
        return tokens


def transformer_args(layers: int, embed_dim: int, ffn_dim: int, heads: int) -> List[str]:
    """fairseq flags for a small encoder-decoder ``transformer`` with shared embeddings."""
    return [
        "--arch", "transformer", "--share-all-embeddings",
        "--encoder-layers", str(layers), "--decoder-layers", str(layers),
        "--encoder-embed-dim", str(embed_dim), "--decoder-embed-dim", str(embed_dim),
        "--encoder-ffn-embed-dim", str(ffn_dim), "--decoder-ffn-embed-dim", str(ffn_dim),
        "--encoder-attention-heads", str(heads), "--decoder-attention-heads", str(heads),
    ]  # fmt: skip


def environment() -> Dict[str, str]:
    """The environment for fairseq subprocesses: quiet warnings, the project importable."""
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


#: Flags that keep fairseq's data loading off a background thread. fairseq prefetches batches on a
#: daemon thread (``--data-buffer-size``, default 10); when a run ends while that thread is inside
#: torch's C++ code, CPython 3.11's shutdown ends the thread with ``pthread_exit`` and the process
#: aborts ("terminate called without an active exception", exit -6) after the run has finished.
#: The DataLoader's worker process prefetches anyway, so the thread gains little. Given first, so
#: a user's own ``--data-buffer-size`` later on the command line still wins.
NO_PREFETCH_THREAD = ("--data-buffer-size", "0")


def train(args: Sequence[str], save_dir: Path, description: str, total_updates: int, resume: bool = False) -> TrainingLog:
    """Run ``fairseq-train ARGS --save-dir SAVE_DIR`` with a progress bar; the full log goes to ``train.log``.

    By default the run starts from scratch in ``SAVE_DIR.partial``, renamed to ``SAVE_DIR`` on
    success, so a failed or interrupted run never leaves a folder that looks finished. With
    ``resume`` it trains in ``SAVE_DIR`` itself and fairseq continues from ``checkpoint_last.pt``
    (the right choice for long runs); the log is appended to.
    """
    staging = save_dir if resume else save_dir.with_name(save_dir.name + ".partial")
    if not resume:
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "fairseq_cli.train", *NO_PREFETCH_THREAD, *args, "--save-dir", str(staging)]
    (staging / "command.txt").write_text(" ".join(command) + "\n")
    log = TrainingLog()
    with open(staging / "train.log", "a" if resume else "w") as log_file, tqdm(
        total=total_updates, desc=description, unit="upd", dynamic_ncols=True, file=sys.stderr
    ) as bar:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment()
        )
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            record = log.add_line(line)
            if record is not None:
                bar.update(int(record["num_updates"]) - bar.n)
                bar.set_postfix(loss=record.get("loss"), refresh=False)
        returncode = process.wait()
    if returncode != 0:
        tail = "".join((staging / "train.log").read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"fairseq-train failed (exit {returncode}); log in {staging / 'train.log'}:\n{tail}")
    if not resume:
        shutil.rmtree(save_dir, ignore_errors=True)
        staging.rename(save_dir)
    return log


def timed(function, *args, **kwargs):
    """Call ``function`` and return ``(result, wall seconds)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start

#: A 2+2-layer transformer small enough for 2 CPU cores (the README gives the timings).
MODEL_ARGS = [
    *transformer_args(layers=2, embed_dim=64, ffn_dim=256, heads=4),
    "--dropout", "0.3", "--attention-dropout", "0.1", "--weight-decay", "0.0001",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--lr", "0.002", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400",
    "--label-smoothing", "0.1",
]  # fmt: skip


def training_args(data_bin: Path, updates: int, max_tokens: int, seed: int, cpu: bool) -> List[str]:
    """``fairseq-train`` flags shared by every run of the commands: data, model, budget, logging."""
    return [str(data_bin), "--user-dir", str(USER_DIR), *MODEL_ARGS,
            "--max-tokens", str(max_tokens), "--max-update", str(updates), "--seed", str(seed),
            "--log-format", "json", "--log-interval", "25", "--no-epoch-checkpoints",
            *REQUIRED_BATCH_SIZE_MULTIPLE, *(["--cpu"] if cpu else [])]  # fmt: skip
