"""Image data for ``intradist train vision``: every source becomes train, validation and test datasets of the same kind.

Sources (``--data``):

- ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 grey images, 10 classes),
  split once and for all, stratified with ``random_state=0``, into 1,077 training, 360 validation
  and 360 test images; the grey levels (0-16) are scaled to 0-255 and copied into three channels;
- a CIFAR-10 or CIFAR-100 folder in the official python format (``cifar-10-batches-py``:
  ``data_batch_1`` … ``data_batch_5``, ``test_batch``, ``batches.meta``; ``cifar-100-python``:
  ``train``, ``test``, ``meta``), or the folder above it. The pickles are read with an unpickler
  that admits only the numpy array constructors these files use, so a tampered file cannot run
  code. Part of the training images is held out for validation (see below);
- the Oxford-IIIT Pet layout: ``images/*.jpg`` and ``annotations/trainval.txt``, ``test.txt``
  (lines ``Abyssinian_100 1 1 1``: image, class id 1-37, species, breed), read in file order as
  torchvision's ``OxfordIIITPet`` reads them. Part of trainval is held out for validation;
- an ImageFolder tree: ``train/CLASS/*.jpg``, ``val/CLASS/…`` and optionally ``test/CLASS/…``;
  the classes are the folders of ``train/``. Without ``test/`` the test metrics are computed on
  ``val/`` (``test_split`` says so).

The validation hold-out of CIFAR and Pet (:class:`Holdout`): ``stratified`` (default: 10 %,
stratified by class, ``random_state=0``) or ``random-split``, which is
``torch.utils.data.random_split(trainval, [n - size, size], generator=torch.Generator().manual_seed(seed))``:
the reproduction study's split of Pet's 3,680 trainval images into 3,000 training and 680
validation images with seed 42 (e.g. IntraSmooth.ipynb cell 4 line 4).

Images travel as uint8 tensors ``[3, H, W]`` into the transforms of
:mod:`intradist.trainers.vision_transforms`.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from intradist.errors import UserError
from intradist.trainers.vision_transforms import NATIVE_SIZES, make_transform

#: The seed of every fixed data split (digits train/val/test; validation held out of CIFAR and Pet).
SPLIT_SEED = 0
#: Share of the training images held out for validation where a source has no validation split.
VALIDATION_FRACTION = 0.1
#: Digits: images held out for validation and for test (the rest, 1,077, train).
DIGITS_HELD_OUT = 360

#: How CIFAR and Pet hold out their validation images (see the module docstring).
HOLDOUT_METHODS = ("stratified", "random-split")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Holdout:
    """Which training images of a source without a validation split become the validation set."""

    method: str = "stratified"
    size: Optional[int] = None  # images held out; None: 10 %
    seed: int = SPLIT_SEED

    def split(self, labels: Sequence[int]) -> Tuple[List[int], List[int]]:
        """Indices kept for training and held out, always the same for the same labels."""
        if self.method not in HOLDOUT_METHODS:
            raise UserError(f"--val-split {self.method}: choose one of {', '.join(HOLDOUT_METHODS)}")
        if self.size is not None and not 0 < self.size < len(labels):
            raise UserError(f"--val-size {self.size}: must lie between 1 and {len(labels) - 1} "
                            f"(the source has {len(labels)} training images)")  # fmt: skip
        held_out = self.size if self.size is not None else VALIDATION_FRACTION
        if self.method == "stratified":
            return _stratified_split(labels, held_out, self.seed)
        count = self.size if self.size is not None else round(VALIDATION_FRACTION * len(labels))
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed)).tolist()
        cut = len(labels) - count  # random_split's first part: the training images
        return sorted(order[:cut]), sorted(order[cut:])

    @property
    def is_default(self) -> bool:
        return self == Holdout()


@dataclass
class ImageData:
    """The three splits of a source, with what a model and a report need to know about it."""

    kind: str  # digits, cifar10, cifar100, pet, folder
    description: str  # one line
    classes: List[str]
    train: "ImageDataset"
    val: "ImageDataset"
    test: "ImageDataset"
    test_split: str  # "test", or "val" when the source has no test split
    in_memory: bool

    @property
    def native_size(self) -> Optional[int]:
        """The side of the (square) images of digits and CIFAR; None for photos."""
        return NATIVE_SIZES.get(self.kind)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sizes(self) -> Dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def default_image_size(data: ImageData) -> int:
    """The native side of digits (8) and CIFAR (32); 224 for photos."""
    return data.native_size or 224


def _unchanged(image: torch.Tensor) -> torch.Tensor:
    return image


class ImageDataset(Dataset):
    """``(image, label)`` pairs from uint8 tensors in memory or image files, through ``transform``."""

    def __init__(self, labels: Sequence[int], images: Optional[torch.Tensor] = None,
                 paths: Optional[Sequence[Path]] = None) -> None:  # fmt: skip
        if (images is None) == (paths is None):
            raise ValueError("give either images or paths")
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.images, self.paths = images, list(paths) if paths is not None else None
        self.transform: Callable[[torch.Tensor], torch.Tensor] = _unchanged

    def __len__(self) -> int:
        return len(self.labels)

    def raw(self, index: int) -> torch.Tensor:
        """The image as uint8 ``[3, H, W]``, before any transform."""
        if self.images is not None:
            return self.images[index]
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return pil_to_tensor(image.convert("RGB"))
        except OSError as error:  # PIL: not an image, or a truncated one
            raise UserError(f"{path}: cannot read the image ({error})") from None

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.raw(index)), self.labels[index]

    def subset(self, indices: Sequence[int]) -> "ImageDataset":
        indices = list(indices)
        if self.images is not None:
            return ImageDataset(self.labels[indices].tolist(), images=self.images[indices])
        return ImageDataset(self.labels[indices].tolist(), paths=[self.paths[i] for i in indices])


def load_image_data(data: str, holdout: Holdout = Holdout()) -> ImageData:
    """The source named by ``--data``: ``digits`` or a folder (CIFAR python format, Oxford-IIIT Pet, ImageFolder).

    ``holdout`` chooses the validation images of CIFAR and Pet; digits and image folders have fixed
    validation splits and refuse another.
    """
    if data == "digits":
        _no_holdout(holdout, "digits")
        return load_digits()
    root = Path(data)
    if not root.is_dir():
        raise UserError(
            f"--data {data}: no such directory (digits, a CIFAR python folder, an Oxford-IIIT Pet folder, "
            f"or an image folder with train/ and val/)"
        )
    for name in ("cifar-10-batches-py", "cifar-100-python"):
        if (root / name).is_dir():
            root = root / name
    if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
        return load_cifar(root, 10, holdout)
    if (root / "train").is_file() and (root / "test").is_file():
        return load_cifar(root, 100, holdout)
    if (root / "annotations" / "trainval.txt").is_file():
        return load_pet(root, holdout)
    if (root / "train").is_dir():
        _no_holdout(holdout, "an image folder")
        return load_image_folder(root)
    raise UserError(
        f"--data {root}: not a CIFAR python folder (data_batch_1 … test_batch, or train/test), an Oxford-IIIT "
        f"Pet folder (images/, annotations/trainval.txt), nor an image folder with train/ and val/"
    )


def _no_holdout(holdout: Holdout, source: str) -> None:
    if not holdout.is_default:
        raise UserError(f"--val-split/--val-size/--val-split-seed: {source} has a fixed validation split; "
                        f"these flags choose the hold-out of CIFAR and Oxford-IIIT Pet")  # fmt: skip


def _stratified_split(labels: Sequence[int], held_out: float | int,
                      seed: int = SPLIT_SEED) -> Tuple[List[int], List[int]]:  # fmt: skip
    """Indices kept and held out, always the same (``random_state=seed``): stratified by label where
    every class has two examples and the held-out part can hold one of each, a plain random split otherwise."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    if len(indices) < 2:
        raise UserError(f"{len(indices)} training image(s): too few to hold out a validation set")
    try:
        kept, out = train_test_split(indices, test_size=held_out, random_state=seed, stratify=np.asarray(labels))
    except ValueError:  # a class too small to stratify (tiny data sets)
        kept, out = train_test_split(indices, test_size=held_out, random_state=seed)
    return sorted(kept.tolist()), sorted(out.tolist())


