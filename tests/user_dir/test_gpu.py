"""fp16 and AMP training on a GPU (skipped without one)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import TINY_MODEL, run_fairseq_train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ON_GPU = [flag for flag in TINY_MODEL if flag != "--cpu"]


@pytest.mark.parametrize("precision", ["--fp16", "--amp"])
@pytest.mark.parametrize("strategy", ["sequential", "batch"])
def test_intra_distillation_with_a_teacher_trains_in_half_precision(precision, strategy, tiny_data_bin,
                                                                    teacher_checkpoint, tmp_path):  # fmt: skip
    flags = ["--task", "translation", "--criterion", "intra_distillation", "--num-passes", "2",
             "--pass-strategy", strategy, "--adaptive-alpha", "--teacher-path", str(teacher_checkpoint),
             precision, "--max-update", "8"]  # fmt: skip
    completed, log = run_fairseq_train(tiny_data_bin, tmp_path, flags, model_flags=ON_GPU)
    assert log.num_updates == 8
    assert all(math.isfinite(float(r["intra_distillation_loss"])) for r in log.inner)
    assert all(math.isfinite(float(r["kd_loss"])) for r in log.inner)
