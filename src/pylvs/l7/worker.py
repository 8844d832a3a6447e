"""What one worker process shares among its client connections, and what the modules that
answer requests may ask of a connection.

Why: routing, static files, proxying and error pages each act on a connection (write, answer an
error, hand the request on) and on the worker (upstream pools, file cache, logs, error log), but
must not import the connection class that calls them (that would be a cycle). ``Worker`` is the
shared state, ``Connection`` the protocol a client connection meets; ``connection`` implements
it and ``listen`` adds the listening sockets to the worker.

Not for: listening (``listen``) or any request's logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from typing import Protocol

from pylvs.l7.accesslog import AccessLogs
from pylvs.l7.config import Config, Server
from pylvs.l7.files import FileCache
from pylvs.l7.location import ListenGroup
from pylvs.l7.request import Request, RequestConn
from pylvs.l7.stats import (
    CONN_FIELDS,
    HEADER,
    MAX_PEERS,
    PEER_FIELDS,
    SLOT,
    SharedStats,
    peer_bases,
    private,
)
from pylvs.l7.status import Clock
from pylvs.l7.syslogsink import LogSink, file_paths, open_error_log
from pylvs.l7.tunnel import Tunnel
from pylvs.l7.upstream import UpstreamPool


class Sink(Protocol):
    """What the connection tells the proxied exchange it is relaying (``proxying``)."""

    def client_gone(self) -> None: ...

    def client_drained(self) -> None: ...


class Connection(RequestConn, Protocol):
    """A client connection as the answering modules see it (``connection`` implements it)."""

    group: ListenGroup
    transport: asyncio.Transport | None
    closed: bool
    write_paused: bool  # the client's socket buffer is full
    sink: Sink | None  # the proxied exchange relaying to this client, if any
    active: Request | None  # the request being answered
    fast: bool  # a request is answered from callbacks, without the connection's task
    host_raw: bytes  # the last valid Host header and what routing made of it
    host_seen: tuple[str, Server]
    up_known: object | None  # the known head (``Request.known``) up_head was made for
    up_head: bytes  # the upstream request head made for it (``proxying.try_fast_proxy``)
    queue: deque[Request]  # requests read and not yet answered
    current: Request | None  # the request whose head is being read
    requests: int  # requests answered so far

    @property
    def app(self) -> Worker: ...

    async def drain(self, timeout: float) -> None: ...

    def abort(self) -> None: ...

    async def respond_error(self, req: Request, status: int, text: str | None = None) -> None: ...

    def complete(self, req: Request) -> None: ...

    def wake_task(self) -> None: ...

    def start_tunnel(self, tunnel: Tunnel) -> bytes: ...


class Worker:
    """Everything one worker runs from a Config but its listeners: upstream pools, the file
    cache, the access logs, the error log and the clock."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop or asyncio.get_event_loop()
        self.clock = Clock()
        self.clock.tick()
        self.pools = {name: UpstreamPool(u, self.loop) for name, u in config.upstreams.items()}
        self.files = FileCache()
        self.logs = AccessLogs(self.loop)
        self.connections: set[Connection] = set()
        self.use_stats(*private(config))
        self._serial = 0
        self.error_file: LogSink = open_error_log(config.error_log)  # file, stderr or syslog
        self._own_error_file = config.error_log is not None
        for srv in config.servers:
            for loc in (*srv.locations, srv.fallback):
                for al in loc.access_log:
                    self.logs.file_for(al)

    def use_stats(self, stats: SharedStats, slot: int) -> None:
        """Count into ``slot`` of ``stats`` (a master's shared region; -1: a scratch slot of
        a private one, when the shared region has no free slot)."""
        if slot < 0:
            stats, slot = private(self.config)
        self.stats = stats
        self.stat_a = stats.a
        self.stat_base = HEADER + slot * SLOT
        bases = peer_bases(self.config)
        for name, pool in self.pools.items():
            first = bases[name]
            ok = stats.count_peers and first + len(pool.config.servers) <= MAX_PEERS
            pool.stat_base = self.stat_base + CONN_FIELDS + first * PEER_FIELDS if ok else -1

    def upstream_done(self, base: int, index: int, status: int, seconds: float) -> None:
        """One upstream response (status 0: none, the try failed) of a counted server."""
        if base < 0:
            return
        a, p = self.stat_a, base + index * PEER_FIELDS
        a[p] += 1
        if 100 <= status < 600:
            a[p + status // 100] += 1
            a[p + 6] += int(seconds * 1e6)
            a[p + 7] += 1

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def error(self, level: str, message: str, conn: RequestConn | None = None,
              req: Request | None = None, upstream: str = "") -> None:
        """One error_log line in nginx's layout (connection serial, client, server, request)."""
        pid = os.getpid()
        parts = [f"{self.clock.errlog} [{level}] {pid}#{pid}: "]
        if conn is not None:
            parts.append(f"*{conn.serial} ")
        parts.append(message)
        if conn is not None:
            client = (req.real_addr if req is not None else "") or conn.remote_addr
            parts.append(f", client: {client}, server: "
                         f"{req.server.server_names[0] if req and req.server else ''}")
        if req is not None:
            parts.append(f', request: "{req.method} {req.target} HTTP/{req.version}"')
            if upstream:
                parts.append(f', upstream: "{upstream}"')
            if req.host:
                parts.append(f', host: "{req.header(b"host") or req.host}"')
        parts.append("\n")
        with contextlib.suppress(OSError, ValueError):
            self.error_file.write("".join(parts))
            self.error_file.flush()

    def tick(self) -> None:
        """Once a second: the clock's strings, and upstream connections idle too long."""
        self.clock.tick()
        for pool in self.pools.values():
            pool.sweep()

    def log_paths(self) -> list[str]:
        """Every file this worker writes (error log, access logs): what USR1 reopens."""
        return [*self.logs.paths, *file_paths(self.config.error_log)]

    def reopen_logs(self) -> None:
        """USR1 (logrotate's postrotate): new lines go to new files at the same paths."""
        self.logs.reopen()
        if file_paths(self.config.error_log):
            try:
                new = open_error_log(self.config.error_log)
            except OSError:
                return
            old, self.error_file = self.error_file, new
            with contextlib.suppress(OSError):
                old.close()

    def close_resources(self) -> None:
        for p in self.pools.values():
            p.close()
        self.logs.close()
        if self._own_error_file:
            self.error_file.close()
