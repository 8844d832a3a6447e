"""TCP relay of the socket-level proxy: one accepted client connection joined to one real server.

What this is for: the hot path of ``ProxyDataPlane`` for TCP services, i.e. full NAT done with
two sockets. The client's connection ends at the VIP; a second connection goes from the director
to the real server the core chose; bytes are copied between the two, with bounded buffers and
backpressure, and both half-closes are propagated (a FIN read on one side becomes
``shutdown(SHUT_WR)`` on the other). Long one-way streams move to splice (``_proxy_splice``).

What this is not for: choosing servers, persistence, thresholds and connection states (all the
core's, through ``Director``), or binding listening sockets (``proxy.py``).

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
is simply not read until the edge-triggered "writable" event comes. Accepted sockets stay
blocking (reads and writes pass MSG_DONTWAIT) and inherit TCP_NODELAY from the listener; the
peer's address comes from accept and the VIP is the listener's, so nothing is asked of the kernel
per connection beyond the relay itself.

Relay sockets are the C-level ``_socket.socket`` objects, without the Python wrapper class around
them: its constructor and close are Python code, run twice per connection.

Bytes are read into one buffer shared by every relay and written straight to the other side; what
the other side does not take at once (at most one read) is kept and that direction stops reading
until the other side is writable again, so per direction at most one read (64 KiB) is held in the
proxy, the rest stays in the kernel's socket buffers, which the senders' TCP windows then push
back on: the kernel's buffer sizes (net.ipv4.tcp_rmem/tcp_wmem) are the only other bound. What a client sent before it was accepted (typically its whole request) is read at once,
as one read, and sent when the real server accepts; anything later stays in the client's socket
until then.

Core events: ``proxy_established`` once the real server accepted, ``proxy_half_closed`` for the
first FIN passed on (by_client tells whose), ``proxy_closed`` when both directions are done or
either side failed (the second FIN goes straight to ``proxy_closed``: it would not change the
core's state).

Counting, as the core's ``account`` wants it: a socket-level proxy sees no packets, so one read
(of up to 64 KiB; one splice on the bulk path) counts as one packet in its direction; bytes are
exact. Counts are kept in the relay and handed to the core in batches (when the relay ends and on
the data plane's housekeeping tick, about once a second).

The kernel relay: a relay that has served ``OFFLOAD_AFTER`` requests (client reads that emptied
the client's socket) is handed to the kernel's socket map when the data plane may
(``_proxy_sockmap``: root, a kernel with socket maps, not turned off). From then on the kernel
moves its bytes and the proxy is not woken per request; each direction goes through the modes
``CATCHING_UP`` (bytes passed up before the hand-over are still moved here), ``KERNEL`` (the
socket is watched for its FIN only) and ``TAKEN_BACK`` (after its FIN, or when its credit ran
out because the other side does not take bytes as fast: the proxy waits until every redirected
byte reached the other socket, then relays the rest itself, so order and backpressure hold).
Counters come from the kernel's per-socket counts on the housekeeping tick, one redirected segment
counting as one packet.

Connect failures: when the real server refuses or does not answer within ``connect_timeout``
(checked by one coarse timer for all relays, not a timer per connection), the relay asks the core
again, skipping the servers that failed for this client (up to ``retries`` more attempts), so a
client sees no error while one server is down. Nothing is marked in the core: taking a server out
is the health checker's job. When no server can take the connection, the client gets a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import struct
from _socket import socket as RawSocket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pylvs.core.director import DIR_INPUT, DIR_OUTPUT
from pylvs.dataplane.proxy.sockmap import SockmapRelay, bytes_written, socket_cookie
from pylvs.dataplane.proxy.splice import PIPE_SIZE, SPLICE_FLAGS, open_pipe

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Connection
    from pylvs.dataplane.proxy.common import ProxyContext, ServiceEndpoint

log = logging.getLogger("pylvs.dataplane.proxy")

_LINGER_RST = struct.pack("ii", 1, 0)
# One read's size: a read this large means the peer is streaming; after SPLICE_AFTER of them in
# one direction that direction moves to splice (when the data plane allows it).
READ_SIZE = 65536
SPLICE_AFTER = 4
# Reads (or splices) per direction and turn, and accepts per listener and turn, so that one busy
# stream or a connection storm cannot starve the others.
BATCH = 16
ACCEPT_BATCH = 64
# Resolution of the connect-timeout clock: a connect times out up to two ticks late.
TICK = 0.1
# Requests (client reads that emptied the client's socket) after which a relay is handed to the
# kernel's socket map, when the data plane may (``_proxy_sockmap``): a connection used once, as
# with "Connection: close", never pays for the hand-over.
OFFLOAD_AFTER = 3
# A direction's place with respect to the kernel relay (``Flow.mode``).
USER = 0  # read and written here
CATCHING_UP = 1  # handed over, but the kernel passed bytes up that are still to be moved here
KERNEL = 2  # the kernel redirects everything; the proxy watches for the FIN only
TAKEN_BACK = 3  # after a FIN or the credit ran out: read and written here again

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR
_HUP = select.EPOLLHUP
_RDHUP = select.EPOLLRDHUP
_EDGE = select.EPOLLET
# Everything a relay socket can report. The real server's socket is registered with all of it
# (writable also says that the connect completed); the client's without writable until the
# relay first has to wait for it (``Relay.watch_client_writes``).
_RELAY_EVENTS = _IN | _OUT | _RDHUP | _EDGE
_CLIENT_EVENTS = _IN | _RDHUP | _EDGE
# A socket whose bytes the kernel relays: only its FIN (and errors, always reported) matter.
_QUIET_EVENTS = _RDHUP | _EDGE
# A FIN, hang-up or error is pending: read until the socket says there is nothing more.
_MORE = _RDHUP | _HUP | _ERR
# Passed by the relay itself when it resumes a direction: read until the socket is empty.
_DRAIN = _RDHUP
_READ = _IN | _MORE
_DONTWAIT = socket.MSG_DONTWAIT
_EINPROGRESS = errno.EINPROGRESS
_NONBLOCK_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_NO_BUCKET: set[Any] = set()  # a relay's connect-timeout bucket before it has one (stays empty)


def _reset(sock: RawSocket) -> None:
    """Make the coming close a TCP reset rather than a FIN: the peer learns at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)


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
        self.again: list[Flow] = []
        self.again_handle: asyncio.Handle | None = None
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        # Relays connecting: the bucket of this tick, then sealed buckets with their deadline,
        # oldest first. A relay that connects leaves its bucket; what is left at the deadline
        # timed out. One timer for all, running only while some relay is connecting.
        self.filling: set[Relay] = set()
        self.sealed: deque[tuple[float, set[Relay]]] = deque()
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
                        self._fault(getattr(handler, "__self__", None))
        finally:
            self._end_turn()

    def _fault(self, owner: object) -> None:
        log.exception("proxy: relay failed")
        if isinstance(owner, Flow):
            owner = owner.relay
        if isinstance(owner, Relay):
            owner.broken()

    def _end_turn(self) -> None:
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
                if not flow.relay.finished:
                    try:
                        if flow.mode == CATCHING_UP:
                            flow.pump_offloaded(_DRAIN)
                        else:
                            flow.pump(_DRAIN)
                    except Exception:
                        self._fault(flow.relay)
        finally:
            self._end_turn()

    def add(self, sock: RawSocket, handler: Callable[[int], None], events: int) -> None:
        fd = sock.fileno()
        self.handlers[fd] = handler
        self.epoll.register(fd, events)

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
        self._end_turn()
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        if self.offload is not None:
            self.offload.close()
            self.offload = None

    # ---- connect deadlines -------------------------------------------------------------------

    def arm(self, relay: Relay) -> None:
        """Time the relay's connect out after ``connect_timeout`` (up to two ticks more)."""
        bucket = self.filling
        bucket.add(relay)
        relay.bucket = bucket
        if self.timer is None and not self.closed:
            self.timer = self.loop.call_later(TICK, self._on_tick)

    def _on_tick(self) -> None:
        self.timer = None
        now = self.loop.time()
        if self.filling:
            self.sealed.append((now + self.ctx.connect_timeout, self.filling))
            self.filling = set()
        sealed = self.sealed
        expired: list[Relay] = []
        while sealed and sealed[0][0] <= now:
            expired.extend(sealed.popleft()[1])
        try:
            for relay in expired:
                if not relay.finished and not relay.connected:
                    relay.connect_failed()
        finally:
            self._end_turn()
        if (sealed or self.filling) and not self.closed:
            self.timer = self.loop.call_later(TICK, self._on_tick)


