"""A task of one's own, without forking dlrun: an installed package with a `dlrun.tasks` entry
point (examples/digits), and a loose task file named on the command line. Each gets what a
tutorial gets (typed config, runs, resume, sweeps, report, rerun), and a broken one is one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlrun.commands import rerun
from dlrun.sweeps import report
from tests.conftest import call_main, needs, run_cli

ROOT = Path(__file__).resolve().parents[2]
QUIET = ("trainer.plots=false", "trainer.progress=false")

# the smallest complete task, the one docs/extending.md walks through
WAVE = ROOT / "examples" / "wave"
WAVE_PY = (WAVE / "wave.py").read_text()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project directory: a task file and its YAML beside it, nothing installed."""
    directory = tmp_path_factory.mktemp("project")
    for name in ("wave.py", "wave.yaml"):
        shutil.copy(WAVE / name, directory / name)
    return directory


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.endswith("time_s")} for x in lines]


def test_a_task_file_composes_typed_and_refuses_bad_values(dlrun, project: Path) -> None:
    r = dlrun("--cfg", "job", f"task={project}/wave.py")
    assert r.code == 0, r.err
    assert "hidden: 16" in r.out and "lr: 0.01" in r.out and "betas:" in r.out  # its YAML
    assert f"task_file: {project}/wave.py" in r.out
    r = dlrun(f"task={project}/wave.py", "task.hidden=0")
    assert r.code == 2 and "task.hidden=0 is not allowed: expected an integer >= 1" in r.err
    r = dlrun(f"task={project}/wave.py", "task.hiden=3")
    assert r.code == 2 and "task.hiden" in r.err and len(r.err.strip().splitlines()) == 1
    shown = run_cli("--help", f"task={project}/wave.py", cwd=project).stdout
    assert "wave" in shown.split("== Config groups")[1].split("\ntask:")[1].splitlines()[0]


def test_a_task_files_data_schema_is_typed_too(dlrun, tmp_path: Path) -> None:
    """DATA, a DataConfig subclass beside the config: its keys are data.*, typed."""
    source = WAVE_PY.replace('"wave"', '"wave-data"').replace(
        "class Wave(Task):",
        "@dataclass\nclass WaveData(DataConfig):\n    noise: float = 0.0\n\n\n"
        "DATA = WaveData\n\n\nclass Wave(Task):",
    )
    path = tmp_path / "wave_data.py"
    path.write_text(
        source.replace("import Task, TaskConfig", "import DataConfig, Task, TaskConfig")
    )
    r = dlrun("--cfg", "job", f"task={path}", "data.noise=0.5")
    assert r.code == 0, r.err
    assert "noise: 0.5" in r.out
    r = dlrun("--cfg", "job", f"task={path}", "data.noise=loud")
    assert r.code == 2 and "data.noise" in r.err
    r = dlrun("--cfg", "job", "task=sine-bp", "data.noise=0.5")  # other tasks refuse it
    assert r.code == 2 and "data.noise" in r.err


