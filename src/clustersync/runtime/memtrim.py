"""Give memory the process freed back to the system (glibc's ``malloc_trim``).

Syncing a large cluster allocates and frees far more than the agent keeps: list pages, messages,
compressed frames. glibc keeps freed pages mapped for reuse, so an agent that synced 20,000 pods
stayed at its peak (115 MiB) although it held a third of that; trimming once it is idle brought
it to 74 MiB. Where the C library has no ``malloc_trim`` (musl, macOS), nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("clustersync.agent")


def trimmer(library: str | None = None) -> Callable[[], None] | None:
    """A function releasing freed memory, or None where the C library has none."""
    name = library or ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)  # it walks the free lists: a fraction of a millisecond for an agent's heap

    return release
