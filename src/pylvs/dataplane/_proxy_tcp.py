"""TCP relay of the socket-level proxy: one accepted client connection joined to one real server.

What this is for: the hot path of ``ProxyDataPlane`` for TCP services, i.e. full NAT done with
two sockets. The client's connection ends at the VIP; a second connection goes from the director to
the real server the core chose; bytes are copied between the two with asyncio Protocols (no
streams, no per-chunk coroutine), with bounded buffers and backpressure, and both half-closes are
propagated (``shutdown(SHUT_WR)`` on one side becomes ``shutdown(SHUT_WR)`` on the other).
Bytes a client sends before the real server has answered are held (up to the high-water mark,
then the client is paused) and sent as soon as it has; long one-way streams move to splice
(``_proxy_splice``).

Core events: ``proxy_established`` once the real server accepted, ``proxy_half_closed`` for the
first FIN (by_client tells whose), ``proxy_closed`` when both directions are done or either side
failed (a second FIN goes straight to ``proxy_closed``: it would not change the core's state).

What this is not for: choosing servers, persistence, thresholds and connection states (all the
core's, through ``Director``), or opening listening sockets (``proxy.py``).

Counting, as the core's ``account`` wants it: a socket-level proxy sees no packets, so one
``data_received`` call (one read of up to the loop's read size) counts as one packet in its
direction; bytes are exact. Counts are kept in the relay and handed to the core in batches (when
the relay ends and on the data plane's housekeeping tick, about once a second), which keeps the
per-read work to two integer additions and one write.

Connect failures: when the real server refuses or does not answer within ``connect_timeout``, the
relay asks the core again, skipping the servers that failed for this client (up to ``retries``
more attempts), so a client sees no error while one server is down. Nothing is marked in the core:
taking a server out is the health checker's job. When no server can take the connection, the
client gets a reset at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import TYPE_CHECKING, Any, cast

from pylvs.core.director import DIR_INPUT, DIR_OUTPUT
from pylvs.dataplane._proxy_splice import SpliceLeg

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Connection
    from pylvs.dataplane._proxy_common import ProxyContext, ServiceEndpoint

_LINGER_RST = struct.pack("ii", 1, 0)
# A read this large means the peer is streaming; after SPLICE_AFTER of them in one direction
# that direction moves to splice (when the data plane allows it).
SPLICE_READ = 65536
SPLICE_AFTER = 4
log = logging.getLogger("pylvs.dataplane.proxy")


def reset_transport(transport: asyncio.Transport) -> None:
    """Close with a TCP reset rather than a FIN: the client learns at once that nobody is there."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
    transport.abort()


