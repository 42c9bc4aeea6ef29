"""The child of ``criterion_throughput.py``: ``fairseq-train`` with the end of every update timed.

Run as ``python -m benchmarks.criterion_throughput_child FAIRSEQ_TRAIN_ARGS...`` from the repository
root (the parent reads its standard output). Besides fairseq's own log it prints:

- ``BENCH_ENV {json}`` once, before the first update: versions, torch threads, the CUDA device and
  the peak resident set size reached so far (KiB);
- ``BENCH_STEP UPDATE WALL CPU`` after every ``Trainer.train_step`` (``time.perf_counter`` and
  ``time.process_time``, after a CUDA synchronise on GPU);
- ``BENCH_CUDA_PEAK BYTES`` at exit when CUDA was used (``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import atexit
import json
import resource
import sys
import time

from fairseq_cli.train import cli_main  # first: it sets up fairseq's logging format

import fairseq
import torch
from fairseq.trainer import Trainer


def time_every_update() -> None:
    """Wrap ``Trainer.train_step`` to print the environment before the first update and a stamp after each."""
    original_train_step = Trainer.train_step
    first = [True]

    def timed_train_step(self, samples, raise_oom=False):
        if first[0]:
            first[0] = False
            cuda = bool(self.cuda)
            print("BENCH_ENV " + json.dumps({
                "torch": torch.__version__,
                "fairseq": fairseq.__version__,
                "python": sys.version.split()[0],
                "torch_threads": torch.get_num_threads(),
                "cuda_device": torch.cuda.get_device_name() if cuda else None,
                "pre_train_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }), flush=True)  # fmt: skip
        output = original_train_step(self, samples, raise_oom)
        if self.cuda:
            torch.cuda.synchronize()
        stamps = (self.get_num_updates(), time.perf_counter(), time.process_time())
        print("BENCH_STEP %d %.6f %.6f" % stamps, flush=True)
        return output

    Trainer.train_step = timed_train_step


def report_cuda_peak() -> None:
    """Print the peak CUDA memory of the run, if it used CUDA."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        print("BENCH_CUDA_PEAK %d" % torch.cuda.max_memory_allocated(), flush=True)


def main() -> None:
    time_every_update()
    atexit.register(report_cuda_peak)
    sys.argv[0] = "fairseq-train"
    cli_main()


if __name__ == "__main__":
    main()
