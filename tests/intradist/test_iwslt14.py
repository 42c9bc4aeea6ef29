"""IWSLT'14 preparation on a tiny hand-written archive with the real WIT3 2014-01 layout."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

import intradist.prepare.iwslt14 as iwslt14
from intradist.errors import UserError
from intradist.downloads import download
from intradist.prepare.iwslt14 import (
    clean_pairs,
    extract_pair,
    lowercase_detokenize,
    main,
    split_valid,
    strip_meta,
    verified_sha256,
)
from intradist.prepare.translation import read_lines


def talk(lang: str) -> list:
    """One talk of train.tags.de-en.{lang}: metadata, title, description, 50 sentences, closing tags."""
    de = lang == "de"
    return [
        "<url>http://www.ted.com/talks/lang/de/anna_example_a_small_test.html</url>",
        "<keywords>talks, science, testing</keywords>",
        "<speaker>Anna Example</speaker>",
        "<talkid>4711</talkid>",
        "<title>Anna Example: Ein kleiner Test</title>" if de else "<title>Anna Example: A small test</title>",
        "<description>TED Talk Untertitel: Ein erfundener Vortrag.</description>" if de
        else "<description>TED Talk Subtitles: A made-up talk.</description>",
        "Guten Morgen." if de else "Good morning.",
        # 14 Moses tokens against 3: dropped by the 1.5 ratio
        "Das ist viel zu lang für seine Übersetzung, wirklich viel zu lang." if de else "Too short.",
        *[f"Satz Nummer {i} ist kurz." if de else f"Sentence number {i} is short." for i in range(1, 48)],
        "<reviewer></reviewer>",
        '<translator href="http://www.ted.com/profiles/1">Jemand</translator>',
    ]  # fmt: skip


#: set -> (German segments, English segments); tst2010's English has a curly apostrophe.
TEST_SETS = {
    "TED.dev2010": (["Erster Satz.", "Zweiter Satz."], ["First sentence.", "Second sentence."]),
    "TEDX.dev2012": (["Dritter Satz."], ["Third sentence."]),
    "TED.tst2010": (["Keine Panik."], ["Don\u2019t panic."]),
    "TED.tst2011": (["Fünfter Satz."], ["Fifth sentence."]),
    "TED.tst2012": (["Sechster Satz."], ["Sixth sentence."]),
}
EXPECTED_TEST_EN = ["First sentence.", "Second sentence.", "Third sentence.", "Don't panic.", "Fifth sentence.",
                    "Sixth sentence."]  # fmt: skip


def xml_set(name: str, lang: str, segments: list) -> str:
    """An IWSLT'14 dev/test file as WIT3 writes it: mteval header, one doc with metadata, seg lines."""
    opening = ('<srcset setid="iwslt2014-{0}" srclang="german">' if lang == "de"
               else '<refset setid="iwslt2014-{0}" srclang="german" trglang="english" refid="ref">')  # fmt: skip
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<mteval>",
        opening.format(name.split(".")[1]),
        '<doc docid="535" genre="lectures">',
        "<url>http://www.ted.com/talks/lang/de/someone.html</url>",
        "<description>TED Talk Subtitles and Transcript: not a segment</description>",
        "<keywords>talks, not a segment</keywords>",
        "<talkid>535</talkid>",
        "<title>Not a segment</title>",
        *[f'<seg id="{number}"> {text} </seg>' for number, text in enumerate(segments, 1)],
        "</doc>",
        "</srcset>" if lang == "de" else "</refset>",
        "</mteval>",
    ]
    return "\n".join(lines) + "\n"


def archive_members(english_title: str = "A small test") -> dict:
    """Member name -> text of a de-en.tgz; test sets listed before train, in an order unlike the test split's."""
    members = {}
    for name in sorted(TEST_SETS, reverse=True):
        for lang, segments in zip(("de", "en"), TEST_SETS[name]):
            members[f"de-en/IWSLT14.{name}.de-en.{lang}.xml"] = xml_set(name, lang, segments)
    for lang in ("de", "en"):
        lines = talk(lang)
        if lang == "en":
            lines = [line.replace("A small test", english_title) for line in lines]
        members[f"de-en/train.tags.de-en.{lang}"] = "\n".join(lines) + "\n"
    members["de-en/README"] = "WIT3 2014-01 de-en\n"
    return members