class ServerSide(asyncio.Protocol):
    """The director's connection to the real server; everything it reads goes to the client."""

    __slots__ = ("relay", "timed_out", "transport")

    def __init__(self, relay: ClientSide) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.timed_out = False

    def __call__(self) -> ServerSide:
        # Its own protocol factory: create_connection gets this very object back.
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        relay = self.relay
        relay.connected = True
        hw = relay.ctx.high_water
        transport.set_write_buffer_limits(hw, hw // 4)

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        n = len(data)
        relay.out_pkts += 1
        relay.out_bytes += n
        relay.client.write(data)  # type: ignore[union-attr]
        if n >= SPLICE_READ:
            relay.big_read(False)

    def eof_received(self) -> bool:
        self.relay.server_eof_received()
        return True

    def pause_writing(self) -> None:
        # The real server is slower than the client: stop reading the client.
        relay = self.relay
        if not relay.finished and relay.client is not None:
            relay.client.pause_reading()

    def resume_writing(self) -> None:
        relay = self.relay
        if not relay.finished and relay.client is not None and relay.connected:
            relay.client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        relay = self.relay
        if relay.server is self:
            relay.server_lost(exc)


class ClientSide(asyncio.Protocol):
    """One proxied connection, from the client's side: it owns the relay's state."""

    __slots__ = (
        "big_in", "big_out", "client", "client_eof", "conn", "connect_task", "connected",
        "ctx", "endpoint", "finished", "in_bytes", "in_leg", "in_pkts", "out_bytes", "out_leg",
        "out_pkts", "peer", "pending", "pending_size", "server", "server_eof", "sink",
    )

    def __init__(self, ctx: ProxyContext, endpoint: ServiceEndpoint) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.client: asyncio.Transport | None = None
        self.server: ServerSide | None = None
        self.conn: Connection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.peer: tuple[Any, ...] = ()
        self.connected = False
        self.finished = False
        self.client_eof = False
        self.server_eof = False
        self.in_pkts = 0
        self.in_bytes = 0
        self.out_pkts = 0
        self.out_bytes = 0
        # Where the client's bytes go: a bounded list until the real server is connected, then
        # straight to the server transport's write (one attribute call on the hot path).
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.sink = self._hold
        # Bulk path (see _proxy_splice): full-size reads seen per direction, and the legs.
        self.big_in = 0
        self.big_out = 0
        self.in_leg: SpliceLeg | None = None
        self.out_leg: SpliceLeg | None = None

    # ---- client transport events ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.client = transport
        ctx = self.ctx
        ep = self.endpoint
        peer = transport.get_extra_info("peername")
        if not peer or len(ctx.relays) >= ctx.max_tcp_relays:
            ctx.refused += 1
            self.finished = True
            reset_transport(transport)
            return
        self.peer = peer
        try:
            conn = ctx.director.schedule(
                ep.protocol, socket.inet_pton(ep.af, peer[0]), peer[1], ep.vaddr, ep.vport
            )
        except Exception:  # a fault in the core must cost one connection, not the listener
            log.exception("proxy: scheduling %s for %s failed", ep, peer)
            conn = None
        if conn is None:
            ctx.refused += 1
            self.finished = True
            reset_transport(transport)
            return
        ctx.accepted += 1
        self.conn = conn
        ctx.relays.add(self)
        hw = ctx.high_water
        transport.set_write_buffer_limits(hw, hw // 4)
        self.connect_task = ctx.loop.create_task(self._connect(conn))

    def data_received(self, data: bytes) -> None:
        n = len(data)
        self.in_pkts += 1
        self.in_bytes += n
        self.sink(data)
        if n >= SPLICE_READ:
            self.big_read(True)

    def big_read(self, from_client: bool) -> None:
        """A full-size read: after a few, move that direction to splice."""
        if from_client:
            self.big_in += 1
            if self.big_in < SPLICE_AFTER or self.in_leg is not None:
                return
        else:
            self.big_out += 1
            if self.big_out < SPLICE_AFTER or self.out_leg is not None:
                return
        if not self.ctx.splice or self.finished or self.sink == self._hold:
            return
        client = self.client
        server = self.server.transport if self.server is not None else None
        if client is None or server is None:
            return
        src, dst = (client, server) if from_client else (server, client)
        if dst.get_write_buffer_size():
            return  # bytes still queued in this direction: try again on a later read
        if from_client:
            leg = SpliceLeg(self, src, dst, self._count_in, self._spliced_client_eof)
        else:
            leg = SpliceLeg(self, src, dst, self._count_out, self.server_eof_received)
        if not leg.start():
            # Out of descriptors or pipes for now: this relay stays on its transports.
            if from_client:
                self.big_in = -(1 << 62)
            else:
                self.big_out = -(1 << 62)
            return
        self.ctx.spliced += 1
        if from_client:
            self.in_leg = leg
        else:
            self.out_leg = leg

    def _count_in(self, n: int) -> None:
        self.in_pkts += 1
        self.in_bytes += n

    def _count_out(self, n: int) -> None:
        self.out_pkts += 1
        self.out_bytes += n

    def _spliced_client_eof(self) -> None:
        self.eof_received()

    def splice_failed(self, exc: OSError) -> None:
        """A spliced direction hit a socket error: reset both sides, as a transport would."""
        if self.finished:
            return
        if self.client is not None:
            reset_transport(self.client)
        if self.server is not None and self.server.transport is not None:
            reset_transport(self.server.transport)
        self._finish()

    def _hold(self, data: bytes) -> None:
        # Bytes that came before the real server answered: kept, up to the high-water mark.
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= self.ctx.high_water and self.client is not None:
            self.client.pause_reading()

    def eof_received(self) -> bool:
        if self.finished:
            return False
        self.client_eof = True
        if self.sink == self._hold:
            return True  # passed on once the real server is connected
        server = self.server
        if server is not None and server.transport is not None:
            if self.server_eof:
                # Both FINs seen: straight to proxy_closed (TIME_WAIT) in _close_both, the
                # second half-close would change nothing in the core.
                self._close_both()
            else:
                conn = self.conn
                assert conn is not None
                self.ctx.director.proxy_half_closed(conn, True)
                if server.transport.can_write_eof():
                    server.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        # The client is slower than the real server: stop reading the real server.
        server = self.server
        if not self.finished and server is not None and server.transport is not None:
            server.transport.pause_reading()

    def resume_writing(self) -> None:
        server = self.server
        if not self.finished and server is not None and server.transport is not None:
            server.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.finished:
            return
        server = self.server
        if server is not None and server.transport is not None:
            if exc is None:
                server.transport.close()
            else:
                reset_transport(server.transport)
        task = self.connect_task
        if task is not None and not task.done():
            task.cancel()
        self._finish()

    # ---- real-server side events (called by ServerSide) ------------------------------------

    def server_eof_received(self) -> None:
        if self.finished:
            return
        self.server_eof = True
        client = self.client
        assert client is not None
        if self.client_eof:
            self._close_both()
            return
        conn = self.conn
        assert conn is not None
        self.ctx.director.proxy_half_closed(conn, False)
        if client.can_write_eof():
            client.write_eof()

    def server_lost(self, exc: Exception | None) -> None:
        if self.finished or not self.connected:
            return
        client = self.client
        assert client is not None
        if exc is None:
            client.close()
        else:
            reset_transport(client)
        self._finish()

    # ---- connection set-up and tear-down ---------------------------------------------------

    async def _connect(self, conn: Connection) -> None:
        ctx = self.ctx
        director = ctx.director
        ep = self.endpoint
        failed: list[Any] = []
        attempts_left = ctx.retries
        loop = ctx.loop
        while True:
            server = ServerSide(self)
            self.server = server
            port = conn.dport or ep.vport
            # A bare timer rather than asyncio.timeout(): this runs once per connection.
            timer = loop.call_later(ctx.connect_timeout, self._connect_timed_out, server)
            try:
                await loop.create_connection(server, ctx.host_of(ep.af, conn.daddr), port)
                timer.cancel()
                if not server.timed_out:
                    break
            except (OSError, ValueError):  # refused, unreachable, bad address
                timer.cancel()
            except asyncio.CancelledError:
                timer.cancel()
                if not server.timed_out:
                    raise
            ctx.connect_failures += 1
            if self.finished:
                return
            self.server = None
            self.connected = False
            if server.transport is not None:  # connected just as the timer fired
                server.transport.abort()
            failed.append(conn.dest)
            director.proxy_closed(conn)
            nxt = ctx.reschedule(ep, self.peer, failed) if attempts_left > 0 else None
            attempts_left -= 1
            if nxt is None:
                self.finished = True
                self.conn = None
                ctx.relays.discard(self)
                ctx.refused += 1
                assert self.client is not None
                reset_transport(self.client)
                return
            ctx.retried += 1
            self.conn = conn = nxt
        client = self.client
        assert client is not None and server.transport is not None
        if self.finished:  # one side left while we were connecting
            server.transport.close()
            return
        director.proxy_established(conn)
        st = server.transport
        if self.pending:
            st.writelines(self.pending)
            self.pending = []
        self.sink = st.write
        if self.client_eof:
            director.proxy_half_closed(conn, True)
            if self.server_eof:
                self._close_both()
            elif st.can_write_eof():
                st.write_eof()
        elif self.pending_size >= ctx.high_water:
            client.resume_reading()
        self.pending_size = 0

    def _connect_timed_out(self, server: ServerSide) -> None:
        task = self.connect_task
        if self.server is server and task is not None and not task.done():
            server.timed_out = True
            task.cancel()

    def _close_both(self) -> None:
        assert self.client is not None
        self.client.close()
        if self.server is not None and self.server.transport is not None:
            self.server.transport.close()
        self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.in_leg is not None:
            self.in_leg.close()
        if self.out_leg is not None:
            self.out_leg.close()
        self.ctx.relays.discard(self)
        conn = self.conn
        if conn is None:
            return
        self.flush()
        self.ctx.director.proxy_closed(conn)

    def flush(self) -> None:
        """Hand the counts gathered since the last flush to the core."""
        conn = self.conn
        if conn is None or not (self.in_pkts or self.out_pkts):
            return
        account = self.ctx.director.account
        if self.in_pkts:
            account(conn, DIR_INPUT, self.in_pkts, self.in_bytes)
            self.in_pkts = self.in_bytes = 0
        if self.out_pkts:
            account(conn, DIR_OUTPUT, self.out_pkts, self.out_bytes)
            self.out_pkts = self.out_bytes = 0

    def abort(self) -> None:
        """Drop the relay at once (data plane stopping)."""
        if self.client is not None:
            self.client.abort()
        if self.server is not None and self.server.transport is not None:
            self.server.transport.abort()
        task = self.connect_task
        if task is not None and not task.done():
            task.cancel()
        self._finish()
