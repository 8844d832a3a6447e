"""One request as the server holds it from its head to its log line, its body as it arrives,
and the values of nginx's ``$variables`` for it.

Why here, apart from the connection: every part of answering (routing, static files, proxying,
error pages, the access log) reads and updates the same request, and none of them should need
the connection class to do so. What a request needs of its connection is the small
``RequestConn`` protocol below, so this module sits under all of them.

Not for: parsing (``connection`` feeds httptools) or answering (``routing`` and what it calls).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Protocol

from pylvs import __version__ as _pkg_version
from pylvs.l7.accel import Carried
from pylvs.l7.authbasic import basic_credentials
from pylvs.l7.balancer import Peer
from pylvs.l7.config import Location, Return, Server
from pylvs.l7.maps import Map, find
from pylvs.l7.message import ResponseHead
from pylvs.l7.proxyprotocol import ProxyHeader
from pylvs.l7.status import Clock
from pylvs.l7.variables import expand

BODY_HIGH_WATER = 256 * 1024
FILE_CHUNK = 256 * 1024


class TooLarge(Exception):
    """The body went past client_max_body_size while it streamed (413 in nginx)."""


class Refused(Exception):
    """Raised inside a parser callback to stop parsing a connection already refused."""


class RequestConn(Protocol):
    """What a request and its body reader use of the client connection they arrived on."""

    loop: asyncio.AbstractEventLoop
    clock: Clock
    serial: int
    requests: int
    remote_addr: str
    remote_addr_b: bytes
    remote_port: int
    local_addr: str
    local_port: int
    scheme: str  # "http", or "https" on a TLS listener
    ssl_server_name: str  # the name the TLS client sent (SNI), "" without
    pp: ProxyHeader | None  # a ``listen ... proxy_protocol`` connection's PROXY header
    started: float  # time.monotonic() when the connection was accepted

    def write(self, data: bytes) -> None: ...

    def maybe_continue(self, req: Request) -> None: ...

    def update_reading(self) -> None: ...

    def arm_timer(self, seconds: float, kind: str) -> None: ...

    def disarm_timer(self, kind: str) -> None: ...


class BodyReader:
    """A request body as it arrives: bounded buffer, pauses the client socket when full."""

    __slots__ = (
        "_chunks",
        "_size",
        "conn",
        "consumed",
        "done",
        "error",
        "received",
        "req",
        "spool",
        "started",
        "waiter",
    )

    def __init__(self, conn: RequestConn, req: Request) -> None:
        self.conn = conn
        self.req = req
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None  # set while read() waits for bytes
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
        w = self.waiter
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
            self.waiter = conn.loop.create_future()
            conn.arm_timer(self.req.location_timeout("body"), "body")
            try:
                await self.waiter
            finally:
                self.waiter = None
                conn.disarm_timer("body")
        if self._chunks:
            data = self._chunks.popleft()
            self._size -= len(data)
            if self._size < BODY_HIGH_WATER:
                conn.update_reading()
            loc = self.req.location
            if loc is not None and self.received > loc.client_max_body_size > 0:
                raise TooLarge
            return data
        if self.error is not None:
            raise self.error
        self.consumed = True
        return b""

    async def discard(self) -> bool:
        """Read the rest and drop it (a body nobody consumed); False if that failed, and the
        connection must then close."""
        try:
            while await self.read():
                pass
        except (ConnectionError, TimeoutError, TooLarge):
            return False
        return True


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
    routed = -1  # route()'s answer once it ran (the fast path may have run it)
    # identity of the cached head (``ListenGroup.heads``) this request is, when its routing
    # came with it: what follows from head and route alone may be kept per connection
    known: object | None = None
    fast_file: str | None = None  # a known head's ``static.cached_path``
    fast_proxy = False  # a known head routed to a proxy_pass location without a script
    preset_peer: tuple[Peer | None] | None = None  # peer the fast path already chose
    fast_failed: tuple[Peer, str] | None = None  # its failed try, for the task to go on
    seq = 0  # this request's number on its connection (keepalive_requests)
    error_redirected = False  # an error_page redirect happened (one per request, as in nginx)
    error_status = 0  # the status an error page's file is sent with (0: its own)
    redirect: tuple[int, str] | None = None  # a rewrite's redirect: (status, location)
    error_headers = b""  # lines an error page keeps: a return's Location, auth_basic's challenge
    sent_head = b""  # the response head as sent ($sent_http_*): ``reply.head_bytes`` and the fast paths
    # an upstream's X-Accel-Redirect answer (``message.ResponseHead``) for the task to follow,
    # and what crosses to the answer that replaces it (``accel``)
    accel: ResponseHead | None = None
    carried: Carried | None = None
    returned: Return | None = None  # a server-level ``return`` answers (its script ran)
    vars: dict[str, str] | None = None  # ``set`` variables and named captures
    upgrade = False  # the client asked to switch protocols (Upgrade; ``tunnel``)
    captures: re.Match[str] | None = None  # the last regex match: $1..$9
    # a rewrite changed the URI (nginx's r->internal): an ``internal`` location may answer
    # (``routing.route``; after an internal redirect the check is not made again)
    internal = False
    # the client's address from a trusted proxy's header (``realip``; "": the connection's)
    # and its port there (0: none given, $remote_port is then empty)
    real_addr = ""
    real_port = 0
    # (connect, header, response) seconds of each upstream try, -1 where it had none
    upstream_times: list[tuple[float, float, float]] | None = None

    def __init__(self, conn: RequestConn) -> None:
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

    def set_var(self, name: str, value: str) -> None:
        """``set $name``: ``$args`` is the request's arguments, others the request's own."""
        if name == "args":
            self.args = value
            return
        if self.vars is None:
            self.vars = {}
        self.vars[name] = value

    def set_captures(self, m: re.Match[str]) -> None:
        """A regex matched (location, rewrite, if, server_name): its groups are $1.. and its
        named groups variables, as in nginx."""
        self.captures = m
        if m.re.groupindex:
            if self.vars is None:
                self.vars = {}
            for k, v in m.groupdict().items():
                self.vars[k.lower()] = v or ""

    def variable(self, name: str) -> str:
        """The value of nginx's ``$name`` for this request ("" when it has none)."""
        f = VARIABLES.get(name)
        if f is not None:
            return f(self)
        if self.vars is not None:
            v = self.vars.get(name)
            if v is not None:
                return v
        srv = self.server
        if srv is not None and srv.maps is not None:
            mp = srv.maps.get(name)
            if mp is not None:
                return self._map(mp)
        if name.isdigit():
            m = self.captures
            n = int(name)
            return (m.group(n) or "") if m is not None and n <= (m.re.groups or 0) else ""
        if name.startswith("http_"):
            return self.header(name[5:].replace("_", "-").encode())
        if name.startswith("sent_http_"):
            return sent_header(self.sent_head, name[10:])
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

    def _map(self, mp: Map) -> str:
        """A ``map`` variable: looked up the first time this request uses it and kept (in
        ``vars``, where nginx keeps it too: a later ``set`` replaces it), unless volatile."""
        v = find(mp, self)
        if not mp.volatile:
            if self.vars is None:
                self.vars = {}
            self.vars[mp.name] = v
        return v


