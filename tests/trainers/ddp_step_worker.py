"""One rank of a two-process vision update (run by tests/trainers/test_distributed.py under torchrun, gloo).

Builds the test's ResNet-20 without dropout, wraps it in DistributedDataParallel and runs one
``training_step`` with K = 2 passes on this rank's half of the test's batch, with a learning rate
of 0, so the parameters stay and the gradients, averaged by DDP, remain for rank 0 to save.
Usage: ``torchrun --nproc_per_node 2 ddp_step_worker.py OUT.pt``.
"""

from __future__ import annotations

import sys
from typing import Dict, Tuple

import torch
import torch.distributed as dist
from torch import nn

from intradist.settings import DistillationSettings
from intradist.trainers.vision_models import build_model
from intradist.trainers.vision_step import training_step

#: K = 2 passes, the divergence on: the K forwards of a rank all go through the DDP module before one backward.
SETTINGS = DistillationSettings(num_passes=2, alpha=1.0, label_smoothing=0.1)
BATCH = 8


def model_and_batch() -> Tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The same initial ResNet-20 (no dropout: identical passes) and batch of 8 images on every rank and in the test."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 0.0, "fc", True)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (BATCH,), generator=generator)
    return model, images, labels


def gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, micro_batch_size=None) -> Dict[str, torch.Tensor]:
    """One update at learning rate 0 through ``model`` (plain or DDP-wrapped); the gradients it left."""
    network = getattr(model, "module", model)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.0)
    training_step(model, optimizer, SETTINGS, images, labels, update=0, total_steps=10, lr=0.0,
                  micro_batch_size=micro_batch_size)  # fmt: skip
    return {name: parameter.grad.detach().clone() for name, parameter in network.named_parameters()}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, images, labels = model_and_batch()
    share = BATCH // world
    mine = slice(rank * share, (rank + 1) * share)
    grads = gradients(nn.parallel.DistributedDataParallel(model), images[mine], labels[mine])
    if rank == 0:
        torch.save(grads, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
