"""The quick start: baseline vs intra-distillation on the shipped Multi30k De->En data, BLEU and balance.

Prepares sentencepiece + fairseq binaries (reused on later runs), trains the same small
transformer with fairseq's ``label_smoothed_cross_entropy`` and with this project's
``intra_distillation`` for the same number of updates, translates the test set with beam
search and scores it with sacreBLEU. Then the paper's other half: the Taylor sensitivities of
both models on the same validation batches, raw and loss-normalized, and their balance
statistics (:mod:`analysis`), with the full comparison report (HTML, markdown, JSON) in
``OUT/sensitivity/``. Writes ``results.json`` and ``results.md``: one table of both halves.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import click

from intradist.analysis.batches import BatchOptions
from intradist.analysis.pipeline import AnalysisOptions, analyze
from intradist.analysis.report import read_balance
from intradist.errors import UserError
from intradist.recipes.fairseq_runs import MODEL_ARGS, USER_DIR, timed, train, training_args
from intradist.paths import REPO_ROOT, corpus_dir
from intradist.prepare.translation import PrepareConfig, prepare, translate_and_score
from intradist.run_folder import RunFolder


@dataclass(frozen=True)
class Method:
    """One row of the quick start's table: a name and the fairseq flags that select it."""

    name: str
    criterion_args: List[str]


def methods(passes: int, alpha: float, adaptive: bool) -> List[Method]:
    intra = ["--task", "translation_intra_distillation", "--criterion", "intra_distillation",
             "--num-passes", str(passes), "--alpha", str(alpha)]  # fmt: skip
    if adaptive:
        intra += ["--adaptive-alpha", "1"]
    return [
        Method("baseline", ["--task", "translation", "--criterion", "label_smoothed_cross_entropy"]),
        Method(f"intra-distillation (K={passes}, α={alpha:g}{', adaptive' if adaptive else ''})", intra),
    ]


#: The balance statistics of the table (intradist.analysis.balance): the paper's std and three scale-free ones.
TABLE_STATISTICS = (("std", "std", ".3g"), ("cv", "CV", ".3f"), ("gini", "Gini", ".4f"), ("top1_share", "top-1 %", ".3f"))
NORMALIZATIONS = (("raw", "raw"), ("loss-normalized", "loss-norm."))
TABLE_NOTE = (
    "Balance: Taylor sensitivities |θ ∂L/∂θ| of every parameter on the same validation batches; std is the "
    "paper's statistic, CV = std/mean, Gini 0 = all equal, top-1 % = share of the total held by the 1 % most "
    "sensitive parameters; smaller is more balanced. loss-norm. divides by the model's mean loss on the batches."
)


#: The command, and the marker its output folder carries (intradist.run_folder).
COMMAND = "intradist quickstart"


def markdown_table(rows: List[Dict[str, object]]) -> str:
    """Method by method: updates, time, tokens/s, BLEU, and each balance statistic raw and loss-normalized."""
    header = ["method", "updates", "wall time (s)", "tokens/s", "BLEU"]
    header += [f"{name} ({short})" for _, short in NORMALIZATIONS for _, name, _ in TABLE_STATISTICS]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = [row["method"], str(row["updates"]), f"{row['wall_seconds']:.0f}", f"{row['tokens_per_second']:.0f}",
                 f"{row['bleu']:.2f}"]  # fmt: skip
        cells += [format(row["balance"][normalization][key], spec)
                  for normalization, _ in NORMALIZATIONS for key, _, spec in TABLE_STATISTICS]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_quickstart(
    out: Path,
    updates: int,
    passes: int,
    alpha: float,
    adaptive_alpha: bool,
    cpu: bool,
    vocab_size: int,
    max_tokens: int,
    train_lines: Optional[int],
    test_lines: Optional[int],
    seed: int,
    analysis_batches: int = 20,
) -> List[Dict[str, object]]:
    """Run the whole quick start and return its table rows (also written under ``out``, complete or not at all)."""
    if updates <= 0:
        raise UserError(f"--updates must be positive, got {updates}")
    if passes < 2:
        raise UserError(f"--passes must be at least 2, got {passes}")
    if alpha < 0:
        raise UserError(f"--alpha must be at least 0, got {alpha}")
    folder = RunFolder(out, COMMAND, replace_earlier=True).check()  # before any work; an earlier quick start is replaced
    with folder as run:
        rows = _run_into(run.staging, out, updates, passes, alpha, adaptive_alpha, cpu, vocab_size, max_tokens,
                         train_lines, test_lines, seed, analysis_batches)  # fmt: skip
        run.commit()
    return rows


