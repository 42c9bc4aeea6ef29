"""Multi30k De->En (WMT'16 multimodal task 1) for people without the shipped copy.

The repository ships the corpus under ``data/multi30k``; a user who points ``$INTRADIST_DATA``
elsewhere, or who installed the package without the data, can fetch the same files from the
corpus authors' public repository. Each file's decompressed text is checked against the
SHA-256 of the shipped copy, so a download is either exactly that corpus or refused.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

from intradist.downloads import download
from intradist.errors import UserError
from intradist.run_folder import write_folder
from intradist.paths import corpus_dir

SOURCE = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"

#: shipped name -> (upstream name, SHA-256 of the decompressed text of the shipped copy).
FILES = {
    "train.de.gz": ("train.de.gz", "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72"),
    "train.en.gz": ("train.en.gz", "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6"),
    "val.de.gz": ("val.de.gz", "366863c09b91e91c100bc87501a85fe1ce49270c2301de46d39075aee5ce8021"),
    "val.en.gz": ("val.en.gz", "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227"),
    "test.de.gz": ("test_2016_flickr.de.gz", "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16"),
    "test.en.gz": ("test_2016_flickr.en.gz", "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182"),
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/intradist`` (default ``~/.cache/intradist``), as scripts/setup.sh uses."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "intradist"


def text_sha256(path: Path) -> str:
    """SHA-256 of a gzipped file's decompressed content (independent of how it was compressed)."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: not a gzip file ({error})") from error
    return digest.hexdigest()


def fetch(dest: Path) -> Path:
    """Download Multi30k De->En into ``dest`` (via ``dest.partial``), every file checked; returns ``dest``."""

    def download_checked(staging: Path) -> None:
        for name, (upstream, expected) in FILES.items():
            download([SOURCE.format(name=upstream)], staging / name,
                     hint=f"copy the corpus by hand into {dest} ({', '.join(FILES)}) or set INTRADIST_DATA")  # fmt: skip
            found = text_sha256(staging / name)
            if found != expected:
                raise UserError(f"{SOURCE.format(name=upstream)}: content SHA-256 {found} is not the expected {expected}")

    return write_folder(dest, "intradist prepare multi30k", download_checked)


def multi30k_corpus(allow_download: bool) -> Path:
    """The shipped Multi30k folder; when it is missing and ``allow_download``, a verified download in the cache."""
    try:
        return corpus_dir("multi30k")
    except UserError:
        if not allow_download:
            raise
    cached = cache_dir() / "multi30k"
    return cached if cached.is_dir() else fetch(cached)