class Listener:
    """A listening socket of a TCP virtual service, accepting in batches."""

    __slots__ = ("accept", "engine", "ep", "paused", "sock")

    def __init__(self, engine: TcpEngine, ep: ServiceEndpoint, sock: socket.socket) -> None:
        self.engine = engine
        self.ep = ep
        self.sock = sock
        self.accept: Callable[[], tuple[int, Any]] = cast(Any, sock)._accept
        self.paused = False
        engine.add(sock, self.on_event, _IN)  # level-triggered: a batch left over comes again

    def on_event(self, ev: int) -> None:
        engine = self.engine
        ctx = engine.ctx
        ep = self.ep
        # The descriptor-level accept: socket.accept() would turn family and type into enums
        # for every connection. Wrapping the descriptor costs one getsockname (CPython's check).
        accept = self.accept
        af = ep.af
        stream = socket.SOCK_STREAM
        schedule = ctx.director.schedule
        inet_pton = socket.inet_pton
        protocol, vaddr, vport = ep.protocol, ep.vaddr, ep.vport
        relays = ctx.relays
        add = engine.add
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _OUT_OF_FDS:
                    self._pause(e)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            csock = RawSocket(af, stream, 0, fd)
            if len(relays) >= ctx.max_tcp_relays:
                ctx.refused += 1
                _reset(csock)
                csock.close()
                continue
            try:
                conn = schedule(protocol, inet_pton(af, peer[0]), peer[1], vaddr, vport)
            except Exception:  # a fault in the core must cost one connection, not the listener
                log.exception("proxy: scheduling %s for %s failed", ep, peer)
                conn = None
            if conn is None:
                ctx.refused += 1
                _reset(csock)
                csock.close()
                continue
            ctx.accepted += 1
            relay = Relay(engine, ep, csock, peer, conn)
            relays.add(relay)
            relay.c2s.read_early()
            add(csock, relay.on_client, _CLIENT_EVENTS)
            relay.connect()

    def _pause(self, exc: OSError) -> None:
        # Out of descriptors: stop accepting for a moment rather than spinning on the backlog.
        log.warning("proxy: %s: accept: %s; pausing for 0.1 s", self.ep, exc.strerror or exc)
        self.paused = True
        with contextlib.suppress(OSError):
            self.engine.epoll.modify(self.sock.fileno(), 0)
        self.engine.loop.call_later(0.1, self._resume)

    def _resume(self) -> None:
        if self.paused and self.sock.fileno() >= 0 and not self.engine.closed:
            self.paused = False
            with contextlib.suppress(OSError):
                self.engine.epoll.modify(self.sock.fileno(), _IN)

    def close(self) -> None:
        fd = self.sock.fileno()
        if fd >= 0:
            self.engine.handlers.pop(fd, None)
            if not self.engine.closed:
                with contextlib.suppress(OSError):
                    self.engine.epoll.unregister(fd)
        self.sock.close()


