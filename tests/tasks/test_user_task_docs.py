"""What docs/extending.md and the Task docstring promise a task's author, held true: every
optional hook documented, the seed a task sees, and the commands shown as a shell quotes them."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import pytest

from dlrun.commands import rerun
from dlrun.tasks.base import Task
from tests.conftest import call_main
from tests.tasks.test_user_task_errors import TASK, write_task

ROOT = Path(__file__).resolve().parents[2]
EXTENDING = (ROOT / "docs" / "extending.md").read_text()
QUIET = ("trainer.plots=false", "trainer.progress=false")


def hooks() -> list[str]:
    """What a subclass may set or override beyond the required: Task's own methods with a
    default and its class settings (the scratch twin's for_impl and the name aside)."""
    own = [
        name
        for name, value in vars(Task).items()
        if not name.startswith("_")
        and name not in ("for_impl", "name", "build_model", "evaluate")
        and not getattr(value, "__isabstractmethod__", False)
    ]
    return sorted({*own, *Task.__annotations__})


@pytest.mark.parametrize("hook", hooks())
def test_every_hook_is_in_the_docs_and_the_docstring(hook: str) -> None:
    assert re.search(rf"\b{hook}\b", EXTENDING), hook
    assert hook in inspect.getdoc(Task), hook


def test_the_docs_cover_the_seed_validation_data_and_shapes() -> None:
    for words in ("seed=", "torch.initial_seed()", "Held-out validation", "`data` argument"):
        assert words in EXTENDING, words
    assert "`(N, classes)`" in EXTENDING and "`(N, 1)`" in EXTENDING and "contract =" in EXTENDING


def test_a_task_sees_the_runs_seed_as_the_docs_say(dlrun, tmp_path: Path) -> None:
    source = TASK.replace(
        "super().__init__(cfg, data, device)\n",
        "super().__init__(cfg, data, device)\n        self.seen = torch.initial_seed()\n",
    ).replace(
        'return {"loss": mse / 2, "mse": mse}',
        'return {"loss": mse, "mse": mse, "seed": self.seen}',
    )
    path = write_task(tmp_path / "p", source)
    r = dlrun(f"task={path}", *QUIET, "trainer.epochs=1", "seed=5")
    assert r.code == 0, r.err
    assert r.summary()["final"]["seed"] == 5
    assert "mine: 1 epoch in" in r.out  # one epoch, not "1 epochs"


def test_the_rerun_command_is_quoted_as_a_shell_would(
    dlrun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_task(tmp_path / "my project", TASK)
    r = dlrun(f"task={path}", *QUIET, "trainer.epochs=1")
    assert r.code == 0, r.err
    again_dir = f"hydra.run.dir={tmp_path}/again"  # the file named: its code may run again
    code, out, err = call_main(rerun.main, capsys, r.run_dir, "--trust-task-file", again_dir)
    assert code == 0, err
    shown = next(ln for ln in out.splitlines() if ln.startswith("rerun of "))
    command = shown.split(": ", 1)[1]
    assert "'\"'\"'" not in command and f"'task_file={path}'" in command
    words = shlex.split(command)  # as a shell reads it: the command runs as shown
    assert f"task_file={path}" in words
    again = dlrun(*words[1:], f"hydra.run.dir={tmp_path}/by-hand")
    assert again.code == 0, again.err
    untimed = [
        [{k: v for k, v in m.items() if "time" not in k} for m in x.metrics()] for x in (r, again)
    ]
    assert untimed[0] == untimed[1]


@pytest.mark.parametrize(
    ("page", "case", "test"),
    [
        ("bad-input.md", "a syntax error in a task's YAML", "test_user_task_yaml.py"),
        ("bad-input.md", "an unknown key in a task's YAML", "test_user_task_yaml.py"),
        ("bad-input.md", "a wrong type in a task's YAML", "test_user_task_yaml.py"),
        ("bad-input.md", "a model output that does not fit", "test_user_task_shapes.py"),
        ("bad-input.md", "an objective that `evaluate()` does not", "test_user_task_objective.py"),
        ("bad-input.md", "a task file and an installed package", "test_user_task_moved.py"),
        ("bad-input.md", "an exception raised in the task's own", "test_user_task_errors.py"),
        ("bad-input.md", "an unexpected failure in dlrun's own", "test_user_task_errors.py"),
        ("errors.md", "An exception raised in your own task's", "test_user_task_errors.py"),
    ],
)
def test_each_case_is_a_row_of_the_docs_that_a_test_runs(page: str, case: str, test: str) -> None:
    """Each kind of mistake in a task's own code is documented where users look, and the test
    file that runs it exists."""
    text = (ROOT / "docs" / page).read_text()
    assert f"| {case}" in text or f"- {case}" in text, case
    assert (ROOT / "tests" / "tasks" / test).is_file()