# ---------------------------------------------------------------------------------------------
# scikit-learn digits


def load_digits() -> ImageData:
    """scikit-learn's 1,797 handwritten digits: 1,077 train, 360 validation, 360 test (fixed, stratified)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    grey = torch.from_numpy(np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8))  # [N, 8, 8]
    images = grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    labels = digits.target.tolist()
    everything = ImageDataset(labels, images=images)
    rest, test = _stratified_split(labels, DIGITS_HELD_OUT)
    train, val = _stratified_split([labels[i] for i in rest], DIGITS_HELD_OUT)
    train, val = [rest[i] for i in train], [rest[i] for i in val]
    return ImageData(
        kind="digits",
        description="scikit-learn digits (1,797 8x8 images, 10 classes; fixed stratified split, random_state=0)",
        classes=[str(d) for d in range(10)],
        train=everything.subset(train), val=everything.subset(val), test=everything.subset(test),
        test_split="test", in_memory=True,
    )  # fmt: skip


def digits_batches(loaded: Any, options: Any) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``analyze-sensitivity --batches intradist.trainers.vision_data:digits_batches``: the digits test split.

    Evaluation transform at the ``image_size`` recorded in the ``metrics.json`` beside the
    checkpoint (8 when there is none), in batches of ``options.batch_size``; with
    ``options.max_batches`` a seeded random subset, like intradist.analysis.batches does for image folders.
    """
    metrics = Path(loaded.path).parent / "metrics.json"
    image_size = json.loads(metrics.read_text()).get("image_size", 8) if metrics.is_file() else 8
    data = load_digits()
    test = data.test
    test.transform = make_transform(image_size, train=False, augment="none", kind="digits",
                                    native_size=NATIVE_SIZES["digits"])  # fmt: skip
    count = len(test)
    order = list(range(count))
    if options.max_batches is not None and options.max_batches * options.batch_size < count:
        generator = torch.Generator().manual_seed(options.seed)
        order = torch.randperm(count, generator=generator)[: options.max_batches * options.batch_size].tolist()
    for start in range(0, len(order), options.batch_size):
        chunk = order[start : start + options.batch_size]
        images, labels = zip(*(test[i] for i in chunk))
        yield torch.stack(images), torch.stack(labels)


