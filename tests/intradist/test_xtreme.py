"""XTREME preparation (PAN-X, TyDiQA-GoldP) on tiny hand-written archives with the real layouts; no network."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile

import pytest
from click.testing import CliRunner

from intradist.errors import UserError
from intradist.run_folder import MARKER
from intradist.prepare.xtreme import tydiqa
from intradist.prepare.xtreme.command import main
from intradist.prepare.xtreme.panx import PANX_URL, parse_panx
from intradist.prepare.xtreme.tydiqa import TYDIQA_LANGUAGES
from intradist.provenance import sha256_of

#: lang -> split -> raw PAN-X text (``lang:token<TAB>TAG``, blank line between sentences, none at the end).
PANX = {
    "en": {
        "train": "en:Paris\tB-LOC\nen:is\tO\nen:nice\tO\n\nen:Barack\tB-PER\nen:Obama\tI-PER\nen:at\tO\nen:10:30\tO\n",
        "dev": "en:New\tB-ORG\nen:York\tI-ORG\nen:Times\tI-ORG\n\n\nen:Berlin\tB-LOC\n",
        "test": "en:Angela\tB-PER\r\nen:Merkel\tI-PER\r\n",
    },
    "de": {
        "train": "de:Die\tO\nde:Zugspitze\tB-LOC\n\n",
        "dev": "de:Köln\tB-LOC\n",
        "test": "de:Goethe\tB-PER\nde:schrieb\tO\n",
    },
}
EXPECTED_EN = {
    "train": "Paris\tB-LOC\nis\tO\nnice\tO\n\nBarack\tB-PER\nObama\tI-PER\nat\tO\n10:30\tO\n\n",
    "dev": "New\tB-ORG\nYork\tI-ORG\nTimes\tI-ORG\n\nBerlin\tB-LOC\n\n",
    "test": "Angela\tB-PER\nMerkel\tI-PER\n\n",
}


def tar_gz(members: dict) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_panx_zip(path, panx=PANX) -> None:
    """AmazonPhotos.zip as shared: panx_dataset/{lang}.tar.gz, each with train, dev, test (plus a stray file)."""
    with zipfile.ZipFile(path, "w") as archive:
        for lang, splits in panx.items():
            archive.writestr(f"panx_dataset/{lang}.tar.gz", tar_gz(splits))
        archive.writestr("__MACOSX/panx_dataset/._en.tar.gz", b"resource fork")


def article(title: str, context: str, qas: list) -> dict:
    return {"title": title, "paragraphs": [{"context": context, "qas": qas}]}


def qa(qid: str, question: str, text: str, start: int) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]}


def train_json(english_answer_start: int = 12) -> dict:
    """GoldP train: English, Finnish and Arabic questions, one paragraph holding two languages."""
    return {
        "version": "TyDiQA-GoldP-1.1-for-SQuAD-1.1",
        "data": [
            article("Pariisi", "Pariisi on Ranskan pääkaupunki.",
                    [qa("finnish-1234-0", "Mikä on Ranskan pääkaupunki?", "Pariisi", 0)]),
            article("Nairobi", "The city of Nairobi is the capital of Kenya.",
                    [qa("english-5678-0", "What is the capital of Kenya?", "Nairobi", english_answer_start)]),
            article("Mixed", "Kenya's capital: Nairobi.",
                    [qa("arabic-9-0", "ما عاصمة كينيا؟", "Nairobi", 17),
                     {**qa("english--42-1", "Which city?", "Nairobi", 17), "extra": "dropped"}]),
        ],
    }  # fmt: skip


def dev_json(name: str) -> dict:
    return {"version": "TyDiQA-GoldP-1.1-for-SQuAD-1.1",
            "data": [article(f"{name} title", f"{name} context", [qa(f"{name}-77-0", f"{name}?", "context",
                                                                    len(name) + 1)])]}  # fmt: skip


def write_dev_tgz(path, members: dict = None) -> None:
    if members is None:
        members = {f"tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{name}.json": json.dumps(dev_json(name))
                   for name in TYDIQA_LANGUAGES.values()}  # fmt: skip
    path.write_bytes(tar_gz(members))


@pytest.fixture
def archives(tmp_path, monkeypatch):
    """A folder as --archives wants it; the published TyDiQA checksums do not apply to these fakes."""
    monkeypatch.setattr(tydiqa, "KNOWN_SHA256", {})
    folder = tmp_path / "archives"
    folder.mkdir()
    (folder / "tydiqa-goldp-v1.1-train.json").write_text(json.dumps(train_json(), ensure_ascii=False))
    write_dev_tgz(folder / "tydiqa-goldp-v1.1-dev.tgz")
    write_panx_zip(folder / "AmazonPhotos.zip")
    return folder


def run(*flags):
    return CliRunner().invoke(main, [str(flag) for flag in flags])


def one_line_error(result, start: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"intradist prepare xtreme: {start}"), result.output


def tree(folder) -> list:
    """The files under ``folder``, without the markers of the output-folder protocol (intradist.run_folder)."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file() and path.name != MARKER)


