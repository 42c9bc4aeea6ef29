"""fairseq checkpoints load weights-only; anything else a pickle could carry is still refused."""

from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

import user_dir  # noqa: F401  (allow-lists fairseq's checkpoint types)


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
