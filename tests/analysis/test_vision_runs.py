"""The checkpoint of an ``intradist train vision`` run is analysed with the run's evaluation transform and class ids."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from intradist.analysis.batches import BatchOptions, make_batches
from intradist.analysis.cli import main
from intradist.analysis.loading import load_checkpoint
from intradist.errors import UserError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run (resnet18, one update) on an image folder of digits 0-2 with train/, val/ and test/."""
    from sklearn.datasets import load_digits

    from intradist.settings import DistillationSettings
    from intradist.trainers.vision_training import VisionConfig, train

    digits = load_digits()
    root = tmp_path_factory.mktemp("images")
    for label in range(3):
        for number, index in enumerate(np.flatnonzero(digits.target == label)[:10]):
            split = "train" if number < 6 else "val" if number < 8 else "test"
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((40, 40), Image.BILINEAR).save(folder / f"{number}.png")
    out = tmp_path_factory.mktemp("runs") / "resnet18"
    metrics = train(VisionConfig(data=str(root), out=out, arch="resnet18", image_size=32, max_steps=1, workers=0,
                                 device="cpu"), DistillationSettings(), progress=False)  # fmt: skip
    return root, out, metrics


def test_the_runs_own_test_split_gives_the_test_nll_it_recorded(run):
    root, out, metrics = run
    loaded = load_checkpoint(out / "model.pt")  # architecture and classes from the run: no --arch needed
    assert loaded.framework == "torchvision" and "intradist train vision run" in loaded.description
    (images, labels), = make_batches(loaded, BatchOptions(data=root / "test", batch_size=100))
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    with torch.no_grad():
        assert loaded.loss_fn(loaded.model, (images, labels)).item() == pytest.approx(metrics["test_nll"], rel=1e-5)


def test_a_test_folder_lacking_one_class_keeps_the_runs_label_ids(run, tmp_path):
    root, out, metrics = run
    assert metrics["classes"] == ["digit0", "digit1", "digit2"]
    partial = tmp_path / "test"
    for name in ("digit0", "digit2"):
        shutil.copytree(root / "test" / name, partial / name)
    loaded = load_checkpoint(out / "model.pt", arch="resnet18", num_classes=3)
    (all_images, all_labels), = make_batches(loaded, BatchOptions(data=root / "test", batch_size=100, image_size=32))
    (images, labels), = make_batches(loaded, BatchOptions(data=partial, batch_size=100))
    assert labels.tolist() == [0, 0, 2, 2]  # numbered from this folder, digit2 would have become 1
    assert torch.equal(images, all_images[all_labels != 1])


def test_a_class_the_run_never_saw_and_another_image_size_are_refused_in_one_line(run, tmp_path):
    root, out, _ = run
    foreign = shutil.copytree(root / "test", tmp_path / "test")
    (foreign / "digit9").mkdir()
    shutil.copy(next((root / "test" / "digit0").iterdir()), foreign / "digit9" / "0.png")
    loaded = load_checkpoint(out / "model.pt")
    with pytest.raises(UserError) as excinfo:
        make_batches(loaded, BatchOptions(data=foreign))
    message = str(excinfo.value)
    assert "\n" not in message and "class folder 'digit9' is not a class of the run" in message
    with pytest.raises(UserError, match="--image-size 224: the run .* was trained and evaluated at 32"):
        make_batches(loaded, BatchOptions(data=root / "test", image_size=224))


def test_the_command_analyses_the_run_on_a_folder_lacking_a_class(run, tmp_path):
    root, out, _ = run
    partial = tmp_path / "test"
    shutil.copytree(root / "test" / "digit2", partial / "digit2")
    result = CliRunner().invoke(main, [str(out / "model.pt"), "--data", str(partial), "--no-plots",
                                       "--out", str(tmp_path / "report")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "sensitivity.csv").is_file()
