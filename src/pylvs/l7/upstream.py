"""Connections to upstream (app) servers: the response reader and the keepalive pool.

An ``UpstreamConnection`` parses responses with httptools (a response head it has seen lately is
recognised whole, bytes for bytes, instead of being taken apart header by header again) and hands
each event straight to the ``ResponseSink`` of the request it serves, inside the same callback, so a body chunk goes from the
upstream socket to the client socket without a task switch or a copy into a buffer; the client's
write flow control pauses this socket's reading (backpressure end to end). ``UpstreamPool`` keeps
up to ``keepalive N`` idle connections per upstream, as nginx's keepalive module does, closing the
oldest beyond that and any idle longer than the upstream's ``keepalive_timeout`` (checked on
reuse and by a sweep once a second, not by a timer per request).

Not for: choosing the peer (``balancer``) or the request side (``server``).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Protocol, cast

import httptools

from pylvs.l7.balancer import Peer, balancer_for
from pylvs.l7.config import UpstreamConfig
from pylvs.l7.message import ResponseHead, client_response_head
from pylvs.l7.tls import sni_name, upstream_context
from pylvs.l7.tunnel import Tunnel

# Response heads seen lately, raw bytes -> what the client is sent. An upstream answers the same
# page with the same head (only its Date changes, once a second), so most responses skip header
# parsing and filtering altogether; the bound keeps a stream of distinct heads from growing it.
_HEADS: dict[bytes, ResponseHead] = {}
_HEADS_MAX = 512
# Larger response heads are refused (502), as nginx refuses those over proxy_buffer_size.
MAX_HEAD = 64 * 1024


def response_parser(callbacks: object) -> httptools.HttpResponseParser:
    """An httptools response parser that, as nginx, also reads lines ending in a bare LF."""
    parser = httptools.HttpResponseParser(callbacks)
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
    return parser


class _HeadReader:
    """httptools callbacks collecting one response head's fields (1xx interim heads skipped)."""

    __slots__ = ("complete", "headers", "parser", "reason")

    def __init__(self) -> None:
        self.parser = response_parser(self)
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_message_begin(self) -> None:
        self.reason = b""
        self.headers = []

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not 100 <= self.parser.get_status_code() < 200:
            self.complete = True
            raise _HeadRead


class _HeadRead(Exception):
    """Stops _HeadReader's parser at the end of the head it was after."""


def read_response_head(raw: bytes) -> ResponseHead | None:
    """The final (non-1xx) response head at the start of ``raw``, or None if it is not there."""
    reader = _HeadReader()
    try:
        reader.parser.feed_data(raw)
    except httptools.HttpParserCallbackError:
        pass
    except httptools.HttpParserError:
        return None
    if not reader.complete:
        return None
    status = reader.parser.get_status_code()
    head = client_response_head(status, reader.reason, reader.headers)
    if (head.length is not None and status != 204 and status != 304
            and reader.parser.get_http_version() == "1.1" and _plain_framing(reader.headers)):
        head.whole = head.length
    return head


def _plain_framing(headers: list[tuple[bytes, bytes]]) -> bool:
    """One Content-Length of digits, no Transfer-Encoding or Upgrade, and a Connection header
    (if any) saying only keep-alive: a response httptools would end after exactly that many
    body bytes, keeping the connection."""
    lengths = 0
    for name, value in headers:
        n = name.lower()
        if n == b"content-length":
            lengths += 1
            if not value.strip().isdigit():
                return False
        elif n in (b"transfer-encoding", b"upgrade") or (
                n == b"connection" and value.strip().lower() != b"keep-alive"):
            return False
    return lengths == 1


_HEAD_END = re.compile(rb"\r?\n\r?\n")


