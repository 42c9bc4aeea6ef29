"""Named-entity recognition files (PAN-X / WikiANN in CoNLL form) and their sub-token labels.

A file holds one ``token<TAB>tag`` per line and a blank line after each sentence (the layout
``intradist prepare xtreme`` writes). A word's label goes on its first sub-token; its other
sub-tokens, and the special tokens, get :data:`IGNORE` so that the loss and the evaluation see
exactly one distribution per word (the divergence too, unless ``--intra-positions all``). A sentence
longer than ``--max-length`` is cut, its last words predicted ``O`` at evaluation so that a score
still covers every gold entity, or (``--long-sentences split``, the paper recipe) split into chunks
as the authors' preprocessing does.

``intradist train xtreme`` trains on what :func:`encode` makes and ``analyze-sensitivity`` takes the
loss of a token classifier on the same; the scores (entity F1) are the trainer's
(:mod:`intradist.trainers.ner_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from intradist.errors import UserError

#: PAN-X's tag set, in the order of the classifier's outputs.
PANX_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

#: The target of a position that is not a word's first sub-token (transformers' and PyTorch's convention).
IGNORE = -100


@dataclass(frozen=True)
class Sentence:
    tokens: Tuple[str, ...]
    tags: Tuple[str, ...]


def read_conll(path: Path, labels: Sequence[str] = PANX_LABELS) -> List[Sentence]:
    """The sentences of a ``token<TAB>tag`` file; a one-line error names the file and line of a bad one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start})") from None
    known = set(labels)
    sentences: List[Sentence] = []
    tokens: List[str] = []
    tags: List[str] = []
    for number, line in enumerate(text.split("\n"), start=1):  # only newlines: a token may hold U+2028
        line = line.rstrip("\r")
        if not line.strip():
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags)))
                tokens, tags = [], []
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0]:
            raise UserError(f"{path}: line {number}: expected 'token<TAB>tag', got {line[:60]!r}")
        if fields[1] not in known:
            raise UserError(f"{path}: line {number}: unknown tag {fields[1]!r} (expected one of {', '.join(labels)})")
        tokens.append(fields[0])
        tags.append(fields[1])
    if tokens:
        sentences.append(Sentence(tuple(tokens), tuple(tags)))
    if not sentences:
        raise UserError(f"{path}: no sentences")
    return sentences


#: What to do with a sentence longer than ``--max-length``: cut it, or split it into chunks.
LONG_SENTENCES = ("truncate", "split")


def word_pieces(tokenizer, sentences: Sequence[Sentence]) -> List[List[List[int]]]:
    """Per sentence, per word, its sub-token ids; ``[unk]`` for a word the tokenizer turns into none.

    Each word is tokenized on its own, as the authors' ``convert_examples_to_features`` does
    (``third_party/utils_tag.py:138-145``, also their unknown-token rule); one fast-tokenizer call
    with ``is_split_into_words`` gives the same pieces and their word alignment.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("the tokenizer must be a fast (Rust) tokenizer: word alignment needs word_ids()")
    encoding = tokenizer([list(s.tokens) for s in sentences], is_split_into_words=True, add_special_tokens=False)
    pieces = []
    for row, sentence in enumerate(sentences):
        words: List[List[int]] = [[] for _ in sentence.tokens]
        for token_id, word in zip(encoding["input_ids"][row], encoding.word_ids(row)):
            words[word].append(token_id)
        pieces.append([ids or [tokenizer.unk_token_id] for ids in words])
    return pieces


def split_long(
    sentences: Sequence[Sentence], pieces: Sequence[Sequence[Sequence[int]]], capacity: int, unk_id: int
) -> Tuple[List[Sentence], List[List[List[int]]]]:
    """The authors' chunking of long sentences (``panx_tokenize_preprocess``, ``utils_preprocess.py:38-75``).

    Words are added to a chunk while its sub-tokens fit ``capacity`` (the maximum length less the
    special tokens); the word that would overflow starts the next chunk. A word of more than
    ``capacity`` sub-tokens becomes ``[unk]``. Each chunk is then an example of its own for
    training and scoring, as in the authors' preprocessed files. Returns the chunks and their pieces.
    """
    chunks: List[Sentence] = []
    chunk_pieces: List[List[List[int]]] = []
    for sentence, words in zip(sentences, pieces):
        start, used = 0, 0
        current: List[List[int]] = []
        for index, ids in enumerate(words):
            ids = list(ids) if len(ids) <= capacity else [unk_id]
            if used + len(ids) > capacity:
                chunks.append(Sentence(sentence.tokens[start:index], sentence.tags[start:index]))
                chunk_pieces.append(current)
                start, used, current = index, 0, []
            current.append(ids)
            used += len(ids)
        chunks.append(Sentence(sentence.tokens[start:], sentence.tags[start:]))
        chunk_pieces.append(current)
    return chunks, chunk_pieces


def encode(
    tokenizer,
    sentences: Sequence[Sentence],
    max_length: int,
    labels: Sequence[str] = PANX_LABELS,
    long_sentences: str = "truncate",
    extra_sep: bool = False,
) -> Tuple[Dict[str, List[List[int]]], List[Sentence]]:
    """Model inputs with ``labels`` on each word's first sub-token and :data:`IGNORE` elsewhere.

    ``[CLS] pieces [SEP]`` (with ``extra_sep``, a second ``[SEP]``: XTREME's ``sep_token_extra``
    for RoBERTa-family models, ``third_party/run_tag.py:387``, ``utils_tag.py:171-176``). A
    sentence longer than ``max_length`` is cut (``"truncate"``: its last words are predicted
    ``O``) or split into chunks (``"split"``: :func:`split_long`). Returns the columns
    (``input_ids``, ``attention_mask``, ``token_type_ids`` when the model takes them, ``labels``)
    and the sentences they hold, one per row (the chunks when split).
    """
    if long_sentences not in LONG_SENTENCES:
        raise UserError(f"--long-sentences {long_sentences}: choose {' or '.join(LONG_SENTENCES)}")
    capacity = max_length - (3 if extra_sep else 2)
    if capacity < 1:
        raise UserError(f"--max-length {max_length}: leaves no room for a word beside the special tokens")
    pieces = word_pieces(tokenizer, sentences)
    if long_sentences == "split":
        sentences, pieces = split_long(sentences, pieces, capacity, tokenizer.unk_token_id)
    index = {label: i for i, label in enumerate(labels)}
    specials_after = [tokenizer.sep_token_id] * (2 if extra_sep else 1)
    columns: Dict[str, List[List[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for sentence, words in zip(sentences, pieces):
        ids = [token_id for word in words for token_id in word][:capacity]
        targets = [t for word, tag in zip(words, sentence.tags) for t in [index[tag]] + [IGNORE] * (len(word) - 1)]
        columns["input_ids"].append([tokenizer.cls_token_id, *ids, *specials_after])
        columns["labels"].append([IGNORE, *targets[:capacity], *[IGNORE] * len(specials_after)])
        columns["attention_mask"].append([1] * len(columns["input_ids"][-1]))
    if "token_type_ids" in tokenizer.model_input_names:
        columns["token_type_ids"] = [[0] * len(row) for row in columns["input_ids"]]
    return columns, list(sentences)
