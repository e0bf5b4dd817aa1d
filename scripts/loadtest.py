#!/usr/bin/env python
"""Load test of `python -m mnist_keras3.serve`: concurrent keep-alive clients on the loopback address.

    python scripts/loadtest.py runs/<run>/model.keras --backend jax --clients 16 --requests 4000 --mix json
    python scripts/loadtest.py http://127.0.0.1:8000 --mix soak --requests 20000   # a server already running

Given a model file it starts a serve process on a free loopback port (and stops it with SIGTERM at
the end); given a URL it targets that server, which must be on a loopback address. It sends at most
--requests requests for at most --seconds seconds (after --warmup requests it does not count), and
prints requests/s, p50/p95/p99 latency per kind of request, statuses, errors, and the server's
RSS before and after (and its CPU time). Every answer is checked: a prediction must be a 200 with a
digit, a bad request the 4xx its kind calls for, with a one-line JSON {"error": ...}. Exit status 1
when any answer was wrong. --json FILE records the run in FILE (runs keyed by --label).

The clients are a few lines of HTTP/1.1 over asyncio streams, not an HTTP library: they must cost
the 2-core machine's CPU less than the server they measure. Standard library and numpy/Pillow only,
and of the package only mnist_keras3.errors: a tool beside the library, not part of it.
"""

import argparse
import asyncio
import io
import ipaddress
import json
import os
import platform
import random
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, installed or not
from mnist_keras3 import runs  # noqa: E402
from mnist_keras3.errors import UsageError, run_cli  # noqa: E402

# kind -> expected status. "oversized" is one byte over the server's --max-upload-mb.
EXPECTED = {"json": 200, "png": 200, "health": 200, "junk": 400, "bad-json": 400, "short-pixels": 422,
            "blank": 422, "wrong-type": 415, "oversized": 413}
MIXES = {
    "json": {"json": 1},
    "png": {"png": 1},
    "mixed": {"json": 1, "png": 1},
    # Soak: mostly valid predictions, a health check now and then, and every kind of bad request.
    "soak": {"json": 8, "png": 4, "health": 1, "junk": 1, "bad-json": 1, "short-pixels": 1, "blank": 1,
             "wrong-type": 1, "oversized": 1},
}
PHOTO_SIDE = 300  # photo-like uploads of about 300x300 px, as a phone picture shrunk for the web


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python scripts/loadtest.py", description=__doc__.split("\n")[0])
    p.add_argument("target", help="a model.keras to serve (a serve process is started), or the URL of a "
                                  "server on a loopback address, such as http://127.0.0.1:8000")
    p.add_argument("--backend", help="the backend of the started server (default: serve's own choice)")
    p.add_argument("--clients", type=int, default=16, help="concurrent keep-alive connections (default: 16)")
    p.add_argument("--requests", type=int, default=2000, help="requests counted, at most (default: 2000)")
    p.add_argument("--seconds", type=float, default=60.0, help="time counted, at most (default: 60)")
    p.add_argument("--warmup", type=int, help="requests sent first and not counted (default: a tenth, <= 500)")
    p.add_argument("--mix", default="mixed",
                   help=f"{', '.join(MIXES)}, or weights such as json=3,png=1,junk=1 (default: mixed)")
    p.add_argument("--serve-args", default="",
                   help="more arguments for the started server, e.g. \"--max-upload-mb 1 --max-batch 16\"")
    p.add_argument("--data-dir", help="MNIST, for real test digits (default: MNIST_KERAS3_DATA)")
    p.add_argument("--json", type=Path, help="record the run in this JSON file (keeps its other runs)")
    p.add_argument("--label", help="the run's key in --json (default: backend-mix-clients)")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 1024:
        raise UsageError(f"Expected --clients between 1 and 1024. Received: clients={args.clients}")
    if not 1 <= args.requests <= 1_000_000:
        raise UsageError(f"Expected --requests between 1 and 1,000,000. Received: requests={args.requests}")
    if not 0 < args.seconds <= 3600:
        raise UsageError(f"Expected --seconds between 0 and 3600. Received: seconds={args.seconds:g}")
    args.weights = parse_mix(args.mix)
    return args


