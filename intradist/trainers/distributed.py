"""The processes of one run under ``torchrun``: who writes, what is summed across them, the folder they share.

``torchrun --nproc_per_node N -m intradist train ...`` starts N copies of the command; torchrun
tells each its place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Every rank trains on its shard of the data and computes its
K passes and their loss like one process would; the gradients are averaged by
DistributedDataParallel, the logged sums are added up here, and only rank 0 (the *writer*) touches
the output folder. One process (no torchrun) is the same code with one rank, and every function
here is then a no-op.

:func:`shared_run` opens a :class:`intradist.run_folder.RunFolder` for all ranks at once: the
writer prepares ``OUT.partial``, and every rank learns from it whether the run resumes.
:func:`commit` waits until every rank is done with the staging folder before the writer puts it
in place. :func:`fingerprint` names the settings a resumed run must share with the interrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Mapping, Sequence

import click
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from intradist.run_folder import RunFolder, Terminated

#: Updates between the checkpoints in ``OUT.partial`` that an interrupted run resumes from.
SAVE_STEPS = 500


def resume_and_balance_options(balance_goes_to: str, doc: str) -> List[Callable[[Callable], Callable]]:
    """``--save-steps`` and ``--log-balance-every``, as every trainer declares them.

    ``balance_goes_to`` says where the balance records appear besides ``OUT/balance_log.jsonl``
    (the Trainer's log, stderr); ``doc`` is the page that explains the command.
    """
    return [
        click.option("--save-steps", type=click.IntRange(min=1), default=SAVE_STEPS, show_default=True,
                     help="A checkpoint in OUT.partial every N updates (the last one kept): an interrupted run, "
                          "rerun with the same command, continues from it (docs/distributed.md)."),
        click.option("--log-balance-every", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Every N updates, log the balance statistics (std, cv, gini, top-1% share) of the "
                          f"update's parameter sensitivities |θ·grad| to {balance_goes_to} and "
                          f"OUT/balance_log.jsonl; 0: never ({doc})."),
    ]  # fmt: skip


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of the run (torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def writer(self) -> bool:
        """Rank 0 writes the output folder, the others only read."""
        return self.rank == 0


def launched_ranks() -> Ranks:
    """The ranks torchrun (or ``accelerate launch``) announced in the environment; one process without them."""

    def number(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        return int(value) if value.strip().isdigit() else default

    return Ranks(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))


def active() -> bool:
    """Whether this process is one of several with an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def start_process_group(ranks: Ranks, device: torch.device) -> bool:
    """Join the others (gloo on the CPU, nccl on GPUs) when torchrun started several processes.

    Returns whether this call started the group (then :func:`end_process_group` ends it).
    """
    if ranks.world_size <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def end_process_group(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def sum_across(values: Sequence[float], device: torch.device) -> List[float]:
    """The sums of ``values`` over all ranks (float64, so counts stay exact)."""
    if not active():
        return [float(value) for value in values]
    tensor = torch.tensor([float(value) for value in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_writer(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value: Any) -> List[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in one process)."""
    if not active():
        return [value]
    values: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


class GlobalBatchSampler(DistributedSampler):
    """This rank's part of every global batch: one order per epoch for any number of processes.

    The epoch's order is ``torch.randperm(n)`` seeded with ``seed + epoch`` (DistributedSampler's
    convention; :meth:`set_epoch` before each epoch), padded by repeating its start to a multiple
    of the world size. It is cut into global batches of ``world_size x batch_size`` images, and
    rank r takes the r-th contiguous block of each: N processes with batch B see, update by update,
    exactly the images one process sees with batch N x B and ``--micro-batch-size B`` (batch
    normalisation too sees the same groups). A last, shorter global batch is split evenly, so every
    rank runs the same number of updates. ``skip_batches`` (of :meth:`set_epoch`) starts the epoch
    after that many of this rank's batches: a resumed run continues where it stopped, without
    loading (and augmenting) what it skips.
    """

    def __init__(self, dataset: Dataset, batch_size: int, ranks: Ranks, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=shuffle, seed=seed)
        self.batch_size = batch_size
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip_batches = skip_batches

    def batches_per_epoch(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def _order(self) -> List[int]:
        count = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(count))
        while len(order) < self.total_size:
            order += order[: self.total_size - len(order)]
        return order

    def _mine(self) -> List[int]:
        order, size, width = self._order(), self.batch_size, self.num_replicas * self.batch_size
        full = self.num_samples // size
        mine: List[int] = []
        for batch in range(full):
            start = batch * width + self.rank * size
            mine += order[start : start + size]
        tail = self.num_samples - full * size
        if tail:
            start = full * width + self.rank * tail
            mine += order[start : start + tail]
        return mine[self.skip_batches * size :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine())

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip_batches * self.batch_size)


def rank_share(count: int, ranks: Ranks) -> range:
    """The items of an evaluation set this rank scores (every world_size-th, none twice; the sums are added)."""
    return range(ranks.rank, count, ranks.world_size)


@contextmanager
def shared_run(folder: RunFolder) -> Iterator[RunFolder]:
    """``with folder`` on every rank; the writer decides whether the run resumes and tells the others.

    ``folder`` is made with ``writer=`` this rank's :attr:`Ranks.writer`: the others create,
    lock and delete nothing, and read the writer's answer instead of the staging folder (which the
    writer may be emptying at that moment).
    """
    with folder as run:
        run.resuming = bool(from_writer(run.resuming))
        yield run


def commit(run: RunFolder) -> None:
    """Every rank is done with the staging folder; then the writer puts it in place of ``OUT``."""
    barrier()
    run.commit()


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """SIGTERM (which a :class:`RunFolder` turns into :class:`Terminated`) ends the command with status 143, as the
    signal itself would, without a traceback; the folder has already said what it kept."""
    try:
        yield
    except Terminated:
        raise SystemExit(128 + signal.SIGTERM) from None


def fingerprint(settings: Mapping[str, Any],
                ignore: Sequence[str] = ("out", "overwrite", "save_steps", "log_balance_every")) -> str:  # fmt: skip
    """A hash of the settings that decide a run's numbers (``settings`` less ``ignore``), e.g. to resume only the same run.

    What only watches a run (how often it checkpoints or logs its balance) does not decide its numbers.

    ``settings`` should hold the world size too: another number of processes shards the data
    differently, so its checkpoints do not continue the same run.
    """
    kept = {key: value for key, value in settings.items() if key not in ignore}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def world_record(ranks: Ranks, per_device_batch: int, accumulation: int = 1) -> Mapping[str, Any]:
    """What ``metrics.json`` says about the processes: world size and the global batch they make."""
    return {"world_size": ranks.world_size, "per_device_batch_size": per_device_batch,
            "global_batch_size": per_device_batch * ranks.world_size * accumulation}  # fmt: skip

