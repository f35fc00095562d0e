"""A non-editable install (`pip install .`) carries conf/ and works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "-q"], check=True, capture_output=True, timeout=300
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT))
    (wheel,) = wheels.glob("dlrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dlrun/conf/config.yaml" in names and "dlrun/conf/task/fizzbuzz.yaml" in names
    site = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--no-index", "--target", str(site), str(wheel))
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import sys, dlrun, dlrun.cli; print('FROM', dlrun.__file__); dlrun.cli.main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installed_copy_finds_its_configs_from_anywhere(installed: Path, tmp_path: Path) -> None:
    r = _run(installed, tmp_path, "--cfg", "job", "task=sine-bp")
    assert r.returncode == 0, r.stderr
    assert f"FROM {installed}" in r.stdout  # the installed copy, not the checkout
    assert "amplitude: 20.0" in r.stdout and "lr: 0.3" in r.stdout


def test_installed_copy_runs_a_task(installed: Path, tmp_path: Path) -> None:
    r = _run(installed, tmp_path, "task=sine-bp", "trainer.epochs=20", "trainer.plots=false")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "outputs").glob("*/*/summary.json"))) == 1