def write_archive(path, members: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def archives(tmp_path):
    folder = tmp_path / "archives"
    folder.mkdir()
    write_archive(folder / "de-en.tgz", archive_members())
    return folder


@pytest.fixture
def no_fairseq(monkeypatch):
    """Replace the sentencepiece + fairseq-preprocess step by a stub that records its corpus."""
    calls = []

    def fake_prepare(corpus, out, config, workers=2):
        calls.append((corpus, out, config))
        out.mkdir()
        return out

    monkeypatch.setattr(iwslt14, "prepare", fake_prepare)
    return calls


def test_metadata_lines_are_dropped_and_title_and_description_keep_their_text():
    """As the authors' preprocess_iwslt14.sh:40-47: grep -v of <url>, <talkid>, <keywords> anywhere
    in a line, the title and description tags removed; every other line stays, tags and all."""
    lines = ['<doc docid="1" genre="lectures">', "<url>http://x</url>", "<keywords>a, b</keywords>",
             "<speaker>A B</speaker>", "<talkid>1</talkid>", "<title>A B: Hello</title>",
             "<description>TED Talk: Hi.</description>", "Hello there.", "<reviewer></reviewer>",
             "see <url>x</url> inside", '<translator href="y">C</translator>', "</doc>"]  # fmt: skip
    assert strip_meta(lines) == ['<doc docid="1" genre="lectures">', "<speaker>A B</speaker>", "A B: Hello",
                                 "TED Talk: Hi.", "Hello there.", "<reviewer></reviewer>",
                                 '<translator href="y">C</translator>', "</doc>"]  # fmt: skip


def test_every_23rd_line_goes_to_valid_and_the_rest_stays_train():
    lines = [f"line {number}" for number in range(1, 51)]
    train, valid = split_valid(lines)
    assert valid == ["line 23", "line 46"]
    assert train == [line for line in lines if line not in valid] and len(train) == 48


def test_cleaning_counts_moses_tokens_and_applies_ratio_and_length_limits():
    pairs = [
        ("a b c", "x y z w"),  # 3 vs 4: kept
        ("a b", "x y z"),  # ratio exactly 1.5: kept
        ("a b", "x y z w"),  # ratio 2: dropped
        ("a b", "x, y."),  # 2 words, but 4 Moses tokens: ratio 2, dropped
        ("", "x"),  # empty side: dropped
        (" ".join(["w"] * 175), " ".join(["v"] * 175)),  # 175 tokens: kept
        (" ".join(["w"] * 176), " ".join(["v"] * 176)),  # 176 tokens: dropped
        ("a " + "b" * 1001, "x y"),  # a token over 1000 characters: dropped
        ("  spaced   out ", "well  spaced"),  # kept, whitespace normalised
        ("R&D geht, oder?", "R&D works, right?"),  # 6 tokens each, & escaped as tokenizer.perl does: kept
    ]
    source, target = clean_pairs([p[0] for p in pairs], [p[1] for p in pairs], "de", "en")
    assert source == ["a b c", "a b", " ".join(["w"] * 175), "spaced out", "R &amp; D geht , oder ?"]
    assert target == ["x y z w", "x y z", " ".join(["v"] * 175), "well spaced", "R &amp; D works , right ?"]


def test_cleaned_text_is_lowercased_then_detokenized_and_unescaped():
    """lowercase.perl then detokenizer.perl -l en, as preprocess_iwslt14.sh:55-56."""
    tokenized = ["R &amp; D works , right ?", "Don &apos;t &quot; Panic &quot; !"]
    assert lowercase_detokenize(tokenized, "en") == ["r & d works, right?", 'don\'t "panic"!']


def test_extraction_splits_the_archive_as_the_paper_does(archives):
    splits, raw_pairs = extract_pair(archives / "de-en.tgz", "de")
    # speaker, title, description, "Guten Morgen.", the too-long pair, 47 numbered, reviewer, translator
    assert raw_pairs == 54
    # kept: 1 speaker, 2 title, 3 description, 4 "Guten Morgen.", then line n is "Satz Nummer n-4":
    # 23 -> 19, 46 -> 42; tokenized, lowercased and detokenized
    assert splits["valid"]["de"] == ["satz nummer 19 ist kurz.", "satz nummer 42 ist kurz."]
    assert splits["valid"]["en"] == ["sentence number 19 is short.", "sentence number 42 is short."]
    assert splits["train"]["de"][:5] == [
        "< speaker > anna example < / speaker >", "anna example: ein kleiner test",
        "ted talk untertitel: ein erfundener vortrag.", "guten morgen.", "satz nummer 1 ist kurz.",
    ]  # fmt: skip
    assert splits["train"]["en"][-2] == "< reviewer > < / reviewer >"
    assert len(splits["train"]["de"]) == len(splits["train"]["en"]) == 51
    assert not any("zu lang" in line or "url" in line or "talkid" in line for line in splits["train"]["de"])
    assert splits["test"]["en"] == EXPECTED_TEST_EN
    assert splits["test"]["de"] == ["Erster Satz.", "Zweiter Satz.", "Dritter Satz.", "Keine Panik.", "Fünfter Satz.",
                                    "Sechster Satz."]  # fmt: skip


def test_prepares_a_data_bin_with_lowercased_references_and_reuses_it(archives, tmp_path):
    out = tmp_path / "out"
    flags = ["--out", str(out), "--pairs", "de", "--archives", str(archives), "--vocab-size", "60", "--workers", "1"]
    result = CliRunner().invoke(main, flags)
    assert result.exit_code == 0, result.output
    data_bin = out / "de-en"
    assert result.stdout.strip() == f"prepared {data_bin}"
    for name in ("dict.de.txt", "dict.en.txt", "spm.model", "train.de-en.de.bin", "valid.de-en.en.idx",
                 "test.de-en.en.bin", "prepare.json"):  # fmt: skip
        assert (data_bin / name).is_file(), name
    assert read_lines(data_bin / "ref.test.en") == [line.lower() for line in EXPECTED_TEST_EN]
    assert read_lines(out / "de-en.text" / "val.en") == ["sentence number 19 is short.", "sentence number 42 is short."]
    record = json.loads((out / "de-en.text" / "extract.json").read_text())
    assert record["sentences"] == {"train": 51, "valid": 2, "test": 6}
    # the authors' dictionary: the whole sentencepiece vocabulary but <unk>, <s>, </s>, count 100,
    # the same for both languages, no padding (preprocess_iwslt14.sh:120,133-134)
    import sentencepiece as spm

    model = spm.SentencePieceProcessor(model_file=str(data_bin / "spm.model"))
    expected_dict = "".join(f"{model.id_to_piece(i)} 100\n" for i in range(3, 60))
    assert model.get_piece_size() == 60
    assert (data_bin / "dict.de.txt").read_text() == (data_bin / "dict.en.txt").read_text() == expected_dict
    # sentencepiece learnt from the test text too: "ü" occurs only in the test set's "Fünfter Satz."
    assert "ü 100" in expected_dict.splitlines()
    assert (out / "iwslt14-archives.sha256").read_text() == f"{record['archive_sha256']}  de-en.tgz\n"
    assert sorted(p.name for p in out.iterdir()) == ["de-en", "de-en.text", "iwslt14-archives.sha256"]

    stamp = (data_bin / "spm.model").stat().st_mtime_ns
    again = CliRunner().invoke(main, flags)
    assert again.exit_code == 0, again.output
    assert again.output.strip() == f"prepared {data_bin}"
    assert (data_bin / "spm.model").stat().st_mtime_ns == stamp


def test_offline_download_fails_in_one_line_and_leaves_no_output(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--out", str(out), "--pairs", "ar"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "intradist prepare iwslt14: cannot download https://wit3.fbk.eu/archive/2014-01/texts/ar/en/ar-en.tgz "
        "([Errno -3] Temporary failure in name resolution); download it by hand and pass --archives DIR"
    )
    assert not out.exists()


def test_download_renames_only_a_complete_file_and_removes_a_broken_one(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        headers = {"Content-Length": "6"}

    class BrokenResponse(Response):
        def read(self, size=-1):
            raise TimeoutError("timed out")

    responses = {"http://good": lambda: Response(b"abcdef"), "http://broken": lambda: BrokenResponse(b"")}
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: responses[url]())
    dest = tmp_path / "de-en.tgz"
    download(["http://broken", "http://good"], dest, hint="download it by hand")
    assert dest.read_bytes() == b"abcdef" and sorted(p.name for p in tmp_path.iterdir()) == ["de-en.tgz"]
    with pytest.raises(UserError, match=r"^cannot download http://broken \(timed out\); download it by hand"):
        download(["http://broken"], tmp_path / "ar-en.tgz", hint="download it by hand")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["de-en.tgz"]


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("garbage", "not a valid .tgz archive"),
        ("no tst2012", "has no member de-en/IWSLT14.TED.tst2012.de-en.en.xml; expected the IWSLT'14"),
    ],
)
def test_a_bad_archive_is_named_in_one_line_and_leaves_no_output(archives, tmp_path, damage, problem):
    archive = archives / "de-en.tgz"
    if damage == "garbage":
        archive.write_bytes(b"<html>404 Not Found</html>\n")
    else:
        members = archive_members()
        del members["de-en/IWSLT14.TED.tst2012.de-en.en.xml"]
        write_archive(archive, members)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--out", str(out), "--pairs", "de", "--archives", str(archives)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"intradist prepare iwslt14: {archive}: {problem}")
    assert not out.exists()


