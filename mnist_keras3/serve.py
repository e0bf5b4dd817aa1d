"""Draw a digit in the browser: a local web page and HTTP API over a trained model.

    python -m mnist_keras3.serve runs/<run>/model.keras --backend jax --port 8000
    # open http://127.0.0.1:8000 and draw; or from a shell:
    curl -F image=@my_digit.png http://127.0.0.1:8000/api/predict

The page and the API are in webapp.py; this entry point chooses the backend before keras is
imported, binds the port (so a busy port fails fast, before the model loads), then runs uvicorn.
"""

import argparse
import errno
import signal
import socket
import sys

from . import backends
from .errors import UsageError, run_cli
from .loading import check_model_file  # keras-free: it only looks at the file

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_MAX_BATCH = 32
DEFAULT_BATCH_WINDOW_MS = 2.0
SWITCH_INTERVAL_S = 0.0005
GRACEFUL_SHUTDOWN_S = 30  # SIGTERM or Ctrl-C: requests in flight get this long to finish


class Stopped(Exception):
    """SIGTERM arrived; raised once uvicorn has finished the requests in flight."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.serve", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a model.keras written by mnist_keras3.train")
    p.add_argument("--backend", help="torch, jax or tensorflow (default: KERAS_BACKEND, then the first installed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the app to your network (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port; 0 picks a free one (default: {DEFAULT_PORT})")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest request body accepted, in MB (default: {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help="most predictions answered by one model call; concurrent requests are batched "
                        f"(default: {DEFAULT_MAX_BATCH})")
    p.add_argument("--batch-window-ms", type=float, default=DEFAULT_BATCH_WINDOW_MS,
                   help="longest a prediction waits for others still being preprocessed to join its batch "
                        f"(default: {DEFAULT_BATCH_WINDOW_MS:g})")
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False,
                   help="show tracebacks on errors, and uvicorn's debug log")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"Expected --port between 0 and 65535. Received: port={args.port}")
    if not 0 < args.max_upload_mb <= 1024:
        raise UsageError(f"Expected --max-upload-mb between 0 and 1024. Received: max_upload_mb={args.max_upload_mb:g}")
    if not 1 <= args.max_batch <= 1024:
        raise UsageError(f"Expected --max-batch between 1 and 1024. Received: max_batch={args.max_batch}")
    if not 0 <= args.batch_window_ms <= 1000:
        raise UsageError("Expected --batch-window-ms between 0 and 1000. "
                         f"Received: batch_window_ms={args.batch_window_ms:g}")
    return args


def bind(host, port):
    """A listening socket on (host, port), or a one-line UsageError saying what to do."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise UsageError(f"Expected a host name or address to listen on. Received: host={host!r} ({e.strerror})") from e
    # proto IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # connections accepted from a socket whose proto says TCP. With Nagle on, a keep-alive
    # connection's response (headers, then body: two writes) meets the client's delayed ACK and
    # every request after the first waits for it.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"Port {port} on {host} is already in use. "
                             "Pass another --port (or --port 0 for a free one).") from e
        raise UsageError(f"Cannot listen on {host}:{port} ({e.strerror}). Pass another --host or --port.") from e
    sock.listen(128)
    return sock


def stop_on_sigterm(signum, frame):
    raise Stopped()


def main(argv=None):
    args = parse_args(argv)
    try:
        import fastapi  # noqa: F401  (checked here for a clear message; webapp imports it)
        import uvicorn
    except ImportError as e:
        raise UsageError(f"serve needs FastAPI and uvicorn ({e.name} is missing). "
                         'Install them: pip install "mnist-keras3[serve]"') from e
    name, source = backends.resolve_backend(args.backend)
    check_model_file(args.model)  # a wrong path fails now, not after keras and the backend load
    sock = bind(args.host, args.port)
    try:
        backends.activate(name).module.configure_serving()  # this process only ever serves
        from . import webapp  # imports keras-using modules: only now that the backend is set

        app = webapp.create_app(args.model, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                                max_batch=args.max_batch, batch_window_ms=args.batch_window_ms)
        info = app.state.info
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        run = info["run"] or {}
        accuracy = f", test accuracy {run['test_accuracy']:.4f}" if run.get("test_accuracy") is not None else ""
        print(f"serving {info['model_name']} ({info['parameters']:,} parameters{accuracy}) from {args.model} "
              f"under {info['backend']} {info['backend_version']} ({source}) on {info['device']}")
        print(f"open http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {args.host}: anyone who can reach this machine can use the app",
                  file=sys.stderr)
        # http/loop "auto": httptools and uvloop where installed (the serve extra), h11 and asyncio
        # otherwise; they parse and dispatch requests several times faster (docs/serving.md).
        config = uvicorn.Config(app, log_level="debug" if args.debug else "warning", access_log=args.debug,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        # uvicorn stops accepting on SIGTERM or Ctrl-C, lets the requests in flight finish, then
        # raises the signal again for the handler that was there before it: this one.
        signal.signal(signal.SIGTERM, stop_on_sigterm)
        # The event loop shares the GIL with the preprocessing and model threads; by default a thread
        # that wants it waits a whole switch interval for a busy one to let go, and a request passes
        # it back and forth several times: latency piles up behind that wait.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except (KeyboardInterrupt, Stopped):
            pass
        # The server has stopped, whichever way: uvicorn raises the signal it caught again once the
        # requests in flight are done, but under uvloop that KeyboardInterrupt can be lost while the
        # loop closes, and run() then simply returns.
        print("stopped")
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