class Flow:
    """One direction of a relay: bytes read from ``src`` are written to ``dst``."""

    __slots__ = (
        "accounted", "base", "big", "buf", "by_client", "cookie", "credit", "done", "dst", "eof",
        "in_pipe",
        "left", "mode", "nbytes", "pipe_r", "pipe_w", "pkts", "rbytes", "relay", "rsegs", "sent_base",
        "spliced", "src", "view",
    )

    def __init__(self, relay: Relay, by_client: bool) -> None:
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
            n = self.src.recv_into(self.buf, READ_SIZE, _DONTWAIT)
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
        if ev & _OUT:
            relay = self.relay
            other = relay.s2c if self.by_client else relay.c2s
            if other.left is not None or other.in_pipe:  # (the bit also comes with every read)
                other.writable()
                if self.relay.finished:
                    return
            if not ev & _READ:
                return
        if self.eof or self.left is not None or self.in_pipe:
            # Done, or waiting for dst to be writable (then the whole socket is read): only an
            # error needs an answer now.
            if ev & _ERR:
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
                n = src.recv_into(buf, READ_SIZE, _DONTWAIT)
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
                m = dst.send(view[:n], _DONTWAIT)
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
                if not ev & _MORE:
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

    def pump_offloaded(self, ev: int) -> None:
        """The handler of a socket whose direction the kernel relays.

        Catching up: what the kernel still hands up (bytes that came before the hand-over) is
        moved here, and then the kernel is told so, which lets it redirect from the next segment
        on. Relayed by the kernel: an event is a FIN, an error, or bytes passed up because the
        credit ran out; the proxy takes the direction back (``Relay.take_back``).
        """
        relay = self.relay
        if self.mode == KERNEL:
            if ev & _OUT:  # src is the other direction's dst, which had to wait for it
                other = relay.s2c if self.by_client else relay.c2s
                if other.left is not None or other.in_pipe:
                    other.writable()
            if relay.finished:
                return
            if ev & _ERR:
                relay.broken()
            elif ev & (_IN | _RDHUP | _HUP):
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
            m = self.dst.send(left, _DONTWAIT)
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
            with contextlib.suppress(OSError):
                relay.engine.epoll.modify(self.dst.fileno(), _QUIET_EVENTS | _OUT)
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
            self.pump_offloaded(_DRAIN)
        else:
            self.pump(_DRAIN)

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
        # splice() honours O_NONBLOCK of the sockets themselves, not MSG_DONTWAIT.
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