def test_the_checksum_lock_refuses_an_archive_that_changed(archives, tmp_path, no_fairseq):
    out = tmp_path / "out"
    flags = ["--out", str(out), "--pairs", "de", "--archives", str(archives)]
    assert CliRunner().invoke(main, flags).exit_code == 0
    lock = out / "iwslt14-archives.sha256"
    recorded = lock.read_text()
    assert no_fairseq[0][0] == out / "de-en.text"

    # the same archive again, after the derived folders were removed: accepted
    for folder in ("de-en", "de-en.text"):
        (out / folder).rename(tmp_path / f"old-{folder}")
    assert CliRunner().invoke(main, flags).exit_code == 0

    # a different archive under the same name: refused, nothing rewritten
    write_archive(archives / "de-en.tgz", archive_members(english_title="Another test"))
    for folder in ("de-en", "de-en.text"):
        (out / folder).rename(tmp_path / f"older-{folder}")
    result = CliRunner().invoke(main, flags)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert f"{archives / 'de-en.tgz'}: SHA-256 " in result.output and f"recorded for de-en.tgz in {lock}" in result.output
    assert lock.read_text() == recorded and not (out / "de-en.text").exists()


def test_a_published_checksum_is_enforced(archives, tmp_path, monkeypatch):
    monkeypatch.setitem(iwslt14.KNOWN_SHA256, "de-en.tgz", "0" * 64)
    with pytest.raises(UserError, match=f"is not the published {'0' * 64} of de-en.tgz"):
        verified_sha256(archives / "de-en.tgz", "de-en", tmp_path / "lock")


def test_an_unknown_pair_and_a_missing_archive_are_refused_in_one_line(archives, tmp_path):
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "out"), "--pairs", "de,xx"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "intradist prepare iwslt14: --pairs: unknown source language 'xx'; choose from ar,de,es,fa,he,it,nl,pl"
    )
    result = CliRunner().invoke(main, ["--out", str(tmp_path / "out"), "--pairs", "it", "--archives", str(archives)])
    assert result.exit_code == 2
    assert result.output.startswith(f"intradist prepare iwslt14: --archives {archives}: no it-en.tgz there")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