def test_prepares_both_tasks_in_the_contract_layout(archives, tmp_path):
    out = tmp_path / "out"
    result = run("--out", out, "--archives", archives)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"prepared {out / 'tydiqa'}\nprepared {out / 'panx'}\n"
    codes = ["ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"]
    assert tree(out) == sorted(
        [f"panx/{lang}/{split}.tsv" for lang in ("de", "en") for split in ("dev", "test", "train")]
        + [f"tydiqa/{code}/dev.json" for code in codes]
        + ["tydiqa/en/train.json", "xtreme-archives.sha256", "xtreme-manifest.json"]
    )
    for split, expected in EXPECTED_EN.items():
        assert (out / "panx" / "en" / f"{split}.tsv").read_text(encoding="utf-8") == expected
    assert (out / "panx" / "de" / "dev.tsv").read_text(encoding="utf-8") == "Köln\tB-LOC\n\n"

    train = json.loads((out / "tydiqa" / "en" / "train.json").read_text(encoding="utf-8"))
    assert train == {"version": "TyDiQA-GoldP-1.1-for-SQuAD-1.1", "data": [
        article("Nairobi", "The city of Nairobi is the capital of Kenya.",
                [qa("english-5678-0", "What is the capital of Kenya?", "Nairobi", 12)]),
        article("Mixed", "Kenya's capital: Nairobi.", [qa("english--42-1", "Which city?", "Nairobi", 17)]),
    ]}  # fmt: skip
    for code, name in TYDIQA_LANGUAGES.items():
        assert json.loads((out / "tydiqa" / code / "dev.json").read_text(encoding="utf-8")) == dev_json(name)

    manifest = json.loads((out / "xtreme-manifest.json").read_text())
    assert manifest["panx"]["files"]["en/train.tsv"] == {"sentences": 2, "tokens": 7,
                                                         "source": "panx_dataset/en.tar.gz:train"}  # fmt: skip
    assert manifest["panx"]["files"]["en/dev.tsv"]["sentences"] == 2
    assert manifest["panx"]["sources"]["AmazonPhotos.zip"]["sha256"] == sha256_of(archives / "AmazonPhotos.zip")
    english = manifest["tydiqa"]["files"]["en/train.json"]
    assert (english["articles"], english["paragraphs"], english["questions"]) == (2, 2, 2)
    assert english["train_questions_by_language"] == {"arabic": 1, "english": 2, "finnish": 1}
    assert manifest["tydiqa"]["files"]["sw/dev.json"]["source"] == (
        "tydiqa-goldp-v1.1-dev.tgz:tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-swahili.json")
    lock = dict(reversed(line.split("  ")) for line in (out / "xtreme-archives.sha256").read_text().splitlines())
    assert sorted(lock) == ["panx_dataset/de.tar.gz", "panx_dataset/en.tar.gz", "tydiqa-goldp-v1.1-dev.tgz",
                            "tydiqa-goldp-v1.1-train.json"]  # fmt: skip
    assert lock["tydiqa-goldp-v1.1-dev.tgz"] == sha256_of(archives / "tydiqa-goldp-v1.1-dev.tgz")
    assert lock["panx_dataset/en.tar.gz"] == manifest["panx"]["sources"]["panx_dataset/en.tar.gz"]["sha256"]
    # what intradist train xtreme reads
    from intradist.trainers import ner_data, qa_data

    assert len(ner_data.read_conll(out / "panx" / "en" / "train.tsv")) == 2
    assert [example.id for example in qa_data.read_squad(out / "tydiqa" / "en" / "train.json")] == [
        "english-5678-0", "english--42-1"]  # fmt: skip


