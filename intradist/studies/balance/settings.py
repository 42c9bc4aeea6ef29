"""What a balance study is given: one dataclass per study, each field a flag of ``intradist study balance``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional

from intradist.recipes.translation import PAPER_SWITCHES
from intradist.paths import output_folder
from intradist.settings import DistillationSettings, flat_record

#: The translation study's switches: the IWSLT'14 recipe's, with K = 3 and a constant α = 0.3
#: (the best of the CPU study at short budgets; the paper: 5 on its schedule).
TRANSLATION_SWITCHES = replace(PAPER_SWITCHES, alpha=0.3, adaptive_alpha=False)

#: The vision study's switches: α = 5 on the paper's schedule, no label smoothing; K and β as the
#: translation study's, since both studies share those flags.
VISION_SWITCHES = DistillationSettings(num_passes=TRANSLATION_SWITCHES.num_passes, alpha=5.0, adaptive_alpha=True,
                                       kd_weight=TRANSLATION_SWITCHES.kd_weight)  # fmt: skip

#: The switches a study has flags for, as ``study.json`` records them. ``num_passes`` is the
#: intra-distillation model's K, ``kd_weight`` the rounds' β; the rounds train with one pass.
STUDY_SWITCHES = ("num_passes", "alpha", "adaptive_alpha", "kd_weight")


@dataclass
class Study:
    """What both studies share; each field is a flag of ``intradist study balance``."""

    out: Path
    rounds: int = 2
    distillation: DistillationSettings = TRANSLATION_SWITCHES
    analysis_batches: int = 20
    seed: int = 1
    jobs: int = 2

    def __post_init__(self) -> None:
        output_folder(Path(self.out))  # refused before any model trains


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
    distillation: DistillationSettings = VISION_SWITCHES
    epochs: int = 40
    dropout: float = 0.1


def study_record(study: Study) -> Dict[str, object]:
    """The study's flags as ``study.json`` records them: flat, paths as text."""
    return {name: str(value) if isinstance(value, Path) else value
            for name, value in flat_record(study, STUDY_SWITCHES).items()}  # fmt: skip
