from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dlrun.cli import main as cli


def needs(module: str) -> pytest.MarkDecorator:
    """Skip, saying why, where an optional package is missing (the README's test command
    installs every extra; a machine without a package index may lack some)."""
    missing = importlib.util.find_spec(module) is None
    return pytest.mark.skipif(missing, reason=f"needs {module}: python -m pip install -e '.[test]'")


@dataclass
class Result:
    code: int
    out: str
    err: str
    run_dir: Path

    def summary(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "summary.json").read_text())

    def metrics(self) -> list[dict[str, Any]]:
        lines = (self.run_dir / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture
def dlrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run the `dlrun` command in this process (fast: torch is imported once per session)."""
    monkeypatch.chdir(tmp_path)
    count = iter(range(1000))

    def run(*args: str, run_dir: Path | None = None) -> Result:
        args_list = list(args)
        if run_dir is None:
            run_dir = tmp_path / f"run{next(count)}"
        if not any(a.startswith(("resume=", "hydra.run.dir=")) for a in args_list):
            args_list.append(f"hydra.run.dir={run_dir}")
        try:
            cli.main(args_list)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        shown = re.search(r"^  run dir +(.+)$", out, re.M)  # resume picks its own directory
        return Result(code, out, err, Path(shown.group(1)) if shown else run_dir)

    return run


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run `python -m dlrun` in a fresh process, as a user's shell would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def call_main(main, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """A console script's main() in this process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
