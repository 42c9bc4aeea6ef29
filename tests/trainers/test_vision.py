"""intradist train vision on real data (scikit-learn's digits) on the CPU: the eight-model grid, saved models that
analysis loads, the recipe's schedule, one implementation of the divergence, the data readers, refusals."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import intradist.losses
from intradist.analysis.batches import BatchOptions, make_batches
from intradist.analysis.loading import load_checkpoint
from intradist.errors import UserError
from intradist.settings import DistillationSettings
from intradist.trainers.vision import grid_command, train_command
from intradist.trainers.vision_data import load_digits, load_image_data, read_cifar_pickle
from intradist.trainers.vision_grid import GRID, GridSettings, run_grid
from intradist.trainers.vision_models import resnet20
from intradist.trainers.vision_schedules import inverse_sqrt_lr
from intradist.trainers.vision_training import VisionConfig, train

#: 3 epochs of 18 updates put every grid cell at 67-78 % test accuracy (measured); chance is 10 %.
GRID_EPOCHS = 3
MIN_ACCURACY = 0.5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """The eight-model grid on the digits, ResNet-20, 3 epochs (about 30 s on one CPU thread)."""
    root = tmp_path_factory.mktemp("grid") / "grid"
    records = run_grid(VisionConfig(data="digits", out=root, epochs=GRID_EPOCHS), GridSettings(), progress=False)
    return root, records


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory) -> Path:
    """An ImageFolder tree of real images (digits 0-2 as 32x32 PNGs): train/ with 6 per class, val/ with 2, no test/."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    root = tmp_path_factory.mktemp("folder")
    for label in range(3):
        for number, index in enumerate(np.flatnonzero(digits.target == label)[:8]):
            folder = root / ("train" if number < 6 else "val") / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(folder / f"{number}.png")
    return root


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("intradist train vision"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# The grid


def test_every_grid_setting_learns_the_digits_well_above_chance(grid_run):
    root, records = grid_run
    assert len(records) == 8 and {r["cell"] for r in records} == {cell.name for cell in GRID}
    for record in records:
        assert record["test_accuracy"] > MIN_ACCURACY, record
        assert 0 < record["test_nll"] < math.log(10), record  # better than the uniform guess


def test_grid_cells_use_their_switches_and_students_learn_from_the_matching_teacher(grid_run):
    root, records = grid_run
    for record in records:
        metrics = json.loads((Path(record["out"]) / "metrics.json").read_text())
        settings = metrics["distillation"]
        assert settings["num_passes"] == (3 if record["intra"] else 1)
        schedule = (settings["alpha"], settings["adaptive_alpha"], settings["alpha_p"], settings["alpha_q"])
        assert schedule == (5, True, 5, 10)
        assert settings["label_smoothing"] == (0.1 if record["label_smoothing"] else 0.0)
        history = list(csv.DictReader((Path(record["out"]) / "history.csv").open()))
        assert len(history) == GRID_EPOCHS
        assert (float(history[-1]["train_intra"]) > 0) == record["intra"]
        if record["self_distillation"]:
            teacher_cell = record["cell"].replace("sd-", "").replace("-sd", "").replace("sd", "baseline")
            teacher = root / "seed1" / teacher_cell / "model.pt"
            assert Path(settings["teacher"]) == teacher
            assert float(history[-1]["train_kd"]) > 0
            teacher_metrics = json.loads((teacher.parent / "metrics.json").read_text())
            assert settings["teacher_sha256"] == teacher_metrics["model_sha256"]
        else:
            assert settings["teacher"] is None and float(history[-1]["train_kd"]) == 0


def test_grid_writes_the_nll_table_with_eight_rows(grid_run):
    root, records = grid_run
    table = [line for line in (root / "grid.md").read_text().splitlines() if line.startswith("|")]
    assert "test NLL" in table[0] and len(table) == 2 + 8
    for record in records:
        row = next(line for line in table if line.startswith(f"| {record['cell']} |"))
        assert f"| {record['test_nll']:.4f} |" in row and f"| {100 * record['test_accuracy']:.2f} |" in row
    assert len(json.loads((root / "grid.json").read_text())["records"]) == 8


def test_grid_cells_take_the_shared_distillation_settings_and_only_their_own_switches(tmp_path):
    shared = DistillationSettings(num_passes=4, alpha=2.0, adaptive_alpha=False, divergence="js",
                                  label_smoothing=0.2, kd_weight=0.3, kd_temperature=2.0)  # fmt: skip
    grid = GridSettings(shared, seeds=(1, 2))
    teacher = tmp_path / "teacher" / "model.pt"
    for cell in GRID:
        settings = grid.for_cell(cell, teacher)
        assert settings.num_passes == (4 if cell.intra else 1)
        assert settings.label_smoothing == (0.2 if cell.label_smoothing else 0.0)
        assert settings.teacher == (str(teacher) if cell.self_distillation else None)
        rest = ("alpha", "adaptive_alpha", "divergence", "kd_weight", "kd_temperature")
        assert [getattr(settings, name) for name in rest] == [getattr(shared, name) for name in rest]
    with pytest.raises(UserError, match="--passes 1"):
        GridSettings(DistillationSettings(num_passes=1))
    with pytest.raises(UserError, match="at least one seed"):
        GridSettings(seeds=())


def test_grid_rerun_reuses_finished_cells(grid_run):
    root, records = grid_run
    again = run_grid(VisionConfig(data="digits", out=root, epochs=GRID_EPOCHS), GridSettings(), progress=False)
    assert [r["test_nll"] for r in again] == [r["test_nll"] for r in records]


# ---------------------------------------------------------------------------------------------
# Saved models


def test_saved_model_loads_weights_only_and_in_analysis_through_the_factory(grid_run):
    root, _ = grid_run
    path = root / "seed1" / "intra" / "model.pt"
    state = torch.load(path, weights_only=True)
    assert set(state) == set(resnet20().state_dict())
    metrics = json.loads((path.parent / "metrics.json").read_text())
    assert "--model-factory intradist.trainers.vision_models:resnet20" in metrics["analyze"]

    loaded = load_checkpoint(path, model_factory="intradist.trainers.vision_models:resnet20")
    batches = make_batches(loaded, BatchOptions(hook="intradist.trainers.vision_data:digits_batches", batch_size=60))
    assert sum(len(labels) for _, labels in batches) == 360
    with torch.no_grad():
        correct = sum((loaded.model(images).argmax(-1) == labels).sum().item() for images, labels in batches)
        loss = loaded.loss_fn(loaded.model, batches[0]).item()
    assert correct / 360 == pytest.approx(metrics["test_accuracy"])  # the digits' test split, the same transform
    assert math.isfinite(loss)


def test_torchvision_model_saved_by_the_command_loads_with_arch_and_num_classes(tmp_path):
    out = tmp_path / "resnet18"
    result = CliRunner().invoke(train_command, ["--data", "digits", "--arch", "resnet18", "--image-size", "16",
                                                "--max-steps", "1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["best_epoch"] == 1
    assert not out.with_name("resnet18.partial").exists()
    loaded = load_checkpoint(out / "model.pt", arch="resnet18", num_classes=10)
    assert loaded.framework == "torchvision"
    assert "--arch resnet18 --num-classes 10" in json.loads((out / "metrics.json").read_text())["analyze"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision runs on a CUDA GPU; this machine has none")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_a_gpu_and_is_recorded(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    out = tmp_path / precision
    result = CliRunner().invoke(train_command, ["--data", "digits", "--device", "cuda", "--precision", precision,
                                                "--num-passes", "2", "--epochs", "2", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == precision and metrics["device"].startswith("cuda")
    assert math.isfinite(metrics["test_nll"]) and metrics["test_nll"] < math.log(10)  # it learned
    weights = torch.load(out / "model.pt", weights_only=True)
    assert all(tensor.dtype != torch.float16 and tensor.dtype != torch.bfloat16 for tensor in weights.values())


def test_same_seed_gives_the_same_model(tmp_path):
    settings = DistillationSettings(num_passes=2, alpha=1.0)
    first, second = (train(VisionConfig(data="digits", out=tmp_path / name, max_steps=3), settings, progress=False)
                     for name in ("a", "b"))  # fmt: skip
    assert first["test_nll"] == second["test_nll"] and first["model_sha256"] == second["model_sha256"]


# ---------------------------------------------------------------------------------------------
# The recipe and the loss code


def test_warmup_then_inverse_sqrt_schedule_matches_hand_computed_values(grid_run):
    peak, start, warmup = 1e-3, 2e-5, 50
    assert inverse_sqrt_lr(0, peak, start, warmup) == pytest.approx(2e-5)
    assert inverse_sqrt_lr(25, peak, start, warmup) == pytest.approx(2e-5 + 25 * 0.98e-3 / 50)  # 5.1e-4
    assert inverse_sqrt_lr(50, peak, start, warmup) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(200, peak, start, warmup) == pytest.approx(5e-4)  # 1e-3 * sqrt(50 / 200)
    assert inverse_sqrt_lr(5000, peak, start, warmup) == pytest.approx(1e-4)
    # the trainer used it: the last update of epoch 1 is update 17, of epoch 3 update 53 (18 per epoch)
    root, _ = grid_run
    history = list(csv.DictReader((root / "seed1" / "baseline" / "history.csv").open()))
    assert float(history[0]["lr"]) == pytest.approx(2e-5 + 17 * 0.98e-3 / 50)
    assert float(history[2]["lr"]) == pytest.approx(1e-3 * math.sqrt(50 / 53))


def test_each_step_calls_the_one_divergence_of_user_dir_losses(tmp_path, monkeypatch):
    calls = []
    original = intradist.losses.intra_distillation_loss

    def counting(logits, *args, **kwargs):
        calls.append(len(logits))
        return original(logits, *args, **kwargs)

    monkeypatch.setattr(intradist.losses, "intra_distillation_loss", counting)
    metrics = train(VisionConfig(data="digits", out=tmp_path / "k2", max_steps=2),
                    DistillationSettings(num_passes=2, alpha=1.0), progress=False)  # fmt: skip
    assert metrics["steps_run"] == 2
    assert calls == [2, 2]  # one call per update, over both passes; nothing else computes the divergence


def test_passes_differ_through_the_dropout_before_the_classifier():
    model = resnet20(dropout=0.1).train()
    images = torch.randn(4, 3, 8, 8)
    assert not torch.equal(model(images), model(images))
    model.eval()
    assert torch.equal(model(images), model(images))


# ---------------------------------------------------------------------------------------------
# Data


def _write_cifar10(folder: Path, per_batch: int = 20) -> dict:
    """The official CIFAR-10 python layout: pickled dicts (protocol 2, bytes keys) of uint8 rows and labels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        count = per_batch if name != "test_batch" else 10
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(count)], b"data": data,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(count)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = data
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names, b"num_vis": 3072}, protocol=2))
    return written


def test_cifar10_python_format_is_read_into_train_val_and_test(tmp_path):
    written = _write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_image_data(str(tmp_path))  # the folder above cifar-10-batches-py works too
    assert data.kind == "cifar10" and data.num_classes == 10 and data.classes[0] == "airplane"
    assert data.sizes() == {"train": 90, "val": 10, "test": 10}
    assert sorted(data.val.labels.tolist()) == list(range(10))  # stratified hold-out
    image = data.test.raw(3)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert torch.equal(image, torch.from_numpy(written["test_batch"][3].reshape(3, 32, 32)))  # R, G, B planes, rows
    assert int(data.test.labels[3]) == 3


def test_cifar100_python_format_uses_the_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, count in (("train", 40), ("test", 8)):
        batch = {b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
                 b"fine_labels": [i % 4 for i in range(count)], b"coarse_labels": [0] * count}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = [f"class{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}, protocol=2))
    data = load_image_data(str(folder))
    assert data.kind == "cifar100" and data.num_classes == 100 and data.classes[99] == "class99"
    assert data.sizes() == {"train": 36, "val": 4, "test": 8}
    assert data.test.labels.tolist() == [i % 4 for i in range(8)]


def test_cifar_reader_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(UserError, match="not allowed"):
        read_cifar_pickle(path)
    assert not marker.exists()


def test_oxford_pet_layout_is_read_with_breed_names(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    lines = {"trainval.txt": ["#Image CLASS-ID SPECIES BREED ID"], "test.txt": []}
    for class_id, breed in enumerate(["Abyssinian", "american_bulldog", "Bengal"], 1):
        for number in range(1, 6):
            image = Image.new("RGB", (40, 30), (class_id * 60, number * 40, 0))
            image.save(tmp_path / "images" / f"{breed}_{number}.jpg")
            lines["trainval.txt" if number <= 4 else "test.txt"].append(f"{breed}_{number} {class_id} 1 {number}")
    for name, content in lines.items():
        (tmp_path / "annotations" / name).write_text("\n".join(content) + "\n")
    data = load_image_data(str(tmp_path))
    assert data.kind == "pet" and data.classes == ["Abyssinian", "american_bulldog", "Bengal"]
    assert data.sizes() == {"train": 10, "val": 2, "test": 3}
    assert data.test.raw(0).shape == (3, 30, 40)


def test_image_folder_without_test_reports_on_val_and_pretrained_classifier_of_another_size_is_new(
    grid_run, digit_images, tmp_path
):
    root, _ = grid_run
    settings = DistillationSettings()
    metrics = train(VisionConfig(data=str(digit_images), out=tmp_path / "folder", arch="resnet20", image_size=32,
                                 max_steps=1, pretrained_weights=root / "seed1" / "baseline" / "model.pt"),
                    settings, progress=False)  # fmt: skip
    assert metrics["test_split"] == "val" and metrics["split_sizes"] == {"train": 18, "val": 6, "test": 6}
    assert metrics["classes"] == ["digit0", "digit1", "digit2"]
    assert metrics["pretrained_weights"]["newly_initialised"] == ["fc.weight", "fc.bias"]


def test_digits_split_is_fixed_and_disjoint():
    first, second = load_digits(), load_digits()
    assert first.sizes() == {"train": 1077, "val": 360, "test": 360}
    assert torch.equal(first.test.images, second.test.images) and torch.equal(first.val.labels, second.val.labels)
    assert first.train.images.shape == (1077, 3, 8, 8) and first.train.images.dtype == torch.uint8


# ---------------------------------------------------------------------------------------------
# Refusals


def test_bad_input_is_one_line_with_exit_2(grid_run, digit_images, tmp_path):
    root, _ = grid_run
    run = lambda *args: CliRunner().invoke(train_command, [str(a) for a in args])  # noqa: E731
    teacher = root / "seed1" / "baseline"
    _one_line_error(run("--data", tmp_path / "nowhere", "--out", tmp_path / "o1"), "nowhere", "no such directory")
    _one_line_error(run("--data", "digits", "--arch", "resnet7", "--out", tmp_path / "o2"), "resnet7", "resnet50")
    empty = tmp_path / "empty"
    for split in ("train", "val"):
        (empty / split / "cat").mkdir(parents=True)
    _one_line_error(run("--data", empty, "--out", tmp_path / "o3"), "no images")
    _one_line_error(run("--data", "digits", "--arch", "resnet32", "--teacher", teacher, "--out", tmp_path / "o4"),
                    "resnet20", "resnet32")  # fmt: skip
    _one_line_error(run("--data", digit_images, "--arch", "resnet20", "--teacher", teacher, "--out", tmp_path / "o5"),
                    "10 classes", "3")  # fmt: skip
    bare = tmp_path / "bare" / "model.pt"  # no metrics.json beside it: the weights themselves must fit
    bare.parent.mkdir()
    shutil.copy(teacher / "model.pt", bare)
    _one_line_error(run("--data", "digits", "--arch", "resnet32", "--teacher", bare, "--out", tmp_path / "o6"),
                    "not a resnet32")  # fmt: skip
    _one_line_error(run("--data", "digits", "--out", teacher), "holds an earlier run", "--overwrite")
    for precision in ("bf16", "fp16"):  # mixed precision is GPU-only
        _one_line_error(run("--data", "digits", "--device", "cpu", "--precision", precision, "--out", tmp_path / "o12"),
                        f"--precision {precision}", "GPU")  # fmt: skip
    _one_line_error(run("--data", "digits", "--num-passes", "3", "--dropout", "0", "--out", tmp_path / "o7"),
                    "--dropout")  # fmt: skip
    _one_line_error(run("--data", "digits", "--micro-batch-size", "7", "--out", tmp_path / "o8"),
                    "--micro-batch-size 7", "--batch-size 60")  # fmt: skip
    _one_line_error(run("--data", "digits", "--dropout-placement", "relu", "--out", tmp_path / "o9"),
                    "--dropout-placement relu", "torchvision")  # fmt: skip
    _one_line_error(run("--data", "digits", "--arch", "resnet18", "--pretrained-weights", "IMAGENET1K_V9",
                        "--out", tmp_path / "o10"), "IMAGENET1K_V9", "ResNet18_Weights.IMAGENET1K_V1")  # fmt: skip
    _one_line_error(run("--data", "digits", "--kd-epochs", "75", "--out", tmp_path / "o11"), "--kd-epochs", "--teacher")
    grid = CliRunner().invoke(grid_command, ["--seeds", "one", "--out", str(tmp_path / "g")])
    _one_line_error(grid, "--seeds")
    no_seeds = CliRunner().invoke(grid_command, ["--seeds", ",", "--out", str(tmp_path / "g")])
    _one_line_error(no_seeds, "--seeds", "at least one seed")
    assert not any(tmp_path.glob("o*"))


def test_an_unreadable_image_in_a_data_loader_worker_is_one_line(digit_images, tmp_path):
    """torch re-raises a worker's error with the worker's traceback in its message: the command keeps one line."""
    data = tmp_path / "images"
    shutil.copytree(digit_images, data)
    (data / "train" / "digit0" / "broken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(train_command, ["--data", str(data), "--arch", "resnet20", "--workers", "1",
                                                "--batch-size", "32", "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2, result.output
    started, error = result.stderr.strip().splitlines()  # the run's first progress line, then the mistake
    assert started.startswith("intradist train vision: resnet20 on image folder"), started
    assert error.startswith("intradist train vision: ") and "broken.png: cannot read the image" in error, error


def test_the_command_family_reaches_training_and_the_grid():
    from intradist.cli import cli

    for argv, expected in ((["train", "vision-grid", "--help"], "eight models"), (["train", "vision", "--help"], "vision-grid")):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 0 and expected in result.output, result.output


# ---------------------------------------------------------------------------------------------
# The paper recipe (configs/vision/pet_*.yaml) against the reproduction study's notebooks
# (yashmanne/intra-distillation at e314144; "NB cell N line M" counts the notebook's cells, markdown
# too, from 0 and lines from 1 within the cell, as docs/fidelity/vision.yaml does).

PET_CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs" / "vision"
NOTEBOOK_CLASSES = 37  # IntraSmooth.ipynb cell 3 line 6
ITER_BATCH = 15  # micro-batches of 4 per update: cell 3 lines 7-8

#: Per grid row, what its notebook's loop computes, read off the notebooks (not off our configs):
#: (label smoothing of CrossEntropyLoss, K, weight of the teacher term, loss divided by iter_batch).
#: ClassicSmooth/ClassicNoSmooth cell 6 line 4 and cell 8 line 5: CrossEntropyLoss() (no smoothing);
#: cell 8 lines 28-29: CE + kd * teacher, backward without / iter_batch. Intra*: cell 6 line 24
#: label_smoothing=0.1 (both), cell 9 line 31: IntraNoSmooth kd (1) * teacher, IntraSmooth alpha (5).
NOTEBOOK_ROWS = {
    "baseline": (0.0, 1, None, True), "ls": (0.0, 1, None, True),
    "sd": (0.0, 1, 1.0, False), "sd-ls": (0.0, 1, 1.0, False),
    "intra": (0.1, 3, None, True), "intra-ls": (0.1, 3, None, True),
    "intra-sd": (0.1, 3, 1.0, True), "intra-sd-ls": (0.1, 3, 5.0, True),
}  # fmt: skip


def _recipe(row: str):
    """The VisionConfig and DistillationSettings that intradist train vision builds from configs/vision/pet_ROW.yaml."""
    from intradist.settings import settings_from
    from intradist.trainers.vision import _config

    ctx = train_command.make_context("intradist train vision", ["--config", str(PET_CONFIGS / f"pet_{row}.yaml")])
    options = dict(ctx.params)
    options.pop("config", None)
    settings = settings_from(options)
    return _config(options), settings


def _notebook_alpha(num_update: int) -> float:
    """_get_alpha with alpha=5, N=4000, p=5, q=10 (IntraSmooth.ipynb cell 3 lines 1-5, cell 6 lines 14-21)."""
    alpha, max_update, p, q = 5.0, 4000, 5, 10
    if num_update >= max_update / p or alpha <= 1:
        return alpha
    gamma = math.log(1 / alpha) / math.log(p / q)
    return p**gamma * alpha * num_update**gamma / max_update**gamma


def _notebook_micro_batch_loss(outputs, labels, teacher, row, num_update, epoch0):
    """One micro-batch's loss as the notebook backpropagates it, restated in float64 from its cells.

    outputs [K, B, C]; Intra*: CrossEntropyLoss(label_smoothing) over the K·B rows (cell 6 lines
    24-33) + adaptive alpha * X_loss (cell 6 lines 1-12: per pass, (p - m)(log p - log m) summed
    over the batch and classes, then / K); students add weight * teacher_loss_fn (cell 8 lines 3-6:
    -mean over K·B of sum_c softmax(t) log softmax(o)) while epoch < 75 (cell 9 lines 28-31); the
    sum is divided by iter_batch (cell 9 line 32) except in the classic students (cell 8 line 29).
    """
    smoothing, passes, weight, divided = NOTEBOOK_ROWS[row]
    classes = outputs.shape[-1]
    log_q = torch.log(torch.softmax(outputs, -1))
    rows, targets = log_q.reshape(-1, classes), labels.repeat(outputs.shape[0])
    nll = -rows[torch.arange(len(targets)), targets]
    likelihood = ((1 - smoothing) * nll + smoothing / classes * -rows.sum(-1)).mean()
    loss = likelihood
    if passes > 1:
        probs = torch.softmax(outputs, -1)
        m = probs.sum(0) / probs.shape[0]
        x_loss = sum(((l - m) * (torch.log(l) - torch.log(m))).sum() for l in probs) / probs.shape[0]
        loss = loss + _notebook_alpha(num_update) * x_loss
    if weight is not None and epoch0 < 75:
        teacher_probs = torch.softmax(teacher, -1)
        loss = loss + weight * -torch.mean(torch.sum(teacher_probs * log_q, -1))
    return loss / ITER_BATCH if divided else loss


@pytest.mark.parametrize("row", sorted(NOTEBOOK_ROWS))
@pytest.mark.parametrize(("num_update", "epoch0"), [(37, 0), (700, 14), (3990, 79)])
def test_paper_recipe_objective_equals_the_notebooks_on_fixed_logits(row, num_update, epoch0):
    from intradist.trainers.vision_schedules import teacher_in_epoch
    from intradist.trainers.vision_step import effective_settings, step_objective

    config, settings = _recipe(row)
    generator = torch.Generator().manual_seed(7)
    passes = NOTEBOOK_ROWS[row][1]
    fixed = (3 * torch.randn(passes, 4, NOTEBOOK_CLASSES, generator=generator, dtype=torch.float64))
    labels = torch.randint(0, NOTEBOOK_CLASSES, (4,), generator=generator)
    teacher = 3 * torch.randn(4, NOTEBOOK_CLASSES, generator=generator, dtype=torch.float64)

    ours_logits = fixed.clone().requires_grad_(True)
    pass_outputs = iter(ours_logits)
    epoch = epoch0 + 1
    use_teacher = settings.teacher is not None and teacher_in_epoch(epoch, config.kd_epochs)
    update = num_update - 1 + config.first_update  # the trainer's step counts from 0
    terms = step_objective(lambda images: next(pass_outputs), effective_settings(
        settings, config.label_smoothing_style, NOTEBOOK_CLASSES), torch.zeros(4), labels, update,
        config.epochs * 3000 // config.batch_size, teacher if use_teacher else None, config.teacher_weight)
    nominal = config.batch_size // config.micro_batch_size if config.micro_batch_reduction == "mean" else 1
    ours = terms["loss"] / nominal
    ours.backward()

    theirs_logits = fixed.clone().requires_grad_(True)
    theirs = _notebook_micro_batch_loss(theirs_logits, labels, teacher, row, num_update, epoch0)
    theirs.backward()
    # Ours is KL(teacher || student), theirs the cross-entropy: they differ by the teacher's entropy,
    # a constant without gradient, added here to compare the values.
    if use_teacher:
        teacher_log_probs = torch.log_softmax(teacher, -1)
        entropy = -(teacher_log_probs.exp() * teacher_log_probs).sum(-1).mean()
        ours = ours + config.teacher_weight * entropy / nominal
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    torch.testing.assert_close(ours_logits.grad, theirs_logits.grad, rtol=1e-6, atol=1e-12)
    assert use_teacher == (NOTEBOOK_ROWS[row][2] is not None and epoch0 < 75)


def test_paper_recipe_accumulates_micro_batches_of_4_into_updates_of_60_as_the_notebooks():
    from intradist.trainers.vision_step import effective_settings, training_step

    for row in ("intra-sd-ls", "sd"):
        config, settings = _recipe(row)
        settings = effective_settings(settings, config.label_smoothing_style, NOTEBOOK_CLASSES)
        generator = torch.Generator().manual_seed(3)
        images = torch.randn(config.batch_size, 6, generator=generator, dtype=torch.float64)
        labels = torch.randint(0, NOTEBOOK_CLASSES, (config.batch_size,), generator=generator)
        linear = torch.nn.Linear(6, NOTEBOOK_CLASSES, bias=False).double()
        model = torch.nn.Sequential(torch.nn.Dropout(0.1), linear).train()
        teacher = torch.nn.Linear(6, NOTEBOOK_CLASSES, bias=False).double().eval()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        torch.manual_seed(11)
        training_step(model, optimizer, settings, images, labels, 36 + config.first_update, 4000, 0.0, teacher,
                      config.micro_batch_size, config.micro_batch_reduction, config.teacher_weight)  # fmt: skip
        ours = linear.weight.grad.clone()

        linear.weight.grad = None
        torch.manual_seed(11)  # the same dropout masks, drawn in the same order: K passes per micro-batch
        for start in range(0, config.batch_size, 4):  # IntraSmooth.ipynb cell 9 lines 18-32
            chunk = images[start : start + 4]
            outputs = torch.stack([model(chunk) for _ in range(NOTEBOOK_ROWS[row][1])])
            with torch.no_grad():
                teacher_logits = teacher(chunk)
            _notebook_micro_batch_loss(outputs, labels[start : start + 4], teacher_logits, row, 37, 0).backward()
        torch.testing.assert_close(ours, linear.weight.grad, rtol=1e-6, atol=1e-12)


def test_paper_recipe_lr_schedule_is_the_notebooks_at_every_update():
    from intradist.trainers.vision_schedules import learning_rate

    for row in NOTEBOOK_ROWS:
        config, _ = _recipe(row)
        for step in (0, 1, 24, 48, 49, 50, 51, 200, 1999, 3999):  # the trainer's step, from 0
            num_update = step + 1  # the notebooks' num_update starts at 1 (IntraSmooth.ipynb cell 7 line 7)
            # cell 7 lines 30-33: base_lr (2e-5) * num_update below 50, then 0.001 / sqrt(num_update - 49)
            theirs = 0.00002 * num_update if num_update < 50 else 0.001 / np.sqrt(num_update - 49)
            ours = learning_rate(config.lr_schedule, step + config.first_update, config.lr, config.warmup_init_lr,
                                 config.warmup_steps)  # fmt: skip
            assert ours == pytest.approx(theirs, rel=1e-12), (row, step)
        # 80 epochs of 3,000 images in updates of 60: N = 4000 updates (IntraSmooth.ipynb cell 3 line 5)
        assert config.epochs * 3000 // config.batch_size == 4000


def test_paper_recipe_drops_the_teacher_term_from_the_notebooks_epoch_75():
    from intradist.trainers.vision_schedules import teacher_in_epoch

    for row in ("sd", "sd-ls", "intra-sd", "intra-sd-ls"):
        config, settings = _recipe(row)
        assert settings.teacher is not None
        for epoch0 in range(config.epochs):  # `for epoch in range(epochs)`, `if epoch >= 75: loss = intrinsic_loss`
            assert teacher_in_epoch(epoch0 + 1, config.kd_epochs) == (epoch0 < 75), (row, epoch0)


def test_reproduction_resnet50_has_dropout_after_every_relu_and_no_classifier_bias():
    import torchvision

    from intradist.trainers.vision_models import build_model

    config, _ = _recipe("intra")
    model = build_model(config.arch, NOTEBOOK_CLASSES, config.dropout, config.dropout_placement, config.fc_bias)
    reference = torchvision.models.resnet50(weights=None)  # nothing downloaded
    assert set(model.state_dict()) == set(reference.state_dict()) - {"fc.bias"} and model.fc.bias is None
    wrapped = [m for m in model.modules() if isinstance(m, torch.nn.Sequential) and len(m) == 2
               and isinstance(m[0], torch.nn.ReLU)]  # fmt: skip
    assert len(wrapped) == 1 + 16  # the stem's relu and each of the 16 bottlenecks' relu
    assert all(isinstance(m[1], torch.nn.Dropout) and m[1].p == 0.1 for m in wrapped)
    relu_calls, dropout_calls = [], []
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_hook(lambda *_: relu_calls.append(1))
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda *_: dropout_calls.append(1))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    assert len(relu_calls) == len(dropout_calls) == 1 + 16 * 3  # a bottleneck applies its relu three times
    assert config.pretrained_weights == "ResNet50_Weights.IMAGENET1K_V1"


def test_pretrained_weights_by_name_are_read_from_the_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    from intradist.trainers.vision_models import build_model
    from intradist.trainers.vision_weights import load_pretrained_weights, pretrained_weights_file

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "checkpoints" / Path(url).name
    cached.parent.mkdir()
    saved = torchvision.models.resnet18(weights=None).state_dict()  # 1000 classes, biased fc
    torch.save(saved, cached)
    assert pretrained_weights_file("ResNet18_Weights.IMAGENET1K_V1", "resnet18") == cached
    assert pretrained_weights_file("IMAGENET1K_V1", "resnet18") == cached
    model = build_model("resnet18", NOTEBOOK_CLASSES, 0.1, "relu", fc_bias=False)
    assert load_pretrained_weights(model, cached) == ["fc.weight"]
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    with pytest.raises(UserError, match="ResNet18_Weights.IMAGENET1K_V1"):
        pretrained_weights_file("ResNet50_Weights.IMAGENET1K_V1", "resnet18")


def test_random_split_holdout_is_torchs_random_split_of_trainval():
    from torch.utils.data import random_split

    from intradist.trainers.vision_data import Holdout

    labels = [i % 37 for i in range(3680)]  # Pet's trainval: 3,680 images
    train_part, val_part = random_split(range(3680), [3000, 680], generator=torch.Generator().manual_seed(42))
    kept, held_out = Holdout("random-split", 680, 42).split(labels)  # IntraSmooth.ipynb cell 4 line 4
    assert kept == sorted(train_part.indices) and held_out == sorted(val_part.indices)
    config, _ = _recipe("baseline")
    assert (config.val_split, config.val_size, config.val_split_seed) == ("random-split", 680, 42)
    with pytest.raises(UserError, match="fixed validation split"):
        load_image_data("digits", Holdout("random-split", 10, 42))
