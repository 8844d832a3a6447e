"""One proxied TCP connection: an accepted client joined to one real server.

What this is for: the life of a relay in ``ProxyDataPlane``, i.e. full NAT done with two sockets.
The client's connection ends at the VIP; a second connection goes from the director to the real
server the core chose; its two directions (``flow.Flow``) copy the bytes, and both half-closes
are propagated (a FIN read on one side becomes ``shutdown(SHUT_WR)`` on the other). Accepted
sockets stay blocking (reads and writes pass MSG_DONTWAIT) and inherit TCP_NODELAY from the
listener; the peer's address comes from accept and the VIP is the listener's, so nothing is asked
of the kernel per connection beyond the relay itself. Relay sockets are the C-level
``_socket.socket`` objects, without the Python wrapper class around them: its constructor and
close are Python code, run twice per connection.

What this is not for: choosing servers, persistence, thresholds and connection states (all the
core's, through ``Director``), or accepting (``listener``).

What a client sent before it was accepted (typically its whole request) is read at once, as one
read, and sent when the real server accepts; anything later stays in the client's socket until
then.

Core events: ``proxy_established`` once the real server accepted, ``proxy_half_closed`` for the
first FIN passed on (by_client tells whose), ``proxy_closed`` when both directions are done or
either side failed (the second FIN goes straight to ``proxy_closed``: it would not change the
core's state). Counts are kept in the directions and handed to the core in batches (when the
relay ends and on the data plane's housekeeping tick, about once a second).

Connect failures: when the real server refuses or does not answer within ``connect_timeout``
(``engine.TcpEngine`` times connects out with one coarse timer), the relay asks the core again,
skipping the servers that failed for this client (up to ``retries`` more attempts), so a client
sees no error while one server is down. Nothing is marked in the core: taking a server out is the
health checker's job. When no server can take the connection, the client gets a reset.

The kernel relay: a relay that has served ``flow.OFFLOAD_AFTER`` requests (client reads that
emptied the client's socket) is handed to the kernel's socket map when the data plane may
(``sockmap``: root, a kernel with socket maps, not turned off). From then on the kernel moves its
bytes and the proxy is not woken per request. A direction is taken back (after its FIN, or when
its credit ran out because the other side does not take bytes as fast) only once every redirected
byte reached the other socket, so order and backpressure hold. Counters come from the kernel's
per-socket counts on the housekeeping tick, one redirected segment counting as one packet.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from _socket import socket as RawSocket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pylvs.core.director import DIR_INPUT, DIR_OUTPUT
from pylvs.dataplane.proxy.engine import (
    DRAIN,
    EV_ERR,
    EV_HUP,
    EV_IN,
    EV_OUT,
    EV_RDHUP,
    QUIET_EVENTS,
    RELAY_EVENTS,
    TcpEngine,
    reset,
)
from pylvs.dataplane.proxy.flow import CATCHING_UP, KERNEL, TAKEN_BACK, Flow
from pylvs.dataplane.proxy.sockmap import bytes_written, socket_cookie

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Connection
    from pylvs.dataplane.proxy.common import ServiceEndpoint

log = logging.getLogger("pylvs.dataplane.proxy")

_EINPROGRESS = errno.EINPROGRESS
_NONBLOCK_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_NO_BUCKET: set[Any] = set()  # a relay's connect-timeout bucket before it has one (stays empty)


class Relay:
    """One proxied connection: the client's socket, the real server's, and both directions."""

    __slots__ = (
        "attempts_left", "bucket", "c2s", "client_out", "conn", "connected", "csock", "engine",
        "ep", "failed", "finished", "offloaded", "peer", "s2c", "seen_in", "seen_out", "since",
        "ssock", "turns", "waiting", "waiting_server",
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
        # The timeouts' view (``tick``): bytes moved each way when last looked at, since when
        # nothing moved (-1: not looked at yet), and whether the server owes an answer.
        self.seen_in = self.seen_out = 0
        self.since = -1.0
        self.waiting_server = False
        engine.ctx.hold(conn.dest)
        self.c2s = Flow(self, True)
        self.s2c = Flow(self, False)

    # ---- connecting --------------------------------------------------------------------------

    def watch_client_writes(self) -> None:
        if not self.client_out and not self.finished:
            self.client_out = True
            self.engine.modify(self.csock, RELAY_EVENTS)

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
                    engine.add(s, self.on_server, RELAY_EVENTS)
                    self.ssock = s
                    self.c2s.dst = s
                    self.s2c.src = s
                    engine.arm(self, ep.limits.timeouts.connect)
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
        ctx.release(conn.dest)
        ctx.director.proxy_closed(conn)
        nxt = ctx.reschedule(self.ep, self.peer, self.failed) if self.attempts_left > 0 else None
        self.attempts_left -= 1
        if nxt is None:
            self.conn = None
            self._give_up()
            return False
        ctx.retried += 1
        ctx.hold(nxt.dest)
        self.conn = nxt
        return True

    def _give_up(self) -> None:
        # No real server can take it: the client gets a reset at once.
        self.engine.ctx.refused += 1
        reset(self.csock)
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
        elif ev & (EV_ERR | EV_HUP):  # the client left before the real server answered
            reset(self.csock)
            self._finish()
        else:
            self.waiting |= ev & (EV_IN | EV_RDHUP)

    def on_server(self, ev: int) -> None:
        """The real server's events until it accepted (then ``s2c.pump`` takes them)."""
        if not self.connected:
            if ev & (EV_ERR | EV_HUP):
                self.connect_failed()
                return
            if not ev & EV_OUT:
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
        self.engine.modify(flow.src, QUIET_EVENTS)

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
        self.engine.modify(sock, RELAY_EVENTS)
        flow.pump(DRAIN)

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
                self.engine.fault(self)
            finally:
                self.engine.end_turn()

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
        reset(self.csock)
        if self.ssock is not None:
            reset(self.ssock)
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
        if engine.held:
            engine.room()
        conn = self.conn
        if conn is not None:
            engine.ctx.release(conn.dest)
            self.flush()
            engine.ctx.director.proxy_closed(conn)
        if self.offloaded and engine.offload is not None:
            engine.offload.detach(self.c2s.cookie, self.s2c.cookie)
        # Flow and relay point at each other: cut that here so the relay is freed at once by
        # reference counting instead of waiting for (and costing) the cyclic collector.
        self.c2s.relay = self.s2c.relay = _GONE

    # ---- timeouts (``settings``) -------------------------------------------------------------

    def tick(self, now: float) -> str | None:
        """Once a second, after ``flush``: the timeout that ran out, or None.

        Also sets the core entry's expiry to the relay's (plus a second, so that the relay is
        closed, and its entry moved to TIME_WAIT, before the entry could expire under it), which
        is what ``ipvsadm -Lnc`` shows; with every timeout off the entry is kept alive."""
        if not self.connected or self.finished:
            return None  # connecting: the engine's connect timer
        c2s, s2c = self.c2s, self.s2c
        moved_in = c2s.accounted + c2s.nbytes + c2s.rbytes
        moved_out = s2c.accounted + s2c.nbytes + s2c.rbytes
        if moved_in != self.seen_in or moved_out != self.seen_out or self.since < 0:
            if moved_out != self.seen_out:
                self.waiting_server = False  # the server answered (or spoke first)
            elif moved_in != self.seen_in:
                self.waiting_server = True
            self.seen_in, self.seen_out, self.since = moved_in, moved_out, now
        t = self.ep.limits.timeouts
        if (c2s.eof and not s2c.eof) or (self.waiting_server and not s2c.eof):
            kind, limit = "server", t.server  # the server owes an answer (or the rest)
        elif t.tunnel and moved_in and moved_out:
            kind, limit = "tunnel", t.tunnel
        else:
            kind, limit = "client", t.client
        conn = self.conn
        if not limit:
            if conn is not None and conn.bucket is not None:
                conn.deadline = max(conn.deadline, now + 2.0)
            return None
        deadline = self.since + limit
        if now >= deadline:
            return kind
        if conn is not None and conn.bucket is not None:
            conn.deadline = deadline + 1.0
        return None

    def time_out(self, kind: str) -> None:
        """``kind`` ran out: close both sides (a FIN each, a reset where bytes were left unread)
        and count it; the core's entry goes to TIME_WAIT as for any relay that ends."""
        if self.finished:
            return
        timed_out = self.engine.ctx.timed_out
        timed_out[kind] = timed_out.get(kind, 0) + 1
        self._finish()
        self.engine.end_turn()

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
