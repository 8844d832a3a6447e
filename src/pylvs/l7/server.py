"""The HTTP/1.1 server side: client connections, static files, proxying, logs.

A ``ClientConnection`` feeds bytes to httptools, which calls back with the parts of each request;
complete request heads queue up and are answered strictly in order (pipelining). The common
requests, a body-less one proxied over a warm keepalive connection or a small file (see
``files``), are answered from those callbacks alone; anything else (bodies, retries, errors,
large files) starts the connection's task, which then answers the queue. Bodies stream both ways: request bodies through a bounded ``BodyReader`` that pauses
the client socket past a high-water mark, response bodies from ``upstream.UpstreamConnection``
straight to the client socket with the client's write flow control pausing the upstream.
Every wait has nginx's timer (client_header_timeout against slowloris, client_body_timeout,
send_timeout, keepalive_timeout, proxy_connect/read/send_timeout).

The rules of what crosses the proxy and how bodies are framed are plain functions in
``message``; this module applies them to sockets.

Not for: parsing configuration (``config``), choosing a location (``location``) or an upstream
peer (``balancer``), or the master process of ``worker_processes`` > 1 (``cli``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import os
import re
import socket
import stat
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import IO, cast

import httptools

from pylvs import __version__ as _pkg_version
from pylvs.l7 import rewrite
from pylvs.l7.balancer import Peer
from pylvs.l7.config import AccessLog, Config, Location, Server
from pylvs.l7.files import FileCache, http_date
from pylvs.l7.files import etag as file_etag
from pylvs.l7.location import BadURI, LocationMatcher, normalize
from pylvs.l7.message import (
    HOP_REQUEST,
    ResponseHead,
    response_framing,
    single_range,
    upstream_request_head,
)
from pylvs.l7.upstream import UpstreamConnection, UpstreamPool
from pylvs.l7.variables import Template, expand

BODY_HIGH_WATER = 256 * 1024
FILE_CHUNK = 256 * 1024

# Statuses add_header applies to without "always", as in nginx.
_ADD_HEADER_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})
_BAD_HOST = re.compile(r"[/\\\s]")
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_CLOSING_STATUSES = frozenset({400, 408, 413, 414, 500, 501})

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_NOTHING_TRIED: frozenset[int] = frozenset()
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# nginx's own status lines where they differ from RFC 9110's phrases (clients and monitoring
# that match on them see the same words).
_NGINX_REASONS = {
    302: "Moved Temporarily", 405: "Not Allowed", 408: "Request Time-out",
    413: "Request Entity Too Large", 414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable", 503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def file_path(loc: Location, uri: str) -> str:
    """The file a URI names in a location: root + URI, or with ``alias`` the alias in place
    of the part the location matched (nginx's rule for prefix and exact locations)."""
    if loc.alias is None:
        return loc.root + uri
    return loc.alias + uri[len(loc.pattern):]


def _phrase(code: int) -> str:
    if code in _NGINX_REASONS:
        return _NGINX_REASONS[code]
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


_REASONS = {code: _phrase(code) for code in range(100, 600)}


def _reason(code: int) -> str:
    return _REASONS.get(code) or _phrase(code)


_CONTENT_TYPES: dict[str, bytes] = {}


def _content_type_line(ctype: str) -> bytes:
    line = _CONTENT_TYPES.get(ctype)
    if line is None:
        if len(_CONTENT_TYPES) > 1024:
            _CONTENT_TYPES.clear()
        line = _CONTENT_TYPES[ctype] = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n"
    return line


_SERVER_FULL = b"Server: pylvs/" + _pkg_version.encode() + b"\r\n"
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def _status_line(status: int, reason: bytes = b"") -> bytes:
    """``HTTP/1.1 200 OK`` and its CRLF, built once per status and reason."""
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        if len(_STATUS_LINES) > 1024:
            _STATUS_LINES.clear()
        line = _STATUS_LINES[(status, reason)] = b"HTTP/1.1 %d %s\r\n" % (
            status, reason or _reason(status).encode("latin-1"))
    return line


_STATUS_200 = _status_line(200)


# nginx's error pages say "302 Found" where its status line says "302 Moved Temporarily".
_PAGE_TITLES = {302: "Found"}


def _error_page(code: int, tokens: bool, text: str | None = None) -> bytes:
    title = f"{code} {text or _PAGE_TITLES.get(code) or _reason(code)}"
    sig = f"pylvs/{_pkg_version}" if tokens else "pylvs"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>{sig}</center>\r\n"
            "</body>\r\n</html>\r\n").encode()


class _Clock:
    """Date header and $time_local, formatted once a second rather than per request."""

    def __init__(self) -> None:
        self._sec = -1
        self.date = b""
        self.local = ""
        self.errlog = ""
        # "Server:" and "Date:" lines of every response, by server_tokens (off, on)
        self.server_date = (b"", b"")

    def tick(self) -> None:
        now = time.time()
        sec = int(now)
        if sec == self._sec:
            return
        self._sec = sec
        self.date = email.utils.formatdate(sec, usegmt=True).encode()
        date_line = b"Date: " + self.date + b"\r\n"
        self.server_date = (b"Server: pylvs\r\n" + date_line, _SERVER_FULL + date_line)
        lt = time.localtime(sec)
        off = lt.tm_gmtoff or 0
        sign = "+" if off >= 0 else "-"
        off = abs(off)
        self.local = (f"{lt.tm_mday:02d}/{_MONTHS[lt.tm_mon - 1]}/{lt.tm_year}:"
                      f"{lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d} "
                      f"{sign}{off // 3600:02d}{off % 3600 // 60:02d}")
        self.errlog = time.strftime("%Y/%m/%d %H:%M:%S", lt)


class BodyReader:
    """A request body as it arrives: bounded buffer, pauses the client socket when full."""

    __slots__ = (
        "_chunks",
        "_size",
        "_waiter",
        "conn",
        "consumed",
        "done",
        "error",
        "received",
        "req",
        "spool",
        "started",
    )

    def __init__(self, conn: ClientConnection, req: Request) -> None:
        self.conn = conn
        self.req = req
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.done = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.received = 0
        self.consumed = False
        self.started = False
        self.spool: IO[bytes] | None = None

    @property
    def buffered(self) -> int:
        return self._size

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self.received += len(data)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self.done:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def read(self) -> bytes:
        """Next chunk, b"" at the end; sends 100 Continue on first need if the client waits."""
        self.started = True
        conn = self.conn
        if self.spool is not None:
            data = self.spool.read(FILE_CHUNK)
            if not data:
                self.spool.close()
                self.consumed = True
            return data
        if not self._chunks and not self.done and self.error is None:
            conn.maybe_continue(self.req)
        while not self._chunks and not self.done and self.error is None:
            conn.update_reading()
            self._waiter = conn.loop.create_future()
            conn.arm_timer(self.req.location_timeout("body"), "body")
            try:
                await self._waiter
            finally:
                self._waiter = None
                conn.disarm_timer("body")
        if self._chunks:
            data = self._chunks.popleft()
            self._size -= len(data)
            if self._size < BODY_HIGH_WATER:
                conn.update_reading()
            loc = self.req.location
            if loc is not None and self.received > loc.client_max_body_size > 0:
                raise _TooLarge
            return data
        if self.error is not None:
            raise self.error
        self.consumed = True
        return b""


