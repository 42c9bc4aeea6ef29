"""Batches of a transformers model, each head on its natural data, with the targets of its natural loss.

- ``sequence-classification``: a TSV (header row) or JSON-lines file, ``--text-fields`` (one, or two
  for pairs; default ``sentence``) and ``--label-field`` (default ``label``): labels by the config's
  label2id when every label is in it, integers as they are, else the sorted names;
- ``token-classification``: JSON lines ``{"tokens": [...], "ner_tags": [...]}`` (the fields by
  ``--text-fields``/``--label-field``; tags as names of the config's labels or as ids), or a PAN-X
  ``token<TAB>tag`` file; each word's label on its first sub-token, as ``intradist train xtreme``
  encodes them (:mod:`intradist.analysis.ner_data`);
- ``question-answering``: SQuAD v1.1 / TyDiQA-GoldP JSON, cut into windows with the first answer's
  start and end token (:mod:`intradist.analysis.qa_data`);
- ``masked-lm``: a text field (``text``) of a TSV or JSON-lines file, or the lines of a ``.txt``
  file; 15 % of the non-special tokens of each example (at least one) are predicted, 80 % of them
  replaced by the mask token, 10 % by a random token, 10 % kept (BERT's recipe), drawn with the seed;
- ``causal-lm``: the same texts, every next token predicted;
- ``seq2seq-lm``: a source and a target field (``source``, ``target``), every target token predicted.

Padding never counts in a loss (targets -100). ``--max-length`` bounds each example (default 128,
question answering 384); a folder ``intradist train xtreme`` wrote brings its own encoding.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from intradist.analysis.batches import BatchOptions, _chunks, _kept, read_table
from intradist.analysis.loaders.model import LoadedModel
from intradist.analysis.ner_data import IGNORE, PANX_LABELS, Sentence, encode, read_conll
from intradist.analysis.qa_data import read_squad, train_features
from intradist.errors import UserError

Batch = Dict[str, torch.Tensor]

#: Per head: the default ``--text-fields`` and ``--label-field`` (None: the head reads no such field).
DEFAULT_FIELDS: Dict[str, Tuple[Optional[Tuple[str, ...]], Optional[str]]] = {
    "sequence-classification": (("sentence",), "label"),
    "token-classification": (("tokens",), "ner_tags"),
    "question-answering": (None, None),
    "masked-lm": (("text",), None),
    "causal-lm": (("text",), None),
    "seq2seq-lm": (("source",), "target"),
}
#: ``--max-length`` unless given (or recorded by the run): what the trainers use.
DEFAULT_MAX_LENGTH = 128
QA_MAX_LENGTH = 384
#: Masked LM: the share of tokens predicted, and of those the shares replaced by the mask and by a random token.
MASKED_SHARE, MASK_SHARE, RANDOM_SHARE = 0.15, 0.8, 0.1


def text_batches(loaded: LoadedModel, options: BatchOptions) -> List[Batch]:
    """The batches of ``loaded``'s head from ``options.data``, tokenized with the folder's tokenizer."""
    tokenizer = loaded.extras["tokenizer"]
    if tokenizer is None:
        raise UserError(f"{loaded.path}: the model folder has no tokenizer files; give --batches module:function")
    head = loaded.extras.get("head", "sequence-classification")
    if options.data is None:
        raise UserError(f"--data FILE is needed: the {head} head reads {_READS[head]}")
    encoding = dict(loaded.extras.get("encoding") or {})
    if options.max_length is not None:
        encoding["max_length"] = options.max_length
    encoding.setdefault("max_length", QA_MAX_LENGTH if head == "question-answering" else DEFAULT_MAX_LENGTH)
    text_fields, label_field = _fields(head, options)
    maker = _MAKERS[head]
    batches = maker(loaded, tokenizer, Path(options.data), options, encoding, text_fields, label_field)
    return batches[: options.max_batches] if options.max_batches is not None else batches


#: What each head reads, for messages.
_READS = {
    "sequence-classification": "a TSV or JSON-lines file with the text and label columns",
    "token-classification": 'JSON lines {"tokens": [...], "ner_tags": [...]} or a PAN-X token<TAB>tag file',
    "question-answering": "SQuAD / TyDiQA-GoldP JSON (a .json file with 'data')",
    "masked-lm": "a text field of a TSV or JSON-lines file, or a .txt file (one example a line)",
    "causal-lm": "a text field of a TSV or JSON-lines file, or a .txt file (one example a line)",
    "seq2seq-lm": "a TSV or JSON-lines file with source and target fields",
}


def _fields(head: str, options: BatchOptions) -> Tuple[Tuple[str, ...], Optional[str]]:
    """``--text-fields`` and ``--label-field``, or the head's defaults; refused where the head reads other fields."""
    default_text, default_label = DEFAULT_FIELDS[head]
    text = tuple(options.text_fields) if options.text_fields is not None else default_text
    label = options.label_field if options.label_field is not None else default_label
    extra_text = default_text is None and options.text_fields is not None
    if extra_text or (default_label is None and options.label_field is not None):
        flag = "--text-fields" if extra_text else "--label-field"
        raise UserError(f"{flag}: the {head} head reads {_READS[head]}; drop {flag}")
    most = 2 if head == "sequence-classification" else 1
    if text is not None and not 1 <= len(text) <= most:
        pairs = ", or two for sentence pairs" if most == 2 else ""
        raise UserError(f"--text-fields {','.join(text)}: give one column{pairs} for the {head} head")
    return text or (), label


