"""Translation data and evaluation: sentencepiece + fairseq binaries, and sacreBLEU scoring.

The pipeline the paper uses for IWSLT'14 (lowercase, joint sentencepiece model, one dictionary
for both languages), applied to any parallel corpus stored as ``{split}.{lang}[.gz]`` text files.
Each prepared folder is written under a temporary name and renamed when complete, so an
interrupted run leaves nothing half-written and the next run starts that step again.

Two choices of the authors' ``Machine_Translation/scripts/preprocess_iwslt14.sh``
(fe1ixxu/Intra-Distillation, lines 115-134) are options of :class:`PrepareConfig`, on in the
IWSLT'14 recipe (:data:`intradist.prepare.iwslt14.PAPER_DATA`) and off by default: sentencepiece learnt on
every split, test included (``sentencepiece_input="all"``), and the whole sentencepiece
vocabulary as the fixed dictionary of both languages (``dictionary="sentencepiece"``). The
defaults learn sentencepiece on the training text only and count the dictionary there, which is
what a new corpus should do.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import click

from intradist.errors import UserError
from intradist.run_folder import write_folder

#: fairseq-fixed 0.12.3.1's batching (fairseq/data/data_utils.py, ``batch_by_size``) drops the last
#: batch when its size is not a multiple of --required-batch-size-multiple (default 8): 1014
#: validation sentences become 1008, and a test set loses translations. A multiple of 1 keeps
#: every sentence: generation, the tests and the small demos pass it. The IWSLT'14 recipe trains
#: with the authors' 8 (intradist.recipes.translation), whose fairseq kept that last batch.
REQUIRED_BATCH_SIZE_MULTIPLE = ("--required-batch-size-multiple", "1")

SENTENCEPIECE_INPUTS = ("train", "all")
DICTIONARIES = ("joined", "sentencepiece")

SPLITS = {"train": "train", "valid": "val", "test": "test"}
"""fairseq split name -> file stem in the shipped corpus."""


@dataclass(frozen=True)
class PrepareConfig:
    """What determines a prepared data folder; saved beside it as ``prepare.json``."""

    source_lang: str = "de"
    target_lang: str = "en"
    vocab_size: int = 1000
    max_train_lines: Optional[int] = None
    max_test_lines: Optional[int] = None
    lowercase: bool = True
    #: the text sentencepiece learns from: ``train`` (both languages) or ``all`` splits (the authors')
    sentencepiece_input: str = "train"
    character_coverage: float = 1.0
    #: sentencepiece samples this many sentences when there are more (0: all of them)
    input_sentence_size: int = 0
    #: ``joined``: fairseq counts the pieces of the training text, padded to a multiple of 8;
    #: ``sentencepiece``: the whole sentencepiece vocabulary, every piece count 100, no padding
    dictionary: str = "joined"


def read_lines(path: Path, limit: Optional[int] = None, lowercase: bool = False) -> List[str]:
    """The lines of a text file (gzipped or not), stripped, optionally lowercased, at most ``limit``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            lines = [line.rstrip("\n") for line in itertools.islice(handle, limit)]
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read ({error})") from error
    return [line.lower() if lowercase else line for line in lines]