class Request:
    """One request's state from its head to its log line.

    Defaults live on the class and only what a request changes lands in its instance: a
    request costs a few stores instead of thirty (this object is made once per request)."""

    method = "GET"
    raw_method = b"GET"
    target = ""
    raw_target = b""
    version = "1.1"
    keep_alive = True
    body: BodyReader | None = None
    expect_continue = False
    continue_sent = False
    content_length: int | None = None
    chunked = False
    start = 0.0
    server: Server | None = None
    location: Location | None = None
    uri = ""
    path = ""
    args = ""
    status = 0
    body_bytes_sent = 0
    bytes_sent = 0
    upstream_addr = ""
    upstream_status = ""
    head_size = 0
    host = ""
    proxy_host = ""
    request_line: str | None = None  # set for heads that never parsed: logged as is
    routed = -1  # _route's answer once it ran (the fast path may have run it)
    preset_peer: tuple[Peer | None] | None = None  # peer the fast path already chose
    fast_failed: tuple[Peer, str] | None = None  # its failed try, for the task to go on
    seq = 0  # this request's number on its connection (keepalive_requests)
    error_redirected = False  # an error_page redirect happened (one per request, as in nginx)
    error_status = 0  # the status an error page's file is sent with (0: its own)
    redirect: tuple[int, str] | None = None  # a rewrite's redirect: (status, location)

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.headers: list[tuple[bytes, bytes]] = []
        self.hmap: dict[bytes, bytes] = {}

    def location_timeout(self, kind: str) -> float:
        loc = self.location
        if loc is None:
            return 60.0
        return loc.client_body_timeout if kind == "body" else loc.send_timeout

    def header(self, lname: bytes) -> str:
        v = self.hmap.get(lname)
        return v.decode("latin-1") if v is not None else ""

    def variable(self, name: str) -> str:
        """The value of nginx's ``$name`` for this request ("" when it has none)."""
        f = _VARIABLES.get(name)
        if f is not None:
            return f(self)
        if name.startswith("http_"):
            return self.header(name[5:].replace("_", "-").encode())
        if name.startswith("arg_"):
            for pair in self.args.split("&"):
                k, _, v = pair.partition("=")
                if k == name[4:]:
                    return v
            return ""
        if name.startswith("cookie_"):
            for c in self.header(b"cookie").split(";"):
                k, _, v = c.strip().partition("=")
                if k == name[7:]:
                    return v
        return ""


class _ListenGroup:
    """The servers sharing one listening socket, chosen by Host like nginx's server_name."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.default = next((s for s in servers for lst in s.listens if lst.default_server),
                            servers[0])
        self.exact: dict[str, Server] = {}
        self.wild: list[tuple[str, Server]] = []
        for s in servers:
            for name in s.server_names:
                if name.startswith("*."):
                    self.wild.append((name[1:], s))
                elif name.startswith("."):
                    self.exact.setdefault(name[1:], s)
                    self.wild.append((name, s))
                else:
                    self.exact.setdefault(name, s)
        self.matchers = {id(s): LocationMatcher(s.locations, s.fallback) for s in servers}

    def select(self, host: str) -> Server:
        if len(self.servers) == 1:
            return self.servers[0]
        s = self.exact.get(host)
        if s is not None:
            return s
        for suffix, srv in self.wild:
            if host.endswith(suffix):
                return srv
        return self.default


class _Log:
    """One access log file, written in batches at the end of each event-loop pass."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.loop = loop
        self.f: IO[str] = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
        self._scheduled = False

    def write(self, line: str) -> None:
        self.f.write(line)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        with contextlib.suppress(OSError, ValueError):
            self.f.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()


def listen_groups(config: Config) -> dict[tuple[str, int], list[Server]]:
    """The servers behind each listening address, in configuration order."""
    groups: dict[tuple[str, int], list[Server]] = {}
    for srv in config.servers:
        for lst in srv.listens:
            groups.setdefault((lst.host, lst.port), []).append(srv)
    return groups


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