def test_a_task_file_trains_resumes_exactly_and_reruns(
    dlrun, project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    whole = dlrun(f"task={project}/wave.py", *QUIET, "trainer.epochs=60")
    assert whole.code == 0, whole.err
    mse = [m["mse"] for m in rows(whole.run_dir) if m["split"] == "val"]
    assert mse[-1] < 0.5 * mse[0]  # it learns

    half = dlrun(f"task={project}/wave.py", *QUIET, "trainer.epochs=40")
    assert half.code == 0, half.err
    # a fresh process elsewhere: the recorded overrides name the task file, and it loads again
    # once confirmed (a run directory alone never imports code)
    resumed = run_cli(
        f"resume={half.run_dir}", "trainer.epochs=60", "--trust-task-file", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert rows(half.run_dir) == rows(whole.run_dir)  # bit for bit as one uninterrupted run

    code, out, err = call_main(
        rerun.main,
        capsys,
        whole.run_dir,
        "--verify",
        "--trust-task-file",
        f"hydra.run.dir={tmp_path}/again",
    )
    assert code == 0, err
    assert "reproduced" in out


def test_a_task_file_sweeps_and_reports(dlrun, project: Path, tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sw"
    r = dlrun("-m", f"task={project}/wave.py", "seed=0,1", *QUIET, f"hydra.sweep.dir={sweep}")
    assert r.code == 0, r.err
    summaries = [json.loads((sweep / j / "summary.json").read_text()) for j in ("0", "1")]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert summaries[0]["final"]["mse"] != summaries[1]["final"]["mse"]  # two seeds, two runs
    code, out, err = call_main(report.main, capsys, sweep)
    assert code == 0, err
    words = " ".join(out.split())
    assert "2 runs in" in words and "(mse: lower is better)" in words and "completed" in words


def beside_configs(tmp_path: Path, header: bool = True) -> Path:
    """conf-mine/task/wave.py beside conf-mine/task/wave.yaml, the YAML as a tutorial's is."""
    task_dir = tmp_path / "conf-mine" / "task"
    task_dir.mkdir(parents=True)
    shutil.copy(WAVE / "wave.py", task_dir / "wave.py")
    body = (
        (WAVE / "wave.yaml")
        .read_text()
        .replace("defaults:\n", "defaults:\n  - /schema/task@task: wave\n")
    )
    (task_dir / "wave.yaml").write_text(("# @package _global_\n" if header else "") + body)
    return tmp_path / "conf-mine"


def test_a_task_beside_the_users_configs_runs_and_resumes_without_them(
    dlrun, tmp_path: Path
) -> None:
    conf = beside_configs(tmp_path)
    r = dlrun("--config-dir", str(conf), "--cfg", "job", "task=wave")
    assert r.code == 0, r.err
    assert "hidden: 16" in r.out and "lr: 0.01" in r.out  # its YAML, composed by Hydra
    r = dlrun("--config-dir", str(conf), "task=wave", "task.hidden=0")
    assert r.code == 2 and "task.hidden=0 is not allowed" in r.err
    half = dlrun("--config-dir", str(conf), "task=wave", *QUIET, "trainer.epochs=40")
    assert half.code == 0, half.err
    whole = dlrun("--config-dir", str(conf), "task=wave", *QUIET, "trainer.epochs=60")
    # resumed in a fresh process without --config-dir: the recorded task_file, confirmed
    resumed = run_cli(
        f"resume={half.run_dir}", "trainer.epochs=60", "--trust-task-file", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert rows(half.run_dir) == rows(whole.run_dir)
    shown = run_cli("--config-dir", str(conf), "--help", cwd=tmp_path).stdout
    assert "wave" in shown.split("== Config groups")[1].split("\ntask:")[1].splitlines()[0]


def test_a_task_yaml_beside_configs_must_say_its_package(dlrun, tmp_path: Path) -> None:
    conf = beside_configs(tmp_path, header=False)
    r = dlrun("--config-dir", str(conf), "--cfg", "job", "task=wave")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "wave.yaml: a task's YAML beside your configs" in r.err and "@package _global_" in r.err


EXTENDING = ROOT / "docs" / "extending.md"

COMPOSE_EACH = """
import shlex, sys
from dlrun.cli import main as cli
for line in sys.argv[1:]:
    words = shlex.split(line)[1:]
    if "-m" in words:  # --cfg job composes one job of a sweep: its first values
        words = [w.split(",")[0] for w in words if w != "-m"]
    args = words
    try:
        cli.main(["--cfg", "job", *args])
    except SystemExit as exc:
        assert not exc.code, f"{line}: exit {exc.code}"
    print("composed:", line)
"""


def docs_commands() -> list[str]:
    """The `dlrun ...` lines of docs/extending.md's shell blocks about tasks, comments dropped
    (its own-logger section's need that logger: tests/tracking/test_own_loggers.py runs them)."""
    tasks_part = EXTENDING.read_text().split("\n## Your own logger")[0]
    blocks = tasks_part.split("```bash\n")[1:]
    lines = [ln.split("#")[0].strip() for b in blocks for ln in b.split("```")[0].splitlines()]
    return [ln for ln in lines if ln.startswith("dlrun ")]


def test_the_docs_show_the_example_task_as_it_is() -> None:
    assert f"```python\n{WAVE_PY}```" in EXTENDING.read_text()


def copy_of_digits(tmp_path: Path) -> Path:
    """examples/digits, copied outside the repository (as a user's download would be)."""
    source = tmp_path / "digits-src"
    shutil.copytree(ROOT / "examples" / "digits", source, ignore=shutil.ignore_patterns("build"))
    return source


@pytest.mark.slow
@needs("setuptools")  # installed without build isolation: offline
def test_the_digits_package_installs_and_learns(tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--target", str(site), str(copy_of_digits(tmp_path))],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (site / "dlrun_digits" / "digits.yaml").is_file()  # its YAML ships as package data
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("HYDRA_FULL_ERROR", None)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlrun",
            "task=digits",
            "trainer.progress=false",
            "hydra.run.dir=run",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["task"] == "digits" and summary["status"] == "completed"
    assert summary["final"]["accuracy"] >= 0.95
    assert (elsewhere / "run" / "plots" / "curves.png").stat().st_size > 0
    r = subprocess.run(
        [sys.executable, "-m", "dlrun", "--help"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "digits" in r.stdout.split("== Config groups")[1].split("\ntask:")[1].splitlines()[0]
    # its hand-written twin (task.impl=scratch) has gradients that dlrun-gradcheck checks
    r = subprocess.run(
        [sys.executable, "-m", "dlrun.commands.gradcheck", "task=digits"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "all 4 parameters agree" in r.stdout, r.stdout + r.stderr
    # every command docs/extending.md shows composes, with the package installed as it says
    commands = docs_commands()
    assert any("task=digits" in c for c in commands) and any(".py" in c for c in commands)
    r = subprocess.run(
        [sys.executable, "-c", COMPOSE_EACH, *commands],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("composed: ") == len(commands)


BROKEN = {  # file content -> what the one line must say
    "import no_such_module_for_dlrun\n": "cannot be imported: ModuleNotFoundError",
    WAVE_PY.replace("class Wave(Task)", "class Wave"): "no task class",
    WAVE_PY.replace("@dataclass\n", "").replace("WaveConfig(TaskConfig)", "WaveConfig")
    + "CONFIG = WaveConfig\n": "CONFIG = WaveConfig is not a dataclass",
    WAVE_PY.replace('"wave"', '"fizzbuzz"'): "task name fizzbuzz is taken by entry point fizzbuzz",
}


@pytest.mark.parametrize(
    ("source", "said"), BROKEN.items(), ids=["import error", "no task", "not a dataclass", "clash"]
)
def test_a_broken_task_file_is_one_line(dlrun, tmp_path: Path, source: str, said: str) -> None:
    path = tmp_path / "mine.py"
    path.write_text(source)
    r = dlrun(f"task={path}", *QUIET)
    assert r.code == 2
    assert r.err.count("\n") == 1 and r.err.startswith(f"dlrun: error: task file {path}: ")
    assert said in r.err
    assert not (tmp_path / "run0").exists()


ENTRY_POINTS = {  # entry point -> the one line every command answers
    "oops = no_such_module_for_dlrun": "entry point oops = no_such_module_for_dlrun (broken-task): "
    "cannot be imported: ModuleNotFoundError: No module named 'no_such_module_for_dlrun'",
    "waves = wave": "entry point waves = wave (broken-task): the entry point is named waves but "
    "its task is named wave (CONFIG.name): name the entry point wave",
}


@pytest.mark.parametrize(("entry", "said"), ENTRY_POINTS.items(), ids=["import", "misnamed"])
def test_a_broken_entry_point_is_one_line(tmp_path: Path, entry: str, said: str) -> None:
    """An installed distribution whose entry point is wrong: every command says so, in one line."""
    site = tmp_path / "site"
    info = site / "broken_task-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-task\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dlrun.tasks]\n{entry}\n")
    shutil.copy(WAVE / "wave.py", site / "wave.py")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("HYDRA_FULL_ERROR", None)
    r = subprocess.run(
        [sys.executable, "-m", "dlrun", "--cfg", "job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"dlrun: error: {said}"]