def _corpus_file(corpus: Path, stem: str, lang: str) -> Path:
    for candidate in (corpus / f"{stem}.{lang}.gz", corpus / f"{stem}.{lang}"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{corpus}: missing {stem}.{lang}(.gz); expected one sentence per line")


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def prepare(corpus: Path, out: Path, config: PrepareConfig, workers: int = 2) -> Path:
    """Turn a parallel corpus into a fairseq data-bin folder; reuse ``out`` when already prepared.

    Returns ``out``, which then holds the binarised splits, ``dict.*.txt``, the sentencepiece
    model ``spm.model``, the references ``ref.{split}.{tgt}`` (raw text, lowercased as the
    training data) and ``prepare.json``.
    """
    if config.sentencepiece_input not in SENTENCEPIECE_INPUTS:
        choices = ", ".join(SENTENCEPIECE_INPUTS)
        raise UserError(f"sentencepiece_input {config.sentencepiece_input!r}: choose from {choices}")
    if config.dictionary not in DICTIONARIES:
        raise UserError(f"dictionary {config.dictionary!r}: choose from {', '.join(DICTIONARIES)}")
    marker = out / "prepare.json"
    # a folder prepared before a field existed was prepared with that field's default
    if marker.is_file() and {**asdict(PrepareConfig()), **json.loads(marker.read_text())} == asdict(config):
        return out
    if out.exists():
        raise UserError(f"{out}: exists but was prepared differently (or not completely); remove it or pick --out")

    src, tgt = config.source_lang, config.target_lang
    texts: Dict[str, Dict[str, List[str]]] = {}
    for split, stem in SPLITS.items():
        limit = config.max_train_lines if split == "train" else config.max_test_lines if split == "test" else None
        texts[split] = {
            lang: read_lines(_corpus_file(corpus, stem, lang), limit, config.lowercase) for lang in (src, tgt)
        }
        if len(texts[split][src]) != len(texts[split][tgt]):
            raise UserError(f"{corpus}: {stem}.{src} and {stem}.{tgt} have different numbers of lines")

    return write_folder(out, "intradist prepare", lambda staging: _build_data_bin(texts, staging, config, workers),
                        inputs=[corpus])  # fmt: skip


def _build_data_bin(texts: Dict[str, Dict[str, List[str]]], staging: Path, config: PrepareConfig, workers: int) -> None:
    """Sentencepiece model, encoded splits, references and fairseq binaries, all inside ``staging``."""
    import sentencepiece as spm

    src, tgt = config.source_lang, config.target_lang
    spm_input = staging / "spm_input.txt"
    _write_lines(spm_input, [line for split, lang in sentencepiece_files(config) for line in texts[split][lang]])
    try:
        spm.SentencePieceTrainer.train(
            input=str(spm_input),
            model_prefix=str(staging / "spm"),
            vocab_size=config.vocab_size,
            character_coverage=config.character_coverage,
            input_sentence_size=config.input_sentence_size,
            model_type="unigram",
            num_threads=workers,
            minloglevel=2,
        )
    except RuntimeError as error:  # e.g. a vocabulary larger than the data supports
        raise UserError(f"--vocab-size {config.vocab_size}: sentencepiece refused it ({error})") from error
    spm_input.unlink()
    processor = spm.SentencePieceProcessor(model_file=str(staging / "spm.model"))
    pieces = staging / "pieces"
    pieces.mkdir()
    for split, by_lang in texts.items():
        for lang, lines in by_lang.items():
            _write_lines(pieces / f"{split}.{lang}", [" ".join(p) for p in processor.encode(lines, out_type=str)])
            if split != "train":
                _write_lines(staging / f"ref.{split}.{lang}", lines)
    command = [
        sys.executable, "-m", "fairseq_cli.preprocess",
        "--source-lang", src, "--target-lang", tgt,
        "--trainpref", str(pieces / "train"), "--validpref", str(pieces / "valid"),
        "--testpref", str(pieces / "test"),
        "--destdir", str(staging), "--dataset-impl", "mmap", "--workers", str(workers),
    ]  # fmt: skip
    if config.dictionary == "sentencepiece":
        dictionary = pieces / "dict.txt"
        _write_lines(dictionary, sentencepiece_dictionary(processor))
        command += ["--srcdict", str(dictionary), "--tgtdict", str(dictionary), "--padding-factor", "1"]
    else:
        command.append("--joined-dictionary")
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"fairseq-preprocess failed:\n{completed.stderr[-3000:]}")
    shutil.rmtree(pieces)
    (staging / "prepare.json").write_text(json.dumps(asdict(config), indent=2) + "\n")


def sentencepiece_files(config: PrepareConfig) -> List[Tuple[str, str]]:
    """The (split, language) texts sentencepiece learns from, in the order it reads them.

    ``all`` follows the authors' ``--input=$(ls raw-XX/*)``: every split of both languages, in
    the sorted order of their file names ``{split}.{lang}`` (test, train, valid).
    """
    langs = (config.source_lang, config.target_lang)
    if config.sentencepiece_input == "train":
        return [("train", lang) for lang in langs]
    return sorted(((split, lang) for split in SPLITS for lang in langs), key=lambda pair: f"{pair[0]}.{pair[1]}")


