"""A logger of one's own, without forking dlrun: docs/extending.md's "Your own logger" section,
its module and YAML installed as a package with a `dlrun.loggers` entry point, is found, typed,
and gets every row of a run; a broken one is one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
SECTION = (ROOT / "docs" / "extending.md").read_text().split("## Your own logger")[1]


def _block(language: str) -> str:
    found = re.findall(rf"```{language}\n(.*?)```", SECTION, re.S)
    assert len(found) == 1, f"expected one {language} block in 'Your own logger'"
    return found[0]


def _install(site: Path, entry: str = "lines = dlrun_lines", module: str | None = None) -> None:
    """The section's package, installed as pip would (a dist-info with its entry point)."""
    package = site / "dlrun_lines"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(module if module is not None else _block("python"))
    (package / "lines.yaml").write_text(_block("yaml"))
    info = site / "dlrun_lines-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlrun-lines\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dlrun.loggers]\n{entry}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    _install(site)
    return site


def dlrun(site: Path, cwd: Path, *args: str):
    return run_cli(*args, cwd=cwd, env={"PYTHONPATH": str(site)})


def test_the_docs_logger_composes_typed(site: Path, tmp_path: Path) -> None:
    r = dlrun(site, tmp_path, "--cfg", "job", "logger=[jsonl,lines]", "logger.lines.digits=3")
    assert r.returncode == 0, r.stderr
    assert "  lines:\n    enabled: true\n    digits: 3\n" in r.stdout
    r = dlrun(site, tmp_path, "--cfg", "job")  # installed, not chosen
    assert "  lines:\n    enabled: false\n" in r.stdout
    r = dlrun(site, tmp_path, "logger=[jsonl,lines]", "logger.lines.digits=0")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "dlrun: error: logger.lines.digits=0 is not allowed: expected an integer >= 1"
    ]
    r = dlrun(site, tmp_path, "logger=lines", "logger.lines.digitz=3")
    assert r.returncode == 2 and "logger.lines.digitz" in r.stderr


def test_the_docs_logger_gets_every_row_of_a_run(site: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = dlrun(
        site,
        tmp_path,
        "task=sine-bp",
        "trainer.epochs=4",
        "trainer.validate_every=2",
        "trainer.log_every=1",
        "trainer.plots=false",
        "trainer.progress=false",
        "logger=[jsonl,lines,csv]",
        "logger.lines.digits=3",
        f"hydra.run.dir={run_dir}",
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    lines = (run_dir / "metrics.txt").read_text().splitlines()
    assert len(rows) == 6 and lines[-1] == "run completed"
    for row, line in zip(rows, lines, strict=False):
        assert line.startswith(f"epoch {row['epoch']} {row['split']}: loss={row['loss']:.3g} ")
    assert len(lines) == len(rows) + 1
    assert (run_dir / "metrics.csv").is_file()  # dlrun's own beside it


MISTAKES = {  # (entry point, module) -> the one line every command answers
    ("lines = dlrun_lines", "import nothing_of_that_name\n"): "entry point lines = dlrun_lines "
    "(dlrun-lines): cannot be imported: ModuleNotFoundError: No module named "
    "'nothing_of_that_name'",
    ("lines = dlrun_lines", '"""No logger here."""\n'): "entry point lines = dlrun_lines "
    "(dlrun-lines): expected one subclass of dlrun.tracking.loggers.Logger, found 0 (name it "
    "with LOGGER = ...)",
    ("rows = dlrun_lines", None): "entry point rows = dlrun_lines (dlrun-lines): the entry point "
    "is named rows but its logger is named lines (its name): name the entry point lines",
    ("csv = dlrun_lines", _block("python").replace('"lines"', '"csv"')): "entry point "
    "csv = dlrun_lines (dlrun-lines): logger name csv is taken by entry point csv = "
    "dlrun.tracking.csv_logger (dlrun)",
}


@pytest.mark.parametrize(
    ("entry", "said"), MISTAKES.items(), ids=["import", "no-class", "misnamed", "taken"]
)
def test_a_broken_logger_is_one_line(tmp_path: Path, entry: tuple, said: str) -> None:
    _install(tmp_path / "site", *entry)
    r = dlrun(tmp_path / "site", tmp_path, "--cfg", "job")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"dlrun: error: {said}"]


def test_a_logger_without_the_module_it_needs_is_refused_when_chosen(tmp_path: Path) -> None:
    module = _block("python").replace(
        "    settings = LinesConfig\n", '    settings = LinesConfig\n    needs = "no_such_module"\n'
    )
    _install(tmp_path / "site", "lines = dlrun_lines", module)
    assert dlrun(tmp_path / "site", tmp_path, "--cfg", "job").returncode == 0  # not chosen
    r = dlrun(tmp_path / "site", tmp_path, "logger=[jsonl,lines]")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "dlrun: error: logger=lines needs the no_such_module package, which is not installed: "
        "pip install no_such_module"
    ]
