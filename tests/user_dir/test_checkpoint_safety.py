"""fairseq checkpoints load weights-only; anything else a pickle could carry is still refused."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys

import pytest
import torch

import user_dir  # noqa: F401  (allow-lists fairseq's checkpoint types)
from intradist.recipes.fairseq_runs import USER_DIR, environment


class RunsCommandWhenUnpickled:
    """What a malicious checkpoint holds: unpickling it would call os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class NotAllowListed:
    """A harmless class that nobody allow-listed."""


def test_crafted_pickle_is_refused_after_the_plugin_is_imported(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": RunsCommandWhenUnpickled(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|Unsupported global"):
        torch.load(path)
    assert not marker.exists()


def test_weights_only_stays_the_default(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"x": NotAllowListed()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_fairseq_checkpoint_loads_weights_only(teacher_checkpoint):
    state = torch.load(teacher_checkpoint, map_location="cpu", weights_only=True)
    assert isinstance(state["cfg"]["model"], argparse.Namespace)
    assert state["optimizer_history"][-1]["num_updates"] == 20
    assert all(torch.is_tensor(v) for v in state["model"].values())


@pytest.mark.parametrize("content", ["crafted pickle", "random bytes"])
def test_fairseq_generate_refuses_a_bad_checkpoint_in_one_line(tiny_data_bin, tmp_path, content):
    """fairseq-generate --path with a file that weights-only loading refuses: exit 2 and one line, not a traceback.

    (fairseq logs its whole config before it loads the model; the line ends its output.)"""
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    if content == "crafted pickle":
        torch.save({"model": {}, "payload": RunsCommandWhenUnpickled(marker)}, path)
    else:
        path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3)).tolist()))
    completed = subprocess.run([sys.executable, "-m", "fairseq_cli.generate", str(tiny_data_bin), "--path", str(path),
                                "--user-dir", str(USER_DIR), "--cpu", "--quiet"],
                               capture_output=True, text=True, env=environment(), timeout=300)  # fmt: skip
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    assert completed.returncode == 2 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    expected = "needs arbitrary unpickling (posix.system)" if content == "crafted pickle" else "not a PyTorch checkpoint"
    assert lines[-1].startswith(f"error: --path {path}: ") and expected in lines[-1]
    assert not marker.exists()