def sentencepiece_dictionary(processor) -> List[str]:
    """fairseq dictionary lines of the whole sentencepiece vocabulary, each piece with count 100.

    As the authors' ``cut -f 1 spm.vocab | tail -n +4 | sed "s/$/ 100/g"``: every piece in the
    model's order but the first three (``<unk>``, ``<s>``, ``</s>``, which fairseq adds itself).
    """
    return [f"{processor.id_to_piece(i)} 100" for i in range(3, processor.get_piece_size())]


_HYPOTHESIS_LINE = re.compile(r"^D-(\d+)\t[^\t]*\t(.*)$")


def detokenized_hypotheses(generate_output: str) -> List[str]:
    """The detokenized hypotheses (``D-`` lines) of ``fairseq-generate`` output, in corpus order."""
    found = {}
    for line in generate_output.splitlines():
        match = _HYPOTHESIS_LINE.match(line)
        if match:
            found[int(match.group(1))] = match.group(2)
    return [found[i] for i in sorted(found)]


def translate_and_score(
    data_bin: Path,
    checkpoint: Path,
    split: str = "test",
    beam: int = 5,
    batch_size: int = 128,
    cpu: bool = False,
    user_dir: Optional[Path] = None,
    extra_args: Sequence[str] = (),
) -> Dict[str, object]:
    """Translate ``split`` with ``fairseq-generate`` and score it with sacreBLEU.

    Returns ``{"bleu", "signature", "hypotheses"}``; the hypotheses are sentencepiece-decoded
    and scored against the raw reference saved by :func:`prepare`.
    """
    import sacrebleu

    config = json.loads((data_bin / "prepare.json").read_text())
    command = [
        sys.executable, "-m", "fairseq_cli.generate", str(data_bin),
        "--path", str(checkpoint), "--gen-subset", split, "--beam", str(beam), "--lenpen", "1",
        "--batch-size", str(batch_size), "--remove-bpe", "sentencepiece", "--seed", "1",
        *REQUIRED_BATCH_SIZE_MULTIPLE,
    ]  # fmt: skip
    if user_dir is not None:
        command += ["--user-dir", str(user_dir)]
    if cpu:
        command.append("--cpu")
    command += list(extra_args)
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if completed.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed on {checkpoint}:\n{completed.stderr[-3000:]}")
    hypotheses = detokenized_hypotheses(completed.stdout)
    references = read_lines(data_bin / f"ref.{split}.{config['target_lang']}")
    if len(hypotheses) != len(references):
        raise RuntimeError(f"fairseq-generate gave {len(hypotheses)} translations for {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    score = bleu.corpus_score(hypotheses, [references])
    return {"bleu": score.score, "signature": str(bleu.get_signature()), "hypotheses": hypotheses}


@click.command("intradist prepare translation", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Folder with {train,val,test}.{src,tgt}[.gz] (default: the shipped Multi30k).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The fairseq data-bin folder to write.")
@click.option("--source-lang", default="de", show_default=True)
@click.option("--target-lang", default="en", show_default=True)
@click.option("--vocab-size", default=1000, show_default=True, help="Joint sentencepiece vocabulary size.")
@click.option("--max-train-lines", type=int, default=None, help="Use only the first N training pairs.")
@click.option("--max-test-lines", type=int, default=None, help="Use only the first N test pairs.")
@click.option("--lowercase/--keep-case", default=True, show_default=True, help="Lowercase, as the paper's IWSLT'14 pipeline.")
@click.option("--workers", default=2, show_default=True)
@click.option("--download", is_flag=True,
              help="Without --corpus, when the shipped Multi30k is missing: fetch it (checked) into ~/.cache/intradist.")  # fmt: skip
def command(corpus: Optional[Path], out: Path, source_lang: str, target_lang: str, vocab_size: int,
                        max_train_lines: Optional[int], max_test_lines: Optional[int], lowercase: bool,
                        workers: int, download: bool) -> None:  # fmt: skip
    """Sentencepiece + fairseq-preprocess for a parallel corpus (reused when already prepared)."""
    from intradist.prepare.multi30k import multi30k_corpus

    config = PrepareConfig(source_lang, target_lang, vocab_size, max_train_lines, max_test_lines, lowercase)
    done = prepare(corpus or multi30k_corpus(allow_download=download), out, config, workers=workers)
    click.echo(f"prepared {done}")
