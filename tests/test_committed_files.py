"""What is committed under docs/ is shareable: no absolute path of the machine that made it, no
host detail (a kernel build string), whatever command wrote the file."""

import re
import subprocess

import pytest
from conftest import REPO

pytestmark = pytest.mark.once  # files in the checkout: the same under every backend

# An absolute POSIX path under a machine's own folders (not "../tmp/x", a path relative to where a
# command ran), a Windows user folder, or a kernel release as platform.release() / uname -r give it.
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp|Users|mnt|opt|srv|var|private|scratch)/"
                      r"|\b[A-Za-z]:\\\\?Users\\")
HOST = re.compile(r"\bLinux \d+\.\d+\.\d+|#\d+ SMP|\b\d+\.\d+\.\d+-\d+-(?:generic|aws|azure|gcp)\b")


def tracked_docs():
    """docs/ files git tracks (every file under docs/ outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "docs"], cwd=REPO, capture_output=True, check=True)
        paths = [REPO / p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in (REPO / "docs").rglob("*") if p.is_file()]
    return [p for p in paths if p.suffix in (".json", ".md", ".txt", ".csv", ".toml")]


def offending_lines(pattern):
    found = []
    for path in tracked_docs():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    return found


def test_the_patterns_catch_what_they_are_for():
    assert ABSOLUTE.search('"run_dir": "/tmp/tbn/20261130-071937-tensorflow-tutorial-bn"')
    assert ABSOLUTE.search("--json /work/exp/x.json") and ABSOLUTE.search('"C:\\\\Users\\\\me\\\\runs"')
    assert not ABSOLUTE.search('"run_dir": "../../tmp/tbn/x"') and not ABSOLUTE.search("runs/20261130-x/model.keras")
    assert not ABSOLUTE.search("https://download.pytorch.org/whl/cpu")
    assert HOST.search("x86_64, 2 CPUs, Linux 6.18.44-fc-v857") and not HOST.search("x86_64, 2 CPUs, Linux")


def test_docs_hold_no_absolute_machine_path():
    assert tracked_docs(), "no files found under docs/"
    assert offending_lines(ABSOLUTE) == []


def test_docs_hold_no_host_detail():
    assert offending_lines(HOST) == []
