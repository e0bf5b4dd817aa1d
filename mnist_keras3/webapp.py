"""The web app behind `python -m mnist_keras3.serve`: one drawing/upload page and a small JSON API.

    GET  /                 the drawing page (mnist_keras3/static/, no build step, no CDN)
    GET  /api/health       {"status": "ok", ...}
    GET  /api/model        backend, versions, model, its record (dataset, class_names, input_shape,
                           preprocessing) and the run's test figures from metrics.json
    POST /api/predict      an image (multipart field `image`, or a raw image/* body), or JSON
                           {"pixels": [784 values 0-255]} (flat or 28 rows of 28: a drawing)
                           -> {"label", "class", "probability", "probabilities" (K), "input" (what
                           the model saw), "preprocessing", ...; "digit" too for digit models}

Every image goes through images.py, the same preprocessing as `predict`: MNIST-style for digit
models, resized and colour-converted to the model's input for others (records.py). Every
failure a client can cause is a 4xx with {"error": "..."}; the server itself never goes down.
Import after the backend is chosen (create_app loads the model with keras).
"""

import json
import threading
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import images

STATIC = Path(__file__).with_name("static")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo fits; the whole request body is capped at this
BATCH_SHAPE = (1, 28, 28, 1)  # an MNIST model's; each model's own comes from its record


class Predictor:
    """The model behind a lock, always called on the same input shape (one batch of its record's
    input shape): jax and tensorflow compile predict once, at start-up."""

    def __init__(self, model, input_shape=BATCH_SHAPE[1:]):
        self.model = model
        self.batch_shape = (1, *input_shape)
        self.lock = threading.Lock()  # requests run on a thread pool; one inference at a time
        self.probabilities(np.zeros(self.batch_shape[1:], dtype=np.float32))  # compile/trace now, not on the first user

    def probabilities(self, image):
        """float32 (H, W, C) -> float64 (K,) class probabilities."""
        batch = np.zeros(self.batch_shape, dtype=np.float32)
        batch[0] = image
        with self.lock:
            # predict_on_batch: no per-call dataset/progress-bar machinery, unlike model.predict.
            out = self.model.predict_on_batch(batch)  # (1, K)
        return np.asarray(out, dtype=np.float64)[0]


def model_info(model_path, model):
    """What /api/model and the page show: what is served, on what, and how well it tested."""
    from . import backends
    from .models import parameter_counts

    path = Path(model_path)
    info = {**backends.describe(), "model_file": str(path), "model_name": model.name,
            "parameters": parameter_counts(model)["total"], "run": None}
    metrics_path = path.with_name("metrics.json")
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            test = metrics.get("test") or {}
            info["run"] = {
                "folder": path.parent.name,
                "trained_under": metrics.get("backend"),
                "model": metrics.get("model"),
                "epochs": len((metrics.get("history") or {}).get("loss", [])) or None,
                "test_accuracy": test.get("accuracy"),
                "test_loss": test.get("loss"),
            }
        except (OSError, ValueError, AttributeError) as e:  # a damaged metrics.json must not stop serving
            info["run_error"] = f"{metrics_path}: unreadable ({type(e).__name__})"
    return info


