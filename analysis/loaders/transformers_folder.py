"""Hugging Face transformers model folders, loaded with the head they were trained with; transformers' logging kept quiet.

The head comes from ``config.architectures`` (``BertForTokenClassification`` -> token
classification) or from ``head``: one of :data:`HEADS`. A folder of a bare encoder or decoder
(``BertModel``) gets the head ``head`` names (``num_labels`` labels for a classifier), newly
initialised from ``seed``; a folder whose head is another than ``head`` is refused. Weights are
one file (``model.safetensors``, ``pytorch_model.bin``) or shards listed in an index
(``model.safetensors.index.json``, ``pytorch_model.bin.index.json``). A folder
``intradist train xtreme`` wrote also brings the encoding its batches were made with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from intradist.analysis.loaders.model import LoadedModel, parameter_count, seeded
from intradist.analysis.loaders.safe_reading import first_line, torch_load
from intradist.errors import UserError
from intradist.provenance import sha256_of

#: Weight files of a Hugging Face model folder, preferred first.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: The indexes of sharded weights, in the same order.
HF_WEIGHT_INDEXES = tuple(f"{name}.index.json" for name in HF_WEIGHT_FILES)

#: Files that hold a tokenizer's vocabulary (a folder with none of them has no usable tokenizer).
HF_VOCABULARY_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
)  # fmt: skip


@dataclass(frozen=True)
class Head:
    """An output head: the transformers class that builds it and the architecture names that end with it."""

    name: str
    auto_class: str
    endings: Tuple[str, ...]
    classifier: bool  # takes --num-labels


#: The heads analysed, by ``--head`` name; each batch maker in :mod:`intradist.analysis.text_batches`.
HEADS: Dict[str, Head] = {head.name: head for head in (
    Head("sequence-classification", "AutoModelForSequenceClassification", ("ForSequenceClassification",), True),
    Head("token-classification", "AutoModelForTokenClassification", ("ForTokenClassification",), True),
    Head("question-answering", "AutoModelForQuestionAnswering", ("ForQuestionAnswering",), False),
    Head("masked-lm", "AutoModelForMaskedLM", ("ForMaskedLM",), False),
    Head("causal-lm", "AutoModelForCausalLM", ("ForCausalLM", "LMHeadModel"), False),
    Head("seq2seq-lm", "AutoModelForSeq2SeqLM", ("ForConditionalGeneration",), False),
)}  # fmt: skip

#: The ``metrics.json`` settings of an ``intradist train xtreme`` run that decide how its inputs were encoded.
XTREME_ENCODING = ("max_length", "long_sentences", "extra_sep", "doc_stride", "doc_stride_meaning", "pad_to_max_length")


def head_of(architecture: str) -> Optional[str]:
    """The head an architecture name ends with (None for a bare model or one not analysed)."""
    return next((head.name for head in HEADS.values() if architecture.endswith(head.endings)), None)


def load_transformers(folder: Path, trust_checkpoint: bool, num_labels: Optional[int], seed: int,
                      head: Optional[str] = None) -> LoadedModel:  # fmt: skip
    """The folder's model with its head (or ``head``); a missing head is initialised from ``seed``."""
    import transformers

    if not (folder / "config.json").is_file():
        raise UserError(
            f"{folder}: a directory without config.json is no Hugging Face model folder; "
            f"give a model folder or a checkpoint file (.pt, .pth, .safetensors)"
        )
    if head is not None and head not in HEADS:
        raise UserError(f"--head {head}: unknown; choose one of {', '.join(HEADS)}")
    weights = read_folder_weights(folder, trust_checkpoint)
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}/config.json: not a usable transformers config ({first_line(error)})") from None
    architecture = (config.architectures or [type(config).__name__])[0]
    chosen = _chosen_head(folder, architecture, head_of(architecture), head, num_labels, config)
    if chosen.classifier and num_labels is not None:
        config.num_labels = num_labels
    try:
        with seeded(seed):
            model, info = from_pretrained(chosen.auto_class, folder, weights, config)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"{folder}: cannot be loaded as a {chosen.name} model ({first_line(error)})") from None
    new = sorted(info["missing_keys"])
    labels = f", {model.config.num_labels} labels" if chosen.classifier else ""
    description = (
        f"transformers model folder: {architecture} ({config.model_type}) loaded as {type(model).__name__} "
        f"({chosen.name} head{labels}), {parameter_count(model)}, weights from {_weights_name(weights.files)}"
    )
    if new:
        description += f"; {chosen.name} head newly initialised (seed {seed}: {', '.join(new)})"
    if weights.trusted:
        description += "; read with arbitrary unpickling (trusted checkpoint)"
    encoding = _xtreme_encoding(folder, config)
    if encoding:
        description += f"; inputs encoded as its intradist train xtreme run ({config.xtreme_task})"
    return LoadedModel(
        model=model,
        framework="transformers",
        path=folder,
        sha256=weights_sha256(weights.files),
        description=description,
        loss_fn=model_loss,
        extras={"tokenizer": _tokenizer(folder), "head": chosen.name, "encoding": encoding},
    )


