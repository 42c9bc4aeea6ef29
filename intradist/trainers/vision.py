"""``intradist train vision``: image classifiers (torchvision ResNets, CIFAR-style ResNets) with intra-distillation.

A plain torch loop around the one step objective of :mod:`intradist.settings`, which calls
:mod:`intradist.losses` (label-smoothed cross-entropy, X-divergence between the K passes, the
paper's adaptive α, knowledge distillation from a teacher). Nothing here computes a loss itself.

How the K passes differ. A ResNet has no dropout: with the same batch, K train-mode passes would
give identical logits and the intra-distillation term would be zero. ``--dropout P`` (default
0.1) adds dropout where ``--dropout-placement`` says: ``fc`` (default) between the global
average pool and the final ``fc`` layer; ``relu`` after every ReLU module of a torchvision ResNet,
as the reproduction study's notebooks do (``set_dropout``, e.g. IntraSmooth.ipynb cell 5). Each
pass sees other dropout masks, the sub-model view of the paper. Dropout holds no parameters, so
the saved state dict is torchvision's. It is on in every run (K = 1 too), so that a grid compares
the same model with and without the divergence term. The batch is augmented once, so all passes
see the same pixels. Batch normalisation uses the batch statistics in each pass (identical
across passes) and updates its running averages once per pass.

Generic defaults: AdamW (β 0.9/0.999, weight decay 1e-3), batch 60, learning rate warmed up
linearly from 2e-5 to 1e-3 over 50 updates, then fairseq's inverse square root, 80 epochs; the
checkpoint of the lowest validation negative log-likelihood is kept (``model.pt``, the last one
too: ``model_last.pt``) and scored on the test split (NLL and accuracy).

The reproduction study's recipe (``configs/vision/pet_*.yaml``, ``docs/fidelity/vision.yaml``) also
sets what its notebooks do differently, each through a named flag whose default is ours:
micro-batches of 4 images accumulated into updates of 60 (``--micro-batch-size``, BN statistics
per micro-batch; ``--micro-batch-reduction sum`` for the classic students, which skip the
division), the schedule ``2e-5·u`` then ``1e-3/√(u−49)`` over updates counted from 1
(``--lr-schedule reproduction --first-update 1``), torch's label smoothing (ε over all classes:
``--label-smoothing-style torch``), the teacher term added to the loss (``--teacher-weight``) and
dropped after epoch 75 (``--kd-epochs``), a classifier without bias (``--no-fc-bias``), ImageNet
weights (``--pretrained-weights IMAGENET1K_V1``) and the 3,000/680 ``random_split`` of Pet's trainval.

``intradist train vision-grid`` trains an eight-model grid (intra-distillation × self-distillation × label
smoothing) with our generic objective and writes its NLL table; ``scripts/vision/grid.sh`` runs
the reproduction's eight configs. See ``docs/vision.md``.

This module holds the two commands; the trainer's other modules, one concern each:
``vision_data`` (the image sources and their splits), ``vision_transforms`` (augmentation and
normalisation), ``vision_models`` (the architectures, dropout), ``vision_weights`` (pretrained
weights, the teacher), ``vision_schedules`` (learning rate, teacher epochs), ``vision_step`` (one
update), ``vision_training`` (one run: :func:`~intradist.trainers.vision_training.train`) and
``vision_grid`` (the eight-model grid and its table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import click

from intradist.errors import UserError
from intradist.settings import distillation_options, settings_from
from intradist.trainers.config_file import config_file_option, config_text
from intradist.trainers.vision_data import HOLDOUT_METHODS
from intradist.trainers.vision_grid import GRID_DISTILLATION, GridSettings, run_grid
from intradist.trainers.vision_models import ARCHES, DROPOUT_PLACEMENTS
from intradist.trainers.vision_schedules import LR_SCHEDULES
from intradist.trainers.distributed import exit_on_sigterm, launched_ranks
from intradist.trainers.vision_step import MICRO_BATCH_REDUCTIONS, PRECISIONS, SMOOTHING_STYLES
from intradist.trainers import distributed
from intradist.trainers.vision_training import VisionConfig, train
from intradist.trainers.vision_transforms import AUGMENTATIONS


def _training_options(data_default: Optional[str], out_default: Optional[Path]) -> Callable[[Callable], Callable]:
    """The flags of a run that the grid shares (everything but the distillation switches)."""
    options = [
        click.option("--data", required=data_default is None, default=data_default, show_default=True,
                     help="digits, a CIFAR-10/100 python folder, an Oxford-IIIT Pet folder, or an image folder "
                          "with train/ and val/ (test/ optional)."),
        click.option("--out", type=click.Path(path_type=Path), required=out_default is None, default=out_default,
                     show_default=True, help="Output folder (each run is written as RUN.partial, renamed when done)."),
        click.option("--arch", default=None,
                     help=f"One of {', '.join(ARCHES)}; default resnet50 (resnet20 for digits)."),
        click.option("--pretrained-weights", default=None,
                     help="A local state dict, or a torchvision weights name of --arch (IMAGENET1K_V1, read from "
                          "the torch hub cache) to start from; a classifier of another size is re-initialised."),
        click.option("--dropout", type=float, default=0.1, show_default=True,
                     help="Dropout probability: what makes the K passes differ."),
        click.option("--dropout-placement", type=click.Choice(DROPOUT_PLACEMENTS), default="fc", show_default=True,
                     help="fc: before the final layer; relu: after every ReLU module (torchvision ResNets; the "
                          "reproduction's notebooks)."),
        click.option("--fc-bias/--no-fc-bias", default=True, show_default=True,
                     help="A bias in the classifier (the reproduction's has none)."),
        click.option("--image-size", type=click.IntRange(min=1), default=None,
                     help="Side of the crops; default 8 for digits, 32 for CIFAR, 224 for photos."),
        click.option("--augment", type=click.Choice(AUGMENTATIONS), default="auto", show_default=True,
                     help="auto: pad-crop for digits, imagenet (RandomResizedCrop + flip) otherwise."),
        click.option("--no-augment", is_flag=True, help="Same as --augment none."),
        click.option("--epochs", type=click.IntRange(min=1), default=80, show_default=True),
        click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many updates."),
        click.option("--batch-size", type=click.IntRange(min=1), default=60, show_default=True,
                     help="Images per update."),
        click.option("--micro-batch-size", type=click.IntRange(min=1), default=None,
                     help="Run each batch as micro-batches of this many images (batch norm sees each alone) and "
                          "accumulate their gradients; default: the whole batch at once."),
        click.option("--micro-batch-reduction", type=click.Choice(MICRO_BATCH_REDUCTIONS), default="mean",
                     show_default=True,
                     help="mean: each micro-batch's loss is divided by their number; sum: not (the reproduction's "
                          "classic students)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
                     help="Peak learning rate, reached after the warm-up."),
        click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="inverse-sqrt", show_default=True,
                     help="inverse-sqrt: fairseq's (linear warm-up from --warmup-init-lr, then lr·sqrt(W/t)); "
                          "reproduction: warmup-init-lr·u below W, then lr/sqrt(u-W+1)."),
        click.option("--first-update", type=click.IntRange(0, 1), default=0, show_default=True,
                     help="The number of the first update, as the lr schedule and the adaptive alpha see it "
                          "(the reproduction's notebooks count from 1)."),
        click.option("--warmup-init-lr", type=click.FloatRange(min=0), default=2e-5, show_default=True),
        click.option("--warmup-steps", type=click.IntRange(min=0), default=50, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-3, show_default=True),
        click.option("--label-smoothing-style", type=click.Choice(SMOOTHING_STYLES), default="fairseq",
                     show_default=True,
                     help="fairseq: epsilon spread over the other classes; torch: over all classes "
                          "(torch.nn.CrossEntropyLoss, the reproduction's)."),
        click.option("--teacher-weight", type=click.FloatRange(min=0), default=None,
                     help="With --teacher: loss = supervised + W·KD (the reproduction's form) instead of the "
                          "convex mix of --kd-weight."),
        click.option("--kd-epochs", type=click.IntRange(min=0), default=None,
                     help="With --teacher: use the teacher term in the first N epochs only (the reproduction: 75)."),
        click.option("--val-split", type=click.Choice(HOLDOUT_METHODS), default="stratified", show_default=True,
                     help="CIFAR and Pet: how validation images are held out of the training set "
                          "(random-split: torch.utils.data.random_split, the reproduction's)."),
        click.option("--val-size", type=click.IntRange(min=1), default=None,
                     help="CIFAR and Pet: validation images held out (default: a tenth)."),
        click.option("--val-split-seed", type=int, default=0, show_default=True,
                     help="CIFAR and Pet: seed of the hold-out (the reproduction: 42)."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)."),
        click.option("--workers", type=click.IntRange(min=0), default=None,
                     help="Data loader processes (default: 0 for digits and CIFAR, which sit in memory; else 4)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                     help="bf16 or fp16: mixed precision (autocast; fp16 with a gradient scaler), on a GPU only."),
        *distributed.resume_and_balance_options("stderr", "docs/vision.md"),
    ]  # fmt: skip

    def decorate(function: Callable) -> Callable:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _config(options: Dict[str, Any], **overrides: Any) -> VisionConfig:
    """The run's :class:`VisionConfig` from the command's flags (those of the distillation switches taken out)."""
    if options.pop("no_augment"):
        options["augment"] = "none"
    fields = VisionConfig.__dataclass_fields__
    return VisionConfig(**{name: value for name, value in {**options, **overrides}.items() if name in fields})


@click.command("intradist train vision", context_settings={"help_option_names": ["-h", "--help"]})
@_training_options(data_default=None, out_default=None)
@click.option("--seed", default=1, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an earlier run's --out folder.")
@distillation_options
@config_file_option
def train_command(**options: Any) -> None:
    """Train an image classifier with the reproduction's recipe, optionally with intra-distillation and a teacher.

    Runs under torchrun --nproc_per_node N as well (--batch-size images per process); an
    interrupted run continues from its checkpoint when rerun. `intradist train vision-grid --help`:
    the eight-model grid. Details: docs/vision.md, docs/distributed.md.
    """
    settings = settings_from(options)
    ctx = click.get_current_context()
    with exit_on_sigterm():
        metrics = train(_config(options), settings, extra_files={"config.yaml": config_text(ctx)})
    if launched_ranks().writer:
        click.echo(json.dumps({key: metrics[key] for key in ("best_epoch", "best_val_nll", "test_nll", "test_accuracy")}))


@click.command("intradist train vision-grid", context_settings={"help_option_names": ["-h", "--help"]})
@_training_options(data_default="digits", out_default=Path("runs/vision-grid"))
@click.option("--seeds", default="1", show_default=True, help="Comma-separated seeds; the table gives mean ± std.")
@click.option("--passes", type=click.IntRange(min=2), default=GRID_DISTILLATION.num_passes, show_default=True,
              help="K of the intra cells.")  # fmt: skip
@click.option("--alpha", type=click.FloatRange(min=0), default=GRID_DISTILLATION.alpha, show_default=True)
@click.option("--alpha-p", type=click.FloatRange(min=0, min_open=True), default=GRID_DISTILLATION.alpha_p,
              show_default=True)  # fmt: skip
@click.option("--alpha-q", type=click.FloatRange(min=0, min_open=True), default=GRID_DISTILLATION.alpha_q,
              show_default=True)  # fmt: skip
@click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True),
              default=GRID_DISTILLATION.label_smoothing, show_default=True,
              help="epsilon of the label-smoothing cells.")  # fmt: skip
@click.option("--kd-weight", type=click.FloatRange(0, 1), default=GRID_DISTILLATION.kd_weight, show_default=True,
              help="beta of the self-distillation cells.")  # fmt: skip
@click.option("--kd-temperature", type=click.FloatRange(min=0, min_open=True),
              default=GRID_DISTILLATION.kd_temperature, show_default=True)  # fmt: skip
@config_file_option
def grid_command(**options: Any) -> None:
    """The reproduction's grid: intra-distillation x self-distillation x label smoothing, eight models per seed.

    Self-distillation students learn from the matching teacher (same intra-distillation and label
    smoothing, no self-distillation). Writes OUT/seedS/CELL/, OUT/grid.json and OUT/grid.md (the NLL table).
    """
    if launched_ranks().world_size > 1:
        raise UserError("runs in one process; under torchrun launch intradist train vision, one cell at a time")
    try:
        seeds = tuple(int(seed) for seed in options.pop("seeds").split(",") if seed.strip())
    except ValueError:
        raise UserError("--seeds: give comma-separated integers, e.g. 1,2,3") from None
    options["num_passes"] = options.pop("passes")  # --passes: K of the intra cells
    grid = GridSettings(settings_from(options, base=GRID_DISTILLATION), seeds)
    run_grid(_config(options, seed=seeds[0]), grid)
    (Path(options["out"]) / "config.yaml").write_text(config_text(click.get_current_context()))
    click.echo((Path(options["out"]) / "grid.md").read_text())


if __name__ == "__main__":
    train_command()
