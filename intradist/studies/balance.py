"""Parameter-balance studies: rounds of self-distillation versus one run of intra-distillation.

The paper's motivating case study (Xu et al. 2022, Sec. 2): the standard deviation of the
parameter sensitivities shrinks over rounds of self-distillation while the model improves, and
intra-distillation is argued to reach that balance in one run. Its reproduction found the raw
statistic contradicting the claim in three of four cases, a loss-normalized one supporting it.
A study here trains

    round 0 (the baseline) -> round 1 (taught by round 0) -> ... -> round R, and intra-distillation,

scores every model (BLEU on the test set, or test accuracy for images), computes the Taylor
sensitivities |θ ∂L/∂θ| of every model on the *same* validation batches, raw and loss-normalized
(:func:`analysis.pipeline.analyze`), and writes one report: ``study.md``, ``study.json`` and
``study.png`` (score and balance per model) beside the full sensitivity report in ``analysis/``.
The claims are checked, not assumed: ``study.md`` says for each statistic and normalization
whether it fell over the rounds and whether intra-distillation is below the baseline.

The rounds are a chain; the intra-distillation model does not depend on it, so with ``--jobs 2``
it trains at the same time, each process on one thread (the sizes of the Multi30k defaults were
chosen for 2 CPU cores; docs/studies/ has the measured times).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import click

from intradist.errors import UserError

#: The statistics the study checks (the paper's std, and two scale-free ones), best when small.
CHECKED_STATISTICS = ("std", "cv", "gini")
NORMALIZATIONS = ("raw", "loss-normalized")


@dataclass
class StudyModel:
    """One trained model of a study and how good it is."""

    label: str  # round0, round1, ..., intra
    kind: str  # baseline, self-distill, intra
    round: Optional[int]  # None for intra-distillation
    teacher: Optional[str]  # label of the teacher
    checkpoint: str
    score: float  # BLEU or accuracy (percent)
    train_seconds: float
    reused: bool = False  # trained by an earlier invocation into the same folder


# ---------------------------------------------------------------------------------------------
# Training the models: a chain of rounds and, in parallel, intra-distillation


#: Trains and scores one model: (label, kind, round or None, teacher model or None) -> StudyModel.
TrainAndScore = Callable[[str, str, Optional[int], Optional[StudyModel]], StudyModel]


def train_study_models(train_and_score: TrainAndScore, rounds: int, jobs: int) -> List[StudyModel]:
    """Round 0, ``rounds`` self-distillation rounds (each taught by the one before) and intra-distillation.

    The rounds are a chain; the intra-distillation model does not depend on it, so with ``jobs`` 2
    it trains at the same time.
    """

    def chain() -> List[StudyModel]:
        models = [train_and_score("round0", "baseline", 0, None)]
        for round_number in range(1, rounds + 1):
            models.append(train_and_score(f"round{round_number}", "self-distill", round_number, models[-1]))
        return models

    def intra() -> StudyModel:
        return train_and_score("intra", "intra", None, None)

    if jobs == 1:
        return [*chain(), intra()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        rounds_future, intra_future = pool.submit(chain), pool.submit(intra)
        return [*rounds_future.result(), intra_future.result()]


def translation_models(settings: "TranslationStudy", data_bin: Path, out: Path) -> List[StudyModel]:
    """Train and score the rounds and the intra-distillation model with fairseq."""
    from intradist.recipes.fairseq_runs import USER_DIR, timed, train
    from intradist.recipes.fairseq_runs import training_args
    from intradist.prepare.translation import translate_and_score
    from intradist.recipes.translation import Recipe

    def flags(method: str, teacher: Optional[Path]) -> List[str]:
        recipe = Recipe(lang=settings.pair, method=method, data=str(data_bin), save_dir="", seed=settings.seed,
                        max_updates=settings.updates, num_passes=settings.num_passes, alpha=settings.alpha,
                        adaptive_alpha=settings.adaptive_alpha, teacher=str(teacher) if teacher else None,
                        kd_weight=settings.kd_weight, fp16=settings.fp16, cpu=settings.cpu)  # fmt: skip
        if settings.dataset == "iwslt14":  # the paper's whole recipe, at this study's budget
            return recipe.fairseq_args()
        common = training_args(data_bin, settings.updates, settings.max_tokens, settings.seed, settings.cpu)
        return [*common, *recipe.criterion_args()]

    def train_and_score(label: str, kind: str, round_number: Optional[int], teacher: Optional[StudyModel]) -> StudyModel:
        save_dir = out / "models" / label
        teacher_path = Path(teacher.checkpoint) if teacher else None
        reused = (save_dir / "checkpoint_best.pt").is_file()  # a rerun keeps what finished
        if not reused:
            method = {"baseline": "baseline", "self-distill": "self-distill", "intra": "intra"}[kind]
            _, seconds = timed(train, flags(method, teacher_path), save_dir, label, settings.updates)
            (save_dir / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
        seconds = float((save_dir / "train_seconds.txt").read_text())
        checkpoint = save_dir / "checkpoint_best.pt"
        scored = translate_and_score(data_bin, checkpoint, cpu=settings.cpu, user_dir=USER_DIR)
        click.echo(f"{label}: BLEU {scored['bleu']:.2f} ({seconds / 60:.1f} min training)", err=True)
        return StudyModel(label, kind, round_number, teacher.label if teacher else None, str(checkpoint),
                          float(scored["bleu"]), seconds, reused)  # fmt: skip

    return train_study_models(train_and_score, settings.rounds, settings.jobs)


def vision_models(settings: "VisionStudy", out: Path) -> List[StudyModel]:
    """Train and score the rounds and the intra-distillation model with the torchvision trainer."""
    from intradist.settings import DistillationSettings
    from intradist.trainers.vision import VisionConfig, train
    from intradist.trainers.vision_data import load_image_data

    data = load_image_data(settings.data)

    def train_and_score(label: str, kind: str, round_number: Optional[int], teacher: Optional[StudyModel]) -> StudyModel:
        folder = out / "models" / label
        reused = (folder / "metrics.json").is_file()
        if not reused:
            config = VisionConfig(data=settings.data, out=folder, arch=settings.arch, epochs=settings.epochs,
                                  pretrained_weights=settings.pretrained_weights, seed=settings.seed,
                                  dropout=settings.dropout)  # fmt: skip
            distillation = DistillationSettings(
                num_passes=settings.num_passes if kind == "intra" else 1, alpha=settings.alpha,
                adaptive_alpha=settings.adaptive_alpha, teacher=teacher.checkpoint if teacher else None,
                kd_weight=settings.kd_weight,
            )  # fmt: skip
            train(config, distillation, data=data, progress=False)
        metrics = json.loads((folder / "metrics.json").read_text())
        click.echo(f"{label}: test accuracy {100 * metrics['test_accuracy']:.2f}%", err=True)
        return StudyModel(label, kind, round_number, teacher.label if teacher else None, str(folder / "model.pt"),
                          100 * float(metrics["test_accuracy"]), float(metrics["train_seconds"]), reused)  # fmt: skip

    return train_study_models(train_and_score, settings.rounds, settings.jobs)


# ---------------------------------------------------------------------------------------------
# The report


def check_claims(models: Sequence[StudyModel], balance: Dict[str, Dict[str, Dict[str, float]]]) -> List[Dict[str, object]]:
    """For each statistic and normalization: did it fall over the rounds, and is intra below the baseline?

    Smaller is more balanced for every checked statistic. "Falls every round" needs each round
    below the one before; "last round below baseline" compares round R with round 0.
    """
    rounds = sorted((m for m in models if m.round is not None), key=lambda m: m.round)
    intra = next(m for m in models if m.kind == "intra")
    checks = []
    for normalization in NORMALIZATIONS:
        for statistic in CHECKED_STATISTICS:
            values = [balance[m.label][normalization][statistic] for m in rounds]
            intra_value = balance[intra.label][normalization][statistic]
            checks.append({
                "statistic": statistic, "normalization": normalization,
                "rounds": values, "intra": intra_value,
                "falls_every_round": all(b < a for a, b in zip(values, values[1:])),
                "last_round_below_baseline": values[-1] < values[0],
                "intra_below_baseline": intra_value < values[0],
                "intra_below_last_round": intra_value < values[-1],
            })  # fmt: skip
    return checks


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def study_markdown(title: str, models: Sequence[StudyModel], balance, checks, score_name: str, command: str,
                   settings: Dict[str, object], minutes: float) -> str:  # fmt: skip
    """The study's report: models with score and balance, the claims checked, how it was made."""
    from intradist.results import markdown_table

    rows = []
    for m in models:
        raw, normalized = balance[m.label]["raw"], balance[m.label]["loss-normalized"]
        rows.append([m.label, m.kind, m.teacher or "—", f"{m.score:.2f}", f"{m.train_seconds / 60:.1f}",
                     f"{raw['std']:.3g}", f"{raw['cv']:.3f}", f"{raw['gini']:.4f}", f"{raw['top1_share']:.3f}",
                     f"{normalized['std']:.3g}", f"{normalized['cv']:.3f}", f"{normalized['gini']:.4f}"])  # fmt: skip
    header = ["model", "method", "teacher", score_name, "train min", "std (raw)", "CV (raw)", "Gini (raw)",
              "top-1 % (raw)", "std (loss-norm.)", "CV (loss-norm.)", "Gini (loss-norm.)"]  # fmt: skip
    claim_rows = [[c["statistic"], c["normalization"], _yes(c["falls_every_round"]), _yes(c["last_round_below_baseline"]),
                   _yes(c["intra_below_baseline"]), _yes(c["intra_below_last_round"])] for c in checks]  # fmt: skip
    claim_header = ["statistic", "normalization", "falls every round", "last round < baseline",
                    "intra < baseline", "intra < last round"]  # fmt: skip
    reused = [m.label for m in models if m.reused]
    training = sum(m.train_seconds for m in models) / 60
    timing = f"{minutes:.0f} min wall-clock; the models' training took {training:.0f} min in all"
    if reused:
        timing += f", {', '.join(reused)} trained by an earlier invocation into the same folder"
    return "\n".join([
        f"# {title}", "",
        f"Command (run {time.strftime('%Y-%m-%d')}; {timing}):", "", "```bash", command, "```", "",
        "Every model's Taylor sensitivities |θ ∂L/∂θ| were computed on the same batches (validation sentences for "
        "translation, test images for vision); "
        "*loss-normalized* divides each model's sensitivities by its mean loss on them. Smaller std, CV "
        "and Gini mean more evenly contributing parameters. The numbers are as measured.", "",
        "## Models", "", markdown_table(header, rows, align_right_from=3), "",
        "## The paper's claims, checked", "", markdown_table(claim_header, claim_rows, align_right_from=2), "",
        "![score and balance per model](study.png)", "",
        "The full sensitivity report (per layer and module, distributions): `analysis/report.html` of the "
        "study's output folder.", "",
        "## Settings", "", "```json", json.dumps(settings, indent=2), "```", "",
    ])  # fmt: skip


