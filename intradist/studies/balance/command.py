"""``intradist study balance``: the click group of the two balance studies, translation and vision."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Callable

import click

from intradist.settings import settings_from
from intradist.studies.balance.settings import TRANSLATION_SWITCHES, VISION_SWITCHES, TranslationStudy, VisionStudy
from intradist.studies.balance.studies import translation_study, vision_study

COMMAND = "intradist study balance"


def _command_line() -> str:
    return f"{COMMAND} " + " ".join(shlex.quote(argument) for argument in sys.argv[1:])


def _report_written(out: Path) -> None:
    click.echo(f"{COMMAND}: report in {out / 'study.md'} (full sensitivity report: {out / 'analysis' / 'report.html'})")


@click.group(COMMAND, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Self-distillation rounds versus intra-distillation: score and parameter balance of every model.

    Trains round 0 (the baseline), R rounds of self-distillation (each taught by the previous
    round) and one intra-distillation model, scores them, computes their sensitivities on the
    same batches (raw and loss-normalized) and checks whether balance improves as the paper says.
    A rerun reuses the models that finished. See docs/studies/.
    """


_SHARED = [
    click.option("--num-passes", type=click.IntRange(min=2), default=TRANSLATION_SWITCHES.num_passes, show_default=True,
                 help="K of the intra-distillation model."),
    click.option("--kd-weight", type=click.FloatRange(0, 1), default=TRANSLATION_SWITCHES.kd_weight, show_default=True,
                 help="beta of the self-distillation rounds."),
    click.option("--analysis-batches", type=click.IntRange(min=1), default=20, show_default=True,
                 help="Validation batches of the sensitivity analysis (the same for every model)."),
    click.option("--seed", type=int, default=1, show_default=True),
    click.option("--jobs", type=click.IntRange(1, 2), default=2, show_default=True,
                 help="2: train the intra-distillation model beside the rounds, one thread each."),
]  # fmt: skip


def _shared(function: Callable) -> Callable:
    for option in reversed(_SHARED):
        function = option(function)
    return function


@main.command("translation")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/studies/self-distill-rounds"),
              show_default=True)  # fmt: skip
@click.option("--dataset", type=click.Choice(["multi30k", "iwslt14"]), default="multi30k", show_default=True,
              help="multi30k: the shipped corpus and a 2+2-layer model for CPUs; iwslt14: the paper's recipe.")
@click.option("--pair", type=click.Choice(["ar", "de", "es", "fa", "he", "it", "nl", "pl"]), default="de",
              show_default=True, help="IWSLT'14 source language (into English).")
@click.option("--data-bin", type=click.Path(path_type=Path), default=None,
              help="A prepared data-bin [default: Multi30k prepared into OUT/data-bin; data-bin/iwslt14/PAIR-en].")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True,
              help="Self-distillation rounds after the baseline.")
@click.option("--updates", type=click.IntRange(min=1), default=8000, show_default=True, help="Updates per model.")
@click.option("--vocab-size", type=click.IntRange(min=10), default=1000, show_default=True, help="Multi30k sentencepiece.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=2000, show_default=True, help="Multi30k tokens per batch.")
@click.option("--alpha", type=click.FloatRange(min=0), default=TRANSLATION_SWITCHES.alpha, show_default=True,
              help="Intra-distillation weight (0.3: the best of the CPU study at short budgets; the paper: 5).")
@click.option("--adaptive-alpha/--constant-alpha", default=TRANSLATION_SWITCHES.adaptive_alpha, show_default=True)
@click.option("--cpu", is_flag=True, help="Train and translate on the CPU even when a GPU is present.")
@click.option("--fp16", is_flag=True, help="IWSLT'14 on a GPU: mixed precision, as the paper.")
@_shared
def translation(**options) -> None:
    """Translation: BLEU and balance of round 0..R and intra-distillation (fairseq)."""
    study = TranslationStudy(distillation=settings_from(options, base=TRANSLATION_SWITCHES), **options)
    translation_study(study, _command_line())
    _report_written(study.out)


@main.command("vision")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/studies/vision-rounds"), show_default=True)
@click.option("--data", default="digits", show_default=True,
              help="digits (scikit-learn's, on a CPU), or an image folder / Oxford-IIIT Pet as intradist train vision --data.")
@click.option("--arch", default=None, help="A intradist train vision --arch [default: resnet20 for small images, resnet50 else].")
@click.option("--pretrained-weights", type=click.Path(path_type=Path), default=None,
              help="Start every model from these weights (intradist train vision --pretrained-weights).")
@click.option("--analysis-data", type=click.Path(path_type=Path), default=None,
              help="Image folder of test images for the sensitivities (needed for CIFAR and Pet).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Self-distillation rounds after the baseline.")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
@click.option("--alpha", type=click.FloatRange(min=0), default=VISION_SWITCHES.alpha, show_default=True)
@click.option("--adaptive-alpha/--constant-alpha", default=VISION_SWITCHES.adaptive_alpha, show_default=True)
@_shared
def vision(**options) -> None:
    """Images: test accuracy and balance of round 0..R and intra-distillation (torchvision ResNet)."""
    study = VisionStudy(distillation=settings_from(options, base=VISION_SWITCHES), **options)
    vision_study(study, _command_line())
    _report_written(study.out)


if __name__ == "__main__":
    main()
