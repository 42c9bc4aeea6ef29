"""The paper's IWSLT'14 training recipe, one command per (language pair, method).

``intradist train translation LANG METHOD`` trains ``transformer_iwslt_de_en`` on
``data-bin/iwslt14/LANG-en`` with the settings of Xu, Koehn and Murray (EMNLP 2022) and of the
authors' released script (``Machine_Translation/scripts/train.sh`` of fe1ixxu/Intra-Distillation,
every setting with its line in docs/fidelity/iwslt14.yaml): Adam (0.9, 0.98), eps 1e-6, lr 5e-4,
inverse-sqrt with 8,000 warm-up updates, dropout 0.3, attention dropout 0.1, weight decay 1e-4,
label smoothing 0.1, 4,096 tokens per batch in multiples of 8 sentences, at most 512 positions,
50,000 updates, early stop after 40 validations without improvement, fp16 with initial loss scale
16 on a GPU; intra-distillation on fairseq's stock ``translation`` task with K = 3, α = 5 and the
adaptive schedule (p = 5, q = 10). Every setting is a flag and an environment variable
(``INTRADIST_`` + the flag's name in capitals, e.g. ``INTRADIST_LR=0.001``); the effective
values are printed at start and saved as ``recipe.json`` beside the checkpoints. An interrupted
run resumes from ``checkpoint_last.pt`` when started again.

``--smoke`` swaps in a tiny model, a Multi30k subset and a few updates on the CPU, so that
continuous integration exercises the very same code path; it also batches in multiples of 1
sentence, since fairseq 0.12 drops the last batch of an epoch when its size is not a multiple
(``REQUIRED_BATCH_SIZE_MULTIPLE`` in :mod:`intradist.prepare.translation`), which on tiny data loses a
noticeable share of it.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import click

from intradist.errors import UserError
from intradist.provenance import data_checksums, git_commit, package_versions
from intradist.recipes.fairseq_runs import USER_DIR, train, transformer_args
from intradist.prepare.iwslt14 import SOURCE_LANGS, paper_data
from intradist.paths import REPO_ROOT, corpus_dir
from intradist.prepare.translation import prepare, translate_and_score
from intradist.settings import DistillationSettings, flat_record, settings_from

METHODS = ("baseline", "intra", "kd", "self-distill")
DATA_ROOT = REPO_ROOT / "data-bin" / "iwslt14"
CHECKPOINT_ROOT = REPO_ROOT / "checkpoints" / "iwslt14"

#: The smoke mode's data and model: seconds on a CPU, same commands as the real recipe (the data
#: prepared the authors' way: sentencepiece on every split, its vocabulary as the dictionary).
SMOKE_DATA = replace(paper_data("de", vocab_size=300), max_train_lines=2000, max_test_lines=30)
SMOKE_MODEL = transformer_args(layers=1, embed_dim=32, ffn_dim=64, heads=2)

#: The paper's switches for IWSLT'14: label smoothing 0.1; intra-distillation with K = 3 and α = 5
#: on the adaptive schedule (p = 5, q = 10); KD and self-distillation with β = 0.5 and τ = 1.
PAPER_SWITCHES = DistillationSettings(num_passes=3, alpha=5.0, adaptive_alpha=True, label_smoothing=0.1)

#: The switches a recipe hands to fairseq's criterions and records in ``recipe.json``, in that
#: file's order (the criterions sum the pass divergence over the target positions themselves).
RECIPE_SWITCHES = ("label_smoothing", "num_passes", "alpha", "adaptive_alpha", "alpha_p", "alpha_q", "divergence",
                   "teacher", "kd_weight", "kd_temperature")  # fmt: skip


@dataclass
class Recipe:
    """Every setting of one training run; saved as ``recipe.json`` beside its checkpoints."""

    lang: str
    method: str
    data: str
    save_dir: str
    seed: int = 1
    arch: str = "transformer_iwslt_de_en"
    lr: float = 5e-4
    warmup_updates: int = 8000
    max_updates: int = 50000
    max_tokens: int = 4096
    update_freq: int = 1
    required_batch_size_multiple: int = 8
    max_positions: int = 512
    patience: int = 40
    dropout: float = 0.3
    attention_dropout: float = 0.1
    weight_decay: float = 1e-4
    distillation: DistillationSettings = PAPER_SWITCHES
    fairseq_extra: str = ""
    fp16_init_scale: int = 16
    ddp_backend: str = "no_c10d"
    fp16: bool = False
    cpu: bool = False
    smoke: bool = False

    @property
    def pair(self) -> str:
        return f"{self.lang}-en"

    def criterion_args(self) -> List[str]:
        """The task and criterion flags that select ``method``."""
        switches = self.distillation
        smoothing = ["--label-smoothing", str(switches.label_smoothing)]
        if self.method == "baseline":
            return ["--task", "translation", "--criterion", "label_smoothed_cross_entropy", *smoothing]
        if self.method == "intra":
            return ["--task", "translation", "--criterion", "intra_distillation", *smoothing,
                    "--num-passes", str(switches.num_passes), "--alpha", str(switches.alpha),
                    "--adaptive-alpha", str(int(switches.adaptive_alpha)), "--alpha-p", str(switches.alpha_p),
                    "--alpha-q", str(switches.alpha_q), "--divergence", switches.divergence]  # fmt: skip
        criterion = "label_smoothed_kd" if self.method == "kd" else "self_distillation"
        return ["--task", "translation", "--criterion", criterion, *smoothing, "--teacher-path", str(switches.teacher),
                "--kd-weight", str(switches.kd_weight), "--kd-temperature", str(switches.kd_temperature)]  # fmt: skip

    def fairseq_args(self) -> List[str]:
        """The whole ``fairseq-train`` command line but ``--save-dir``."""
        model = SMOKE_MODEL if self.smoke else ["--arch", self.arch]
        return [self.data, "--user-dir", str(USER_DIR), *model, *self.criterion_args(),
                "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-06",
                "--lr", str(self.lr), "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(self.warmup_updates),
                "--dropout", str(self.dropout), "--attention-dropout", str(self.attention_dropout),
                "--weight-decay", str(self.weight_decay), "--max-tokens", str(self.max_tokens),
                "--update-freq", str(self.update_freq), "--max-update", str(self.max_updates),
                "--required-batch-size-multiple", str(self.required_batch_size_multiple),
                "--max-source-positions", str(self.max_positions), "--max-target-positions", str(self.max_positions),
                "--patience", str(self.patience), "--ddp-backend", self.ddp_backend,
                "--seed", str(self.seed), "--no-epoch-checkpoints", "--keep-interval-updates", "1",
                "--skip-invalid-size-inputs-valid-test", "--log-format", "json",
                "--log-interval", "1" if self.smoke else "100",
                *(["--fp16", "--fp16-init-scale", str(self.fp16_init_scale)] if self.fp16 else []),
                *(["--cpu"] if self.cpu else []),
                *shlex.split(self.fairseq_extra)]  # fmt: skip


def smoke_root() -> Path:
    """Where smoke runs go: ``$INTRADIST_SMOKE_DIR``, else ``runs/smoke`` of the repository."""
    override = os.environ.get("INTRADIST_SMOKE_DIR")
    return Path(override) if override else REPO_ROOT / "runs" / "smoke"


def default_paths(lang: str, method: str, seed: int, smoke: bool) -> Tuple[Path, Path]:
    """(data-bin, save dir) for a run: ``data-bin/iwslt14/LANG-en`` and ``checkpoints/iwslt14/LANG-en/METHOD-seedS``."""
    if smoke:
        return smoke_root() / "data-bin", smoke_root() / "checkpoints" / f"{method}-seed{seed}"
    return DATA_ROOT / f"{lang}-en", CHECKPOINT_ROOT / f"{lang}-en" / f"{method}-seed{seed}"


def smoke_data() -> Path:
    """The smoke mode's data: a Multi30k subset as a tiny data-bin (prepared once, then reused)."""
    return prepare(corpus_dir("multi30k"), smoke_root() / "data-bin", SMOKE_DATA)