def plot_study(models: Sequence[StudyModel], balance, score_name: str, path: Path) -> None:
    """Score, std (raw and loss-normalized) and Gini per model: the rounds in order, intra-distillation last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m.label for m in models]
    colors = ["#4c72b0" if m.kind != "intra" else "#dd8452" for m in models]
    panels = [(score_name, [m.score for m in models]),
              ("std, raw", [balance[m.label]["raw"]["std"] for m in models]),
              ("std, loss-normalized", [balance[m.label]["loss-normalized"]["std"] for m in models]),
              ("Gini, raw", [balance[m.label]["raw"]["gini"] for m in models])]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for axis, (name, values) in zip(axes, panels):
        axis.bar(labels, values, color=colors)
        axis.set_title(name)
        axis.tick_params(axis="x", rotation=45)
        low, high = min(values), max(values)
        margin = (high - low) * 0.5 or abs(high) * 0.05 or 1.0
        axis.set_ylim(max(0.0, low - margin) if low >= 0 else low - margin, high + margin)
    figure.suptitle("self-distillation rounds (blue) and intra-distillation (orange)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_study(out: Path, title: str, models: List[StudyModel], score_name: str, command: str,
                settings: Dict[str, object], minutes: float) -> Dict[str, object]:  # fmt: skip
    """study.json, study.md and study.png in ``out`` (which holds ``analysis/``)."""
    from analysis.report import read_balance

    balance = read_balance(out / "analysis")
    checks = check_claims(models, balance)
    record = {"title": title, "command": command, "settings": settings, "wall_minutes": round(minutes, 1),
              "score": score_name, "models": [asdict(m) for m in models], "balance": balance, "claims": checks}  # fmt: skip
    plot_study(models, balance, score_name, out / "study.png")
    (out / "study.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "study.md").write_text(study_markdown(title, models, balance, checks, score_name, command, settings, minutes))
    return record


# ---------------------------------------------------------------------------------------------
# The two studies


@dataclass
class Study:
    """What both studies share; each field is a flag of ``intradist study balance``."""

    out: Path
    rounds: int = 2
    num_passes: int = 3
    alpha: float = 0.3
    adaptive_alpha: bool = False
    kd_weight: float = 0.5
    analysis_batches: int = 20
    seed: int = 1
    jobs: int = 2


@dataclass
class TranslationStudy(Study):
    """Settings of ``intradist study balance translation``."""

    dataset: str = "multi30k"  # or iwslt14
    pair: str = "de"  # IWSLT'14 source language
    data_bin: Optional[Path] = None
    updates: int = 8000
    vocab_size: int = 1000
    max_tokens: int = 2000
    cpu: bool = False
    fp16: bool = False


@dataclass
class VisionStudy(Study):
    """Settings of ``intradist study balance vision``."""

    data: str = "digits"
    arch: Optional[str] = None  # intradist train vision's default for the data
    pretrained_weights: Optional[Path] = None
    analysis_data: Optional[Path] = None  # an image folder of test images (CIFAR, Pet); digits and folders need none
    rounds: int = 3
    epochs: int = 40
    dropout: float = 0.1
    alpha: float = 5.0
    adaptive_alpha: bool = True


def _one_thread_each(jobs: int) -> None:
    """With two jobs side by side, each (and the subprocesses it starts) uses one thread."""
    if jobs > 1:
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def translation_study(settings: TranslationStudy, command: str) -> Dict[str, object]:
    """Train, score and analyse the translation study into ``settings.out``; returns study.json's content."""
    from analysis.batches import BatchOptions
    from analysis.pipeline import AnalysisOptions, analyze
    from intradist.paths import REPO_ROOT, corpus_dir
    from intradist.prepare.translation import PrepareConfig, prepare

    started = time.perf_counter()
    out = Path(settings.out)
    if settings.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {settings.rounds}")
    if settings.dataset == "multi30k":
        data_bin = settings.data_bin or prepare(corpus_dir("multi30k"), out / "data-bin",
                                                PrepareConfig(vocab_size=settings.vocab_size))  # fmt: skip
    else:
        data_bin = settings.data_bin or REPO_ROOT / "data-bin" / "iwslt14" / f"{settings.pair}-en"
        if not (Path(data_bin) / "prepare.json").is_file():
            raise UserError(f"{data_bin}: no IWSLT'14 data-bin; make it with bash data_prep/iwslt14.sh (or give --data-bin)")
    _one_thread_each(settings.jobs)
    models = translation_models(settings, Path(data_bin), out)
    batches = BatchOptions(data=Path(data_bin), split="valid", max_batches=settings.analysis_batches,
                           max_tokens=settings.max_tokens, seed=settings.seed)  # fmt: skip
    analyze([m.checkpoint for m in models], AnalysisOptions(framework="fairseq", batches=batches), out / "analysis",
            labels=[m.label for m in models], command=command)  # fmt: skip
    title = f"Parameter balance: self-distillation rounds and intra-distillation, {settings.dataset} translation"
    record_settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    return write_study(out, title, models, "BLEU", command, record_settings, (time.perf_counter() - started) / 60)


