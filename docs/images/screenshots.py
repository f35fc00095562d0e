"""Make docs/images/*.png again: what a user sees in the MLflow UI and in TensorBoard.

    python docs/images/screenshots.py

It trains a small sweep and a run in a temporary directory (logger=[jsonl,mlflow,tensorboard]),
starts a real `mlflow server` and a real `tensorboard` on 127.0.0.1, and takes each page with
headless Chromium (Debian's `chromium` package: `apt-get install chromium`). Run it again when
a UI changes; it needs dlrun with its mlflow and tensorboard extras, and no network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
MLFLOW_PORT, TENSORBOARD_PORT = 5055, 6066
SIZE = "1400,900"


def dlrun(*args: str, cwd: Path) -> None:
    common = ("device=cpu", "trainer.progress=false", "logger=[jsonl,mlflow,tensorboard]")
    subprocess.run([sys.executable, "-m", "dlrun", *args, *common], cwd=cwd, check=True)


@contextlib.contextmanager
def server(command: list[str], url: str, cwd: Path) -> Iterator[None]:
    """A server started for the pictures, waited for, and stopped after them."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=2)
                break
            time.sleep(1)
        else:
            raise SystemExit(f"{command[0]} did not answer at {url}")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def shoot(url: str, name: str, wait_ms: int = 20000) -> None:
    """One page as docs/images/<name>.png, after its scripts had ``wait_ms`` to draw it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs Debian's chromium package: apt-get install chromium")
    out = HERE / f"{name}.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={SIZE}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=180,
    )
    print(f"{out.relative_to(HERE.parents[1])}: {url}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dlrun("-m", "task=sine-bp", "trainer.epochs=300", "optimizer.lr=0.1,0.3,1.0", cwd=work)
        dlrun("task=sine-bp", "trainer.epochs=300", "seed=1", cwd=work)
        from mlflow.tracking import MlflowClient

        store = f"sqlite:///{work / 'mlflow.db'}"
        client = MlflowClient(store)
        experiment = client.get_experiment_by_name("sine-bp").experiment_id
        runs = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
        child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
        mlflow_ui = f"http://127.0.0.1:{MLFLOW_PORT}"
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
        command += ["--host", "127.0.0.1", "--port", str(MLFLOW_PORT)]
        with server(command, f"{mlflow_ui}/health", work):
            shoot(f"{mlflow_ui}/#/experiments/{experiment}/runs/{child.info.run_id}", "mlflow-run")
        board = f"http://127.0.0.1:{TENSORBOARD_PORT}"
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(work)]
        command += ["--host", "127.0.0.1", "--port", str(TENSORBOARD_PORT)]
        with server(command, board, work):
            shoot(f"{board}/#timeseries", "tensorboard-scalars")
            shoot(f"{board}/#hparams", "tensorboard-hparams")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_TRACKING_URI", "")  # the working directory's store
    os.environ.pop("MLFLOW_TRACKING_URI")
    main()