def _chosen_head(folder: Path, architecture: str, own: Optional[str], head: Optional[str],
                 num_labels: Optional[int], config: Any) -> Head:  # fmt: skip
    """The head to load: the folder's own, ``head``, or a new sequence classifier for ``num_labels``."""
    if head is not None and own is not None and head != own:
        raise UserError(f"{folder}: {architecture} has a {own} head, not {head}; drop --head (or give a folder "
                        f"without a head to analyse it with a new {head} head)")  # fmt: skip
    name = head or own or ("sequence-classification" if num_labels is not None else None)
    if name is None:
        raise UserError(
            f"{folder}: {architecture} has no sequence-classification head; pass --num-labels N to add a newly "
            f"initialised one, or --head ({', '.join(HEADS)})"
        )
    chosen = HEADS[name]
    if num_labels is not None and not chosen.classifier:
        raise UserError(f"--num-labels {num_labels}: a {name} head has no labels to set; drop --num-labels")
    if own is None and chosen.classifier and num_labels is None:
        raise UserError(f"{folder}: {architecture} has no {name} head; pass --num-labels N to add a newly "
                        f"initialised one")  # fmt: skip
    if own is not None and num_labels is not None and num_labels != config.num_labels:
        raise UserError(
            f"{folder}: {architecture} has {config.num_labels} labels, --num-labels says {num_labels}; drop --num-labels"
        )
    return chosen


def weight_files(folder: Path) -> List[Path]:
    """The folder's weights: one file, or the shards its index lists (each present), in the index's order."""
    single = next((folder / name for name in HF_WEIGHT_FILES if (folder / name).is_file()), None)
    if single is not None:
        return [single]
    index = next((folder / name for name in HF_WEIGHT_INDEXES if (folder / name).is_file()), None)
    if index is None:
        raise UserError(f"{folder}: has config.json but no weights file ({' or '.join(HF_WEIGHT_FILES)}, or "
                        f"shards with {' or '.join(HF_WEIGHT_INDEXES)})")  # fmt: skip
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = list(dict.fromkeys(str(name) for name in weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"{index}: not an index of sharded weights (a 'weight_map' of tensor -> file; {error})") from None
    if not shards:
        raise UserError(f"{index}: lists no shards")
    paths = [folder / name for name in shards]
    bad = next((path for path in paths if path.parent != folder or not path.is_file()), None)
    if bad is not None:
        raise UserError(f"{index}: lists {bad.name}, which is not a file in {folder}")
    return paths


@dataclass(frozen=True)
class FolderWeights:
    """A model folder's weight files, and its pickled (``.bin``) weights read once, weights-only."""

    files: List[Path]
    state_dict: Optional[Dict[str, torch.Tensor]] = None  # None: safetensors, which transformers reads itself
    trusted: bool = False  # read with arbitrary unpickling (--trust-checkpoint)


def read_folder_weights(folder: Path, trust_checkpoint: bool = False, trust_offered: bool = True) -> FolderWeights:
    """The folder's weight files; ``.bin`` ones (shards merged) read here, weights-only unless trusted,
    so that a refusal is one line naming the file and transformers need not unpickle them again."""
    files = weight_files(folder)
    if files[0].suffix != ".bin":
        return FolderWeights(files)
    state: Dict[str, torch.Tensor] = {}
    trusted = False
    for path in files:
        shard, unpickled = torch_load(path, trust_checkpoint, trust_offered)
        if not isinstance(shard, Mapping) or not all(isinstance(value, torch.Tensor) for value in shard.values()):
            raise UserError(f"{path}: holds no state dict (a mapping of names to tensors)")
        state.update(shard)
        trusted |= unpickled
    return FolderWeights(files, state, trusted)


def from_pretrained(auto_class: str, source: Union[Path, str], weights: Optional[FolderWeights], config: Any,
                    **options: Any) -> Tuple[Any, Dict[str, Any]]:  # fmt: skip
    """transformers' ``from_pretrained`` of a model folder (``weights`` read from it by
    :func:`read_folder_weights`) or of a hub name (``weights`` None), with ``config``; the model in
    eval mode and the loading info. ``.bin`` weights are handed over instead of being read a second
    time. Raises KeyError when ``auto_class`` has no model for the config's type."""
    import transformers

    auto = getattr(transformers, auto_class)
    with quiet_transformers():
        if weights is None or weights.state_dict is None:
            return auto.from_pretrained(source, config=config, local_files_only=weights is not None,
                                        output_loading_info=True, **options)  # fmt: skip
        # transformers takes a state dict only without a folder, so through the concrete class.
        model_class = auto._model_mapping[type(config)]
        return model_class.from_pretrained(None, config=config, state_dict=weights.state_dict, output_loading_info=True,
                                           **options)  # fmt: skip


def weights_sha256(weights: List[Path]) -> str:
    """SHA-256 of a single weights file; of sharded weights, that of their ``sha256sum`` listing in index order."""
    if len(weights) == 1:
        return sha256_of(weights[0])
    listing = "".join(f"{sha256_of(path)}  {path.name}\n" for path in weights)
    return hashlib.sha256(listing.encode()).hexdigest()


def _weights_name(weights: List[Path]) -> str:
    return weights[0].name if len(weights) == 1 else f"{len(weights)} shards ({weights[0].name}, ...)"


def _xtreme_encoding(folder: Path, config: Any) -> Dict[str, Any]:
    """How the inputs of an ``intradist train xtreme`` run were encoded (its metrics.json); {} for other folders."""
    metrics = folder / "metrics.json"
    if getattr(config, "xtreme_task", None) is None or not metrics.is_file():
        return {}
    try:
        settings = json.loads(metrics.read_text(encoding="utf-8")).get("settings", {})
    except (ValueError, AttributeError):
        return {}
    return {key: settings[key] for key in XTREME_ENCODING if isinstance(settings, dict) and key in settings}


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
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        return None


def model_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss of its head for a batch holding the head's targets.

    Cross-entropy of the classes (``labels``; mean squared error for a one-label classifier), of each
    labelled token (token classification, masked LM), of each next token (causal LM), of each target
    token (sequence-to-sequence), or the mean of the start and end cross-entropies (``start_positions``,
    ``end_positions``); positions labelled -100 do not count.
    """
    return model(**batch).loss