def parse_mix(text):
    if text in MIXES:
        return MIXES[text]
    weights = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind not in EXPECTED or not re.fullmatch(r"\d+", weight or "1"):
            raise UsageError(f"Expected --mix {', '.join(MIXES)} or kind=weight,... with kinds "
                             f"{', '.join(EXPECTED)}. Received: mix={text!r}")
        weights[kind] = int(weight or 1)
    return weights


def loopback_url(url):
    """(host, port) of an http:// URL on a loopback address; UsageError otherwise."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise UsageError("Expected an http:// URL on a loopback address (127.0.0.1, ::1, localhost): the load "
                         f"test never leaves this machine. Received: target={url!r}")
    return host, parts.port or 80


# ---------------------------------------------------------------- requests


def photo_png(digit, rng, side=PHOTO_SIDE):
    """uint8 (28, 28) MNIST digit -> PNG bytes of a ~side x side photo-like RGB picture of it: dark
    ink on tinted paper, off-centre, uneven light, sensor noise (as tests/photos.py)."""
    from PIL import Image

    ink_side = int(side * rng.uniform(0.45, 0.7))
    ink = np.asarray(Image.fromarray(digit).resize((ink_side, ink_side), Image.Resampling.BILINEAR),
                     dtype=np.float32) / 255.0
    top, left = (int(m) for m in rng.integers(0, side - ink_side, size=2))
    rows = np.linspace(0, 1, side)[:, None]
    light = 1 + rng.uniform(-0.08, 0.08) * (rows - 0.5)  # (side, 1): a lighting gradient
    page = np.full((side, side), rng.uniform(175, 245), dtype=np.float32) * light
    region = page[top:top + ink_side, left:left + ink_side]
    page[top:top + ink_side, left:left + ink_side] = region * (1 - ink) + rng.uniform(10, 70) * ink
    page += rng.normal(0, 3, size=page.shape)
    rgb = np.clip(page[..., None] * rng.uniform(0.9, 1.0, size=3), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def multipart(field, filename, data, ctype):
    boundary = "----loadtest" + "".join(random.choices("0123456789abcdef", k=16))
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def request_bytes(host, method, path, ctype=None, body=b""):
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if method == "POST":
        head += [f"Content-Type: {ctype}"] if ctype else []
        head += [f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def build_requests(host, digits, max_upload_bytes, kinds, per_kind=8, seed=0):
    """kind -> a few ready request byte strings of that kind (sent round-robin)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    made = {}
    for kind in kinds:
        reqs = []
        for i in range(per_kind):
            digit = digits[(i * 7 + len(made)) % len(digits)]
            if kind == "json":
                reqs.append(request_bytes(host, "POST", "/api/predict", "application/json",
                                          json.dumps({"pixels": digit.ravel().tolist()}).encode()))
            elif kind == "png":
                reqs.append(request_bytes(host, "POST", "/api/predict",
                                          *multipart("image", f"photo{i}.png", photo_png(digit, rng), "image/png")))
            elif kind == "health":
                reqs.append(request_bytes(host, "GET", "/api/health"))
            elif kind == "junk":
                reqs.append(request_bytes(host, "POST", "/api/predict", *multipart(
                    "image", "junk.png", rng.integers(0, 256, 2000 + 500 * i, dtype=np.uint8).tobytes(), "image/png")))
            elif kind == "bad-json":
                reqs.append(request_bytes(host, "POST", "/api/predict", "application/json", b'{"pixels": [1, 2,'))
            elif kind == "short-pixels":
                reqs.append(request_bytes(host, "POST", "/api/predict", "application/json",
                                          json.dumps({"pixels": digit.ravel().tolist()[:783 - i]}).encode()))
            elif kind == "blank":
                buf = io.BytesIO()
                Image.new("L", (40 + 10 * i, 40 + 10 * i), 250).save(buf, "PNG")
                reqs.append(request_bytes(host, "POST", "/api/predict", *multipart("image", "white.png",
                                                                                   buf.getvalue(), "image/png")))
            elif kind == "wrong-type":
                reqs.append(request_bytes(host, "POST", "/api/predict", "text/plain", b"seven"))
            elif kind == "oversized":  # one byte over the server's limit, and a few more
                reqs.append(request_bytes(host, "POST", "/api/predict", "image/png",
                                          b"\x89PNG" + b"\0" * (max_upload_bytes - 3 + i)))
        made[kind] = reqs
    return made


