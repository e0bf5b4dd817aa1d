"""request_parsing.read_form parses multipart bodies itself (python-multipart's parser, run on a
preprocessing thread), where a FastAPI route would await Starlette's Request.form() on the event
loop. These tests hold it to Starlette's own parser: the same bodies give the same `image` file,
and the same bodies are refused with the same 400 and message. A Starlette upgrade that changes
its limits or messages fails here, not in a user's hands."""

import asyncio

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'mnist-keras3[serve]')")
from starlette.exceptions import HTTPException  # noqa: E402  (FastAPI's is a subclass)
from starlette.requests import Request  # noqa: E402

from mnist_keras3.request_parsing import read_form  # noqa: E402

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # opaque bytes: only the parse is under test
LIMITS = {"max_files": 1, "max_fields": 10, "max_part_size": 1024 * 1024}  # read_form's defaults


def part(name, data, filename=None, headers=()):
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    lines = [f"Content-Disposition: {disposition}".encode(), *(h.encode() for h in headers)]
    if filename is not None:
        lines.append(b"Content-Type: image/png")
    return b"--" + BOUNDARY.encode() + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + data + b"\r\n"


def body(*parts):
    return b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"


def starlette_form(raw, content_type):
    """What Starlette's Request.form() makes of the body: ("ok", image bytes or None, filename) or
    ("error", status, message)."""
    async def run():
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/api/predict", "headers":
                 [(b"content-type", content_type.encode("latin-1"))], "app": object()}
        request = Request(scope, receive)
        try:
            form = await request.form(**LIMITS)
        except HTTPException as e:
            return "error", e.status_code, e.detail
        image = form.get("image")
        if image is None or isinstance(image, str):
            return "ok", None, None
        return "ok", await image.read(), image.filename
    return asyncio.run(run())


def ours(raw, content_type):
    try:
        data, filename = read_form(raw, content_type)
    except HTTPException as e:
        if e.status_code == 422:  # no `image` file in a well-formed form: Starlette's form has none
            return "ok", None, None
        return "error", e.status_code, e.detail
    return "ok", data, filename


CASES = {
    "one image": (body(part("image", PNG, "digit.png")), CONTENT_TYPE),
    "image among fields": (body(part("note", b"hello"), part("image", PNG, "d.png"), part("x", b"1")), CONTENT_TYPE),
    "non-ascii file name": (body(part("image", PNG, "zahl-\u00fc.png".encode().decode("latin-1"))), CONTENT_TYPE),
    "latin-1 charset": (body(part("image", PNG, "caf\xe9.png")), CONTENT_TYPE + "; charset=latin-1"),
    "quoted boundary": (body(part("image", PNG, "digit.png")), f'multipart/form-data; boundary="{BOUNDARY}"'),
    "empty file": (body(part("image", b"", "empty.png")), CONTENT_TYPE),
    "extra part headers": (body(part("image", PNG, "d.png", headers=("X-Thing: 1",))), CONTENT_TYPE),
    "image as a plain field": (body(part("image", b"not a file")), CONTENT_TYPE),
    "no image field": (body(part("picture", PNG, "digit.png")), CONTENT_TYPE),
    "empty form": (body(), CONTENT_TYPE),
    "no boundary": (body(part("image", PNG, "digit.png")), "multipart/form-data"),
    "part without a name": (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data\r\n\r\nx\r\n--"
                            + BOUNDARY.encode() + b"--\r\n", CONTENT_TYPE),
    "two files": (body(part("image", PNG, "a.png"), part("other", PNG, "b.png")), CONTENT_TYPE),
    "eleven fields": (body(*(part(f"f{i}", b"v") for i in range(11)), part("image", PNG, "d.png")), CONTENT_TYPE),
    "field over 1 MB": (body(part("note", b"x" * (1024 * 1024 + 1)), part("image", PNG, "d.png")), CONTENT_TYPE),
    "file over 1 MB (allowed)": (body(part("image", b"y" * (2 * 1024 * 1024), "big.png")), CONTENT_TYPE),
    "garbage after the boundary": (b"--" + BOUNDARY.encode() + b"junk\r\n\r\n", CONTENT_TYPE),
    "not multipart at all": (b"just some bytes", CONTENT_TYPE),
}


@pytest.mark.parametrize("case", CASES)
def test_read_form_matches_starlette(case):
    raw, content_type = CASES[case]
    expected = starlette_form(raw, content_type)
    assert ours(raw, content_type) == expected


def test_cases_cover_both_outcomes():
    # The comparison proves something only if both parsers accept some bodies and refuse others.
    outcomes = {starlette_form(*CASES[c])[0] for c in CASES}
    images = [c for c in CASES if starlette_form(*CASES[c])[:2] == ("ok", PNG)]
    assert outcomes == {"ok", "error"} and len(images) >= 4


def test_missing_image_is_a_422_that_names_the_fields():
    raw, content_type = CASES["no image field"]
    with pytest.raises(HTTPException) as e:
        read_form(raw, content_type)
    assert e.value.status_code == 422 and "picture" in e.value.detail and "image=@" in e.value.detail
