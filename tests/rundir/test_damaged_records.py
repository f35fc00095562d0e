"""Every record file dlrun reads, damaged in many ways (cut short, bytes flipped, emptied, binary,
valid JSON or YAML of the wrong shape), under resume, dlrun-report and dlrun-rerun: the command
either works or says in one line which file is damaged, and the run it reads never changes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrun.cli import main as cli
from dlrun.commands import rerun
from dlrun.engine import checkpoint
from dlrun.rundir.lock import NAME as LOCK
from dlrun.sweeps import report
from tests.conftest import call_main

QUIET = ("trainer.plots=false", "trainer.progress=false")
RECORDS = [
    "summary.json",
    "env.json",
    "metrics.jsonl",
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
]
COMMANDS = ["resume", "report", "rerun"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


@st.composite
def damages(draw: st.DrawFn, original: bytes, name: str) -> bytes:
    """One way a file gets damaged: a crash, a bad disk, a careless edit."""
    n = len(original)
    kind = draw(st.sampled_from(["truncate", "flip", "empty", "binary", "wrong shape"]))
    if kind == "truncate":
        return original[: draw(st.integers(0, max(0, n - 1)))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, n - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "empty":
        return b""
    if kind == "binary":
        return draw(st.binary(min_size=1, max_size=200))
    value = draw(json_values)  # well-formed, but not the record dlrun wrote
    if name.endswith(".jsonl"):
        lines = original.decode().splitlines(keepends=True)
        lines[draw(st.integers(0, len(lines) - 1))] = json.dumps(value) + "\n"
        return "".join(lines).encode()
    if name.endswith(".json"):
        record = json.loads(original)
        if isinstance(value, dict) or draw(st.booleans()):
            return json.dumps(value).encode()
        record[draw(st.sampled_from(sorted(record)))] = value  # one key of the wrong type
        return json.dumps(record).encode()
    if name.endswith(".yaml"):
        return yaml.safe_dump(value).encode()
    return json.dumps(value).encode()  # a .pt that is JSON


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("pristine") / "run"
    code = None
    try:
        # on the CPU: its rerun reproduces it exactly, whatever device the machine has
        cli.main(
            ["task=sine-bp", *QUIET, "trainer.epochs=6", "device=cpu", f"hydra.run.dir={run_dir}"]
        )
    except SystemExit as exc:
        code = exc.code
    assert code in (None, 0)
    return run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run but its log (a refused resume adds one line there) and its lock file
    (every writer, a refused one too, names itself there while it holds the lock)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in ("dlrun.log", LOCK)
    }


def run_command(command: str, run_dir: Path, capsys) -> tuple[int, str, str]:
    if command == "resume":
        return call_main(cli.main, capsys, f"resume={run_dir}", "trainer.progress=false")
    if command == "report":
        return call_main(report.main, capsys, run_dir)
    new = run_dir.parent / "rerun"
    return call_main(rerun.main, capsys, run_dir, "--verify", *QUIET, f"hydra.run.dir={new}")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), name=st.sampled_from(RECORDS), command=st.sampled_from(COMMANDS))
def test_a_damaged_record_costs_one_line_and_changes_nothing(
    pristine: Path, capsys, data: st.DataObject, name: str, command: str
) -> None:
    with tempfile.TemporaryDirectory() as where:
        run_dir = Path(where) / "run"
        shutil.copytree(pristine, run_dir)
        path = run_dir / name
        damaged = data.draw(damages(path.read_bytes(), name), label="damaged")
        path.write_bytes(damaged)
        before = snapshot(run_dir)

        code, out, err = run_command(command, run_dir, capsys)

        assert "Traceback" not in out + err and "internal error" not in err, err
        if code == 0 or (code == 1 and command == "rerun" and "NOT reproduced" in out):
            if command != "resume":  # a reader: nothing changed
                assert snapshot(run_dir) == before
            return
        assert code == 2, (code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and ": error: " in lines[0], err
        if Path(name).name not in lines[0]:
            # overrides.yaml edited into other, well-formed overrides: Hydra's line names one
            assert name.endswith("overrides.yaml"), lines[0]
            keys = [str(o).split("=")[0].lstrip("+~") for o in yaml.safe_load(damaged)]
            assert any(k and k in lines[0] for k in keys), lines[0]
        assert snapshot(run_dir) == before  # the status and every record as they were
        assert not list((run_dir / ".hydra").glob("resume-*"))


def test_a_metrics_row_that_is_json_but_not_an_object(pristine: Path, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(pristine, run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    lines[1] = "[1, 2]\n"
    (run_dir / "metrics.jsonl").write_text("".join(lines))
    for command in COMMANDS:
        code, _, err = run_command(command, run_dir, capsys)
        assert code == 2 and "metrics.jsonl: line 2 is not a metrics row" in err, err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_flipped_bits_in_a_checkpoint_are_damage_and_best_pt_is_offered(
    pristine: Path, tmp_path: Path, capsys
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(pristine, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    state = checkpoint.load(last)
    weight = next(iter(state["model"].values()))
    raw = bytearray(last.read_bytes())
    at = bytes(raw).find(weight.numpy().tobytes()[:16])  # the first weight's bytes, stored raw
    assert at > 0
    raw[at + 2] ^= 0x10
    last.write_bytes(bytes(raw))
    code, _, err = run_command("resume", run_dir, capsys)
    assert code == 2
    assert "last.pt: damaged" in err and "checksum" in err
    best = checkpoint.load(run_dir / "checkpoints" / "best.pt")["epoch"]
    assert f"checkpoints/best.pt (epoch {best}) is intact" in err
    assert f"dlrun resume={run_dir}" in err


@pytest.fixture(scope="module")
def pristine_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("pristine-sweep") / "sweep"
    args = ["-m", "task=sine-bp", *QUIET, "trainer.epochs=3", "seed=1,2"]
    code = None
    try:
        cli.main([*args, f"hydra.sweep.dir={sweep_dir}"])
    except SystemExit as exc:
        code = exc.code
    assert code in (None, 0)
    return sweep_dir


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), name=st.sampled_from(["sweep.json", "1/summary.json"]))
def test_a_damaged_sweep_record_costs_one_line(
    pristine_sweep: Path, capsys, data: st.DataObject, name: str
) -> None:
    with tempfile.TemporaryDirectory() as where:
        sweep_dir = Path(where) / "sweep"
        shutil.copytree(pristine_sweep, sweep_dir)
        path = sweep_dir / name
        path.write_bytes(data.draw(damages(path.read_bytes(), name), label="damaged"))
        before = snapshot(sweep_dir)
        code, out, err = call_main(report.main, capsys, sweep_dir)
        assert "Traceback" not in out + err
        assert snapshot(sweep_dir) == before  # a reader
        if code != 0:
            assert code == 2
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("dlrun-report: error: "), err
            assert f"{path}: damaged" in lines[0]