def check(kind, status, body):
    """None if the answer is what `kind` calls for, else what is wrong (a few words)."""
    expected = EXPECTED[kind]
    if status != expected:
        return f"status {status}, expected {expected}"
    if kind in ("json", "png"):
        return None if b'"digit"' in body else "a 200 without a digit"
    if kind == "health":
        return None if b'"ok"' in body else "health not ok"
    if b"\n" in body.rstrip(b"\n"):
        return "error body of more than one line"
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return "error body is not JSON with an error"
    return None if isinstance(error, str) and error else "empty error"


# ---------------------------------------------------------------- clients


async def read_response(reader):
    """(status, body, keep-alive) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # no length: the body runs to the end of the connection
        body, headers["connection"] = await reader.read(), "close"
    return status, body, headers.get("connection", "").lower() != "close"


class Run:
    """The shared plan of one load test: which request comes next, and what came back."""

    def __init__(self, made, weights, total, seconds, seed=1):
        rng = random.Random(seed)
        kinds = [k for k, w in weights.items() for _ in range(w)]
        self.plan = [rng.choice(kinds) for _ in range(total)]
        self.made, self.next, self.deadline = made, 0, time.monotonic() + seconds
        self.results = []  # (kind, status, seconds, problem or None)

    def take(self):
        if self.next >= len(self.plan) or time.monotonic() > self.deadline:
            return None
        kind = self.plan[self.next]
        reqs = self.made[kind]
        self.next += 1
        return kind, reqs[self.next % len(reqs)]


async def client(host, port, run):
    reader = writer = None
    try:
        while (item := run.take()) is not None:
            kind, data = item
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
                writer.write(data)
                status, body, keep = await read_response(reader)
                problem = check(kind, status, body)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                status, problem, keep = "no answer", f"{type(e).__name__}: {str(e)[:60]}", False
            run.results.append((kind, status, time.perf_counter() - started, problem))
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def drive(host, port, run, clients):
    started = time.perf_counter()
    await asyncio.gather(*(client(host, port, run) for _ in range(clients)))
    return time.perf_counter() - started


# ---------------------------------------------------------------- the server process


def rss_mb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def listening_pid(port):
    """The pid of the process listening on a TCP port of this machine (Linux /proc), or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(host, port, path, timeout=5):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request_bytes(host, "GET", path).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def start_server(model, backend, serve_args, startup_s=180):
    """A `python -m mnist_keras3.serve` process on a free loopback port, once it answers: (proc, port, log)."""
    port = free_port()
    cmd = [sys.executable, "-m", "mnist_keras3.serve", str(model), "--port", str(port), *shlex.split(serve_args)]
    if backend:
        cmd += ["--backend", backend]
    log = open(os.devnull, "w")  # noqa: SIM115  (the process writes to it until it stops)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise UsageError(f"serve exited with {proc.returncode} before answering:\n" + "".join(lines[-20:]))
        lines.append(line)
        if line.startswith("open http://"):
            break
    else:
        proc.kill()
        raise UsageError(f"serve did not start within {startup_s} s:\n" + "".join(lines[-20:]))
    # Keep reading its output, so that a full pipe never stalls it.
    import threading

    threading.Thread(target=lambda: [log.write(x) for x in proc.stdout], daemon=True).start()
    return proc, port, "".join(lines)