def pixels_to_gray(body):
    """A JSON body {"pixels": ...} -> float32 (28, 28) in [0, 255]; HTTPException(422) if malformed."""
    if isinstance(body, list):
        pixels = body  # a bare list is accepted too
    elif isinstance(body, dict) and "pixels" in body:
        pixels = body["pixels"]
    else:
        raise HTTPException(422, 'Expected a JSON object {"pixels": [784 numbers 0-255]}. '
                                 f"Received: {type(body).__name__} without a pixels field")
    if isinstance(pixels, list) and len(pixels) == 28 and all(isinstance(r, list) for r in pixels):
        if any(len(r) != 28 for r in pixels):
            raise HTTPException(422, "Expected 28 rows of 28 pixels. Received: rows of lengths "
                                     f"{sorted({len(r) for r in pixels})}")
        pixels = [v for row in pixels for v in row]
    if not isinstance(pixels, list) or len(pixels) != 784:
        got = f"{len(pixels)} values" if isinstance(pixels, list) else type(pixels).__name__
        raise HTTPException(422, f"Expected 784 pixel values (28x28, row by row). Received: {got}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pixels):
        raise HTTPException(422, "Expected numbers 0-255 as pixels. Received: a value that is not a number")
    a = np.asarray(pixels, dtype=np.float64)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 255:
        raise HTTPException(422, f"Expected pixel values in 0-255. Received: min={a.min():g}, max={a.max():g}")
    return a.astype(np.float32).reshape(28, 28)


def prepare(kind, payload, name, record=None):
    """("bytes", image bytes) or ("gray", (28, 28) array) -> (model input, inverted, notes).

    The preprocessing is images.py's, as for `predict` (the record's: MNIST-style for digit models,
    else resized to the model's input); its errors become 4xx errors here.
    """
    notes = []
    try:
        if kind == "bytes":
            item = images.prepare(payload, name, record)
            return item.array, item.inverted, item.warnings
        if record is not None and record.get("preprocessing") != "mnist-digit":
            return images.to_model_input(payload, record["input_shape"]), False, notes
        array, inverted = images.to_mnist(payload, name, notes)
        return array, inverted, notes
    except images.BlankImage as e:
        raise HTTPException(422, str(e)) from e
    except images.ImageError as e:
        text = str(e)
        raise HTTPException(413 if "too large" in text else 400, text) from e


def error_response(status, message):
    return JSONResponse({"error": message, "status": status}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any of it is parsed.

    Starlette has no body-size cap of its own. The body is read here (at most limit + 1 bytes) and
    replayed to the app, so a chunked upload without Content-Length is capped too.
    """

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_large = error_response(413, f"Expected an upload of at most {self.limit:,} bytes. "
                                        "Send a smaller image (a digit needs little resolution).")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and not length.isdigit():
            return await error_response(400, "Expected a number as Content-Length.")(scope, receive, send)
        if length is not None and int(length) > self.limit:
            return await too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await too_large(scope, receive, send)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server would
        return await self.app(scope, replay, send)


def create_app(model_path, max_upload_bytes=MAX_UPLOAD_BYTES):
    """The FastAPI app serving the model in `model_path` under the already-active backend."""
    from .loading import load_with_record

    model, record = load_with_record(model_path)
    digits = record["preprocessing"] == "mnist-digit"
    names = record["class_names"]
    predictor = Predictor(model, tuple(record["input_shape"]))
    info = {**model_info(model_path, model), "max_upload_bytes": max_upload_bytes,
            **{k: record[k] for k in ("dataset", "class_names", "input_shape", "channels", "preprocessing")}}
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and this app works offline.
    app = FastAPI(title="mnist-keras3", docs_url=None, redoc_url=None)
    app.state.info, app.state.predictor = info, predictor

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error_response(422, "; ".join(str(e.get("msg")) for e in exc.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug, not the client's fault: say so without a traceback
        return error_response(500, f"internal error ({type(exc).__name__}); the server keeps running")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health")
    async def health():
        return {"status": "ok", "backend": info["backend"], "model_file": info["model_file"]}

    @app.get("/api/model")
    async def describe_model():
        return info

    @app.post("/api/predict")
    async def predict(request: Request):
        started = time.perf_counter()
        kind, payload, name = await read_input(request)
        array, inverted, notes = await run_in_threadpool(prepare, kind, payload, name, record)
        prepared = time.perf_counter()
        probs = await run_in_threadpool(predictor.probabilities, array)  # (K,)
        done = time.perf_counter()
        best = int(np.argmax(probs))
        return {
            **({"digit": best} if digits else {}),  # kept for MNIST models: clients read `digit`
            "class": best,
            "label": names[best],
            "probability": round(float(probs[best]), 6),
            "probabilities": [round(float(p), 6) for p in probs],
            # What the model saw: (H, W) grayscale, (H, W, 3) RGB.
            "input": np.round(array[..., 0] if array.shape[-1] == 1 else array, 4).tolist(),
            "preprocessing": record["preprocessing"],
            "inverted": bool(inverted),
            "warnings": notes,
            "milliseconds": {"preprocess": round(1000 * (prepared - started), 2),
                             "inference": round(1000 * (done - prepared), 2)},
            "backend": info["backend"],
        }

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=max_upload_bytes)
    return app


async def read_input(request):
    """The request's image: ("bytes", data, name) for an image file, ("gray", array, name) for JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "Expected an image file in the multipart field `image` "
                                     "(curl -F image=@digit.png). Received: fields "
                                     f"{sorted(form.keys()) or 'none'}")
        return "bytes", await upload.read(), upload.filename or "upload"
    if ctype == "application/json":
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPException(400, f"Expected a JSON body. Received: invalid JSON ({str(e)[:80]})") from e
        return "gray", pixels_to_gray(body), "pixels"
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return "bytes", await request.body(), "upload"
    raise HTTPException(415, "Expected multipart/form-data with an `image` file, an image/* body, or "
                             f"application/json pixels. Received: Content-Type {ctype or 'none'!r}")