def _run_into(work: Path, out: Path, updates: int, passes: int, alpha: float, adaptive_alpha: bool, cpu: bool,
              vocab_size: int, max_tokens: int, train_lines: Optional[int], test_lines: Optional[int], seed: int,
              analysis_batches: int) -> List[Dict[str, object]]:  # fmt: skip
    """The quick start's work, written into ``work`` (the staging folder); paths in the records name ``out``."""
    import torch

    use_gpu = torch.cuda.is_available() and not cpu
    data_config = PrepareConfig(vocab_size=vocab_size, max_train_lines=train_lines, max_test_lines=test_lines)
    runs = methods(passes, alpha, adaptive_alpha)
    steps = 2 + 2 * len(runs)
    click.echo(f"[1/{steps}] preparing Multi30k De->En (sentencepiece {vocab_size}) in {out / 'data-bin'}", err=True)
    if (out / "data-bin" / "prepare.json").is_file():  # an earlier quick start's data: prepare() reuses it if it fits
        shutil.copytree(out / "data-bin", work / "data-bin", dirs_exist_ok=True)
    data_bin = prepare(corpus_dir("multi30k"), work / "data-bin", data_config)

    rows = []
    common = training_args(data_bin, updates, max_tokens, seed, cpu=not use_gpu)
    for index, method in enumerate(runs):
        device = "GPU" if use_gpu else "CPU"
        click.echo(f"[{2 + 2 * index}/{steps}] training {method.name} for {updates} updates on {device}", err=True)
        slug = method.name.split(" ")[0]
        save_dir = work / slug
        log, wall = timed(train, [*common, *method.criterion_args], save_dir, slug, updates)
        click.echo(f"[{3 + 2 * index}/{steps}] translating the test set with {save_dir / 'checkpoint_last.pt'}", err=True)
        scored = translate_and_score(data_bin, save_dir / "checkpoint_last.pt", cpu=not use_gpu, user_dir=USER_DIR)
        (save_dir / "test.hyp").write_text("\n".join(scored["hypotheses"]) + "\n", encoding="utf-8")
        rows.append(
            {
                "method": method.name,
                "criterion_args": method.criterion_args,
                "updates": log.num_updates,
                "wall_seconds": wall,
                "tokens_per_second": log.target_tokens() / (log.training_seconds or wall),
                "bleu": scored["bleu"],
                "sacrebleu_signature": scored["signature"],
                "checkpoint": save_dir / "checkpoint_last.pt",
            }
        )
        click.echo(f"      BLEU {scored['bleu']:.2f}  ({scored['signature']})", err=True)

    click.echo(f"[{steps}/{steps}] parameter sensitivity of both models on the same {analysis_batches} validation "
               f"batches (Taylor, raw and loss-normalized)", err=True)  # fmt: skip
    report_dir = work / "sensitivity"
    batches = BatchOptions(data=data_bin, split="valid", max_batches=analysis_batches, max_tokens=max_tokens, seed=seed,
                           device="cuda" if use_gpu else "cpu")  # fmt: skip
    analyze([row["checkpoint"] for row in rows], AnalysisOptions(framework="fairseq", batches=batches), report_dir,
            labels=[str(row["method"]).split(" ")[0] for row in rows],
            command=f"analyze-sensitivity (quick start, {analysis_batches} validation batches)")  # fmt: skip
    balance = read_balance(report_dir)
    for row in rows:
        row["balance"] = balance[str(row["method"]).split(" ")[0]]
        row["checkpoint"] = str(out / Path(row["checkpoint"]).relative_to(work))  # where it is once committed
    table = markdown_table(rows)
    report = {
        "rows": rows,
        "settings": {"updates": updates, "passes": passes, "alpha": alpha, "adaptive_alpha": adaptive_alpha,
                     "vocab_size": vocab_size, "max_tokens": max_tokens, "train_lines": train_lines,
                     "test_lines": test_lines, "seed": seed, "analysis_batches": analysis_batches,
                     "device": "cuda" if use_gpu else "cpu"},
        "sensitivity_report": str(out / "sensitivity" / "report.html"),
        "model_args": MODEL_ARGS,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "fairseq": importlib.metadata.version("fairseq-fixed"),
                     "sacrebleu": importlib.metadata.version("sacrebleu")},
    }  # fmt: skip
    (work / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (work / "results.md").write_text(
        f"# Quick start: Multi30k De->En test\n\n{table}\n\n{TABLE_NOTE}\n\nsacreBLEU: {rows[0]['sacrebleu_signature']}\n\n"
        f"Sensitivity report: {out / 'sensitivity' / 'report.html'}\n"
    )
    return rows


@click.command(COMMAND, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--updates", default=2500, show_default=True, help="Training updates per method.")
@click.option("--passes", default=2, show_default=True, help="K, stochastic passes of intra-distillation.")
@click.option("--alpha", default=0.3, show_default=True,
              help="Weight of the intra-distillation term (chosen by measurement, see README).")  # fmt: skip
@click.option("--adaptive-alpha/--constant-alpha", default=False, show_default=True, help="Use the paper's alpha schedule.")
@click.option("--out", type=click.Path(path_type=Path), default=REPO_ROOT / "runs" / "quickstart", show_default=True)
@click.option("--cpu", is_flag=True, help="Train on the CPU even when a GPU is present.")
@click.option("--vocab-size", type=click.IntRange(min=10), default=1000, show_default=True, help="Joint sentencepiece vocabulary size.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=2000, show_default=True, help="Tokens per batch.")
@click.option("--train-lines", type=click.IntRange(min=1), default=None, help="Use only the first N training pairs (default: all 29,000).")
@click.option("--test-lines", type=click.IntRange(min=1), default=None, help="Translate only the first N test sentences (default: all 1,000).")
@click.option("--seed", default=1, show_default=True)
@click.option("--analysis-batches", type=click.IntRange(min=1), default=20, show_default=True,
              help="Validation batches of the sensitivity analysis (the same for both models).")
def main(**options) -> None:
    """Baseline vs intra-distillation on the shipped Multi30k De->En data: BLEU and parameter balance.

    Trains both, translates and scores the test set, computes both models' parameter sensitivities
    on the same validation batches and prints one table; the full report is OUT/sensitivity/report.html.
    """
    rows = run_quickstart(**options)
    click.echo("\n" + markdown_table(rows))
    click.echo(f"\n{TABLE_NOTE}")
    click.echo(f"\nsacreBLEU signature: {rows[0]['sacrebleu_signature']}")
    click.echo(f"written: {options['out'] / 'results.json'} and {options['out'] / 'results.md'}")
    click.echo(f"sensitivity report: {options['out'] / 'sensitivity' / 'report.html'}")


if __name__ == "__main__":
    main()
