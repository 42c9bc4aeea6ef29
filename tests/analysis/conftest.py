"""Fixtures for the analysis tests: the shipped RTE sample, a tiny real image folder (MiniLM: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intradist.paths import corpus_dir


@pytest.fixture(scope="session")
def rte_dev() -> Path:
    """The shipped GLUE RTE dev sample: gzipped TSV with header index, sentence1, sentence2, label."""
    return corpus_dir("glue/RTE") / "dev.tsv.gz"


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """An ImageFolder tree of real images: scikit-learn's handwritten digits 0-2, five each, as 32x32 PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for label in range(3):
        folder = root / f"digit{label}"
        folder.mkdir()
        for number, index in enumerate(np.flatnonzero(digits.target == label)[:5]):
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(folder / f"{number}.png")
    return root
