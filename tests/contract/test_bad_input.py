"""Every kind of bad input in the README's table: exit code 2, one line on stderr naming the key
or file and what is expected, no traceback, and nothing already on disk changed."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrun.cli import main as cli
from dlrun.commands import evaluate as evaluation
from dlrun.commands import rerun
from dlrun.engine import checkpoint
from dlrun.errors import ConfigError
from dlrun.rundir.lock import NAME as LOCK
from dlrun.tasks.housing.task import FEATURES, TARGET
from tests.conftest import call_main, needs
from tests.engine.test_checkpoint import Payload
from tests.tasks.test_mnist import write_data_set

QUIET = ("trainer.plots=false", "trainer.progress=false")
ROOT = Path(__file__).resolve().parents[2]


def make_run(run_dir: Path, *args: str) -> Path:
    try:
        cli.main([*args, *QUIET, "trainer.epochs=0", f"hydra.run.dir={run_dir}"])
    except SystemExit as exc:
        assert exc.code == 0, f"setting up {args}: exit {exc.code}"
    return run_dir


def housing_csv(path: Path, header: str | None = None, cell: str = "1.5") -> Path:
    rows = [header or ",".join((*FEATURES, TARGET))]
    rows += [
        ",".join([cell if i == 3 and j == 2 else str(i + j) for j in range(9)]) for i in range(5)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files a user might point dlrun at by mistake, made once for every row."""
    w = tmp_path_factory.mktemp("world")
    sine = make_run(w / "sine-run", "task=sine-bp")
    fizz = make_run(w / "fizz-run", "task=fizzbuzz")
    small = make_run(w / "small-run", "task=sine-bp", "task.hidden=3")
    (w / "mine" / "task").mkdir(parents=True)  # the user's own configs (--config-dir)
    (w / "mine" / "task" / "sine-small.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /schema/task@task: sine-bp\n  - _self_\n"
    )
    make_run(w / "mine-run", "--config-dir", str(w / "mine"), "task=sine-small")
    damaged = make_run(w / "damaged-run", "task=sine-bp")
    rows = (damaged / "metrics.jsonl").read_text()
    (damaged / "metrics.jsonl").write_text('{"epoch": 0, "spl\n' + rows)  # a line cut short
    shutil.copy(sine / "checkpoints" / "last.pt", w / "sine.pt")
    shutil.copy(fizz / "checkpoints" / "last.pt", w / "fizz.pt")
    shutil.copy(small / "checkpoints" / "last.pt", w / "hidden3.pt")
    whole = (sine / "checkpoints" / "last.pt").read_bytes()
    (w / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (w / "notes.txt").write_text("not a checkpoint\n")
    (w / "pickle.pt").write_bytes(pickle.dumps({"model": {}}))
    torch.save(
        {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "model": Payload(w / "ran")},
        w / "evil.pt",
    )
    housing_csv(w / "good.csv")
    housing_csv(w / "columns.csv", header="a,b,c,d,e,f,g,h,i")
    housing_csv(w / "text.csv", cell="abc")
    housing_csv(w / "nan.csv", cell="nan")
    (w / "binary.csv").write_bytes(b"\xff\xfe\x00\x81" * 100)
    (w / "points-nan.csv").write_text("1,2\n3,nan\n5,6\n")
    np.save(w / "points-inf.npy", np.array([[1.0, 2.0], [np.inf, 0.0]]))
    housing_csv(w / "huge.csv", cell="1e39")  # finite, but inf in float32
    (w / "points-huge.csv").write_text("1,2\n3,1e20\n5,6\n")  # its square is inf in float32
    np.save(w / "points-huge.npy", np.array([[1.0, 2.0], [3.0, -1e20]]))
    np.save(w / "points-empty.npy", np.zeros((0, 2)))
    for name, record, text in [
        ("damaged-summary", "summary.json", "[1, 2]\n"),
        ("damaged-env", "env.json", '{"python": "3.1'),
        ("damaged-overrides", ".hydra/overrides.yaml", "- task=sine-bp\n- [oops\n"),
        ("env-of-another-shape", "env.json", '{"python": "3.12", "resumes": 5}'),
    ]:
        (make_run(w / name, "task=sine-bp") / record).write_text(text)
    flipped = make_run(w / "flipped-run", "task=sine-bp")
    last = flipped / "checkpoints" / "last.pt"
    weight = next(iter(checkpoint.load(last)["model"].values())).numpy().tobytes()
    raw = bytearray(last.read_bytes())
    raw[bytes(raw).find(weight[:16]) + 1] ^= 0x04  # one bit of a stored weight
    last.write_bytes(bytes(raw))
    try:
        cli.main(
            ["task=sine-bp", *QUIET, "trainer.epochs=2", f"hydra.run.dir={w}/flipped-best-run"]
        )
    except SystemExit as exc:
        assert exc.code == 0
    best = w / "flipped-best-run" / "checkpoints" / "best.pt"
    weight = next(iter(checkpoint.load(best)["model"].values())).numpy().tobytes()
    raw = bytearray(best.read_bytes())
    raw[bytes(raw).find(weight[:16]) + 1] ^= 0x04
    best.write_bytes(bytes(raw))
    (w / "a-directory").mkdir()
    raw = write_data_set(w / "mnist", n_train=30, n_test=9)
    idx = raw / "train-images-idx3-ubyte"
    idx.write_bytes(idx.read_bytes()[:-100])
    left = w / "left-of-a-run" / "checkpoints"  # what a run directory removed meanwhile leaves
    left.mkdir(parents=True)
    shutil.copy(sine / "checkpoints" / "last.pt", left / "last.pt")
    # task files beside the world, not in it: importing one writes its __pycache__/
    tasks = w.parent / "task-files"
    tasks.mkdir()
    wave = (ROOT / "examples" / "wave" / "wave.py").read_text()
    (tasks / "import-error.py").write_text("import no_such_module_for_dlrun\n")
    (tasks / "no-task.py").write_text(wave.replace("class Wave(Task)", "class Wave"))
    (tasks / "not-a-dataclass.py").write_text(wave.replace("@dataclass\n", ""))
    (tasks / "clash.py").write_text(wave.replace('"wave"', '"sine-bp"'))
    (tasks / "good.py").write_text(wave.replace('"wave"', '"wave-of-the-world"'))
    return w


@pytest.fixture(scope="module")
def busy(world: Path):
    """A run directory another live process writes (it holds the directory's lock)."""
    run = make_run(world / "busy-run", "task=sine-bp")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    yield holder
    holder.kill()
    holder.wait()


HOLD = """
import sys, time
from pathlib import Path
from dlrun.rundir import lock as dirlock
dirlock.acquire(Path(sys.argv[1]), command="dlrun task=sine-bp")
print("locked", flush=True)
time.sleep(600)
"""


def no_cuda(n: int = 1):
    return pytest.mark.skipif(torch.cuda.device_count() >= n, reason=f"{n} CUDA device(s) here")


# (arguments, what the line must name); {w} is the world directory
ROWS = [
    pytest.param(["task=nope"], ["task/nope", "available: fizzbuzz"], id="unknown task"),
    pytest.param(["optimizer=nope"], ["optimizer/nope", "available: adam"], id="unknown optimizer"),
    pytest.param(["device=tpu"], ["device=tpu", "expected one of auto, cpu"], id="unknown device"),
    pytest.param(
        ["hydra/launcher=nope"], ["hydra/launcher/nope", "available"], id="unknown launcher"
    ),
    pytest.param(["trainer.epochz=3"], ["trainer.epochz", "epochz"], id="misspelled key"),
    pytest.param(
        ["+trainer.fastest=true"], ["trainer.fastest", "no such key"], id="added unknown key"
    ),
    pytest.param(["trainer.epochs=abc"], ["trainer.epochs", "Integer"], id="wrong type"),
    pytest.param(["optimizer.lr=0"], ["optimizer.lr=0", "expected a finite number > 0"], id="lr 0"),
    pytest.param(["optimizer.lr=-1"], ["optimizer.lr=-1", "> 0"], id="lr negative"),
    pytest.param(["trainer.batch_size=0"], ["trainer.batch_size=0", ">= 1"], id="batch 0"),
    pytest.param(
        ["task=sine-bp", "trainer.batch_size=101"],
        ["trainer.batch_size=101", "the 100 training examples", "<= 100"],
        id="batch larger than the data",
    ),
    pytest.param(["trainer.epochs=-1"], ["trainer.epochs=-1", ">= 0"], id="epochs negative"),
    pytest.param(
        ["task=kmeans", "task.k=101"], ["task.k=101", "100 points", "task.k <= 100"], id="k > n"
    ),
    pytest.param(["task.hidden=0"], ["task.hidden=0", ">= 1"], id="hidden size 0"),
    pytest.param(
        ["device=cuda"],
        ["device=cuda", "CUDA is not available", "device=cpu"],
        id="cuda",
        marks=no_cuda(),
    ),
    pytest.param(["device=cuda:7"], ["device=cuda:7"], id="cuda:7", marks=no_cuda(8)),
    pytest.param(
        ["resume={w}/missing"], ["resume={w}/missing", "no such file"], id="resume missing"
    ),
    pytest.param(
        ["resume={w}/notes.txt"], ["{w}/notes.txt", "not a checkpoint"], id="resume text file"
    ),
    pytest.param(
        ["resume={w}/pickle.pt"], ["{w}/pickle.pt", "not a checkpoint"], id="resume plain pickle"
    ),
    pytest.param(
        ["task=sine-bp", "resume={w}/fizz.pt"],
        ["{w}/fizz.pt", "task fizzbuzz", "add task=fizzbuzz"],
        id="resume other task",
    ),
    pytest.param(
        ["task=fizzbuzz", "resume={w}/sine-run"],
        ["sine-run", "task sine-bp", "add task=sine-bp"],
        id="resume other task's run dir",
    ),
    pytest.param(
        ["task=sine-bp", "resume={w}/hidden3.pt"],
        [
            "{w}/hidden3.pt",
            "model differs",
            "0.weight (3, 1) vs (25, 1)",
            "2.weight (1, 3) vs (1, 25)",
        ],
        id="resume other model shape",
    ),
    pytest.param(
        ["task=sine-bp", "resume={w}/truncated.pt"],
        ["{w}/truncated.pt", "truncated"],
        id="resume truncated",
    ),
    pytest.param(
        ["task=sine-bp", "resume={w}/evil.pt"], ["{w}/evil.pt", "refused"], id="resume code payload"
    ),
    pytest.param(
        ["task=housing-regression", "data.path={w}/missing.csv"],
        ["data.path={w}/missing.csv", "no such file"],
        id="data.path missing",
    ),
    pytest.param(
        ["task=housing-regression", "data.path={w}/a-directory"],
        ["data.path={w}/a-directory", "is a directory"],
        id="data.path a directory",
    ),
    pytest.param(
        ["task=housing-regression", "data.path={w}/binary.csv"],
        ["data.path={w}/binary.csv", "cannot be read as CSV"],
        id="data.path unreadable",
    ),
    pytest.param(
        ["task=housing-regression", "data.path={w}/columns.csv"],
        ["data.path={w}/columns.csv", "missing column(s) MedInc", "expected a header"],
        id="data.path wrong columns",
    ),
    pytest.param(
        ["task=housing-regression", "data.path={w}/text.csv"],
        ["data.path={w}/text.csv", "line 5, column AveRooms", "'abc' is not a number"],
        id="data.path non-numeric",
    ),
    pytest.param(
        ["task=housing-regression", "data.path={w}/nan.csv"],
        ["data.path={w}/nan.csv", "line 5", "missing or infinite"],
        id="data.path NaN",
    ),
    pytest.param(
        ["task=kmeans", "data.path={w}/points-nan.csv"],
        ["data.path={w}/points-nan.csv", "line 2, column 2", "missing or infinite"],
        id="kmeans data.path NaN",
    ),
    pytest.param(
        ["task=kmeans", "data.path={w}/points-inf.npy"],
        ["data.path={w}/points-inf.npy", "element [1, 0]"],
        id="kmeans .npy inf",
    ),
    pytest.param(
        ["task=housing-regression", "data.path={w}/huge.csv"],
        ["data.path={w}/huge.csv", "line 5, column", "too large for the model's float32"],
        id="housing value beyond float32",
    ),
    pytest.param(
        ["task=kmeans", "task.k=2", "data.path={w}/points-huge.csv"],
        ["data.path={w}/points-huge.csv", "line 2, column 2", "1e+20 is too large", "<="],
        id="kmeans value whose square is beyond float32",
    ),
    pytest.param(
        ["task=kmeans", "task.k=2", "data.path={w}/points-huge.npy"],
        ["data.path={w}/points-huge.npy", "element [1, 1]", "too large"],
        id="kmeans .npy value beyond float32",
    ),
    pytest.param(
        ["task=kmeans", "data.path={w}/points-empty.npy"],
        ["data.path={w}/points-empty.npy", "expected at least one point"],
        id="kmeans empty .npy",
    ),
    pytest.param(
        ["resume={w}/damaged-summary"],
        ["{w}/damaged-summary/summary.json: damaged", "not an object", "delete it"],
        id="resume with a damaged summary.json",
    ),
    pytest.param(
        ["resume={w}/damaged-env"],
        ["{w}/damaged-env/env.json: damaged", "not JSON"],
        id="resume with a damaged env.json",
    ),
    pytest.param(
        ["resume={w}/env-of-another-shape"],
        ["{w}/env-of-another-shape/env.json: damaged", '"resumes" is not a list'],
        id="resume with an env.json of another shape",
    ),
    pytest.param(
        ["resume={w}/damaged-overrides"],
        ["{w}/damaged-overrides/.hydra/overrides.yaml: damaged", "not YAML"],
        id="resume with a damaged overrides.yaml",
    ),
    pytest.param(
        ["resume={w}/flipped-run"],
        ["{w}/flipped-run/checkpoints/last.pt: damaged", "checksum"],
        id="resume of a checkpoint with flipped bits",
    ),
    pytest.param(
        ["task=kmeans", "data.path={w}/points-nan.csv", "data.n=5"],
        ["data.n=5", "no data.n with data.path"],
        id="kmeans generator setting with data.path",
    ),
    pytest.param(
        ["task=mnist-mlp", "data.root={w}/mnist", "data.download=false"],
        ["{w}/mnist/MNIST/raw/train-images-idx3-ubyte", "truncated"],
        id="mnist truncated IDX",
    ),
    pytest.param(
        ["resume={w}/damaged-run"],
        ["{w}/damaged-run/metrics.jsonl", "line 1 is not a metrics row"],
        id="resume with a damaged metrics.jsonl",
    ),
    pytest.param(
        ["hydra.run.dir=/proc/dlrun-test"],
        ["/proc/dlrun-test", "hydra.run.dir"],
        id="run dir not writable",
    ),
    pytest.param(["--cfg", "jobs"], ["--cfg", "invalid choice: 'jobs'"], id="Hydra option"),
    pytest.param(
        ["scheduler=nope"], ["scheduler/nope", "available: cosine"], id="unknown scheduler"
    ),
    pytest.param(
        ["scheduler=step", "scheduler.gamma=0"], ["scheduler.gamma=0", "> 0"], id="gamma 0"
    ),
    pytest.param(
        ["scheduler=exponential", "scheduler.gamma=-0.5"],
        ["scheduler.gamma=-0.5", "> 0"],
        id="gamma negative",
    ),
    pytest.param(
        ["scheduler=multistep", "scheduler.milestones=[30,10]"],
        ["scheduler.milestones=[30, 10]", "increasing"],
        id="milestones not increasing",
    ),
    pytest.param(
        ["scheduler=cosine", "scheduler.warmup_epochs=5", "trainer.epochs=5"],
        ["scheduler.warmup_epochs=5", "fewer than trainer.epochs=5"],
        id="warmup not shorter than the run",
    ),
    pytest.param(
        ["scheduler=onecycle"], ["scheduler=onecycle", "scheduler.max_lr"], id="onecycle no max_lr"
    ),
    pytest.param(
        ["trainer.early_stopping.patience=-1"],
        ["trainer.early_stopping.patience=-1", ">= 0"],
        id="negative patience",
    ),
    pytest.param(
        ["trainer.grad_clip.max_norm=0"], ["trainer.grad_clip.max_norm=0", "> 0"], id="max_norm 0"
    ),
    pytest.param(["trainer.accumulate=0"], ["trainer.accumulate=0", ">= 1"], id="accumulate 0"),
    pytest.param(
        ["trainer.cuda_graph=maybe"], ["trainer.cuda_graph=maybe", "bool"], id="cuda_graph maybe"
    ),
    pytest.param(
        ["scheduler=plateau", "trainer.epochs=100", "trainer.validate_every=100"],
        ["scheduler=plateau", "trainer.validate_every=100", "trainer.validate_every < trainer"],
        id="plateau without validation",
    ),
    pytest.param(
        ["task=kmeans", "scheduler=cosine"],
        ["scheduler=cosine", "kmeans trains without an optimizer"],
        id="scheduler on a task without an optimizer",
    ),
    pytest.param(
        ["resume={w}/left-of-a-run"],
        [
            "resume={w}/left-of-a-run",
            "not a run directory",
            "{w}/left-of-a-run/checkpoints/last.pt",
        ],
        id="resume of a directory that is not a run",
    ),
    pytest.param(
        ["task=sine-bp", "resume={w}/busy-run"],
        ["{w}/busy-run is being written by pid", "dlrun task=sine-bp", "wait for it"],
        id="a second writer of a run directory",
    ),
    pytest.param(
        ["--cfg", "job", "-m", "task=sine-bp"],
        ["--multirun and --cfg cannot be combined"],
        id="two Hydra modes",
    ),
    pytest.param(
        ["logger=0"],
        ["Config group override must be a string or a list"],
        id="group given a number",
    ),
    pytest.param(
        ["+debug=nope"], ["debug/nope", "available: fast, overfit, profile"], id="debug preset"
    ),
    pytest.param(
        ["trainer.limit_batches=0"],
        ["trainer.limit_batches=0", ">= 1, or null for every batch"],
        id="limit_batches 0",
    ),
    pytest.param(
        ["trainer.overfit_batches=-1"],
        ["trainer.overfit_batches=-1", ">= 0 (0: off)"],
        id="overfit_batches negative",
    ),
    pytest.param(
        ["task={w}/../task-files/import-error.py"],
        ["import-error.py", "cannot be imported", "no_such_module_for_dlrun"],
        id="task file import error",
    ),
    pytest.param(
        ["task={w}/../task-files/no-task.py"], ["no-task.py", "no task class"], id="no task class"
    ),
    pytest.param(
        ["task={w}/../task-files/not-a-dataclass.py"],
        ["not-a-dataclass.py", "no task config", "dataclass"],
        id="task config not a dataclass",
    ),
    pytest.param(
        ["task={w}/../task-files/clash.py"],
        ["clash.py", "task name sine-bp is taken by entry point sine-bp"],
        id="task name taken",
    ),
    pytest.param(
        ["hydra/launcher=joblib", "task={w}/../task-files/good.py"],
        ["hydra/launcher=joblib", "good.py", "install it as a package"],
        id="task file with another launcher",
    ),
    pytest.param(
        ["logger=mlflow", "logger.mlflow.tracking_uri=nope://x"],
        ["logger.mlflow.tracking_uri=nope://x", "expected sqlite:///<file>, http(s)://"],
        id="not an MLflow store",
    ),
    pytest.param(
        ["logger=mlflow", "logger.mlflow.experiment= "],
        ["logger.mlflow.experiment=", "a non-empty name"],
        id="empty MLflow experiment",
    ),
    pytest.param(
        ["resume=latest"], ["resume=latest", "no run under", "outputs"], id="resume latest, no run"
    ),
    pytest.param(
        ["logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9"],
        ["logger.mlflow.tracking_uri=http://127.0.0.1:9 cannot be used", "does not answer"],
        id="MLflow server that does not answer",
        marks=needs("mlflow"),
    ),
    pytest.param(
        ["logger=mlflow", "logger.mlflow.tracking_uri=sqlite:///{w}/missing/mlflow.db"],
        ["mlflow.db cannot be used", "missing is not a directory", "a writable directory"],
        id="MLflow database in a missing directory",
        marks=needs("mlflow"),
    ),
]


def fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    """Every file's mtime and content, every directory's existence (the writer locks aside:
    each writer records itself in its directory's lock file)."""
    return {
        str(p.relative_to(root)): (
            (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            if p.is_file()
            else (0, "dir")
        )
        for p in sorted(root.rglob("*"))
        if p.name != LOCK
    }


@pytest.mark.parametrize(("args", "names"), ROWS)
def test_bad_input(
    dlrun, world: Path, busy, tmp_path: Path, args: list[str], names: list[str]
) -> None:
    args = [a.replace("{w}", str(world)) for a in args]
    before = fingerprint(world)
    logs = {log: log.read_text() for log in world.glob("*/dlrun.log")}

    flags = args[: next((i for i, a in enumerate(args) if "=" in a), len(args))]
    # Hydra's options first, as typed; its parser takes no options between two overrides
    r = dlrun(*flags, "trainer.epochs=1", *QUIET, *args[len(flags) :])

    assert r.code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("dlrun: error: ")
    for name in names:
        assert name.replace("{w}", str(world)) in lines[0], lines[0]
    assert "Traceback" not in r.out + r.err
    assert not (world / "ran").exists()  # no code from a checkpoint ran
    # nothing already on disk changed; a refused resume of a run directory adds one log line
    after = fingerprint(world)
    for log, log_before in logs.items():
        if log.read_text() != log_before:
            assert log.read_text().startswith(log_before)
            assert len(log.read_text()[len(log_before) :].strip().splitlines()) == 1
            name = str(log.relative_to(world))
            before.pop(name), after.pop(name)
    assert after == before
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "run0").exists()


def test_hydra_full_error_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="optimizer.lr"):
        cli.main(["optimizer.lr=-1"])


