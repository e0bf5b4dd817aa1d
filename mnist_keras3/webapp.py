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

The app is here; reading a request into a model input (body caps, forms, JSON pixels) is
request_parsing.py, and the dynamic batching of model calls is batching.py.
"""

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import runs
from .batching import Job, Predictor
from .request_parsing import (
    MAX_UPLOAD_BYTES,
    BodyLimit,
    ClientGone,
    error_body,
    error_response,
    prepare,
    read_capped_body,
    read_form,
)

STATIC = Path(__file__).with_name("static")


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
        # not FastAPI's jsonable_encoder, which walks every one of the 784 values.
        return (json.dumps(answer)[:-1] + ', "input": ' + self.seen + "}").encode()


class App:
    """The ASGI app `serve` runs: POST /api/predict, the hot path, goes straight to its handler, a
    plain ASGI function; the page, /api/health, /api/model and everything else to FastAPI.

    FastAPI's route for it cost a request more than the handler's own work: its middleware stack,
    routing, Request object, and the BodyLimit layer replaying the body (docs/serving.md).
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


