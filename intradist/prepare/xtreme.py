"""XTREME data of the zero-shot cross-lingual experiments: PAN-X NER and TyDiQA-GoldP, in plain formats.

The zero-shot experiments of Xu, Koehn & Murray (EMNLP 2022) (``Zero_Shot_Cross_Lingual/`` in
fe1ixxu/Intra-Distillation, built on google-research/xtreme) fine-tune on English and evaluate on every
language. The data here is what xtreme's ``scripts/download_data.sh`` and ``utils_preprocess.py``
(``panx_preprocess``, ``tydiqa_preprocess``) produce, written in the layout below:

- **PAN-X** (WikiANN in the balanced splits of Rahimi et al., 2019). Its only source is
  ``AmazonPhotos.zip``, downloaded by hand from a shared Amazon Drive folder (:data:`PANX_URL`, as the
  xtreme README and download script say); nothing can fetch it automatically. The zip holds
  ``panx_dataset/{lang}.tar.gz``, each with the members ``train``, ``dev`` and ``test``: one
  ``{lang}:token<TAB>TAG`` line per token and a blank line between sentences. Each becomes
  ``panx/{lang}/{split}.tsv``: ``token<TAB>TAG`` lines without the ``{lang}:`` prefix (xtreme strips it
  too), a blank line after each sentence, tags from :data:`PANX_TAGS` (IOB2). A line that is not
  ``{lang}:token<TAB>TAG`` with one of those tags is refused, naming the file and line.
- **TyDiQA-GoldP v1.1** (SQuAD v1.1 JSON). ``tydiqa-goldp-v1.1-train.json`` holds the training
  questions of all nine languages; a question's language is the part of its id before the first ``-``
  (``english-...``), the test of xtreme's ``tydiqa_preprocess`` and of TyDi QA's own
  ``gold_passage_baseline/split_predictions.py``. ``tydiqa/en/train.json`` is its English questions
  only (the zero-shot setting trains on English). ``tydiqa-goldp-v1.1-dev.tgz`` holds
  ``tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{language}.json`` for the nine languages of
  :data:`TYDIQA_LANGUAGES`; each becomes ``tydiqa/{code}/dev.json`` (two-letter codes, as xtreme
  renames them). ``tydiqa/en/train.json`` is written whenever TyDiQA is, whatever ``--languages`` says.
  Both keep the source's articles, titles, contexts, ids, questions and answers, and only those keys
  (``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
  [{"text", "answer_start"}]}]}]}]}``); every answer must sit at its ``answer_start`` in its context
  (xtreme asserts the same), and every dev question's id must name the file's language.

Checksums. TensorFlow Datasets publishes the SHA-256 of both TyDiQA-GoldP files
(``tensorflow_datasets/url_checksums/tydi_qa.txt``; Hugging Face ``datasets`` gives the same value for
the train file), so they are checked against :data:`KNOWN_SHA256`; a downloaded file that fails is
deleted so that a rerun downloads it again. No published checksum of ``AmazonPhotos.zip`` or of its
members is known (xtreme, Hugging Face's loaders and the authors give none), so none is guessed:
the SHA-256 of each ``panx_dataset/{lang}.tar.gz`` a language is first converted from is recorded in
``OUT/xtreme-archives.sha256`` (``sha256sum`` format, with the TyDiQA files' values), and every later
run that reads that member, from the zip or from a folder of ``{lang}.tar.gz`` files, is refused when
it differs. The members are recorded rather than the zip, because a zip made again from the same
files (as a shared-drive download may be) differs in its bytes but not in its data; the zip's own
SHA-256 is kept in the manifest.

Layout of ``OUT`` (default ``data-bin/xtreme``). Each file, and each PAN-X language folder, is written
under a ``.partial`` name and renamed when complete, so an interrupted run leaves only ``.partial``
items, and a rerun skips what is complete (and downloads nothing when TyDiQA is complete)::

    panx/{lang}/{train,dev,test}.tsv     CoNLL-style token<TAB>TAG, UTF-8
    tydiqa/{code}/dev.json               nine languages: ar bn en fi id ko ru sw te
    tydiqa/en/train.json                 the English training questions
    archives/                            the downloaded TyDiQA files (none copied from --archives)
    xtreme-archives.sha256               the checksum record
    xtreme-manifest.json                 sources, their SHA-256 and the counts of every written file
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import click
from tqdm import tqdm

from intradist.errors import fail
from intradist.downloads import download, read_tar_members
from intradist.errors import UserError
from intradist.provenance import check_sha256, record_sha256, sha256_of
from intradist.trainers.ner_data import PANX_LABELS

COMMAND = "intradist prepare xtreme"
TASKS = ("panx", "tydiqa")
DEFAULT_OUT = Path("data-bin") / "xtreme"

PANX_URL = "https://www.amazon.com/clouddrive/share/d3KGCRCIYwhKJF0H3eWA26hjg2ZCRhjpEQtDL70FSBN"
"""The shared folder that serves ``AmazonPhotos.zip`` (google-research/xtreme README and download_data.sh)."""
PANX_ZIP = "AmazonPhotos.zip"
PANX_SPLITS = ("train", "dev", "test")
PANX_TAGS = PANX_LABELS
#: ``{lang}.tar.gz`` at the top of the zip or in its ``panx_dataset/`` folder (WikiANN names: ``en``, ``zh-yue``).
_PANX_MEMBER = re.compile(r"^(?:panx_dataset/)?([a-z]+(?:-[a-z]+)*)\.tar\.gz$")

TYDIQA_URL = "https://storage.googleapis.com/tydiqa/v1.1/"
TYDIQA_TRAIN = "tydiqa-goldp-v1.1-train.json"
TYDIQA_DEV = "tydiqa-goldp-v1.1-dev.tgz"
TYDIQA_LANGUAGES = {"ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish", "id": "indonesian",
                    "ko": "korean", "ru": "russian", "sw": "swahili", "te": "telugu"}  # fmt: skip
"""Two-letter code -> the language name of TyDiQA's dev files and question ids."""
TRAIN_LANGUAGE = "en"

