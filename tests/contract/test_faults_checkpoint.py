"""Bit flips in a real checkpoint: every one either loads the very content that was written or
is "damaged" in one line, never an uncaught error; a damaged checkpoint points at the other one
of its run when that one is intact (docs/faults.md)."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest
import torch

from dlrun.engine import checkpoint, distributed
from dlrun.errors import DlrunError
from dlrun.rundir.summary import Summary
from dlrun.runs import setup as run_setup
from tests.runs.test_engine import run, sine_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ck") / "run"
    run(sine_config(10), run_dir)
    return run_dir


def _flips(data: bytes, pickle_at: range, count: int, seed: int) -> list[tuple[int, int]]:
    """(byte, bit) pairs: one bit of a sample of the pickle's bytes (the structure: keys, empty
    containers, the checksum), and bits anywhere in the file (tensor bytes, zip headers)."""
    rng = random.Random(seed)
    structure = rng.sample(list(pickle_at), min(count, len(pickle_at)))
    anywhere = rng.sample(range(len(data)), count // 4)
    return [(i, rng.randrange(8)) for i in [*structure, *anywhere]]


def _pickle_range(path: Path) -> range:
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    return range(start, start + info.file_size)


@pytest.mark.slow
def test_single_bit_flips_are_damaged_or_harmless(saved: Path, tmp_path: Path) -> None:
    last = saved / "checkpoints" / "last.pt"
    data = last.read_bytes()
    written = checkpoint.load(last)
    parts = run_setup.build(sine_config(20), distributed.Strategy(), Summary())
    flipped = tmp_path / "flipped.pt"
    outcomes = {"damaged": 0, "same": 0}
    for at, bit in _flips(data, _pickle_range(last), 1200, seed=25):
        damaged = bytearray(data)
        damaged[at] ^= 1 << bit
        flipped.write_bytes(bytes(damaged))
        try:
            checkpoint.restore(flipped, parts)
        except DlrunError as exc:
            line = str(exc)
            assert "damaged" in line and "\n" not in line, (at, bit, line)
            outcomes["damaged"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - what the test is about
            pytest.fail(f"byte {at} bit {bit}: {type(exc).__name__}: {exc}")
        # loaded: then it is exactly what was written (a flip in zip padding, say)
        assert checkpoint.checksum(checkpoint.load(flipped)) == checkpoint.checksum(written)
        outcomes["same"] += 1
    assert outcomes["damaged"] > 1000


def test_empty_containers_and_the_checksum_key_are_covered(saved: Path, tmp_path: Path) -> None:
    state = checkpoint.load(saved / "checkpoints" / "last.pt")
    assert state["optimizer"]["state"] == {}  # plain SGD keeps no state: an empty container
    for change in (
        lambda s: s["optimizer"].update(stat={}),  # a renamed empty container
        lambda s: s["optimizer"].pop("state"),
        lambda s: s["rng"].update(cuda={}),  # [] -> {}
        lambda s: s.update(chfcksum=s.pop(checkpoint.CHECKSUM)),  # its own key renamed
    ):
        copy = checkpoint.load(saved / "checkpoints" / "last.pt")
        change(copy)
        path = tmp_path / "changed.pt"
        buffer = torch.serialization.io.BytesIO()
        torch.save(copy, buffer)
        path.write_bytes(buffer.getvalue())
        with pytest.raises(DlrunError, match="damaged"):
            checkpoint.load(path)


def _flip_a_weight(path: Path) -> None:
    weight = next(iter(checkpoint.load(path)["model"].values()))
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(weight.numpy().tobytes()[:16])
    assert at > 0
    raw[at + 1] ^= 0x04
    path.write_bytes(bytes(raw))


def test_a_damaged_best_pt_under_dlrun_eval_points_at_last_pt(
    saved: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    from dlrun.commands import evaluate as evaluation
    from tests.conftest import call_main

    run_dir = tmp_path / "run"
    shutil.copytree(saved, run_dir)
    _flip_a_weight(run_dir / "checkpoints" / "best.pt")
    code, out, err = call_main(evaluation.main, capsys, run_dir)
    assert code == 2 and out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "best.pt: damaged" in lines[0], err
    epoch = checkpoint.load(run_dir / "checkpoints" / "last.pt")["epoch"]
    assert f"checkpoints/last.pt (epoch {epoch}) is intact" in lines[0]
    assert lines[0].endswith(f"dlrun-eval {run_dir} --checkpoint last")
    code, out, err = call_main(evaluation.main, capsys, run_dir, "--checkpoint", "last")
    assert code == 0, err