def test_a_rerun_skips_what_is_complete_and_redoes_only_what_is_missing(archives, tmp_path):
    out = tmp_path / "out"
    assert run("--out", out, "--archives", archives).exit_code == 0
    stamps = {path: (out / path).stat().st_mtime_ns for path in tree(out)}
    again = run("--out", out, "--archives", archives)
    assert again.exit_code == 0, again.output
    assert "TyDiQA-GoldP: 0 files written, 10 already there" in again.output
    assert "PAN-X: 0 languages converted, 2 already there" in again.output
    assert {path: (out / path).stat().st_mtime_ns for path in tree(out)} == stamps

    # an interrupted run's leftovers are replaced; only the missing items are written again
    shutil.rmtree(out / "panx" / "de")
    (out / "panx" / "de.partial").mkdir()
    (out / "panx" / "de.partial" / "train.tsv").write_text("half")
    (out / "panx" / "de.partial" / MARKER).write_text(json.dumps({"command": "intradist prepare xtreme"}))  # as a kill leaves it
    (out / "tydiqa" / "ko" / "dev.json").unlink()
    third = run("--out", out, "--archives", archives)
    assert third.exit_code == 0, third.output
    assert "TyDiQA-GoldP: 1 files written" in third.output and "PAN-X: 1 languages converted" in third.output
    assert tree(out) == sorted(stamps)
    assert (out / "panx" / "de" / "train.tsv").read_text(encoding="utf-8") == "Die\tO\nZugspitze\tB-LOC\n\n"
    unchanged = [path for path in stamps if (out / path).stat().st_mtime_ns == stamps[path]]
    assert "panx/en/train.tsv" in unchanged and "tydiqa/en/train.json" in unchanged


def test_downloads_tydiqa_once_and_a_folder_of_panx_archives_works_like_the_zip(archives, tmp_path, monkeypatch):
    calls = []

    def fake_download(urls, dest, hint):
        calls.append(urls)
        shutil.copy(archives / urls[0].rsplit("/", 1)[1], dest)

    monkeypatch.setattr(tydiqa, "download", fake_download)
    panx_folder = tmp_path / "panx"
    (panx_folder / "panx_dataset").mkdir(parents=True)
    with zipfile.ZipFile(archives / "AmazonPhotos.zip") as archive:
        for lang in PANX:
            (panx_folder / "panx_dataset" / f"{lang}.tar.gz").write_bytes(archive.read(f"panx_dataset/{lang}.tar.gz"))
    out = tmp_path / "out"
    result = run("--out", out, "--panx-archive", panx_folder, "--languages", "en,de")
    assert result.exit_code == 0, result.output
    assert calls == [["https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-train.json"],
                     ["https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-dev.tgz"]]  # fmt: skip
    assert sorted(p.name for p in (out / "archives").iterdir()) == ["tydiqa-goldp-v1.1-dev.tgz",
                                                                    "tydiqa-goldp-v1.1-train.json"]  # fmt: skip
    assert tree(out / "tydiqa") == ["en/dev.json", "en/train.json"]
    for split, expected in EXPECTED_EN.items():
        assert (out / "panx" / "en" / f"{split}.tsv").read_text(encoding="utf-8") == expected
    assert "AmazonPhotos.zip" not in (out / "xtreme-manifest.json").read_text()

    # the same member, now read from the zip: accepted; the downloaded TyDiQA files are reused
    (out / "tydiqa" / "en" / "dev.json").unlink()
    shutil.rmtree(out / "panx" / "en")
    again = run("--out", out, "--panx-archive", archives / "AmazonPhotos.zip", "--languages", "en")
    assert again.exit_code == 0, again.output
    assert len(calls) == 2
    assert (out / "panx" / "en" / "dev.tsv").is_file() and (out / "tydiqa" / "en" / "dev.json").is_file()


def test_offline_fails_in_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    out = tmp_path / "out"
    result = run("--out", out, "--tasks", "tydiqa")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "intradist prepare xtreme: cannot download "
        "https://storage.googleapis.com/tydiqa/v1.1/tydiqa-goldp-v1.1-train.json"
        " ([Errno -3] Temporary failure in name resolution); download it by hand into a folder and pass --archives DIR"
        " (or --tasks panx to skip TyDiQA-GoldP)"
    )
    assert not out.exists()


