"""What the recipe tests share: the settings a config file gives a run, and the authors' alpha schedule.

``authors_consistency_alpha`` re-states ``get_consistency_alpha``, which the authors' transformers
scripts (github.com/fe1ixxu/Intra-Distillation @ 6304a78) each carry as the same copy:
Natural_Language_Understanding/run_glue_no_trainer.py:191-198 and
Zero_Shot_Cross_Lingual/third_party/run_tag.py:80-87 and run_squad.py:101-108. (Their fairseq
task computes it in float32 tensors: tests/user_dir/test_authors_criterion.py re-states that one.)
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from intradist.settings import DistillationSettings


def recipe_settings(path: Path) -> DistillationSettings:
    """The distillation switches a config file sets (its keys are the flags, with dashes)."""
    values = {key.replace("-", "_"): value for key, value in yaml.safe_load(path.read_text()).items()}
    return DistillationSettings(**{name: values[name] for name in DistillationSettings.__dataclass_fields__
                                   if name in values})  # fmt: skip


def authors_consistency_alpha(alpha: float, num_update: int, max_update: int, p: float, q: float) -> float:
    """alpha itself from update N/p on or when alpha <= 1; before, p^g * alpha * t^g / N^g with g = ln(1/alpha) / ln(p/q)."""
    if num_update >= max_update / p or alpha <= 1:
        return alpha
    gamma = math.log(1 / alpha) / math.log(p / q)
    return p**gamma * alpha * num_update**gamma / max_update**gamma
