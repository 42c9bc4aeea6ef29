"""The IWSLT'14 recipe commands and their smoke modes, run through the shell scripts users call."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from intradist.paths import REPO_ROOT
from intradist.results import read_jsonl
from intradist.recipes.translation import PAPER_SWITCHES, RECIPE_SWITCHES, Recipe, evaluate_main, main
from intradist.settings import flat_record


def _recipe(method: str, **overrides) -> Recipe:
    return Recipe(lang="de", method=method, data="data-bin", save_dir="out",
                  distillation=replace(PAPER_SWITCHES, teacher="teacher.pt"), **overrides)  # fmt: skip


def _flag(args, name):
    return args[args.index(name) + 1]


def test_each_method_selects_its_criterion_with_the_papers_defaults():
    assert _flag(_recipe("baseline").criterion_args(), "--criterion") == "label_smoothed_cross_entropy"
    intra = _recipe("intra").criterion_args()
    # The paper's setting for IWSLT'14: K = 3, alpha = 5, adaptive schedule with p = 5, q = 10.
    assert (_flag(intra, "--task"), _flag(intra, "--criterion")) == ("translation", "intra_distillation")
    assert [_flag(intra, f) for f in ("--num-passes", "--alpha", "--adaptive-alpha", "--alpha-p", "--alpha-q")] == [
        "3", "5.0", "1", "5.0", "10.0"]  # fmt: skip
    assert _flag(_recipe("kd").criterion_args(), "--criterion") == "label_smoothed_kd"
    assert _flag(_recipe("self-distill").criterion_args(), "--teacher-path") == "teacher.pt"
    full = _recipe("baseline").fairseq_args()
    assert _flag(full, "--arch") == "transformer_iwslt_de_en"
    assert [_flag(full, f) for f in ("--lr", "--warmup-updates", "--max-update", "--max-tokens", "--dropout",
                                     "--attention-dropout", "--weight-decay", "--label-smoothing", "--adam-betas")] == [
        "0.0005", "8000", "50000", "4096", "0.3", "0.1", "0.0001", "0.1", "(0.9, 0.98)"]  # fmt: skip


def test_recipe_json_lists_the_distillation_switches_among_the_other_settings():
    record = flat_record(_recipe("intra"), RECIPE_SWITCHES)
    assert "distillation" not in record
    assert {key: record[key] for key in ("weight_decay", *RECIPE_SWITCHES, "fairseq_extra")} == {
        "weight_decay": 1e-4, "label_smoothing": 0.1, "num_passes": 3, "alpha": 5.0, "adaptive_alpha": True,
        "alpha_p": 5.0, "alpha_q": 10.0, "divergence": "x", "teacher": "teacher.pt", "kd_weight": 0.5,
        "kd_temperature": 1.0, "fairseq_extra": ""}  # fmt: skip
    keys = list(record)
    assert keys[keys.index("weight_decay") + 1 : keys.index("fairseq_extra")] == list(RECIPE_SWITCHES)


def test_the_recipe_carries_the_authors_train_sh_settings():
    """Machine_Translation/scripts/train.sh (fe1ixxu/Intra-Distillation 6304a78) lines 144-153, flag by flag."""
    on_gpu = _recipe("intra", fp16=True).fairseq_args()
    expected = {"--max-source-positions": "512", "--max-target-positions": "512", "--patience": "40",
                "--fp16-init-scale": "16", "--ddp-backend": "no_c10d", "--seed": "1", "--update-freq": "1",
                "--keep-interval-updates": "1", "--log-interval": "100", "--adam-eps": "1e-06",
                "--lr-scheduler": "inverse_sqrt", "--optimizer": "adam",
                # not in train.sh: fairseq's default, which the authors therefore trained with
                "--required-batch-size-multiple": "8"}  # fmt: skip
    assert {flag: _flag(on_gpu, flag) for flag in expected} == expected
    assert {"--fp16", "--no-epoch-checkpoints", "--skip-invalid-size-inputs-valid-test"} <= set(on_gpu)
    on_cpu = _recipe("intra", cpu=True).fairseq_args()
    assert "--fp16" not in on_cpu and "--fp16-init-scale" not in on_cpu and "--cpu" in on_cpu


def _script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTRADIST_SMOKE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True)


def test_smoke_modes_train_evaluate_and_tabulate_every_method(tmp_path):
    for method in ("self-distill", "intra"):  # self-distill trains its baseline teacher first
        trained = _script(tmp_path, "scripts/iwslt14/train.sh", "--smoke", method)
        assert trained.returncode == 0, trained.stderr[-3000:]
    runs = tmp_path / "checkpoints"
    assert sorted(p.name for p in runs.iterdir()) == ["baseline-seed1", "intra-seed1", "self-distill-seed1"]
    student = json.loads((runs / "self-distill-seed1" / "recipe.json").read_text())
    assert student["teacher"] == str(runs / "baseline-seed1" / "checkpoint_best.pt")
    assert "--teacher-path" in (runs / "self-distill-seed1" / "command.txt").read_text()

    evaluated = _script(tmp_path, "scripts/iwslt14/evaluate.sh", "--smoke")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "sacreBLEU signature: nrefs:1" in evaluated.stdout
    for method in ("intra", "self-distill"):
        evaluated = _script(tmp_path, "scripts/iwslt14/evaluate.sh", "de", str(runs / f"{method}-seed1"))
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    records = read_jsonl(tmp_path / "results.jsonl")
    assert [r["method"] for r in records] == ["baseline", "intra", "self-distill"]
    assert all(0.0 <= r["bleu"] <= 100.0 and r["pair"] == "de-en" for r in records)
    assert len((runs / "intra-seed1" / "checkpoint_best.test.hyp").read_text().splitlines()) == 30

    table = subprocess.run([str(REPO_ROOT / ".venv/bin/intradist"), "results", "translation", str(tmp_path / "results.jsonl")],
                           cwd=REPO_ROOT, capture_output=True, text=True)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert [line.split(" | ")[0].lstrip("| ") for line in table.stdout.splitlines()[2:]] == ["baseline", "intra", "self-distill"]


def test_environment_variables_override_defaults_and_flags_override_both(tmp_path):
    runner = CliRunner()
    env = {"INTRADIST_SMOKE_DIR": str(tmp_path), "INTRADIST_LR": "0.003", "INTRADIST_SEED": "7", "OMP_NUM_THREADS": "1",
           "INTRADIST_DATA": str(REPO_ROOT / "data")}  # the corpus folder, never taken for --data
    result = runner.invoke(main, ["--smoke", "de", "baseline", "--seed", "8", "--fairseq-extra", "--clip-norm 0.5"], env=env)
    assert result.exit_code == 0, result.output
    recipe = json.loads((tmp_path / "checkpoints" / "baseline-seed8" / "recipe.json").read_text())
    assert (recipe["lr"], recipe["seed"]) == (0.003, 8)
    command = (tmp_path / "checkpoints" / "baseline-seed8" / "command.txt").read_text().split()
    assert (_flag(command, "--lr"), _flag(command, "--seed"), _flag(command, "--clip-norm")) == ("0.003", "8", "0.5")
    # the smoke mode batches in multiples of 1: fairseq 0.12 would drop a last batch of another size
    assert _flag(command, "--required-batch-size-multiple") == "1"
    provenance = json.loads((tmp_path / "checkpoints" / "baseline-seed8" / "provenance.json").read_text())
    data_bin = tmp_path / "data-bin"
    assert provenance["seed"] == 8 and provenance["git_commit"] and "fairseq-fixed" in provenance["versions"]
    assert provenance["data"]["dict.en.txt"] == hashlib.sha256((data_bin / "dict.en.txt").read_bytes()).hexdigest()


def test_a_rerun_resumes_from_the_last_checkpoint(tmp_path):
    runner = CliRunner()
    env = {"INTRADIST_SMOKE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    assert runner.invoke(main, ["--smoke", "de", "baseline", "--max-updates", "4"], env=env).exit_code == 0
    assert runner.invoke(main, ["--smoke", "de", "baseline", "--max-updates", "8"], env=env).exit_code == 0
    log = (tmp_path / "checkpoints" / "baseline-seed1" / "train.log").read_text()
    assert "Loaded checkpoint" in log and "(epoch 1 @ 4 updates)" in log
    updates = [json.loads(line.split("| train_inner | ")[1])["num_updates"] for line in log.splitlines() if "| train_inner |" in line]
    assert updates == [str(u) for u in range(1, 9)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["xx", "baseline"], "LANG 'xx': not an IWSLT'14 pair"),
        (["de", "kd", "--smoke"], "METHOD kd needs --teacher"),
        (["de", "baseline", "--data", "/nonexistent"], "/nonexistent: not a prepared data-bin"),
        (["de"], "usage: intradist train translation LANG METHOD"),
        (["de", "kd", "--teacher", "t.pt", "--kd-weight", "2"], "intradist train translation: --kd-weight must lie in [0, 1], got 2.0"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(main, args, env={"INTRADIST_SMOKE_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_evaluate_refuses_a_folder_without_recipe_and_a_wrong_language(tmp_path):
    result = CliRunner().invoke(evaluate_main, [str(tmp_path)])
    assert result.exit_code == 2 and "no recipe.json" in result.output
    (tmp_path / "recipe.json").write_text(json.dumps({"lang": "de", "smoke": True}))
    result = CliRunner().invoke(evaluate_main, [str(tmp_path), "--lang", "it"])
    assert result.exit_code == 2 and "trained on de-en, not it-en" in result.output
