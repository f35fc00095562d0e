"""The `dlrun` command as a user runs it: one-line errors with exit code 2, Hydra's help and
config printing, and no torch import for any of those."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli

BAD = [
    ("task=nope", "available: fizzbuzz"),
    ("optimizer=nope", "available: adam"),
    ("trainer.epochz=3", "epochz"),
    ("task.hiden=3", "hiden"),
    ("trainer.epochs=abc", "trainer.epochs"),
    ("trainer.epochs=-1", "trainer.epochs"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("device=tpu", "device"),
    ("seed=abc", "seed"),
    ("+unknown=1", "unknown"),
    ("+trainer.fast=true", "trainer.fast"),
    ("resume=does/not/exist", "does/not/exist"),
]


@pytest.mark.parametrize(("arg", "names"), BAD)
def test_bad_input_is_one_line_and_exit_2(dlrun, arg: str, names: str, tmp_path: Path) -> None:
    r = dlrun("trainer.epochs=1", arg)  # should it be accepted after all, it stays short
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("dlrun: error: ") and names in lines[0]
    assert "Traceback" not in r.err + r.out
    assert not r.run_dir.exists()  # refused before any work: nothing written
    assert not (tmp_path / "outputs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    for device in ("cuda", "cuda:0"):
        r = run_cli("task=fizzbuzz", f"device={device}", cwd=tmp_path)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [
            f"dlrun: error: device={device}: CUDA is not available on this machine "
            + r.stderr.split("machine ", 1)[1].strip()
        ]
        assert "use device=cpu" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "outputs").exists()


CHECK_NO_TORCH = """
import sys
from dlrun.cli import main as cli
try:
    cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
assert "torch" not in sys.modules, "torch was imported"
print("exit", code)
"""


@pytest.mark.parametrize(
    ("args", "code", "expect"),
    [
        (["--help"], 0, "== Config groups"),
        (["--cfg", "job", "task=sine-bp"], 0, "amplitude: 20.0"),
        (["optimizer.lr=-1"], 2, "optimizer.lr"),
        (["trainer.epochz=1"], 2, "epochz"),
        (["task=nope"], 2, "nope"),
    ],
)
def test_help_config_and_errors_do_not_import_torch(
    tmp_path: Path, args: list[str], code: int, expect: str
) -> None:
    r = subprocess.run(
        [sys.executable, "-c", CHECK_NO_TORCH, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert f"exit {code}" in r.stdout
    assert expect in r.stdout + r.stderr


def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    r = run_cli("--cfg", "job", "optimizer=adam", "seed=3", cwd=tmp_path)
    assert r.returncode == 0
    assert "seed: 3" in r.stdout and "betas:" in r.stdout and "num_digits: 10" in r.stdout
    assert not (tmp_path / "outputs").exists()


def test_a_real_run_from_the_command_line(tmp_path: Path) -> None:
    r = run_cli(
        "task=sine-bp",
        "trainer.epochs=50",
        "trainer.log_every=25",
        cwd=tmp_path,
        env={"CI": "true"},
    )
    assert r.returncode == 0, r.stderr
    assert "epoch 50/50 train loss" in r.stdout  # plain lines when not on a terminal
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1 and (runs[0] / "summary.json").exists()
    assert str(runs[0].name) in r.stdout


def test_two_runs_started_together_get_different_directories(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "dlrun", "trainer.epochs=1", "trainer.plots=false"]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2
    for run in runs:
        assert (run / "summary.json").exists()


def test_users_add_configs_with_config_dir(tmp_path: Path) -> None:
    extra = tmp_path / "myconf" / "optimizer"
    extra.mkdir(parents=True)
    (extra / "slow_sgd.yaml").write_text(
        "defaults:\n  - /schema/optimizer@_here_: sgd\n  - _self_\nlr: 0.0001\nmomentum: 0.5\n"
    )
    r = run_cli(
        "--config-dir", str(tmp_path / "myconf"), "optimizer=slow_sgd", "--cfg", "job", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "lr: 0.0001" in r.stdout and "momentum: 0.5" in r.stdout


def test_a_preset_group_without_plus_says_how_to_add_it(dlrun) -> None:
    res = dlrun("experiment=fizzbuzz_fast")
    assert res.code == 2
    assert res.err.strip().endswith("add it with +experiment=...")
    assert len(res.err.strip().splitlines()) == 1
