"""The HTTP API of `python -m mnist_keras3.serve`, through FastAPI's TestClient, on a real trained
model: real MNIST digits, photo-like files, and every kind of bad request (4xx JSON, never a 500)."""

import io
import json
import shutil

import numpy as np
import pytest
from conftest import BACKEND, run_module
from photos import best_shift_correlation, write_photo
from PIL import Image
from serving import trained_model

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mnist-keras3[serve]')")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist_dir):
    return trained_model(tmp_path_factory, mnist_dir)


@pytest.fixture(scope="module")
def app(keras, model_path):
    from mnist_keras3 import backends, webapp

    undo = backends.active().module.configure_serving()  # as `serve` does; undone for the other tests
    yield webapp.create_app(model_path)
    undo()


@pytest.fixture(scope="module")
def client(app):
    # raise_server_exceptions=False: a bug answers 500 as a real server would, and the test sees it.
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def png(array):
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def upload(client, data, name="digit.png", ctype="image/png"):
    return client.post("/api/predict", files={"image": (name, data, ctype)})


def test_health_and_model_describe_what_is_served(client, model_path):
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    info = client.get("/api/model").json()
    metrics = json.loads(model_path.with_name("metrics.json").read_text())
    assert info["backend"] == BACKEND and info["model_name"] == "tutorial" and info["parameters"] == 1198
    assert info["run"]["test_accuracy"] == metrics["test"]["accuracy"]
    assert info["run"]["trained_under"] == BACKEND and info["run"]["epochs"] == 1


def test_the_page_and_its_assets_come_from_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
        assert asset in page.text and client.get(asset).status_code == 200
    # Offline: nothing is fetched from another host.
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_real_digits_uploaded_get_the_models_own_answer(app, client, mnist):
    """An MNIST test digit is already boxed and centred as MNIST-style preprocessing makes it, so
    the input the API reports is the digit itself (to a pixel of re-centring), and the
    probabilities are the model's own for that input; the API's answers match the true labels
    within 3 points of the model's accuracy on the raw arrays."""
    (_, _), (x_test, y_test) = mnist
    x, y = x_test[:200], y_test[:200]
    model = app.state.predictor.model
    raw_acc = float(np.mean(np.argmax(model.predict(x[..., None] / 255.0, verbose=0), axis=1) == y))
    answers = []
    for i in range(len(x)):
        data = png(x[i])
        r = upload(client, data)
        assert r.status_code == 200, r.text
        body = r.json()
        seen = np.asarray(body["input"], dtype=np.float32)  # (28, 28)
        assert seen.shape == (28, 28) and len(body["probabilities"]) == 10
        if i < 20:
            assert best_shift_correlation(seen, x[i] / 255.0) > 0.99
            direct = model.predict(seen[None, ..., None], verbose=0)[0]  # `input` has 4 decimals
            np.testing.assert_allclose(body["probabilities"], direct, atol=1e-4)
        assert body["digit"] == int(np.argmax(body["probabilities"])) and body["inverted"] is False
        answers.append(body["digit"])
    api_acc = float(np.mean(np.array(answers) == y))
    print(f"200 test digits: API accuracy {api_acc:.3f}, model on raw arrays {raw_acc:.3f}")
    assert api_acc >= raw_acc - 0.03


def test_concurrent_predictions_share_model_calls_and_each_gets_its_own_answer(app, mnist):
    """40 predictions queued together: a batch of 32 and one of 8 (padded to the bucket of 8, a
    shape compiled at start-up), each answer the model's own for its image, in order."""
    import asyncio

    predictor = app.state.predictor
    (_, _), (x_test, _) = mnist
    images = [(x_test[i] / 255.0).astype(np.float32)[..., None] for i in range(40)]
    direct = predictor.model.predict(np.stack(images), verbose=0)

    async def main():
        for _ in images:
            predictor.preparing_started()
        return await asyncio.gather(*(predictor.predict(image, was_preparing=True) for image in images))

    answers = asyncio.run(main())
    assert predictor.buckets == (1, 2, 4, 8, 16, 32)
    assert [batch for _, batch in answers] == [32] * 32 + [8] * 8
    np.testing.assert_allclose(np.stack([p for p, _ in answers]), direct, atol=1e-5)
    assert predictor.preparing == 0


def test_json_pixels_flat_or_28_rows_give_the_same_answer_as_the_png(client, mnist):
    (_, _), (x_test, y_test) = mnist
    digit = x_test[3]
    flat = client.post("/api/predict", json={"pixels": digit.ravel().tolist()})
    rows = client.post("/api/predict", json={"pixels": digit.tolist()})
    bare = client.post("/api/predict", json=(digit / 1.0).ravel().tolist())
    image = upload(client, png(digit))
    assert flat.status_code == rows.status_code == bare.status_code == image.status_code == 200
    assert flat.json()["probabilities"] == rows.json()["probabilities"] == bare.json()["probabilities"]
    np.testing.assert_allclose(flat.json()["probabilities"], image.json()["probabilities"], atol=1e-5)


def test_photo_like_files_are_inverted_centred_and_read(client, mnist, tmp_path):
    """Dark ink on tinted paper, RGB, off-centre, enlarged, as PNG, JPEG and BMP, and one posted
    as a raw image/jpeg body: the model sees MNIST's digit again and mostly names it."""
    (_, _), (x_test, y_test) = mnist
    rng = np.random.default_rng(7)
    agree = 0
    for i in range(30):
        path = write_photo(x_test[i], tmp_path / f"photo{i}", rng, i)
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size[0] > 28
        r = upload(client, path.read_bytes(), path.name, "application/octet-stream")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["inverted"] is True
        seen = np.asarray(body["input"])
        assert best_shift_correlation(x_test[i] / 255.0, seen) > 0.7
        original = client.post("/api/predict", json={"pixels": x_test[i].ravel().tolist()}).json()
        agree += body["digit"] == original["digit"]
    print(f"photo-like files: {agree}/30 get the same digit as their MNIST original")
    assert agree >= 27
    raw = client.post("/api/predict", content=path.read_bytes(), headers={"Content-Type": "image/bmp"})
    assert raw.status_code == 200 and raw.json()["digit"] == body["digit"]


