"""Extractive question answering data (SQuAD v1.1 JSON, as TyDiQA-GoldP ships): reading, features, scoring.

Reading the files and cutting (question, context) pairs into windows (:func:`read_squad`,
:func:`train_features`, :func:`eval_features`, :func:`max_context`) live in
:mod:`intradist.analysis.qa_data`, so that ``analyze-sensitivity`` takes a trained model's loss on
exactly what it was trained on; they are imported here under their old names. This module adds the
evaluation:

* :func:`best_answers` turns per-token start/end logits back into answer strings (optionally taking
  a span's start only from its max-context window, as the authors' scoring does).
* :func:`squad_scores` is the official SQuAD v1.1 evaluation (``evaluate-v1.1.py``) re-implemented:
  exact match and token F1 after normalisation, the max over the gold answers, in percent.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from intradist.analysis.qa_data import (  # noqa: F401  (the readers, under the names the trainers use)
    CLS_INDEX,
    PREDICTION_COLUMNS,
    STRIDE_MEANINGS,
    QAExample,
    Window,
    eval_features,
    max_context,
    read_squad,
    train_features,
)


def best_answers(
    examples: Sequence[QAExample],
    features: Mapping[str, Sequence[Any]],
    start_logits: Sequence[Sequence[float]],
    end_logits: Sequence[Sequence[float]],
    n_best: int = 20,
    max_answer_length: int = 30,
    max_context_check: bool = False,
) -> Dict[str, str]:
    """Example id -> the answer text of the span with the highest start + end logit over its windows.

    ``features`` is what :func:`eval_features` returned; logits have one row per feature in the same
    order (rows may be padded past the feature's length; the padding is ignored). Candidates are the
    ``n_best`` highest start and end logits of each window; a span counts when both ends are context
    tokens, start <= end and it is at most ``max_answer_length`` tokens long, and, with
    ``max_context_check``, when its start token has its maximal context in this window (the authors'
    squad_metrics.py:441). No valid span: "".
    """
    offsets_of = features["offset_mapping"]
    if not (len(start_logits) == len(end_logits) == len(offsets_of)):
        raise ValueError(
            f"{len(start_logits)} start and {len(end_logits)} end logit rows for {len(offsets_of)} features"
        )
    best: Dict[int, Tuple[float, str]] = {}
    for i, offsets in enumerate(offsets_of):
        index = features["example_index"][i]
        start = np.asarray(start_logits[i], dtype=np.float64)[: len(offsets)]
        end = np.asarray(end_logits[i], dtype=np.float64)[: len(offsets)]
        owned = features["max_context"][i] if max_context_check else None
        context = examples[index].context
        for s in np.argsort(-start, kind="stable")[:n_best]:
            if offsets[s] is None or (owned is not None and not owned[s]):
                continue
            for e in np.argsort(-end, kind="stable")[:n_best]:
                if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start[s] + end[e])
                if index not in best or score > best[index][0]:
                    best[index] = (score, context[offsets[s][0] : offsets[e][1]])
    return {ex.id: best[index][1] if index in best else "" for index, ex in enumerate(examples)}


# --------------------------------------------------------------------------------------------------
# The official SQuAD v1.1 metrics

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, ASCII punctuation removed, articles a/an/the removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when both normalise to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalised tokens (a bag: repeats count up to their count in the other); 0 without overlap."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], examples: Sequence[QAExample]) -> Dict[str, float]:
    """``{"exact_match", "f1"}`` in percent over ``examples``; a missing prediction scores 0."""
    if not examples:
        raise ValueError("no examples to score")
    em = f1 = 0.0
    for example in examples:
        if example.id not in predictions:
            continue
        prediction = predictions[example.id]
        em += max(exact_match(prediction, gold) for gold in example.answers)
        f1 += max(token_f1(prediction, gold) for gold in example.answers)
    return {"exact_match": 100.0 * em / len(examples), "f1": 100.0 * f1 / len(examples)}
