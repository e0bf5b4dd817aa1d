"""The load test (scripts/loadtest.py) against a real serve process: a short load and a small soak
answer every request right with no leak, SIGTERM lets requests in flight finish, and the load
test's own checks and limits hold."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import BACKEND, load_script
from serving import ONCE, free_port, get_json, trained_model

from mnist_keras3.errors import UsageError

loadtest = load_script("loadtest")

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mnist-keras3[serve]')")
pytestmark = [pytest.mark.e2e, ONCE]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist_dir):
    return trained_model(tmp_path_factory, mnist_dir)


def test_a_short_load_and_a_small_soak_get_every_answer_right_without_a_leak(model_path, mnist_dir, tmp_path):
    """The load test starts `serve` itself (a 0.25 MB upload cap, so `oversized` is small), warms it
    up, sends 300 requests from 4 clients, and stops it with SIGTERM: exit 0. The soak mix: valid
    JSON and PNG, health checks, junk, bad JSON, short pixel lists, blank images, a wrong
    Content-Type, bodies over the cap; each bad one must be its 4xx with a one-line JSON error."""
    out = tmp_path / "load.json"
    common = ["--clients", "4", "--requests", "300", "--warmup", "60", "--seconds", "60", "--backend", BACKEND,
              "--serve-args", "--max-upload-mb 0.25", "--data-dir", str(mnist_dir), "--json", str(out)]
    assert loadtest.main([str(model_path), "--mix", "mixed", "--label", "load", *common]) == 0
    assert loadtest.main([str(model_path), "--mix", "soak", "--label", "soak", *common]) == 0
    runs = {r["label"]: r for r in json.loads(out.read_text())["runs"]}
    load, soak = runs["load"], runs["soak"]
    assert load["statuses"] == {"200": 300} and load["wrong"] == 0, load["problems"]
    assert soak["wrong"] == 0 and soak["requests"] == 300, soak["problems"]
    assert {"400", "413", "415", "422"} <= set(soak["statuses"]) and soak["statuses"]["200"] > 100
    for run in (load, soak):
        rss = run["server_rss_mb"]
        # After the warm-up a steady server holds its memory: 300 requests may not add more than
        # 10% (the soak's bound) plus 20 MB of allocator slack.
        assert rss["after"] <= 1.10 * rss["before"] + 20, rss
        assert run["server_exit"] == 0  # SIGTERM: a clean stop
        assert run["batching"]["max_batch"] == 32


def test_sigterm_lets_requests_in_flight_finish(model_path, mnist, tmp_path):
    """Four requests whose bodies are half sent when SIGTERM arrives still get their 200s; then the
    server exits 0, saying it stopped."""
    (_, _), (x_test, _) = mnist
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "mnist_keras3.serve", str(model_path), "--port", str(port)],
                                stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "KERAS_BACKEND": BACKEND})
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if get_json(f"http://127.0.0.1:{port}/api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        requests = [loadtest.request_bytes("127.0.0.1", "POST", "/api/predict", "application/json",
                                           json.dumps({"pixels": x_test[i].ravel().tolist()}).encode())
                    for i in range(4)]
        socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in requests]
        for s, req in zip(socks, requests, strict=True):
            s.sendall(req[:len(req) // 2])
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # waiting for the four
        answers = []
        for s, req in zip(socks, requests, strict=True):
            s.sendall(req[len(req) // 2:])
            data = b""
            while chunk := s.recv(65536):  # the server closes each connection after its answer
                data += chunk
            s.close()
            answers.append(data.split(b"\r\n", 1)[0])
        assert answers == [b"HTTP/1.1 200 OK"] * 4
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "stopped" in log.read_text().splitlines()
        with pytest.raises(OSError):  # no longer listening
            socket.create_connection(("127.0.0.1", port), timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_load_test_stays_on_this_machine_and_within_its_bounds():
    with pytest.raises(UsageError, match="loopback"):
        loadtest.main(["http://192.0.2.1:8000"])
    with pytest.raises(UsageError, match="loopback"):
        loadtest.main(["http://example.org/"])
    for bad in (["--clients", "0"], ["--requests", "0"], ["--seconds", "0"], ["--mix", "json=x"], ["--mix", "nope"]):
        with pytest.raises(UsageError, match="Expected"):
            loadtest.parse_args(["http://127.0.0.1:1", *bad])
    assert loadtest.parse_mix("json=3,png") == {"json": 3, "png": 1}
    assert loadtest.loopback_url("http://[::1]:8000") == ("::1", 8000)
