"""What a user installs is what is tested: the wheel that `pip install .` builds holds every module
and config, and trains every tutorial in a Python that cannot see this checkout.

The test suite itself usually runs on an editable install, whose import hook serves any module
from the checkout, even one missing from the wheel. So the installed copy is run with `python -S`
(no site-packages hooks) and a path of its own: the wheel's files first, then the dependencies'
site-packages, never `src/`.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.conftest import needs
from tests.tasks.test_housing import linear_data, write_csv
from tests.tasks.test_mnist import write_data_set

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ("build", "dist", "*.egg-info", "__pycache__", ".*", "outputs", "multirun", "data")


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "-q"], check=True, capture_output=True, timeout=300
    )


# built without build isolation, so offline: with the setuptools installed here
pytestmark = needs("setuptools")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # from a copy of the source files alone: a stale build/ folder in the checkout would
    # otherwise lend the wheel modules that the package configuration no longer ships
    source = tmp_path_factory.mktemp("source") / "dlrun"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LOCAL))
    wheels = tmp_path_factory.mktemp("wheels")
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source))
    (built,) = wheels.glob("dlrun-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    return target


def test_the_wheel_holds_every_module_and_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    src = ROOT / "src"
    sources = [p.relative_to(src).as_posix() for p in src.rglob("*.py")]
    configs = [
        f"dlrun/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*")
    ]
    configs = [c for c in configs if c.endswith((".yaml", ".py"))]
    assert len(sources) > 50 and len(configs) > 40
    missing = sorted(set(sources + configs) - names)
    assert not missing, f"the wheel lacks {missing}"


# Run in the installed copy: each command through the console script's entry point as the wheel
# declares it, then a check that every dlrun module came from the installed files.
RUNNER = textwrap.dedent(
    """
    import json, sys
    from importlib.metadata import distribution
    target, commands = sys.argv[1], json.loads(sys.argv[2])
    scripts = {ep.name: ep for ep in distribution("dlrun").entry_points}
    codes = []
    for name, args in commands:
        try:
            scripts[name].load()(args)
            codes.append(0)
        except SystemExit as exc:
            codes.append(exc.code if isinstance(exc.code, int) else 1)
    strays = [
        m.__name__ for m in list(sys.modules.values())
        if m.__name__.split(".")[0] == "dlrun"
        and not str(getattr(m, "__file__", None) or target).startswith(target)
    ]
    print("CODES", json.dumps(codes), "STRAYS", json.dumps(strays))
    """
)


def run_installed(target: Path, cwd: Path, commands: list[tuple[str, list[str]]]):
    """Run console-script commands of the installed copy in one `python -S` process."""
    deps = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *dict.fromkeys(deps)])
    return subprocess.run(
        [sys.executable, "-S", "-c", RUNNER, str(target), json.dumps(commands)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_installed_wheel_trains_every_tutorial_from_anywhere(
    installed: Path, tmp_path: Path
) -> None:
    write_data_set(tmp_path / "mnist")
    csv = write_csv(tmp_path / "housing.csv", *linear_data(400))
    short = ["trainer.plots=false"]
    tutorials = {
        "fizzbuzz": ["trainer.epochs=30"],
        "sine-bp": ["trainer.epochs=30"],
        "mnist-mlp": ["trainer.epochs=1", f"data.root={tmp_path / 'mnist'}", "data.download=false"],
        "nw-kernel": ["trainer.epochs=2"],
        "housing-regression": ["trainer.epochs=2", f"data.path={csv}"],
        "kmeans": ["trainer.epochs=3"],
    }
    commands = [("dlrun", ["--help"])] + [
        ("dlrun", [f"task={task}", *args, *short, f"hydra.run.dir=runs/{task}"])
        for task, args in tutorials.items()
    ]
    r = run_installed(installed, tmp_path, commands)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("CODES"))
    codes, strays = (json.loads(part) for part in line[6:].split(" STRAYS "))
    assert codes == [0] * len(commands), r.stderr[-3000:]
    assert strays == [], f"served from outside the installed copy: {strays}"
    assert "task" in r.stdout and "optimizer" in r.stdout  # --help lists the config groups
    for task in tutorials:
        summary = json.loads((tmp_path / "runs" / task / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["task"] == task, summary
