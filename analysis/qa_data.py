"""Extractive question answering files (SQuAD v1.1 JSON, as TyDiQA-GoldP ships): reading and features.

* :func:`read_squad` reads the official layout and checks every answer against its context.
* :func:`train_features` and :func:`eval_features` cut each (question, context) pair into windows of
  ``max_length`` tokens with a fast tokenizer: question first, context second, only the context
  truncated. Questions are first cut to ``max_query_length`` tokens. ``doc_stride`` means one of
  :data:`STRIDE_MEANINGS`: ``"overlap"``, the context tokens two consecutive windows share (the
  Hugging Face meaning of ``stride``, as in its ``run_qa.py``), or ``"step"``, the context tokens
  between the starts of two consecutive windows (the legacy SQuAD features the authors' XTREME
  code uses: Zero_Shot_Cross_Lingual/third_party/processors/squad.py:138-180 of fe1ixxu/Intra-Distillation).
  ``pad_to_max_length`` pads every window to ``max_length`` as those features are (squad.py:145),
  which matters because a QA head does not mask padding: its logits enter the softmax.
* :func:`max_context` is the authors' "max context" rule: a context token seen by several windows
  belongs to the one where it has the most context on its shorter side.

``intradist train xtreme`` trains on :func:`train_features` and ``analyze-sensitivity`` takes the
loss of a QA model on the same; turning logits into answers and scoring them is the trainer's
(:mod:`intradist.trainers.qa_data`). Nothing is downloaded; the only dependency is a transformers
fast tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

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

#: What ``doc_stride`` counts: the context tokens two consecutive windows share, or the tokens between
#: their starts.
STRIDE_MEANINGS: Tuple[str, ...] = ("overlap", "step")


@dataclass(frozen=True)
class Window:
    """One window of one example: its model inputs and where its context tokens sit."""

    example: int  # index of the example
    inputs: Dict[str, List[int]]
    offsets: List[Tuple[int, int]]  # character offsets of every position (meaningful on context tokens)
    sequence: List[Optional[int]]  # per position: 0 question, 1 context, None special or padding
    context_start: int  # index of its first context token among all of the example's context tokens


def _windows(
    tokenizer,
    examples: Sequence[QAExample],
    max_length: int,
    doc_stride: int,
    max_query_length: int,
    doc_stride_meaning: str,
    pad_to_max_length: bool,
) -> Iterator[Window]:
    """Every window of every example, in example order, then window order."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"extractive QA needs a fast tokenizer (with offsets); {type(tokenizer).__name__} is not one")
    if doc_stride_meaning not in STRIDE_MEANINGS:
        raise UserError(f"doc_stride_meaning {doc_stride_meaning!r}: choose {' or '.join(STRIDE_MEANINGS)}")
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_length - specials - max_query_length
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
        lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
        # The tokenizer's stride is the overlap; for "step" it is the window's context room minus the step
        # (the authors' squad.py:146), which depends on the question's length: one call per length.
        by_length: Dict[int, List[int]] = {}
        for i, length in enumerate(lengths):
            by_length.setdefault(length, []).append(i)
        windows: Dict[int, List[Window]] = {}
        for length, members in by_length.items():
            context_room = max_length - specials - length
            overlap = doc_stride if doc_stride_meaning == "overlap" else context_room - doc_stride
            encoded = tokenizer(
                [questions[i] for i in members],
                [chunk[i].context for i in members],
                truncation="only_second",
                max_length=max_length,
                stride=overlap,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                padding="max_length" if pad_to_max_length else False,
            )
            inputs = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
            for w, sample in enumerate(encoded["overflow_to_sample_mapping"]):
                example_windows = windows.setdefault(members[sample], [])
                row = {key: list(encoded[key][w]) for key in inputs}
                start = len(example_windows) * (context_room - overlap)
                offsets = [tuple(o) for o in encoded["offset_mapping"][w]]
                example_windows.append(Window(first + members[sample], row, offsets, encoded.sequence_ids(w), start))
        for i in range(len(chunk)):
            yield from windows[i]


