"""Listening: which servers share each ``listen`` address, the bound sockets, and the worker
that accepts on them (``L7Server``).

Why apart: the master process of ``worker_processes`` > 1 binds the sockets once and hands them
to its forked workers (``cli``), so binding is separate from serving; a worker otherwise binds
its own.

Not for: what a connection does once accepted (``connection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time

from pylvs.l7 import proxyprotocol
from pylvs.l7.config import Config, Server
from pylvs.l7.connection import ClientConnection
from pylvs.l7.location import ListenGroup
from pylvs.l7.tls import server_context
from pylvs.l7.worker import Worker


def listen_groups(config: Config) -> dict[tuple[str, int], list[Server]]:
    """The servers behind each listening address, in configuration order."""
    groups: dict[tuple[str, int], list[Server]] = {}
    for srv in config.servers:
        for lst in srv.listens:
            groups.setdefault((lst.host, lst.port), []).append(srv)
    return groups


class TlsClientConnection(ClientConnection):
    """A connection of a ``listen ... ssl`` socket: the event loop's TLS transport hands it
    plain bytes, so only ``$scheme``/``$https`` and absolute redirects know."""

    scheme = "https"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        obj = transport.get_extra_info("ssl_object")
        self.ssl_server_name = getattr(obj, "pylvs_sni", "") if obj is not None else ""
        super().connection_made(transport)


class ProxiedConnection(ClientConnection):
    """A connection of a ``listen ... proxy_protocol`` socket: the PROXY protocol header first
    (``proxyprotocol``), then HTTP. As nginx 1.22, the header must be whole in the first read;
    one that is not, or cannot be a header, closes the connection without an answer and logs
    "broken header". A client that sends nothing meets the client_header_timeout."""

    def data_received(self, data: bytes) -> None:
        if self.pp is not None:
            super().data_received(data)
            return
        try:
            got = proxyprotocol.parse(data)
            if got is None:
                raise proxyprotocol.Broken(proxyprotocol.first_line(data))
        except proxyprotocol.Broken as e:
            self.app.error("error", f'broken header: "{e}" while reading PROXY protocol', self)
            if self.transport is not None:
                self.transport.close()
            return
        self.pp, used = got
        if len(data) > used:
            super().data_received(data[used:])


def tls_context(group: ListenGroup) -> ssl.SSLContext:
    """The TLS context of a listening socket: its default server's certificate, and SNI
    switching to the certificate of the server whose ``server_name`` matches the name sent."""
    contexts: dict[int, ssl.SSLContext] = {}
    for srv in group.servers:
        if srv.tls is not None and srv.tls.certificate is not None:
            contexts[id(srv)] = server_context(srv.tls)
    default = group.default
    if id(default) not in contexts:
        assert default.tls is not None
        server_context(default.tls)  # raises nginx's "no ssl_certificate" error
    ctx = contexts[id(default)]

    def choose(obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name:
            obj.pylvs_sni = name  # type: ignore[attr-defined]  # read back as $ssl_server_name
            chosen = contexts.get(id(group.select(name.lower().rstrip("."))))
            if chosen is not None and chosen is not obj.context:
                obj.context = chosen

    for c in contexts.values():
        c.sni_callback = choose
    return ctx


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket; the error names the address as nginx's bind() message does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(511)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        err = e.errno or 0
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise OSError(err, f"bind() to {shown} failed ({err}: {os.strerror(err)})") from None
    return sock


class L7Server(Worker):
    """Everything one worker runs from a Config: listeners, upstream pools, logs."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, loop)
        self._servers: list[asyncio.AbstractServer] = []
        self._tick_handle: asyncio.TimerHandle | None = None

    async def start(self, bound: dict[tuple[str, int], socket.socket] | None = None) -> None:
        """Listen on every ``listen`` address; ``bound`` = sockets a master process bound for
        its workers (``worker_processes`` > 1), otherwise they are bound here."""
        for (host, port), servers in listen_groups(self.config).items():
            group = ListenGroup(servers)
            tls = any(lst.ssl for srv in servers for lst in srv.listens
                      if (lst.host, lst.port) == (host, port))
            ctx = tls_context(group) if tls else None
            sock = bound.get((host, port)) if bound is not None else None
            if sock is None:
                sock = bind_listener(host, port)
            proxied = any(lst.proxy_protocol for srv in servers for lst in srv.listens
                          if (lst.host, lst.port) == (host, port))
            kind = (TlsClientConnection if tls else
                    ProxiedConnection if proxied else ClientConnection)
            s = await self.loop.create_server(
                lambda g=group, k=kind: k(self, g),
                sock=sock, backlog=511, ssl=ctx)
            self._servers.append(s)
        self._tick()

    def _tick(self) -> None:
        self.tick()
        self._tick_handle = self.loop.call_later(1.0 - (time.time() % 1.0) + 0.001, self._tick)

    @property
    def sockets(self) -> list[tuple[str, int]]:
        out = []
        for s in self._servers:
            for sock in getattr(s, "sockets", ()):
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    def stop_accepting(self) -> None:
        """Close this worker's listening sockets (a master, or the next workers, keep theirs)."""
        for s in self._servers:
            s.close()

    async def shutdown(self, poll: float = 0.05) -> None:
        """nginx's graceful stop (QUIT, and old workers after a reload): accept no more, let
        every request being answered finish, close connections idle between requests at
        once and those that never sent a request after a second; then release the rest."""
        self.stop_accepting()
        started = self.loop.time()
        while self.connections:
            for c in list(self.connections):
                if c.closed or c.active is not None or c.queue or c.current is not None \
                        or c.fast:
                    continue
                idle_long = c.requests > 0 or self.loop.time() - started >= 1.0
                if idle_long and c.transport is not None:
                    c.transport.close()
            await asyncio.sleep(poll)
        await self.close()

    async def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        for s in self._servers:
            s.close()
        for c in list(self.connections):
            c.abort()
        for s in self._servers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await s.wait_closed()
        self.close_resources()