class Relay:
    """One proxied connection: the client's socket, the real server's, and both directions."""

    __slots__ = (
        "attempts_left", "bucket", "c2s", "client_out", "conn", "connected", "csock", "engine",
        "ep", "failed", "finished", "offloaded", "peer", "s2c", "ssock", "turns", "waiting",
    )

    def __init__(
        self, engine: TcpEngine, ep: ServiceEndpoint, csock: RawSocket, peer: tuple[Any, ...],
        conn: Connection,
    ) -> None:
        self.engine = engine
        self.ep = ep
        self.csock = csock
        self.peer = peer
        self.conn: Connection | None = conn
        self.ssock: RawSocket | None = None
        self.connected = False
        self.finished = False
        self.client_out = False  # the client's socket is watched for "writable" too
        # Events the client's socket reported before the real server accepted.
        self.waiting = 0
        self.failed: list[Any] | None = None
        self.attempts_left = engine.ctx.retries
        self.bucket = _NO_BUCKET
        self.turns = 0
        self.offloaded = False
        self.c2s = Flow(self, True)
        self.s2c = Flow(self, False)

    # ---- connecting --------------------------------------------------------------------------

    def watch_client_writes(self) -> None:
        if not self.client_out and not self.finished:
            self.client_out = True
            with contextlib.suppress(OSError):
                self.engine.epoll.modify(self.csock.fileno(), _RELAY_EVENTS)

    def connect(self) -> None:
        """Start a non-blocking connect to the real server of ``self.conn``."""
        engine = self.engine
        ctx = engine.ctx
        ep = self.ep
        while not self.finished:
            conn = self.conn
            assert conn is not None
            try:
                s = RawSocket(ep.af, _NONBLOCK_STREAM)
            except OSError:  # out of descriptors or buffers: no retry would do better
                self._give_up()
                return
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                err = s.connect_ex((ctx.host_of(ep.af, conn.daddr), conn.dport or ep.vport))
                if err == _EINPROGRESS or err == 0:
                    engine.add(s, self.on_server, _RELAY_EVENTS)
                    self.ssock = s
                    self.c2s.dst = s
                    self.s2c.src = s
                    engine.arm(self)
                    return
            except (OSError, ValueError, OverflowError):  # an address this family cannot reach
                pass
            s.close()  # refused or unreachable at once
            if not self._next_server():
                return

    def connect_failed(self) -> None:
        """The real server refused, reset or did not answer in time: try another one."""
        engine = self.engine
        self.bucket.discard(self)
        engine.forget(self.ssock)
        self.ssock = None
        if self._next_server():
            self.connect()

    def _next_server(self) -> bool:
        ctx = self.engine.ctx
        ctx.connect_failures += 1
        conn = self.conn
        assert conn is not None
        if self.failed is None:
            self.failed = []
        self.failed.append(conn.dest)
        ctx.director.proxy_closed(conn)
        nxt = ctx.reschedule(self.ep, self.peer, self.failed) if self.attempts_left > 0 else None
        self.attempts_left -= 1
        if nxt is None:
            self.conn = None
            self._give_up()
            return False
        ctx.retried += 1
        self.conn = nxt
        return True

    def _give_up(self) -> None:
        # No real server can take it: the client gets a reset at once.
        self.engine.ctx.refused += 1
        _reset(self.csock)
        self._finish()

    def _established(self) -> None:
        self.connected = True
        engine = self.engine
        self.bucket.discard(self)
        conn = self.conn
        assert conn is not None
        engine.ctx.director.proxy_established(conn)
        c2s = self.c2s
        # From now on each socket's events go straight to the direction it is the source of.
        handlers = engine.handlers
        handlers[self.csock.fileno()] = c2s.pump
        handlers[self.s2c.src.fileno()] = self.s2c.pump
        if c2s.left is not None and not c2s.send_left():
            return  # the rest goes when the server's socket is writable, then the client is read
        if self.waiting:
            ev = self.waiting
            self.waiting = 0
            c2s.pump(ev)

    # ---- events ------------------------------------------------------------------------------

    def on_client(self, ev: int) -> None:
        """The client's events until the real server accepted (then ``c2s.pump`` takes them)."""
        if self.connected:
            self.c2s.pump(ev)
        elif ev & (_ERR | _HUP):  # the client left before the real server answered
            _reset(self.csock)
            self._finish()
        else:
            self.waiting |= ev & (_IN | _RDHUP)

    def on_server(self, ev: int) -> None:
        """The real server's events until it accepted (then ``s2c.pump`` takes them)."""
        if not self.connected:
            if ev & (_ERR | _HUP):
                self.connect_failed()
                return
            if not ev & _OUT:
                return
            self._established()
            if self.finished:
                return
        self.s2c.pump(ev)

    # ---- the kernel relay ------------------------------------------------------------------------

    def offload(self) -> None:
        """Hand both directions to the kernel's socket map, at a moment nothing waits in the proxy.

        Anything that stops it (a direction mid-way, the map full, a socket the kernel will not
        take) leaves the relay in user space, as it was.
        """
        c2s, s2c = self.c2s, self.s2c
        offload = self.engine.offload
        ssock = self.ssock
        if (
            offload is None or ssock is None or self.finished or not self.connected or self.offloaded
            or c2s.left is not None or s2c.left is not None or c2s.spliced or s2c.spliced
            or c2s.eof or s2c.eof
        ):
            return
        csock = self.csock
        try:
            cc, cs = socket_cookie(csock), socket_cookie(ssock)
            c2s.sent_base = bytes_written(ssock)
            s2c.sent_base = bytes_written(csock)
            offload.attach(csock, cc, ssock, cs)
        except OSError as e:
            log.debug("proxy: relay stays in user space: %s", e)
            return
        self.offloaded = True
        self.engine.ctx.offloaded += 1
        handlers = self.engine.handlers
        for flow, cookie, sock in ((c2s, cc, csock), (s2c, cs, ssock)):
            flow.mode = CATCHING_UP
            flow.cookie = cookie
            flow.credit = offload.window
            flow.base = flow.accounted + flow.nbytes
            flow.big = -(1 << 62)  # bytes passed up cannot be spliced: no splice from now on
            handlers[sock.fileno()] = flow.pump_offloaded
        # Both sides start with nothing taken: a side the kernel has handed nothing up yet goes
        # quiet at once; the other is read as before until the proxy has caught up with it.
        for flow in (c2s, s2c):
            try:
                passed = offload.counters(flow.cookie)[0]
            except OSError:
                continue
            if passed == 0:
                self.quiet(flow)

    def quiet(self, flow: Flow) -> None:
        """The kernel relays everything ``flow.src`` receives: watch it for its FIN only."""
        flow.mode = KERNEL
        if flow.by_client:
            self.client_out = False
        with contextlib.suppress(OSError):
            self.engine.epoll.modify(flow.src.fileno(), _QUIET_EVENTS)

    def take_back(self, flow: Flow) -> None:
        """Relay ``flow`` here again (its FIN came, or its credit ran out), once the bytes the
        kernel redirected have all reached dst: what the kernel passes up meanwhile waits in
        src's socket, charged to it, so its TCP window closes instead of memory growing."""
        offload = self.engine.offload
        if flow.mode != KERNEL or offload is None:
            return
        flow.mode = TAKEN_BACK
        with contextlib.suppress(OSError):
            offload.hold(flow.cookie, flow.peer_cookie())
        self._when_delivered(flow, self._resume, 0.0005)

    def _resume(self, flow: Flow) -> None:
        sock = flow.src
        self.engine.handlers[sock.fileno()] = flow.pump
        if flow.by_client:
            self.client_out = True
        with contextlib.suppress(OSError):
            self.engine.epoll.modify(sock.fileno(), _RELAY_EVENTS)
        flow.pump(_DRAIN)

    def _delivered(self, flow: Flow) -> bool:
        """Has ``flow.dst`` been given every byte the kernel redirected to it from ``flow.src``?"""
        offload = self.engine.offload
        if offload is None:
            return True
        try:
            return flow.redirect_delivered() >= offload.counters(flow.cookie)[1]
        except OSError:
            return True  # a socket gone: nothing more will be delivered

    def _when_delivered(
        self, flow: Flow, then: Callable[[Flow], None], delay: float, timer: bool = False,
    ) -> None:
        # Polled, from half a millisecond up to every 0.1 s: the kernel tells nobody when its
        # worker has written to a socket. A real server that never reads keeps this waiting,
        # as it would keep a relay in user space waiting; closing either side ends it.
        if self.finished:
            return
        if not self._delivered(flow):
            self.engine.loop.call_later(
                delay, self._when_delivered, flow, then, min(delay * 2, 0.1), True
            )
        elif not timer:
            then(flow)  # within a turn of the engine, which handles faults and closes
        else:
            try:
                then(flow)
            except Exception:
                self.engine._fault(self)
            finally:
                self.engine._end_turn()

    def _refresh_credit(self, flow: Flow, passed: int) -> None:
        """Once a second: let the kernel redirect up to a window beyond what has gone out, or,
        when it had to pass bytes up (the credit ran out), take the direction back."""
        offload = self.engine.offload
        if offload is None:
            return
        taken = flow.taken()
        if passed != taken:
            self.take_back(flow)
            return
        try:
            credit = max(flow.redirect_delivered(), 0) + offload.window
            if credit != flow.credit:
                offload.taken(flow.cookie, flow.peer_cookie(), taken, credit)
                flow.credit = credit
        except OSError:
            pass

    # ---- endings -------------------------------------------------------------------------------

    def direction_done(self, flow: Flow) -> None:
        """One side's FIN and all its bytes reached the other side."""
        if self.offloaded and not self._delivered(flow):
            # The kernel still has redirected bytes on their way to dst: the FIN goes after them.
            self._when_delivered(flow, self._pass_fin, 0.0005)
            return
        self._pass_fin(flow)

    def _pass_fin(self, flow: Flow) -> None:
        if self.finished:
            return
        other = self.s2c if flow is self.c2s else self.c2s
        if other.done:
            # Both FINs passed: closing sends the second; straight to proxy_closed (TIME_WAIT).
            self._finish()
            return
        conn = self.conn
        assert conn is not None
        self.engine.ctx.director.proxy_half_closed(conn, flow.by_client)
        with contextlib.suppress(OSError):
            flow.dst.shutdown(socket.SHUT_WR)

    def broken(self) -> None:
        """A socket error on either side: both sides get a reset, as a router in between would."""
        if self.finished:
            return
        _reset(self.csock)
        if self.ssock is not None:
            _reset(self.ssock)
        self._finish()

    def abort(self) -> None:
        """Drop the relay at once, closing both sides (the data plane is stopping)."""
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        engine = self.engine
        if not self.connected:
            self.bucket.discard(self)
        engine.forget(self.csock)
        engine.forget(self.ssock)
        if self.c2s.spliced:
            self.c2s.close_pipe()
        if self.s2c.spliced:
            self.s2c.close_pipe()
        engine.ctx.relays.discard(self)
        conn = self.conn
        if conn is not None:
            self.flush()
            engine.ctx.director.proxy_closed(conn)
        if self.offloaded and engine.offload is not None:
            engine.offload.detach(self.c2s.cookie, self.s2c.cookie)
        # Flow and relay point at each other: cut that here so the relay is freed at once by
        # reference counting instead of waiting for (and costing) the cyclic collector.
        self.c2s.relay = self.s2c.relay = _GONE

    def flush(self) -> None:
        """Hand the counts gathered since the last flush to the core."""
        conn = self.conn
        if conn is None:
            return
        c2s = self.c2s
        s2c = self.s2c
        if self.offloaded:
            # What the kernel relayed since the last flush, in segments and bytes.
            offload = self.engine.offload
            if offload is not None:
                for flow in (c2s, s2c):
                    try:
                        passed, rbytes, rsegs = offload.counters(flow.cookie)
                    except OSError:
                        continue
                    flow.accounted -= rbytes - flow.rbytes  # not read by the proxy
                    flow.nbytes += rbytes - flow.rbytes
                    flow.pkts += rsegs - flow.rsegs
                    flow.rbytes, flow.rsegs = rbytes, rsegs
                    if flow.mode == KERNEL and not self.finished:
                        self._refresh_credit(flow, passed)
        if c2s.pkts:
            self.engine.ctx.director.account(conn, DIR_INPUT, c2s.pkts, c2s.nbytes)
            c2s.accounted += c2s.nbytes
            c2s.pkts = c2s.nbytes = 0
        if s2c.pkts:
            self.engine.ctx.director.account(conn, DIR_OUTPUT, s2c.pkts, s2c.nbytes)
            s2c.accounted += s2c.nbytes
            s2c.pkts = s2c.nbytes = 0


# What a finished relay's directions point at: finished, so any late call on them is a no-op.
_GONE = Relay.__new__(Relay)
_GONE.finished = True