def resolve_teacher(recipe: Recipe) -> None:
    """Fill in and check the teacher of ``kd`` and ``self-distill``.

    Self-distillation defaults to the baseline of the same pair and seed; in smoke mode that
    baseline is trained first when missing. Knowledge distillation needs ``--teacher``.
    """
    if recipe.method not in ("kd", "self-distill"):
        return
    if recipe.distillation.teacher is None:
        if recipe.method == "kd":
            raise UserError("METHOD kd needs --teacher CHECKPOINT (a stronger model of the same pair)")
        baseline_dir = default_paths(recipe.lang, "baseline", recipe.seed, recipe.smoke)[1]
        teacher = baseline_dir / "checkpoint_best.pt"
        if recipe.smoke and not teacher.is_file():
            click.echo("smoke: training the baseline teacher first", err=True)
            run_recipe(replace(recipe, method="baseline", save_dir=str(baseline_dir)))
        recipe.distillation = replace(recipe.distillation, teacher=str(teacher))
    if not Path(recipe.distillation.teacher).is_file():
        raise UserError(f"--teacher {recipe.distillation.teacher}: no such checkpoint "
                        f"(train `baseline` first, or pass --teacher)")  # fmt: skip


def run_recipe(recipe: Recipe) -> Path:
    """Train one run of the recipe (resuming an interrupted one); returns its save dir."""
    if not (Path(recipe.data) / "dict.en.txt").is_file():
        raise UserError(f"{recipe.data}: not a prepared data-bin (run `bash data_prep/iwslt14.sh` first, or pass --data)")
    resolve_teacher(recipe)
    save_dir = Path(recipe.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    settings = json.dumps(flat_record(recipe, RECIPE_SWITCHES), indent=2)
    click.echo(f"recipe ({save_dir / 'recipe.json'}):\n{settings}", err=True)
    (save_dir / "recipe.json").write_text(settings + "\n")
    provenance = {"git_commit": git_commit(), "seed": recipe.seed, "data": data_checksums(Path(recipe.data)),
                  "versions": package_versions(("torch", "fairseq-fixed", "sacrebleu", "intradist"))}  # fmt: skip
    (save_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    train(recipe.fairseq_args(), save_dir, f"{recipe.pair} {recipe.method}", recipe.max_updates, resume=True)
    return save_dir


def _recipe_option(name: str, default, help_text: str, **kwargs):
    return click.option(f"--{name}", default=default, show_default=True, help=help_text, show_envvar=True, **kwargs)


@click.command("intradist train translation",
               context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "INTRADIST"})
@click.argument("lang", required=False)
@click.argument("method", required=False, type=click.Choice(METHODS))
# Paths and switches are flags only: INTRADIST_DATA already names the corpus folder (intradist.paths).
@click.option("--smoke", is_flag=True, allow_from_autoenv=False, help="Tiny model, Multi30k subset, a few CPU updates (for CI).")
@click.option("--data", type=click.Path(path_type=Path), default=None, allow_from_autoenv=False,
              help="Data-bin [default: data-bin/iwslt14/LANG-en].")  # fmt: skip
@click.option("--save-dir", type=click.Path(path_type=Path), default=None, allow_from_autoenv=False,
              help="[default: checkpoints/iwslt14/LANG-en/METHOD-seedSEED]")  # fmt: skip
@_recipe_option("seed", 1, "Random seed.")
@_recipe_option("arch", "transformer_iwslt_de_en", "fairseq architecture.")
@_recipe_option("lr", 5e-4, "Peak learning rate.")
@_recipe_option("warmup-updates", 8000, "Linear warm-up updates of the inverse-sqrt schedule.")
@_recipe_option("max-updates", 50000, "Training updates.")
@_recipe_option("max-tokens", 4096, "Tokens per batch (per GPU).")
@_recipe_option("update-freq", 1, "Gradient accumulation steps.")
@_recipe_option("required-batch-size-multiple", 8,
                "Sentences per batch in multiples of this (fairseq's default; --smoke: 1).")  # fmt: skip
@_recipe_option("max-positions", 512, "Longest source and target (tokens): longer training pairs are skipped.")
@_recipe_option("patience", 40, "Stop after this many validations without a better validation loss (-1: never).")
@_recipe_option("dropout", 0.3, "Dropout.")
@_recipe_option("attention-dropout", 0.1, "Attention dropout.")
@_recipe_option("weight-decay", 1e-4, "Adam weight decay.")
@_recipe_option("label-smoothing", PAPER_SWITCHES.label_smoothing, "Label smoothing epsilon.")
@_recipe_option("num-passes", PAPER_SWITCHES.num_passes, "intra: K, stochastic passes per update.")
@_recipe_option("alpha", PAPER_SWITCHES.alpha, "intra: weight of the pass divergence.")
@_recipe_option("adaptive-alpha/--constant-alpha", PAPER_SWITCHES.adaptive_alpha, "intra: the paper's schedule for alpha.")
@_recipe_option("alpha-p", PAPER_SWITCHES.alpha_p, "intra: schedule parameter p.")
@_recipe_option("alpha-q", PAPER_SWITCHES.alpha_q, "intra: schedule parameter q.")
@_recipe_option("divergence", PAPER_SWITCHES.divergence, "intra: x (the paper's) or js.", type=click.Choice(["x", "js"]))
@_recipe_option("teacher", PAPER_SWITCHES.teacher,
                "kd/self-distill: teacher checkpoint [self-distill default: the baseline's best].")  # fmt: skip
@_recipe_option("kd-weight", PAPER_SWITCHES.kd_weight, "kd/self-distill: weight beta of the distillation term.")
@_recipe_option("kd-temperature", PAPER_SWITCHES.kd_temperature, "kd/self-distill: softmax temperature.")
@_recipe_option("fairseq-extra", "", "More fairseq-train flags, appended last (they win), e.g. '--clip-norm 0.5'.")
@_recipe_option("fp16-init-scale", 16, "Initial loss scale of fp16 training.")
@_recipe_option("ddp-backend", "no_c10d", "fairseq's data-parallel backend with several GPUs.")
@click.option("--fp16/--no-fp16", default=None, allow_from_autoenv=False, help="Half precision [default: on with a GPU].")
@click.option("--cpu", is_flag=True, allow_from_autoenv=False, help="Train on the CPU even when a GPU is present.")
def main(lang: Optional[str], method: Optional[str], smoke: bool, data: Optional[Path], save_dir: Optional[Path],
         fp16: Optional[bool], cpu: bool, **settings) -> None:  # fmt: skip
    """Train METHOD (baseline, intra, kd, self-distill) on IWSLT'14 LANG->en with the paper's recipe.

    LANG is one of ar, de, es, fa, he, it, nl, pl. Example: `intradist train translation de intra`.
    """
    saved = run_recipe(build_recipe(lang, method, smoke, data, save_dir, fp16, cpu, settings))
    click.echo(f"checkpoints in {saved}")


def build_recipe(lang: Optional[str], method: Optional[str], smoke: bool, data: Optional[Path],
                 save_dir: Optional[Path], fp16: Optional[bool], cpu: bool, settings: Dict[str, object]) -> Recipe:  # fmt: skip
    """Validate the command line and apply the smoke-mode and device defaults.

    ``settings`` are the recipe's other flags; its distillation switches become the recipe's
    :class:`DistillationSettings` (the paper's where not given), validated there.
    """
    import torch

    method = method or ("baseline" if smoke else None)
    lang = lang or ("de" if smoke else None)
    if lang is None or method is None:
        raise UserError("usage: intradist train translation LANG METHOD (see --help)")
    if lang not in SOURCE_LANGS:
        raise UserError(f"LANG {lang!r}: not an IWSLT'14 pair of the paper; choose from {', '.join(SOURCE_LANGS)}")
    distillation = settings_from(settings, base=PAPER_SWITCHES)
    default_data, default_save = default_paths(lang, method, int(settings["seed"]), smoke)
    if smoke:
        data = data or smoke_data()
        cpu = True
        settings.update(max_updates=min(int(settings["max_updates"]), 8), warmup_updates=4, max_tokens=1000,
                        required_batch_size_multiple=1)
    use_gpu = torch.cuda.is_available() and not cpu
    return Recipe(lang=lang, method=method, data=str(data or default_data), save_dir=str(save_dir or default_save),
                  distillation=distillation, fp16=use_gpu if fp16 is None else fp16, cpu=not use_gpu, smoke=smoke,
                  **settings)  # fmt: skip


def evaluate_run(save_dir: Path, checkpoint_name: str, json_out: Optional[Path], lang: Optional[str], cpu: bool) -> Dict[str, object]:
    """Translate the test set with one run's checkpoint and append the scored record to ``json_out``.

    ``json_out`` defaults to ``results/iwslt14.jsonl``, or ``runs/smoke/results.jsonl`` for a smoke run.
    """
    import torch

    recipe_path = save_dir / "recipe.json"
    if not recipe_path.is_file():
        raise UserError(f"{save_dir}: no recipe.json; expected a folder written by intradist train translation")
    recipe = json.loads(recipe_path.read_text())
    if lang is not None and lang != recipe["lang"]:
        raise UserError(f"{recipe_path}: trained on {recipe['lang']}-en, not {lang}-en")
    checkpoint = save_dir / checkpoint_name
    if not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no such checkpoint (has the run finished a validation?)")
    use_gpu = torch.cuda.is_available() and not cpu
    scored = translate_and_score(Path(recipe["data"]), checkpoint, cpu=not use_gpu, user_dir=USER_DIR)
    json_out = json_out or (smoke_root() / "results.jsonl" if recipe["smoke"] else REPO_ROOT / "results" / "iwslt14.jsonl")
    record = {"corpus": "multi30k-smoke" if recipe["smoke"] else "iwslt14", "pair": f"{recipe['lang']}-en",
              "method": recipe["method"], "seed": recipe["seed"], "checkpoint": str(checkpoint),
              "beam": 5, "lenpen": 1.0, "bleu": scored["bleu"], "signature": scored["signature"],
              "results_file": str(json_out)}  # fmt: skip
    json_out.parent.mkdir(parents=True, exist_ok=True)
    with open(json_out, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    (save_dir / f"{checkpoint.stem}.test.hyp").write_text("\n".join(scored["hypotheses"]) + "\n", encoding="utf-8")
    return record


@click.command("intradist evaluate run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint_dir", type=click.Path(path_type=Path), required=False)
@click.option("--lang", default=None, help="Check that the run was trained on LANG-en.")
@click.option("--checkpoint", "checkpoint_name", default="checkpoint_best.pt", show_default=True,
              help="Which checkpoint of the folder (the authors evaluate the best validation loss).")  # fmt: skip
@click.option("--json-out", type=click.Path(path_type=Path), default=None,
              help="JSON-lines file to append to [default: results/iwslt14.jsonl; smoke runs: runs/smoke/results.jsonl].")  # fmt: skip
@click.option("--smoke", is_flag=True, help="Evaluate the smoke run (train it with `train.sh --smoke`).")
@click.option("--cpu", is_flag=True, help="Translate on the CPU even when a GPU is present.")
def evaluate_main(checkpoint_dir: Optional[Path], lang: Optional[str], checkpoint_name: str,
                  json_out: Optional[Path], smoke: bool, cpu: bool) -> None:  # fmt: skip
    """Translate the test set of a run of intradist train translation (beam 5, length penalty 1) and score it.

    Decodes sentencepiece, scores the detokenized output with sacreBLEU against the untokenized
    reference, prints the score with its signature and appends one JSON line per run.
    """
    if checkpoint_dir is None and not smoke:
        raise UserError("usage: intradist evaluate run CHECKPOINT_DIR (see --help)")
    checkpoint_dir = checkpoint_dir or default_paths("de", "baseline", 1, smoke=True)[1]
    record = evaluate_run(checkpoint_dir, checkpoint_name, json_out, lang, cpu)
    click.echo(f"{record['pair']} {record['method']} seed {record['seed']}: BLEU {record['bleu']:.2f}")
    click.echo(f"sacreBLEU signature: {record['signature']}")
    click.echo(f"appended to {record['results_file']}")


if __name__ == "__main__":
    main()


@click.command("intradist evaluate translation", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data_bin", type=click.Path(path_type=Path))
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True)
@click.option("--beam", default=5, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--cpu", is_flag=True, help="Translate on the CPU even when a GPU is present.")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="Append the result as a JSON line.")
def evaluate_checkpoint(data_bin: Path, checkpoint: Path, split: str, beam: int, batch_size: int, cpu: bool,
                         json_out: Optional[Path]) -> None:  # fmt: skip
    """Translate SPLIT of DATA_BIN with CHECKPOINT (beam search) and print sacreBLEU."""
    for path, what in ((data_bin / "prepare.json", "a data-bin made by intradist prepare translation"),
                       (checkpoint, "a checkpoint file")):  # fmt: skip
        if not path.is_file():
            raise UserError(f"{path}: not found; expected {what}")
    try:
        scored = translate_and_score(data_bin, checkpoint, split=split, beam=beam, batch_size=batch_size, cpu=cpu,
                                     user_dir=USER_DIR)  # fmt: skip
    except RuntimeError as error:  # fairseq-generate refused the checkpoint or the data
        last_line = str(error).strip().splitlines()[-1]
        raise UserError(f"{checkpoint}: fairseq-generate failed: {last_line}") from None
    click.echo(f"BLEU {scored['bleu']:.2f}\nsacreBLEU signature: {scored['signature']}")
    if json_out is not None:
        record = {"checkpoint": str(checkpoint), "split": split, "beam": beam, "bleu": scored["bleu"],
                  "signature": scored["signature"]}  # fmt: skip
        with open(json_out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