def max_context(starts: Sequence[int], lengths: Sequence[int]) -> List[List[bool]]:
    """Per window, per context token of it: is this the window where the token has its maximal context?

    A re-statement of the legacy SQuAD features' rule (``_new_check_is_max_context``,
    Zero_Shot_Cross_Lingual/third_party/processors/squad.py:60-79 of fe1ixxu/Intra-Distillation): a
    token at position t of the document, inside window w (starting at ``starts[w]``, holding
    ``lengths[w]`` tokens), scores min(t - start, end - t) + 0.01 * length, with end the window's last
    token; the first window with the highest score owns the token.
    """
    owner: Dict[int, Tuple[float, int]] = {}
    for w, (start, length) in enumerate(zip(starts, lengths)):
        for t in range(start, start + length):
            score = min(t - start, start + length - 1 - t) + 0.01 * length
            if t not in owner or score > owner[t][0]:
                owner[t] = (score, w)
    return [[owner[t][1] == w for t in range(start, start + length)] for w, (start, length) in
            enumerate(zip(starts, lengths))]  # fmt: skip


def _collect(rows: List[Dict[str, List[int]]]) -> Dict[str, List[Any]]:
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


def train_features(
    tokenizer,
    examples: Sequence[QAExample],
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    doc_stride_meaning: str = "overlap",
    pad_to_max_length: bool = False,
) -> Dict[str, List[Any]]:
    """Model inputs plus ``start_positions`` / ``end_positions``, one row per window (lists).

    The first gold answer's characters are mapped to the first and last token that overlap them; a
    window that does not hold the whole answer is kept, with both positions on the CLS token (index 0),
    as the authors' legacy features do (squad.py:221-226).
    """
    rows = []
    for window in _windows(tokenizer, examples, max_length, doc_stride, max_query_length, doc_stride_meaning,
                           pad_to_max_length):  # fmt: skip
        example, offsets, row = examples[window.example], window.offsets, window.inputs
        context = [k for k, s in enumerate(window.sequence) if s == 1]
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
    doc_stride_meaning: str = "overlap",
    pad_to_max_length: bool = False,
) -> Dict[str, List[Any]]:
    """Model inputs plus ``example_index``, ``offset_mapping`` (None off the context) and ``max_context``.

    ``max_context`` holds, per position, whether a context token has its maximal context in this
    window (:func:`max_context`; False off the context). Drop ``example_index``, ``offset_mapping``
    and ``max_context`` (:data:`PREDICTION_COLUMNS`) before the rows go to the model; keep them for
    :func:`best_answers`.
    """
    windows = list(_windows(tokenizer, examples, max_length, doc_stride, max_query_length, doc_stride_meaning,
                            pad_to_max_length))  # fmt: skip
    contexts = [[k for k, s in enumerate(window.sequence) if s == 1] for window in windows]
    owned: List[List[bool]] = []
    first = 0
    while first < len(windows):  # the windows of one example are consecutive
        last = first
        while last + 1 < len(windows) and windows[last + 1].example == windows[first].example:
            last += 1
        span = range(first, last + 1)
        owned += max_context([windows[i].context_start for i in span], [len(contexts[i]) for i in span])
        first = last + 1
    rows = []
    for window, context, flags in zip(windows, contexts, owned):
        row = window.inputs
        row["example_index"] = window.example
        row["offset_mapping"] = [o if s == 1 else None for o, s in zip(window.offsets, window.sequence)]
        is_max = [False] * len(window.sequence)
        for k, flag in zip(context, flags):
            is_max[k] = flag
        row["max_context"] = is_max
        rows.append(row)
    return _collect(rows)


#: Columns of :func:`eval_features` that are for :func:`best_answers`, not for the model.
PREDICTION_COLUMNS: Tuple[str, ...] = ("example_index", "offset_mapping", "max_context")
