"""Tests of ``intradist train glue`` (intradist/trainers/glue.py, glue_tasks.py) on the real MiniLM and the real RTE sample.

Fine-tuning runs are short (a few dozen CPU updates, max length 64) and share one module-scoped
baseline and one intra-distillation run. Metric values are worked out by hand in the comments,
not by calling the libraries the implementation uses.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from intradist.errors import UserError
from intradist.paths import corpus_dir
from intradist.results import read_run_records
from intradist import losses
from intradist.trainers import glue, xtreme
from intradist.trainers.glue_tasks import (
    TASKS,
    f1,
    get_task,
    matthews_correlation,
    pearson,
    read_split,
    spearman,
    split_file,
    task_metrics,
)

torch.set_num_threads(1)

#: Small and fast: 16 RTE examples, batch 8 (2 updates per epoch), 64 tokens, a dev subset.
FAST = ["--max-length", "64", "--batch-size", "8", "--max-train-examples", "16", "--logging-steps", "1"]
STEPS = 16


def run(args: Sequence[str]):
    """``intradist train glue ARGS`` in this process (the model stays in the page cache between runs)."""
    return CliRunner().invoke(glue.main, [str(arg) for arg in args], catch_exceptions=False)


def logged(folder: Path, key: str = "loss") -> List[float]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [record[key] for record in records if key in record and "eval_dev_loss" not in record]


@pytest.fixture(scope="module")
def rte_runs(tmp_path_factory):
    """The RTE sample, once without and once with intra-distillation (K = 2, constant α = 1)."""
    root = tmp_path_factory.mktemp("glue")
    common = ["--task", "RTE", *FAST, "--max-steps", STEPS, "--eval-steps", STEPS, "--seed", "1"]
    runs = {}
    for name, extra in (("baseline", []), ("intra", ["--num-passes", "2", "--alpha", "1", "--constant-alpha"])):
        result = run([*common, "--out", root / name, *extra])
        assert result.exit_code == 0, result.output
        runs[name] = (root / name, result)
    return runs


@pytest.mark.parametrize("method", ["baseline", "intra"])
def test_fine_tuning_rte_lowers_the_training_loss_and_reports_dev_accuracy(rte_runs, method):
    folder, result = rte_runs[method]
    loss = logged(folder)
    assert len(loss) == STEPS
    first, last = np.mean(loss[:4]), np.mean(loss[-4:])
    assert last < first - 0.1, f"{method}: first updates {first:.3f}, last {last:.3f}"
    record = json.loads((folder / "metrics.json").read_text())
    assert record["method"] == method and record["steps"] == STEPS and record["seed"] == 1
    assert record["dev_examples"] == {"dev": 139} and record["train_examples"] == 16
    assert 0.0 <= record["dev"]["dev"]["accuracy"] <= 1.0
    assert record["settings"]["distillation"]["num_passes"] == (2 if method == "intra" else 1)
    assert {"python", "torch", "transformers"} <= set(record["versions"])
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"RTE {method} seed 1: dev accuracy ") and str(folder) in summary
    assert not Path(str(folder) + ".partial").exists()


def test_intra_distillation_logs_its_terms(rte_runs):
    folder, _ = rte_runs["intra"]
    keys = ("intra_loss", "alpha", "supervised_loss", "loss")
    intra, alpha, supervised, total = (logged(folder, key) for key in keys)
    assert len(intra) == len(alpha) == len(supervised) == STEPS
    assert all(value == 1.0 for value in alpha) and all(value > 0 for value in intra)
    # loss = supervised + alpha * intra, up to the rounding of the logged terms
    assert all(abs(t - (s + a * i)) < 1e-4 for t, s, a, i in zip(total, supervised, alpha, intra))
    assert not any("intra_loss" in json.loads(line) for line in (rte_runs["baseline"][0] / "log.jsonl").open())


def test_saved_folder_loads_in_analyze_sensitivity_and_gives_a_finite_loss(rte_runs):
    from intradist.analysis.batches import BatchOptions, make_batches
    from intradist.analysis.loading import load_checkpoint

    folder, _ = rte_runs["intra"]
    loaded = load_checkpoint(folder)  # no --num-labels: the folder has its head and labels
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    assert loaded.model.config.id2label == {0: "entailment", 1: "not_entailment"}
    options = BatchOptions(data=corpus_dir("glue/RTE") / "dev.tsv.gz", text_fields=("sentence1", "sentence2"),
                           max_batches=2, batch_size=8, max_length=64)  # fmt: skip
    batches = make_batches(loaded, options)
    with torch.no_grad():
        loss = loaded.loss_fn(loaded.model, batches[0])
    assert math.isfinite(loss.item()) and 0 < loss.item() < 5


def test_the_divergence_comes_from_user_dir_losses(tmp_path, monkeypatch):
    calls = []
    original = losses.intra_distillation_loss

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(losses, "intra_distillation_loss", counting)
    result = run(["--task", "rte", "--out", tmp_path / "out", "--max-length", "32", "--batch-size", "4",
                  "--max-train-examples", "8", "--max-eval-examples", "4", "--max-steps", "2",
                  "--num-passes", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [2, 2]  # one call per update, with the K = 2 passes; none in evaluation


def test_the_same_seed_gives_the_same_numbers_on_the_cpu(tmp_path):
    args = ["--task", "RTE", "--max-length", "32", "--batch-size", "4", "--max-train-examples", "8",
            "--max-eval-examples", "4", "--max-steps", "2", "--logging-steps", "1", "--num-passes", "2"]  # fmt: skip
    for name in ("a", "b"):
        assert run([*args, "--out", tmp_path / name]).exit_code == 0
    assert logged(tmp_path / "a") == logged(tmp_path / "b")
    a, b = (json.loads((tmp_path / name / "metrics.json").read_text())["dev"] for name in ("a", "b"))
    assert a == b


def test_self_distillation_feeds_the_teachers_logits_to_the_kd_term(rte_runs, tmp_path):
    teacher, _ = rte_runs["baseline"]
    result = run(["--task", "RTE", "--out", tmp_path / "student", "--teacher", teacher, "--kd-weight", "0.5",
                  "--max-length", "32", "--batch-size", "4", "--max-train-examples", "8", "--max-eval-examples", "4",
                  "--max-steps", "2", "--logging-steps", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    kd, supervised, total = (logged(tmp_path / "student", key) for key in ("kd_loss", "supervised_loss", "loss"))
    assert len(kd) == 2 and all(value > 0 for value in kd)
    assert all(abs(t - (0.5 * s + 0.5 * k)) < 1e-4 for t, s, k in zip(total, supervised, kd))
    assert json.loads((tmp_path / "student" / "metrics.json").read_text())["method"] == "self-distill"


# ---------------------------------------------------------------------------------------------
# STS-B (regression) and MNLI (two dev sets) on tiny fixtures

STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
STSB_PAIRS = [
    ("A plane is taking off.", "An air plane is taking off.", 5.0),
    ("A man is playing a flute.", "A man is playing a bamboo flute.", 3.8),
    ("A man is slicing a tomato.", "A dog is running.", 0.0),
    ("Three men are playing chess.", "Two men are playing chess.", 2.6),
    ("A woman is dancing.", "A man is talking.", 0.5),
    ("A cat is sleeping.", "A cat sleeps on the sofa.", 4.2),
]


def write_tsv(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def stsb_dir(tmp_path) -> Path:
    folder = tmp_path / "STS-B"
    folder.mkdir()
    rows = [f"{i}\tmain-captions\tMSRvid\t2012test\t{i}\tnone\tnone\t{a}\t{b}\t{s}"
            for i, (a, b, s) in enumerate(STSB_PAIRS)]  # fmt: skip
    write_tsv(folder / "train.tsv", [STSB_HEADER, *rows])
    write_tsv(folder / "dev.tsv", [STSB_HEADER, *rows[:4]])
    return folder


def test_stsb_trains_as_regression_with_the_passes_variance(stsb_dir, tmp_path, monkeypatch):
    calls = []
    original = losses.regression_pass_divergence

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(losses, "regression_pass_divergence", counting)
    out = tmp_path / "stsb"
    result = run(["--task", "STS-B", "--data-dir", stsb_dir, "--out", out, "--max-length", "32", "--batch-size", "3",
                  "--max-steps", "2", "--num-passes", "2", "--logging-steps", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [2, 2]
    record = json.loads((out / "metrics.json").read_text())
    assert set(record["dev"]["dev"]) == {"loss", "pearson", "spearman"}
    correlations = (record["dev"]["dev"]["pearson"], record["dev"]["dev"]["spearman"])
    assert all(value is None or -1 <= value <= 1 for value in correlations)
    from intradist.analysis.loading import load_checkpoint

    loaded = load_checkpoint(out)
    assert loaded.model.config.num_labels == 1 and loaded.model.config.problem_type == "regression"


MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")  # fmt: skip


def mnli_rows(pairs) -> List[str]:
    return [f"{i}\t{i}\t{i}e\tfiction\t(x)\t(y)\t(X)\t(Y)\t{a}\t{b}\t{label}\t{label}"
            for i, (a, b, label) in enumerate(pairs)]  # fmt: skip


@pytest.fixture
def mnli_dir(tmp_path) -> Path:
    folder = tmp_path / "MNLI"
    folder.mkdir()
    pairs = [("A man sleeps.", "A person rests.", "entailment"), ("A man sleeps.", "A man runs.", "contradiction"),
             ("A man sleeps.", "A man dreams.", "neutral"), ("Kids play.", "Children play.", "entailment")]  # fmt: skip
    write_tsv(folder / "train.tsv", [MNLI_HEADER, *mnli_rows(pairs)])
    write_tsv(folder / "dev_matched.tsv", [MNLI_HEADER, *mnli_rows(pairs[:3])])
    write_tsv(folder / "dev_mismatched.tsv", [MNLI_HEADER, *mnli_rows(pairs[1:])])
    return folder


def test_mnli_reads_gold_labels_and_both_dev_sets(mnli_dir, tmp_path):
    task = get_task("mnli")
    matched = read_split(task, split_file(mnli_dir, "dev_matched"))
    mismatched = read_split(task, split_file(mnli_dir, "dev_mismatched"))
    assert matched.labels == [0, 2, 1] and mismatched.labels == [2, 1, 0]  # entailment, neutral, contradiction
    assert matched.texts == [["A man sleeps."] * 3, ["A person rests.", "A man runs.", "A man dreams."]]
    result = run(["--task", "MNLI", "--data-dir", mnli_dir, "--out", tmp_path / "mnli", "--max-length", "32",
                  "--batch-size", "2", "--max-steps", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "mnli" / "metrics.json").read_text())
    assert set(record["dev"]) == {"matched", "mismatched"}
    assert all(0 <= record["dev"][split]["accuracy"] <= 1 for split in ("matched", "mismatched"))
    assert record["dev_examples"] == {"matched": 3, "mismatched": 3}
    assert "matched accuracy" in result.stdout and "mismatched accuracy" in result.stdout


def test_cola_without_a_header_row_keeps_its_first_example(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", [
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.",
        "gj04\t0\t*\tThey drank the pub.",
        "bc01\t1\t\tThe more we study verbs, the crazier they get.",
    ])  # fmt: skip
    examples = read_split(get_task("CoLA"), path)
    assert examples.labels == [1, 0, 1]
    assert examples.texts[0][0].startswith("Our friends") and examples.texts[0][1] == "They drank the pub."


def test_labels_accept_official_strings_names_and_integer_ids(tmp_path):
    rte = get_task("rte")
    path = write_tsv(tmp_path / "dev.tsv", ["sentence1\tsentence2\tlabel", "a\tb\tentailment", "c\td\tnot_entailment"])
    assert read_split(rte, path).labels == [0, 1]
    jsonl = tmp_path / "validation.jsonl"
    jsonl.write_text('{"sentence1": "a", "sentence2": "b", "label": 1, "idx": 0}\n')  # a Hugging Face export
    assert split_file(tmp_path, "dev") == tmp_path / "dev.tsv" and read_split(rte, jsonl).labels == [1]
    mrpc = write_tsv(tmp_path / "mrpc.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String", "1\t1\t2\tx y\tx z"])
    assert read_split(get_task("MRPC"), mrpc).labels == [1]
    with pytest.raises(UserError, match="'maybe' is not a RTE label"):
        read_split(rte, write_tsv(tmp_path / "bad.tsv", ["sentence1\tsentence2\tlabel", "a\tb\tmaybe"]))


def test_every_task_has_its_official_folder_name_and_metrics():
    names = ["CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "WNLI"]
    assert [task.name for task in TASKS.values()] == names
    assert get_task("sts-b") is get_task("STSB") and get_task("STS-B").regression
    assert get_task("cola").primary_metric == "matthews_correlation" and get_task("qqp").metrics == ("f1", "accuracy")


# ---------------------------------------------------------------------------------------------
# Metrics against hand-computed values


def test_matthews_correlation_by_hand():
    # TP = 2 (items 1, 5), FP = 1 (item 2), TN = 2 (items 3, 4), FN = 0
    # (2*2 - 1*0) / sqrt((2+1)(2+0)(2+1)(2+0)) = 4 / 6
    assert matthews_correlation([1, 1, 0, 0, 1], [1, 0, 0, 0, 1]) == pytest.approx(2 / 3)
    assert matthews_correlation([1, 1, 1], [1, 0, 1]) == 0.0  # one predicted class: a zero factor


def test_f1_and_accuracy_by_hand():
    # TP = 2, FP = 1, FN = 1: precision = recall = 2/3, F1 = 2/3; 3 of 5 right
    predictions, references = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert f1(predictions, references) == pytest.approx(2 / 3)
    logits = np.array([[0.0, 1.0] if p else [1.0, 0.0] for p in predictions])
    assert task_metrics(get_task("MRPC"), logits, np.array(references)) == pytest.approx({"f1": 2 / 3, "accuracy": 0.6})


def test_pearson_and_spearman_by_hand():
    # x - mean = (-1, 0, 1), y - mean = (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 14/3) = sqrt(27/28)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(math.sqrt(27 / 28))
    # ranks (1, 2, 3, 4) and (1, 3, 2, 4): sum d^2 = 2, rho = 1 - 6*2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    scores = task_metrics(get_task("STS-B"), np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([10, 30, 20, 40]))
    assert scores["spearman"] == pytest.approx(0.8)
    assert math.isnan(pearson([2, 2, 2], [1, 2, 3]))  # undefined for constant predictions


# ---------------------------------------------------------------------------------------------
# User errors: one line, exit code 2, nothing written


def rte_copy(tmp_path: Path, header: str = "index\tsentence1\tsentence2\tlabel") -> Path:
    folder = tmp_path / "RTE"
    folder.mkdir()
    rows = ["0\tA dog barks.\tAn animal makes a sound.\tentailment", "1\tIt rains.\tThe sun shines.\tnot_entailment"]
    write_tsv(folder / "train.tsv", [header, *rows])
    write_tsv(folder / "dev.tsv", [header, *rows])
    return folder


@pytest.mark.parametrize("case", ["missing data dir", "no train file", "unknown task", "missing column",
                                  "teacher is no model"])  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, case):
    out = tmp_path / "out"
    args = ["--task", "RTE", "--out", out, "--max-steps", "1"]
    if case == "missing data dir":
        args += ["--data-dir", tmp_path / "nowhere"]
        expected = "nowhere: no such directory"
    elif case == "no train file":
        (tmp_path / "empty").mkdir()
        args += ["--data-dir", tmp_path / "empty"]
        expected = "no train.tsv"
    elif case == "unknown task":
        args = ["--task", "SQuAD", "--out", out]
        expected = "--task SQuAD: not a GLUE task"
    elif case == "missing column":
        args += ["--data-dir", rte_copy(tmp_path, header="index\tsentence1\thypothesis\tlabel")]
        expected = "no text column 'sentence2'"
    else:
        (tmp_path / "teacher").mkdir()
        args += ["--data-dir", rte_copy(tmp_path), "--teacher", tmp_path / "teacher"]
        expected = "teacher: no config.json; not a Hugging Face model folder"
    result = CliRunner().invoke(glue.main, [str(arg) for arg in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("intradist train glue: "), result.stderr
    assert not out.exists() and not (tmp_path / "out.partial").exists()


# ---------------------------------------------------------------------------------------------
# scripts/glue: the results table and the recipe script's argument checks

REPO = Path(__file__).resolve().parents[2]


def test_results_table_is_methods_by_task_metrics_with_mean_and_std_over_seeds(tmp_path):
    from intradist.cli import cli
    from intradist.results import glue_table

    records = [
        {"task": "RTE", "method": "baseline", "seed": 1, "dev": {"dev": {"loss": 0.7, "accuracy": 0.60}}},
        {"task": "RTE", "method": "baseline", "seed": 2, "dev": {"dev": {"loss": 0.7, "accuracy": 0.70}}},
        {"task": "RTE", "method": "intra", "seed": 1, "dev": {"dev": {"accuracy": 0.75}}},
        {"task": "MNLI", "method": "intra", "seed": 1,
         "dev": {"matched": {"accuracy": 0.8}, "mismatched": {"accuracy": 0.81}}},
    ]  # fmt: skip
    for record in records:  # one run folder each, and the same runs again as JSON lines: counted once
        folder = tmp_path / "runs" / f"{record['task']}-{record['method']}-{record['seed']}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(record, indent=2))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    found = read_run_records([tmp_path / "results.jsonl", tmp_path / "runs"], ("task", "method", "seed", "dev"), "glue")
    assert len(found) == 4
    lines = glue_table(found).splitlines()
    assert lines[0] == "| method | MNLI-m acc | MNLI-mm acc | RTE acc |"
    # RTE baseline: 60 and 70 -> mean 65, sample std sqrt(((-5)^2 + 5^2) / 1) = 7.07
    assert lines[2] == "| baseline | — | — | 65.0 ± 7.1 (2) |"
    assert lines[3] == "| intra | 80.0 (1) | 81.0 (1) | 75.0 (1) |"
    result = CliRunner().invoke(cli, ["results", "glue", str(tmp_path / "nothing.jsonl")])
    assert result.exit_code == 2 and result.stderr.startswith("intradist results glue: ")


def test_run_sh_refuses_an_unknown_method_before_installing_anything():
    import subprocess

    completed = subprocess.run(["bash", str(REPO / "scripts" / "glue" / "run.sh"), "RTE", "distill"],
                               capture_output=True, text=True)  # fmt: skip
    assert completed.returncode == 2
    expected = "run.sh: METHOD distill: choose baseline, intra, self-distill or intra+self-distill"
    assert completed.stderr.strip() == expected


class _RunsCommandWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("command", ["glue", "xtreme"])
def test_a_teacher_whose_weights_need_unpickling_is_one_line(tmp_path, minilm_folder, command):
    """The issue's case: a teacher folder holding a pickled .bin that needs full unpickling ended in a traceback
    (train xtreme) or suggested a --trust-checkpoint flag the command does not have (train glue)."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text((minilm_folder / "config.json").read_text())
    marker = tmp_path / "pwned"
    torch.save({"weight": _RunsCommandWhenUnpickled(marker)}, teacher / "pytorch_model.bin")
    out = tmp_path / "out"
    xtreme_fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "xtreme"
    data = ["--task", "RTE"] if command == "glue" else ["--task", "panx", "--data-dir", str(xtreme_fixtures)]
    main = glue.main if command == "glue" else xtreme.main
    result = CliRunner().invoke(main, [*data, "--teacher", str(teacher), "--max-steps", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"intradist train {command}: --teacher {teacher / 'pytorch_model.bin'}: needs arbitrary unpickling (posix.system); "
        "weights are read weights-only (save the model with safetensors)"]  # fmt: skip
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]
