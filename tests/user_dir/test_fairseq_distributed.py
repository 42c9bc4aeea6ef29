"""fairseq-train with the ``intra_distillation`` criterion on 2 CPU processes (gloo), checked against 1 process.

The run trains on the data-bin's 20-sentence ``test`` split: one process with ``--batch-size 20``
sees all 20 sentences in its one batch per epoch; two processes with ``--batch-size 10`` each
get one of the epoch's two 10-sentence batches (fairseq shards the batches, not the sentences).
So every update sees the same sentences either way. With dropout 0 the K passes are
deterministic, and plain SGD with a fixed learning rate of 1 makes the scale of the combined
gradient show in the next update's loss (Adam would normalise it away). If fairseq sums both
ranks' losses and sample sizes and averages their gradients the way a single process with the
union batch would, the logged statistics agree update by update.

docs/distributed.md (section "fairseq") gives the commands and says why each distributed flag is there;
the last test pins the two ways fairseq's own launcher fails on CPU that the page describes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from intradist.recipes.fairseq_runs import USER_DIR, TrainingLog, environment
from tests.conftest import TINY_MODEL, run_fairseq_train

UPDATES = 3
ALPHA_BY_UPDATE = [0.0, 1.0, 5.0]  # the adaptive schedule with N = 3, p = 1.5, q = 3 at update numbers 0, 1, 2

#: K = 2 passes and an adaptive alpha, so the update number each rank's criterion receives is logged
INTRA = ["--task", "translation", "--criterion", "intra_distillation", "--num-passes", "2", "--adaptive-alpha",
         "--alpha", "5", "--alpha-p", "1.5", "--alpha-q", "3", "--max-update", str(UPDATES)]  # fmt: skip
#: The same sentences at every update in both runs, and nothing random (see the module docstring).
SAME_SENTENCES = ["--train-subset", "test", "--max-tokens", "4000", "--dropout", "0", "--optimizer", "sgd",
                  "--lr", "1.0", "--lr-scheduler", "fixed", "--warmup-updates", "0"]  # fmt: skip
#: Two ranks on CPU: gloo instead of nccl, and the DDP wrapper that does not hand PyTorch device ids.
TWO_CPU_RANKS = ["--distributed-world-size", "2", "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
#: Under torchrun on CPU: skip fairseq's reading of torchrun's variables (it divides by the GPU
#: count), run in this process, and let torch.distributed take the rank from $RANK.
UNDER_TORCHRUN = ["--distributed-init-method", "env://", "--distributed-no-spawn", "--distributed-rank", "-1"]
RANK_PREFIX = "rank{}| "

STATISTICS = ("loss", "nll_loss", "intra_distillation_loss", "gnorm")


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fairseq_train_args(data_bin: Path, save_dir: Path, extra: Sequence[str]) -> List[str]:
    return ["-m", "fairseq_cli.train", str(data_bin), "--user-dir", str(USER_DIR), *TINY_MODEL,
            "--save-dir", str(save_dir), *extra]  # fmt: skip


def cpu_environment(scratch: str) -> Dict[str, str]:
    """One thread per rank on the shared cores; torchrun's and multiprocessing's scratch files in
    ``scratch``, a short path (a Unix socket's path must stay under 108 bytes, which pytest-xdist's
    folders under pytest's tmp can pass)."""
    return {**environment(), "OMP_NUM_THREADS": "1", "TMPDIR": scratch}


def run_together(commands: List[List[str]], tmp: Path, timeout: float = 240) -> List[str]:
    """Start the commands at once, each writing to a file (no pipe to fill and block a rank), wait for
    all of them, and return their outputs; kills every one still running if any hangs."""
    tmp.mkdir(parents=True, exist_ok=True)
    logs = [tmp / f"process{index}.log" for index in range(len(commands))]
    processes: List[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ranks-") as scratch:
        try:
            for command, log in zip(commands, logs):
                with open(log, "w") as output:
                    processes.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                                      env=cpu_environment(scratch), start_new_session=True))  # fmt: skip
            deadline = time.monotonic() + timeout
            for process in processes:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:  # the whole session: torchrun's ranks outlive a killed torchrun
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    outputs = [log.read_text() for log in logs]
    assert [process.returncode for process in processes] == [0] * len(commands), "\n".join(o[-4000:] for o in outputs)
    return outputs


