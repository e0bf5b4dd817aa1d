"""What every backend package uses alike, importing nothing of the project but its errors: a leaf,
so that backends/<name>/ never import their parent package (which imports them)."""

import os

from ..errors import UsageError


def take_devices(found, asked, kind="devices found on this host"):
    """The first `asked` of the devices `found` (all of them for 0): asking for more than there are
    is a UsageError naming how many there are, rather than fewer replicas than asked for."""
    if asked > len(found):
        raise UsageError(f"Expected --devices at most the {len(found)} {kind}. "
                         f"Received: devices={asked}. Pass --devices {len(found)} or fewer (0 for all).")
    return list(found[:asked] if asked else found)


def host_memory():
    """Bytes of RAM of this host (POSIX), or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


ENV_COMPILE_CACHE = "MNIST_KERAS3_COMPILE_CACHE"


def compile_cache_dir(backend):
    """Where `backend` keeps the programs it compiled, for later runs to load instead of compiling:
    $MNIST_KERAS3_COMPILE_CACHE/<backend> when that is set ("off" or "" for no cache: None), else
    <$XDG_CACHE_HOME or ~/.cache>/mnist_keras3/compiled/<backend>."""
    from pathlib import Path

    folder = os.environ.get(ENV_COMPILE_CACHE)
    if folder is not None:
        return None if folder.strip().lower() in ("", "off") else Path(folder) / backend
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist_keras3" / "compiled" / backend
