"""The way through the code is one-directional: the package's import graph (static imports, the ones
inside functions, and importlib's) has no cycle, no module imports a package above its own, and a
training run turns the backend's name into its modules once (backends.activate). A module may import
its own package's __init__ (a backend's contract module), never a package above it."""

import ast
import json

import pytest
from conftest import BACKEND, REPO

from mnist_keras3 import backends

PACKAGE = REPO / "mnist_keras3"


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name):
    return (REPO / name.replace(".", "/") / "__init__.py").is_file()


def exists(name):
    return is_package(name) or (REPO / (name.replace(".", "/") + ".py")).is_file()


def importlib_targets(call, tree):
    """The modules an importlib.import_module(...) call can import: a constant, an f-string whose
    variable part is a backend's name (expanded over every backend), or any other expression: then
    every module name the file spells out as a string (a table of commands, say)."""
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Constant):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr):
        pieces = [v.value if isinstance(v, ast.Constant) else None for v in arg.values]
        if pieces.count(None) == 1:
            return ["".join(p if p is not None else b for p in pieces) for b in backends.BACKENDS]
    named = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith("mnist_keras3.") and exists(n.value)]
    assert named, f"an importlib call whose target this test cannot read: {ast.unparse(call)}"
    return named


def imports(path):
    """(module, [modules it imports]) for a file of the package, only the package's own modules."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found, tree = [], ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import mod` imports the module; else pkg itself
                found.append(f"{base}.{alias.name}" if exists(f"{base}.{alias.name}") else base)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module"):
            found += importlib_targets(node, tree)
    return name, sorted({m for m in found if m.startswith("mnist_keras3") and m != name})


def graph():
    return dict(imports(p) for p in sorted(PACKAGE.rglob("*.py")))


@pytest.mark.once
def test_the_import_graph_has_no_cycle():
    edges = graph()
    assert edges["mnist_keras3.backends"]  # importlib's targets are read: activate imports each backend
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node)


def own_package(name):
    return name if is_package(name) else name.rsplit(".", 1)[0]


@pytest.mark.once
def test_no_module_imports_a_package_above_its_own():
    """backends/torch/distribute.py may use backends/torch/__init__.py (its package's contract), never
    backends/__init__.py, which chooses and imports the backends."""
    upward = [(src, dst) for src, targets in graph().items() for dst in targets
              if is_package(dst) and own_package(src).startswith(dst + ".")]
    assert upward == [], upward


@pytest.mark.once
def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The two tests above can fail: a cycle through importlib and an import of the parent package."""
    pkg = tmp_path / "mnist_keras3" / "backends" / "fake"
    pkg.mkdir(parents=True)
    for init in (tmp_path / "mnist_keras3", tmp_path / "mnist_keras3" / "backends", pkg):
        (init / "__init__.py").touch()
    (tmp_path / "mnist_keras3" / "backends" / "__init__.py").write_text(
        'import importlib\ndef f(n):\n    return importlib.import_module(f"mnist_keras3.backends.{n}.loop")\n')
    (pkg / "loop.py").write_text("from .. import something\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    name, found = imports(pkg / "loop.py")
    assert (name, found) == ("mnist_keras3.backends.fake.loop", ["mnist_keras3.backends"])
    _, found = imports(tmp_path / "mnist_keras3" / "backends" / "__init__.py")
    assert found == [f"mnist_keras3.backends.{b}.loop" for b in sorted(backends.BACKENDS)]


@pytest.mark.e2e
def test_a_training_run_turns_the_backend_name_into_modules_once(keras, mnist_dir, tmp_path, monkeypatch):
    """From train.main: activate() makes the Backend handle, and nothing after it looks the backend
    up again by name (backend_module) or by the imported keras (active)."""
    from mnist_keras3 import train

    calls = []
    for fn in ("backend_module", "active"):
        real = getattr(backends, fn)
        monkeypatch.setattr(backends, fn, lambda *a, _fn=fn, _real=real: calls.append(_fn) or _real(*a))
    assert train.main(["--backend", BACKEND, "--dry-run", "--output-dir", str(tmp_path),
                       "--data-dir", str(mnist_dir)]) == 0
    assert calls == ["backend_module"], calls  # activate's own
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "metrics.json").read_text())["loop"]["ran"] == "native"


LOOP_CONTRACT = {"functions": {"private_api_problem", "unsupported_settings"}, "constants": {"DATA_PARALLEL"},
                 "Trainer": {"__init__", "indices", "run", "profile", "sync", "step_kind"}}


def loop_contract(path):
    """What backends/<name>/loop.py defines of backends/loop.py's contract, read from its source (no
    framework imported): top-level functions and constants, and the Trainer's methods."""
    tree = ast.parse(path.read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    constants = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    (trainer,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    methods = {n.name for n in trainer.body if isinstance(n, ast.FunctionDef)}
    return {"functions": functions & LOOP_CONTRACT["functions"], "constants": constants & LOOP_CONTRACT["constants"],
            "Trainer": methods & LOOP_CONTRACT["Trainer"]}


def test_every_backend_loop_keeps_the_shared_contract():
    """The shared epoch loop (backends/loop.py) calls the same names on every backend's loop."""
    paths = sorted((PACKAGE / "backends").glob("*/loop.py"))
    assert [p.parent.name for p in paths] == ["jax", "tensorflow", "torch"]
    for path in paths:
        assert loop_contract(path) == LOOP_CONTRACT, path.parent.name
