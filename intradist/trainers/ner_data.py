"""Named-entity recognition data (PAN-X / WikiANN in CoNLL form): reading, sub-token labels, entity F1.

Reading the files and putting each word's label on its first sub-token (:func:`read_conll`,
:func:`encode`, ...) live in :mod:`intradist.analysis.ner_data`, so that ``analyze-sensitivity``
takes a trained model's loss on exactly what it was trained on; they are imported here under their
old names. This module adds the evaluation: the predicted tag of each word and seqeval's
entity-level precision, recall and F1 (CoNLL-2000 rules), in percent.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from intradist.analysis.ner_data import (  # noqa: F401  (the readers, under the names the trainers use)
    IGNORE,
    LONG_SENTENCES,
    PANX_LABELS,
    Sentence,
    encode,
    read_conll,
    split_long,
    word_pieces,
)


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