def huge_png():
    buf = io.BytesIO()
    Image.new("L", (8000, 6000), 255).save(buf, "PNG")  # 48 MP of white: a small file, a huge bitmap
    return buf.getvalue()


def image_field(name, data, ctype="image/png"):
    return {"files": {"image": (name, data, ctype)}}


def json_body(raw):
    return {"content": raw, "headers": {"Content-Type": "application/json"}}


# case -> (request arguments, given a real MNIST digit; expected status; words in the error)
BAD = {
    "text file": (lambda d: image_field("notes.txt", b"hello, not an image", "text/plain"), 400, "not a PNG"),
    "empty file": (lambda d: image_field("empty.png", b""), 400, "empty"),
    "truncated PNG": (lambda d: image_field("cut.png", png(d)[:60]), 400, "damaged"),
    "blank image": (lambda d: image_field("white.png", png(np.full((50, 50), 250))), 422, "blank"),
    "48 MP bitmap": (lambda d: image_field("huge.png", huge_png()), 413, "too large"),
    "no image field": (lambda d: dict(data={"picture": "x"}, files={"other": ("a.png", png(d))}), 422, "field `image`"),
    "two files": (lambda d: dict(files=[("image", ("a.png", png(d))), ("image", ("b.png", png(d)))]), 400, "files"),
    "783 values": (lambda d: dict(json={"pixels": [0] * 783}), 422, "784"),
    "28 rows of 27": (lambda d: dict(json={"pixels": [[0] * 27] * 28}), 422, "28 rows"),
    "strings": (lambda d: dict(json={"pixels": ["1"] * 784}), 422, "not a number"),
    "booleans": (lambda d: dict(json={"pixels": [True] * 784}), 422, "not a number"),
    "values over 255": (lambda d: dict(json={"pixels": [300] * 784}), 422, "0-255"),
    "negative values": (lambda d: dict(json={"pixels": [-1] * 784}), 422, "0-255"),
    "NaN": (lambda d: json_body(b'{"pixels": [' + b"NaN," * 783 + b"0]}"), 422, "0-255"),
    "no pixels key": (lambda d: dict(json={"image": d.ravel().tolist()}), 422, "pixels"),
    "a number": (lambda d: dict(json=7), 422, "pixels"),
    "invalid JSON": (lambda d: json_body(b"{pixels:"), 400, "invalid JSON"),
    "plain text": (lambda d: dict(content=b"7", headers={"Content-Type": "text/plain"}), 415, "Content-Type"),
    "no content type": (lambda d: dict(content=b"7"), 415, "Content-Type"),
    "body over the limit": (lambda d: dict(content=b"\0" * (10 * 1024 * 1024 + 1),
                                           headers={"Content-Type": "image/png"}), 413, "at most"),
    "chunked body over the limit": (lambda d: dict(content=iter([b"\0" * (1024 * 1024)] * 11),
                                                   headers={"Content-Type": "image/png"}), 413, "at most"),
    "lying Content-Length": (lambda d: dict(content=b"x", headers={"Content-Type": "image/png",
                                                                   "Content-Length": "99999999999"}), 413, "at most"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_a_4xx_json_error_and_the_server_carries_on(client, mnist, case):
    make, status, words = BAD[case]
    r = client.post("/api/predict", **make(mnist[1][0][0]))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"], r.json()
    assert client.get("/api/health").status_code == 200


def test_a_model_without_its_run_folder_is_served_all_the_same(keras, model_path, tmp_path):
    from mnist_keras3 import webapp

    alone = tmp_path / "alone" / "model.keras"
    alone.parent.mkdir()
    shutil.copyfile(model_path, alone)
    assert webapp.create_app(alone).state.info["run"] is None  # no metrics.json: no test figures
    (alone.parent / "metrics.json").write_text("{not json")
    info = webapp.create_app(alone).state.info
    assert info["run"] is None and "unreadable" in info["run_error"]


def test_wrong_method_and_path_get_json_errors(client):
    assert client.get("/api/predict").status_code == 405 and "error" in client.get("/api/predict").json()
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and missing.json()["error"]
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would load a CDN script


@pytest.mark.e2e
def test_serve_cli_refuses_a_busy_port_and_a_missing_model_in_one_line(model_path, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = run_module("serve", model_path, "--port", port, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"error: Port {port} on 127.0.0.1 is already in use" in done.stderr
    done = run_module("serve", tmp_path / "nope.keras", "--port", 0, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1 and "Model file not found" in errors[0], done.stderr


def test_connections_accepted_by_serve_have_nagle_off():
    """serve.bind's socket says TCP in its proto, so asyncio sets TCP_NODELAY on every connection it
    accepts from it (it skips sockets made with proto 0): without it a keep-alive connection's
    response, written as headers then body, waits for the client's delayed ACK."""
    import asyncio
    import socket

    from mnist_keras3.serve import bind

    async def main():
        seen = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = bind("127.0.0.1", 0)
        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
            nodelay = await asyncio.wait_for(seen, 10)
            writer.close()
        return nodelay

    assert asyncio.run(main()) != 0