def stop_server(proc, timeout=60):
    """SIGTERM, as a service manager stops it: the requests in flight finish, then it exits."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


# ---------------------------------------------------------------- report


def percentiles(seconds):
    if not seconds:
        return {"p50": None, "p95": None, "p99": None}
    a = np.asarray(seconds) * 1000
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 95, 99)}


def summarise(run, elapsed):
    results = run.results
    lat = [s for _, _, s, _ in results]
    by_kind = {}
    for kind in sorted({k for k, _, _, _ in results}):
        mine = [r for r in results if r[0] == kind]
        by_kind[kind] = {"requests": len(mine), **percentiles([s for _, _, s, _ in mine]),
                         "wrong": sum(p is not None for *_, p in mine)}
    statuses, problems = {}, {}
    for kind, status, _, problem in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if problem is not None:
            key = f"{kind}: {problem}"
            problems[key] = problems.get(key, 0) + 1
    return {"requests": len(results), "seconds": round(elapsed, 2),
            "requests_per_s": round(len(results) / elapsed, 1) if elapsed else None,
            "latency_ms": percentiles(lat), "by_kind": by_kind, "statuses": statuses,
            "wrong": sum(problems.values()), "problems": problems}


def main(argv=None):
    args = parse_args(argv)
    args.command = "python scripts/loadtest.py " + " ".join(
        shlex.quote(runs.relative_arg(str(a))) for a in (sys.argv[1:] if argv is None else argv))
    proc = None
    if args.target.startswith(("http://", "https://")):
        host, port = loopback_url(args.target)
        pid = listening_pid(port)
    else:
        if not Path(args.target).is_file():
            raise UsageError(f"Expected a model file or a loopback URL. Received: target={args.target!r}")
        proc, port, _ = start_server(args.target, args.backend, args.serve_args)
        host, pid = "127.0.0.1", proc.pid
    try:
        result = measure(args, host, port, pid)
    finally:
        exit_code = stop_server(proc) if proc is not None else None
    if proc is not None:
        result["server_exit"] = exit_code
    print_summary(result)
    if args.json:
        record(args.json, result)
        print(f"recorded as {result['label']!r} in {args.json}")
    return 0 if result["wrong"] == 0 and result["requests"] > 0 else 1


def measure(args, host, port, pid):
    from mnist_keras3.data import mnist

    status, model = get(host, port, "/api/model")
    if status != 200:
        raise UsageError(f"Expected a mnist_keras3 serve at {host}:{port}. Received: GET /api/model -> {status}")
    data_dir = args.data_dir or os.environ.get(mnist.ENV_DATA)
    if not data_dir:
        raise UsageError("Expected MNIST for real test digits: pass --data-dir or set MNIST_KERAS3_DATA.")
    (_, _), (x_test, _) = mnist.read_folder(data_dir)
    made = build_requests(host, x_test[:64], model["max_upload_bytes"], args.weights)
    warmup = min(500, args.requests // 10) if args.warmup is None else args.warmup
    if warmup:
        asyncio.run(drive(host, port, Run(made, args.weights, warmup, args.seconds, seed=2), args.clients))
    rss_before, cpu_before = rss_mb(pid), cpu_seconds(pid)
    mine_before = resource.getrusage(resource.RUSAGE_SELF)
    run = Run(made, args.weights, args.requests, args.seconds)
    elapsed = asyncio.run(drive(host, port, run, args.clients))
    mine_after = resource.getrusage(resource.RUSAGE_SELF)
    rss_after, cpu_after = rss_mb(pid), cpu_seconds(pid)
    result = summarise(run, elapsed)
    label = args.label or f"{model['backend']}-{args.mix}-{args.clients}"
    return {
        "label": label, "backend": model["backend"], "backend_version": model.get("backend_version"),
        "model": model.get("model_name"), "mix": args.weights, "clients": args.clients,
        "batching": model.get("batching"), "warmup_requests": warmup, **result,
        "server_rss_mb": {"before": _round(rss_before), "after": _round(rss_after)},
        "server_cpu_s": _round(cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None),
        "client_cpu_s": round(sum(getattr(mine_after, f) - getattr(mine_before, f)
                                  for f in ("ru_utime", "ru_stime")), 2),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # No kernel release: a build string names the host, and the figures are shared.
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "command": args.command,
    }


def _round(x):
    return None if x is None else round(x, 1)


def print_summary(r):
    rss = r["server_rss_mb"]
    print(f"{r['label']}: {r['requests']} requests from {r['clients']} clients in {r['seconds']} s: "
          f"{r['requests_per_s']} requests/s; latency p50 {r['latency_ms']['p50']} ms, "
          f"p95 {r['latency_ms']['p95']} ms, p99 {r['latency_ms']['p99']} ms")
    for kind, k in r["by_kind"].items():
        print(f"  {kind:<13} {k['requests']:>6}  p50 {k['p50']} ms  p99 {k['p99']} ms  wrong {k['wrong']}")
    print(f"  statuses {r['statuses']}; wrong answers {r['wrong']}" + (f": {r['problems']}" if r["problems"] else ""))
    print(f"  server RSS {rss['before']} -> {rss['after']} MB; server CPU {r['server_cpu_s']} s, "
          f"load test's own CPU {r['client_cpu_s']} s")


def record(path, result):
    """Add (or replace, by label) the run in the JSON file."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    data["runs"] = [r for r in data["runs"] if r["label"] != result["label"]] + [result]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
