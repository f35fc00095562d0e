"""Checkpoints are replaced atomically and never run code when read."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from dlrun.engine import checkpoint
from dlrun.errors import DlrunError


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    good = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "w": torch.arange(5.0)}
    checkpoint.save(path, good)

    real_save = torch.save

    def crash_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # what a crash mid-write leaves behind ...
        raise OSError(28, "No space left on device")  # ... and the error

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, {**good, "w": torch.zeros(1000)})
    monkeypatch.setattr(torch, "save", real_save)

    assert os.listdir(path.parent) == ["last.pt"]  # no temp file left behind
    state = checkpoint.load(path)
    assert torch.equal(state["w"], torch.arange(5.0))


def test_a_new_checkpoint_replaces_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    for value in (1.0, 2.0):
        checkpoint.save(
            path,
            {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "w": torch.tensor(value)},
        )
    assert float(checkpoint.load(path)["w"]) == 2.0
    assert oct(path.stat().st_mode & 0o777) != "0o600"  # readable like any other output


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save(
        {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "model": Payload(marker)}, evil
    )
    with pytest.raises(DlrunError, match="refused"):
        checkpoint.load(evil)
    assert not marker.exists()
    # the same file through plain pickle semantics would have run it: the test can fail
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated or not a checkpoint"),
        (b"hello", "truncated or not a checkpoint"),
        (pickle.dumps({"a": 1}), "truncated or not a checkpoint"),
    ],
)
def test_files_that_are_not_checkpoints(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(DlrunError, match=message):
        checkpoint.load(path)


def test_a_torch_file_that_is_not_a_dlrun_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)  # what the tutorial's main.py saves
    with pytest.raises(DlrunError, match="not a dlrun checkpoint"):
        checkpoint.load(path)