def getter(name: str) -> Callable[[Request], str]:
    """The function giving ``$name`` of a request, chosen once rather than looked up per use."""
    f = VARIABLES.get(name)
    if f is not None:
        return f
    if name.startswith("http_"):
        key = name[5:].replace("_", "-").encode()
        return lambda r: r.header(key)
    if name.startswith("sent_http_"):
        field = name[10:]
        return lambda r: sent_header(r.sent_head, field)
    return lambda r: r.variable(name)


def sent_header(head: bytes, field: str) -> str:
    """``$sent_http_NAME`` ("_" for "-", any case) from the response head sent: the first
    line of that name, as nginx 1.22 gives it (Cache-Control's lines joined with ", ", as its
    own variable does); "" before a head was sent or without such a line."""
    if not head:
        return ""
    want = field.replace("_", "-").encode().lower() + b":"
    values = []
    for line in head.split(b"\r\n")[1:]:
        if not line:
            break
        if line[:len(want)].lower() == want:
            values.append(line[len(want):].strip(b" \t").decode("latin-1"))
            if want != b"cache-control:":
                break
    return ", ".join(values)


def _document_root(r: Request) -> str:
    """$document_root: the alias or root, with its variables expanded for this request."""
    loc = r.location
    if loc is None:
        return ""
    if loc.alias is not None:
        return loc.alias if loc.alias_template is None else expand(loc.alias_template, r.variable)
    return loc.root if loc.root_template is None else expand(loc.root_template, r.variable)


def _remote_user(r: Request) -> str:
    """The user of a Basic Authorization header, whether or not the location asks for one
    (nginx's $remote_user; "" when there is none nginx can read)."""
    creds = basic_credentials(r.hmap.get(b"authorization"))
    return creds[0].decode("latin-1") if creds is not None else ""


