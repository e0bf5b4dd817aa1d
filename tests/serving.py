"""Helpers for the web app's tests: one trained model per session, a real server, a browser."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import BACKEND, train_once

# The server process's own tests (HTTP, limits, batching, shutdown, load): one env runs them.
ONCE = pytest.mark.once(reason="the server's HTTP layer, upload limits, batching and shutdown are the same under "
                               "every backend (each backend's inference: tests/test_serve_api.py, every env)")

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def trained_model(tmp_path_factory, mnist_dir):
    """model.keras of the session's one short run of the train CLI (conftest.train_once: 300 steps
    of 64, about 0.9 test accuracy), shared by the API, server and browser tests and the tools' tests."""
    return train_once(tmp_path_factory, mnist_dir) / "model.keras"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, payload=None, timeout=10):
    """GET (or POST a JSON payload) -> (status, parsed body)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextmanager
def server(model, log_path, *args, startup_s=180):
    """`python -m mnist_keras3.serve model --port P` in a subprocess, as a user starts it; yields
    (base URL, process) once /api/health answers, and stops it with Ctrl-C (SIGINT) at the end."""
    port = free_port()
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mnist_keras3.serve", str(model), "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + startup_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}:\n{Path(log_path).read_text()[-3000:]}")
            try:
                if get_json(f"{url}/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"serve did not answer within {startup_s} s:\n{Path(log_path).read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def in_ci():
    """CI=true (or any value but empty, 0, false): a missing browser fails the run there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def chromium_or_skip():
    """(sync_playwright, path of a system Chromium), or skip the test saying what is missing.
    Under CI (CI=true) a missing browser is a failure, not a skip: .ci/run installs Chromium and
    tox installs playwright, so CI never passes without having run the page in a browser."""
    path = os.environ.get("MNIST_KERAS3_CHROMIUM") or next(
        (p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
         if p and Path(p).is_file()), None)
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Python package playwright is not installed (pip install playwright)"
    if path is None or not Path(path).is_file():
        missing = (f"MNIST_KERAS3_CHROMIUM={path} is not a file" if path
                   else "no Chromium found (apt-get install chromium, or set MNIST_KERAS3_CHROMIUM)")
        reason = (reason + "; " if reason else "") + missing
    if reason and in_ci():
        pytest.fail(f"CI={os.environ['CI']} and no headless browser: {reason}. CI must run the browser test "
                    "(.ci/run installs chromium; tox installs playwright).", pytrace=False)
    if reason:
        print(f"\nSKIPPED browser test: {reason}", file=sys.stderr)  # visible even without -ra
        pytest.skip(f"no headless browser here: {reason}")
    return sync_playwright, path


def ink_runs(digit, threshold):
    """uint8 (28, 28) digit -> horizontal strokes [(row, first col, last col)] over its ink."""
    strokes = []
    for r in range(28):
        on = digit[r] >= threshold
        c = 0
        while c < 28:
            if on[c]:
                start = c
                while c + 1 < 28 and on[c + 1]:
                    c += 1
                strokes.append((r, start, c))
            c += 1
    return strokes
