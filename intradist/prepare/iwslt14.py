"""IWSLT'14 {ar,de,es,fa,he,it,nl,pl} -> en as fairseq data-bins, as in Xu, Koehn & Murray (EMNLP 2022).

The corpus is the WIT3 2014-01 release: one archive ``{src}-en.tgz`` per pair, holding
``{src}-en/train.tags.{src}-en.{lang}`` (TED talks, one sentence per line between metadata lines)
and the dev/test sets ``IWSLT14.TED{,X}.{set}.{src}-en.{lang}.xml``. The splits are the ones of the
paper's own script (``machine_translation/scripts/preprocess_iwslt14.sh`` in fe1ixxu/Intra-Distillation)
and of fairseq's ``examples/translation/prepare-iwslt14.sh``:

- **train**: ``train.tags`` without its metadata: lines containing ``<url>``, ``<talkid>`` or
  ``<keywords>`` are dropped, the ``<title>`` and ``<description>`` tags are removed but their
  text is kept (``preprocess_iwslt14.sh:40-47``; any other line stays, as there). Then, in the
  authors' order (lines 48-57): each side is Moses-tokenized (``tokenizer.perl -l LANG``: special
  characters escaped), the pairs are cleaned as ``clean-corpus-n.perl -ratio 1.5 ... 1 175`` (a
  pair is dropped when a side has fewer than 1 or more than 175 tokens, when one side has more
  than 1.5 times the tokens of the other, or when a token is longer than 1000 characters), the
  kept text is lowercased (``lowercase.perl``) and Moses-*detokenized* again
  (``detokenizer.perl -l LANG``, which unescapes). sacremoses, the Python port of these Moses
  scripts, does the tokenizing and detokenizing, so the text is the authors' up to any
  difference between the port and the Perl scripts (``O'Neil's 'own' words`` comes back as
  ``o'neil's' own 'words``, there and here).
- **valid**: every 23rd line of that training text (lines 23, 46, ...); the rest is train.
- **test**: the ``<seg id=...>`` lines of dev2010, dev2012 (TEDX), tst2010, tst2011 and tst2012,
  concatenated in that order, tags removed and ``’`` replaced by ``'``, then only lowercased
  (lines 62-92): never tokenized.

Lowercasing, the joint sentencepiece model (12,000 pieces, learnt from every split of both
languages with character coverage 0.99999995), the fixed dictionary of its whole vocabulary and
``fairseq-preprocess --padding-factor 1`` (lines 110-134) are :func:`intradist.prepare.translation.prepare`
with :func:`paper_data`; ``ref.test.en`` in each data-bin is the lowercased, untokenized reference
that sacreBLEU scores against.

Checksums. No published checksum of these archives is known (WIT3, fairseq's mirror, fairseq's
prepare-iwslt14.sh and the paper's repository give none), so :data:`KNOWN_SHA256` is empty rather
than guessed. Instead the SHA-256 of the archive a pair is first prepared from is recorded in
``OUT/iwslt14-archives.sha256`` (``sha256sum`` format), and every later run that reads an archive
for that pair checks it against that record, so a changed or truncated archive is caught instead of
silently giving other data.

Layout of ``OUT`` (every step is written under a ``.partial`` name and renamed when complete, so an
interrupted run leaves only ``.partial`` items, and a rerun skips what is complete)::

    archives/{src}-en.tgz     the downloaded archive (not copied when it comes from --archives)
    iwslt14-archives.sha256   the checksum record
    {src}-en.text/            {train,val,test}.{src,en}: train/val as the authors' (lowercased, detokenized), test
                              in its original case (lowercased by prepare()); extract.json
    {src}-en/                 the fairseq data-bin of intradist.prepare.translation.prepare()
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import click

from intradist.downloads import download, read_tar_members
from intradist.provenance import check_sha256, record_sha256, sha256_of
from intradist.errors import UserError
from intradist.run_folder import write_folder
from intradist.prepare.translation import SPLITS, PrepareConfig, prepare


SOURCE_LANGS = ("ar", "de", "es", "fa", "he", "it", "nl", "pl")
"""The paper's eight source languages; the target is always English."""
TARGET_LANG = "en"

#: Sets concatenated into the test split, in this order (both reference scripts use it).
TEST_SETS = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")

#: A train.tags line containing one of these is dropped (the authors' ``grep -v``).
DROPPED_TAGS = ("<url>", "<talkid>", "<keywords>")
#: Tags removed from train.tags lines whose text is kept.
_KEPT_TEXT_TAGS = re.compile(r"</?(?:title|description)>")

