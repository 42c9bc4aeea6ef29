"""Command-line entry points for translation data preparation and evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from intradist.errors import UserError, fail
from intradist.recipes.fairseq_runs import USER_DIR
from intradist.prepare.multi30k import multi30k_corpus
from intradist.prepare.translation import PrepareConfig, prepare, translate_and_score


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Folder with {train,val,test}.{src,tgt}[.gz] (default: the shipped Multi30k).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The fairseq data-bin folder to write.")
@click.option("--source-lang", default="de", show_default=True)
@click.option("--target-lang", default="en", show_default=True)
@click.option("--vocab-size", default=1000, show_default=True, help="Joint sentencepiece vocabulary size.")
@click.option("--max-train-lines", type=int, default=None, help="Use only the first N training pairs.")
@click.option("--max-test-lines", type=int, default=None, help="Use only the first N test pairs.")
@click.option("--lowercase/--keep-case", default=True, show_default=True, help="Lowercase, as the paper's IWSLT'14 pipeline.")
@click.option("--workers", default=2, show_default=True)
@click.option("--download", is_flag=True,
              help="Without --corpus, when the shipped Multi30k is missing: fetch it (checked) into ~/.cache/intradist.")  # fmt: skip
def prepare_translation(corpus: Optional[Path], out: Path, source_lang: str, target_lang: str, vocab_size: int,
                        max_train_lines: Optional[int], max_test_lines: Optional[int], lowercase: bool,
                        workers: int, download: bool) -> None:  # fmt: skip
    """Sentencepiece + fairseq-preprocess for a parallel corpus (reused when already prepared)."""
    try:
        config = PrepareConfig(source_lang, target_lang, vocab_size, max_train_lines, max_test_lines, lowercase)
        done = prepare(corpus or multi30k_corpus(allow_download=download), out, config, workers=workers)
    except UserError as error:
        fail("intradist-prepare-translation", error)
    click.echo(f"prepared {done}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data_bin", type=click.Path(path_type=Path))
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("--beam", default=5, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--cpu", is_flag=True, help="Translate on the CPU even when a GPU is present.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Append the result as a JSON line.")
def evaluate_translation(data_bin: Path, checkpoint: Path, split: str, beam: int, batch_size: int, cpu: bool,
                         json_out: Optional[Path]) -> None:  # fmt: skip
    """Translate SPLIT of DATA_BIN with CHECKPOINT (beam search) and print sacreBLEU."""
    for path, what in ((data_bin / "prepare.json", "a data-bin made by intradist-prepare-translation"),
                       (checkpoint, "a checkpoint file")):  # fmt: skip
        if not path.is_file():
            fail("intradist-evaluate-translation", UserError(f"{path}: not found; expected {what}"))
    try:
        scored = translate_and_score(data_bin, checkpoint, split=split, beam=beam, batch_size=batch_size, cpu=cpu,
                                     user_dir=USER_DIR)  # fmt: skip
    except RuntimeError as error:  # fairseq-generate refused the checkpoint or the data
        last_line = str(error).strip().splitlines()[-1]
        fail("intradist-evaluate-translation", UserError(f"{checkpoint}: fairseq-generate failed: {last_line}"))
    click.echo(f"BLEU {scored['bleu']:.2f}\nsacreBLEU signature: {scored['signature']}")
    if json_out is not None:
        record = {"checkpoint": str(checkpoint), "split": split, "beam": beam, "bleu": scored["bleu"],
                  "signature": scored["signature"]}  # fmt: skip
        with open(json_out, "a") as handle:
            handle.write(json.dumps(record) + "\n")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("criterion", type=click.Choice(["intra_distillation", "label_smoothed_kd", "self_distillation"]))
@click.option("--task", default="translation_intra_distillation", show_default=True,
              help="The task whose flags to list beside the criterion's.")  # fmt: skip
def fairseq_flags(criterion: str, task: str) -> None:
    """List the fairseq flags of one of this plugin's criterions (and a task), with their help.

    fairseq 0.12's ``fairseq-train --help`` prints its help before it adds any criterion's or
    task's own flags (for its built-in criterions too), so they never appear there.
    """
    import argparse

    import user_dir  # noqa: F401  (registers the plugin)
    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    if task not in TASK_REGISTRY:
        fail("intradist-fairseq-flags", UserError(f"--task {task}: not a registered fairseq task"))
    parser = argparse.ArgumentParser(
        prog=f"fairseq-train DATA --user-dir user_dir --task {task} --criterion {criterion}", add_help=False
    )
    TASK_REGISTRY[task].add_args(parser.add_argument_group(f"task {task}"))
    CRITERION_REGISTRY[criterion].add_args(parser)
    click.echo(parser.format_help())