def torchrun_two_ranks(data_bin: Path, save_dir: Path, tmp: Path, flags: Sequence[str]) -> Dict[int, str]:
    """``torchrun --nproc-per-node 2 -m fairseq_cli.train ...`` (torchrun is ``python -m torch.distributed.run``).

    Returns each rank's lines, told apart by the prefix torchrun's ``--tee`` puts on them, without it.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_loopback_port()), "--tee", "3",
               "--log-line-prefix-template", RANK_PREFIX.format("${rank}"),
               *fairseq_train_args(data_bin, save_dir, [*flags, *TWO_CPU_RANKS, *UNDER_TORCHRUN])]  # fmt: skip
    (output,) = run_together([command], tmp)
    by_rank: Dict[int, str] = {0: "", 1: ""}
    for line in output.splitlines(keepends=True):
        for rank in by_rank:
            if line.startswith(RANK_PREFIX.format(rank)):
                by_rank[rank] += line[len(RANK_PREFIX.format(rank)) :]
    return by_rank


def fairseq_flags_two_ranks(data_bin: Path, save_dir: Path, tmp: Path, flags: Sequence[str]) -> Dict[int, str]:
    """One ``fairseq-train --distributed-rank R --distributed-init-method tcp://...`` per rank.

    Rank 1 is given a save folder of its own, which must stay unwritten: only rank 0 saves.
    """
    init = ["--distributed-init-method", f"tcp://127.0.0.1:{free_loopback_port()}", "--distributed-no-spawn"]
    rank_save_dirs = [save_dir, tmp / "rank1-save-dir"]
    commands = [[sys.executable, *fairseq_train_args(data_bin, rank_save_dirs[rank],
                                                     [*flags, *TWO_CPU_RANKS, *init, "--distributed-rank", str(rank)])]
                for rank in (0, 1)]  # fmt: skip
    outputs = run_together(commands, tmp)
    assert not rank_save_dirs[1].exists(), "rank 1 wrote into its --save-dir"
    return dict(enumerate(outputs))


def parse(output: str) -> TrainingLog:
    log = TrainingLog()
    for line in output.splitlines():
        log.add_line(line)
    return log


@pytest.fixture(scope="module")
def one_process(tiny_data_bin, tmp_path_factory):
    """The reference: one process, 20 sentences per batch."""
    save_dir = tmp_path_factory.mktemp("one-process")
    completed, log = run_fairseq_train(tiny_data_bin, save_dir, [*INTRA, *SAME_SENTENCES, "--batch-size", "20"])
    return save_dir, completed.stdout + completed.stderr, log


@pytest.mark.parametrize("launch", [torchrun_two_ranks, fairseq_flags_two_ranks], ids=["torchrun", "fairseq_flags"])
def test_two_cpu_ranks_train_like_one_process_with_their_union_batch(launch, one_process, tiny_data_bin, tmp_path):
    save_dir = tmp_path / "save"
    by_rank = launch(tiny_data_bin, save_dir, tmp_path / "tmp", [*INTRA, *SAME_SENTENCES, "--batch-size", "10"])
    one_dir, one_output, one = one_process
    two = parse(by_rank[0])

    # both ranks joined one process group of 2; rank 0 logged for both
    assert all("distributed init (rank" in by_rank[rank] for rank in (0, 1)), by_rank[1][-2000:]
    assert "training on 2 devices" in by_rank[0] and "training on 1 devices" in one_output
    assert "max sentences per device = 10" in by_rank[0] and "max sentences per device = 20" in one_output
    assert "train_inner" not in by_rank[1]

    # one checkpoint set, saved by rank 0 only, once per epoch (one update each)
    assert sorted(os.listdir(save_dir)) == sorted(os.listdir(one_dir)) == ["checkpoint_last.pt"]
    assert by_rank[0].count("Saved checkpoint") == UPDATES and "Saved checkpoint" not in by_rank[1]

    assert [int(r["num_updates"]) for r in two.inner] == [int(r["num_updates"]) for r in one.inner] == [1, 2, 3]
    for two_record, one_record in zip(two.inner, one.inner):
        # the 10 + 10 sentences of the two ranks are the single process's 20, tokens included
        assert two_record["bsz"] == one_record["bsz"] == "20"
        assert two_record["wpb"] == one_record["wpb"]
        # losses summed over ranks and divided by the summed sample size; gradients averaged the same way
        # (the statistics of updates 2 and 3 come from the parameters the previous combined gradient made)
        for key in STATISTICS:
            assert float(two_record[key]) == pytest.approx(float(one_record[key]), abs=2e-3), (key, two_record)
    assert float(one.inner[1]["loss"]) < float(one.inner[0]["loss"]) - 0.1  # the comparison sees the updates
    # each rank's criterion got the trainer's update number: alpha is logged as sum(alpha * sample size) / sum(sample
    # size) over the ranks, so a rank with another update number would show as a mixture
    assert [float(r["alpha"]) for r in two.inner] == [float(r["alpha"]) for r in one.inner] == ALPHA_BY_UPDATE


@pytest.mark.parametrize(
    "flags, returncode, message",
    [
        # fairseq_cli.train -> call_main -> infer_init_method -> _infer_single_node_init asserts a GPU per rank
        pytest.param([], 1, "world size is 2 but have 0 available devices", id="world_size_alone"),
        # call_main spawns min(torch.cuda.device_count(), world size) = 0 processes and returns: nothing trains
        pytest.param(["--distributed-init-method", "tcp://127.0.0.1:{port}"], 0, None, id="spawn_with_init_method"),
    ],
)
def test_fairseqs_own_spawning_cannot_start_cpu_ranks(flags, returncode, message, tiny_data_bin, tmp_path):
    flags = [flag.format(port=free_loopback_port()) for flag in flags]
    save_dir = tmp_path / "save"
    completed, log = run_fairseq_train(
        tiny_data_bin, save_dir, [*INTRA, "--distributed-world-size", "2", "--distributed-backend", "gloo", *flags],
        check=False,
    )  # fmt: skip
    assert completed.returncode == returncode, completed.stderr[-3000:]
    assert log.num_updates == 0 and not save_dir.exists()
    if message:
        assert message in completed.stderr
