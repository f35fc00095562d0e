"""A task's own YAML (beside its module) is checked before any work: a syntax error names the
file, line and column; an unknown key the file, its line and the keys it could be; a wrong type
the value and the type expected. Exit code 2, one line, no run directory left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks.test_user_task_errors import TASK, write_task

QUIET = ("trainer.plots=false", "trainer.progress=false", "trainer.epochs=1")

# (the YAML beside the task, what the line names after "dlrun: error: <file>:")
CASES = [
    ("task:\n  hidden: [1, 2\ntrainer:\n  epochs: 3\n", ["3:8: not valid YAML", "flow sequence"]),
    ("task: {hidden: 3\n", ["2:1: not valid YAML"]),
    ("task:\n  hiden: 3\n", ["2: task.hiden: no such key; did you mean hidden?", "hidden"]),
    ("trainer:\n  epoch: 3\n", ["2: trainer.epoch: no such key; did you mean epochs?"]),
    (
        "trainer:\n  early_stopping:\n    patiense: 2\n",
        ["3: trainer.early_stopping.patiense: no such key; did you mean patience?"],
    ),
    ("sed: 3\n", ["1: sed: no such key; did you mean seed?"]),
    ("task:\n  hidden: abc\n", ["2: task.hidden='abc' is not allowed: expected int"]),
    ("trainer:\n  shuffle: sometimes\n", ["2: trainer.shuffle='sometimes'", "expected bool"]),
    ("optimizer:\n  lrr: 0.1\n", ["2: optimizer.lrr: no such key"]),
    ("optimizer:\n  lr: fast\n", ["2: optimizer.lr: Value 'fast'", "Float"]),
]


@pytest.mark.parametrize(("yaml", "names"), CASES)
def test_a_mistake_in_a_tasks_yaml_names_its_file_and_line(
    dlrun, tmp_path: Path, yaml: str, names: list[str]
) -> None:
    path = write_task(tmp_path / "project")
    (path.parent / "mine.yaml").write_text(yaml)
    for args in (("--cfg", "job", f"task={path}"), (f"task={path}", *QUIET)):
        r = dlrun(*args)
        assert r.code == 2, (r.out, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.err, r.err
        assert lines[0].startswith(f"dlrun: error: {path.parent / 'mine.yaml'}:"), lines[0]
        for name in names:
            assert name in lines[0], lines[0]
        assert "internal error" not in lines[0]
    assert not r.run_dir.exists()  # refused before any work: no run directory


def test_a_right_yaml_still_composes(dlrun, tmp_path: Path) -> None:
    path = write_task(tmp_path / "project", TASK)
    (path.parent / "mine.yaml").write_text(
        "defaults:\n  - override /optimizer: adam\n  - _self_\n\ntask:\n  hidden: 4\n"
        "trainer:\n  epochs: 3\n  early_stopping:\n    patience: 2\nseed: 7\n"
    )
    r = dlrun("--cfg", "job", f"task={path}")
    assert r.code == 0, r.err
    assert "hidden: 4" in r.out and "patience: 2" in r.out and "betas:" in r.out
    assert "seed: 7" in r.out