def split_switch(raw: bytes) -> tuple[bytes, bytes]:
    """The ``101`` head in ``raw`` (after any other 1xx heads) and the bytes after it, which
    belong to the switched protocol."""
    pos = 0
    while True:
        m = _HEAD_END.search(raw, pos)
        if m is None:
            return raw[pos:], b""
        if raw[pos + 9:pos + 12] == b"101":
            return raw[pos:m.end()], raw[m.end():]
        pos = m.end()


class _Switched(Exception):
    """Stops the response parser at a 101 head: what follows is not HTTP."""


class ResponseSink(Protocol):
    head_only: bool
    upstream_paused: bool  # the client is not reading: the wait is the client's, not ours

    def response_head(self, head: ResponseHead, keep_alive: bool, until_eof: bool) -> None: ...
    def response_whole(self, head: ResponseHead, body: bytes) -> None: ...
    def response_body(self, data: bytes) -> None: ...
    def response_complete(self) -> None: ...
    def flush(self) -> None: ...
    def upstream_failed(self, kind: str, message: str) -> None: ...

    # the request asked to switch protocols: a 101 head goes to ``switched``, not skipped
    upgrade: bool

    def switched(self, head: bytes) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, peer: Peer) -> None:
        self.pool = pool
        self.peer = peer
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = response_parser(self)
        self.sink: ResponseSink | None = None
        self.closed = False
        self.requests = 0
        self.reused = False
        self.got_response = False  # any byte of a response arrived for the current sink
        self._raw = b""  # bytes of the response since the request was sent, until its head ends
        self._want_head = False
        self._interim = False  # a 1xx head came first: the final head is not at _raw's start
        self._skip = False  # inside an interim 1xx response
        self._until_eof = False
        self._in_body = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._read_timeout = 60.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._reading = False
        self.idle_since = 0.0
        self.connected: asyncio.Future[None] = self.loop.create_future()
        # after a 101: bytes read before the tunnel is joined, then the tunnel (``tunnel``)
        self._switch_buf: list[bytes] | None = None
        self._tunnel: Tunnel | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        if self.sink is None:
            if self._tunnel is not None:
                self._tunnel.from_upstream(data)
            elif self._switch_buf is not None:
                self._switch_buf.append(data)
            else:
                # Nothing is expected between responses: the connection is not reusable.
                self.close()
            return
        self.got_response = True
        sink = self.sink
        if self._want_head:
            if not self._raw and not sink.head_only:
                # A read that is one whole response whose head was seen lately and says how
                # long it is: its head, body and end go to the sink at once, without httptools
                # (between responses the parser has nothing buffered, so skipping it is safe).
                end = data.find(b"\r\n\r\n") + 4
                if end > 4:
                    head = _HEADS.get(data if end == len(data) else data[:end])
                    if head is not None and head.whole == len(data) - end:
                        self._want_head = False
                        self._interim = False
                        self._until_eof = False
                        self._in_body = False
                        self.sink = None
                        sink.response_whole(head, data[end:] if head.whole else b"")
                        return
            self._raw = self._raw + data if self._raw else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            if self._switch_buf is not None:
                return  # (a 101 head: ``_switch``)
            sink = self.sink
            self.close()
            if sink is not None:
                sink.upstream_failed("invalid_header", f"upstream sent invalid response: {e}")
            return
        if self._want_head and len(self._raw) > MAX_HEAD and self.sink is sink:
            self.close()
            sink.upstream_failed("invalid_header", "upstream sent too big header")
            return
        sink.flush()  # one client write per upstream read

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timers()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("upstream closed"))
        self.pool.forget(self)
        if self._tunnel is not None:
            self._tunnel.close("upstream")
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if self._in_body and self._until_eof and exc is None:
            self._in_body = False
            sink.response_complete()
        elif isinstance(exc, ConnectionResetError):
            sink.upstream_failed("error", "recv() failed (104: Connection reset by peer)")
        else:
            sink.upstream_failed("error", "upstream prematurely closed connection")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None
        if self._tunnel is not None:
            self._tunnel.upstream_drained()

    # -- httptools callbacks ----------------------------------------------------------------

    # No on_header/on_status: the head is taken whole from the bytes read (``_raw``) and looked
    # up in _HEADS; only a head not seen lately is parsed field by field (read_response_head).

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101 and self.sink is not None and self.sink.upgrade:
            self._switch()
            raise _Switched
        if 100 <= status < 200:
            self._skip = True
            self._interim = True
            return
        sink = self.sink
        if sink is None:
            return
        raw, self._raw, self._want_head = self._raw, b"", False
        head: ResponseHead | None = None
        if not self._interim:
            end = raw.find(b"\r\n\r\n") + 4
            if end > 4:
                key = raw if end == len(raw) else raw[:end]
                head = _HEADS.get(key)
                if head is None:
                    head = read_response_head(key)
                    if head is not None:
                        if len(_HEADS) >= _HEADS_MAX:
                            _HEADS.clear()
                        _HEADS[key] = head
        self._interim = False
        if head is None:
            head = read_response_head(raw)
            if head is None:
                raise httptools.HttpParserError("response head unreadable")
        until_eof = not sink.head_only and status != 204 and status != 304 and not head.framed
        self._until_eof = until_eof
        keep_alive = self.parser.should_keep_alive() and not until_eof
        self._in_body = True
        sink.response_head(head, keep_alive, until_eof)
        if sink.head_only and self.sink is sink:
            # httptools cannot be told the response has no body: finish here and read the next
            # response with a fresh parser.
            self._in_body = False
            self.parser = response_parser(self)
            self.sink = None
            sink.response_complete()

    def _switch(self) -> None:
        """The upstream switched protocols for a request that asked to: the client gets the
        101 head, this connection leaves HTTP (never reused) and what it reads is kept for the
        tunnel the proxy joins next (``attach``)."""
        sink = self.sink
        assert sink is not None
        raw, self._raw, self._want_head = self._raw, b"", False
        head, rest = split_switch(raw)
        self.sink = None
        self._reading = False
        self._cancel_timers()
        self._switch_buf = [rest] if rest else []
        sink.switched(head)

    def attach(self, tunnel: Tunnel) -> None:
        """Join ``tunnel``: what was read since the 101 goes first."""
        self._tunnel = tunnel
        buf, self._switch_buf = self._switch_buf or [], None
        for data in buf:
            tunnel.from_upstream(data)
        if self.closed:
            tunnel.close("upstream")

    def write_blocked(self) -> bool:
        return self._write_paused

    def end(self) -> None:
        """Close after what is buffered is sent (the tunnel's end; ``close`` aborts)."""
        self.close(graceful=True)

    def on_body(self, data: bytes) -> None:
        if self._skip:
            return
        sink = self.sink
        if sink is not None:
            sink.response_body(data)

    def on_message_complete(self) -> None:
        if self._skip:
            self._skip = False
            return
        sink, self.sink = self.sink, None
        self._in_body = False
        if sink is not None:
            sink.response_complete()

    # -- used by the request side ---------------------------------------------------------

    def exchange(self, sink: ResponseSink, read_timeout: float, head: bytes,
                 timer: bool = True) -> None:
        """Serve ``sink``'s request: attach it, write the request head and (``timer``: no body
        follows) arm proxy_read_timeout; with a body the sender arms it once the body is sent."""
        self.sink = sink
        self._reading = False  # proxy_read_timeout runs once the request is sent
        self.got_response = False
        self._raw = b""
        self._want_head = True
        self._interim = False
        self.requests += 1
        self._read_timeout = read_timeout
        assert self.transport is not None
        self.transport.write(head)
        if timer:
            self.start_read_timer()

    def start_read_timer(self) -> None:
        """Arm proxy_read_timeout: it runs between two successive reads, as in nginx."""
        if self.sink is None or self.closed:
            return
        self._last_read = self.loop.time()
        self._reading = True
        due = self._last_read + self._read_timeout
        if self._timer is None or self._timer_at > due:
            # Left armed between requests: it re-checks when it fires instead of being
            # cancelled and re-created for every response.
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = due
            self._timer = self.loop.call_at(due, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        if self.sink is None or self.closed or not self._reading:
            return
        due = self._last_read + self._read_timeout
        if self.sink.upstream_paused:
            # Reading stopped because the client does not read: send_timeout is the client's.
            due = self.loop.time() + self._read_timeout
            self._last_read = self.loop.time()
        if self.loop.time() < due - 0.001:
            self._timer_at = due
            self._timer = self.loop.call_at(due, self._check_timeout)
            return
        sink, self.sink = self.sink, None
        self.close()
        sink.upstream_failed("timeout", "upstream timed out (110: Connection timed out)")

    def write(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if not self._write_paused or self.closed:
            return
        if self._drain is None:
            self._drain = self.loop.create_future()
        async with asyncio.timeout(timeout):
            await self._drain

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _cancel_timers(self) -> None:
        self._cancel_timer()

    def detach(self) -> None:
        self.sink = None

    def close(self, graceful: bool = False) -> None:
        """Leave the connection: aborted (buffered bytes dropped), or ``graceful``ly."""
        self._cancel_timers()
        self.sink = None
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                if graceful:
                    self.transport.close()
                else:
                    self.transport.abort()


class UpstreamPool:
    """One upstream block at run time: its balancer and its idle keepalive connections.

    An ``https://`` upstream (``config.tls``) is a pool of its own (``https://NAME``): its
    connections speak TLS (``tls.upstream_context``), the rest is the same."""

    stat_base = -1  # where its servers' counters start in the worker's stats slot (-1: none)

    def __init__(self, config: UpstreamConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.balancer = balancer_for(config)  # the block's method (round robin by default)
        self._idle: dict[int, list[UpstreamConnection]] = {p.index: [] for p in self.balancer.peers}
        self._count = 0  # idle connections over all peers
        self._ssl: ssl.SSLContext | None = None
        if config.tls is not None:
            self._ssl = upstream_context(config.tls)

    def take(self, peer: Peer) -> UpstreamConnection | None:
        """The most recently used idle connection to ``peer`` (warmest), if any."""
        idle = self._idle[peer.index]
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            self._count -= 1
            if conn.closed:
                continue
            if now - conn.idle_since > self.config.keepalive_timeout:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def sweep(self) -> None:
        """Close connections idle past keepalive_timeout (called about once a second)."""
        now = self.loop.time()
        limit = self.config.keepalive_timeout
        for idle in self._idle.values():
            for conn in [c for c in idle if now - c.idle_since > limit]:
                conn.close()

    async def connect(self, peer: Peer, timeout: float) -> UpstreamConnection:
        conn = UpstreamConnection(self, peer)
        async with asyncio.timeout(timeout):
            if self._ssl is None:
                await self.loop.create_connection(lambda: conn, peer.server.host,
                                                  peer.server.port)
            else:
                assert self.config.tls is not None
                sni = sni_name(self.config.tls)
                await self.loop.create_connection(
                    lambda: conn, peer.server.host, peer.server.port, ssl=self._ssl,
                    server_hostname=sni, ssl_handshake_timeout=timeout)
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """Give a connection back after its response; keep it if keepalive allows."""
        conn.sink = None  # conn.detach(), inline
        cfg = self.config
        if (not reusable or conn.closed or cfg.keepalive == 0
                or conn.requests >= cfg.keepalive_requests):
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle[conn.peer.index].append(conn)
        self._count += 1
        while self._count > cfg.keepalive:
            # over the cache size: close the oldest idle connection of the busiest peer
            idle = max(self._idle.values(), key=len)
            self._count -= 1
            idle.pop(0).close()

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.peer.index)
        if idle is not None and conn in idle:
            idle.remove(conn)
            self._count -= 1

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                self._count -= 1
                idle.pop().close()