def _plain_name(path: Path) -> str:
    return path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name


def _rows(path: Path, fields: Sequence[str]) -> List[Dict[str, Any]]:
    """The rows of a TSV or JSON-lines file, each with every one of ``fields``."""
    columns, rows = read_table(path)
    if not rows:
        raise UserError(f"{path}: no examples (no data rows)")
    for column in fields:
        missing = next((number for number, row in enumerate(rows, 1) if column not in row), None)
        if missing is not None:
            where = "" if column not in columns else f" (absent from example {missing})"
            raise UserError(f"{path}: no column {column!r}{where}; its columns: {', '.join(map(str, columns))}")
    return rows


def _pad_id(tokenizer: Any) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def _padded(rows: Sequence[Dict[str, Any]], pad_id: int) -> Batch:
    """One batch of tensors: each list column padded on the right to its longest row (targets with -100)."""
    fills = {"input_ids": pad_id, "labels": IGNORE}
    batch = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], (list, tuple)):
            width = max(len(value) for value in values)
            values = [list(value) + [fills.get(key, 0)] * (width - len(value)) for value in values]
        batch[key] = torch.tensor(values)
    return batch


def _batched(columns: Dict[str, List[Any]], options: BatchOptions, pad_id: int) -> List[Batch]:
    """Rows of ``columns`` (lists of the same length) in batches of ``options.batch_size``."""
    count = len(next(iter(columns.values())))
    rows = [{key: values[i] for key, values in columns.items()} for i in range(count)]
    return [_padded(chunk, pad_id) for chunk in _chunks(rows, options.batch_size)]


# ---------------------------------------------------------------------------------------------
# Sequence classification


def _sequence_classification(loaded: LoadedModel, tokenizer: Any, path: Path, options: BatchOptions,
                             encoding: Dict[str, Any], text_fields: Tuple[str, ...], label_field: str) -> List[Batch]:  # fmt: skip
    """Tokenized text (pairs) with ``labels``: label names mapped by the config's label2id, else sorted."""
    rows = _rows(path, (*text_fields, label_field))
    labels = _label_ids(path, [row[label_field] for row in rows], loaded.model.config, label_field)
    batches = []
    for chunk in _chunks(_kept(len(rows), options), options.batch_size):
        texts = [[str(rows[i][field]) for i in chunk] for field in text_fields]
        encoded = tokenizer(*texts, padding=True, truncation=True, max_length=encoding["max_length"], return_tensors="pt")
        batch = dict(encoded)
        batch["labels"] = torch.tensor([labels[i] for i in chunk])
        batches.append(batch)
    return batches


