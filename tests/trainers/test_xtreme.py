"""Tests of ``intradist train xtreme`` (intradist/trainers/xtreme*.py, ner_data.py) on the real MiniLM and real-format fixtures.

The fixtures (tests/fixtures/xtreme) are PAN-X-style CoNLL files for English (train/dev/test) and
German (dev/test) and SQuAD-style TyDiQA files (English train/dev, German dev). Training runs are
a few CPU updates; what they must produce is checked, and the losses are checked against
transformers' own heads. Metric values are worked out by hand in the comments.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from intradist.errors import UserError
from intradist.trainers import ner_data, xtreme
from intradist.trainers.xtreme_run import load_student
from intradist.trainers.xtreme_tasks import TASKS, XtremeConfig, collator, split_path, train_set
from intradist.settings import DistillationSettings
from intradist.trainers.hf import EXTRACTIVE_QA, TOKEN_CLASSIFICATION, method_name
from tests.recipes import authors_consistency_alpha, recipe_settings

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "xtreme"
FAST = ["--data-dir", str(FIXTURES), "--max-steps", "4", "--batch-size", "4", "--gradient-accumulation", "1",
        "--logging-steps", "1", "--eval-steps", "2", "--lr", "1e-4", "--warmup", "0"]  # fmt: skip


def run(args: Sequence[str], catch: bool = False):
    return CliRunner().invoke(xtreme.main, [str(arg) for arg in args], catch_exceptions=catch)


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_folder, local_files_only=True)


# ---------------------------------------------------------------------------------------------
# NER data and metric


def test_entity_scores_count_a_partially_matched_entity_as_wrong():
    # gold entities: PER(0-1), LOC(3); predicted: PER(0-0), LOC(3): one of two right each way.
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["B-PER", "O", "O", "B-LOC"]]
    assert ner_data.entity_scores(gold, predicted) == pytest.approx({"precision": 50.0, "recall": 50.0, "f1": 50.0})


def test_entity_scores_over_sentences_and_types():
    # gold: ORG(0-1), PER(1:0); predicted: ORG(0-1), LOC(1:0), PER(1:2): tp 1, P 1/3, R 1/2, F1 2PR/(P+R) = 0.4.
    gold = [["B-ORG", "I-ORG"], ["B-PER", "O", "O"]]
    predicted = [["B-ORG", "I-ORG"], ["B-LOC", "O", "B-PER"]]
    assert ner_data.entity_scores(gold, predicted) == pytest.approx(
        {"precision": 100 / 3, "recall": 50.0, "f1": 40.0}
    )


def test_each_word_is_labelled_once_on_its_first_sub_token(minilm_folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder, local_files_only=True)
    sentence = ner_data.Sentence(("Lovelace", "visited", "Buenos", "Aires"), ("B-PER", "O", "B-LOC", "I-LOC"))
    encoded, rows = ner_data.encode(tokenizer, [sentence], max_length=64)
    assert rows == [sentence]
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    labels = encoded["labels"][0]
    assert len([t for t in tokens if t.startswith("##")]) > 0  # "lovelace" splits into pieces
    labelled = [(token, ner_data.PANX_LABELS[label]) for token, label in zip(tokens, labels) if label != ner_data.IGNORE]
    assert [tag for _, tag in labelled] == list(sentence.tags)
    assert all(not token.startswith("##") and token not in ("[CLS]", "[SEP]") for token, _ in labelled)


def test_words_cut_off_by_truncation_are_predicted_outside():
    sentence = ner_data.Sentence(("a", "b", "c"), ("B-PER", "O", "B-LOC"))
    # 2 of 3 words survived truncation; the logits favour B-PER (1) and O (0) for them
    logits = np.zeros((1, 4, len(ner_data.PANX_LABELS)))
    logits[0, 1, 1] = logits[0, 2, 0] = 5.0
    targets = np.array([[ner_data.IGNORE, 1, 0, ner_data.IGNORE]])
    assert ner_data.predicted_tags(logits, targets, [sentence]) == [["B-PER", "O", "O"]]


def test_by_default_the_inputs_are_the_tokenizers_own_encoding(minilm_tokenizer):
    sentences = ner_data.read_conll(FIXTURES / "panx" / "en" / "train.tsv")
    encoded, rows = ner_data.encode(minilm_tokenizer, sentences, max_length=12)
    reference = minilm_tokenizer([list(s.tokens) for s in sentences], is_split_into_words=True, truncation=True,
                                 max_length=12)  # fmt: skip
    assert rows == sentences
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert encoded[name] == reference[name], name


def test_a_word_without_sub_tokens_is_unknown_and_keeps_the_words_aligned(minilm_tokenizer):
    # a zero-width space has no WordPiece; the authors' features give it [UNK] (utils_tag.py:143-144)
    sentence = ner_data.Sentence(("Paris", "\u200b", "Nice"), ("B-LOC", "O", "B-LOC"))
    encoded, _ = ner_data.encode(minilm_tokenizer, [sentence], max_length=16)
    tokens = minilm_tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    assert tokens == ["[CLS]", "paris", "[UNK]", "nice", "[SEP]"]
    assert encoded["labels"][0] == [ner_data.IGNORE, 5, 0, 5, ner_data.IGNORE]


def test_long_sentences_are_split_where_the_authors_preprocessing_splits_them():
    # utils_preprocess.py:62-74: a word joins the chunk while its sub-tokens fit (here 4); the one
    # that would overflow starts a new chunk; a word of more than 4 sub-tokens becomes [unk] (99).
    sentence = ner_data.Sentence(("a", "b", "c", "d", "e"), ("B-PER", "I-PER", "O", "B-LOC", "O"))
    short = ner_data.Sentence(("x",), ("O",))
    pieces = [[[1, 2], [3], [4, 5, 6], [7], [8, 9, 10, 11, 12]], [[13]]]
    chunks, chunk_pieces = ner_data.split_long([sentence, short], pieces, capacity=4, unk_id=99)
    assert [c.tokens for c in chunks] == [("a", "b"), ("c", "d"), ("e",), ("x",)]
    assert [c.tags for c in chunks] == [("B-PER", "I-PER"), ("O", "B-LOC"), ("O",), ("O",)]
    assert chunk_pieces == [[[1, 2], [3]], [[4, 5, 6], [7]], [[99]], [[13]]]


def test_split_chunks_hold_every_word_once_and_end_with_two_separators(minilm_tokenizer):
    words = tuple(["Lovelace", "visited", "Buenos", "Aires"] * 5)
    tags = tuple(["B-PER", "O", "B-LOC", "I-LOC"] * 5)
    sentence = ner_data.Sentence(words, tags)
    encoded, rows = ner_data.encode(minilm_tokenizer, [sentence], max_length=10, long_sentences="split", extra_sep=True)
    assert len(rows) > 1 and sum((r.tokens for r in rows), ()) == words and sum((r.tags for r in rows), ()) == tags
    for ids, labels, row in zip(encoded["input_ids"], encoded["labels"], rows):
        tokens = minilm_tokenizer.convert_ids_to_tokens(ids)
        assert len(ids) <= 10 and tokens[0] == "[CLS]" and tokens[-2:] == ["[SEP]", "[SEP]"]
        assert len([label for label in labels if label != ner_data.IGNORE]) == len(row.tokens)
    truncated, _ = ner_data.encode(minilm_tokenizer, [sentence], max_length=10)
    assert len(truncated["input_ids"]) == 1  # the generic default cuts instead


@pytest.mark.parametrize(
    ("text", "message"),
    [("Paris\tB-LOC\nNice B-LOC\n", r"line 2: expected 'token<TAB>tag'"), ("Paris\tB-CITY\n", r"line 1: unknown tag 'B-CITY'"),
     ("\n\n", "no sentences")],
)  # fmt: skip
def test_bad_conll_files_give_one_line_errors_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "test.tsv"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as error:
        ner_data.read_conll(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# The objective equals transformers' own task losses (K = 1, no smoothing)


def _batch(minilm_folder, task_name):
    from transformers import AutoTokenizer, DataCollatorForTokenClassification, DataCollatorWithPadding

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder, local_files_only=True)
    config = XtremeConfig(task=task_name, out=Path("unused"), data_dir=FIXTURES).resolved()
    config = dataclasses.replace(config, max_length=128, doc_stride=32)
    task = TASKS[task_name]
    rows, _ = train_set(task, tokenizer, split_path(FIXTURES, task, "en", "train"), config)
    collator = (DataCollatorForTokenClassification(tokenizer) if task_name == "panx"
                else DataCollatorWithPadding(tokenizer))  # fmt: skip
    return task, collator([rows[i] for i in range(6)])


@pytest.mark.parametrize("task_name", ["panx", "tydiqa"])
def test_single_pass_objective_is_the_models_own_loss(minilm_folder, task_name):
    task, batch = _batch(minilm_folder, task_name)
    torch.manual_seed(0)
    _, model, _ = load_student(str(minilm_folder), task)
    model.eval()
    reference = model(**batch).loss  # transformers' loss: CE over first sub-tokens / (start CE + end CE) / 2
    features = {k: v for k, v in batch.items() if k not in task.head.label_names}
    terms = DistillationSettings().objective(
        lambda: task.head.logits(model(**features)), task.head.targets(batch), step=0, max_step=1,
        ignore_index=task.head.ignore_index,
    )  # fmt: skip
    assert terms["loss"].item() == pytest.approx(reference.item(), rel=1e-5)


def test_qa_intra_term_averages_the_start_and_end_divergences():
    from intradist import losses

    torch.manual_seed(0)
    passes = [{"start_logits": torch.randn(3, 7), "end_logits": torch.randn(3, 7)} for _ in range(2)]
    combined = losses.intra_distillation_loss([EXTRACTIVE_QA.logits(p) for p in passes], "x", reduction="mean")
    start = losses.intra_distillation_loss([p["start_logits"] for p in passes], "x", reduction="mean")
    end = losses.intra_distillation_loss([p["end_logits"] for p in passes], "x", reduction="mean")
    assert combined.item() == pytest.approx((start.item() + end.item()) / 2, rel=1e-6)


def test_token_head_ignores_the_non_first_sub_tokens():
    assert TOKEN_CLASSIFICATION.ignore_index == ner_data.IGNORE


# ---------------------------------------------------------------------------------------------
# The PAN-X recipe computes what the authors' run_tag.py computes

REPO = Path(__file__).resolve().parent.parent.parent
PANX_INTRA = REPO / "configs" / "xtreme" / "panx_intra.yaml"


def _authors_loss(pass_logits: Sequence[torch.Tensor], labels: torch.Tensor, attention_mask: torch.Tensor,
                  alpha: float) -> float:  # fmt: skip
    """The loss of one micro-batch in the authors' NER training, re-stated in float64.

    Zero_Shot_Cross_Lingual/third_party/run_tag.py:90-108 (intra_distillation): each pass's
    outputs[0] is transformers' token-classification loss, cross-entropy over the positions with
    attention mask 1, labels -100 ignored, averaged over the rest of the batch; the passes' mean
    plus alpha times sum over the whole [B, T, C] of (p_k - m)(log p_k - log m), summed over the
    passes and divided by K.
    """
    active = attention_mask.reshape(-1) == 1
    cross_entropies = []
    for logits in pass_logits:
        flat, targets = logits.double().reshape(-1, logits.shape[-1])[active], labels.reshape(-1)[active]
        keep = targets != -100
        log_probs = torch.log_softmax(flat[keep], dim=-1)
        cross_entropies.append(-log_probs[torch.arange(int(keep.sum())), targets[keep]].mean())
    probs = [torch.softmax(logits.double(), dim=-1) for logits in pass_logits]
    mean = sum(probs) / len(probs)
    divergence = sum(((p - mean) * (torch.log(p) - torch.log(mean))).sum() for p in probs) / len(probs)
    return float(sum(cross_entropies) / len(cross_entropies) + alpha * divergence)


def test_the_panx_recipe_objective_is_the_authors_loss_on_a_padded_batch():
    torch.manual_seed(0)
    settings = recipe_settings(PANX_INTRA)
    batch, length, classes, passes = 3, 128, len(ner_data.PANX_LABELS), settings.num_passes
    # three sentences of 9, 40 and 128 sub-tokens in a batch padded to 128: <s> ... </s></s>,
    # labels only on first sub-tokens; special tokens, later sub-tokens and padding get -100
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    labels = torch.full((batch, length), -100)
    for row, used in enumerate((9, 40, 128)):
        attention_mask[row, :used] = 1
        first_sub_tokens = torch.arange(1, used - 2)[torch.rand(used - 3) < 0.7]
        labels[row, first_sub_tokens] = torch.randint(0, classes, (len(first_sub_tokens),))
    # K fixed outputs, with logits at every position (a model computes them at padding too)
    pass_logits = [3 * torch.randn(batch, length, classes) for _ in range(passes)]
    step, max_step = 10, 6250  # 20,000 sentences / 2 / 16 x 10 epochs
    authors = _authors_loss(pass_logits, labels, attention_mask, authors_consistency_alpha(1.0, step, max_step, 2.0, 5.0))

    def objective(switches: DistillationSettings) -> float:
        outputs = iter({"logits": logits} for logits in pass_logits)  # what compute_loss hands the objective
        terms = switches.objective(lambda: TOKEN_CLASSIFICATION.logits(next(outputs)),
                                   TOKEN_CLASSIFICATION.targets({"labels": labels}), step=step, max_step=max_step,
                                   ignore_index=TOKEN_CLASSIFICATION.ignore_index)  # fmt: skip
        return terms["loss"].item()

    assert passes == 3 and objective(settings) == pytest.approx(authors, rel=1e-6)
    # the generic default (a mean over labelled positions) is a different objective: the check can fail
    generic = dataclasses.replace(settings, intra_reduction="mean", intra_positions="labelled")
    assert objective(generic) != pytest.approx(authors, rel=1e-3)


def test_the_panx_baseline_is_the_authors_step_with_alpha_0_and_is_labelled_baseline():
    """run_tag.py:190 always runs K passes: the baseline is their mean cross-entropy with alpha 0."""
    settings = recipe_settings(REPO / "configs" / "xtreme" / "panx_baseline.yaml")
    labels = torch.tensor([[-100, 1, 0, -100], [-100, 2, -100, -100]])
    mask = labels.ne(-100).long()
    pass_logits = [torch.randn(2, 4, len(ner_data.PANX_LABELS)) for _ in range(settings.num_passes)]
    outputs = iter(pass_logits)
    ours = settings.objective(lambda: next(outputs), labels, step=5, max_step=100, ignore_index=-100)["loss"]
    assert settings.num_passes == 3 and settings.alpha == 0.0
    assert ours.item() == pytest.approx(_authors_loss(pass_logits, labels, mask, 0.0), rel=1e-6)
    assert method_name(settings) == "baseline"
    assert method_name(recipe_settings(PANX_INTRA)) == "intra"


def test_the_panx_recipe_alpha_schedule_is_the_authors():
    # alpha 1 (the recipe) is constant; alpha 10 (train_panx.sh's default) ramps with p = 2, q = 5
    settings = recipe_settings(PANX_INTRA)
    for alpha in (settings.alpha, 10.0):
        switched = dataclasses.replace(settings, alpha=alpha)
        for step in (1, 100, 1250, 3124, 3125, 6000):
            expected = authors_consistency_alpha(alpha, step, 6250, 2.0, 5.0)
            assert switched.alpha_at(step, 6250) == pytest.approx(expected, rel=1e-9)
    assert dataclasses.replace(settings, alpha=10.0).alpha_at(1250, 6250) == pytest.approx(1.0)  # N/q


@pytest.mark.parametrize("row", ["baseline", "intra"])
def test_the_panx_recipe_pads_every_batch_to_128_and_splits_long_sentences(minilm_tokenizer, row):
    import yaml

    values = yaml.safe_load((REPO / "configs" / "xtreme" / f"panx_{row}.yaml").read_text())
    flags = {key.replace("-", "_"): value for key, value in values.items()}
    fields = {name: flags[name] for name in ("max_length", "pad_to_max_length", "long_sentences", "extra_sep")}
    config = XtremeConfig(task="panx", out=Path("unused"), data_dir=FIXTURES, **fields).resolved()
    task = TASKS["panx"]
    rows, _ = train_set(task, minilm_tokenizer, split_path(FIXTURES, task, "en", "train"), config)
    batch = collator(task, minilm_tokenizer, config)([rows[i] for i in range(3)])
    assert fields == {"max_length": 128, "pad_to_max_length": True, "long_sentences": "split", "extra_sep": True}
    assert batch["input_ids"].shape == batch["labels"].shape == (3, 128)
    assert int(batch["attention_mask"].sum()) < 3 * 128  # the fixtures' sentences are short: padding is there
    assert bool((batch["labels"][batch["attention_mask"] == 0] == ner_data.IGNORE).all())


# ---------------------------------------------------------------------------------------------
# Whole runs


@pytest.fixture(scope="module")
def panx_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("panx")
    common = ["--task", "panx", "--max-length", "32", *FAST]
    baseline = run([*common, "--out", root / "baseline"])
    intra = run([*common, "--out", root / "intra", "--num-passes", "2", "--alpha", "1", "--constant-alpha"])
    return root, baseline, intra


def _check_zero_shot(out: Path, metrics: Sequence[str]):
    zero_shot = json.loads((out / "zero_shot.json").read_text())
    assert sorted(zero_shot["languages"]) == ["de", "en"]
    for name in metrics:
        values = [zero_shot["languages"][lang][name] for lang in ("de", "en")]
        assert all(0.0 <= value <= 100.0 for value in values)
        assert zero_shot["average"][name] == pytest.approx(sum(values) / 2)
    table = (out / "zero_shot.md").read_text()
    assert "| de " in table and "| en " in table and "**average**" in table
    return zero_shot


def test_panx_runs_score_every_language_and_average_them(panx_runs):
    root, baseline, intra = panx_runs
    for name, result in (("baseline", baseline), ("intra", intra)):
        assert result.exit_code == 0, result.output
        zero_shot = _check_zero_shot(root / name, ["precision", "recall", "f1"])
        assert zero_shot["method"] == name and zero_shot["split"] == "test"
        assert zero_shot["languages"]["de"]["examples"] == 8
        assert (root / name / "config.json").is_file() and not (root / f"{name}.partial").exists()
    record = json.loads((root / "intra" / "metrics.json").read_text())
    assert record["steps"] == 4 and record["selection"] == "best"
    train_logs = [json.loads(line) for line in (root / "intra" / "log.jsonl").read_text().splitlines()]
    intra_losses = [entry["intra_loss"] for entry in train_logs if "intra_loss" in entry]
    assert intra_losses and all(value > 0 for value in intra_losses)  # dropout makes the 2 passes differ
    assert {entry["alpha"] for entry in train_logs if "alpha" in entry} == {1.0}


def test_a_saved_panx_model_is_loaded_as_a_teacher(panx_runs, tmp_path):
    root, _, _ = panx_runs
    result = run(["--task", "panx", "--max-length", "32", *FAST, "--out", tmp_path / "sd",
                  "--teacher", root / "baseline", "--kd-weight", "0.5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "sd" / "metrics.json").read_text())["method"] == "self-distill"


def test_tydiqa_runs_score_f1_and_exact_match_per_language(tmp_path):
    common = ["--task", "tydiqa", "--max-length", "128", "--doc-stride", "32", *FAST]
    for name, extra in (("baseline", []), ("intra", ["--num-passes", "2", "--alpha", "1"])):
        result = run([*common, "--out", tmp_path / name, *extra])
        assert result.exit_code == 0, result.output
        zero_shot = _check_zero_shot(tmp_path / name, ["exact_match", "f1"])
        assert zero_shot["split"] == "dev" and zero_shot["method"] == name
        for scores in zero_shot["languages"].values():
            assert scores["exact_match"] <= scores["f1"] + 1e-9
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        assert record["selection"] == "last" and record["selected_step"] == 4
        assert math.isfinite(record["dev"]["f1"])


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--data-dir", "{tmp}/nowhere"], "no panx/ folder"),
     (["--data-dir", str(FIXTURES), "--languages", "en,xx"], "no test.tsv for xx"),
     (["--data-dir", str(FIXTURES), "--train-language", "de"], "de/train.tsv: no such file"),
     (["--data-dir", str(FIXTURES), "--teacher", "{tmp}/nowhere"], "--teacher .*: no such directory")],
)  # fmt: skip
def test_user_mistakes_are_one_line_errors_and_leave_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    result = run(["--task", "panx", "--out", out, *[a.replace("{tmp}", str(tmp_path)) for a in args]], catch=True)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("intradist train xtreme: ")
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not out.exists() and not out.with_name("run.partial").exists()


# ---------------------------------------------------------------------------------------------
# The scripts


def test_train_script_runs_the_recipe_and_the_table_collects_it(tmp_path, minilm_folder):
    import os
    import subprocess
    import sys

    env = {**os.environ, "INTRADIST_XTREME_DATA": str(FIXTURES), "INTRADIST_XTREME_MODEL": str(minilm_folder),
           "INTRADIST_XTREME_OUT": str(tmp_path), "INTRADIST_SEEDS": "1 2", "OMP_NUM_THREADS": "1"}  # fmt: skip
    fast = ["--max-length", "32", "--max-steps", "2", "--batch-size", "4", "--gradient-accumulation", "1",
            "--languages", "de,en"]  # fmt: skip
    completed = subprocess.run(["bash", str(REPO / "scripts/xtreme/train_panx.sh"), "intra", *fast],
                               capture_output=True, text=True, env=env)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    run_dir = tmp_path / "panx" / minilm_folder.name
    for seed in (1, 2):
        settings = json.loads((run_dir / f"intra-seed{seed}" / "metrics.json").read_text())["settings"]
        assert settings["lr"] == 2e-5 and settings["epochs"] == 10.0 and settings["seed"] == seed
        assert settings["eval_steps"] == 100 and settings["pad_to_max_length"] and settings["long_sentences"] == "split"
        assert settings["distillation"]["num_passes"] == 3 and settings["distillation"]["alpha"] == 1.0
        assert settings["distillation"]["intra_reduction"] == "sum" and settings["distillation"]["intra_positions"] == "all"
        assert settings["languages"] == ["de", "en"]  # the command line wins over the config's 48
    table = subprocess.run([str(Path(sys.executable).with_name("intradist")), "results", "xtreme", str(tmp_path / "results.jsonl")],
                           capture_output=True, text=True)  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("**panx** (test f1")
    assert lines[2] == "| method | en | de | avg |"
    assert lines[4].startswith("| intra | ") and lines[4].endswith(" (2) |")


def test_results_table_is_mean_and_std_over_seeds_per_language():
    from intradist.results import xtreme_tables

    records = [
        {"task": "tydiqa", "method": "intra", "seed": 1, "languages": {"en": {"f1": 60.0}, "sw": {"f1": 40.0}},
         "average": {"f1": 50.0}, "split": "dev"},
        {"task": "tydiqa", "method": "intra", "seed": 2, "languages": {"en": {"f1": 70.0}, "sw": {"f1": 50.0}},
         "average": {"f1": 60.0}, "split": "dev"},
        {"task": "tydiqa", "method": "baseline", "seed": 1, "languages": {"en": {"f1": 55.0}},
         "average": {"f1": 55.0}, "split": "dev"},
    ]  # fmt: skip
    lines = xtreme_tables(records).splitlines()
    assert lines[0] == "**tydiqa** (dev f1, zero-shot from en)"
    assert lines[2] == "| method | en | sw | avg |"
    # intra en: 60, 70 -> 65.0 ± sample std sqrt((25 + 25) / 1) = 7.07; sw 45.0 ± 7.1; avg 55.0 ± 7.1
    assert lines[4] == "| baseline | 55.0 (1) | — | 55.0 (1) |"
    assert lines[5] == "| intra | 65.0 ± 7.1 (2) | 45.0 ± 7.1 (2) | 55.0 ± 7.1 (2) |"


def test_the_scripts_run_the_five_seeds_of_the_paper_by_default():
    # the authors' README: "The 5 seeds used in the paper are 1,2,3,4,5"
    script = (REPO / "scripts/xtreme/run.sh").read_text()
    assert "for seed in ${INTRADIST_SEEDS:-1 2 3 4 5}; do" in script
    assert 'run.sh" panx "$@"' in (REPO / "scripts/xtreme/train_panx.sh").read_text()


def test_results_table_averages_five_seeds_per_language():
    from intradist.results import xtreme_tables

    f1 = {"en": [84.0, 85.0, 86.0, 83.0, 87.0], "de": [78.0, 78.0, 79.0, 80.0, 80.0]}
    records = [{"task": "panx", "method": "intra", "seed": seed, "split": "test",
                "languages": {lang: {"f1": values[seed - 1]} for lang, values in f1.items()},
                "average": {"f1": (f1["en"][seed - 1] + f1["de"][seed - 1]) / 2}} for seed in range(1, 6)]  # fmt: skip
    lines = xtreme_tables(records).splitlines()
    # en: mean 85.0, deviations -1 0 1 -2 2, sample variance 10 / 4 = 2.5, std 1.58
    # de: mean 79.0, deviations -1 -1 0 1 1, variance 4 / 4 = 1, std 1.00
    # avg: 81, 81.5, 82.5, 81.5, 83.5 -> mean 82.0, deviations -1 -0.5 0.5 -0.5 1.5, variance 3.75 / 4, std 0.97
    assert lines[2] == "| method | en | de | avg |"
    assert lines[4] == "| intra | 85.0 ± 1.6 (5) | 79.0 ± 1.0 (5) | 82.0 ± 1.0 (5) |"


def test_an_existing_out_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    result = run(["--task", "panx", "--data-dir", FIXTURES, "--out", out], catch=True)
    assert result.exit_code == 2
    assert result.output.strip() == (f"intradist train xtreme: --out {out}: exists and was not written by intradist "
                                     f"train xtreme; choose a new folder or pass --overwrite to replace it")
    assert (out / "keep.txt").read_text() == "mine\n"
