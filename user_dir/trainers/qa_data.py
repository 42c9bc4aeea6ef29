"""Extractive question answering data (SQuAD v1.1 JSON, as TyDiQA-GoldP ships): reading, features, scoring.

* :func:`read_squad` reads the official layout and checks every answer against its context.
* :func:`train_features` and :func:`eval_features` cut each (question, context) pair into windows of
  ``max_length`` tokens with a fast tokenizer: question first, context second, only the context
  truncated, consecutive windows sharing ``doc_stride`` context tokens (the Hugging Face meaning of
  ``stride``, as in its ``run_qa.py``). Questions are first cut to ``max_query_length`` tokens.
* :func:`best_answers` turns per-token start/end logits back into answer strings.
* :func:`squad_scores` is the official SQuAD v1.1 evaluation (``evaluate-v1.1.py``) re-implemented:
  exact match and token F1 after normalisation, the max over the gold answers, in percent.

Nothing is downloaded; the only dependencies are a transformers fast tokenizer and numpy.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from intradist.errors import UserError

#: Where a training window that does not hold the whole answer points start and end (the CLS token).
CLS_INDEX = 0

#: Examples tokenized per call of the tokenizer (bounds the memory of one batch of encodings).
CHUNK = 1000


@dataclass(frozen=True)
class QAExample:
    """One question on one context, with its gold answers and their character offsets in the context."""

    id: str
    question: str
    context: str
    answers: Tuple[str, ...]
    answer_starts: Tuple[int, ...]
    title: str = ""


# --------------------------------------------------------------------------------------------------
# Reading


def _field(path: Path, obj: Any, key: str, kind: Union[type, Tuple[type, ...]], where: str) -> Any:
    """``obj[key]``, which must be a ``kind``; a one-line UserError naming the file and place otherwise."""
    if not isinstance(obj, dict):
        raise UserError(f"{path}: {where} is not a JSON object")
    if key not in obj:
        raise UserError(f"{path}: {where} has no '{key}' key")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise UserError(f"{path}: '{key}' of {where} is not of type {names}")
    return value


def _short(text: str, limit: int = 60) -> str:
    """``repr`` of ``text``, cut to ``limit`` characters (keeps error messages on one short line)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_squad(path: Path) -> List[QAExample]:
    """The questions of a SQuAD v1.1 JSON file, in file order.

    Every answer must sit at its ``answer_start`` in the context (so that training spans are right),
    ids must be unique (predictions are keyed by id), and every question needs at least one answer
    (SQuAD v2 unanswerable questions are not supported).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        document = json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise UserError(f"{path}: not JSON ({error})") from None
    if not isinstance(document, dict) or "data" not in document:
        raise UserError(f"{path}: no 'data' key at the top level (not SQuAD v1.1 JSON)")
    articles = _field(path, document, "data", list, "the top level")

    examples: List[QAExample] = []
    seen: Dict[str, str] = {}
    for a, article in enumerate(articles):
        paragraphs = _field(path, article, "paragraphs", list, f"article {a}")
        title = article.get("title", "")
        title = title if isinstance(title, str) else str(title)
        for p, paragraph in enumerate(paragraphs):
            where = f"article {a} paragraph {p}"
            context = _field(path, paragraph, "context", str, where)
            for q, qa in enumerate(_field(path, paragraph, "qas", list, where)):
                qid = str(_field(path, qa, "id", (str, int), f"{where} qa {q}"))
                at = f"question {qid!r}"
                if qid in seen:
                    raise UserError(f"{path}: duplicate id {qid!r} (in {seen[qid]} and {where} qa {q})")
                seen[qid] = f"{where} qa {q}"
                question = _field(path, qa, "question", str, at)
                answers = _field(path, qa, "answers", list, at)
                if not answers:
                    raise UserError(f"{path}: {at} has no answers (unanswerable SQuAD v2 questions are not supported)")
                texts, starts = [], []
                for n, answer in enumerate(answers):
                    text = _field(path, answer, "text", str, f"answer {n} of {at}")
                    start = _field(path, answer, "answer_start", int, f"answer {n} of {at}")
                    if not text or start < 0 or context[start : start + len(text)] != text:
                        found = context[max(start, 0) : max(start, 0) + len(text)]
                        raise UserError(
                            f"{path}: answer {n} of {at}: answer_start {start} does not point at its text "
                            f"{_short(text)} in the context (found {_short(found)})"
                        )
                    texts.append(text)
                    starts.append(start)
                examples.append(QAExample(qid, question, context, tuple(texts), tuple(starts), title))
    if not examples:
        raise UserError(f"{path}: no questions in the file")
    return examples


# --------------------------------------------------------------------------------------------------
# Features


def _windows(
    tokenizer, examples: Sequence[QAExample], max_length: int, doc_stride: int, max_query_length: int
) -> Iterator[Tuple[int, Dict[str, List[int]], List[Tuple[int, int]], List[Optional[int]]]]:
    """Per window: (example index, model inputs, offsets, sequence ids: 0 question, 1 context, None special)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"extractive QA needs a fast tokenizer (with offsets); {type(tokenizer).__name__} is not one")
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True) - max_query_length
    if min(doc_stride, max_query_length) < 1 or room <= doc_stride:
        raise UserError(
            f"max_length {max_length} leaves {room} context tokens after a {max_query_length}-token question, "
            f"which must be more than doc_stride {doc_stride} (and both at least 1)"
        )
    for first in range(0, len(examples), CHUNK):
        chunk = examples[first : first + CHUNK]
        # Cut questions to max_query_length tokens, at the end character of the last token kept.
        cut = tokenizer([ex.question for ex in chunk], add_special_tokens=False, return_offsets_mapping=True)
        questions = [
            ex.question if len(offsets) <= max_query_length else ex.question[: offsets[max_query_length - 1][1]]
            for ex, offsets in zip(chunk, cut["offset_mapping"])
        ]
        encoded = tokenizer(
            questions,
            [ex.context for ex in chunk],
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
        inputs = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
        for i, sample in enumerate(encoded["overflow_to_sample_mapping"]):
            row = {key: list(encoded[key][i]) for key in inputs}
            yield first + sample, row, list(encoded["offset_mapping"][i]), encoded.sequence_ids(i)


def _collect(rows: List[Dict[str, List[int]]]) -> Dict[str, List[Any]]:
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


def train_features(
    tokenizer,
    examples: Sequence[QAExample],
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> Dict[str, List[Any]]:
    """Model inputs plus ``start_positions`` / ``end_positions``, one row per window (unpadded lists).

    The first gold answer's characters are mapped to the first and last token that overlap them; a
    window that does not hold the whole answer points both positions at the CLS token (index 0).
    """
    rows = []
    for index, row, offsets, sequence in _windows(tokenizer, examples, max_length, doc_stride, max_query_length):
        example = examples[index]
        context = [k for k, s in enumerate(sequence) if s == 1]
        start = end = CLS_INDEX
        if context and example.answers:
            first_char = example.answer_starts[0]
            last_char = first_char + len(example.answers[0])
            if offsets[context[0]][0] <= first_char and offsets[context[-1]][1] >= last_char:
                start = max(k for k in context if offsets[k][0] <= first_char)
                end = min(k for k in context if offsets[k][1] >= last_char)
        row["start_positions"], row["end_positions"] = start, end
        rows.append(row)
    return _collect(rows)


def eval_features(
    tokenizer,
    examples: Sequence[QAExample],
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> Dict[str, List[Any]]:
    """Model inputs plus ``example_index`` and ``offset_mapping`` (None off the context), one row per window.

    Drop ``example_index`` and ``offset_mapping`` before the rows go to the model; keep them for
    :func:`best_answers`.
    """
    rows = []
    for index, row, offsets, sequence in _windows(tokenizer, examples, max_length, doc_stride, max_query_length):
        row["example_index"] = index
        row["offset_mapping"] = [tuple(o) if s == 1 else None for o, s in zip(offsets, sequence)]
        rows.append(row)
    return _collect(rows)


def best_answers(
    examples: Sequence[QAExample],
    features: Mapping[str, Sequence[Any]],
    start_logits: Sequence[Sequence[float]],
    end_logits: Sequence[Sequence[float]],
    n_best: int = 20,
    max_answer_length: int = 30,
) -> Dict[str, str]:
    """Example id -> the answer text of the span with the highest start + end logit over its windows.

    ``features`` is what :func:`eval_features` returned; logits have one row per feature in the same
    order (rows may be padded past the feature's length; the padding is ignored). Candidates are the
    ``n_best`` highest start and end logits of each window; a span counts when both ends are context
    tokens, start <= end and it is at most ``max_answer_length`` tokens long. No valid span: "".
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
        context = examples[index].context
        for s in np.argsort(-start, kind="stable")[:n_best]:
            if offsets[s] is None:
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
