"""PAN-X (WikiANN, balanced splits): ``AmazonPhotos.zip`` or its ``{lang}.tar.gz`` files into ``panx/{lang}/*.tsv``.

The source cannot be downloaded (:func:`manual_panx_steps` says how to get it). Each language's
archive is checked against the SHA-256 recorded when it was first converted; see the package docstring.
"""

from __future__ import annotations

import functools
import hashlib
import re
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tqdm import tqdm

from intradist.downloads import read_tar_members
from intradist.errors import UserError
from intradist.prepare.xtreme.files import LOCK_NAME, update_manifest, utf8_text
from intradist.provenance import check_sha256, record_sha256, sha256_of
from intradist.run_folder import write_folder
from intradist.trainers.ner_data import PANX_LABELS

PANX_URL = "https://www.amazon.com/clouddrive/share/d3KGCRCIYwhKJF0H3eWA26hjg2ZCRhjpEQtDL70FSBN"
"""The shared folder that serves ``AmazonPhotos.zip`` (google-research/xtreme README and download_data.sh)."""
PANX_ZIP = "AmazonPhotos.zip"
PANX_SPLITS = ("train", "dev", "test")
PANX_TAGS = PANX_LABELS
#: ``{lang}.tar.gz`` at the top of the zip or in its ``panx_dataset/`` folder (WikiANN names: ``en``, ``zh-yue``).
_PANX_MEMBER = re.compile(r"^(?:panx_dataset/)?([a-z]+(?:-[a-z]+)*)\.tar\.gz$")
_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError)


def panx_member(lang: str) -> str:
    """A PAN-X language's archive as named in ``AmazonPhotos.zip`` (and in the checksum record)."""
    return f"panx_dataset/{lang}.tar.gz"


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


def panx_source(panx_archive: Optional[Path], archives: Optional[Path]) -> Optional[PanxSource]:
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
    return {split: parse_panx(utf8_text(raw[split], f"{where}:{split}"), lang, f"{where}:{split}")
            for split in PANX_SPLITS}  # fmt: skip


def conll_text(sentences: Iterable[Sequence[Tuple[str, str]]]) -> str:
    """``token<TAB>TAG`` lines, a blank line after each sentence."""
    return "".join("".join(f"{token}\t{tag}\n" for token, tag in sentence) + "\n" for sentence in sentences)



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
        write_folder(out / "panx" / lang, "intradist prepare xtreme", functools.partial(_write_splits, texts),
                     replace_earlier=True)  # fmt: skip
    return todo



def _write_splits(texts: Dict[str, str], folder: Path) -> None:
    for split, text in texts.items():
        (folder / f"{split}.tsv").write_text(text, encoding="utf-8")


def manual_panx_steps(out: Path, tydiqa_done: bool) -> str:
    """What the user has to do to get PAN-X, in a few lines (the command prints it after its name)."""
    return "\n".join([
        "PAN-X cannot be downloaded automatically; it needs one manual step:",
        f"  1. In a browser, open {PANX_URL}",
        f"     (the link in the google-research/xtreme README) and download panx_dataset; it arrives as {PANX_ZIP}.",
        f"  2. Run again with --panx-archive PATH/{PANX_ZIP}, or put it into the folder given to --archives.",
        "     A folder of its panx_dataset/{lang}.tar.gz files works too (a colleague's copy, if the link is gone).",
        f"  TyDiQA-GoldP is ready in {out / 'tydiqa'}; a rerun skips it." if tydiqa_done else
        "  Nothing was written.",
    ])  # fmt: skip