# ---------------------------------------------------------------------------------------------
# CIFAR python format


class _NumpyArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: the globals CIFAR's python pickles use."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR data file")
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core (same functions)
            module = "numpy._core." + module[len("numpy.core.") :]
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> Dict[str, Any]:
    """One file of the official CIFAR python format as a dict with ``str`` keys (read without running code)."""
    if not path.is_file():
        raise UserError(f"{path}: missing (the CIFAR python format has data_batch_1 … data_batch_5 and test_batch, "
                        f"or train and test for CIFAR-100)")  # fmt: skip
    try:
        with path.open("rb") as handle:
            content = _NumpyArraysOnly(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise UserError(f"{path}: not a CIFAR python-format pickle ({error})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: not a CIFAR python-format pickle (holds a {type(content).__name__}, not a dict)")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _cifar_arrays(path: Path, label_key: str) -> Tuple[torch.Tensor, List[int]]:
    batch = read_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise UserError(f"{path}: a CIFAR batch needs 'data' and {label_key!r}; it has {', '.join(map(str, batch))}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{path}: 'data' must be uint8 rows of 3072 values (32x32 RGB), got {data.dtype} {data.shape}")
    labels = [int(label) for label in batch[label_key]]
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(data)} images but {len(labels)} labels")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), labels


