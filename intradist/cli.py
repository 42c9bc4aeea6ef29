"""``intradist``: the one command family of the toolkit (``analyze-sensitivity`` stays its own command).

Every subcommand lives with the code it runs (a trainer's command in its trainer module, a study's
in its study); this module only names them. They are imported when one runs, so
``intradist --help`` answers at once instead of importing transformers, torchvision and fairseq.
A user mistake anywhere below raises :class:`intradist.errors.UserError`, which click prints as
one line (``intradist train glue: --task XYZ: ...``) with exit status 2.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import click

from intradist.errors import UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class LazyGroup(click.Group):
    """A click group whose subcommands are ``"module:attribute"`` names, imported only when one runs.

    Each entry carries its one-line help, so listing the commands imports nothing.
    """

    def __init__(self, *args, lazy: Optional[Mapping[str, Tuple[str, str]]] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: Dict[str, Tuple[str, str]] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, _, attribute = self.lazy[name][0].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy[name][1]))
            else:
                rows.append((name, self.commands[name].get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group("intradist", cls=LazyGroup, context_settings=CONTEXT, lazy={
    "quickstart": ("intradist.studies.quickstart:main",
                   "Baseline vs intra-distillation on Multi30k in minutes: BLEU, balance, an HTML report."),
    "analyze": ("intradist.analysis.cli:main", "Parameter sensitivity and balance of checkpoints (= analyze-sensitivity)."),
})  # fmt: skip
def cli() -> None:
    """Intra-distillation and parameter-sensitivity analysis (Xu, Koehn & Murray, EMNLP 2022).

    \b
    Start here:   intradist quickstart
    The recipes:  intradist train glue --config configs/glue/rte_intra.yaml   (docs/fidelity.md)
    Every command answers --help.
    """


@cli.group(cls=LazyGroup, context_settings=CONTEXT, lazy={
    "translation": ("intradist.prepare.translation:command",
                    "Sentencepiece + fairseq-preprocess for a parallel corpus (default: the shipped Multi30k)."),
    "iwslt14": ("intradist.prepare.iwslt14:main", "IWSLT'14 XX-En as the paper prepares it, into fairseq data-bins."),
    "xtreme": ("intradist.prepare.xtreme.command:main",
               "PAN-X and TyDiQA-GoldP into the files `intradist train xtreme` reads."),
})  # fmt: skip
def prepare() -> None:
    """Prepare data sets."""


@cli.group(cls=LazyGroup, context_settings=CONTEXT, lazy={
    "glue": ("intradist.trainers.glue:main", "Fine-tune a transformers encoder on a GLUE task."),
    "xtreme": ("intradist.trainers.xtreme:main", "Zero-shot cross-lingual transfer: PAN-X NER or TyDiQA-GoldP."),
    "vision": ("intradist.trainers.vision:train_command", "Train a torchvision image classifier."),
    "vision-grid": ("intradist.trainers.vision:grid_command",
                    "The reproduction's grid: intra-distillation x self-distillation x label smoothing."),
    "translation": ("intradist.recipes.translation:main", "The paper's IWSLT'14 translation recipe (fairseq)."),
    "self-distill": ("intradist.recipes.self_distill:main", "Rounds of fairseq self-distillation, each taught by the last."),
})  # fmt: skip
def train() -> None:
    """Train models: the transformers, torchvision and fairseq recipes."""


@cli.group(cls=LazyGroup, context_settings=CONTEXT, lazy={
    "translation": ("intradist.recipes.translation:evaluate_checkpoint",
                    "Translate a split with a checkpoint (beam search) and print sacreBLEU."),
    "run": ("intradist.recipes.translation:evaluate_main", "Score a run of `intradist train translation` on its test set."),
})  # fmt: skip
def evaluate() -> None:
    """Evaluate trained models."""


@cli.group(cls=LazyGroup, context_settings=CONTEXT, lazy={
    "cpu": ("intradist.studies.cpu_study:main",
            "Multi30k: baseline vs intra-distillation at equal updates and equal time, several seeds."),
    "balance": ("intradist.studies.balance.command:main",
                "Self-distillation rounds vs intra-distillation: score and parameter balance."),
})  # fmt: skip
def study() -> None:
    """Studies that train and compare several models."""


@cli.group(context_settings=CONTEXT)
def results() -> None:
    """Tables of results: methods x pairs, tasks or languages, mean ± std over seeds."""


_PATHS = click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
_OUT = click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the table to this file (a new one, or one an earlier run wrote).")


@results.command("translation", context_settings=CONTEXT)
@_PATHS
@_OUT
def translation_results(paths: Sequence[Path], out: Optional[Path]) -> None:
    """Methods × language pairs, BLEU mean ± std over seeds, from evaluation JSON lines (the paper's beside)."""
    from intradist.results import check_table_out, emit_table, translation_table_of

    check_table_out(out, paths)
    emit_table(translation_table_of(paths), out)


@results.command("glue", context_settings=CONTEXT)
@_PATHS
@_OUT
def glue_results(paths: Sequence[Path], out: Optional[Path]) -> None:
    """Methods × GLUE tasks, 100 × mean ± std over seeds, from runs (JSON lines, metrics.json files or folders)."""
    from intradist.results import check_table_out, emit_table, glue_table_of

    check_table_out(out, paths)
    emit_table(glue_table_of(paths), out)


@results.command("xtreme", context_settings=CONTEXT)
@_PATHS
@click.option("--metric", default=None, help="f1, exact_match, precision or recall [default: the task's: f1].")
@_OUT
def xtreme_results(paths: Sequence[Path], metric: Optional[str], out: Optional[Path]) -> None:
    """Per task, methods × languages and their average, mean ± std over seeds, from runs."""
    from intradist.results import check_table_out, emit_table, xtreme_tables_of

    check_table_out(out, paths)
    emit_table(xtreme_tables_of(paths, metric), out)


@results.command("balance", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="RUN_OR_LOG...")
@click.option("--labels", default=None, help="Comma-separated names of the runs [default: their folders' names].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the figure (.png, .pdf or .svg): one panel per statistic, one line per run against the update.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def balance_results(paths: Sequence[Path], labels: Optional[str], out: Optional[Path], overwrite: bool) -> None:
    """Balance during training: what --log-balance-every logged (std, cv, Gini, top-1 % share), several runs side by side.

    Each RUN_OR_LOG is a run folder holding balance_log.jsonl (intradist train glue/xtreme/vision
    --out, a fairseq --save-dir) or such a file. Prints the last record of each run; --out plots
    every record against the update.
    """
    from intradist.analysis.balance_log import check_figure_out, last_records_table, plot_runs, read_runs

    if out is not None:
        check_figure_out(out, paths, overwrite)
    names = None if labels is None else [name.strip() for name in labels.split(",") if name.strip()]
    runs = read_runs(paths, names)
    click.echo(last_records_table(runs))
    if out is not None:
        click.echo(f"figure: {plot_runs(runs, out)}")


@cli.command("fairseq-flags", context_settings=CONTEXT)
@click.argument("criterion", type=click.Choice(["intra_distillation", "label_smoothed_kd", "self_distillation"]))
@click.option("--task", default="translation", show_default=True,
              help="The task whose flags to list beside the criterion's.")  # fmt: skip
def fairseq_flags(criterion: str, task: str) -> None:
    """List the fairseq flags of one of the plugin's criterions (and a task), with their help.

    fairseq 0.12's ``fairseq-train --help`` prints its help before it adds any criterion's or
    task's own flags (for its built-in criterions too), so they never appear there.
    """
    import argparse

    from fairseq.criterions import CRITERION_REGISTRY
    from fairseq.tasks import TASK_REGISTRY

    from intradist.analysis.loaders.fairseq_checkpoint import register_fairseq_plugin

    register_fairseq_plugin()
    if task not in TASK_REGISTRY:
        raise UserError(f"--task {task}: not a registered fairseq task")
    parser = argparse.ArgumentParser(
        prog=f"fairseq-train DATA --user-dir user_dir --task {task} --criterion {criterion}", add_help=False
    )
    TASK_REGISTRY[task].add_args(parser.add_argument_group(f"task {task}"))
    CRITERION_REGISTRY[criterion].add_args(parser)
    click.echo(parser.format_help())


def main() -> None:
    cli(prog_name="intradist")
