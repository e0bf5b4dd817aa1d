"""The several-hosts commands of docs/distributed.md, read from the docs and run as they stand: two
processes on 127.0.0.1 standing for two hosts (tests/test_multihost.py, scripts/measure_distributed.py).

In the docs each backend's block follows a line `<!-- two hosts: BACKEND -->`. Every command line of
the block (backslash continuations joined, a trailing `&` dropped) is one host's process, with its
leading VAR=value words as its environment; `export` lines set the environment of them all. PORT,
PORT1 and PORT2 stand for free ports; `python` and `torchrun` are this interpreter's.
"""

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "distributed.md"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documented(backend, doc=DOC):
    """[(env, argv)] of `backend`'s block in the docs, one per process, as written there."""
    found = re.search(rf"<!-- two hosts: {backend} -->\s*```bash\n(.*?)```", doc.read_text(), re.S)
    assert found, f"docs/distributed.md has no two-hosts block for {backend}"
    shared, processes = {}, []
    for line in found.group(1).replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line.strip().removesuffix("&"))
        if words[0] == "export":
            shared.update(w.split("=", 1) for w in words[1:])
            continue
        env = {}
        while re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0], re.S):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        processes.append((env, words))
    return [({**shared, **env}, argv) for env, argv in processes]


def runnable(commands):
    """The commands with free ports for PORT, PORT1, PORT2 (one port per name) and this interpreter."""
    ports = {}

    def fill(text):
        return re.sub(r"\bPORT\d?\b", lambda m: str(ports.setdefault(m.group(0), free_port())), text)

    out = []
    for env, argv in commands:
        launcher = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
        argv = launcher.get(argv[0], argv[:1]) + [fill(a) for a in argv[1:]]
        out.append(({k: fill(v) for k, v in env.items()}, argv))
    return out


def train_argv(argv):
    """The launcher part of a command, up to `-m mnist_keras3.train` (what --resume is given to)."""
    return argv[:argv.index("mnist_keras3.train") + 1]


class Hosts:
    """The processes of one multi-host command, started together (cwd, env on top of this
    process's); every one is killed on the way out, whatever happened."""

    def __init__(self, commands, cwd, env=None):
        self.procs = [subprocess.Popen(argv, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}),
                                                           **own}, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
                      for own, argv in commands]

    def wait(self, timeout):
        """(exit codes, outputs), all within `timeout` seconds."""
        deadline, outs = time.monotonic() + timeout, []
        for p in self.procs:
            outs.append(p.communicate(timeout=max(1, deadline - time.monotonic()))[0])
        return [p.returncode for p in self.procs], outs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            for child in descendants(p.pid):
                kill(child)
            p.kill()
            p.wait()


def descendants(pid):
    """Every process below `pid` (torchrun's workers), deepest last."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [d for c in children for d in (c, *descendants(c))]


def kill(pid, sig=9):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def rank_of(pid):
    """The RANK torchrun gave a worker (its environment), or None."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)
