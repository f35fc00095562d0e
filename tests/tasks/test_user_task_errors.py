"""An exception in the user's own task code is one line naming their file and line and the
exception, then the run log that holds the traceback; the run is `failed`, exit code 1.
"internal error" is dlrun's own bugs only, and a message names a log only when it holds it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from dlrun.config import schema

QUIET = ("trainer.plots=false", "trainer.progress=false", "trainer.epochs=2")

# a small complete task file, as a user writes one (against the earlier docs' import paths,
# dlrun.schema and dlrun.tasks.base, which still work); a test swaps a line for a mistake
TASK = '''"""A user's task: an MLP fits y = sin(x)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from dlrun.schema import TaskConfig
from dlrun.tasks.base import Task


@dataclass
class MineConfig(TaskConfig):
    name: ClassVar[str] = "mine"
    hidden: int = 8


class Mine(Task):
    objective = "mse"
    maximize = False
    criterion = "half_mse"

    def __init__(self, cfg: MineConfig, data: object, device: torch.device) -> None:
        super().__init__(cfg, data, device)
        x = torch.linspace(-3, 3, 64, device=device)[:, None]
        self.train_data = (x, torch.sin(x))  # INIT

    def build_model(self) -> nn.Module:
        h = self.cfg.hidden  # BUILD
        return nn.Sequential(nn.Linear(1, h), nn.Tanh(), nn.Linear(h, 1))

    def evaluate(self, model: nn.Module) -> dict[str, torch.Tensor]:
        x, y = self.train_data
        mse = torch.mean((model(x) - y) ** 2)  # EVALUATE
        return {"loss": mse / 2, "mse": mse}
'''


def write_task(directory: Path, source: str = TASK, name: str = "mine.py") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(source)
    return path


def line_of(path: Path, marker: str) -> int:
    """The line number of the line holding ``marker`` (the mistake a test put there)."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if marker in line)


HOOKS = """
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch
        return 0.5 * torch.mean((model(x) - y) ** 2)  # LOSS

    def converged(self, model: nn.Module) -> bool:
        return False  # CONVERGED

    def report(self, model: nn.Module) -> str | None:
        return None  # REPORT
"""

# (the marker of the line made wrong, that line's mistake, the exception it raises)
MISTAKES = [
    ("INIT", "self.train_data = (x, torch.sin(self.cfg.points))", "AttributeError"),
    ("BUILD", "h = self.cfg.hiden", "AttributeError"),
    ("EVALUATE", "mse = torch.mean((model(x) - y) ** 2) / len(self.nothing)", "AttributeError"),
    ("LOSS", "return 0.5 * torch.mean((model(x) - y) ** 2) + {}['x']", "KeyError"),
    ("CONVERGED", "return 1 / 0", "ZeroDivisionError"),
    ("REPORT", "return undefined_name", "NameError"),
]


@pytest.mark.parametrize(("marker", "mistake", "kind"), MISTAKES)
def test_an_exception_in_the_users_code_names_their_file_and_line(
    dlrun, tmp_path: Path, marker: str, mistake: str, kind: str
) -> None:
    source = TASK.replace('    criterion = "half_mse"\n', "") + HOOKS
    lines = source.splitlines()
    at = next(i for i, line in enumerate(lines) if f"# {marker}" in line)
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines[at] = f"{indent}{mistake}  # {marker}"
    path = write_task(tmp_path / "project", "\n".join(lines) + "\n")

    r = dlrun(f"task={path}", *QUIET)

    assert r.code == 1, (r.out, r.err)
    err = r.err.strip().splitlines()
    assert len(err) == 1, r.err
    assert err[0].startswith(f"dlrun: error: {path}:{line_of(path, marker)} in "), err[0]
    assert f": {kind}" in err[0] and "internal error" not in err[0]
    assert "Traceback" not in r.err
    log = Path(re.search(r"the traceback is in (\S+?)\)", err[0]).group(1))
    assert log == r.run_dir / "dlrun.log"
    held = log.read_text()
    assert "Traceback (most recent call last)" in held and f'File "{path}"' in held
    assert r.summary()["status"] == "failed"


def test_a_mistake_in_a_helper_beside_the_task_file_names_the_helper(
    dlrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's code is their project's, not only the task file: a module it imports too."""
    project = tmp_path / "project"
    write_task(project, "def width(cfg):\n    return cfg.hiden  # HELPER\n", "mine_helpers.py")
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delitem(sys.modules, "mine_helpers", raising=False)  # gone again afterwards
    source = TASK.replace("h = self.cfg.hidden", "h = width(self.cfg)")
    path = write_task(
        project,
        source.replace("import torch\n", "import torch\nfrom mine_helpers import width\n", 1),
    )
    r = dlrun(f"task={path}", *QUIET)
    sys.modules.pop("mine_helpers", None)
    assert r.code == 1, r.err
    helper = project / "mine_helpers.py"
    assert r.err.startswith(f"dlrun: error: {helper}:2 in width: AttributeError"), r.err


def test_a_figure_that_fails_is_a_warning_naming_the_users_line(dlrun, tmp_path: Path) -> None:
    """A plot never costs the run its result; the warning points at the task's figures()."""
    source = TASK + (
        "\n    def figures(self, model, history):\n        return {'x': history[99]}  # FIG\n"
    )
    path = write_task(tmp_path / "project", source)
    r = dlrun(f"task={path}", "trainer.progress=false", "trainer.epochs=2")
    assert r.code == 0, r.err
    assert f"plots not written ({path}:{line_of(path, '# FIG')} in figures: IndexError" in r.out


def test_dlruns_own_bug_is_an_internal_error_naming_the_log_that_holds_it(
    dlrun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure in dlrun's own code (made here by breaking one of its functions) keeps
    "internal error", and the log it names holds the traceback, even before the run starts."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in dlrun")

    monkeypatch.setattr(schema, "to_objects", broken)  # before the run: nothing logged yet
    r = dlrun("task=sine-bp", *QUIET)
    assert r.code == 1
    assert r.err.startswith("dlrun: internal error: RuntimeError: a bug in dlrun (the trace")
    log = Path(re.search(r"the traceback is in (\S+?);", r.err).group(1))
    assert log == r.run_dir / "dlrun.log" and "RuntimeError: a bug in dlrun" in log.read_text()
    assert "Traceback (most recent call last)" in log.read_text()


def test_a_task_file_that_raises_as_it_is_imported_names_the_line(dlrun, tmp_path: Path) -> None:
    source = TASK.replace(
        "from dlrun.schema", "WIDTH = int('eight')  # IMPORT\n\nfrom dlrun.schema"
    )
    path = write_task(tmp_path / "project", source)
    r = dlrun(f"task={path}", *QUIET)
    assert r.code == 2, r.err
    assert r.err.startswith(f"dlrun: error: task file {path}: cannot be imported: ValueError")
    assert r.err.strip().endswith(f"(at {path}:{line_of(path, '# IMPORT')})")
