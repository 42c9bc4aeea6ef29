"""The output-folder protocol (intradist.run_folder): refusals up front, nothing lost, nothing half-written."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from intradist.errors import UserError
from intradist.run_folder import MARKER, RunFolder, read_marker

COMMAND = "intradist test"


def snapshot(folder: Path) -> Dict[str, bytes]:
    """Every file under ``folder``, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_run(out: Path, text: str, **options) -> None:
    with RunFolder(out, COMMAND, **options) as run:
        (run.staging / "result.txt").write_text(text)
        run.commit()


def refused(out: Path, **options) -> str:
    with pytest.raises(UserError) as caught:
        RunFolder(out, COMMAND, **options).check()
    return caught.value.format_message()


def test_a_new_folder_is_written_complete_with_its_marker(tmp_path):
    out = tmp_path / "a" / "b"
    write_run(out, "one")
    assert (out / "result.txt").read_text() == "one"
    assert read_marker(out) == {"command": COMMAND, "fingerprint": "", "complete": True}
    assert sorted(p.name for p in tmp_path.joinpath("a").iterdir()) == ["b"]  # no staging, no lock left


def test_refusals_name_the_problem_and_create_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "ckpt.pt").write_bytes(b"weights")
    before = snapshot(tmp_path)
    assert "not a folder" in refused(Path("file"))
    assert "current folder" in refused(Path("."))
    assert "current folder" in refused(Path(".."))
    assert "current folder" in refused(tmp_path)
    assert "holds an input" in refused(data, inputs=[data / "sub" / "ckpt.pt"], overwrite=True)
    assert "holds an input" in refused(data / "sub", inputs=[data / "sub" / "ckpt.pt"], overwrite=True)
    assert "was not written by" in refused(data)
    assert snapshot(tmp_path) == before


def test_an_unwritable_place_is_refused(tmp_path):
    """A path below a regular file can never be made (a check root cannot bypass, unlike permissions)."""
    (tmp_path / "file").write_text("x")
    assert "cannot write" in refused(tmp_path / "file" / "out")


def test_a_folder_of_someone_else_survives_unless_overwrite(tmp_path):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "--overwrite" in refused(out)
    assert (out / "notes.txt").read_text() == "mine"
    write_run(out, "new", overwrite=True)
    assert snapshot(out).keys() == {"result.txt", MARKER}


def test_an_earlier_run_is_replaced_only_when_the_command_says_so(tmp_path):
    out = tmp_path / "run"
    write_run(out, "one")
    assert "earlier run" in refused(out)
    write_run(out, "two", replace_earlier=True)
    assert (out / "result.txt").read_text() == "two"
    other = RunFolder(out, "another command", replace_earlier=True)
    with pytest.raises(UserError, match="not written by another command"):
        other.check()


def test_an_error_inside_leaves_the_earlier_result_and_no_staging(tmp_path):
    out = tmp_path / "run"
    write_run(out, "one")
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with RunFolder(out, COMMAND, replace_earlier=True) as run:
            (run.staging / "result.txt").write_text("half")
            raise RuntimeError("boom")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_staging_folder_that_is_not_ours_is_refused(tmp_path):
    (tmp_path / "run.partial").mkdir()
    (tmp_path / "run.partial" / "x").write_text("x")
    assert "is not intradist test's work" in refused(tmp_path / "run")


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from intradist.run_folder import RunFolder
    out, resumable = Path(sys.argv[1]), sys.argv[2] == "1"
    try:
        with RunFolder(out, "intradist test", replace_earlier=True, resumable=resumable, fingerprint="f") as run:
            (run.staging / "checkpoint").write_text("resumed" if run.resuming else "fresh")
            print("ready", flush=True)
            time.sleep(60)
            run.commit()
    except BaseException as error:
        print(type(error).__name__, flush=True)
        raise SystemExit(130)
    """
)


def start_child(out: Path, resumable: bool) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out), "1" if resumable else "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_the_earlier_result_and_no_staging(tmp_path, signum):
    out = tmp_path / "run"
    write_run(out, "one")
    before = snapshot(out)
    child = start_child(out, resumable=False)
    child.send_signal(signum)
    stdout, _ = child.communicate(timeout=30)
    assert child.returncode == 130 and stdout.strip() in ("KeyboardInterrupt", "Terminated")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_resumable_run_keeps_its_checkpoints_and_the_rerun_continues(tmp_path):
    out = tmp_path / "run"
    child = start_child(out, resumable=True)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=30)
    assert "keeps the checkpoints" in stderr
    assert (tmp_path / "run.partial" / "checkpoint").read_text() == "fresh"
    with RunFolder(out, COMMAND, resumable=True, fingerprint="f") as run:
        assert run.resuming
    with RunFolder(out, COMMAND, resumable=True, fingerprint="other settings") as run:
        assert not run.resuming and not (run.staging / "checkpoint").exists()


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "run"
    child = start_child(out, resumable=False)
    try:
        with pytest.raises(UserError, match="another run is writing it now"):
            with RunFolder(out, COMMAND, replace_earlier=True):
                pass
        assert (tmp_path / "run.partial" / "checkpoint").read_text() == "fresh"  # the first run's work untouched
    finally:
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=30)
    assert not out.exists() and not (tmp_path / "run.partial").exists()
