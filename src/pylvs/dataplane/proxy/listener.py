"""The listening socket of a TCP virtual service: accepting in batches and starting relays.

What this is for: turning each accepted connection into a ``relay.Relay`` with the real server
the core's ``Director.schedule`` picks, or refusing it with a reset (no server, the relay limit,
a fault in the core). Accepting uses the descriptor-level accept (no enum conversions, no Python
wrapper per connection) and stops for a moment when the process runs out of descriptors rather
than spinning on the backlog.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from _socket import socket as RawSocket
from collections.abc import Callable
from typing import Any, cast

from pylvs.dataplane.proxy.common import ServiceEndpoint
from pylvs.dataplane.proxy.engine import CLIENT_EVENTS, EV_IN, TcpEngine, reset
from pylvs.dataplane.proxy.relay import Relay

log = logging.getLogger("pylvs.dataplane.proxy")

# Accepts per listener and turn, so that a connection storm cannot starve the relays.
ACCEPT_BATCH = 64
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Listener:
    """A listening socket of a TCP virtual service, accepting in batches."""

    __slots__ = ("accept", "engine", "ep", "paused", "sock")

    def __init__(self, engine: TcpEngine, ep: ServiceEndpoint, sock: socket.socket) -> None:
        self.engine = engine
        self.ep = ep
        self.sock = sock
        self.accept: Callable[[], tuple[int, Any]] = cast(Any, sock)._accept
        self.paused = False
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
                reset(csock)
                csock.close()
                continue
            try:
                conn = schedule(protocol, inet_pton(af, peer[0]), peer[1], vaddr, vport)
            except Exception:  # a fault in the core must cost one connection, not the listener
                log.exception("proxy: scheduling %s for %s failed", ep, peer)
                conn = None
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

    def _pause(self, exc: OSError) -> None:
        # Out of descriptors: stop accepting for a moment rather than spinning on the backlog.
        log.warning("proxy: %s: accept: %s; pausing for 0.1 s", self.ep, exc.strerror or exc)
        self.paused = True
        self.engine.modify(cast(RawSocket, self.sock), 0)
        self.engine.loop.call_later(0.1, self._resume)

    def _resume(self) -> None:
        if self.paused and self.sock.fileno() >= 0 and not self.engine.closed:
            self.paused = False
            self.engine.modify(cast(RawSocket, self.sock), EV_IN)

    def close(self) -> None:
        fd = self.sock.fileno()
        if fd >= 0:
            self.engine.handlers.pop(fd, None)
            if not self.engine.closed:
                with contextlib.suppress(OSError):
                    self.engine.epoll.unregister(fd)
        self.sock.close()
