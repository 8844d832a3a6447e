"""The event engine of the proxy's TCP side: one edge-triggered epoll for every listening and
relay socket, and the one coarse timer that times connects out.

What this is for: dispatching socket events to their handlers with as little Python as possible
per event, closing sockets safely between batches, and resuming directions that used up their
turn. It knows relays only through the small protocols below (``Connecting``, ``Resumable``,
``Breakable``), so it sits below the modules that define them (``flow``, ``relay``, ``listener``)
and nothing here imports them.

Why raw sockets and one epoll rather than asyncio transports: a proxied connection is a handful of
system calls of real work (accept, socket, connect, a read and a write per request and side,
shutdown, close); transports add per-connection objects, callbacks, name look-ups
(getsockname/getpeername), option calls and event-registration changes that cost more than the
work itself. Here every listening socket and every relay socket is registered once, edge-triggered
for reads, writes and the peer's FIN, in one ``select.epoll`` (``TcpEngine``) whose own descriptor
the asyncio loop watches; one readiness callback drains that epoll and hands each event to its
socket's handler (once a relay is established, straight to the direction that socket feeds: one
Python call per event). A registration changes at most once (the client's socket is watched for
"writable" only from the first time a reply has to wait for it): a side that cannot be written to
is simply not read until the edge-triggered "writable" event comes.

Connect deadlines: relays that start connecting within one ``TICK`` with the same connect timeout
(their service's) share a bucket; a bucket is sealed with its deadline at the next tick, and what
is still in it at the deadline timed out. One timer serves every relay, and it runs only while
some relay is connecting. The other timeouts (server, client, tunnel) are checked once a second
by the data plane's housekeeping (``relay.Relay.tick``).

Relay limit: a listener that finds the limit reached stops accepting (``hold_listener``); new
clients wait in the kernel's accept queue and are taken as soon as a relay ends (``room``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import select
import socket
import struct
from _socket import socket as RawSocket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pylvs.dataplane.proxy.sockmap import SockmapRelay

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.dataplane.proxy.common import ProxyContext

log = logging.getLogger("pylvs.dataplane.proxy")

# One read's size, and the size of the read buffer every relay shares (``flow.Flow``).
READ_SIZE = 65536
# Resolution of the connect-timeout clock: a connect times out up to two ticks late.
TICK = 0.1

EV_IN = select.EPOLLIN
EV_OUT = select.EPOLLOUT
EV_ERR = select.EPOLLERR
EV_HUP = select.EPOLLHUP
EV_RDHUP = select.EPOLLRDHUP
EV_EDGE = select.EPOLLET
# Everything a relay socket can report. The real server's socket is registered with all of it
# (writable also says that the connect completed); the client's without writable until the
# relay first has to wait for it (``Relay.watch_client_writes``).
RELAY_EVENTS = EV_IN | EV_OUT | EV_RDHUP | EV_EDGE
CLIENT_EVENTS = EV_IN | EV_RDHUP | EV_EDGE
# A socket whose bytes the kernel relays: only its FIN (and errors, always reported) matter.
QUIET_EVENTS = EV_RDHUP | EV_EDGE
# A FIN, hang-up or error is pending: read until the socket says there is nothing more.
EV_MORE = EV_RDHUP | EV_HUP | EV_ERR
# Passed by the relay itself when it resumes a direction: read until the socket is empty.
DRAIN = EV_RDHUP
EV_READ = EV_IN | EV_MORE

_LINGER_RST = struct.pack("ii", 1, 0)


def reset(sock: RawSocket) -> None:
    """Make the coming close a TCP reset rather than a FIN: the peer learns at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)


@runtime_checkable
class Breakable(Protocol):
    """What a fault in a handler ends: a relay (or a direction of one)."""

    def broken(self) -> None: ...


class Resumable(Protocol):
    """A direction that used up its turn with bytes still waiting."""

    def resume(self) -> None: ...

    def broken(self) -> None: ...


class Connecting(Protocol):
    """A relay waiting for its real server to accept."""

    finished: bool
    connected: bool
    bucket: set[Any]

    def connect_failed(self) -> None: ...


class Held(Protocol):
    """A listener that stopped accepting at the relay limit."""

    def resume_accepting(self) -> None: ...