KNOWN_SHA256: Dict[str, str] = {
    TYDIQA_TRAIN: "cefc8e09ff2548d9b10a678d3a6bbbe5bc036be543f92418819ea676c97be23b",  # 58,004,076 bytes
    TYDIQA_DEV: "5a415d019a345794c8a83191ecfe4a761eaab69dab79c3c9813d4379e1cc5519",  # 1,725,055 bytes
}
"""Published SHA-256 per archive name (TensorFlow Datasets' url_checksums/tydi_qa.txt); none for PAN-X."""
LOCK_NAME = "xtreme-archives.sha256"
MANIFEST_NAME = "xtreme-manifest.json"

_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError)


def tydiqa_dev_member(code: str) -> str:
    """The member of ``tydiqa-goldp-v1.1-dev.tgz`` that holds one language's dev set."""
    return f"tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{TYDIQA_LANGUAGES[code]}.json"


def panx_member(lang: str) -> str:
    """A PAN-X language's archive as named in ``AmazonPhotos.zip`` (and in the checksum record)."""
    return f"panx_dataset/{lang}.tar.gz"


# ----------------------------------------------------------------------------------------------- reading


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{where}: not UTF-8 text ({error})") from error


class PanxSource:
    """``AmazonPhotos.zip``, or a folder of ``{lang}.tar.gz`` files (or one holding ``panx_dataset/``)."""

    def __init__(self, path: Path):
        self.path = path
        self.members: Dict[str, str] = {}
        if path.is_dir():
            for folder in (path, path / "panx_dataset"):
                for archive in sorted(folder.glob("*.tar.gz")):
                    match = _PANX_MEMBER.match(archive.name)
                    if match:
                        self.members.setdefault(match.group(1), str(archive.relative_to(path)))
        elif path.is_file():
            try:
                with zipfile.ZipFile(path) as archive:
                    names = archive.namelist()
            except _ZIP_ERRORS as error:
                raise UserError(f"{path}: not a zip archive ({error}); expected {PANX_ZIP} of PAN-X") from error
            for name in names:
                match = _PANX_MEMBER.match(name)
                if match:
                    self.members.setdefault(match.group(1), name)
        else:
            raise UserError(f"--panx-archive {path}: not found; pass {PANX_ZIP} or a folder of {{lang}}.tar.gz files")
        if not self.members:
            raise UserError(f"{path}: has no panx_dataset/{{lang}}.tar.gz; expected {PANX_ZIP} of PAN-X or a folder "
                            f"of its {{lang}}.tar.gz files")  # fmt: skip

    @property
    def is_zip(self) -> bool:
        return not self.path.is_dir()

    def languages(self) -> List[str]:
        return sorted(self.members)

    def where(self, lang: str) -> str:
        """How errors name a language's archive: ``zip:member`` or the file in the folder."""
        return f"{self.path}:{self.members[lang]}" if self.is_zip else str(self.path / self.members[lang])

    def read(self, lang: str) -> bytes:
        """The bytes of ``{lang}.tar.gz``."""
        if not self.is_zip:
            return (self.path / self.members[lang]).read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.members[lang])
        except _ZIP_ERRORS as error:
            problem = f"cannot be read from the zip ({error}); replace {self.path}"
            raise UserError(f"{self.where(lang)}: {problem}") from error


