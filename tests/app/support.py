"""Helpers for the app tests: a tiny model directory and an app server in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "qwen_vl" / "assets" / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def app_server(model_dir, *extra: str, log_dir=None, startup_s: float = 180):
    """Yield (url, process) of `python app.py --model DIR --port N ...`; stopped afterwards."""
    port = free_port()
    log_path = Path(log_dir or model_dir) / f"app-{port}.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py", "--model", str(model_dir), "--port", str(port), *extra],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/gradio_api/info", timeout=5):
                    break
            except OSError as err:
                if getattr(err, "code", None) in (401, 403):  # up, behind a login
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app did not start in {startup_s} s: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cli_answer(model_dir, media: str, question: str, max_new_tokens: int) -> str:
    """The CLI's greedy answer for the same input (the reference the app must match)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen_vl.cli",
            "ask",
            media,
            "-q",
            question,
            "--model",
            str(model_dir),
            "--max-new-tokens",
            str(max_new_tokens),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
