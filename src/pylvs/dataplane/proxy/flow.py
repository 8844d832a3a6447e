"""One direction of a proxied TCP connection: bytes read from one socket written to the other.

What this is for: the per-event work of the TCP relay. ``Flow.pump`` is the handler of its source
socket's events once the relay is established (one Python call per event): it reads into one
buffer shared by every relay and writes straight to the other side; what the other side does not
take at once (at most one read) is kept and that direction stops reading until the other side is
writable again, so per direction at most one read (64 KiB) is held in the proxy, the rest stays in
the kernel's socket buffers, which the senders' TCP windows then push back on: the kernel's buffer
sizes (net.ipv4.tcp_rmem/tcp_wmem) are the only other bound.

Long one-way streams move to splice (``splice``) after ``SPLICE_AFTER`` full-size reads, at a
moment when nothing of that direction is held here, so byte order is kept. A relay whose client
has made ``OFFLOAD_AFTER`` requests is handed to the kernel (``relay.Relay.offload``); from then
on the direction goes through the modes ``CATCHING_UP`` (bytes passed up before the hand-over are
still moved here: ``pump_offloaded``), ``KERNEL`` (the socket is watched for its FIN only) and
``TAKEN_BACK`` (relayed here again after its FIN or when its credit ran out).

What this is not for: connecting, endings and accounting to the core (``relay``). A direction
knows its relay only through ``RelayOwner``, so this module does not import ``relay``.

Counting, as the core's ``account`` wants it: a socket-level proxy sees no packets, so one read
(of up to 64 KiB; one splice on the bulk path) counts as one packet in its direction; bytes are
exact. The relay hands the counts to the core in batches.
"""

from __future__ import annotations

import contextlib
import os
import socket
from _socket import socket as RawSocket
from typing import Protocol

from pylvs.dataplane.proxy.engine import (
    DRAIN,
    EV_ERR,
    EV_HUP,
    EV_IN,
    EV_MORE,
    EV_OUT,
    EV_RDHUP,
    EV_READ,
    QUIET_EVENTS,
    READ_SIZE,
    TcpEngine,
)
from pylvs.dataplane.proxy.sockmap import bytes_written
from pylvs.dataplane.proxy.splice import PIPE_SIZE, SPLICE_FLAGS, open_pipe

# A read of READ_SIZE (the engine's) means the peer is streaming; after SPLICE_AFTER of them in
# one direction that direction moves to splice (when the data plane allows it).
SPLICE_AFTER = 4
# Reads (or splices) per direction and turn, so that one busy stream cannot starve the others.
BATCH = 16
# Requests (client reads that emptied the client's socket) after which a relay is handed to the
# kernel's socket map, when the data plane may (``sockmap``): a connection used once, as
# with "Connection: close", never pays for the hand-over.
OFFLOAD_AFTER = 3
# A direction's place with respect to the kernel relay (``Flow.mode``).
USER = 0  # read and written here
CATCHING_UP = 1  # handed over, but the kernel passed bytes up that are still to be moved here
KERNEL = 2  # the kernel redirects everything; the proxy watches for the FIN only
TAKEN_BACK = 3  # after a FIN or the credit ran out: read and written here again

DONTWAIT = socket.MSG_DONTWAIT


class RelayOwner(Protocol):
    """What a direction asks of its relay (``relay.Relay`` is the one implementation)."""

    engine: TcpEngine
    csock: RawSocket
    finished: bool
    turns: int
    c2s: Flow
    s2c: Flow

    def broken(self) -> None: ...

    def offload(self) -> None: ...

    def quiet(self, flow: Flow) -> None: ...

    def take_back(self, flow: Flow) -> None: ...

    def watch_client_writes(self) -> None: ...

    def direction_done(self, flow: Flow) -> None: ...


