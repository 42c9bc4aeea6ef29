"""Training and scoring a balance study's models: a chain of rounds and, in parallel, intra-distillation."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import click
from click.globals import pop_context, push_context

from intradist.studies.balance.settings import TranslationStudy, VisionStudy


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


#: Trains and scores one model: (label, kind, round or None, teacher model or None) -> StudyModel.
TrainAndScore = Callable[[str, str, Optional[int], Optional[StudyModel]], StudyModel]

Result = TypeVar("Result")


def _in_command(work: Callable[[], Result]) -> Callable[[], Result]:
    """``work`` for another thread, run under the command's click context.

    A :class:`intradist.errors.UserError` raised there then names the command, as it would in
    the command's own thread.
    """
    context = click.get_current_context(silent=True)

    def run() -> Result:
        if context is None:
            return work()
        push_context(context)
        try:
            return work()
        finally:
            pop_context()

    return run


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
        rounds_future, intra_future = pool.submit(_in_command(chain)), pool.submit(_in_command(intra))
        return [*rounds_future.result(), intra_future.result()]


def translation_models(study: TranslationStudy, data_bin: Path, out: Path) -> List[StudyModel]:
    """Train and score the rounds and the intra-distillation model with fairseq."""
    from intradist.prepare.translation import translate_and_score
    from intradist.recipes.fairseq_runs import USER_DIR, timed, train, training_args
    from intradist.recipes.translation import Recipe

    def flags(method: str, teacher: Optional[Path]) -> List[str]:
        switches = replace(study.distillation, teacher=str(teacher) if teacher else None)
        recipe = Recipe(lang=study.pair, method=method, data=str(data_bin), save_dir="", seed=study.seed,
                        max_updates=study.updates, distillation=switches, fp16=study.fp16, cpu=study.cpu)  # fmt: skip
        if study.dataset == "iwslt14":  # the paper's whole recipe, at this study's budget
            return recipe.fairseq_args()
        common = training_args(data_bin, study.updates, study.max_tokens, study.seed, study.cpu)
        return [*common, *recipe.criterion_args()]

    def train_and_score(label: str, kind: str, round_number: Optional[int], teacher: Optional[StudyModel]) -> StudyModel:
        save_dir = out / "models" / label
        teacher_path = Path(teacher.checkpoint) if teacher else None
        reused = (save_dir / "checkpoint_best.pt").is_file()  # a rerun keeps what finished
        if not reused:
            _, seconds = timed(train, flags(kind, teacher_path), save_dir, label, study.updates)
            (save_dir / "train_seconds.txt").write_text(f"{seconds:.1f}\n")
        seconds = float((save_dir / "train_seconds.txt").read_text())
        checkpoint = save_dir / "checkpoint_best.pt"
        scored = translate_and_score(data_bin, checkpoint, cpu=study.cpu, user_dir=USER_DIR)
        click.echo(f"{label}: BLEU {scored['bleu']:.2f} ({seconds / 60:.1f} min training)", err=True)
        return StudyModel(label, kind, round_number, teacher.label if teacher else None, str(checkpoint),
                          float(scored["bleu"]), seconds, reused)  # fmt: skip

    return train_study_models(train_and_score, study.rounds, study.jobs)


def vision_models(study: VisionStudy, out: Path) -> List[StudyModel]:
    """Train and score the rounds and the intra-distillation model with the torchvision trainer."""
    from intradist.trainers.vision_data import load_image_data
    from intradist.trainers.vision_training import VisionConfig, train

    data = load_image_data(study.data)

    def train_and_score(label: str, kind: str, round_number: Optional[int], teacher: Optional[StudyModel]) -> StudyModel:
        folder = out / "models" / label
        reused = (folder / "metrics.json").is_file()
        if not reused:
            config = VisionConfig(data=study.data, out=folder, arch=study.arch, epochs=study.epochs,
                                  pretrained_weights=study.pretrained_weights, seed=study.seed,
                                  dropout=study.dropout)  # fmt: skip
            switches = replace(study.distillation, num_passes=study.distillation.num_passes if kind == "intra" else 1,
                               teacher=teacher.checkpoint if teacher else None)  # fmt: skip
            train(config, switches, data=data, progress=False)
        metrics = json.loads((folder / "metrics.json").read_text())
        click.echo(f"{label}: test accuracy {100 * metrics['test_accuracy']:.2f}%", err=True)
        return StudyModel(label, kind, round_number, teacher.label if teacher else None, str(folder / "model.pt"),
                          100 * float(metrics["test_accuracy"]), float(metrics["train_seconds"]), reused)  # fmt: skip

    return train_study_models(train_and_score, study.rounds, study.jobs)