# the other commands that read a run: (command, arguments, what the line must name)
COMMAND_ROWS = [
    pytest.param(
        evaluation,
        ["{w}/a-directory"],
        ["{w}/a-directory", "no checkpoints/best.pt"],
        id="eval of a path with no checkpoint",
    ),
    pytest.param(
        evaluation,
        ["{w}/missing"],
        ["{w}/missing", "no such checkpoint file or run directory"],
        id="eval of a missing path",
    ),
    pytest.param(
        evaluation,
        ["{w}/flipped-best-run"],
        ["flipped-best-run/checkpoints/best.pt: damaged", "--checkpoint last"],
        id="eval of a damaged best.pt",
    ),
    pytest.param(
        evaluation, ["{w}/notes.txt"], ["{w}/notes.txt", "not a checkpoint"], id="eval of a text"
    ),
    pytest.param(
        evaluation,
        ["{w}/sine-run", "task=fizzbuzz"],
        ["sine-run/checkpoints/best.pt", "task sine-bp", "task fizzbuzz", "task=sine-bp"],
        id="eval of another task",
    ),
    pytest.param(
        evaluation,
        ["{w}/sine-run", "task.hidden=3"],
        ["sine-run/checkpoints/best.pt", "model differs", "0.weight (25, 1) vs (3, 1)"],
        id="eval of another model shape",
    ),
    pytest.param(
        evaluation,
        ["{w}/hidden3.pt", "task=sine-bp"],
        ["{w}/hidden3.pt", "model differs", "0.weight (3, 1) vs (25, 1)"],
        id="eval of a loose checkpoint of another shape",
    ),
    pytest.param(
        evaluation,
        ["{w}/sine-run", "trainer.epochz=1"],
        ["trainer.epochz", "TrainerConfig"],
        id="eval with an unknown key",
    ),
    pytest.param(
        evaluation,
        ["{w}/sine-run", "--checkpoint", "first"],
        ["--checkpoint", "invalid choice: 'first'"],
        id="eval --checkpoint neither best nor last",
    ),
    pytest.param(
        evaluation,
        ["{w}/mine-run"],
        ["task/sine-small", "--config-dir DIR"],
        id="eval of a run made with --config-dir, without it",
    ),
    pytest.param(evaluation, ["latest"], ["dlrun-eval latest", "no run under"], id="eval latest"),
    pytest.param(rerun, ["latest"], ["dlrun-rerun latest", "no run under"], id="rerun latest"),
]


@pytest.mark.parametrize(("command", "args", "names"), COMMAND_ROWS)
def test_bad_input_of_the_other_commands(
    world: Path, tmp_path: Path, monkeypatch, capsys, command, args: list[str], names: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no outputs/ here: `latest` finds no run
    before = fingerprint(world)

    code, out, err = call_main(command.main, capsys, *(a.replace("{w}", str(world)) for a in args))

    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{command.PROG}: error: ")
    for name in names:
        assert name.replace("{w}", str(world)) in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert fingerprint(world) == before
    assert list(tmp_path.iterdir()) == []