CLEAN_RATIO = 1.5
CLEAN_MIN_TOKENS = 1
CLEAN_MAX_TOKENS = 175
#: clean-corpus-n.perl also drops a pair with a token longer than this (its default).
CLEAN_MAX_TOKEN_CHARS = 1000
VALID_EVERY = 23
#: The authors' sentencepiece: ``spm_train.py --vocab_size=12000 --character_coverage=0.99999995
#: --input_sentence_size=1000000`` (preprocess_iwslt14.sh:115-118).
VOCAB_SIZE = 12000
CHARACTER_COVERAGE = 0.99999995
INPUT_SENTENCE_SIZE = 1000000

KNOWN_SHA256: Dict[str, str] = {}
"""Published SHA-256 per archive name (``de-en.tgz``): none is known, see the module docstring."""
LOCK_NAME = "iwslt14-archives.sha256"

_WIT3 = "https://wit3.fbk.eu/archive/2014-01/texts/{src}/en/{src}-en.tgz"
#: fairseq's public copy of the de-en archive, which replaced the WIT3 link in many prepare-iwslt14.sh copies.
_FAIRSEQ_DE_EN = "https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"

_SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
_SEG_CLOSE = re.compile(r"\s*</seg>\s*")


def archive_urls(src: str) -> List[str]:
    """Where ``{src}-en.tgz`` can be downloaded from, tried in order."""
    wit3 = _WIT3.format(src=src)
    return [_FAIRSEQ_DE_EN, wit3] if src == "de" else [wit3]


def paper_data(src: str, vocab_size: int = VOCAB_SIZE) -> PrepareConfig:
    """How the authors turn the extracted text of ``{src}-en`` into a data-bin (see the module docstring)."""
    return PrepareConfig(source_lang=src, target_lang=TARGET_LANG, vocab_size=vocab_size, sentencepiece_input="all",
                         character_coverage=CHARACTER_COVERAGE, input_sentence_size=INPUT_SENTENCE_SIZE,
                         dictionary="sentencepiece")  # fmt: skip


def strip_meta(lines: Iterable[str]) -> List[str]:
    """The sentence lines of a ``train.tags`` file: metadata lines dropped, title/description tags removed."""
    return [_KEPT_TEXT_TAGS.sub("", line) for line in lines if not any(tag in line for tag in DROPPED_TAGS)]


def xml_segments(text: str) -> List[str]:
    """The sentences of an IWSLT ``.xml`` set: each ``<seg id="N">`` line without its tags, ``’`` as ``'``."""
    segments = []
    for line in text.splitlines():
        if "<seg id" in line:
            segments.append(_normalise(_SEG_CLOSE.sub("", _SEG_OPEN.sub("", line)).replace("\u2019", "'")))
    return segments


def _normalise(line: str) -> str:
    """Whitespace runs as one space, none at the ends (sentencepiece and sacreBLEU's 13a ignore the difference)."""
    return " ".join(line.split())


def clean_pairs(
    source: Sequence[str], target: Sequence[str], source_lang: str, target_lang: str
) -> Tuple[List[str], List[str]]:
    """Moses-tokenize both sides and keep the pairs ``clean-corpus-n.perl -ratio 1.5 CORPUS SRC TGT OUT 1 175`` keeps.

    Each side is tokenized as ``tokenizer.perl -l LANG`` does (sacremoses, special characters
    escaped); the kept pairs are returned tokenized, tokens joined by one space.
    """
    from sacremoses import MosesTokenizer

    tokenizers = MosesTokenizer(lang=source_lang), MosesTokenizer(lang=target_lang)
    kept_source, kept_target = [], []
    for pair in zip(source, target):
        tokens = [tokenizer.tokenize(line, escape=True) for tokenizer, line in zip(tokenizers, pair)]
        counts = [len(side) for side in tokens]
        if min(counts) < CLEAN_MIN_TOKENS or max(counts) > CLEAN_MAX_TOKENS:
            continue
        if max(counts) / min(counts) > CLEAN_RATIO:
            continue
        if any(len(token) > CLEAN_MAX_TOKEN_CHARS for side in tokens for token in side):
            continue
        kept_source.append(" ".join(tokens[0]))
        kept_target.append(" ".join(tokens[1]))
    return kept_source, kept_target


def lowercase_detokenize(lines: Sequence[str], lang: str) -> List[str]:
    """``lowercase.perl`` then ``detokenizer.perl -l LANG`` (sacremoses, unescaping) of tokenized lines."""
    from sacremoses import MosesDetokenizer

    detokenizer = MosesDetokenizer(lang=lang)
    return [detokenizer.detokenize(line.lower().split()) for line in lines]