class TcpEngine:
    """One epoll for every listening socket and relay socket of a data plane."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        # Sockets to close once the current batch of events is handled: an event fetched for a
        # descriptor that has meanwhile been closed and reused must not reach the new owner.
        self.dead: list[RawSocket] = []
        # Directions that used up their turn with bytes still waiting (edge-triggered: no new
        # event will come for those), resumed on the loop's next iteration.
        self.again: list[Resumable] = []
        self.again_handle: asyncio.Handle | None = None
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        # Relays connecting: the buckets of this tick (one per connect timeout), then sealed
        # buckets by deadline (a heap). A relay that connects leaves its bucket; what is left at
        # the deadline timed out. One timer for all, running only while some relay is connecting.
        self.filling: dict[float, set[Connecting]] = {}
        self.sealed: list[tuple[float, int, set[Connecting]]] = []
        self._seq = itertools.count()
        # Listeners that stopped accepting because the relay limit was reached.
        self.held: list[Held] = []
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.offload: SockmapRelay | None = None
        if ctx.sockmap:
            try:
                self.offload = SockmapRelay(2 * ctx.max_tcp_relays)
            except OSError as e:  # no privilege, or a kernel without socket maps
                log.info("proxy: established relays stay in user space: %s", e.strerror or e)
        self.loop.add_reader(self.epoll.fileno(), self._ready)

    # ---- the loop's side ---------------------------------------------------------------------

    def _ready(self) -> None:
        try:
            events = self.epoll.poll(0, 1024)
        except InterruptedError:
            return
        handlers = self.handlers
        try:
            for fd, ev in events:
                handler = handlers.get(fd)
                if handler is not None:
                    try:
                        handler(ev)
                    except Exception:  # a fault must cost one connection, not the data plane
                        self.fault(getattr(handler, "__self__", None))
        finally:
            self.end_turn()

    def fault(self, owner: object) -> None:
        """A handler raised: log it and break the relay it belongs to, if any."""
        log.exception("proxy: relay failed")
        if isinstance(owner, Breakable):
            owner.broken()

    def end_turn(self) -> None:
        """Close the sockets forgotten during this turn and schedule the directions to resume."""
        dead = self.dead
        if dead:
            self.dead = []
            for sock in dead:
                sock.close()
        if self.again and self.again_handle is None and not self.closed:
            self.again_handle = self.loop.call_soon(self._run_again)

    def _run_again(self) -> None:
        self.again_handle = None
        flows = self.again
        self.again = []
        try:
            for flow in flows:
                try:
                    flow.resume()
                except Exception:
                    self.fault(flow)
        finally:
            self.end_turn()

    def add(self, sock: RawSocket, handler: Callable[[int], None], events: int) -> None:
        fd = sock.fileno()
        self.handlers[fd] = handler
        self.epoll.register(fd, events)

    def modify(self, sock: RawSocket, events: int) -> None:
        """Change what ``sock`` is watched for (a socket already closed is left alone)."""
        with contextlib.suppress(OSError):
            self.epoll.modify(sock.fileno(), events)

    def forget(self, sock: RawSocket | None) -> None:
        """Stop handling ``sock`` and close it at the end of the turn (closing deregisters it)."""
        if sock is not None:
            fd = sock.fileno()
            if fd >= 0:
                self.handlers.pop(fd, None)
                self.dead.append(sock)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.again_handle is not None:
            self.again_handle.cancel()
            self.again_handle = None
        self.end_turn()
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        if self.offload is not None:
            self.offload.close()
            self.offload = None

    # ---- connect deadlines -------------------------------------------------------------------

    def arm(self, relay: Connecting, timeout: float) -> None:
        """Time the relay's connect out after ``timeout`` seconds (up to two ticks more)."""
        bucket = self.filling.get(timeout)
        if bucket is None:
            bucket = self.filling[timeout] = set()
        bucket.add(relay)
        relay.bucket = bucket
        if self.timer is None and not self.closed:
            self.timer = self.loop.call_later(TICK, self._on_tick)

    def _on_tick(self) -> None:
        self.timer = None
        now = self.loop.time()
        sealed = self.sealed
        if self.filling:
            for timeout, bucket in self.filling.items():
                if bucket:
                    heapq.heappush(sealed, (now + timeout, next(self._seq), bucket))
            self.filling = {}
        expired: list[Connecting] = []
        while sealed and sealed[0][0] <= now:
            expired.extend(heapq.heappop(sealed)[2])
        try:
            for relay in expired:
                if not relay.finished and not relay.connected:
                    relay.connect_failed()
        finally:
            self.end_turn()
        if (sealed or self.filling) and not self.closed:
            self.timer = self.loop.call_later(TICK, self._on_tick)

    # ---- the relay limit ---------------------------------------------------------------------

    def hold_listener(self, listener: Held) -> None:
        """``listener`` found the relay limit reached: it resumes when a relay ends."""
        self.held.append(listener)

    def room(self) -> None:
        """A relay ended: held listeners accept again while there is room."""
        if len(self.ctx.relays) < self.ctx.max_tcp_relays:
            held = self.held
            self.held = []
            for listener in held:
                listener.resume_accepting()
