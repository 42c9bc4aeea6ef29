"""TyDiQA-GoldP v1.1: the published files, downloaded and checked, into ``tydiqa/{code}/*.json`` (SQuAD v1.1).

The training questions are filtered to English (the zero-shot setting), the dev sets split per
language; every answer is checked against its context. See the package docstring for the contract.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from intradist.downloads import download, read_tar_members
from intradist.errors import UserError
from intradist.prepare.xtreme.files import LOCK_NAME, replace_text, update_manifest, utf8_text
from intradist.provenance import check_sha256, record_sha256, sha256_of

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



def tydiqa_dev_member(code: str) -> str:
    """The member of ``tydiqa-goldp-v1.1-dev.tgz`` that holds one language's dev set."""
    return f"tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{TYDIQA_LANGUAGES[code]}.json"


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
        return json.loads(utf8_text(data, where))
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
        replace_text(train, json.dumps(dataset, ensure_ascii=False) + "\n")
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
            replace_text(dev, json.dumps(sets[code], ensure_ascii=False) + "\n")
            written.append(dev)
    return written

