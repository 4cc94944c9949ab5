"""Large message buffers go back to the system once freed (glibc's malloc).

glibc serves a block of 128 KiB or more with its own mmap and unmaps it at free, but then
raises that threshold to the size of the block freed (up to 32 MiB): after the first
large message, the next ones are served from the heap, whose freed space the process
keeps. Four messages of 24 MB at once left the relay far larger after they had been
queued. Setting the threshold once (mallopt M_MMAP_THRESHOLD, as the environment
variable MALLOC_MMAP_THRESHOLD_ does) keeps it where it is, and `give_back` (malloc_trim)
after a large message returns what its smaller pieces left free in the heaps.

Other C libraries (musl, macOS) return large blocks by themselves: there this does nothing.
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
MMAP_FROM = 1 << 20
"""Blocks from 1 MiB on (message-sized buffers) get their own mapping; smaller ones, the
64 KiB pieces DATA is read in among them, stay in the heap as before."""


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


_LIBC = _glibc()


def return_large_blocks() -> None:
    """Fix glibc's mmap threshold (once per process, at start)."""
    if _LIBC is not None and not _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_FROM):
        log.warning("mallopt(M_MMAP_THRESHOLD) refused: large messages may stay resident")


def give_back() -> None:
    """Return the free space of the malloc heaps to the system (after a large message)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
