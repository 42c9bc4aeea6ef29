"""Data preparation and output parsing of the translation pipeline."""

from __future__ import annotations

import gzip
import json
import subprocess

import pytest

from intradist.prepare import translation
from intradist.errors import UserError
from intradist.paths import DATA_ENV_VAR, corpus_dir, data_root
from intradist.prepare.translation import PrepareConfig, detokenized_hypotheses, prepare, read_lines


def write_corpus(folder, pairs=40):
    folder.mkdir(parents=True)
    for stem in ("train", "val", "test"):
        for lang, word in (("de", "hallo welt"), ("en", "hello world")):
            with gzip.open(folder / f"{stem}.{lang}.gz", "wt") as handle:
                handle.writelines(f"{word} {i}\n" for i in range(pairs))


def test_data_root_honours_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert data_root() == tmp_path.resolve()
    with pytest.raises(UserError, match=f"{tmp_path.resolve() / 'multi30k'}: corpus 'multi30k' not found"):
        corpus_dir("multi30k")


def test_shipped_multi30k_has_the_documented_sizes():
    folder = corpus_dir("multi30k")
    sizes = {name: len(read_lines(folder / f"{name}.gz")) for name in ("train.de", "train.en", "val.en", "test.de")}
    assert sizes == {"train.de": 29000, "train.en": 29000, "val.en": 1014, "test.de": 1000}


def test_prepare_builds_a_fairseq_data_bin_and_reuses_it(tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    out = tmp_path / "bin"
    config = PrepareConfig(vocab_size=30, max_test_lines=5)
    prepare(corpus, out, config)
    for name in ("dict.de.txt", "dict.en.txt", "spm.model", "train.de-en.de.bin", "test.de-en.en.idx"):
        assert (out / name).is_file(), name
    assert read_lines(out / "ref.test.en") == [f"hello world {i}" for i in range(5)]
    stamp = (out / "spm.model").stat().st_mtime_ns
    prepare(corpus, out, config)
    assert (out / "spm.model").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="prepared differently"):
        prepare(corpus, out, PrepareConfig(vocab_size=31))


def test_prepare_names_the_missing_file_and_leaves_no_output(tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    (corpus / "val.en.gz").unlink()
    with pytest.raises(UserError, match=r"corpus: missing val\.en\(\.gz\)"):
        prepare(corpus, tmp_path / "bin", PrepareConfig(vocab_size=30))
    assert not (tmp_path / "bin").exists() and not (tmp_path / "bin.partial").exists()


def test_prepare_reports_an_impossible_vocabulary_and_cleans_up(tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    with pytest.raises(UserError, match="--vocab-size 5000: sentencepiece refused it"):
        prepare(corpus, tmp_path / "bin", PrepareConfig(vocab_size=5000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_detokenized_hypotheses_are_in_corpus_order_and_keep_empty_ones():
    output = "S-1\tquelle\nD-1\t-0.5\tsecond one\nH-0\t-1\tx\nD-0\t-1.25\tfirst\nD-2\t-3\t\n"
    assert detokenized_hypotheses(output) == ["first", "second one", ""]


def test_generation_decodes_as_the_authors_inference_sh(tmp_path, monkeypatch):
    """Machine_Translation/scripts/inference.sh:12-19 (fe1ixxu/Intra-Distillation): beam 5, length
    penalty 1, sentencepiece removed, the detokenized hypotheses scored by sacreBLEU's defaults
    against the lowercased, untokenized references."""
    (tmp_path / "prepare.json").write_text(json.dumps({"target_lang": "en"}))
    (tmp_path / "ref.test.en").write_text("the cat sat on the mat .\nhello world\n")
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        out = "S-1\tx\nD-1\t-0.1\thello world\nD-0\t-0.2\tthe cat sat on the mat .\n"
        return subprocess.CompletedProcess(command, 0, stdout=out, stderr="")

    monkeypatch.setattr(translation.subprocess, "run", fake_run)
    scored = translation.translate_and_score(tmp_path, tmp_path / "checkpoint_best.pt", cpu=True)
    (command,) = commands
    flag = {name: command[command.index(name) + 1] for name in ("--beam", "--lenpen", "--remove-bpe", "--gen-subset")}
    assert flag == {"--beam": "5", "--lenpen": "1", "--remove-bpe": "sentencepiece", "--gen-subset": "test"}
    assert scored["hypotheses"] == ["the cat sat on the mat .", "hello world"]
    assert scored["bleu"] == pytest.approx(100.0)
    assert "tok:13a" in scored["signature"] and "case:mixed" in scored["signature"]


def test_an_interrupted_preparation_leaves_nothing_and_the_rerun_gives_the_same(tmp_path):
    """Fault injection: `intradist prepare translation` interrupted at a random point leaves no folder and no
    staging; the rerun writes what an uninterrupted run writes."""
    import random
    import signal
    import sys
    import time

    signum = 2  # Ctrl-C here, SIGTERM in the analysis' test; both in tests/intradist/test_run_folder.py

    def command(out):
        return [sys.executable, "-m", "intradist", "prepare", "translation", "--out", str(out), "--vocab-size", "200",
                "--max-train-lines", "1500", "--max-test-lines", "20", "--workers", "1"]  # fmt: skip

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".log"}

    assert subprocess.run(command(tmp_path / "reference"), capture_output=True, timeout=300).returncode == 0
    out = tmp_path / "data-bin"
    child = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(random.Random(signum).uniform(0.5, 4.0))  # while it imports, reads, trains sentencepiece or binarizes
    child.send_signal(signal.Signals(signum))
    child.communicate(timeout=120)
    if child.returncode != 0:  # interrupted before it finished: nothing at all is left
        assert sorted(p.name for p in tmp_path.iterdir()) == ["reference"]
    assert subprocess.run(command(out), capture_output=True, timeout=300).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-bin", "reference"]
    written, reference = files(out), files(tmp_path / "reference")
    assert written.keys() == reference.keys()
    # prepare.json records the paths; spm.model's bytes vary from run to run while its pieces (spm.vocab) and
    # everything encoded with it (the dictionaries and binaries) are identical
    assert [name for name in written if written[name] != reference[name]
            and name.name not in ("prepare.json", "spm.model")] == []  # fmt: skip