class Flow:
    """One direction of a relay: bytes read from ``src`` are written to ``dst``."""

    __slots__ = (
        "accounted", "base", "big", "buf", "by_client", "cookie", "credit", "done", "dst", "eof",
        "in_pipe",
        "left", "mode", "nbytes", "pipe_r", "pipe_w", "pkts", "rbytes", "relay", "rsegs", "sent_base",
        "spliced", "src", "view",
    )

    def __init__(self, relay: RelayOwner, by_client: bool) -> None:
        self.relay = relay
        self.by_client = by_client
        self.buf = relay.engine.buf  # the engine's, shared by every relay
        self.view = relay.engine.view
        self.src: RawSocket = relay.csock
        self.dst: RawSocket = relay.csock  # set when the real server's socket exists
        self.left: bytes | None = None  # what dst did not take yet; src is not read meanwhile
        self.eof = False  # src sent its FIN
        self.done = False  # ... and everything before it reached dst
        self.pkts = 0
        self.nbytes = 0
        self.big = 0
        self.spliced = False
        self.pipe_r = -1
        self.pipe_w = -1
        self.in_pipe = 0
        # Once the kernel relays this direction (``Relay.offload``): src's socket cookie, the
        # bytes read here before that (``base``, from ``accounted`` + ``nbytes``, the bytes read
        # in all), what dst had been given by then, the kernel's redirect counts seen so far and
        # the credit last given to it.
        self.mode = USER
        self.cookie = 0
        self.credit = 0
        self.accounted = 0
        self.base = 0
        self.sent_base = 0
        self.rbytes = 0
        self.rsegs = 0

    def read_early(self) -> None:
        """Read what a just-accepted client has already sent (usually its whole request), to be
        sent once the real server accepts: the client's socket then starts with nothing to
        report, rather than with an event to put off."""
        try:
            n = self.src.recv_into(self.buf, READ_SIZE, DONTWAIT)
        except OSError:
            return  # nothing yet, or an error that the registration reports at once
        if n:
            self.pkts += 1
            self.nbytes += n
            self.left = self.view[:n].tobytes()

    def pump(self, ev: int) -> None:
        """``src`` has something (bytes, FIN or an error): move what ``dst`` will take.

        Once the relay is established this is the handler of ``src``'s events, one call per
        event: a "writable" bit then concerns the other direction, whose destination ``src`` is.
        """
        if ev & EV_OUT:
            relay = self.relay
            other = relay.s2c if self.by_client else relay.c2s
            if other.left is not None or other.in_pipe:  # (the bit also comes with every read)
                other.writable()
                if self.relay.finished:
                    return
            if not ev & EV_READ:
                return
        if self.eof or self.left is not None or self.in_pipe:
            # Done, or waiting for dst to be writable (then the whole socket is read): only an
            # error needs an answer now.
            if ev & EV_ERR:
                self.relay.broken()
            return
        if self.spliced:
            self._splice()
            return
        buf = self.buf
        view = self.view
        src = self.src
        dst = self.dst
        for _ in range(BATCH):
            try:
                n = src.recv_into(buf, READ_SIZE, DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.relay.broken()
                return
            if not n:
                self._eof()
                return
            self.pkts += 1
            self.nbytes += n
            try:
                m = dst.send(view[:n], DONTWAIT)
            except (BlockingIOError, InterruptedError):
                m = 0
            except OSError:
                self.relay.broken()
                return
            if m < n:
                self.left = view[m:n].tobytes()
                self._blocked()
                return
            if n < READ_SIZE:
                # Short read: the socket is empty now; a later arrival brings a new event,
                # unless a FIN or an error was already reported with this one.
                if not ev & EV_MORE:
                    if self.by_client:
                        relay = self.relay
                        relay.turns += 1
                        if relay.turns == OFFLOAD_AFTER and relay.engine.offload is not None:
                            relay.offload()
                    return
            else:
                self.big += 1
                if self.big >= SPLICE_AFTER and self._start_splice():
                    self._splice()
                    return
        self.relay.engine.again.append(self)

    def resume(self) -> None:
        """Go on where the last turn stopped (``TcpEngine.again``)."""
        if not self.relay.finished:
            if self.mode == CATCHING_UP:
                self.pump_offloaded(DRAIN)
            else:
                self.pump(DRAIN)

    def broken(self) -> None:
        """A fault while moving this direction: the whole relay is broken."""
        self.relay.broken()

    def pump_offloaded(self, ev: int) -> None:
        """The handler of a socket whose direction the kernel relays.

        Catching up: what the kernel still hands up (bytes that came before the hand-over) is
        moved here, and then the kernel is told so, which lets it redirect from the next segment
        on. Relayed by the kernel: an event is a FIN, an error, or bytes passed up because the
        credit ran out; the proxy takes the direction back (``Relay.take_back``).
        """
        relay = self.relay
        if self.mode == KERNEL:
            if ev & EV_OUT:  # src is the other direction's dst, which had to wait for it
                other = relay.s2c if self.by_client else relay.c2s
                if other.left is not None or other.in_pipe:
                    other.writable()
            if relay.finished:
                return
            if ev & EV_ERR:
                relay.broken()
            elif ev & (EV_IN | EV_RDHUP | EV_HUP):
                relay.take_back(self)
            return
        self.pump(ev)
        if relay.finished or self.left is not None or self.eof or self.mode != CATCHING_UP:
            return
        offload = relay.engine.offload
        if offload is None:
            return
        taken = self.taken()
        try:
            offload.taken(self.cookie, self.peer_cookie(), taken, self.credit)
            passed = offload.counters(self.cookie)[0]
        except OSError:
            return
        if passed == taken:
            relay.quiet(self)

    def taken(self) -> int:
        """Bytes of src read here since the hand-over."""
        return self.accounted + self.nbytes - self.base

    def redirect_delivered(self) -> int:
        """Bytes the kernel redirected from src that dst has been given (TCP_INFO of dst): what
        dst got in all, less what it had before the hand-over and what the proxy sent since."""
        return bytes_written(self.dst) - self.sent_base - self.taken()

    def peer_cookie(self) -> int:
        relay = self.relay
        return relay.s2c.cookie if self.by_client else relay.c2s.cookie

    def send_left(self) -> bool:
        """Send what ``dst`` did not take yet; True once all of it is gone."""
        left = self.left
        assert left is not None
        try:
            m = self.dst.send(left, DONTWAIT)
        except (BlockingIOError, InterruptedError):
            m = 0
        except OSError:
            self.relay.broken()
            return False
        if m < len(left):
            self.left = left[m:]
            self._blocked()
            return False
        self.left = None
        return True

    def _blocked(self) -> None:
        # The client's socket is registered without "writable" until a direction towards it
        # first has to wait: that event would otherwise come with every state change. A socket
        # whose own bytes the kernel relays is watched for its FIN only, and now for
        # "writable" too (never for "readable": that comes with every redirected segment).
        relay = self.relay
        other = relay.s2c if self.by_client else relay.c2s
        if other.mode == KERNEL:
            relay.engine.modify(self.dst, QUIET_EVENTS | EV_OUT)
        elif not self.by_client:
            relay.watch_client_writes()

    def writable(self) -> None:
        """``dst`` has room again: send what it did not take, then read ``src`` again."""
        if self.left is not None:
            if not self.send_left():
                return
        elif self.in_pipe:
            if not self._drain():
                return
        else:
            return
        if self.eof:
            self._finish_direction()
        elif self.mode == CATCHING_UP:
            self.pump_offloaded(DRAIN)
        else:
            self.pump(DRAIN)

    def _eof(self) -> None:
        self.eof = True
        if self.left is None and not self.in_pipe:
            self._finish_direction()

    def _finish_direction(self) -> None:
        if not self.done:
            self.done = True
            self.relay.direction_done(self)

    # ---- the zero-copy bulk path ---------------------------------------------------------------

    def _start_splice(self) -> bool:
        relay = self.relay
        ctx = relay.engine.ctx
        if not ctx.splice or self.big < 0:
            return False
        pipe = open_pipe()
        if pipe is None:
            # Out of descriptors or pipes for now: this direction stays on reads and writes.
            self.big = -(1 << 62)
            return False
        self.pipe_r, self.pipe_w = pipe
        # splice() honours O_NONBLOCK of the sockets themselves, not MSGDONTWAIT.
        try:
            self.src.setblocking(False)
            self.dst.setblocking(False)
        except OSError:
            self.close_pipe()
            self.big = -(1 << 62)
            return False
        self.spliced = True
        ctx.spliced += 1
        return True

    def _splice(self) -> None:
        splice = os.splice
        src_fd = self.src.fileno()
        for _ in range(BATCH):
            if self.in_pipe and not self._drain():
                return
            try:
                n = splice(src_fd, self.pipe_w, PIPE_SIZE, flags=SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.relay.broken()
                return
            if not n:
                self._eof()
                return
            self.pkts += 1
            self.nbytes += n
            self.in_pipe = n
        if self.in_pipe:
            self._drain()
        if not self.relay.finished and not self.in_pipe:
            self.relay.engine.again.append(self)

    def _drain(self) -> bool:
        """Move the pipe's bytes to ``dst``; True once the pipe is empty."""
        dst_fd = self.dst.fileno()
        while self.in_pipe:
            try:
                m = os.splice(self.pipe_r, dst_fd, self.in_pipe, flags=SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                self._blocked()
                return False
            except OSError:
                self.relay.broken()
                return False
            if not m:
                self._blocked()
                return False
            self.in_pipe -= m
        return True

    def close_pipe(self) -> None:
        for fd in (self.pipe_r, self.pipe_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pipe_r = self.pipe_w = -1
        self.in_pipe = 0
