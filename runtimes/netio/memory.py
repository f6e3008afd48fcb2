"""Give the memory that closed connections freed back to the operating system.

glibc's malloc keeps what a process frees in its heap for reuse, and a heap fragmented by
thousands of short-lived connections (each TLS connection's OpenSSL buffers, the transport and
protocol objects: 50-100 KB) rarely shrinks by itself: after 1,000 slowloris clients came and
went, a server's RSS would stay about 90 MB above where it was. `release_free_memory` asks
glibc how much of its heap is free (``mallinfo2``) and, past a threshold, returns it
(``malloc_trim(0)``, which also releases whole free pages inside the heap). `HttpServer` runs
it every `ServerConfig.memory_release_interval` seconds. Elsewhere than glibc (musl, macOS)
both are unavailable and this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

__all__ = ["free_heap_bytes", "release_free_memory", "release_periodically"]

logger = logging.getLogger("tokios.netio")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def free_heap_bytes() -> int | None:
    """Bytes free inside malloc's heaps (all arenas), or None without glibc >= 2.33."""
    if _LIBC is None:
        return None
    info = _LIBC.mallinfo2()
    return int(info.fordblks)


def release_free_memory(threshold: int) -> bool:
    """Return the heap's free memory to the system if more than ``threshold`` bytes are
    free; True if it did."""
    free = free_heap_bytes()
    if _LIBC is None or free is None or free <= threshold:
        return False
    _LIBC.malloc_trim(0)
    return True


async def release_periodically(interval: float, threshold: int) -> None:
    """`release_free_memory` every ``interval`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            release_free_memory(threshold)
        except Exception as exc:  # never let this end the loop's other work
            logger.error("releasing free memory failed: %s", type(exc).__name__)
