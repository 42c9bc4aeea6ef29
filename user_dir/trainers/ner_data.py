"""Named-entity recognition data (PAN-X / WikiANN in CoNLL form): reading, sub-token labels, entity F1.

A file holds one ``token<TAB>tag`` per line and a blank line after each sentence (the layout
``intradist-prepare-xtreme`` writes). A word's label goes on its first sub-token; its other
sub-tokens, and the special tokens, get :data:`IGNORE` so that the loss, the intra-distillation
divergence and the evaluation all see exactly one distribution per word. Words cut off by
``--max-length`` are predicted ``O`` at evaluation, so a score always covers every gold entity.
Scores are seqeval's entity-level precision, recall and F1 (CoNLL-2000 rules), in percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

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


def encode(tokenizer, sentences: Sequence[Sentence], max_length: int, labels: Sequence[str] = PANX_LABELS) -> Dict:
    """Tokenized sentences with ``labels`` on each word's first sub-token and :data:`IGNORE` elsewhere.

    Needs a fast tokenizer (for ``word_ids``). Returns the tokenizer's lists plus ``labels``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("the tokenizer must be a fast (Rust) tokenizer: word alignment needs word_ids()")
    index = {label: i for i, label in enumerate(labels)}
    encoding = tokenizer([list(s.tokens) for s in sentences], is_split_into_words=True, truncation=True,
                         max_length=max_length)  # fmt: skip
    targets = []
    for row, sentence in enumerate(sentences):
        previous = None
        row_targets = []
        for word in encoding.word_ids(row):
            first = word is not None and word != previous
            row_targets.append(index[sentence.tags[word]] if first else IGNORE)
            previous = word
        targets.append(row_targets)
    features = dict(encoding)
    features["labels"] = targets
    return features


def predicted_tags(
    logits: np.ndarray, targets: np.ndarray, sentences: Sequence[Sentence], labels: Sequence[str] = PANX_LABELS
) -> List[List[str]]:
    """Per sentence, the argmax tag of each word's first sub-token; ``O`` for words cut off by truncation.

    ``logits`` ``[N, T, C]`` and ``targets`` ``[N, T]`` as the Trainer returns them (padded with
    :data:`IGNORE`); row i belongs to ``sentences[i]``.
    """
    best = logits.argmax(axis=-1)
    predictions = []
    for row, sentence in enumerate(sentences):
        words = [labels[int(tag)] for tag, target in zip(best[row], targets[row]) if target != IGNORE]
        predictions.append(words + ["O"] * (len(sentence.tokens) - len(words)))
    return predictions


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> Dict[str, float]:
    """seqeval's entity-level precision, recall and F1 (percent) of ``predicted`` against ``gold`` tags."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
    return {
        "precision": 100 * precision_score(gold, predicted, zero_division=0),
        "recall": 100 * recall_score(gold, predicted, zero_division=0),
        "f1": 100 * f1_score(gold, predicted, zero_division=0),
    }