def test_without_the_panx_archive_tydiqa_is_done_and_the_manual_step_is_explained(archives, tmp_path):
    out = tmp_path / "out"
    (archives / "AmazonPhotos.zip").unlink()
    result = run("--out", out, "--archives", archives)
    assert result.exit_code == 2
    assert result.stdout == f"prepared {out / 'tydiqa'}\n"
    assert PANX_URL in result.output and "--panx-archive PATH/AmazonPhotos.zip" in result.output
    assert f"TyDiQA-GoldP is ready in {out / 'tydiqa'}" in result.output
    assert 3 <= len(result.output.strip().splitlines()) <= 9
    assert (out / "tydiqa" / "en" / "train.json").is_file() and not (out / "panx").exists()

    only_panx = run("--out", tmp_path / "other", "--tasks", "panx")
    assert only_panx.exit_code == 2 and "Nothing was written." in only_panx.output
    assert not (tmp_path / "other").exists()

    # once converted, a rerun without the archive is content with what is there
    assert run("--out", out, "--panx-archive", tmp_path / "none.zip").exit_code == 2
    write_panx_zip(tmp_path / "AmazonPhotos.zip")
    assert run("--out", out, "--panx-archive", tmp_path / "AmazonPhotos.zip").exit_code == 0
    rerun = run("--out", out, "--archives", archives)
    assert rerun.exit_code == 0, rerun.output
    assert "PAN-X: 2 languages already there" in rerun.output


def test_the_checksum_record_refuses_an_archive_that_changed(archives, tmp_path):
    out = tmp_path / "out"
    assert run("--out", out, "--archives", archives).exit_code == 0
    lock = out / "xtreme-archives.sha256"
    recorded = lock.read_text()

    # the same archives again after the outputs were removed: accepted
    shutil.rmtree(out / "panx")
    (out / "tydiqa" / "en" / "train.json").unlink()
    assert run("--out", out, "--archives", archives).exit_code == 0
    assert lock.read_text() == recorded

    # a different en.tar.gz: refused, nothing rewritten
    changed = {lang: dict(splits) for lang, splits in PANX.items()}
    changed["en"]["test"] = "en:Olaf\tB-PER\n"
    write_panx_zip(archives / "AmazonPhotos.zip", changed)
    shutil.rmtree(out / "panx" / "en")
    result = run("--out", out, "--archives", archives, "--tasks", "panx")
    one_line_error(result, f"{archives / 'AmazonPhotos.zip'}:panx_dataset/en.tar.gz: SHA-256 ")
    assert f"recorded for panx_dataset/en.tar.gz in {lock}" in result.output
    assert lock.read_text() == recorded and not (out / "panx" / "en").exists()
    assert not (out / "panx" / "en.partial").exists()

    # a TyDiQA train file that differs from the record
    (out / "tydiqa" / "en" / "train.json").unlink()
    (archives / "tydiqa-goldp-v1.1-train.json").write_text(json.dumps(train_json()) + " ")
    one_line_error(run("--out", out, "--archives", archives, "--tasks", "tydiqa"),
                   f"{archives / 'tydiqa-goldp-v1.1-train.json'}: SHA-256 ")  # fmt: skip


def test_the_published_tydiqa_checksum_is_enforced_and_a_bad_download_is_removed(tmp_path, monkeypatch):
    def fake_download(urls, dest, hint):
        dest.write_text(json.dumps(train_json()))

    monkeypatch.setattr(tydiqa, "download", fake_download)
    out = tmp_path / "out"
    result = run("--out", out, "--tasks", "tydiqa")
    one_line_error(result, f"{out / 'archives' / 'tydiqa-goldp-v1.1-train.json'}: SHA-256 ")
    assert f"is not the published {tydiqa.KNOWN_SHA256['tydiqa-goldp-v1.1-train.json']}" in result.output
    assert not (out / "archives" / "tydiqa-goldp-v1.1-train.json").exists() and not (out / "tydiqa").exists()


