"""Zero-copy bulk path of the TCP relay: the pipes and flags for ``os.splice``.

What this is for: long one-way streams (downloads, uploads). Read and written through Python,
every chunk is copied from the kernel into the relay's buffer and back; with splice the pages move
from one socket into a pipe and from the pipe into the other socket inside the kernel, and the
proxy only counts them. A relay direction (``flow.Flow``) switches once it has seen several
full-size reads, at a moment when nothing of that direction is held in the proxy (so byte order is
kept); request/response traffic never switches. The relay drives the splices from the same
edge-triggered events as its reads and writes.

What this is not for: short messages (a read and a write are cheaper there) or anything but Linux
(``os.splice`` is missing elsewhere and the relays simply keep copying).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

AVAILABLE = hasattr(os, "splice")
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Bytes moved per splice: a larger pipe than the default 64 KiB means fewer calls per gigabyte.
PIPE_SIZE = 1 << 20


def open_pipe() -> tuple[int, int] | None:
    """A non-blocking pipe (read end, write end) sized for bulk, or None when none can be had."""
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    # Unprivileged processes may be capped below PIPE_SIZE: the default size still works.
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w
