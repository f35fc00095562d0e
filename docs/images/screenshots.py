"""Make docs/images/*.png again: what a user sees in the MLflow UI and in TensorBoard.

    python docs/images/screenshots.py

It trains a small sweep and a run in a temporary directory (logger=[jsonl,mlflow,tensorboard]),
starts a real `mlflow server` and a real `tensorboard` on 127.0.0.1, and takes each page with
headless Chromium (Debian's `chromium` package: `apt-get install chromium`). Run it again when
a UI changes; it needs dlrun with its mlflow and tensorboard extras, and no network.

MLflow's runs table opens with a sweep's parent closed, and a URL cannot open it (a shared view,
``?viewStateShareKey=``, leaves out which rows are expanded), so that picture is taken through
Chromium's DevTools protocol on a pipe (``--remote-debugging-pipe``): the page is loaded, the
parent's expander clicked and the assistant panel closed, as a person would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs Debian's chromium package: apt-get install chromium")
    return browser


class Page:
    """One headless Chromium tab driven through the DevTools protocol on a pipe (fds 3 and 4,
    messages ending in NUL): no driver or websocket package needed."""

    def __init__(self, width: int, height: int) -> None:
        to_chromium, self._in = os.pipe()
        self._out, from_chromium = os.pipe()

        def fds() -> None:  # in the child: Chromium reads commands on 3, answers on 4
            a, b = os.dup(to_chromium), os.dup(from_chromium)
            os.dup2(a, 3)
            os.dup2(b, 4)

        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        command += ["--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen(
            command,
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chromium)
        os.close(from_chromium)
        self._buffer, self._id, self._session = b"", 0, None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._in, json.dumps(message).encode() + b"\0")
        while True:  # events come too: skip them up to the answer
            while b"\0" not in self._buffer:
                chunk = os.read(self._out, 1 << 16)
                if not chunk:
                    raise SystemExit("chromium exited")
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(line)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise SystemExit(f"chromium: {method}: {answer['error']}")
                return answer["result"]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout_s: float = 120) -> None:
        """Load ``url`` and wait until the JavaScript test ``ready`` holds."""
        self.call("Page.navigate", url=url)
        for _ in range(int(timeout_s * 2)):
            if self.js(ready):
                return
            time.sleep(0.5)
        raise SystemExit(f"{url} never showed {ready}")

    def save(self, name: str, height: int) -> None:
        clip = {"x": 0, "y": 0, "width": self.js("innerWidth"), "height": height, "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip)["data"]
        (HERE / f"{name}.png").write_bytes(base64.b64decode(data))
        print(f"docs/images/{name}.png")

    def close(self) -> None:
        os.close(self._in)
        self.proc.wait(timeout=30)
        os.close(self._out)


def mlflow_page(url: str, name: str, ready: str, click: str | None, height: int) -> None:
    """An MLflow page in its "Model training" view, without the assistant panel that a fresh
    browser opens; ``click``: the element clicked first (a JavaScript expression)."""
    page = Page(1600, 900)
    try:
        page.open(url, f"Boolean({click or ready})")
        time.sleep(2)
        if click:
            page.js(f"{click}.click()")
        page.js("document.querySelector('button[aria-label=Close]')?.click()")
        time.sleep(2)
        page.save(name, height)
    finally:
        page.close()


def runs_table(url: str, parent_name: str) -> None:
    """The runs table, the sweep's parent (``parent_name``) opened into its jobs."""
    expander = f"""[...document.querySelectorAll('[role=row]')]
        .find(r => r.innerText.includes({json.dumps(parent_name)}))
        ?.querySelector('[col-id="attributes.`Run Name`"] button')"""
    mlflow_page(url, "mlflow-runs", "", expander, 460)


def shoot(url: str, name: str, wait_ms: int = 20000) -> None:
    """One page as docs/images/<name>.png, after its scripts had ``wait_ms`` to draw it."""
    browser = chromium()
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
        parent = client.get_run(child.data.tags["mlflow.parentRunId"]).info.run_name
        with server(command, f"{mlflow_ui}/health", work):
            table = f"{mlflow_ui}/#/experiments/{experiment}/runs?workflowType=machine_learning"
            runs_table(table, parent)
            page = f"{mlflow_ui}/#/experiments/{experiment}/runs/{child.info.run_id}"
            ready = "document.body.innerText.includes('About this run')"
            mlflow_page(f"{page}?workflowType=machine_learning", "mlflow-run", ready, None, 900)
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
