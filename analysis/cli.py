"""``analyze-sensitivity``: parameter sensitivity and contribution balance of checkpoints of any framework."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

EXAMPLES = """
\b
Examples:
  analyze-sensitivity checkpoints/checkpoint_best.pt --data data-bin --split valid
  analyze-sensitivity base.pt intra.pt --labels baseline,intra --data data-bin --out report
  analyze-sensitivity runs/glue/rte --text-fields sentence1,sentence2 --data dev.tsv
  analyze-sensitivity runs/xtreme/panx --data panx/de/test.tsv
  analyze-sensitivity gpt2-folder --data notes.txt --max-length 256
  analyze-sensitivity runs/vision/pets/model.pt --data pets/test
  analyze-sensitivity resnet.pt --arch resnet18 --num-classes 37 --data pets/val
  analyze-sensitivity model.safetensors --model-factory mymodels:build --batches mydata:batches
  analyze-sensitivity ckpt.pt --method ablation --granularity layer
"""


def _split_list(_ctx, _param, value: Optional[str]) -> Optional[Sequence[str]]:
    return None if value is None else tuple(part.strip() for part in value.split(",") if part.strip())


@click.command("analyze-sensitivity", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               epilog=EXAMPLES)  # fmt: skip
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--labels", callback=_split_list, help="Comma-separated names of the checkpoints in the report.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("sensitivity-report"), show_default=True,
              help="Report folder: new, or an earlier report (replaced whole when the new one is complete).")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Also replace an --out folder that is not an earlier report.")
@click.option("--framework", type=click.Choice(["auto", "fairseq", "transformers", "torchvision", "state_dict"]),
              default="auto", show_default=True)  # fmt: skip
@click.option("--method", type=click.Choice(["taylor", "ablation"]), default="taylor", show_default=True,
              help="taylor: |θ·∂L/∂θ| per parameter; ablation: exact loss change when a group is zeroed.")  # fmt: skip
@click.option("--granularity", type=click.Choice(["parameter", "tensor", "module", "layer", "module_type", "head"]),
              default="tensor", show_default=True, help="Rows of sensitivity.csv (ablation: the groups zeroed).")  # fmt: skip
@click.option("--normalize", type=click.Choice(["none", "loss", "both"]), default="both", show_default=True,
              help="Raw, loss-normalized (each batch's term divided by its loss), or both.")  # fmt: skip
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="fairseq data-bin [default: the checkpoint's]; TSV, JSONL, SQuAD, PAN-X, .txt file; image folder.")  # fmt: skip
@click.option("--split", default="valid", show_default=True, help="fairseq split.")
@click.option("--head", default=None, metavar="HEAD",
              help="transformers head: sequence-classification, token-classification, question-answering, masked-lm, "
                   "causal-lm, seq2seq-lm [default: the folder's config.architectures].")  # fmt: skip
@click.option("--text-fields", callback=_split_list, default=None,
              help="Text column(s) [default: sentence; token-classification tokens; masked-lm, causal-lm text; "
                   "seq2seq-lm source].")  # fmt: skip
@click.option("--label-field", default=None,
              help="Label column [default: label; token-classification ner_tags; seq2seq-lm target].")
@click.option("--max-length", type=click.IntRange(min=1), default=None,
              help="Tokens per text example [default: a train-xtreme run's, else 128; question-answering 384].")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="[default: a train-vision run's, else 224]")
@click.option("--batches", "hook", default=None, help="module:function returning the batches yourself.")
@click.option("--max-batches", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=4096, show_default=True, help="fairseq batches.")
@click.option("--seed", default=1, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--arch", default=None, help="torchvision architecture of a state dict (resnet18, ...).")
@click.option("--num-classes", type=int, default=None, help="Classes of a torchvision model.")
@click.option("--num-labels", type=int, default=None, help="Labels of a new classification head (transformers).")
@click.option("--model-factory", default=None, help="module:function building the model of a plain state dict.")
@click.option("--trust-checkpoint", is_flag=True, help="Allow full unpickling (runs code from the file!).")
@click.option("--no-plots", is_flag=True, help="Only CSV, JSON and markdown.")
def main(checkpoints, labels, out, overwrite, framework, method, granularity, normalize, data, split, head, text_fields,
         label_field, max_length, image_size, hook, max_batches, batch_size, max_tokens, seed, device, arch,
         num_classes, num_labels, model_factory, trust_checkpoint, no_plots) -> None:  # fmt: skip
    """Parameter sensitivity and contribution balance of one or more checkpoints.

    Loads each checkpoint weights-only (fairseq, Hugging Face folder with any of six heads, sharded
    or not, torchvision or plain state dict, safetensors), computes every parameter's sensitivity on
    the same batches and writes
    sensitivity.csv, balance.json, plots, report.md and a self-contained report.html into --out.
    """
    from intradist.analysis.batches import BatchOptions
    from intradist.analysis.pipeline import AnalysisOptions, analyze

    options = AnalysisOptions(
        framework=framework, method=method, granularity=granularity, normalize=normalize,
        trust_checkpoint=trust_checkpoint, arch=arch, num_classes=num_classes, num_labels=num_labels,
        model_factory=model_factory, head=head, plots=not no_plots,
        batches=BatchOptions(data=data, split=split, max_batches=max_batches, batch_size=batch_size,
                             max_tokens=max_tokens, seed=seed, text_fields=text_fields, label_field=label_field,
                             max_length=max_length, image_size=image_size, hook=hook, device=device),
    )  # fmt: skip
    command = "analyze-sensitivity " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    written = analyze(checkpoints, options, out, labels=labels, command=command, overwrite=overwrite)
    click.echo(f"report: {written / 'report.md'}" + ("" if method == "ablation" or no_plots else f" and {written / 'report.html'}"))


if __name__ == "__main__":
    main()