def _replace_panx(archives, lang: str, splits: dict) -> None:
    write_panx_zip(archives / "AmazonPhotos.zip", {**PANX, lang: splits})


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("not a zip", "{archives}/AmazonPhotos.zip: not a zip archive"),
        ("no test", "{archives}/AmazonPhotos.zip:panx_dataset/de.tar.gz: has no member test"),
        ("three fields", "{archives}/AmazonPhotos.zip:panx_dataset/de.tar.gz:dev, line 2: expected 'de:token<TAB>TAG'"),
        ("no prefix", "{archives}/AmazonPhotos.zip:panx_dataset/de.tar.gz:train, line 1: the token 'Die' lacks"),
        ("bad tag", "{archives}/AmazonPhotos.zip:panx_dataset/de.tar.gz:test, line 1: unknown tag 'B-MISC'"),
        ("not json", "{archives}/tydiqa-goldp-v1.1-train.json: not valid JSON"),
        ("answer moved", "{archives}/tydiqa-goldp-v1.1-train.json: question english-5678-0: answer 'Nairobi' is not"),
        ("no qas", "{archives}/tydiqa-goldp-v1.1-train.json: not TyDiQA-GoldP (SQuAD v1.1) JSON: data[0]"),
        ("no korean", "{archives}/tydiqa-goldp-v1.1-dev.tgz: has no member tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-ko"),
        ("swapped", "{archives}/tydiqa-goldp-v1.1-dev.tgz:tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-arabic.json: holds"),
    ],
)
def test_bad_input_is_named_in_one_line_and_leaves_no_partial_output(archives, tmp_path, damage, problem):
    tasks = "panx"
    if damage == "not a zip":
        (archives / "AmazonPhotos.zip").write_bytes(b"<html>Sign in to Amazon Drive</html>")
    elif damage == "no test":
        _replace_panx(archives, "de", {"train": PANX["de"]["train"], "dev": PANX["de"]["dev"]})
    elif damage == "three fields":
        _replace_panx(archives, "de", {**PANX["de"], "dev": "de:Köln\tB-LOC\nde:Dom\tO\textra\n"})
    elif damage == "no prefix":
        _replace_panx(archives, "de", {**PANX["de"], "train": "Die\tO\n"})
    elif damage == "bad tag":
        _replace_panx(archives, "de", {**PANX["de"], "test": "de:Goethe\tB-MISC\n"})
    else:
        tasks = "tydiqa"
        train = archives / "tydiqa-goldp-v1.1-train.json"
        if damage == "not json":
            train.write_text('{"version": "1.1", "data": [')
        elif damage == "answer moved":
            train.write_text(json.dumps(train_json(english_answer_start=13)))
        elif damage == "no qas":
            broken = train_json()
            del broken["data"][0]["paragraphs"][0]["qas"]
            train.write_text(json.dumps(broken))
        else:
            members = {f"tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{name}.json": json.dumps(dev_json(name))
                       for name in TYDIQA_LANGUAGES.values()}  # fmt: skip
            if damage == "no korean":
                del members["tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-korean.json"]
            elif damage == "swapped":
                members["tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-arabic.json"] = json.dumps(dev_json("bengali"))
            write_dev_tgz(archives / "tydiqa-goldp-v1.1-dev.tgz", members)
    out = tmp_path / "out"
    result = run("--out", out, "--archives", archives, "--tasks", tasks)
    one_line_error(result, problem.format(archives=archives))
    leftovers = [path for path in tree(out) if ".partial" in path or path.startswith(("panx/de", "tydiqa/ar"))] \
        if out.exists() else []  # fmt: skip
    assert leftovers == []


def test_unknown_tasks_and_languages_are_refused_before_anything_is_written(archives, tmp_path):
    out = tmp_path / "out"
    one_line_error(run("--out", out, "--tasks", "panx,xnli"), "--tasks: unknown task 'xnli'; choose from panx,tydiqa")
    zip_path = archives / "AmazonPhotos.zip"
    one_line_error(run("--out", out, "--archives", archives, "--languages", "en,xx"),
                   f"--languages: {zip_path} has no PAN-X archive for xx; it has de,en")  # fmt: skip
    one_line_error(run("--out", out, "--tasks", "tydiqa", "--languages", "de"),
                   "--languages: TyDiQA-GoldP has no de; choose from ar,bn,en,fi,id,ko,ru,sw,te")  # fmt: skip
    nowhere = tmp_path / "nowhere"
    one_line_error(run("--out", out, "--archives", nowhere), f"--archives {nowhere}: not a folder")
    assert not out.exists()


def test_parse_panx_keeps_sentences_and_strips_only_the_language_prefix():
    text = "\n\nen:a\tO\nen:en:b\tB-LOC\n\n \n\nen::\tO \r\nen:x\u2028y\tO\n"
    assert parse_panx(text, "en", "x") == [[("a", "O"), ("en:b", "B-LOC")], [(":", "O"), ("x\u2028y", "O")]]
    with pytest.raises(UserError, match=r"^x, line 1: the token 'de:a' lacks the 'en:' prefix"):
        parse_panx("de:a\tO\n", "en", "x")


def test_help_names_the_layout_and_gives_examples():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "OUT/panx/{lang}/{train,dev,test}.tsv" in result.output and "Examples:" in result.output
    assert "--panx-archive ~/Downloads/AmazonPhotos.zip" in result.output