class L7Server:
    """Everything one worker runs from a Config: listeners, upstream pools, logs."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config = config
        self.loop = loop or asyncio.get_event_loop()
        self.clock = _Clock()
        self.clock.tick()
        self.pools = {name: UpstreamPool(u, self.loop) for name, u in config.upstreams.items()}
        self.files = FileCache()
        self._logs: dict[str, _Log] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self.connections: set[ClientConnection] = set()
        self._serial = 0
        self.error_file: IO[str] = sys.stderr
        self._own_error_file = False
        if config.error_log is not None:
            self.error_file = open(config.error_log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            self._own_error_file = True
        for srv in config.servers:
            for loc in (*srv.locations, srv.fallback):
                for al in loc.access_log:
                    self.log_for(al)
        self._tick_handle: asyncio.TimerHandle | None = None

    def log_for(self, al: AccessLog) -> _Log:
        log = self._logs.get(al.path)
        if log is None:
            log = self._logs[al.path] = _Log(al.path, self.loop)
        return log

    def next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def error(self, level: str, message: str, conn: ClientConnection | None = None,
              req: Request | None = None, upstream: str = "") -> None:
        parts = [f"{self.clock.errlog} [{level}] {os.getpid()}#0: "]
        if conn is not None:
            parts.append(f"*{conn.serial} ")
        parts.append(message)
        if conn is not None:
            parts.append(f", client: {conn.remote_addr}, server: "
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

    async def start(self, bound: dict[tuple[str, int], socket.socket] | None = None) -> None:
        """Listen on every ``listen`` address; ``bound`` = sockets a master process bound for
        its workers (``worker_processes`` > 1), otherwise they are bound here."""
        for (host, port), servers in listen_groups(self.config).items():
            group = _ListenGroup(servers)
            sock = bound.get((host, port)) if bound is not None else None
            if sock is None:
                sock = bind_listener(host, port)
            s = await self.loop.create_server(
                lambda g=group: ClientConnection(self, g),  # type: ignore[misc]
                sock=sock, backlog=511)
            self._servers.append(s)
        self._tick()

    def _tick(self) -> None:
        self.clock.tick()
        for pool in self.pools.values():
            pool.sweep()
        self._tick_handle = self.loop.call_later(1.0 - (time.time() % 1.0) + 0.001, self._tick)

    @property
    def sockets(self) -> list[tuple[str, int]]:
        out = []
        for s in self._servers:
            for sock in getattr(s, "sockets", ()):
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    async def close(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        for s in self._servers:
            s.close()
        for c in list(self.connections):
            c.abort()
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2.0)
        for p in self.pools.values():
            p.close()
        for log in self._logs.values():
            log.flush()
            log.close()
        if self._own_error_file:
            self.error_file.close()


class ClientConnection(asyncio.Protocol):
    def __init__(self, app: L7Server, group: _ListenGroup) -> None:
        self.app = app
        self.group = group
        self.loop = app.loop
        self.serial = app.next_serial()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.remote_addr = "-"
        self.remote_addr_b = b"-"
        self.remote_port = 0
        self.local_addr = ""
        self.local_port = 0
        self.queue: deque[Request] = deque()
        self.current: Request | None = None  # request whose head is being parsed
        self.active: Request | None = None  # request being answered
        self.requests = 0
        self.closed = False
        self._url = b""
        self._head_bytes = 0
        self._head_size = 0
        self._head_limit = 4 * 8192
        self._line_limit = 8192
        self._head_started = 0.0
        self._in_head = False
        self._bad: tuple[int, str] | None = None
        self._req_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._timer_kind = ""
        self._task: asyncio.Task[None] | None = None
        self.sink: ProxyAttempt | None = None
        self._fast = False  # a fast-path exchange is in progress
        self._eof = False  # the client has half-closed: answer what is queued, then close
        self._host_raw = b""  # the last valid Host header and what _route made of it
        self._host_seen: tuple[str, Server] = ("", group.servers[0])
        srv = group.servers[0]
        self._head_limit = srv.large_header_buffers[0] * srv.large_header_buffers[1]
        self._line_limit = srv.large_header_buffers[1]

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.app.connections.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote_addr, self.remote_port = str(peer[0]), int(peer[1])
            self.remote_addr_b = self.remote_addr.encode("latin-1")
        local = transport.get_extra_info("sockname")
        if local:
            self.local_addr, self.local_port = str(local[0]), int(local[1])
        # No task yet: requests the fast paths answer from callbacks never need one; the first
        # that does (a body, a pipelined queue, an error, a retry) starts it (_wake_task).
        self.arm_timer(self.group.servers[0].client_header_timeout, "idle")

    def data_received(self, data: bytes) -> None:
        if self._bad is not None:
            return
        if self._in_head:
            # Bytes of a head still incomplete (a head that began inside the previous read
            # escapes by at most that read): bounds what httptools buffers for one header.
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._reject(400, "upgrade is not supported")
            del e
        except httptools.HttpParserError as e:
            if self._bad is None:
                self._reject(400, f"client sent invalid request: {e}")
        else:
            if self._in_head and self._head_bytes > self._head_limit:
                self._reject(400, "client sent too long header line",
                             "Request Header Or Cookie Too Large")
            elif self._in_head and len(self._url) > self._line_limit:
                self._reject(414, "client sent too long URI")

    def eof_received(self) -> bool | None:
        self._eof = True
        if self.current is not None and self.current.body is not None:
            self.current.body.fail(ConnectionResetError("client closed the connection"))
        if self.active is None and not self.queue:
            return None
        return True  # keep the write side open to finish answering (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.connections.discard(self)
        self.disarm_timer("")
        gone = ConnectionResetError("client closed the connection")
        for r in (self.current, self.active, *self.queue):
            if r is not None and r.body is not None:
                r.body.fail(gone)
        if self._req_waiter is not None and not self._req_waiter.done():
            self._req_waiter.set_result(None)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(gone)
        if self.sink is not None:
            self.sink.client_gone()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.sink is not None and self.active is not None:
            # a proxied response waits on this client: nginx's send_timeout applies
            self.arm_timer(self.active.location_timeout("send"), "send")

    def resume_writing(self) -> None:
        self._write_paused = False
        self.disarm_timer("send")
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None
        if self.sink is not None:
            self.sink.client_drained()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        req = Request(self)
        self.current = req
        self._in_head = True
        self._url = b""
        self._head_size = 0
        self._head_bytes = 0
        self._head_started = self.loop.time()
        if self._timer_kind == "idle":
            self.arm_timer(self.group.servers[0].client_header_timeout, "header")

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.current
        assert req is not None
        req.headers.append((name, value))
        size = len(name) + len(value) + 4
        self._head_size += size
        if size > self._line_limit:
            self._head_size += self._head_limit  # one line over a buffer: as nginx, refuse
        lname = name.lower()
        hmap = req.hmap
        old = hmap.get(lname)
        if old is None:
            hmap[lname] = value
        else:
            hmap[lname] = old + (b"; " if lname == b"cookie" else b", ") + value

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        if len(self._url) > self._line_limit:
            self._reject(414, "client sent too long URI")
            raise _Refused
        if self._head_size + len(self._url) > self._head_limit:
            self._reject(400, "client sent too long header line", "Request Header Or Cookie Too Large")
            raise _Refused
        p = self.parser
        url = self._url
        self._in_head = False
        req.head_size = self._head_size + len(url)
        self._head_bytes = 0
        req.start = time.monotonic()
        method = p.get_method()
        req.raw_method = method
        req.method = _METHODS.get(method) or method.decode("ascii", "replace")
        version = p.get_http_version()
        if version != "1.1":
            req.version = version
        if not p.should_keep_alive():
            req.keep_alive = False
        req.raw_target = url
        req.target = url.decode("latin-1")
        hmap = req.hmap
        if b"transfer-encoding" in hmap:
            req.chunked = True
        else:
            cl = hmap.get(b"content-length")
            if cl is not None:
                try:
                    req.content_length = int(cl)
                except ValueError:
                    req.content_length = 0
        if req.chunked or (req.content_length or 0) > 0:
            req.body = BodyReader(self, req)
            exp = hmap.get(b"expect")
            if exp is not None and exp.lower() == b"100-continue" and req.version == "1.1":
                req.expect_continue = True
        queue = self.queue
        queue.append(req)
        self.requests += 1
        req.seq = self.requests
        if self._fast:
            pass  # answered after the fast exchange in progress (it wakes the task)
        elif (req.body is None and len(queue) == 1 and self.active is None
                and self._task_idle() and self._try_fast(req)):
            pass
        else:
            self._wake_task()
        if self._reading_paused or len(queue) > 1 or req.body is not None:
            self.update_reading()

    def on_body(self, data: bytes) -> None:
        req = self.current
        if req is None or req.body is None:
            return
        req.body.feed(data)
        loc = req.location
        if loc is not None and req.body.received > loc.client_max_body_size > 0:
            req.body.fail(_TooLarge())
        if req.body.buffered >= BODY_HIGH_WATER:
            self.update_reading()

    def on_message_complete(self) -> None:
        req = self.current
        self.current = None
        self._head_bytes = 0
        if req is not None and req.body is not None:
            req.body.finish()

    # -- flow control and timers -------------------------------------------------------------

    def update_reading(self) -> None:
        """Read only while the active body is below its high-water mark and nothing queues."""
        if self.closed or self.transport is None:
            return
        pause = len(self.queue) > 1  # the head of the queue is the request being answered
        for r in (self.active, self.current):
            if r is not None and r.body is not None and r.body.buffered >= BODY_HIGH_WATER:
                pause = True
        if self.active is not None and self.active.body is not None \
                and self.active.body._waiter is not None:
            pause = False
        if pause and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def arm_timer(self, seconds: float, kind: str) -> None:
        """One deadline per connection. The loop timer is only moved earlier, never cancelled
        per request: when it fires early it re-arms for the current deadline (keep-alive
        requests then cost no timer operations)."""
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        self._timer_kind = kind
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._fire_timer)

    def disarm_timer(self, kind: str) -> None:
        if not kind or self._timer_kind == kind:
            self._timer_kind = ""

    def _fire_timer(self) -> None:
        self._timer = None
        kind = self._timer_kind
        if not kind or self.closed:
            return
        if self.loop.time() < self._deadline - 0.001:
            self._timer_at = self._deadline
            self._timer = self.loop.call_at(self._deadline, self._fire_timer)
            return
        self._timer_kind = ""
        self._on_timeout(kind)

    def _on_timeout(self, kind: str) -> None:
        if kind == "idle":
            self.abort()
        elif kind == "header":
            req = self.current
            if req is not None:
                req.status = 408
                req.request_line = ""
                self._log_raw(req)
            self.abort()
        elif kind == "body":
            r = self.active
            if r is not None and r.body is not None:
                r.body.fail(TimeoutError("client timed out"))
        elif kind == "send":
            self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _reject(self, code: int, message: str, text: str | None = None) -> None:
        """Malformed input: answer after the requests before it, then close."""
        self._bad = (code, text or _reason(code))
        self._bad_message = message
        if self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        if self.current is not None and self.current.body is not None:
            self.current.body.fail(ConnectionResetError("bad request"))
        self._wake_task()

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if not self._write_paused:
            return
        if self.closed:
            raise ConnectionResetError("client closed the connection")
        if self._drain is None:
            self._drain = self.loop.create_future()
        self.arm_timer(timeout, "send")
        try:
            await self._drain
        finally:
            self.disarm_timer("send")

    def maybe_continue(self, req: Request) -> None:
        if req.expect_continue and not req.continue_sent and req.body is not None \
                and req.body.received == 0:
            req.continue_sent = True
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def response_head(self, req: Request, status: int, headers: list[bytes],
                      reason: str | None = None, length: int | None = None,
                      chunked: bool = False, filter_status: int = 0) -> bytes:
        """Bytes of a response head; decides keep-alive (closing statuses, 1.0 without length)."""
        return self.head_bytes(req, status, _status_line(status, (reason or "").encode("latin-1")),
                               b"".join(headers), length, chunked, filter_status)

    def head_bytes(self, req: Request, status: int, status_line: bytes, lines: bytes,
                   length: int | None, chunked: bool, filter_status: int = 0) -> bytes:
        """``response_head`` with the status line and header lines already as bytes."""
        if status in _CLOSING_STATUSES:
            req.keep_alive = False
        loc = req.location
        if loc is not None and req.seq >= loc.keepalive_requests:
            req.keep_alive = False
        if length is None and not chunked and status != 204 and status != 304 \
                and req.method != "HEAD":
            req.keep_alive = False
        req.status = status
        out = [status_line,
               self.app.clock.server_date[loc is None or loc.server_tokens], lines]
        if loc is not None and loc.add_header:
            for name, tmpl, always in loc.add_header:
                if always or (filter_status or status) in _ADD_HEADER_STATUSES:
                    value = expand(tmpl, req.variable)
                    if value:
                        out.append(f"{name}: {value}\r\n".encode("latin-1"))
        if length is not None:
            out.append(b"Content-Length: %d\r\n" % length)
        elif chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        out.append(b"Connection: keep-alive\r\n\r\n" if req.keep_alive else b"Connection: close\r\n\r\n")
        return b"".join(out)

    async def respond(self, req: Request, status: int, body: bytes = b"",
                      headers: list[bytes] | None = None, reason: str | None = None,
                      content_type: bytes = b"text/html", filter_status: int = 0) -> None:
        hdrs = list(headers or [])
        if body or status >= 300:
            hdrs.insert(0, b"Content-Type: " + content_type + b"\r\n")
        head = self.response_head(req, status, hdrs, reason, length=len(body),
                                  filter_status=filter_status)
        if req.method == "HEAD":
            body = b""
        self.write(head + body)
        req.bytes_sent += len(head) + len(body)
        req.body_bytes_sent += len(body)

    async def respond_error(self, req: Request, status: int, text: str | None = None) -> None:
        loc = req.location
        if loc is not None and loc.error_pages and not req.error_redirected \
                and req.server is not None:
            for code, target, response in loc.error_pages:
                if code == status:
                    await self._error_page_redirect(req, status, target, response)
                    return
        page = _error_page(status, loc.server_tokens if loc else True, text)
        await self.respond(req, status, page, reason=text)

    async def _error_page_redirect(self, req: Request, status: int, target_t: Template,
                                   response: int | None) -> None:
        """error_page: an internal redirect to the page (GET), answered with the error's status
        (or the one after "="); an absolute URL is a redirect the client follows."""
        req.error_redirected = True
        loc = req.location
        assert loc is not None and req.server is not None
        target = expand(target_t, req.variable)
        if target.startswith(("http://", "https://")):
            code = response if response in (301, 302, 303, 307, 308) else 302
            assert code is not None
            await self.respond(req, code, _error_page(code, loc.server_tokens),
                               [b"Location: " + target.encode("latin-1") + b"\r\n"])
            return
        path, _, query = target.partition("?")
        if req.method != "HEAD":
            req.method = "GET"
        req.uri, req.args = path, query
        req.error_status = status if response is None else max(response, 0)
        nloc = self.group.matchers[id(req.server)].match(path)
        req.location = nloc
        await self._dispatch(req, nloc, req.server, 1)

    # -- the per-connection task ------------------------------------------------------------

    async def _next_request(self) -> Request | None:
        first = True
        # A request the fast path is answering stays at the head of the queue until it is done:
        # the task waits for it (and only then answers a malformed request after it).
        while not self.queue or self._fast:
            if self.closed:
                return None
            if self._fast:
                pass
            elif self._bad is not None or self._eof:
                return None
            elif first:
                srv = self.group.servers[0]
                if self.current is not None and self._in_head:
                    left = srv.client_header_timeout - (self.loop.time() - self._head_started)
                    self.arm_timer(max(0.0, left), "header")
                elif self.requests == 0:
                    self.arm_timer(srv.client_header_timeout, "idle")
                else:
                    self.arm_timer(srv.keepalive_timeout, "idle")
                first = False
            self.update_reading()
            self._req_waiter = self.loop.create_future()
            try:
                await self._req_waiter
            finally:
                self._req_waiter = None
        self.disarm_timer("")
        return self.queue[0]

    async def _serve(self) -> None:
        try:
            while True:
                req = await self._next_request()
                if req is None:
                    break
                self.active = req
                try:
                    await self._handle(req)
                finally:
                    self.queue.popleft()
                    self.active = None
                    self.sink = None
                self._log(req)
                if not req.keep_alive or self.closed:
                    break
                if req.body is not None and not req.body.done:
                    break
            if self._bad is not None and not self.closed:
                code, text = self._bad
                bad = Request(self)
                bad.keep_alive = False
                bad.request_line = ""
                self.app.error("info", self._bad_message, self)
                await self.respond_error(bad, code, text)
                self._log_raw(bad)
        except (ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.app.error("alert", f"internal error: {e!r}", self)
        finally:
            self.disarm_timer("")
            if self.transport is not None and not self.closed:
                if self._write_paused:
                    with contextlib.suppress(Exception):
                        await self.drain(5.0)
                self.transport.close()

    def _log(self, req: Request) -> None:
        loc = req.location
        if loc is None or not loc.access_log:
            return
        for al in loc.access_log:
            self.app.log_for(al).write(_log_line(al, req))

    def _log_raw(self, req: Request) -> None:
        """Log a request that never got a location (bad or timed-out head): server level."""
        srv = self.group.servers[0]
        for al in srv.fallback.access_log:
            self.app.log_for(al).write(_log_line(al, req))

    def _route(self, req: Request) -> int:
        """Choose the server and location (no I/O); 0, or the error status to answer."""
        host_raw = req.hmap.get(b"host")
        if host_raw is not None and host_raw == self._host_raw:
            host, server = self._host_seen  # a keep-alive client repeats its Host
        else:
            server = self.group.servers[0]
            req.server = server
            req.location = server.fallback
            if host_raw is None:
                if req.version == "1.1":
                    return 400
                host = ""
            else:
                host = host_raw.decode("latin-1").lower()
                host = host[:host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
                if not host or _BAD_HOST.search(host):
                    return 400
            server = self.group.select(host)
            if host_raw is not None:
                self._host_raw = host_raw
                self._host_seen = (host, server)
        req.server = server
        req.host = host or server.server_names[0]
        path, _, args = req.target.partition("?")
        if args:
            req.args = args
        req.location = server.fallback
        if not path.startswith("/"):
            if path.startswith(("http://", "https://")):
                path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
            else:
                return 400
        if req.method == "CONNECT":
            return 400
        try:
            req.uri = normalize(path)
        except BadURI:
            return 400
        if server.rewrites:
            out = rewrite.run(server.rewrites, req.uri, req.args, req.variable)
            req.uri, req.args = out.uri, out.args
            if out.action == "redirect":
                req.redirect = (out.status, out.location)
        if req.chunked and req.hmap.get(b"transfer-encoding", b"").lower() != b"chunked":
            self.app.error("info", 'client sent unknown "Transfer-Encoding": "'
                           f'{req.header(b"transfer-encoding")}"', self, req)
            return 501
        loc = self.group.matchers[id(server)].match(req.uri)
        req.location = loc
        if req.content_length is not None and req.content_length > loc.client_max_body_size > 0:
            self.app.error("error", f"client intended to send too large body: "
                                    f"{req.content_length} bytes", self, req)
            return 413
        return 0

    async def _handle(self, req: Request) -> None:
        code = self._route(req) if req.routed < 0 else req.routed
        if code:
            await self.respond_error(req, code)
            return
        assert req.location is not None and req.server is not None
        if req.redirect is not None:
            await self._rewrite_redirect(req, req.location)
        else:
            await self._dispatch(req, req.location, req.server, depth=0)
        if req.body is not None and not req.body.done and not self.closed:
            if req.expect_continue and not req.continue_sent:
                req.keep_alive = False
            else:
                await self._discard_body(req)

    # -- the fast path: a body-less proxied request on a warm upstream connection, driven by
    # callbacks from arrival to completion without waking the connection's task -----------------

    def _try_fast(self, req: Request) -> bool:
        code = self._route(req)
        req.routed = code
        loc = req.location
        if code or loc is None or loc.ret is not None or loc.rewrites or req.redirect:
            return False
        if loc.proxy_pass is None:
            return loc.try_files is None and self._try_static(req, loc)
        plan = _header_plan(loc)
        if plan.retries_on_status:
            return False
        pool = self.app.pools[loc.proxy_pass.upstream]
        peer = pool.balancer.get(_NOTHING_TRIED, time.monotonic())
        conn = pool.take(peer) if peer is not None else None
        if conn is None:
            req.preset_peer = (peer,)  # the balancer's choice stands for the task's first try
            return False
        req.proxy_host = loc.proxy_pass.proxy_host
        att = ProxyAttempt(self, req, loc, pool, conn, False)
        att.fast_peer = peer
        self.active = req
        self._fast = True
        self.sink = att
        self._timer_kind = ""  # the upstream's timers run now
        conn.attach(att, loc.proxy_read_timeout)
        conn.write(att.request_head(plan))
        att.request_sent = True
        conn.start_read_timer()
        return True

    def _try_static(self, req: Request, loc: Location) -> bool:
        """A small file answered at once from the file cache: GET or HEAD of a file, with no
        Range or condition (those, indexes and every error take the task's ordinary path)."""
        method = req.method
        if method != "GET" and method != "HEAD":
            return False
        uri = req.uri
        hmap = req.hmap
        if uri.endswith("/") or b"range" in hmap or b"if-none-match" in hmap \
                or b"if-modified-since" in hmap:
            return False
        alias = loc.alias
        f = self.app.files.get(loc.root + uri if alias is None else alias + uri[len(loc.pattern):])
        if f is None:
            return False
        ext = uri.rpartition("/")[2].rpartition(".")
        ctype = loc.types.get(ext[2].lower(), loc.default_type) if ext[1] else loc.default_type
        self.active = req
        self.disarm_timer("")
        head = self.head_bytes(req, 200, _STATUS_200,
                               _content_type_line(ctype) + f.validators + b"Accept-Ranges: bytes\r\n",
                               f.size, False)
        if method == "HEAD":
            self.write(head)
            req.bytes_sent = len(head)
        else:
            self.write(head + f.body)
            req.bytes_sent = len(head) + f.size
            req.body_bytes_sent = f.size
        self._complete(req)
        return True

    def fast_done(self, att: ProxyAttempt, result: str) -> None:
        """The end of a fast-path exchange, in whatever callback it happened."""
        req, conn, pool = att.req, att.conn, att.pool
        peer = att.fast_peer
        assert peer is not None
        self.sink = None
        self._fast = False
        req.upstream_addr = peer.address
        if result == "ok":
            pool.balancer.succeeded(peer)
            if att.upstream_paused:
                conn.resume_reading()
            pool.release(conn, att.keep_alive)
            self._complete(req)
            return
        conn.close()
        if result == "client":
            req.keep_alive = False
            req.status = req.status or 499
            self._complete(req)
            return
        kind, msg = att.failure or ("error", "upstream failed")
        url = f"http://{peer.server.address}{req.target}"
        if att.started:
            self.app.error("error", f"{msg} while reading upstream", self, req, url)
            req.keep_alive = False
            self.abort()
            self._complete(req)
            return
        # Nothing reached the client yet: the task takes over (next upstream, 502/504).
        stale = conn.reused and kind == "error" and not conn.got_response
        if not stale:
            self.app.error("error", f"{msg} while reading response header from upstream",
                           self, req, url)
            pool.balancer.failed(peer, time.monotonic())
            req.fast_failed = (peer, kind)
        self.active = None
        req.upstream_status = ""
        self._wake_task()

    def _complete(self, req: Request) -> None:
        self.queue.popleft()
        self.active = None
        self._log(req)
        if not req.keep_alive or self.closed:
            if self.transport is not None and not self.closed:
                self.transport.close()
            return
        if self.queue or self._bad is not None:
            self._wake_task()
        elif self._eof:
            if self.transport is not None:
                self.transport.close()
        else:
            self.arm_timer(self.group.servers[0].keepalive_timeout, "idle")
            if self._reading_paused:
                self.update_reading()

    def _wake_task(self) -> None:
        if self._task is None:
            if not self.closed:
                self._task = self.loop.create_task(self._serve())
            return
        w = self._req_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _task_idle(self) -> bool:
        """No task, or one waiting for a request: nothing is being answered."""
        if self._task is None:
            return True
        w = self._req_waiter
        return w is not None and not w.done()

    async def _discard_body(self, req: Request) -> None:
        assert req.body is not None
        try:
            while await req.body.read():
                pass
        except (ConnectionError, TimeoutError, _TooLarge):
            req.keep_alive = False

    async def _dispatch(self, req: Request, loc: Location, server: Server, depth: int) -> None:
        if loc.rewrites:
            out = rewrite.run(loc.rewrites, req.uri, req.args, req.variable)
            req.uri, req.args = out.uri, out.args
            if out.action == "redirect":
                req.redirect = (out.status, out.location)
                await self._rewrite_redirect(req, loc)
                return
            if out.action in ("last", "changed"):
                if depth >= 10:
                    self.app.error("error", "rewrite or internal redirection cycle while "
                                   f'processing "{req.uri}"', self, req)
                    await self.respond_error(req, 500)
                    return
                nloc = self.group.matchers[id(server)].match(req.uri)
                req.location = nloc
                await self._dispatch(req, nloc, server, depth + 1)
                return
        if loc.ret is not None:
            await self._return(req, loc)
        elif loc.try_files is not None:
            await self._try_files(req, loc, server, depth)
        elif loc.proxy_pass is not None:
            await ProxyAttempt.run(self, req, loc)
        else:
            await self._static(req, loc, server, depth)

    async def _try_files(self, req: Request, loc: Location, server: Server, depth: int) -> None:
        """nginx's try_files: the first candidate that exists is served from this location (a
        candidate ending in / must be a directory); else the last argument: =CODE, or an
        internal redirect to that URI, which is matched against the locations again."""
        assert loc.try_files is not None
        candidates, fallback = loc.try_files
        for t in candidates:
            cand = expand(t, req.variable)
            if not cand.startswith("/"):
                continue
            path = file_path(loc, cand)
            found = os.path.isdir(path) if cand.endswith("/") else os.path.isfile(path)
            if found:
                req.uri = cand
                await self._static(req, loc, server, depth)
                return
        if isinstance(fallback, int):
            await self.respond_error(req, fallback)
            return
        target = expand(fallback, req.variable)
        if depth >= 10 or not target.startswith("/"):
            self.app.error("error", f'rewrite or internal redirection cycle while internally '
                                    f'redirecting to "{target}"', self, req)
            await self.respond_error(req, 500)
            return
        path, _, query = target.partition("?")
        req.uri = path
        if query:
            req.args = query
        nloc = self.group.matchers[id(server)].match(path)
        req.location = nloc
        await self._dispatch(req, nloc, server, depth + 1)

    async def _rewrite_redirect(self, req: Request, loc: Location) -> None:
        """A rewrite's redirect; a relative target is made absolute, as nginx does."""
        assert req.redirect is not None
        status, target = req.redirect
        if not target.startswith(("http://", "https://")):
            port = "" if self.local_port == 80 else f":{self.local_port}"
            target = f"http://{req.host}{port}{target}"
        await self.respond(req, status, _error_page(status, loc.server_tokens),
                           [b"Location: " + target.encode("latin-1") + b"\r\n"])

    async def _return(self, req: Request, loc: Location) -> None:
        assert loc.ret is not None
        code = loc.ret.code
        if code == 444:
            req.status = 444
            req.keep_alive = False
            self.abort()
            return
        text = expand(loc.ret.text, req.variable) if loc.ret.text is not None else None
        if code in (301, 302, 303, 307, 308):
            location = text or ""
            await self.respond(req, code, _error_page(code, loc.server_tokens),
                               [b"Location: " + location.encode("latin-1") + b"\r\n"])
        elif text is not None:
            await self.respond(req, code, text.encode(),
                               content_type=loc.default_type.encode())
        else:
            await self.respond_error(req, code)

    async def _static(self, req: Request, loc: Location, server: Server, depth: int) -> None:
        uri = req.uri
        if uri.endswith("/"):
            for name in loc.index:
                candidate = uri + name
                if os.path.isfile(file_path(loc, candidate)) and depth < 10:
                    req.uri = candidate
                    nloc = self.group.matchers[id(server)].match(candidate)
                    req.location = nloc
                    await self._dispatch(req, nloc, server, depth + 1)
                    return
            if os.path.isdir(file_path(loc, uri)):
                self.app.error("error", f'directory index of "{file_path(loc, uri)}" is forbidden',
                               self, req)
                await self.respond_error(req, 403)
            else:
                await self.respond_error(req, 404)
            return
        if req.method not in ("GET", "HEAD"):
            await self.respond_error(req, 405)
            return
        fpath = file_path(loc, uri)
        try:
            fd = os.open(fpath, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            self.app.error("error", f'open() "{fpath}" failed (2: No such file or directory)',
                           self, req)
            await self.respond_error(req, 404)
            return
        except NotADirectoryError:
            await self.respond_error(req, 404)
            return
        except PermissionError:
            self.app.error("error", f'open() "{fpath}" failed (13: Permission denied)', self, req)
            await self.respond_error(req, 403)
            return
        except OSError:
            await self.respond_error(req, 500)
            return
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            port = "" if self.local_port == 80 else f":{self.local_port}"
            loc_hdr = f"http://{req.host}{port}{req.uri}/" + (f"?{req.args}" if req.args else "")
            await self.respond(req, 301, _error_page(301, loc.server_tokens),
                               [b"Location: " + loc_hdr.encode("latin-1") + b"\r\n"])
            return
        try:
            await self._send_file(req, loc, fd, st)
        finally:
            os.close(fd)

    async def _send_file(self, req: Request, loc: Location, fd: int, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            await self.respond_error(req, 403)
            return
        size = st.st_size
        mtime = int(st.st_mtime)
        last_mod = http_date(mtime)
        etag = file_etag(mtime, size)
        inm = req.hmap.get(b"if-none-match")
        ims = req.hmap.get(b"if-modified-since")
        if req.error_status:  # an error page: its file, with the error's status, whole
            inm = ims = None
        if (inm is not None and (inm == etag or inm == b"*")) or \
                (inm is None and ims is not None and ims == last_mod):
            head = self.response_head(req, 304, [b"Last-Modified: " + last_mod + b"\r\n",
                                                 b"ETag: " + etag + b"\r\n"])
            self.write(head)
            req.bytes_sent += len(head)
            return
        ext = req.uri.rpartition("/")[2].rpartition(".")
        ctype = loc.types.get(ext[2].lower(), loc.default_type) if ext[1] else loc.default_type
        hdrs = [b"Content-Type: " + ctype.encode() + b"\r\n",
                b"Last-Modified: " + last_mod + b"\r\n",
                b"ETag: " + etag + b"\r\n"]
        status, start, end = req.error_status or 200, 0, size
        rng = req.hmap.get(b"range")
        if rng is not None and req.method == "GET" and not req.error_status:
            parsed = single_range(rng, size)
            if parsed is None:
                hdrs = [b"Content-Range: bytes */%d\r\n" % size]
                # nginx's header filters see the file's 200 before the range filter's 416
                await self.respond(req, 416, _error_page(416, loc.server_tokens), hdrs,
                                   filter_status=200)
                return
            if parsed != (0, size):
                status, (start, end) = 206, parsed
                hdrs.append(b"Content-Range: bytes %d-%d/%d\r\n" % (start, end - 1, size))
        if status == 200:
            hdrs.append(b"Accept-Ranges: bytes\r\n")
        head = self.response_head(req, status, hdrs, length=end - start)
        req.bytes_sent += len(head)
        if req.method == "HEAD":
            self.write(head)
            return
        want = end - start
        first = os.pread(fd, min(want, FILE_CHUNK), start) if want else b""
        self.write(head + first)
        sent = len(first)
        while sent < want and first:
            await self.drain(loc.send_timeout)
            first = os.pread(fd, min(want - sent, FILE_CHUNK), start + sent)
            self.write(first)
            sent += len(first)
        req.body_bytes_sent += sent
        req.bytes_sent += sent
        if sent < want:  # the file shrank under us: the framing is now wrong
            req.keep_alive = False
            self.abort()


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a connection already refused."""


class ProxyAttempt:
    """One request through one upstream connection; the ResponseSink of ``upstream``.

    Made once per proxied request: the fields that start the same are class defaults."""

    result = ""  # "ok", "retry", "failed", "client"...: set once, when it ends
    _waiter: asyncio.Future[str] | None = None  # only the task path waits on it
    started = False  # response head sent to the client
    chunked = False
    retry_status = 0
    failure: tuple[str, str] | None = None
    upstream_paused = False
    keep_alive = False
    request_sent = False
    fast_peer: Peer | None = None  # set when the fast path drives this attempt

    def __init__(self, client: ClientConnection, req: Request, loc: Location,
                 pool: UpstreamPool, conn: UpstreamConnection, can_retry_status: bool) -> None:
        self.client = client
        self.req = req
        self.loc = loc
        self.pool = pool
        self.conn = conn
        self.head_only = req.method == "HEAD"
        self.can_retry_status = can_retry_status
        self._out: list[bytes] = []  # client-bound bytes of the current upstream read

    # -- ResponseSink ---------------------------------------------------------------------------

    def response_head(self, head: ResponseHead, keep_alive: bool, until_eof: bool) -> None:
        req = self.req
        self.keep_alive = keep_alive
        status = head.status
        req.upstream_status = head.status_text
        if self.can_retry_status and f"http_{status}" in self.loc.proxy_next_upstream:
            self.retry_status = status
            return
        length = head.length
        chunked, has_body = response_framing(status, self.head_only, req.version, length,
                                             head.coded)
        self.chunked = chunked and has_body
        # A head-only answer (HEAD, 204, 304) needs no framing: head_bytes keeps it alive.
        line = head.status_line
        if not line:
            line = head.status_line = _status_line(status, head.reason)
        out = self.client.head_bytes(req, status, line, head.lines, length, chunked)
        self._out.append(out)
        req.bytes_sent += len(out)
        self.started = True

    def response_body(self, data: bytes) -> None:
        if self.retry_status or not self.started:
            return
        if self.chunked:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
            self.req.bytes_sent += len(data) + 7
        else:
            self._out.append(data)
            self.req.bytes_sent += len(data)
        self.req.body_bytes_sent += len(data)

    def _finish(self, result: str) -> None:
        if self.result:
            return
        self.result = result
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(result)
        if self.fast_peer is not None:
            self.client.fast_done(self, result)

    async def wait(self) -> str:
        if not self.result:
            self._waiter = self.client.loop.create_future()
            await self._waiter
        return self.result

    def flush(self) -> None:
        """Hand what one upstream read produced to the client socket in one write."""
        out = self._out
        if not out:
            return
        self._out = []
        t = self.client.transport
        if t is None or self.client.closed:
            return
        if len(out) == 1:
            t.write(out[0])
        else:
            t.writelines(out)
        if self.client._write_paused and not self.upstream_paused:
            self._check_client_flow()

    def response_complete(self) -> None:
        if self.chunked and self.started:
            self._out.append(b"0\r\n\r\n")
            self.req.bytes_sent += 5
        self.flush()
        self._finish("retry" if self.retry_status else "ok")

    def upstream_failed(self, kind: str, message: str) -> None:
        self.flush()
        self.failure = (kind, message)
        self._finish("failed")

    # -- flow control between the two sockets ------------------------------------------------------

    def _check_client_flow(self) -> None:
        if self.client._write_paused and not self.upstream_paused:
            self.upstream_paused = True
            self.conn.pause_reading()

    def client_drained(self) -> None:
        if self.upstream_paused:
            self.upstream_paused = False
            self.conn.resume_reading()

    def client_gone(self) -> None:
        if not self.result:
            self.failure = ("client", "client closed connection")
            self._finish("client")

    # -- the request side ------------------------------------------------------------------------

    def request_head(self, plan: _HeaderPlan | None = None) -> bytes:
        req, loc = self.req, self.loc
        pp = loc.proxy_pass
        assert pp is not None
        if pp.uri is None:
            target = req.raw_target
        elif loc.modifier in ("", "^~", "="):
            rest = req.uri[len(loc.pattern):] if req.uri.startswith(loc.pattern) else req.uri
            target = (pp.uri + rest + (f"?{req.args}" if req.args else "")).encode("latin-1")
        else:
            target = pp.uri.encode("latin-1")
        if plan is None:
            plan = _header_plan(loc)
        out = [req.raw_method, b" ", target, plan.version_line]
        for prefix, value_of in plan.headers:
            if value_of is None:
                out.append(prefix)
                continue
            value = value_of(req)
            if value:
                out += (prefix, value, b"\r\n")
        body = req.body
        return upstream_request_head(
            b"".join(out), (), req.headers, plan.skip, req.hmap.get(b"connection"),
            req.content_length if body is not None else None,
            body is not None and req.content_length is None, hop_included=True)

    async def send_body(self, timeout: float) -> None:
        """Stream the request body; a client-side failure ends the attempt at once."""
        req, conn = self.req, self.conn
        assert req.body is not None
        chunked = req.content_length is None
        try:
            while True:
                data = await req.body.read()
                if self.result or conn.closed:
                    return
                if not data:
                    if chunked:
                        conn.write(b"0\r\n\r\n")
                    break
                if chunked:
                    conn.write(b"%x\r\n" % len(data) + data + b"\r\n")
                else:
                    conn.write(data)
                try:
                    await conn.drain(timeout)
                except (TimeoutError, ConnectionError) as e:
                    # the upstream's side: proxy_send_timeout or a closed upstream
                    if not self.result:
                        self.failure = (
                            "timeout", "upstream timed out (110: Connection timed out) while "
                                       "sending request to upstream",
                        ) if isinstance(e, TimeoutError) else ("error", f"send() failed ({e})")
                        self._finish("failed")
                    return
        except (ConnectionError, TimeoutError, _TooLarge) as e:
            if not self.result:
                self.failure = ("client", str(e) or type(e).__name__)
                self._finish("too_large" if isinstance(e, _TooLarge)
                             else "client_timeout" if isinstance(e, TimeoutError) else "client")
            return
        self.request_sent = True
        conn.start_read_timer()

    @staticmethod
    async def run(client: ClientConnection, req: Request, loc: Location) -> None:
        app = client.app
        pp = loc.proxy_pass
        assert pp is not None
        req.proxy_host = pp.proxy_host
        pool = app.pools[pp.upstream]
        balancer = pool.balancer
        tried: set[int] = set()
        tries_left = loc.proxy_next_upstream_tries or balancer.tries
        nu = loc.proxy_next_upstream
        if loc.proxy_http_version == "1.0" and req.body is not None and req.content_length is None:
            # An HTTP/1.0 upstream needs a length: spool the chunked body to a temp file first.
            await _spool_chunked(client, req)
        idempotent = req.method in _IDEMPOTENT or "non_idempotent" in nu
        addrs: list[str] = []
        statuses: list[str] = []
        last_kind = "error"
        preset, req.preset_peer = req.preset_peer, None
        if req.fast_failed is not None:
            # the fast path's try failed before any byte reached the client: count it here
            peer0, kind0 = req.fast_failed
            req.fast_failed = None
            preset = None
            tried.add(peer0.index)
            tries_left -= 1
            addrs.append(peer0.server.address)
            statuses.append("504" if kind0 == "timeout" else "502")
            last_kind = kind0
            if not (kind0 in nu and tries_left > 0 and idempotent):
                req.upstream_addr = ", ".join(addrs)
                req.upstream_status = ", ".join(statuses)
                await client.respond_error(req, 504 if kind0 == "timeout" else 502)
                return
        while True:
            now = time.monotonic()
            if preset is not None:
                peer, preset = preset[0], None
            else:
                peer = balancer.get(tried, now)
            if peer is None:
                app.error("error", "no live upstreams while connecting to upstream", client,
                          req, f"http://{pp.proxy_host}{req.target}")
                req.upstream_addr = ", ".join([*addrs, pp.upstream]) if addrs else pp.upstream
                await client.respond_error(req, 504 if last_kind == "timeout" else 502)
                return
            tried.add(peer.index)
            tries_left -= 1
            addr = peer.server.address
            addrs.append(addr)
            conn = pool.take(peer)
            fresh_retry = conn is not None
            if conn is None:
                try:
                    conn = await pool.connect(peer, loc.proxy_connect_timeout)
                except (TimeoutError, OSError) as e:
                    kind = "timeout" if isinstance(e, TimeoutError) else "error"
                    if kind == "timeout":
                        msg = "upstream timed out (110: Connection timed out)"
                    else:
                        err = getattr(e, "errno", None) or 111
                        msg = f"connect() failed ({err}: {os.strerror(err)})"
                    app.error("error", f"{msg} while connecting to upstream", client, req,
                              f"http://{addr}{req.target}")
                    balancer.failed(peer, time.monotonic())
                    statuses.append("502" if kind == "error" else "504")
                    last_kind = kind
                    body_touched = req.body is not None and req.body.started
                    if kind in nu and tries_left > 0 and not body_touched and idempotent:
                        continue
                    req.upstream_addr = ", ".join(addrs)
                    req.upstream_status = ", ".join(statuses)
                    await client.respond_error(req, 504 if kind == "timeout" else 502)
                    return
            can_retry_status = tries_left > 0 and idempotent and req.body is None
            att = ProxyAttempt(client, req, loc, pool, conn, can_retry_status)
            client.sink = att
            conn.attach(att, loc.proxy_read_timeout)
            body_task: asyncio.Task[None] | None = None
            try:
                conn.write(att.request_head())
                if req.body is not None:
                    body_task = client.loop.create_task(att.send_body(loc.proxy_send_timeout))
                else:
                    att.request_sent = True
                    conn.start_read_timer()
                result = await att.wait()
            finally:
                if body_task is not None and not body_task.done():
                    body_task.cancel()
                if body_task is not None:
                    with contextlib.suppress(BaseException):
                        await body_task
                client.sink = None
            statuses.append(req.upstream_status or "502")
            if result == "ok":
                balancer.succeeded(peer)
                reusable = att.keep_alive and att.request_sent and not att.upstream_paused
                if att.upstream_paused:
                    conn.resume_reading()
                    reusable = att.keep_alive and att.request_sent
                pool.release(conn, reusable)
                req.upstream_addr = ", ".join(addrs)
                req.upstream_status = ", ".join(statuses)
                return
            if result == "retry":
                status = att.retry_status
                if status != 404 and status != 403:
                    balancer.failed(peer, time.monotonic())
                pool.release(conn, att.keep_alive and att.request_sent)
                last_kind = "error"
                continue
            conn.close()
            if result == "too_large" and not att.started:
                app.error("error", "client intended to send too large chunked body", client, req)
                req.upstream_addr = ", ".join(addrs)
                await client.respond_error(req, 413)
                return
            if result == "client_timeout" and not att.started:
                app.error("info", "client timed out (110: Connection timed out) while reading "
                                  "client request body", client, req)
                req.upstream_addr = ", ".join(addrs)
                await client.respond_error(req, 408)
                return
            if result in ("client", "too_large", "client_timeout"):
                req.keep_alive = False
                req.upstream_addr = ", ".join(addrs)
                req.status = req.status or 499
                client.abort()
                return
            kind, msg = att.failure or ("error", "upstream failed")
            if att.started:
                app.error("error", f"{msg} while reading upstream", client, req, f"http://{addr}{req.target}")
                req.keep_alive = False
                req.upstream_addr = ", ".join(addrs)
                client.abort()
                return
            if fresh_retry and kind == "error" and not conn.got_response and (
                    req.body is None or not req.body.started):
                # A kept-alive connection the upstream had closed meanwhile: not the peer's
                # failure; try again (the pool holds finitely many such connections).
                tried.discard(peer.index)
                tries_left += 1
                addrs.pop()
                statuses.pop()
                continue
            where = "" if " while " in msg else " while reading response header from upstream"
            app.error("error", f"{msg}{where}", client,
                      req, f"http://{addr}{req.target}")
            balancer.failed(peer, time.monotonic())
            last_kind = kind
            body_touched = req.body is not None and req.body.started
            if kind in nu and tries_left > 0 and not body_touched and idempotent:
                statuses[-1:] = ["504" if kind == "timeout" else "502"]
                continue
            req.upstream_addr = ", ".join(addrs)
            req.upstream_status = ", ".join([*statuses[:-1], "504" if kind == "timeout" else "502"])
            await client.respond_error(req, 504 if kind == "timeout" else 502)
            return


class _HeaderPlan:
    """A location's proxying prepared once: the proxy_set_header lines (constant ones as bytes,
    the rest as "Name: " plus a function giving the value's bytes), the client header names not
    passed on (those replaced, and hop-by-hop ones), and the protocol of the request line."""

    __slots__ = ("headers", "retries_on_status", "skip", "version_line")

    def __init__(self, loc: Location) -> None:
        self.retries_on_status = any(k.startswith("http_") for k in loc.proxy_next_upstream)
        self.headers: list[tuple[bytes, Callable[[Request], bytes] | None]] = []
        overridden = frozenset(n.lower().encode("latin-1") for n, _ in loc.proxy_set_header)
        self.skip = overridden | HOP_REQUEST
        self.version_line = f" HTTP/{loc.proxy_http_version}\r\n".encode("latin-1")
        for name, tmpl in loc.proxy_set_header:
            prefix = name.encode("latin-1") + b": "
            if all(isinstance(p, str) for p in tmpl):
                value = "".join(p for p in tmpl if isinstance(p, str))
                if value:
                    self.headers.append((prefix + value.encode("latin-1") + b"\r\n", None))
            elif len(tmpl) == 1 and not isinstance(tmpl[0], str) and tmpl[0][0] in _BYTES_VARIABLES:
                self.headers.append((prefix, _BYTES_VARIABLES[tmpl[0][0]]))
            else:
                self.headers.append((prefix, _expander(tmpl)))


_PLANS: dict[int, tuple[Location, _HeaderPlan]] = {}


def _header_plan(loc: Location) -> _HeaderPlan:
    got = _PLANS.get(id(loc))
    if got is None or got[0] is not loc:
        got = _PLANS[id(loc)] = (loc, _HeaderPlan(loc))
    return got[1]


def _getter(name: str) -> Callable[[Request], str]:
    """The function giving ``$name`` of a request, chosen once rather than looked up per use."""
    f = _VARIABLES.get(name)
    if f is not None:
        return f
    if name.startswith("http_"):
        key = name[5:].replace("_", "-").encode()
        return lambda r: r.header(key)
    return lambda r: r.variable(name)


class _LogPlan:
    """A log_format as (literal, variable getter) pairs and a tail: a line is then one pass."""

    __slots__ = ("pairs", "tail")

    def __init__(self, tmpl: Template) -> None:
        self.pairs: list[tuple[str, Callable[[Request], str]]] = []
        lit: list[str] = []
        for part in tmpl:
            if isinstance(part, str):
                lit.append(part)
            else:
                self.pairs.append(("".join(lit), _getter(part[0])))
                lit = []
        self.tail = "".join(lit) + "\n"


_LOG_PLANS: dict[int, tuple[AccessLog, _LogPlan]] = {}


def _log_line(al: AccessLog, req: Request) -> str:
    """One access log line; a variable without value shows as "-", as in nginx."""
    got = _LOG_PLANS.get(id(al))
    if got is None or got[0] is not al:
        got = _LOG_PLANS[id(al)] = (al, _LogPlan(al.format))
    plan = got[1]
    out: list[str] = []
    for lit, get in plan.pairs:
        out.append(lit)
        out.append(get(req) or "-")
    out.append(plan.tail)
    return "".join(out)


def _expander(tmpl: Template) -> Callable[[Request], bytes]:
    def value(r: Request) -> bytes:
        return expand(tmpl, r.variable).encode("latin-1")
    return value


async def _spool_chunked(client: ClientConnection, req: Request) -> None:
    """Turn a chunked request body into a sized one through a temporary file (not memory)."""
    import tempfile

    assert req.body is not None
    f = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the replacement reader
    total = 0
    while True:
        data = await req.body.read()
        if not data:
            break
        f.write(data)
        total += len(data)
    f.seek(0)
    body = BodyReader(client, req)
    body.received = total
    body.done = True
    body.spool = f
    req.body = body if total else None
    if not total:
        f.close()
    req.content_length = total
    req.chunked = False


def _xff(r: Request) -> str:
    xff = r.header(b"x-forwarded-for")
    return f"{xff}, {r.conn.remote_addr}" if xff else r.conn.remote_addr


def _xff_bytes(r: Request) -> bytes:
    xff = r.hmap.get(b"x-forwarded-for")
    return xff + b", " + r.conn.remote_addr_b if xff else r.conn.remote_addr_b


# Variables proxy_set_header uses most, as bytes straight from the request (no str round trip).
_BYTES_VARIABLES: dict[str, Callable[[Request], bytes]] = {
    "host": lambda r: r.host.encode("latin-1"),
    "remote_addr": lambda r: r.conn.remote_addr_b,
    "proxy_add_x_forwarded_for": _xff_bytes,
    "request_uri": lambda r: r.raw_target,
    "scheme": lambda r: b"http",
    "proxy_host": lambda r: r.proxy_host.encode("latin-1"),
}


def _request_line(r: Request) -> str:
    if r.request_line is not None:
        return r.request_line
    return f"{r.method} {r.target} HTTP/{r.version}"


_VARIABLES: dict[str, Callable[[Request], str]] = {
    "host": lambda r: r.host,
    "remote_addr": lambda r: r.conn.remote_addr,
    "proxy_add_x_forwarded_for": _xff,
    "proxy_host": lambda r: r.proxy_host,
    "request_uri": lambda r: r.target,
    "scheme": lambda r: "http",
    "request": _request_line,
    "status": lambda r: str(r.status),
    "body_bytes_sent": lambda r: str(r.body_bytes_sent),
    "bytes_sent": lambda r: str(r.bytes_sent),
    "time_local": lambda r: r.conn.app.clock.local,
    "remote_user": lambda r: "",
    "uri": lambda r: r.uri,
    "document_uri": lambda r: r.uri,
    "args": lambda r: r.args,
    "query_string": lambda r: r.args,
    "is_args": lambda r: "?" if r.args else "",
    "request_method": lambda r: r.method,
    "server_protocol": lambda r: f"HTTP/{r.version}",
    "remote_port": lambda r: str(r.conn.remote_port),
    "server_addr": lambda r: r.conn.local_addr,
    "server_port": lambda r: str(r.conn.local_port),
    "server_name": lambda r: r.server.server_names[0] if r.server else "",
    "http_host": lambda r: r.header(b"host"),
    "proxy_port": lambda r: r.proxy_host.rpartition(":")[2] if ":" in r.proxy_host else "80",
    "time_iso8601": lambda r: time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "msec": lambda r: f"{time.time():.3f}",
    "request_time": lambda r: f"{max(0.0, time.monotonic() - r.start):.3f}",
    "request_length": lambda r: str(r.head_size + (r.body.received if r.body else 0)),
    "upstream_addr": lambda r: r.upstream_addr,
    "upstream_status": lambda r: r.upstream_status,
    "upstream_response_time": lambda r: "",
    "connection": lambda r: str(r.conn.serial),
    "connection_requests": lambda r: str(r.conn.requests),
    "content_length": lambda r: r.header(b"content-length"),
    "content_type": lambda r: r.header(b"content-type"),
    "pid": lambda r: str(os.getpid()),
    "hostname": lambda r: os.uname().nodename,
    "document_root": lambda r: (r.location.alias or r.location.root) if r.location else "",
    "nginx_version": lambda r: _pkg_version,
}