def vision_study(settings: VisionStudy, command: str) -> Dict[str, object]:
    """Train, score and analyse the vision study into ``settings.out``; returns study.json's content."""
    from analysis.batches import BatchOptions
    from analysis.pipeline import AnalysisOptions, analyze
    from intradist.trainers.vision import CIFAR_DEPTHS
    from intradist.trainers.vision_data import load_image_data

    started = time.perf_counter()
    out = Path(settings.out)
    if settings.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {settings.rounds}")
    data_kind = "digits" if settings.data == "digits" else load_image_data(settings.data).kind
    if data_kind not in ("digits", "folder") and settings.analysis_data is None:
        raise UserError(f"--analysis-data is needed for {data_kind} data: an image folder (one sub-folder per "
                        f"class) of the test images the sensitivities are computed on")  # fmt: skip
    _one_thread_each(settings.jobs)
    models = vision_models(settings, out)
    metrics = json.loads((Path(models[0].checkpoint).parent / "metrics.json").read_text())
    if data_kind == "digits":
        options = AnalysisOptions(model_factory=f"intradist.trainers.vision:{metrics['arch']}",
                                  batches=BatchOptions(hook="intradist.trainers.vision_data:digits_batches",
                                                       max_batches=settings.analysis_batches, seed=settings.seed))  # fmt: skip
    else:
        images = settings.analysis_data or Path(settings.data) / metrics["test_split"]
        if metrics["arch"] not in CIFAR_DEPTHS:
            model = {"arch": metrics["arch"], "num_classes": metrics["num_classes"]}
        elif metrics["num_classes"] == 10:
            model = {"model_factory": f"intradist.trainers.vision:{metrics['arch']}"}
        else:
            raise UserError(f"{metrics['arch']} with {metrics['num_classes']} classes: analyse it with "
                            f"analyze-sensitivity --model-factory (see its metrics.json 'analyze')")  # fmt: skip
        options = AnalysisOptions(**model,
                                  batches=BatchOptions(data=Path(images), image_size=metrics["image_size"],
                                                       max_batches=settings.analysis_batches, seed=settings.seed))  # fmt: skip
    analyze([m.checkpoint for m in models], options, out / "analysis", labels=[m.label for m in models],
            command=command)  # fmt: skip
    title = f"Parameter balance: self-distillation rounds and intra-distillation, {settings.data} images"
    record_settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    return write_study(out, title, models, "accuracy %", command, record_settings, (time.perf_counter() - started) / 60)


