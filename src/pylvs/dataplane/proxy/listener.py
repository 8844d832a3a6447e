"""The listening socket of a TCP virtual service: accepting in batches and starting relays.

What this is for: turning each accepted connection into a ``relay.Relay`` with the real server
the core's ``Director.schedule`` picks, or refusing it with a reset (no server, a fault in the
core). Accepting uses the descriptor-level accept (no enum conversions, no Python wrapper per
connection) and stops for a moment when the process runs out of descriptors rather than spinning
on the backlog.

At the relay limit the listener stops accepting: clients wait in the kernel's accept queue and
are taken as soon as a relay ends; those still there after ``settings.queue`` seconds are taken
and reset (counted), so a client learns at once instead of timing out. A server that already
holds its share of the relays (``ProxyContext.over_share``) does not get the connection: the core
is asked for another server, as after a failed connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from _socket import socket as RawSocket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pylvs.dataplane.proxy.common import ServiceEndpoint
from pylvs.dataplane.proxy.engine import CLIENT_EVENTS, EV_IN, TcpEngine, reset
from pylvs.dataplane.proxy.relay import Relay

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Connection

log = logging.getLogger("pylvs.dataplane.proxy")

# Accepts per listener and turn, so that a connection storm cannot starve the relays.
ACCEPT_BATCH = 64
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Listener:
    """A listening socket of a TCP virtual service, accepting in batches."""

    __slots__ = ("accept", "engine", "ep", "full", "paused", "queue_timer", "sock")

    def __init__(self, engine: TcpEngine, ep: ServiceEndpoint, sock: socket.socket) -> None:
        self.engine = engine
        self.ep = ep
        self.sock = sock
        self.accept: Callable[[], tuple[int, Any]] = cast(Any, sock)._accept
        self.paused = False
        self.full = False  # stopped at the relay limit (``engine.held``)
        self.queue_timer: asyncio.TimerHandle | None = None
        engine.add(sock, self.on_event, EV_IN)  # level-triggered: a batch left over comes again

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
        limit = ctx.max_tcp_relays
        for _ in range(ACCEPT_BATCH):
            if len(relays) >= limit:
                self._hold()
                return
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
            try:
                conn = schedule(protocol, inet_pton(af, peer[0]), peer[1], vaddr, vport)
            except Exception:  # a fault in the core must cost one connection, not the listener
                log.exception("proxy: scheduling %s for %s failed", ep, peer)
                conn = None
            if conn is not None and ctx.shares and ctx.over_share(conn):
                conn = self._elsewhere(conn, peer)
            if conn is None:
                ctx.refused += 1
                reset(csock)
                csock.close()
                continue
            ctx.accepted += 1
            relay = Relay(engine, ep, csock, peer, conn)
            relays.add(relay)
            relay.c2s.read_early()
            add(csock, relay.on_client, CLIENT_EVENTS)
            relay.connect()

    def _elsewhere(self, conn: Connection, peer: tuple[Any, ...]) -> Connection | None:
        """``conn``'s server holds its share of the relays: another server, or None."""
        ctx = self.engine.ctx
        ctx.director.proxy_closed(conn)
        try:
            other = ctx.reschedule(self.ep, peer, [conn.dest])
        except Exception:
            log.exception("proxy: rescheduling %s for %s failed", self.ep, peer)
            return None
        if other is not None:
            ctx.share_redispatched += 1
        return other

    # ---- the relay limit -------------------------------------------------------------------

    def _hold(self) -> None:
        """The relay limit is reached: stop accepting until a relay ends (``resume_accepting``);
        clients wait in the accept queue, for ``settings.queue`` seconds at most."""
        if self.full:
            return
        engine = self.engine
        ctx = engine.ctx
        self.full = True
        ctx.limit_reached += 1
        engine.modify(cast(RawSocket, self.sock), 0)
        engine.hold_listener(self)
        queue = ctx.settings.queue
        self.queue_timer = engine.loop.call_later(queue, self._refuse_waiting)

    def resume_accepting(self) -> None:
        if not self.full:
            return
        self.full = False
        if self.queue_timer is not None:
            self.queue_timer.cancel()
            self.queue_timer = None
        if self.sock.fileno() >= 0 and not self.engine.closed and not self.paused:
            self.engine.modify(cast(RawSocket, self.sock), EV_IN)

    def _refuse_waiting(self) -> None:
        """Still at the limit after ``settings.queue``: reset the clients waiting now."""
        self.queue_timer = None
        engine = self.engine
        ctx = engine.ctx
        if not self.full or engine.closed or self.sock.fileno() < 0:
            return
        if len(ctx.relays) < ctx.max_tcp_relays:
            self.resume_accepting()
            return
        for _ in range(4096):  # the accept queue's usual bound (somaxconn)
            try:
                fd, _peer = self.accept()
            except InterruptedError:
                continue
            except OSError:  # empty (or out of descriptors: they wait for the next round)
                break
            csock = RawSocket(self.ep.af, socket.SOCK_STREAM, 0, fd)
            reset(csock)
            csock.close()
            ctx.refused += 1
            ctx.refused_limit += 1
        self.queue_timer = engine.loop.call_later(ctx.settings.queue or 0.1, self._refuse_waiting)

    # ---- out of descriptors ----------------------------------------------------------------

    def _pause(self, exc: OSError) -> None:
        # Out of descriptors: stop accepting for a moment rather than spinning on the backlog.
        log.warning("proxy: %s: accept: %s; pausing for 0.1 s", self.ep, exc.strerror or exc)
        self.paused = True
        self.engine.modify(cast(RawSocket, self.sock), 0)
        self.engine.loop.call_later(0.1, self._resume)

    def _resume(self) -> None:
        if self.paused and self.sock.fileno() >= 0 and not self.engine.closed:
            self.paused = False
            if not self.full:
                self.engine.modify(cast(RawSocket, self.sock), EV_IN)

    def close(self) -> None:
        self.full = False
        if self.queue_timer is not None:
            self.queue_timer.cancel()
            self.queue_timer = None
        fd = self.sock.fileno()
        if fd >= 0:
            self.engine.handlers.pop(fd, None)
            if not self.engine.closed:
                with contextlib.suppress(OSError):
                    self.engine.epoll.unregister(fd)
        self.sock.close()
