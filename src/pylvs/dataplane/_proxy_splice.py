"""Zero-copy bulk path of the TCP relay: one direction moved from transport reads/writes to
``os.splice`` through a pipe (socket -> pipe -> socket), driven by the event loop.

What this is for: long one-way streams (downloads, uploads). Through asyncio transports every
chunk is copied from the kernel into a Python bytes object and back into the kernel; with splice
the pages move between the two sockets inside the kernel and the proxy only counts them. A relay
direction switches once it has seen several consecutive full-size reads and its destination's
write buffer is empty (so byte order is kept); request/response traffic never switches.

What this is not for: short messages (the transports are cheaper there) or anything but Linux
(``os.splice`` is missing elsewhere and the relay simply stays on transports).

How it sits beside the transports: the source transport is paused (it never reads again) and the
destination transport is not written to in this direction any more, so the loop's own handles and
ours never touch the same bytes. The leg polls *duplicates* of the two socket descriptors
(``os.dup``), because event loops refuse ``add_reader`` on a descriptor a transport owns. The
transports stay the owners of the sockets: EOF is passed on with the destination transport's
``write_eof`` and closing stays the relay's business.

Counting: one ``splice`` from the source socket counts as one packet, bytes are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.dataplane._proxy_tcp import ClientSide

AVAILABLE = hasattr(os, "splice")
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
# Splices per readiness callback before giving other connections their turn.
BATCH = 16


class SpliceLeg:
    """One direction of a relay, spliced: source socket -> pipe -> destination socket."""

    __slots__ = (
        "count", "dst", "dst_fd", "in_pipe", "loop", "on_eof", "pipe_r", "pipe_w", "reading",
        "relay", "src", "src_fd", "writing",
    )

    def __init__(
        self, relay: ClientSide, src: asyncio.Transport, dst: asyncio.Transport,
        count: Callable[[int], None], on_eof: Callable[[], None],
    ) -> None:
        self.relay = relay
        self.loop = relay.ctx.loop
        self.src = src
        self.dst = dst
        self.count = count
        self.on_eof = on_eof
        self.src_fd = -1
        self.dst_fd = -1
        self.pipe_r = -1
        self.pipe_w = -1
        self.in_pipe = 0
        self.reading = False
        self.writing = False

    def start(self) -> bool:
        """Take over the direction; False (and nothing changed) when it cannot."""
        src_sock = self.src.get_extra_info("socket")
        dst_sock = self.dst.get_extra_info("socket")
        if src_sock is None or dst_sock is None:
            return False
        try:
            self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.pipe_w, F_SETPIPE_SZ, PIPE_SIZE)
            self.src_fd = os.dup(src_sock.fileno())
            self.dst_fd = os.dup(dst_sock.fileno())
        except OSError:
            self._close_fds()
            return False
        self.src.pause_reading()
        self.loop.add_reader(self.src_fd, self._readable)
        self.reading = True
        return True

    # ---- the two readiness callbacks --------------------------------------------------------

    def _readable(self) -> None:
        splice = os.splice
        for _ in range(BATCH):
            if not self.in_pipe:
                try:
                    n = splice(self.src_fd, self.pipe_w, PIPE_SIZE, flags=_FLAGS)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    self._fail(e)
                    return
                if n == 0:
                    self._source_eof()
                    return
                self.in_pipe = n
                self.count(n)
            drained = self._drain()
            if self.src_fd < 0:  # failed and torn down while draining
                return
            if not drained:
                # Destination full: stop reading until it has room again.
                self._want_write()
                return

    def _writable(self) -> None:
        if self._drain():
            if self.dst_fd < 0:  # failed and torn down
                return
            self.loop.remove_writer(self.dst_fd)
            self.writing = False
            if not self.reading and self.src_fd >= 0:
                self.loop.add_reader(self.src_fd, self._readable)
                self.reading = True

    def _drain(self) -> bool:
        """Move the pipe's bytes to the destination; True once the pipe is empty."""
        while self.in_pipe:
            try:
                m = os.splice(self.pipe_r, self.dst_fd, self.in_pipe, flags=_FLAGS)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as e:
                self._fail(e)
                return True  # torn down; nothing left to wait for
            if m == 0:
                return False
            self.in_pipe -= m
        return True

    def _want_write(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.src_fd)
            self.reading = False
        if not self.writing and self.dst_fd >= 0:
            self.loop.add_writer(self.dst_fd, self._writable)
            self.writing = True

    # ---- endings ----------------------------------------------------------------------------

    def _source_eof(self) -> None:
        self.close()
        self.on_eof()

    def _fail(self, exc: OSError) -> None:
        self.close()
        self.relay.splice_failed(exc)

    def close(self) -> None:
        """Stop polling and release the pipe and duplicates (the sockets stay with the transports)."""
        if self.reading:
            self.loop.remove_reader(self.src_fd)
            self.reading = False
        if self.writing:
            self.loop.remove_writer(self.dst_fd)
            self.writing = False
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("src_fd", "dst_fd", "pipe_r", "pipe_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