def _xff(r: Request) -> str:
    """$proxy_add_x_forwarded_for: the header's lines, then the client (a realip one); an
    empty X-Forwarded-For line still counts, as in nginx."""
    addr = r.real_addr or r.conn.remote_addr
    xff = r.hmap.get(b"x-forwarded-for")
    return f"{xff.decode('latin-1')}, {addr}" if xff is not None else addr


def _remote_port(r: Request) -> str:
    """$remote_port: the connection's, or the port a realip header gave ("" without)."""
    if r.real_addr:
        return str(r.real_port) if r.real_port else ""
    return str(r.conn.remote_port)


def _times(r: Request, which: int) -> str:
    """nginx's upstream timings: seconds with milliseconds per try, "-" where there was none."""
    if not r.upstream_times:
        return ""
    return ", ".join(f"{t[which]:.3f}" if t[which] >= 0 else "-" for t in r.upstream_times)


def _request_line(r: Request) -> str:
    if r.request_line is not None:
        return r.request_line
    return f"{r.method} {r.target} HTTP/{r.version}"


VARIABLES: dict[str, Callable[[Request], str]] = {
    "host": lambda r: r.host,
    "remote_addr": lambda r: r.real_addr or r.conn.remote_addr,
    "realip_remote_addr": lambda r: r.conn.remote_addr,
    "realip_remote_port": lambda r: str(r.conn.remote_port),
    "proxy_add_x_forwarded_for": _xff,
    "proxy_host": lambda r: r.proxy_host,
    "request_uri": lambda r: r.target,
    "scheme": lambda r: r.conn.scheme,
    "https": lambda r: "on" if r.conn.scheme == "https" else "",
    "ssl_server_name": lambda r: r.conn.ssl_server_name,
    "request": _request_line,
    "status": lambda r: str(r.status),
    "body_bytes_sent": lambda r: str(r.body_bytes_sent),
    "bytes_sent": lambda r: str(r.bytes_sent),
    "time_local": lambda r: r.conn.clock.local,
    "remote_user": _remote_user,
    "proxy_protocol_addr": lambda r: r.conn.pp.src_addr if r.conn.pp else "",
    "proxy_protocol_port": lambda r: str(r.conn.pp.src_port) if r.conn.pp and r.conn.pp.src_addr
    else "",
    "proxy_protocol_server_addr": lambda r: r.conn.pp.dst_addr if r.conn.pp else "",
    "proxy_protocol_server_port": lambda r: str(r.conn.pp.dst_port)
    if r.conn.pp and r.conn.pp.dst_addr else "",
    "uri": lambda r: r.uri,
    "document_uri": lambda r: r.uri,
    "args": lambda r: r.args,
    "query_string": lambda r: r.args,
    "is_args": lambda r: "?" if r.args else "",
    "request_method": lambda r: r.method,
    "server_protocol": lambda r: f"HTTP/{r.version}",
    "remote_port": _remote_port,
    "server_addr": lambda r: r.conn.local_addr,
    "server_port": lambda r: str(r.conn.local_port),
    "server_name": lambda r: r.server.server_names[0] if r.server else "",
    "http_host": lambda r: r.header(b"host"),
    "proxy_port": lambda r: r.proxy_host.rpartition(":")[2] if ":" in r.proxy_host else "80",
    "time_iso8601": lambda r: time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "msec": lambda r: f"{time.time():.3f}",
    "request_time": lambda r: f"{max(0.0, time.monotonic() - r.start):.3f}",
    "connection_time": lambda r: f"{max(0.0, time.monotonic() - r.conn.started):.3f}",
    "upstream_connect_time": lambda r: _times(r, 0),
    "upstream_header_time": lambda r: _times(r, 1),
    "upstream_response_time": lambda r: _times(r, 2),
    "request_length": lambda r: str(r.head_size + (r.body.received if r.body else 0)),
    "upstream_addr": lambda r: r.upstream_addr,
    "upstream_status": lambda r: r.upstream_status,
    "connection": lambda r: str(r.conn.serial),
    "connection_requests": lambda r: str(r.conn.requests),
    "content_length": lambda r: r.header(b"content-length"),
    "content_type": lambda r: r.header(b"content-type"),
    "pid": lambda r: str(os.getpid()),
    "hostname": lambda r: os.uname().nodename,
    "document_root": lambda r: _document_root(r),
    "nginx_version": lambda r: _pkg_version,
}


async def spool_chunked(client: RequestConn, req: Request) -> None:
    """Turn a chunked request body into a sized one through a temporary file (not memory)."""
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