# ---------------------------------------------------------------------------------------------
# Command line

COMMAND = "intradist study balance"


def _command_line() -> str:
    return f"{COMMAND} " + " ".join(shlex.quote(argument) for argument in sys.argv[1:])


def _run(study: Callable[[], Dict[str, object]], out: Path) -> None:
    try:
        study()
    except UserError as error:
        click.echo(f"{COMMAND}: {error}", err=True)
        sys.exit(2)
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
    click.option("--num-passes", type=click.IntRange(min=2), default=3, show_default=True,
                 help="K of the intra-distillation model."),
    click.option("--kd-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
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
@click.option("--alpha", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="Intra-distillation weight (0.3: the best of the CPU study at short budgets; the paper: 5).")
@click.option("--adaptive-alpha/--constant-alpha", default=False, show_default=True)
@click.option("--cpu", is_flag=True, help="Train and translate on the CPU even when a GPU is present.")
@click.option("--fp16", is_flag=True, help="IWSLT'14 on a GPU: mixed precision, as the paper.")
@_shared
def translation(**options) -> None:
    """Translation: BLEU and balance of round 0..R and intra-distillation (fairseq)."""
    settings = TranslationStudy(**options)
    _run(lambda: translation_study(settings, _command_line()), settings.out)


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
@click.option("--alpha", type=click.FloatRange(min=0), default=5.0, show_default=True)
@click.option("--adaptive-alpha/--constant-alpha", default=True, show_default=True)
@_shared
def vision(**options) -> None:
    """Images: test accuracy and balance of round 0..R and intra-distillation (torchvision ResNet)."""
    settings = VisionStudy(**options)
    _run(lambda: vision_study(settings, _command_line()), settings.out)


if __name__ == "__main__":
    main()
