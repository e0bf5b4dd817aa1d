"""A real `python -m mnist_keras3.serve` process over HTTP, without a browser: health, JSON pixels,
a PNG upload, the --max-upload-mb cap, and concurrent requests."""

import io
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import BACKEND
from PIL import Image
from serving import ONCE, get_json, server, trained_model

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mnist-keras3[serve]')")
pytestmark = [pytest.mark.e2e, ONCE]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist_dir):
    return trained_model(tmp_path_factory, mnist_dir)


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    """One server for the module, with a 0.05 MB upload cap (MB of 1024 * 1024 bytes: 52,428 bytes)."""
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with server(model_path, log, "--max-upload-mb", "0.05") as (url, proc):
        yield url, proc, log


def post_bytes(url, data, ctype, timeout=30):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def png(array):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_health_pixels_and_a_png_upload_over_http(served, model_path, mnist):
    url, proc, _ = served
    assert get_json(f"{url}/api/health") == (200, {"status": "ok", "backend": BACKEND, "model_file": str(model_path)})
    (_, _), (x_test, y_test) = mnist
    answers, labels = [], []
    for i in range(10):
        code, by_json = get_json(f"{url}/api/predict", {"pixels": x_test[i].tolist()})
        assert code == 200, by_json
        code, by_png = post_bytes(f"{url}/api/predict", png(x_test[i]), "image/png")
        assert code == 200, by_png
        assert by_json["digit"] == int(np.argmax(by_json["probabilities"])) and len(by_json["probabilities"]) == 10
        assert sum(by_json["probabilities"]) == pytest.approx(1, abs=1e-4)
        np.testing.assert_allclose(by_json["probabilities"], by_png["probabilities"], atol=1e-5)
        assert by_json["backend"] == by_png["backend"] == BACKEND
        answers.append(by_png["digit"])
        labels.append(int(y_test[i]))
    # The session's model has about 0.9 test accuracy: the first ten test digits are mostly right.
    assert sum(a == b for a, b in zip(answers, labels, strict=True)) >= 7, (answers, labels)
    assert proc.poll() is None


def test_an_upload_over_max_upload_mb_is_a_413_json_error(served, mnist):
    url, proc, _ = served
    (_, _), (x_test, _) = mnist
    big = png(np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8))  # noise: ~90 KB
    assert len(big) > 52_428
    code, body = post_bytes(f"{url}/api/predict", big, "image/png")
    assert code == 413 and body["status"] == 413, body
    assert body["error"] == ("Expected an upload of at most 52,428 bytes. Send a smaller image (a digit needs "
                             "little resolution).")
    # The server carries on: a small request still gets its answer.
    code, body = post_bytes(f"{url}/api/predict", png(x_test[0]), "image/png")
    assert code == 200 and proc.poll() is None


def test_concurrent_requests_all_get_the_same_answer(served, mnist):
    url, _, _ = served
    (_, _), (x_test, _) = mnist
    inputs = [x_test[i] for i in (0, 1, 2, 3)]

    def ask(k):
        digit = inputs[k % len(inputs)]
        if k % 2:
            return k, *get_json(f"{url}/api/predict", {"pixels": digit.tolist()}, timeout=60)
        return k, *post_bytes(f"{url}/api/predict", png(digit), "image/png", timeout=60)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(ask, range(16)))
    assert all(code == 200 for _, code, _ in results), [body for _, code, body in results if code != 200]
    for j in range(len(inputs)):
        same = [body["probabilities"] for k, _, body in results if k % len(inputs) == j]
        assert len(same) == 4
        for other in same[1:]:
            np.testing.assert_allclose(other, same[0], atol=1e-5)
    # Different digits get different answers: the server did not mix requests up.
    firsts = [next(body["probabilities"] for k, _, body in results if k % len(inputs) == j) for j in range(4)]
    assert len({tuple(np.round(p, 3)) for p in firsts}) == 4


def test_ctrl_c_stops_the_server_cleanly(model_path, tmp_path):
    log = tmp_path / "serve.log"
    with server(model_path, log) as (url, proc):
        assert get_json(f"{url}/api/health")[0] == 200
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert "stopped" in log.read_text().splitlines() and "Traceback" not in log.read_text()