def _label_ids(path: Path, values: List[Any], config: Any, field: str) -> List[Union[int, float]]:
    """Label ids: the config's label2id when every label is in it; integers as they are; else sorted names."""
    if config.num_labels == 1:
        try:
            return [float(value) for value in values]
        except (TypeError, ValueError) as error:
            raise UserError(f"{path}: column {field!r} must hold numbers for a one-label (regression) model ({error})")
    names = [str(value) for value in values]
    label2id = {str(name): index for name, index in (config.label2id or {}).items()}
    if all(name in label2id for name in names):
        ids = [label2id[name] for name in names]
    elif all(isinstance(value, int) or re.fullmatch(r"-?\d+", name) for value, name in zip(values, names)):
        ids = [int(name) for name in names]
    else:
        ordered = sorted(set(names))
        ids = [ordered.index(name) for name in names]
    bad = next((name for name, index in zip(names, ids) if not 0 <= index < config.num_labels), None)
    if bad is not None:
        raise UserError(
            f"{path}: column {field!r} holds {len(set(names))} distinct labels (e.g. {bad!r}) but the model has "
            f"{config.num_labels} labels (--num-labels)"
        )
    return ids


# ---------------------------------------------------------------------------------------------
# Token classification


def _label_names(config: Any) -> List[str]:
    """The config's label names in id order (``LABEL_0`` ... when it names none)."""
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def _named(config: Any) -> bool:
    return _label_names(config) != [f"LABEL_{i}" for i in range(config.num_labels)]


def _sentences(path: Path, config: Any, tokens_field: str, tags_field: str) -> Tuple[List[Sentence], List[str]]:
    """The sentences of a JSON-lines or PAN-X file, and the label names their tags index into."""
    names = _label_names(config)
    if not _plain_name(path).endswith((".jsonl", ".json")):
        labels = names if _named(config) else list(PANX_LABELS)  # a new head: PAN-X's order, train-xtreme's
        if len(labels) > config.num_labels:
            raise UserError(f"{path}: PAN-X has {len(labels)} tags but the model has {config.num_labels} labels "
                            f"(--num-labels)")  # fmt: skip
        return read_conll(path, labels), labels
    rows = _rows(path, (tokens_field, tags_field))
    pairs = []
    for number, row in enumerate(rows, 1):
        tokens, tags = row[tokens_field], row[tags_field]
        if not (isinstance(tokens, list) and isinstance(tags, list) and len(tokens) == len(tags) and tokens):
            raise UserError(f"{path}: example {number}: {tokens_field!r} and {tags_field!r} must be lists of the "
                            f"same, non-zero length")  # fmt: skip
        pairs.append(([str(token) for token in tokens], tags))
    every = [tag for _, tags in pairs for tag in tags]
    if all(isinstance(tag, int) and not isinstance(tag, bool) for tag in every):
        labels = names  # ids
        bad = next((tag for tag in every if not 0 <= tag < config.num_labels), None)
        if bad is not None:
            raise UserError(f"{path}: {tags_field!r} holds tag id {bad}; the model has {config.num_labels} labels")
        return [Sentence(tuple(tokens), tuple(names[tag] for tag in tags)) for tokens, tags in pairs], labels
    tags = sorted({str(tag) for tag in every})
    labels = names if _named(config) else tags + names[len(tags):]  # a new head: the sorted tag names
    unknown = [tag for tag in tags if tag not in labels[: config.num_labels]]
    if unknown:
        raise UserError(f"{path}: {tags_field!r} holds tags {', '.join(map(repr, unknown[:3]))} that are not labels "
                        f"of the model ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")  # fmt: skip
    return [Sentence(tuple(tokens), tuple(str(tag) for tag in tags)) for tokens, tags in pairs], labels