def _panx_source(panx_archive: Optional[Path], archives: Optional[Path]) -> Optional[PanxSource]:
    """Where PAN-X comes from: ``--panx-archive``, else ``AmazonPhotos.zip`` or ``panx_dataset/`` in ``--archives``."""
    if panx_archive is not None:
        return PanxSource(panx_archive)
    if archives is not None:
        for candidate in (archives / PANX_ZIP, archives / "panx_dataset"):
            if candidate.exists():
                return PanxSource(candidate)
    return None


def parse_panx(text: str, lang: str, where: str) -> List[List[Tuple[str, str]]]:
    """The sentences of a raw PAN-X file, each a list of (token without its ``{lang}:`` prefix, tag).

    Lines end at line feeds only (as Python's file iteration splits them, which xtreme relies on),
    so a token holding another Unicode line separator stays one token; tokens are kept verbatim.
    """
    prefix = f"{lang}:"
    sentences: List[List[Tuple[str, str]]] = []
    sentence: List[Tuple[str, str]] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            if sentence:
                sentences.append(sentence)
            sentence = []
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise UserError(f"{where}, line {number}: expected '{prefix}token<TAB>TAG', got {line[:80]!r}")
        token, tag = fields[0], fields[1].strip()
        if not token.startswith(prefix) or len(token) == len(prefix):
            problem = f"the token {token[:60]!r} lacks the '{prefix}' prefix of PAN-X {lang}"
            raise UserError(f"{where}, line {number}: {problem}")
        if tag not in PANX_TAGS:
            raise UserError(f"{where}, line {number}: unknown tag {tag[:40]!r}; PAN-X tags are {' '.join(PANX_TAGS)}")
        sentence.append((token[len(prefix) :], tag))
    if sentence:
        sentences.append(sentence)
    return sentences


def convert_panx_language(data: bytes, lang: str, where: str) -> Dict[str, List[List[Tuple[str, str]]]]:
    """``{split: sentences}`` of one language from the bytes of its ``{lang}.tar.gz``."""
    raw = read_tar_members(data, PANX_SPLITS, where, expected="the PAN-X members train, dev and test")
    return {split: parse_panx(_utf8(raw[split], f"{where}:{split}"), lang, f"{where}:{split}") for split in PANX_SPLITS}


def conll_text(sentences: Iterable[Sequence[Tuple[str, str]]]) -> str:
    """``token<TAB>TAG`` lines, a blank line after each sentence."""
    return "".join("".join(f"{token}\t{tag}\n" for token, tag in sentence) + "\n" for sentence in sentences)


