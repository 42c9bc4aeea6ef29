"""Batches for the loss of a loaded model, made the way its framework makes them.

- fairseq: a split of the data-bin through the checkpoint's own task and batch iterator;
- transformers: the natural data of the model's head (:mod:`intradist.analysis.text_batches`: a TSV
  or JSONL file, optionally gzipped, PAN-X, SQuAD JSON, plain text), tokenized with the model
  folder's tokenizer;
- torchvision and state dicts: an image folder (one sub-folder per class); for a checkpoint of an
  ``intradist train vision`` run, read with the run's evaluation transform and class ids;
- anything else: a hook ``"module:function"`` returning batches for ``function(loaded, options)``.

Batches are materialised on ``options.device``; the same seed gives the same batches. When
``max_batches`` keeps only part of the data, the kept part is a random one drawn with the seed.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch

from intradist.analysis.image_transforms import IMAGENET_MEAN, IMAGENET_STD
from intradist.analysis.loaders.model import LoadedModel
from intradist.analysis.loaders.user_code import import_callable
from intradist.analysis.loaders.vision_run import VisionRun
from intradist.errors import UserError
from intradist.results import parse_jsonl

#: ``--image-size`` of an image folder that no train-vision run describes.
DEFAULT_IMAGE_SIZE = 224


@dataclass
class BatchOptions:
    """Where the batches come from and how many; every field has a command-line flag of the same name."""

    data: Optional[Path] = None  # fairseq data-bin (default: the checkpoint's), a TSV/JSONL file, or an image folder
    split: str = "valid"  # fairseq
    max_batches: Optional[int] = None
    batch_size: int = 32
    max_tokens: Optional[int] = 4096  # fairseq
    seed: int = 1
    text_fields: Optional[Tuple[str, ...]] = None  # TSV/JSONL columns (two make a pair); None: the head's
    label_field: Optional[str] = None  # None: the head's (sequence classification: label)
    max_length: Optional[int] = None  # None: the run's, else 128 (question answering 384)
    image_size: Optional[int] = None  # None: the train-vision run's, else 224
    hook: Optional[str] = None  # "module:function" -> function(loaded, options) -> Iterable[batch]
    device: str = "cpu"


def make_batches(loaded: LoadedModel, options: BatchOptions) -> List[Any]:
    """The batches for ``loaded.loss_fn``, on ``options.device``, deterministic for ``options.seed``."""
    _check_counts(options)
    if options.hook is not None:
        _, hook = import_callable(options.hook, "--batches")
        batches = list(itertools.islice(hook(loaded, options), options.max_batches))
        if not batches:
            raise UserError(f"--batches {options.hook}: no examples (the hook returned no batches)")
    elif loaded.framework == "fairseq":
        batches = _fairseq_batches(loaded, options)
    elif loaded.framework == "transformers":
        from intradist.analysis.text_batches import text_batches  # it builds on this module's readers

        batches = text_batches(loaded, options)
    else:
        batches = _image_batches(loaded, options)
    return [to_device(batch, options.device) for batch in batches]


def to_device(batch: Any, device: Union[str, torch.device]) -> Any:
    """``batch`` with every tensor in it (nested in dicts, lists, tuples) moved to ``device``."""
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def _check_counts(options: BatchOptions) -> None:
    counts = {
        "--batch-size": options.batch_size,
        "--max-batches": options.max_batches,
        "--max-tokens": options.max_tokens,
        "--max-length": options.max_length,
        "--image-size": options.image_size,
    }
    for flag, value in counts.items():
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")


def _kept(count: int, options: BatchOptions) -> List[int]:
    """Example indices in order, or a seeded random subset when ``max_batches`` keeps fewer."""
    if options.max_batches is None or options.max_batches * options.batch_size >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(options.seed)
    return torch.randperm(count, generator=generator)[: options.max_batches * options.batch_size].tolist()


def _chunks(items: Sequence[Any], size: int) -> List[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


# ---------------------------------------------------------------------------------------------
# fairseq


def _fairseq_batches(loaded: LoadedModel, options: BatchOptions) -> List[Any]:
    """The split through the checkpoint's task; batch order shuffled with the seed when truncated."""
    from fairseq import utils

    task, data_dir = loaded.extras["task"], Path(loaded.extras["data"])
    if options.data is not None and Path(options.data).resolve() != data_dir.resolve():
        raise UserError(
            f"--data {options.data}: the model was loaded with the dictionaries of {data_dir}; "
            f"load it with the same data directory"
        )
    try:
        task.load_dataset(options.split)
    except FileNotFoundError:
        splits = sorted({file.name.split(".")[0] for file in data_dir.glob("*.idx")})
        raise UserError(
            f"{data_dir}: no split {options.split!r}; pass --split (there: {', '.join(splits) or 'none'})"
        ) from None
    dataset = task.dataset(options.split)
    if len(dataset) == 0:
        raise UserError(f"{data_dir}: no examples in split {options.split!r}")
    with warnings.catch_warnings():  # fairseq's loader asks for pinned memory even where there is no GPU to pin for
        warnings.filterwarnings("ignore", message="'pin_memory' argument is set as true", category=UserWarning)
        iterator = task.get_batch_iterator(
            dataset=dataset,
            max_tokens=options.max_tokens,
            max_sentences=options.batch_size,
            max_positions=utils.resolve_max_positions(task.max_positions(), loaded.model.max_positions()),
            ignore_invalid_inputs=True,
            required_batch_size_multiple=1,
            seed=options.seed,
            num_workers=0,
        ).next_epoch_itr(shuffle=options.max_batches is not None)
        batches = [sample for sample in itertools.islice(iterator, options.max_batches) if sample]
    if not batches:
        raise UserError(f"{data_dir}: no examples in split {options.split!r} fit the model's maximum positions")
    return batches