def _token_classification(loaded: LoadedModel, tokenizer: Any, path: Path, options: BatchOptions,
                          encoding: Dict[str, Any], text_fields: Tuple[str, ...], label_field: str) -> List[Batch]:  # fmt: skip
    """Each word's label on its first sub-token, -100 elsewhere, as ``intradist train xtreme`` encodes sentences."""
    sentences, labels = _sentences(path, loaded.model.config, text_fields[0], label_field)
    chosen = [sentences[i] for i in _kept(len(sentences), options)]
    columns, _ = encode(tokenizer, chosen, encoding["max_length"], labels,
                        long_sentences=encoding.get("long_sentences", "truncate"),
                        extra_sep=encoding.get("extra_sep", False))  # fmt: skip
    return _batched(columns, options, _pad_id(tokenizer))


# ---------------------------------------------------------------------------------------------
# Question answering


def qa_windows(tokenizer: Any, encoding: Dict[str, Any]) -> Dict[str, Any]:
    """Window settings of :func:`intradist.analysis.qa_data.train_features`: the run's, else scaled to ``max_length``.

    Without a run: questions of at most min(64, L/4) tokens and windows sharing min(128, half their
    context room) tokens, which at L = 384 are the trainer's defaults (64 and 128).
    """
    max_length = encoding["max_length"]
    query = 64 if "doc_stride" in encoding else min(64, max_length // 4)
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - query
    return {"max_length": max_length, "max_query_length": query,
            "doc_stride": encoding.get("doc_stride", min(128, room // 2)),
            "doc_stride_meaning": encoding.get("doc_stride_meaning", "overlap"),
            "pad_to_max_length": encoding.get("pad_to_max_length", False)}  # fmt: skip


def _question_answering(loaded: LoadedModel, tokenizer: Any, path: Path, options: BatchOptions,
                        encoding: Dict[str, Any], text_fields: Tuple[str, ...], label_field: Optional[str]) -> List[Batch]:  # fmt: skip
    """Windows of (question, context) with ``start_positions`` and ``end_positions`` of the first answer."""
    if _plain_name(path).endswith(".jsonl") or path.suffix != ".json":
        raise UserError(f"{path}: the question-answering head reads {_READS['question-answering']}, not this file")
    examples = read_squad(path)
    chosen = [examples[i] for i in _kept(len(examples), options)]
    return _batched(train_features(tokenizer, chosen, **qa_windows(tokenizer, encoding)), options, _pad_id(tokenizer))


# ---------------------------------------------------------------------------------------------
# Language models


def _texts(path: Path, field: str) -> List[str]:
    """The non-empty lines of a ``.txt`` file, or the ``field`` of every row of a TSV or JSON-lines file."""
    if not _plain_name(path).endswith(".txt"):
        return [str(row[field]) for row in _rows(path, (field,))]
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise UserError(f"{path}: cannot be read as UTF-8 text ({error})") from None
    if not texts:
        raise UserError(f"{path}: no examples (no non-empty lines)")
    return texts


def _encoded_texts(tokenizer: Any, path: Path, options: BatchOptions, encoding: Dict[str, Any], field: str,
                   least: int) -> Dict[str, List[Any]]:  # fmt: skip
    """The chosen texts tokenized (with the special tokens' mask); examples shorter than ``least`` tokens left out."""
    texts = _texts(path, field)
    chosen = [texts[i] for i in _kept(len(texts), options)]
    encoded = tokenizer(chosen, truncation=True, max_length=encoding["max_length"], return_special_tokens_mask=True)
    keep = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) >= least]
    if not keep:
        raise UserError(f"{path}: no example of field {field!r} has {least} tokens or more")
    return {key: [encoded[key][i] for i in keep] for key in encoded if key != "offset_mapping"}


def _causal_lm(loaded: LoadedModel, tokenizer: Any, path: Path, options: BatchOptions, encoding: Dict[str, Any],
               text_fields: Tuple[str, ...], label_field: Optional[str]) -> List[Batch]:  # fmt: skip
    """Texts with ``labels`` = their tokens: the model predicts each from the ones before it."""
    columns = _encoded_texts(tokenizer, path, options, encoding, text_fields[0], least=2)
    columns.pop("special_tokens_mask")
    columns["labels"] = [list(ids) for ids in columns["input_ids"]]
    return _batched(columns, options, _pad_id(tokenizer))


def _masked_lm(loaded: LoadedModel, tokenizer: Any, path: Path, options: BatchOptions, encoding: Dict[str, Any],
               text_fields: Tuple[str, ...], label_field: Optional[str]) -> List[Batch]:  # fmt: skip
    """Texts with 15 % of their tokens masked (BERT's 80/10/10), drawn with the seed; ``labels`` the originals there."""
    if tokenizer.mask_token_id is None:
        raise UserError(f"{loaded.path}: its tokenizer has no mask token, which the masked-lm head needs")
    columns = _encoded_texts(tokenizer, path, options, encoding, text_fields[0], least=1)
    special = columns.pop("special_tokens_mask")
    if not any(0 in row for row in special):
        raise UserError(f"{path}: the examples hold only special tokens; nothing to predict")
    batches = _batched(columns, options, _pad_id(tokenizer))
    generator = torch.Generator().manual_seed(options.seed)
    start = 0
    for batch in batches:
        rows = len(batch["input_ids"])
        candidates = _padded([{"m": [1 - s for s in row]} for row in special[start : start + rows]], 0)["m"].bool()
        start += rows
        _mask(batch, candidates, tokenizer, generator)
    return batches


def _mask(batch: Batch, candidates: torch.Tensor, tokenizer: Any, generator: torch.Generator) -> None:
    """Choose the predicted tokens among ``candidates`` (at least one per row that has one) and replace them."""
    ids = batch["input_ids"]
    chosen = (torch.rand(ids.shape, generator=generator) < MASKED_SHARE) & candidates
    for row in range(len(ids)):
        if not chosen[row].any() and candidates[row].any():
            places = candidates[row].nonzero().flatten()
            chosen[row, places[torch.randint(len(places), (), generator=generator)]] = True
    draw = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(len(tokenizer), ids.shape, generator=generator)
    batch["labels"] = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    masked = ids.masked_fill(chosen & (draw < MASK_SHARE), tokenizer.mask_token_id)
    batch["input_ids"] = torch.where(chosen & (draw >= MASK_SHARE) & (draw < MASK_SHARE + RANDOM_SHARE),
                                     random_ids, masked)  # fmt: skip


def _seq2seq_lm(loaded: LoadedModel, tokenizer: Any, path: Path, options: BatchOptions, encoding: Dict[str, Any],
                text_fields: Tuple[str, ...], label_field: str) -> List[Batch]:  # fmt: skip
    """Sources with ``labels`` = their targets' tokens: the decoder predicts each from the ones before it."""
    rows = _rows(path, (text_fields[0], label_field))
    chosen = [rows[i] for i in _kept(len(rows), options)]
    encoded = tokenizer([str(row[text_fields[0]]) for row in chosen],
                        text_target=[str(row[label_field]) for row in chosen],
                        truncation=True, max_length=encoding["max_length"])  # fmt: skip
    return _batched({key: list(values) for key, values in encoded.items()}, options, _pad_id(tokenizer))


_MAKERS = {
    "sequence-classification": _sequence_classification,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
    "masked-lm": _masked_lm,
    "causal-lm": _causal_lm,
    "seq2seq-lm": _seq2seq_lm,
}