def squad_subset(
    source: Any, where: str, keep: Callable[[str], bool] = lambda qid: True
) -> Tuple[dict, Dict[str, int]]:
    """The questions of a SQuAD v1.1 dataset whose id ``keep`` accepts, in the contract's keys; all checked.

    Returns ``(dataset, questions per language)``, the language being the id's part before its first
    ``-``, counted over every question. Articles and paragraphs left without questions are dropped.
    """

    def field(item: Any, key: str, kind: type, at: str) -> Any:
        value = item.get(key) if isinstance(item, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{where}: not TyDiQA-GoldP (SQuAD v1.1) JSON: {at} has no {key!r} {kind.__name__}")
        return value

    by_language: Dict[str, int] = {}
    articles = []
    for a, article in enumerate(field(source, "data", list, "the top level")):
        title = article.get("title") if isinstance(article, dict) else None
        paragraphs = []
        for p, paragraph in enumerate(field(article, "paragraphs", list, f"data[{a}]")):
            at = f"data[{a}].paragraphs[{p}]"
            context = field(paragraph, "context", str, at)
            qas = []
            for q, qa in enumerate(field(paragraph, "qas", list, at)):
                qid = field(qa, "id", str, f"{at}.qas[{q}]")
                question = field(qa, "question", str, f"question {qid}")
                answers = []
                for n, answer in enumerate(field(qa, "answers", list, f"question {qid}")):
                    text = field(answer, "text", str, f"question {qid}, answer {n}")
                    start = field(answer, "answer_start", int, f"question {qid}, answer {n}")
                    if context[start : start + len(text)] != text:
                        raise UserError(f"{where}: question {qid}: answer {text[:40]!r} is not at its answer_start "
                                        f"{start} in the context")  # fmt: skip
                    answers.append({"text": text, "answer_start": start})
                language = qid.split("-")[0]
                by_language[language] = by_language.get(language, 0) + 1
                if keep(qid):
                    qas.append({"id": qid, "question": question, "answers": answers})
            if qas:
                paragraphs.append({"context": context, "qas": qas})
        if paragraphs:
            articles.append({"title": title if isinstance(title, str) else "", "paragraphs": paragraphs})
    version = source.get("version")
    return {"version": version if isinstance(version, str) else "1.1", "data": articles}, by_language


def squad_counts(dataset: dict) -> Dict[str, int]:
    articles = dataset["data"]
    paragraphs = [paragraph for article in articles for paragraph in article["paragraphs"]]
    return {"articles": len(articles), "paragraphs": len(paragraphs),
            "questions": sum(len(paragraph["qas"]) for paragraph in paragraphs)}  # fmt: skip


def _load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(_utf8(data, where))
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error})") from error


def english_train(path: Path) -> Tuple[dict, Dict[str, int]]:
    """The English questions of the GoldP train file (ids ``english-...``) and the questions per language."""
    english = TYDIQA_LANGUAGES[TRAIN_LANGUAGE]
    source = _load_json(path.read_bytes(), str(path))
    return squad_subset(source, str(path), keep=lambda qid: qid.split("-")[0] == english)


def dev_sets(archive: Path, codes: Sequence[str]) -> Dict[str, dict]:
    """``{code: dataset}`` from the GoldP dev archive, each question's id checked against its language."""
    members = read_tar_members(archive, [tydiqa_dev_member(code) for code in codes], str(archive),
                                expected=f"the TyDiQA-GoldP v1.1 dev archive ({TYDIQA_DEV})")  # fmt: skip
    sets = {}
    for code in tqdm(codes, desc="TyDiQA-GoldP dev", unit="language", disable=None):
        where = f"{archive}:{tydiqa_dev_member(code)}"
        dataset, by_language = squad_subset(_load_json(members[tydiqa_dev_member(code)], where), where)
        others = sorted(set(by_language) - {TYDIQA_LANGUAGES[code]})
        if others:
            raise UserError(f"{where}: holds questions whose ids name {', '.join(others)}, not only "
                            f"{TYDIQA_LANGUAGES[code]}; the archive is not TyDiQA-GoldP v1.1")  # fmt: skip
        sets[code] = dataset
    return sets


# ------------------------------------------------------------------------------------ checksums, manifest


def _replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: under ``path.partial`` first, then renamed."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