def load_cifar(root: Path, num_classes: int, holdout: Holdout = Holdout()) -> ImageData:
    """CIFAR-10 (``data_batch_1`` … ``_5``, ``test_batch``) or CIFAR-100 (``train``, ``test``);
    ``holdout`` validates."""
    if num_classes == 10:
        train_files, test_file, label_key, meta_file, names_key = (
            [root / f"data_batch_{i}" for i in range(1, 6)], root / "test_batch", "labels", root / "batches.meta",
            "label_names")  # fmt: skip
    else:
        train_files, test_file, label_key, meta_file, names_key = (
            [root / "train"], root / "test", "fine_labels", root / "meta", "fine_label_names")  # fmt: skip
    parts = [_cifar_arrays(path, label_key) for path in train_files]
    train_images = torch.cat([images for images, _ in parts])
    train_labels = [label for _, labels in parts for label in labels]
    test_images, test_labels = _cifar_arrays(test_file, label_key)
    classes = [str(i) for i in range(num_classes)]
    if meta_file.is_file():
        names = read_cifar_pickle(meta_file).get(names_key)
        if isinstance(names, list) and len(names) == num_classes:
            classes = [name.decode() if isinstance(name, bytes) else str(name) for name in names]
    bad = next((label for label in train_labels + test_labels if not 0 <= label < num_classes), None)
    if bad is not None:
        raise UserError(f"{root}: label {bad} is outside 0-{num_classes - 1} of CIFAR-{num_classes}")
    everything = ImageDataset(train_labels, images=train_images)
    train, val = holdout.split(train_labels)
    return ImageData(
        kind=f"cifar{num_classes}",
        description=f"CIFAR-{num_classes} python format in {root} ({len(train_labels)} training images, "
                    f"{len(val)} held out for validation ({holdout.method}); {len(test_labels)} test images)",
        classes=classes, train=everything.subset(train), val=everything.subset(val),
        test=ImageDataset(test_labels, images=test_images), test_split="test", in_memory=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Oxford-IIIT Pet


def _pet_list(root: Path, name: str) -> List[Tuple[str, int]]:
    path = root / "annotations" / name
    if not path.is_file():
        raise UserError(f"{path}: missing (the Oxford-IIIT Pet layout has annotations/trainval.txt and test.txt)")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise UserError(f"{path}, line {number}: expected 'IMAGE CLASS_ID SPECIES BREED_ID', got {line.strip()!r}")
        entries.append((fields[0], int(fields[1]) - 1))
    if not entries:
        raise UserError(f"{path}: no examples")
    return entries


def load_pet(root: Path, holdout: Holdout = Holdout()) -> ImageData:
    """Oxford-IIIT Pet: trainval (``holdout`` validates) and test, 37 breeds named after the image files."""
    trainval, test = _pet_list(root, "trainval.txt"), _pet_list(root, "test.txt")
    names: Dict[int, str] = {}
    for image, class_id in trainval + test:
        names.setdefault(class_id, image.rsplit("_", 1)[0])
    num_classes = max(names) + 1
    classes = [names.get(i, str(i)) for i in range(num_classes)]

    def dataset(entries: List[Tuple[str, int]]) -> ImageDataset:
        paths = [root / "images" / f"{image}.jpg" for image, _ in entries]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserError(f"{missing[0]}: missing{more}; the Oxford-IIIT Pet layout keeps images/NAME.jpg")
        return ImageDataset([label for _, label in entries], paths=paths)

    everything = dataset(trainval)
    train, val = holdout.split(everything.labels.tolist())
    return ImageData(
        kind="pet",
        description=f"Oxford-IIIT Pet in {root} ({len(trainval)} trainval images, {len(val)} held out for "
                    f"validation ({holdout.method}); "
                    f"{len(test)} test images; {num_classes} classes)",
        classes=classes, train=everything.subset(train), val=everything.subset(val), test=dataset(test),
        test_split="test", in_memory=False,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# ImageFolder trees


def _folder_split(root: Path, split: str, classes: List[str]) -> ImageDataset:
    folder = root / split
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in classes)
    if extra:
        raise UserError(f"{folder}: class folders {', '.join(extra[:3])} are not in {root / 'train'}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue
        for path in sorted((folder / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(label)
    if not paths:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return ImageDataset(labels, paths=paths)


def load_image_folder(root: Path) -> ImageData:
    """``train/``, ``val/`` and optional ``test/``, one sub-folder per class (the classes of ``train/``)."""
    if not (root / "val").is_dir():
        raise UserError(f"--data {root}: has train/ but no val/ (an image folder needs train/ and val/)")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{root / 'train'}: no class folders (one sub-folder of images per class)")
    train, val = _folder_split(root, "train", classes), _folder_split(root, "val", classes)
    has_test = (root / "test").is_dir()
    test = _folder_split(root, "test", classes) if has_test else val
    return ImageData(
        kind="folder",
        description=f"image folder {root} ({len(classes)} classes; {len(train)} train, {len(val)} val, "
                    + (f"{len(test)} test images)" if has_test else "no test/: test metrics on val/)"),
        classes=classes, train=train, val=val, test=test, test_split="test" if has_test else "val",
        in_memory=False,
    )  # fmt: skip
