"""A whole balance study, end to end: data, the models, their sensitivities on the same batches, the report."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict

from intradist.errors import UserError
from intradist.studies.balance.models import translation_models, vision_models
from intradist.studies.balance.report import write_study
from intradist.studies.balance.settings import TranslationStudy, VisionStudy, study_record


def _one_thread_each(jobs: int) -> None:
    """With two jobs side by side, each (and the subprocesses it starts) uses one thread."""
    if jobs > 1:
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def translation_study(study: TranslationStudy, command: str) -> Dict[str, object]:
    """Train, score and analyse the translation study into ``study.out``; returns study.json's content."""
    from intradist.analysis.batches import BatchOptions
    from intradist.analysis.pipeline import AnalysisOptions, analyze
    from intradist.paths import REPO_ROOT, corpus_dir
    from intradist.prepare.translation import PrepareConfig, prepare

    started = time.perf_counter()
    out = Path(study.out)
    if study.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {study.rounds}")
    if study.dataset == "multi30k":
        data_bin = study.data_bin or prepare(corpus_dir("multi30k"), out / "data-bin",
                                                PrepareConfig(vocab_size=study.vocab_size))  # fmt: skip
    else:
        data_bin = study.data_bin or REPO_ROOT / "data-bin" / "iwslt14" / f"{study.pair}-en"
        if not (Path(data_bin) / "prepare.json").is_file():
            raise UserError(f"{data_bin}: no IWSLT'14 data-bin; make it with bash data_prep/iwslt14.sh (or give --data-bin)")
    _one_thread_each(study.jobs)
    models = translation_models(study, Path(data_bin), out)
    batches = BatchOptions(data=Path(data_bin), split="valid", max_batches=study.analysis_batches,
                           max_tokens=study.max_tokens, seed=study.seed)  # fmt: skip
    analyze([m.checkpoint for m in models], AnalysisOptions(framework="fairseq", batches=batches), out / "analysis",
            labels=[m.label for m in models], command=command)  # fmt: skip
    title = f"Parameter balance: self-distillation rounds and intra-distillation, {study.dataset} translation"
    return write_study(out, title, models, "BLEU", command, study_record(study), (time.perf_counter() - started) / 60)


def vision_study(study: VisionStudy, command: str) -> Dict[str, object]:
    """Train, score and analyse the vision study into ``study.out``; returns study.json's content."""
    from intradist.analysis.batches import BatchOptions
    from intradist.analysis.pipeline import AnalysisOptions, analyze
    from intradist.trainers.vision_models import CIFAR_DEPTHS
    from intradist.trainers.vision_data import load_image_data

    started = time.perf_counter()
    out = Path(study.out)
    if study.rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {study.rounds}")
    data_kind = "digits" if study.data == "digits" else load_image_data(study.data).kind
    if data_kind not in ("digits", "folder") and study.analysis_data is None:
        raise UserError(f"--analysis-data is needed for {data_kind} data: an image folder (one sub-folder per "
                        f"class) of the test images the sensitivities are computed on")  # fmt: skip
    _one_thread_each(study.jobs)
    models = vision_models(study, out)
    metrics = json.loads((Path(models[0].checkpoint).parent / "metrics.json").read_text())
    if data_kind == "digits":
        options = AnalysisOptions(model_factory=f"intradist.trainers.vision_models:{metrics['arch']}",
                                  batches=BatchOptions(hook="intradist.trainers.vision_data:digits_batches",
                                                       max_batches=study.analysis_batches, seed=study.seed))  # fmt: skip
    else:
        images = study.analysis_data or Path(study.data) / metrics["test_split"]
        if metrics["arch"] not in CIFAR_DEPTHS:
            model = {"arch": metrics["arch"], "num_classes": metrics["num_classes"]}
        elif metrics["num_classes"] == 10:
            model = {"model_factory": f"intradist.trainers.vision_models:{metrics['arch']}"}
        else:
            raise UserError(f"{metrics['arch']} with {metrics['num_classes']} classes: analyse it with "
                            f"analyze-sensitivity --model-factory (see its metrics.json 'analyze')")  # fmt: skip
        options = AnalysisOptions(**model,
                                  batches=BatchOptions(data=Path(images), image_size=metrics["image_size"],
                                                       max_batches=study.analysis_batches, seed=study.seed))  # fmt: skip
    analyze([m.checkpoint for m in models], options, out / "analysis", labels=[m.label for m in models],
            command=command)  # fmt: skip
    title = f"Parameter balance: self-distillation rounds and intra-distillation, {study.data} images"
    return write_study(out, title, models, "accuracy %", command, study_record(study),
                       (time.perf_counter() - started) / 60)  # fmt: skip
