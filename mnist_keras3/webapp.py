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

import asyncio
import collections
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import images

STATIC = Path(__file__).with_name("static")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo fits; the whole request body is capped at this
BATCH_SHAPE = (1, 28, 28, 1)  # an MNIST model's; each model's own comes from its record


class Predictor:
    """The model behind dynamic batching: predictions that arrive together go through one model call.

    Requests queue here (`await predictor.predict(image)`); one batch at a time runs on a model
    thread of its own, so the event loop (and GET /api/health) never waits on the model. A batch
    closes when it holds `max_batch` images, when no other request is still being read and
    preprocessed (waiting would gain nothing), or `window_ms` after its first image arrived,
    whichever comes first: TF Serving's batch_timeout_micros and Triton's max_queue_delay, made
    adaptive so that a lone client pays no window. A batch is padded with zeros to the next size in
    `buckets` (1, 2, 4, ... max_batch), so the model only ever sees those few shapes, each compiled
    (jax, tensorflow) or run once at start-up, never on a user's request.
    """

    def __init__(self, model, input_shape=BATCH_SHAPE[1:], max_batch=32, window_ms=2.0):
        if max_batch < 1 or window_ms < 0:
            raise ValueError(f"Expected max_batch >= 1 and window_ms >= 0. Received: max_batch={max_batch}, "
                             f"window_ms={window_ms}")
        self.model = model
        self.input_shape = tuple(input_shape)
        self.batch_shape = (1, *self.input_shape)
        self.max_batch, self.window = max_batch, window_ms / 1000
        self.buckets = tuple(sorted({min(2 ** k, max_batch) for k in range(max_batch.bit_length() + 1)}))
        self.lock = threading.Lock()  # the model thread and direct callers: one inference at a time
        # One thread: batches run one after another; a batch is the unit of parallel work.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.queue = collections.deque()  # (image, future) waiting for the next batch
        self.preparing = 0  # requests being read or preprocessed: they may join the next batch
        self.wake = None  # asyncio.Event of the running loop, made on first use
        self.worker = None
        self.batches = collections.Counter()  # batch size -> model calls, for /api/model and the load test
        for size in self.buckets:  # compile/trace every shape now, not on the first users
            self.run_batch(np.zeros((size, *self.input_shape), dtype=np.float32))

    def run_batch(self, images):
        """float32 (N, H, W, C) -> float64 (N, K) probabilities, through the smallest bucket >= N."""
        n = len(images)
        size = next(b for b in self.buckets if b >= n)
        batch = np.zeros((size, *self.input_shape), dtype=np.float32)
        batch[:n] = images
        with self.lock:
            # predict_on_batch: no per-call dataset/progress-bar machinery, unlike model.predict;
            # for batches of 1-32 it was as fast as model(x) or a hand-jitted call under jax and
            # tensorflow, and faster than model(x) under no_grad under torch (measured, issue 16).
            out = self.model.predict_on_batch(batch)  # (size, K)
        return np.asarray(out, dtype=np.float64)[:n]

    def probabilities(self, image):
        """float32 (H, W, C) -> float64 (K,) class probabilities, now, in the calling thread."""
        return self.run_batch(np.asarray(image, dtype=np.float32)[None])[0]

    def preparing_started(self):
        self.preparing += 1

    def preparing_ended(self):
        """A request being prepared has queued its image or failed: the batch may close sooner."""
        self.preparing -= 1
        if self.worker is not None and self.worker.get_loop() is asyncio.get_running_loop():
            self.wake.set()

    async def predict(self, image, was_preparing=False):
        """float32 (H, W, C) -> (float64 (K,) probabilities, size of the batch it went in), once its
        batch ran. was_preparing: the caller counted itself in with preparing_started()."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done() or self.worker.get_loop() is not loop:
            # The first request on this event loop (a test client may bring a new one): its batcher.
            self.wake = asyncio.Event()
            self.worker = loop.create_task(self._batches())
        future = loop.create_future()
        self.queue.append((image, future))  # queued before it stops counting as preparing
        if was_preparing:
            self.preparing -= 1
        self.wake.set()
        return await future

    async def _batches(self):
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self.queue:
                continue
            deadline = loop.time() + self.window
            while len(self.queue) < self.max_batch and self.preparing > 0:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.wake.wait(), left)
                except TimeoutError:
                    break
                self.wake.clear()
            taken = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
            images = np.stack([image for image, _ in taken])
            try:
                probs = await loop.run_in_executor(self.executor, self.run_batch, images)
            except Exception as e:  # a failed model call fails its requests (a 500), not the batcher
                for _, future in taken:
                    if not future.done():
                        future.set_exception(e)
                continue
            finally:
                if self.queue:
                    self.wake.set()  # requests that came in during the call: the next batch
            self.batches[len(taken)] += 1
            for (_, future), p in zip(taken, probs, strict=True):
                if not future.done():  # a client that went away cancelled its future
                    future.set_result((p, len(taken)))


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
    """("bytes", image bytes), ("json", a JSON body of pixels) or ("gray", (28, 28) array) ->
    (model input, inverted, notes).

    The preprocessing is images.py's, as for `predict` (the record's: MNIST-style for digit models,
    else resized to the model's input); its errors become 4xx errors here.
    """
    notes = []
    if kind == "json":
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPException(400, f"Expected a JSON body. Received: invalid JSON ({str(e)[:80]})") from e
        kind, payload = "gray", pixels_to_gray(body)
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


def create_app(model_path, max_upload_bytes=MAX_UPLOAD_BYTES, max_batch=32, batch_window_ms=2.0):
    """The FastAPI app serving the model in `model_path` under the already-active backend; concurrent
    predictions share model calls of up to `max_batch` images (Predictor)."""
    from .loading import load_with_record

    model, record = load_with_record(model_path)
    digits = record["preprocessing"] == "mnist-digit"
    names = record["class_names"]
    predictor = Predictor(model, tuple(record["input_shape"]), max_batch=max_batch, window_ms=batch_window_ms)
    info = {**model_info(model_path, model), "max_upload_bytes": max_upload_bytes,
            "batching": {"max_batch": max_batch, "window_ms": batch_window_ms, "buckets": list(predictor.buckets)},
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
        return {**info, "batches": dict(predictor.batches)}

    # Preprocessing runs here, off the event loop: decoding and centring a photo takes milliseconds.
    preparers = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="prepare")
    app.state.preparers = preparers

    def prepare_request(kind, payload, name):
        array, inverted, notes = prepare(kind, payload, name, record)
        # The largest part of the answer, written to JSON here too: (H, W) grayscale, (H, W, 3) RGB.
        seen = json.dumps(np.round(array[..., 0] if array.shape[-1] == 1 else array, 4).tolist())
        return array, inverted, notes, seen

    @app.post("/api/predict")
    async def predict(request: Request):
        started = time.perf_counter()
        predictor.preparing_started()
        try:
            kind, payload, name = await read_input(request)
            array, inverted, notes, seen = await asyncio.get_running_loop().run_in_executor(
                preparers, prepare_request, kind, payload, name)
        except BaseException:
            predictor.preparing_ended()
            raise
        prepared = time.perf_counter()
        probs, batch = await predictor.predict(array, was_preparing=True)  # (K,), with others'
        done = time.perf_counter()
        best = int(np.argmax(probs))
        answer = {
            **({"digit": best} if digits else {}),  # kept for MNIST models: clients read `digit`
            "class": best,
            "label": names[best],
            "probability": round(float(probs[best]), 6),
            "probabilities": [round(float(p), 6) for p in probs],
            "preprocessing": record["preprocessing"],
            "inverted": bool(inverted),
            "warnings": notes,
            # inference: from queued to answered, the batching window and the batch's model call.
            "milliseconds": {"preprocess": round(1000 * (prepared - started), 2),
                             "inference": round(1000 * (done - prepared), 2)},
            "batch": batch,
            "backend": info["backend"],
        }
        # What the model saw, as `input`, spliced in already serialised; the rest through json.dumps,
        # not FastAPI's jsonable_encoder, which walks every one of the 784 values (0.6 ms a request).
        body = json.dumps(answer)[:-1] + ', "input": ' + seen + "}"
        return Response(body, media_type="application/json")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=max_upload_bytes)
    return app


async def read_input(request):
    """The request's image: ("bytes", data, name) for an image file, ("json", body, name) for JSON."""
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
        return "json", await request.body(), "pixels"  # parsed off the event loop, in prepare()
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return "bytes", await request.body(), "upload"
    raise HTTPException(415, "Expected multipart/form-data with an `image` file, an image/* body, or "
                             f"application/json pixels. Received: Content-Type {ctype or 'none'!r}")
