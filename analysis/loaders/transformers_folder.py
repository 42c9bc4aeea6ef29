"""Hugging Face transformers model folders, loaded as sequence classifiers; transformers' logging kept quiet."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch

from intradist.analysis.loaders.model import LoadedModel, parameter_count, seeded
from intradist.analysis.loaders.safe_reading import first_line, torch_load
from intradist.errors import UserError
from intradist.provenance import sha256_of

#: Weight files of a Hugging Face model folder, preferred first.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

#: Files that hold a tokenizer's vocabulary (a folder with none of them has no usable tokenizer).
HF_VOCABULARY_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
)  # fmt: skip


def load_transformers(folder: Path, trust_checkpoint: bool, num_labels: Optional[int], seed: int) -> LoadedModel:
    """A sequence classifier from a model folder; a missing head is initialised from ``seed``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if not (folder / "config.json").is_file():
        raise UserError(
            f"{folder}: a directory without config.json is no Hugging Face model folder; "
            f"give a model folder or a checkpoint file (.pt, .pth, .safetensors)"
        )
    weights = next((folder / name for name in HF_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise UserError(f"{folder}: has config.json but no weights file ({' or '.join(HF_WEIGHT_FILES)})")
    # transformers reads .bin weights-only itself; read it once here to refuse (or trust) it our way first.
    trusted = weights.suffix == ".bin" and torch_load(weights, trust_checkpoint)[1]
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}/config.json: not a usable transformers config ({first_line(error)})") from None
    architecture = (config.architectures or [type(config).__name__])[0]
    has_head = architecture.endswith("ForSequenceClassification")
    if has_head and num_labels is not None and num_labels != config.num_labels:
        raise UserError(
            f"{folder}: {architecture} has {config.num_labels} labels, --num-labels says {num_labels}; drop --num-labels"
        )
    if not has_head and num_labels is None:
        raise UserError(
            f"{folder}: {architecture} has no sequence-classification head; pass --num-labels N to add a newly "
            f"initialised one"
        )
    head_options = {} if has_head else {"num_labels": num_labels}
    try:
        with seeded(seed), quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                folder, local_files_only=True, weights_only=not trusted, output_loading_info=True, **head_options
            )
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}: cannot be loaded as a sequence classifier ({first_line(error)})") from None
    new = sorted(info["missing_keys"])
    description = (
        f"transformers model folder: {architecture} ({config.model_type}) loaded as {type(model).__name__}, "
        f"{model.config.num_labels} labels, {parameter_count(model)}, weights from {weights.name}"
    )
    if new:
        description += f"; classification head newly initialised (seed {seed}: {', '.join(new)})"
    if trusted:
        description += "; read with arbitrary unpickling (trusted checkpoint)"
    return LoadedModel(
        model=model,
        framework="transformers",
        path=folder,
        sha256=sha256_of(weights),
        description=description,
        loss_fn=sequence_classification_loss,
        extras={"tokenizer": _tokenizer(folder)},
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (the description says what was initialised)."""
    from transformers.utils import logging as hf_logging

    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hub = logging.getLogger("huggingface_hub")  # its warnings about unreachable hosts precede our one-line error
    hub_level = hub.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hub.setLevel(hub_level)
        if progress:
            hf_logging.enable_progress_bar()


def _tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, or None when it has no vocabulary file (batches then need a hook)."""
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in HF_VOCABULARY_FILES):
        return None  # transformers would build an empty tokenizer that maps every word to [UNK]
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        return None


def sequence_classification_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss for a batch holding ``labels`` (cross-entropy; mean squared error for one label)."""
    return model(**batch).loss