def update_manifest(
    out: Path, task: str, sources: Dict[str, Dict[str, str]], files: Dict[str, Dict[str, object]]
) -> None:
    """Merge a task's sources (name -> url/sha256) and written files (path -> counts) into the manifest."""
    path = out / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    entry = manifest.setdefault(task, {"sources": {}, "files": {}})
    entry["sources"].update(sources)
    entry["files"].update(files)
    _replace_text(path, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------ TyDiQA


def _tydiqa_archive(name: str, out: Path, archives: Optional[Path]) -> Tuple[Path, bool]:
    """(path, downloaded here) of a GoldP file: from ``--archives``, else ``OUT/archives``, downloaded if absent."""
    if archives is not None:
        for candidate in (archives / name, archives / "tydiqa" / name):
            if candidate.is_file():
                return candidate, False
        raise UserError(f"--archives {archives}: no {name} there; download {TYDIQA_URL}{name} into it")
    dest = out / "archives" / name
    if dest.is_file():
        return dest, True
    created = [folder for folder in (out, dest.parent) if not folder.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        hint = "download it by hand into a folder and pass --archives DIR (or --tasks panx to skip TyDiQA-GoldP)"
        download([TYDIQA_URL + name], dest, hint=hint)
    except BaseException:
        for folder in reversed(created):
            with contextlib.suppress(OSError):  # only removed when still empty
                folder.rmdir()
        raise
    return dest, True


def _verified_tydiqa_archive(name: str, out: Path, archives: Optional[Path]) -> Tuple[Path, str]:
    """A GoldP file and its SHA-256, checked; a downloaded file that fails the published checksum is deleted."""
    path, downloaded = _tydiqa_archive(name, out, archives)
    digest = sha256_of(path)
    try:
        check_sha256(digest, name, str(path), out / LOCK_NAME, KNOWN_SHA256.get(name))
    except UserError:
        if downloaded and KNOWN_SHA256.get(name) not in (None, digest):
            path.unlink()
        raise
    return path, digest


def prepare_tydiqa(out: Path, codes: Sequence[str], archives: Optional[Path] = None) -> List[Path]:
    """``tydiqa/en/train.json`` and ``tydiqa/{code}/dev.json`` for ``codes`` under ``out``; skips complete files.

    Returns the files written now (those already complete are not listed).
    """
    folder = out / "tydiqa"
    written: List[Path] = []
    train = folder / TRAIN_LANGUAGE / "train.json"
    if not train.is_file():
        path, digest = _verified_tydiqa_archive(TYDIQA_TRAIN, out, archives)
        dataset, by_language = english_train(path)
        counts = {**squad_counts(dataset), "source": f"{TYDIQA_TRAIN}, ids english-*",
                  "train_questions_by_language": dict(sorted(by_language.items()))}  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        record_sha256(out / LOCK_NAME, TYDIQA_TRAIN, digest)
        update_manifest(out, "tydiqa", {TYDIQA_TRAIN: {"url": TYDIQA_URL + TYDIQA_TRAIN, "sha256": digest}},
                        {f"{TRAIN_LANGUAGE}/train.json": counts})  # fmt: skip
        train.parent.mkdir(parents=True, exist_ok=True)
        _replace_text(train, json.dumps(dataset, ensure_ascii=False) + "\n")
        written.append(train)
    missing = [code for code in codes if not (folder / code / "dev.json").is_file()]
    if missing:
        path, digest = _verified_tydiqa_archive(TYDIQA_DEV, out, archives)
        sets = dev_sets(path, missing)
        out.mkdir(parents=True, exist_ok=True)
        record_sha256(out / LOCK_NAME, TYDIQA_DEV, digest)
        files = {f"{code}/dev.json": {**squad_counts(sets[code]), "source": f"{TYDIQA_DEV}:{tydiqa_dev_member(code)}"}
                 for code in missing}  # fmt: skip
        update_manifest(out, "tydiqa", {TYDIQA_DEV: {"url": TYDIQA_URL + TYDIQA_DEV, "sha256": digest}}, files)
        for code in missing:
            dev = folder / code / "dev.json"
            dev.parent.mkdir(parents=True, exist_ok=True)
            _replace_text(dev, json.dumps(sets[code], ensure_ascii=False) + "\n")
            written.append(dev)
    return written


# ------------------------------------------------------------------------------------------------- PAN-X


def _panx_complete(folder: Path) -> bool:
    return all((folder / f"{split}.tsv").is_file() for split in PANX_SPLITS)


def completed_panx(out: Path) -> List[str]:
    """The languages whose PAN-X files are all in ``out/panx``."""
    folder = out / "panx"
    if not folder.is_dir():
        return []
    return sorted(lang.name for lang in folder.iterdir() if not lang.name.endswith(".partial") and _panx_complete(lang))


def prepare_panx(out: Path, source: PanxSource, languages: Sequence[str]) -> List[str]:
    """``panx/{lang}/{train,dev,test}.tsv`` under ``out`` for ``languages``; returns those converted now."""
    lock = out / LOCK_NAME
    todo = [lang for lang in languages if not _panx_complete(out / "panx" / lang)]
    zip_source = {}
    if todo and source.is_zip:
        zip_source = {source.path.name: {"url": PANX_URL, "sha256": sha256_of(source.path)}}
    for lang in tqdm(todo, desc="PAN-X", unit="language", disable=None):
        where = source.where(lang)
        data = source.read(lang)
        digest = hashlib.sha256(data).hexdigest()
        check_sha256(digest, panx_member(lang), where, lock)
        splits = convert_panx_language(data, lang, where)
        texts = {split: conll_text(sentences) for split, sentences in splits.items()}
        counts = {f"{lang}/{split}.tsv": {"sentences": len(sentences), "tokens": sum(map(len, sentences)),
                                          "source": f"{panx_member(lang)}:{split}"}
                  for split, sentences in splits.items()}  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        record_sha256(lock, panx_member(lang), digest)
        update_manifest(out, "panx", {**zip_source, panx_member(lang): {"sha256": digest}}, counts)
        folder = out / "panx" / lang
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            for split, text in texts.items():
                (staging / f"{split}.tsv").write_text(text, encoding="utf-8")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder left by hand
        staging.rename(folder)
    return todo


def manual_panx_steps(out: Path, tydiqa_done: bool) -> str:
    """What the user has to do to get PAN-X, in a few lines."""
    return "\n".join([
        f"{COMMAND}: PAN-X cannot be downloaded automatically; it needs one manual step:",
        f"  1. In a browser, open {PANX_URL}",
        f"     (the link in the google-research/xtreme README) and download panx_dataset; it arrives as {PANX_ZIP}.",
        f"  2. Run again with --panx-archive PATH/{PANX_ZIP}, or put it into the folder given to --archives.",
        "     A folder of its panx_dataset/{lang}.tar.gz files works too (a colleague's copy, if the link is gone).",
        f"  TyDiQA-GoldP is ready in {out / 'tydiqa'}; a rerun skips it." if tydiqa_done else
        "  Nothing was written.",
    ])  # fmt: skip


# --------------------------------------------------------------------------------------------------- CLI


def _split_list(value: str, option: str) -> List[str]:
    items = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not items:
        raise UserError(f"{option}: nothing given")
    return items


def _tasks(value: str) -> List[str]:
    tasks = _split_list(value, "--tasks")
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise UserError(f"--tasks: unknown task {unknown[0]!r}; choose from {','.join(TASKS)}")
    return [task for task in TASKS if task in tasks]


def _check_panx_languages(languages: Sequence[str], source: PanxSource) -> None:
    missing = [lang for lang in languages if lang not in source.members]
    if missing:
        available = source.languages()
        shown = ",".join(available[:12]) + (f",... ({len(available)} in all)" if len(available) > 12 else "")
        raise UserError(f"--languages: {source.path} has no PAN-X archive for {','.join(missing)}; it has {shown}")


EXAMPLES = """\b
Examples:
  intradist prepare xtreme --panx-archive ~/Downloads/AmazonPhotos.zip
  intradist prepare xtreme --tasks tydiqa --out data-bin/xtreme
  intradist prepare xtreme --languages en,de,fi --panx-archive ~/Downloads/AmazonPhotos.zip
  intradist prepare xtreme --archives ~/xtreme-downloads   # TyDiQA files and AmazonPhotos.zip, offline
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Folder for panx/, tydiqa/, downloaded archives, the checksum record, the manifest.")  # fmt: skip
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="Comma-separated: panx, tydiqa.")
@click.option("--languages", default=None,
              help="Comma-separated language codes (default: every language the sources have). TyDiQA "
                   "uses those among ar,bn,en,fi,id,ko,ru,sw,te for dev; its English train file is always "
                   "written.")  # fmt: skip
@click.option("--panx-archive", type=click.Path(path_type=Path), default=None,
              help=f"PAN-X's {PANX_ZIP} (downloaded by hand), or a folder of its {{lang}}.tar.gz files.")  # fmt: skip
@click.option("--archives", type=click.Path(path_type=Path), default=None,
              help=f"Folder of archives downloaded by hand ({TYDIQA_TRAIN}, {TYDIQA_DEV}, {PANX_ZIP}); "
                   "nothing is downloaded.")  # fmt: skip
def main(out: Path, tasks: str, languages: Optional[str], panx_archive: Optional[Path],
         archives: Optional[Path]) -> None:  # fmt: skip
    """PAN-X (NER) and TyDiQA-GoldP (QA) of XTREME in plain formats, for zero-shot cross-lingual transfer.

    \b
    OUT/panx/{lang}/{train,dev,test}.tsv   token<TAB>TAG (BIO), a blank line after each sentence
    OUT/tydiqa/{code}/dev.json             SQuAD v1.1 JSON, ar bn en fi id ko ru sw te
    OUT/tydiqa/en/train.json               the English training questions (ids english-*)
    OUT/xtreme-manifest.json               sources, SHA-256 and counts of every file

    \b
    TyDiQA-GoldP v1.1 is downloaded from storage.googleapis.com/tydiqa into OUT/archives and checked
    against its published SHA-256. PAN-X cannot be downloaded: get AmazonPhotos.zip by hand from
    the Amazon Drive link of the xtreme README (run without --panx-archive to see the steps) and pass
    it with --panx-archive. No checksum of it is published: the SHA-256 of each language's archive
    is recorded in OUT/xtreme-archives.sha256 when first converted, and a different one is refused
    later. Reruns skip what is complete; an interrupted step leaves only .partial items.
    """
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: is a file; pick a folder")
        if archives is not None and not archives.is_dir():
            raise UserError(f"--archives {archives}: not a folder")
        chosen = _tasks(tasks)
        wanted = _split_list(languages, "--languages") if languages is not None else None
        source = _panx_source(panx_archive, archives) if "panx" in chosen else None
        if source is not None and wanted is not None:
            _check_panx_languages(wanted, source)
        if chosen == ["tydiqa"] and wanted is not None:
            unknown = [lang for lang in wanted if lang not in TYDIQA_LANGUAGES]
            if unknown:
                raise UserError(f"--languages: TyDiQA-GoldP has no {','.join(unknown)}; "
                                f"choose from {','.join(TYDIQA_LANGUAGES)}")  # fmt: skip
        if "tydiqa" in chosen:
            codes = [code for code in TYDIQA_LANGUAGES if wanted is None or code in wanted]
            written = prepare_tydiqa(out, codes, archives)
            click.echo(f"TyDiQA-GoldP: {len(written)} files written, "
                       f"{len(codes) + 1 - len(written)} already there", err=True)  # fmt: skip
            click.echo(f"prepared {out / 'tydiqa'}")
        if "panx" in chosen:
            if source is None:
                done = completed_panx(out)
                if not done or (wanted is not None and not set(wanted) <= set(done)):
                    click.echo(manual_panx_steps(out, "tydiqa" in chosen), err=True)
                    sys.exit(2)
                click.echo(f"PAN-X: {len(done) if wanted is None else len(wanted)} languages already there "
                           "(no --panx-archive, so no others)", err=True)  # fmt: skip
                click.echo(f"prepared {out / 'panx'}")
                return
            langs = wanted if wanted is not None else source.languages()
            converted = prepare_panx(out, source, langs)
            click.echo(f"PAN-X: {len(converted)} languages converted, {len(langs) - len(converted)} already there",
                       err=True)  # fmt: skip
            click.echo(f"prepared {out / 'panx'}")
    except UserError as error:
        fail(COMMAND, error)


if __name__ == "__main__":
    main()
