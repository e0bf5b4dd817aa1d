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
