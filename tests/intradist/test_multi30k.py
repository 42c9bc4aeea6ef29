"""Fetching Multi30k for users without the shipped copy (the network is simulated)."""

from __future__ import annotations

import gzip
import io
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from intradist.cli import cli
from intradist.errors import UserError
from intradist.run_folder import MARKER
from intradist.prepare.multi30k import FILES, SOURCE, fetch, multi30k_corpus, text_sha256
from intradist.paths import REPO_ROOT, corpus_dir


def _serve(monkeypatch, override=None):
    """urlopen answering the upstream URLs with the shipped files (or ``override[name]`` bytes)."""
    shipped = REPO_ROOT / "data" / "multi30k"
    by_url = {SOURCE.format(name=upstream): shipped / name for name, (upstream, _) in FILES.items()}

    class Response(io.BytesIO):
        headers = {}

    def urlopen(url, timeout=None):
        name = by_url[url].name
        return Response(override[name] if override and name in override else by_url[url].read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_the_pinned_hashes_are_those_of_the_shipped_corpus():
    for name, (_, expected) in FILES.items():
        assert text_sha256(corpus_dir("multi30k") / name) == expected


def test_fetch_downloads_every_file_and_checks_its_content(tmp_path, monkeypatch):
    _serve(monkeypatch)
    dest = fetch(tmp_path / "multi30k")
    assert sorted(p.name for p in dest.iterdir()) == sorted([*FILES, MARKER])  # the files and the run's marker
    assert [p.name for p in tmp_path.iterdir()] == ["multi30k"]


def test_a_download_with_other_content_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    _serve(monkeypatch, {"val.en.gz": gzip.compress(b"a different corpus\n")})
    with pytest.raises(UserError, match=r"val.en.gz: content SHA-256 [0-9a-f]{64} is not the expected 1f2a23d9"):
        fetch(tmp_path / "multi30k")
    assert list(tmp_path.iterdir()) == []


def test_without_the_shipped_copy_the_command_downloads_into_the_cache_or_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("INTRADIST_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="corpus 'multi30k' not found"):
        multi30k_corpus(allow_download=False)

    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = CliRunner().invoke(cli, ["prepare", "translation", "--out", str(tmp_path / "bin"), "--download"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "cannot download https://" in result.output and "set INTRADIST_DATA" in result.output
    assert not (tmp_path / "cache" / "intradist" / "multi30k").exists() and not (tmp_path / "bin").exists()

    _serve(monkeypatch)
    assert multi30k_corpus(allow_download=True) == tmp_path / "cache" / "intradist" / "multi30k"
