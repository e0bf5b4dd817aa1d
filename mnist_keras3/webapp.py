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
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

try:  # python-multipart, Starlette's multipart parser; named `multipart` before 0.0.13
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover
    from multipart.exceptions import FormParserError
    from multipart.multipart import MultipartParser, parse_options_header

from . import images, runs

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

    def run_jobs(self, jobs):
        """On the model thread: prepare the jobs not yet prepared, one model call for those that
        prepared, then each one's answer. -> [(True, answer) or (False, exception)] in order."""
        outcomes = [None] * len(jobs)
        ready = []
        for i, job in enumerate(jobs):
            if job.array is None:
                try:
                    job.prepare()
                except Exception as e:  # the request's own fault (a 4xx), or a bug (a 500)
                    outcomes[i] = (False, e)
                    continue
            ready.append(i)
        if ready:
            probs = self.run_batch(np.stack([jobs[i].array for i in ready]))
            self.batches[len(ready)] += 1
            for i, p in zip(ready, probs, strict=True):
                try:
                    outcomes[i] = (True, jobs[i].answer(p, len(ready)))
                except Exception as e:
                    outcomes[i] = (False, e)
        return outcomes

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
        return await self.submit(Job(array=image), was_preparing)

    async def submit(self, job, was_preparing=False):
        """A Job -> what its answer() returns, once its batch ran (its prepare() too, if its array
        is None: on the model thread, with the rest of the batch)."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done() or self.worker.get_loop() is not loop:
            # The first request on this event loop (a test client may bring a new one): its batcher.
            self.wake = asyncio.Event()
            self.worker = loop.create_task(self._batches())
        future = loop.create_future()
        self.queue.append((job, future))  # queued before it stops counting as preparing
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
            try:
                outcomes = await loop.run_in_executor(self.executor, self.run_jobs, [job for job, _ in taken])
            except Exception as e:  # a failed model call fails its requests (a 500), not the batcher
                for _, future in taken:
                    if not future.done():
                        future.set_exception(e)
                continue
            finally:
                if self.queue:
                    self.wake.set()  # requests that came in during the call: the next batch
            for (_, future), (ok, value) in zip(taken, outcomes, strict=True):
                if not future.done():  # a client that went away cancelled its future
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)


class Job:
    """One prediction through the Predictor: `array` (the model input) when prepared already, or
    None and prepare() sets it on the model thread; answer(probabilities, batch size) is what the
    caller gets back, also made on the model thread."""

    array = None

    def __init__(self, array=None):
        if array is not None:
            self.array = array

    def prepare(self):
        raise NotImplementedError

    def answer(self, probabilities, batch):
        return probabilities, batch


def model_info(model_path, model):
    """What /api/model and the page show: what is served, on what, and how well it tested."""
    from . import backends
    from .models import parameter_counts

    path = Path(model_path)
    info = {**backends.describe(), "model_file": str(path), "model_name": model.name,
            "parameters": parameter_counts(model)["total"], "run": None}
    unreadable = []  # a damaged metrics.json must not stop serving: it is reported instead
    metrics = runs.read_metrics(path.parent, errors=unreadable)
    if unreadable:
        info["run_error"] = unreadable[0]
    if metrics is not None:
        test = metrics.get("test") or {}
        info["run"] = {
            "folder": path.parent.name,
            "trained_under": metrics.get("backend"),
            "model": metrics.get("model"),
            "epochs": len((metrics.get("history") or {}).get("loss", [])) or None,
            "test_accuracy": test.get("accuracy"),
            "test_loss": test.get("loss"),
        }
    return info


NUMBERS = {int, float}  # what JSON numbers parse to (bool is not one, though a subclass of int)


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
    # The types of all 784 at once (a C loop): 10x faster than isinstance on each.
    if not set(map(type, pixels)) <= NUMBERS:
        raise HTTPException(422, "Expected numbers 0-255 as pixels. Received: a value that is not a number")
    try:
        a = np.asarray(pixels, dtype=np.float32)
    except OverflowError as e:  # an integer beyond any float
        raise HTTPException(422, "Expected pixel values in 0-255. Received: a huge number") from e
    low, high = a.min(), a.max()
    if not (low >= 0 and high <= 255):  # NaN fails both comparisons, so it lands here too
        raise HTTPException(422, f"Expected pixel values in 0-255. Received: min={low:g}, max={high:g}")
    return a.reshape(28, 28)


# "input" in answers: values in [0, 1] to 4 decimals, written through this table of their JSON
# (0, 0.0001, ..., 1.0), not json.dumps of each value (a quarter of the answer's cost).
DECIMALS = [json.dumps(i / 10000) for i in range(10001)]
DECIMALS_ARRAY = np.array(DECIMALS, dtype=object)  # looked up for a whole array at once: half the time


def json_4_decimals(array):
    """A float array (any shape) -> its JSON, nested lists of the values rounded to 4 decimals."""
    a = np.asarray(array, dtype=np.float64)
    q = np.rint(a * 10000)
    if q.size == 0 or not (q.min() >= 0 and q.max() <= 10000):  # outside [0, 1], or NaN
        return json.dumps(np.round(a, 4).tolist())

    def rows(x):
        if x and isinstance(x[0], list):
            return "[" + ",".join(map(rows, x)) + "]"
        return "[" + ",".join(x) + "]"
    return rows(DECIMALS_ARRAY[q.astype(np.intp)].tolist())


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


async def read_capped_body(scope, receive, limit):
    """An ASGI request's whole body, at most `limit` bytes: HTTPException 413 for a Content-Length
    over it (before any of the body is read) or a body that passes it (chunked ones too), 400 for a
    Content-Length that is not a number, ClientGone when the client disconnects first."""
    length = dict(scope["headers"]).get(b"content-length")
    if length is not None and not length.isdigit():
        raise HTTPException(400, "Expected a number as Content-Length.")
    too_large = (f"Expected an upload of at most {limit:,} bytes. "
                 "Send a smaller image (a digit needs little resolution).")
    if length is not None and int(length) > limit:
        raise HTTPException(413, too_large)
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > limit:
            raise HTTPException(413, too_large)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
        try:
            body = await read_capped_body(scope, receive, self.limit)
        except ClientGone:
            return
        except StarletteHTTPException as e:
            return await error_response(e.status_code, str(e.detail))(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server would
        return await self.app(scope, replay, send)


class Prediction(Job):
    """A POST /api/predict on its way through the Predictor: prepare() (images.py's preprocessing
    and the `input` echo's JSON) and answer() (the JSON body) run off the event loop: JSON pixels
    on the model thread with the rest of their batch, uploads on the preprocessing pool."""

    def __init__(self, served, kind, payload, name, started):
        self.served, self.kind, self.payload, self.name, self.started = served, kind, payload, name, started

    def prepare(self):
        array, self.inverted, self.notes = prepare(self.kind, self.payload, self.name, self.served["record"])
        self.payload = None  # the request body is not needed any more
        # The largest part of the answer: (H, W) grayscale, (H, W, 3) RGB.
        self.seen = json_4_decimals(array[..., 0] if array.shape[-1] == 1 else array)
        self.prepared = time.perf_counter()
        self.array = array

    def answer(self, probs, batch):
        served = self.served
        done = time.perf_counter()
        best = int(np.argmax(probs))
        answer = {
            **({"digit": best} if served["digits"] else {}),  # kept for MNIST models: clients read `digit`
            "class": best,
            "label": served["names"][best],
            "probability": round(float(probs[best]), 6),
            "probabilities": [round(p, 6) for p in probs.tolist()],
            "preprocessing": served["record"]["preprocessing"],
            "inverted": bool(self.inverted),
            "warnings": self.notes,
            # preprocess: from the request's start until its input was ready (for JSON pixels,
            # prepared with their batch, that includes waiting for the batch before); inference:
            # from then until the model's answer.
            "milliseconds": {"preprocess": round(1000 * (self.prepared - self.started), 2),
                             "inference": round(1000 * (done - self.prepared), 2)},
            "batch": batch,
            "backend": served["backend"],
        }
        # What the model saw, as `input`, spliced in already serialised; the rest through json.dumps,
        # not FastAPI's jsonable_encoder, which walks every one of the 784 values (0.6 ms a request).
        return (json.dumps(answer)[:-1] + ', "input": ' + self.seen + "}").encode()


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def error_body(status, message):
    """The one-line JSON of every error, as JSONResponse writes it."""
    return json.dumps({"error": message, "status": status}, ensure_ascii=False, separators=(",", ":")).encode()


class App:
    """The ASGI app `serve` runs: POST /api/predict, the hot path, goes straight to its handler, a
    plain ASGI function; the page, /api/health, /api/model and everything else to FastAPI.

    FastAPI's route for it cost a request more than the handler's own work: its middleware stack,
    routing, Request object, and the BodyLimit layer replaying the body (issue 16).
    """

    def __init__(self, api, predict):
        self.api, self.predict = api, predict
        self.state = api.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/api/predict":
            return await self.predict(scope, receive, send)
        return await self.api(scope, receive, send)


def create_app(model_path, max_upload_bytes=MAX_UPLOAD_BYTES, max_batch=32, batch_window_ms=2.0):
    """The ASGI app serving the model in `model_path` under the already-active backend; concurrent
    predictions share model calls of up to `max_batch` images (Predictor)."""
    from .loading import load_with_record

    model, record = load_with_record(model_path)
    predictor = Predictor(model, tuple(record["input_shape"]), max_batch=max_batch, window_ms=batch_window_ms)
    info = {**model_info(model_path, model), "max_upload_bytes": max_upload_bytes,
            "batching": {"max_batch": max_batch, "window_ms": batch_window_ms, "buckets": list(predictor.buckets)},
            **{k: record[k] for k in ("dataset", "class_names", "input_shape", "channels", "preprocessing")}}
    served = {"record": record, "digits": record["preprocessing"] == "mnist-digit", "names": record["class_names"],
              "backend": info["backend"]}
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and this app works offline.
    api = FastAPI(title="mnist-keras3", docs_url=None, redoc_url=None)
    api.state.info, api.state.predictor = info, predictor

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error_response(exc.status_code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def validation_error(request, exc):
        return error_response(422, "; ".join(str(e.get("msg")) for e in exc.errors()) or "invalid request")

    @api.exception_handler(Exception)
    async def unexpected(request, exc):  # a bug, not the client's fault: say so without a traceback
        return error_response(500, f"internal error ({type(exc).__name__}); the server keeps running")

    @api.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @api.get("/api/health")
    async def health():
        return {"status": "ok", "backend": info["backend"], "model_file": info["model_file"]}

    @api.get("/api/model")
    async def describe_model():
        return {**info, "batches": dict(predictor.batches)}

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    # Any other POST route gets the same cap on its body (POST /api/predict caps its own, below).
    api.add_middleware(BodyLimit, limit=max_upload_bytes)

    # Uploads are decoded and centred here, off the event loop: a photo takes milliseconds.
    # JSON pixels are parsed and prepared on the model thread, with their batch: one thread hop
    # for the batch, not two for each request.
    preparers = ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="prepare")
    api.state.preparers = preparers

    def prepare_upload(job, ctype, content_type):
        if ctype == "multipart/form-data":
            job.payload, job.name = read_form(job.payload, content_type)
        job.prepare()
        return job

    async def read_predict(scope, receive, started):
        """The request -> (status, body) of its answer; HTTPException for what the client got wrong."""
        body = await read_capped_body(scope, receive, max_upload_bytes)
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        content_type = content_type.decode("latin-1")
        ctype = content_type.split(";")[0].strip().lower()
        if ctype == "application/json":
            job = Prediction(served, "json", body, "pixels", started)  # prepared with its batch
        elif ctype == "multipart/form-data" or ctype.startswith("image/") or ctype == "application/octet-stream":
            job = await asyncio.get_running_loop().run_in_executor(
                preparers, prepare_upload, Prediction(served, "bytes", body, "upload", started), ctype, content_type)
        else:
            raise HTTPException(415, "Expected multipart/form-data with an `image` file, an image/* body, or "
                                     f"application/json pixels. Received: Content-Type {ctype or 'none'!r}")
        return 200, job

    async def predict(scope, receive, send):
        headers = [(b"content-type", b"application/json")]
        if scope["method"] != "POST":
            status, body = 405, error_body(405, "Method Not Allowed")
            headers.append((b"allow", b"POST"))
        else:
            predictor.preparing_started()
            preparing = True
            try:
                status, job = await read_predict(scope, receive, time.perf_counter())
                preparing = False  # submit() counts it out as it queues it
                body = await predictor.submit(job, was_preparing=True)
            except ClientGone:
                return
            except StarletteHTTPException as e:
                status, body = e.status_code, error_body(e.status_code, str(e.detail))
            except Exception as e:  # a bug, not the client's fault: say so without a traceback
                logging.getLogger("uvicorn.error").exception("POST /api/predict failed")
                status, body = 500, error_body(500, f"internal error ({type(e).__name__}); the server keeps running")
            finally:
                if preparing:
                    predictor.preparing_ended()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return App(api, predict)


def read_form(body, content_type, max_files=1, max_fields=10, max_part_size=1024 * 1024):
    """A multipart/form-data body -> (bytes, file name) of its `image` file; HTTPException otherwise.

    The parser, limits and messages are Starlette's Request.form() (python-multipart), run here in
    one go on the body already read: on a preprocessing thread, not on the event loop (Starlette's
    own parser is async over the request stream). tests/test_read_form.py holds it to Request.form():
    same file from the same bodies, same 400s and messages for the bad ones.
    """
    _, params = parse_options_header(content_type)
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "Missing boundary in multipart.")

    def decode(raw):
        try:
            return raw.decode(charset)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")

    form = {}  # name -> (filename or None, [data chunks]); the last of a name wins, as in Starlette
    part, counts, header = {}, {"files": 0, "fields": 0}, [b"", b""]

    def on_part_begin():
        part.clear()
        part.update(disposition=b"", data=[], size=0)

    def on_part_data(data, start, end):
        part["data"].append(data[start:end])
        part["size"] += end - start
        if part["filename"] is None and part["size"] > max_part_size:
            raise HTTPException(400, f"Part exceeded maximum size of {max_part_size // 1024}KB.")

    def on_part_end():
        form[part["name"]] = (part["filename"], part["data"])

    def on_header_field(data, start, end):
        header[0] += data[start:end]

    def on_header_value(data, start, end):
        header[1] += data[start:end]

    def on_header_end():
        if header[0].lower() == b"content-disposition":
            part["disposition"] = header[1]
        header[0] = header[1] = b""

    def on_headers_finished():
        _, options = parse_options_header(part["disposition"])
        if b"name" not in options:
            raise HTTPException(400, 'The Content-Disposition header field "name" must be provided.')
        part["name"] = decode(options[b"name"])
        if b"filename" in options:
            counts["files"] += 1
            if counts["files"] > max_files:
                raise HTTPException(400, f"Too many files. Maximum number of files is {max_files}.")
            part["filename"] = decode(options[b"filename"])
        else:
            counts["fields"] += 1
            if counts["fields"] > max_fields:
                raise HTTPException(400, f"Too many fields. Maximum number of fields is {max_fields}.")
            part["filename"] = None

    callbacks = {"on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
                 "on_header_field": on_header_field, "on_header_value": on_header_value,
                 "on_header_end": on_header_end, "on_headers_finished": on_headers_finished}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise HTTPException(400, "Invalid multipart data.") from e
    filename, data = form.get("image", (None, None))
    if filename is None:
        raise HTTPException(422, "Expected an image file in the multipart field `image` "
                                 "(curl -F image=@digit.png). Received: fields "
                                 f"{sorted(form) or 'none'}")
    return b"".join(data), filename or "upload"