def split_valid(lines: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(train, valid): every 23rd line (1-based: 23, 46, ...) goes to valid, the others stay train."""
    train = [line for number, line in enumerate(lines, 1) if number % VALID_EVERY != 0]
    valid = [line for number, line in enumerate(lines, 1) if number % VALID_EVERY == 0]
    return train, valid


def _read_members(archive: Path, names: Sequence[str]) -> Dict[str, str]:
    """The UTF-8 text of the named members of a .tgz archive; one-line errors for a bad archive or member."""
    raw = read_tar_members(archive, names, str(archive), "the IWSLT'14 (WIT3 2014-01) archive",
                           remedy="replace it with a complete download")  # fmt: skip
    texts = {}
    for name, data in raw.items():
        try:
            texts[name] = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{archive}: member {name} is not UTF-8 text ({error})") from error
    return texts


def extract_pair(archive: Path, src: str) -> Tuple[Dict[str, Dict[str, List[str]]], int]:
    """Train, valid and test text of one pair from its archive, and the training pairs before cleaning.

    Returns ``({split: {lang: lines}}, raw_train_pairs)`` with fairseq's split names.
    """
    pair = f"{src}-{TARGET_LANG}"
    langs = (src, TARGET_LANG)
    train_names = {lang: f"{pair}/train.tags.{pair}.{lang}" for lang in langs}
    test_names = {(name, lang): f"{pair}/IWSLT14.{name}.{pair}.{lang}.xml" for name in TEST_SETS for lang in langs}
    texts = _read_members(archive, [*train_names.values(), *test_names.values()])

    raw = {lang: strip_meta(texts[train_names[lang]].splitlines()) for lang in langs}
    if len(raw[src]) != len(raw[TARGET_LANG]):
        raise UserError(
            f"{archive}: {train_names[src]} has {len(raw[src])} sentences but {train_names[TARGET_LANG]} has "
            f"{len(raw[TARGET_LANG])}; the archive is damaged"
        )
    cleaned = dict(zip(langs, clean_pairs(raw[src], raw[TARGET_LANG], src, TARGET_LANG)))
    splits: Dict[str, Dict[str, List[str]]] = {"train": {}, "valid": {}, "test": {lang: [] for lang in langs}}
    for lang in langs:
        splits["train"][lang], splits["valid"][lang] = split_valid(lowercase_detokenize(cleaned[lang], lang))
    for name in TEST_SETS:
        segments = {lang: xml_segments(texts[test_names[name, lang]]) for lang in langs}
        if len(segments[src]) != len(segments[TARGET_LANG]):
            raise UserError(
                f"{archive}: {test_names[name, src]} has {len(segments[src])} segments but "
                f"{test_names[name, TARGET_LANG]} has {len(segments[TARGET_LANG])}; the archive is damaged"
            )
        for lang in langs:
            splits["test"][lang] += segments[lang]
    return splits, len(raw[src])


def verified_sha256(archive: Path, pair: str, lock: Path) -> str:
    """The archive's SHA-256, checked against the published value or the one recorded in ``lock``."""
    name = f"{pair}.tgz"
    digest = sha256_of(archive)
    check_sha256(digest, name, str(archive), lock, KNOWN_SHA256.get(name))
    return digest


def _archive_in(archives: Path, src: str) -> Path:
    """``{src}-en.tgz`` in a folder of archives, or in the extracted 2014-01 release below it."""
    name = f"{src}-{TARGET_LANG}.tgz"
    candidates = [
        archives / name,
        archives / "2014-01" / "texts" / src / TARGET_LANG / name,
        archives / "texts" / src / TARGET_LANG / name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"--archives {archives}: no {name} there (looked for {', '.join(map(str, candidates))})")


def _downloaded_archive(src: str, out: Path) -> Path:
    """``OUT/archives/{src}-en.tgz``, downloaded unless already there; a failed download leaves no folders behind."""
    dest = out / "archives" / f"{src}-{TARGET_LANG}.tgz"
    if dest.is_file():
        return dest
    created = [folder for folder in (out, dest.parent) if not folder.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        download(archive_urls(src), dest, hint="download it by hand and pass --archives DIR")
    except BaseException:
        for folder in reversed(created):
            with contextlib.suppress(OSError):  # only removed when still empty
                folder.rmdir()
        raise
    return dest


def _write_text_folder(splits: Dict[str, Dict[str, List[str]]], folder: Path, record: Dict[str, object]) -> None:
    """``{train,val,test}.{lang}`` and ``extract.json`` in ``folder``, written whole (:mod:`intradist.run_folder`)."""

    def write(staging: Path) -> None:
        for split, by_lang in splits.items():
            for lang, lines in by_lang.items():
                text = "".join(line + "\n" for line in lines)
                (staging / f"{SPLITS[split]}.{lang}").write_text(text, encoding="utf-8")
        (staging / "extract.json").write_text(json.dumps(record, indent=2) + "\n")

    write_folder(folder, "intradist prepare iwslt14", write, replace_earlier=True)


def prepare_pair(src: str, out: Path, vocab_size: int, archives: Optional[Path] = None, workers: int = 2) -> Path:
    """Prepare ``{src}-en`` under ``out`` (see the module docstring); skips the steps already complete.

    Returns the data-bin folder ``out/{src}-en``.
    """
    pair = f"{src}-{TARGET_LANG}"
    config = paper_data(src, vocab_size)
    data_bin, text = out / pair, out / f"{pair}.text"
    if not data_bin.exists() and not text.is_dir():
        archive = _archive_in(archives, src) if archives is not None else _downloaded_archive(src, out)
        lock = out / LOCK_NAME
        digest = verified_sha256(archive, pair, lock)
        splits, raw_pairs = extract_pair(archive, src)
        out.mkdir(parents=True, exist_ok=True)
        record_sha256(lock, f"{pair}.tgz", digest)
        counts = {split: len(by_lang[src]) for split, by_lang in splits.items()}
        record = {"pair": pair, "archive": archive.name, "archive_sha256": digest,
                  "train_pairs_before_cleaning": raw_pairs, "sentences": counts}  # fmt: skip
        _write_text_folder(splits, text, record)
        click.echo(f"{pair}: {counts['train']} train, {counts['valid']} valid, {counts['test']} test pairs", err=True)
    return prepare(text, data_bin, config, workers=workers)


def _source_langs(pairs: str) -> List[str]:
    """The source languages of ``--pairs`` (comma-separated, in order, without repeats), checked."""
    langs = list(dict.fromkeys(part.strip() for part in pairs.split(",") if part.strip()))
    for lang in langs:
        if lang not in SOURCE_LANGS:
            raise UserError(f"--pairs: unknown source language {lang!r}; choose from {','.join(SOURCE_LANGS)}")
    if not langs:
        raise UserError(f"--pairs: no language given; choose from {','.join(SOURCE_LANGS)}")
    return langs


@click.command("intradist prepare iwslt14", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for the archives, the extracted text and one data-bin per pair (OUT/{src}-en).")  # fmt: skip
@click.option("--pairs", default=",".join(SOURCE_LANGS), show_default=True,
              help="Comma-separated source languages, each paired with English.")  # fmt: skip
@click.option("--vocab-size", type=click.IntRange(min=10), default=VOCAB_SIZE, show_default=True,
              help="Joint sentencepiece vocabulary size (the paper's 12,000).")  # fmt: skip
@click.option("--archives", type=click.Path(path_type=Path), default=None,
              help="Folder with {src}-en.tgz (or the extracted 2014-01 release); nothing is downloaded.")  # fmt: skip
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads for sentencepiece and fairseq-preprocess.")  # fmt: skip
def main(out: Path, pairs: str, vocab_size: int, archives: Optional[Path], workers: int) -> None:
    """IWSLT'14 XX->En data-bins of Xu, Koehn & Murray (EMNLP 2022), from the WIT3 2014-01 archives.

    \b
    Per pair, as the authors' preprocess_iwslt14.sh: train.tags without metadata, Moses-tokenized,
    cleaned as Moses clean-corpus-n (ratio 1.5, 1-175 tokens), lowercased and detokenized; every
    23rd line is valid; test is dev2010+dev2012+tst2010+tst2011+tst2012, lowercased. Then one
    sentencepiece model learnt on all of it, its whole vocabulary as the dictionary of both
    languages, and fairseq-preprocess into OUT/{src}-en.

    \b
    Archives are downloaded into OUT/archives (de-en from fairseq's mirror, the others from
    wit3.fbk.eu, which may no longer serve them). Without network, get the 2014-01 release
    from https://wit3.fbk.eu/2014-01, extract it and pass --archives with the folder holding
    2014-01/ (or a folder of {src}-en.tgz files).

    \b
    No published checksum of these archives is known: the SHA-256 of the archive a pair is first
    prepared from is recorded in OUT/iwslt14-archives.sha256, and later runs refuse an
    archive that differs from it. Reruns skip completed steps; an interrupted step leaves
    only a .partial item.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; pick a folder")
    if archives is not None and not archives.is_dir():
        raise UserError(f"--archives {archives}: not a folder")
    for src in _source_langs(pairs):
        click.echo(f"prepared {prepare_pair(src, out, vocab_size, archives, workers)}")


if __name__ == "__main__":
    main()