# ---------------------------------------------------------------------------------------------
# Text classification files


def read_table(path: Path) -> Tuple[List[str], List[Dict[str, Any]]]:
    """Columns and rows of a TSV file with a header row, or of a JSONL file (``.gz`` read as gzip)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file (a TSV or JSONL file with the text and label columns)")
    name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            if name.endswith((".jsonl", ".json")):
                return _read_jsonl(path, handle)
            return _read_tsv(path, handle)
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise UserError(f"{path}: cannot be read as UTF-8 text ({error})") from None


def _read_jsonl(path: Path, lines: Iterable[str]) -> Tuple[List[str], List[Dict[str, Any]]]:
    rows = parse_jsonl(path, lines)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return columns, rows


def _read_tsv(path: Path, lines: Iterable[str]) -> Tuple[List[str], List[Dict[str, Any]]]:
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    columns = next(reader, [])
    rows = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(columns):
            raise UserError(f"{path}, line {reader.line_num}: {len(row)} fields, the header has {len(columns)}")
        rows.append(dict(zip(columns, row)))
    return columns, rows


# ---------------------------------------------------------------------------------------------
# Image folders


def _image_batches(loaded: LoadedModel, options: BatchOptions) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` from an ImageFolder tree: resize, centre crop, ImageNet normalisation.

    For the checkpoint of an ``intradist train vision`` run: the run's evaluation transform and its
    class ids (a class folder the run does not know is refused; a class may be absent).
    """
    from torchvision import transforms
    from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader, make_dataset
    from torchvision.transforms.functional import pil_to_tensor

    if options.data is None:
        raise UserError("--data DIR is needed: an image folder with one sub-folder of images per class")
    root = Path(options.data)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory (an image folder with one sub-folder of images per class)")
    folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    run: Optional[VisionRun] = loaded.extras.get("vision_run")
    if run is not None:
        class_ids = run.class_ids(root, folders)
        transform = run.transform(options.image_size)
        read = lambda path: transform(pil_to_tensor(default_loader(path)))  # noqa: E731  (the trainer's uint8 path)
    else:
        num_classes = loaded.extras.get("num_classes")
        if num_classes is not None and len(folders) > num_classes:
            raise UserError(f"{root}: {len(folders)} class folders but the model has {num_classes} classes (--num-classes)")
        class_ids = {name: index for index, name in enumerate(folders)}
        size = options.image_size or DEFAULT_IMAGE_SIZE
        pipeline = transforms.Compose([
            transforms.Resize(size), transforms.CenterCrop(size),
            transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])  # fmt: skip
        read = lambda path: pipeline(default_loader(path))  # noqa: E731
    try:
        samples = make_dataset(str(root), class_ids, extensions=IMG_EXTENSIONS) if class_ids else []
    except FileNotFoundError as error:
        raise UserError(f"{root}: no examples ({error})") from None
    if not samples:
        raise UserError(f"{root}: no examples (no class folder with images)")
    batches = []
    for chunk in _chunks(_kept(len(samples), options), options.batch_size):
        images, labels = [], []
        for index in chunk:
            path, label = samples[index]
            try:
                images.append(read(path))
            except OSError as error:  # PIL: not an image, or a truncated one
                raise UserError(f"{path}: cannot read the image ({error})") from None
            labels.append(label)
        batches.append((torch.stack(images), torch.tensor(labels)))
    return batches
