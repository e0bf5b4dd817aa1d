"""Reading a web request into a model input: body size caps, multipart forms, JSON pixels, and the
image preprocessing of images.py with its errors as 4xx answers. Every failure a client can cause
is an HTTPException with a one-line message; error_body/error_response are the JSON of each.
"""

import json

import numpy as np
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

try:  # python-multipart, Starlette's multipart parser; named `multipart` before 0.0.13
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover
    from multipart.exceptions import FormParserError
    from multipart.multipart import MultipartParser, parse_options_header

from . import images

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo fits; the whole request body is capped at this


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
    # The types of all 784 at once (a C loop), not isinstance on each in Python.
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


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def error_body(status, message):
    """The one-line JSON of every error, as JSONResponse writes it."""
    return json.dumps({"error": message, "status": status}, ensure_ascii=False, separators=(",", ":")).encode()


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
