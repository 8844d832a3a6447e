"""One client connection: reading and parsing, the pipelined queue, timers and writing.

A ``ClientConnection`` feeds bytes to httptools, which calls back with the parts of each request;
complete request heads queue up and are answered strictly in order (pipelining). The common
requests, a body-less one proxied over a warm keepalive connection or a small file (see
``files``), are answered from those callbacks alone (``proxying.try_fast_proxy``,
``static.send_cached``); anything else (bodies, retries, errors, large files) starts the
connection's task, which then answers the queue through ``routing``. Bodies stream both ways:
request bodies through a bounded ``request.BodyReader`` that pauses the client socket past a
high-water mark, response bodies from the upstream straight to the client socket with the
client's write flow control pausing the upstream. Every wait has nginx's timer
(client_header_timeout against slowloris, client_body_timeout, send_timeout,
keepalive_timeout; the proxy_* timers run in ``upstream``).

This is the hot path's entry: what it does per request is kept to the callbacks themselves, and
the rest is delegated to the modules named above with plain function calls. Over 800 lines,
hot path kept whole: ``data_received``, the httptools callbacks and the known-head path share
the connection's state attribute by attribute on every request; split into classes or modules,
each request would pay the extra lookups and calls (the per-request cost is what the layer-7
benchmark measures), so only the rare paths (upgrades, other methods) live here beside them.

Not for: what a request gets (``routing``, ``static``, ``proxying``, ``errorpages``) or the
listening sockets (``listen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from typing import cast

import httptools

from pylvs.l7 import errorpages
from pylvs.l7.access import allowed
from pylvs.l7.config import Location, Server
from pylvs.l7.location import ListenGroup
from pylvs.l7.proxying import try_fast_proxy
from pylvs.l7.proxyprotocol import ProxyHeader
from pylvs.l7.realip import apply as apply_realip
from pylvs.l7.request import BODY_HIGH_WATER, BodyReader, Refused, Request, TooLarge
from pylvs.l7.routing import handle, route
from pylvs.l7.static import cached_path, send_cached
from pylvs.l7.stats import ACCEPTS, ACTIVE, HANDLED, READING, REQUESTS, WRITING
from pylvs.l7.tunnel import Tunnel
from pylvs.l7.worker import Sink, Worker

_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)[ \t]*\r\n")  # in a lower-cased head
_OTHER_METHOD = re.compile(rb"([A-Z_-]{1,32}) ")
_METHOD_PART = re.compile(rb"[A-Z_-]{1,32}")


def _crlf(data: bytes) -> bytes:
    """Bare LF line ends as CRLF in the head part of ``data``: nginx accepts them everywhere,
    httptools refuses one after the request line's version. Body bytes stay as they are: past
    the end of the first head nothing changes unless no request in ``data`` announces a body.
    Only reads whose first line end is a bare LF come here (CRLF clients never do)."""
    low = data.lower()
    if b"content-length" not in low and b"transfer-encoding" not in low:
        return _BARE_LF.sub(b"\r\n", data)
    m = _HEAD_END.search(data)
    end = m.end() if m else len(data)
    return _BARE_LF.sub(b"\r\n", data[:end]) + data[end:]


def _after_heads(data: bytes, n: int, at_start: bool) -> bytes | None:
    """What follows the ``n``-th request in ``data`` when the read held ``n`` complete requests
    before the one llhttp refused: past each head end and its body (Content-Length, or
    chunked: llhttp accepted that framing, so it is walked without checks). None where that
    is unknown: a body in a read that did not begin at a request's first byte (its head, or
    its body's start, was in an earlier read)."""
    low = data.lower()
    bodies = b"content-length" in low or b"transfer-encoding" in low
    if bodies and not at_start:
        return None
    pos = 0  # (a read that began inside a head: its end is the first one here too)
    for _ in range(n):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return None
        head = low[pos:end + 2]
        pos = end + 4
        if bodies:
            if b"\r\ntransfer-encoding" in head:
                pos = _chunked_end(data, pos)
                if pos < 0:
                    return None
            else:
                m = _CONTENT_LENGTH.search(head)
                if m is not None:
                    pos += int(m.group(1))
    return data[pos:] if pos <= len(data) else None


def _chunked_end(data: bytes, pos: int) -> int:
    """Where the chunked body starting at ``pos`` ends (after its trailer), or -1."""
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return -1
        try:
            size = int(data[pos:eol].split(b";")[0].strip(), 16)
        except ValueError:
            return -1
        pos = eol + 2
        if size == 0:
            while True:  # trailer lines, up to an empty one
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return -1
                if eol == pos:
                    return eol + 2
                pos = eol + 2
        pos += size + 2


def _request_parser(callbacks: object) -> httptools.HttpRequestParser:
    """An httptools request parser reading as nginx does: header lines may end in a bare LF
    (the request line: see _crlf) and any HTTP/1.x version is read as 1.1 (HTTP/2.0 and up:
    505). A connection makes a new one where llhttp cannot go on (``_other_method``,
    ``_end_upgrade_wait``)."""
    parser = httptools.HttpRequestParser(callbacks)
    parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True, lenient_version=True)
    return parser


HEADS_MAX = 1024  # heads a listening socket's cache holds (``ListenGroup.heads``)
HEAD_KEY_MAX = 2048  # longer reads are never looked up: hashing them would cost more


def _remember_route(tpl: dict[str, object], req: Request) -> None:
    """Keep a head's server and location with it when they follow from the head alone: no
    server-level script or regex server name, no location captures, not an absolute URI."""
    srv, loc = req.server, req.location
    if (srv is None or loc is None or srv.rewrites or srv.name_regexes
            or loc.captures is not None or req.redirect is not None or req.returned is not None
            or loc.realip is not None  # (realip: route() reads each request's own header)
            or req.vars is not None or req.captures is not None
            or not cast(str, tpl["target"]).startswith("/")):
        return
    # ``known``: this head's identity, for what a connection derives from it (``proxying``)
    tpl.update(routed=0, server=srv, location=loc, host=req.host, uri=req.uri, known=object())
    if req.args:
        tpl["args"] = req.args
    if loc.rewrites or loc.stub_status or loc.access or loc.auth_basic is not None:
        pass  # (allow/deny: _try_fast checks each client before a fast answer)
    elif loc.proxy_pass is not None:
        tpl["fast_proxy"] = True
    elif loc.try_files is None:
        tpl["fast_file"] = cached_path(req, loc)


_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


class ClientConnection(asyncio.Protocol):
    """The asyncio protocol of one client socket (implements ``worker.Connection``).

    stub_status bookkeeping: the worker's shared counters (``stats``) are written where the
    connection's state changes (accepted, a head begins, a head is complete, a request is
    done, closed): a few 8-byte stores per request, no call."""

    scheme = "http"  # "https" on a TLS listener (``listen``)
    ssl_server_name = ""
    pp: ProxyHeader | None = None  # the PROXY header (``listen.ProxiedConnection``)

    def __init__(self, app: Worker, group: ListenGroup) -> None:
        self.app = app
        self.group = group
        self.loop = app.loop
        self.clock = app.clock
        self.logs = app.logs
        self.serial = app.next_serial()
        self._st = app.stat_a
        self._sb = app.stat_base
        self._writing = 0  # requests past their head and not yet done (stub_status Writing)
        # what of _writing is in the shared Writing figure: published when on_headers_complete
        # returns, so a request a fast path answers within that callback costs no store
        self._wpub = 0
        self.transport: asyncio.Transport | None = None
        self.parser = _request_parser(self)
        self._tail_cr = False  # the last head bytes read ended in CR
        self._method: bytes | None = None  # a method llhttp does not know (_other_method)
        self._partial = b""  # the first letters of a method llhttp does not know
        # an Upgrade request was read: bytes after it wait (unparsed) for its answer, then go
        # to the tunnel (101) or to a new parser (any other answer)
        self._upgrade_wait = False
        self._upgrade_read = False
        self._upgrade_rest = b""
        self._tunnel: Tunnel | None = None
        # heads may be taken from ListenGroup.heads (not after a request that closes: the
        # parser would refuse anything after it)
        self._cacheable = True
        self._heads = group.heads
        self._seen = group.seen
        self._keep = False  # the read being parsed was seen before (``ListenGroup.seen``)
        self._tpl: dict[str, object] | None = None  # the head just parsed, as the cache keeps it
        # the upstream request head last made for a known head (``proxying.try_fast_proxy``)
        self.up_known: object | None = None
        self.up_head = b""
        self.remote_addr = "-"
        self.remote_addr_b = b"-"
        self.remote_port = 0
        self.started = time.monotonic()  # $connection_time, keepalive_time
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
        self._head_started = 0.0
        self._in_head = False
        self._reading = False  # this connection counts in stub_status Reading
        self._bad: tuple[int, str | None] | None = None
        self._bad_message = ""
        self._req_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._timer_kind = ""
        self._task: asyncio.Task[None] | None = None
        self.sink: Sink | None = None
        self.fast = False  # a fast-path exchange is in progress
        self._eof = False  # the client has half-closed: answer what is queued, then close
        # the last valid Host header and what routing made of it; NUL: none yet (httptools
        # refuses NUL in a header, so no request's Host equals it)
        self.host_raw = b"\x00"
        srv = group.servers[0]
        self.host_seen: tuple[str, Server] = ("", srv)
        self._head_limit = srv.large_header_buffers[0] * srv.large_header_buffers[1]
        self._line_limit = srv.large_header_buffers[1]

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.app.connections.add(self)
        st, sb = self._st, self._sb
        st[sb + ACTIVE] += 1
        st[sb + ACCEPTS] += 1
        st[sb + HANDLED] += 1
        peer = transport.get_extra_info("peername")
        if peer:
            self.remote_addr, self.remote_port = str(peer[0]), int(peer[1])
            self.remote_addr_b = self.remote_addr.encode("latin-1")
        local = transport.get_extra_info("sockname")
        if local:
            self.local_addr, self.local_port = str(local[0]), int(local[1])
        # No task yet: requests the fast paths answer from callbacks never need one; the first
        # that does (a body, a pipelined queue, an error, a retry) starts it (wake_task).
        self.arm_timer(self.group.servers[0].client_header_timeout, "idle")

    def data_received(self, data: bytes) -> None:
        # A read that begins between requests may be a head seen before on this socket (a
        # keep-alive client repeats its request): then it is answered from what its first
        # parse left (``ListenGroup.heads``) without httptools, its callbacks or routing.
        fresh = None
        if (self.current is None and not self._in_head and self._cacheable
                and len(data) <= HEAD_KEY_MAX):
            tpl = self._heads.get(data)
            if tpl is not None:
                if self._bad is None:
                    self._known_head(tpl)
                    return
            elif data in self._seen:
                fresh = data  # seen before: what it parses to is worth keeping
            else:
                seen = self._seen
                if len(seen) >= HEADS_MAX:
                    seen.clear()
                seen.add(data)
        if self._bad is not None:
            return
        if self._upgrade_wait:
            if self._tunnel is not None:
                self._tunnel.from_client(data)
            else:
                self._upgrade_rest += data
                if len(self._upgrade_rest) > BODY_HIGH_WATER and not self._reading_paused \
                        and self.transport is not None:
                    self._reading_paused = True  # (until the answer: _end_upgrade_wait)
                    self.transport.pause_reading()
            return
        if self._partial:  # (``_other_method``)
            data, self._partial = self._partial + data, b""
        if self._in_head or self.current is None:  # head bytes: their line ends are checked
            nl = data.find(b"\n")
            if nl >= 0 and (data[nl - 1] != 13 if nl else not self._tail_cr):
                data = data[:1] + _crlf(data[1:]) if self._tail_cr else _crlf(data)
            self._tail_cr = data[-1] == 13 if data else False
        if self._in_head:
            # Bytes of a head still incomplete (a head that began inside the previous read
            # escapes by at most that read): bounds what httptools buffers for one header.
            self._head_bytes += len(data)
        self._tpl = None
        self._keep = fresh is not None
        before = self.requests
        at_start = self.current is None and not self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserInvalidMethodError as e:
            done = self.requests - before  # requests completed in this read before it
            rest = (data if at_start else None) if done == 0 else \
                _after_heads(data, done, at_start)
            if rest is None or not self._other_method(rest):
                self._reject(400, f"client sent invalid request: {e}")
        except httptools.HttpParserUpgrade as e:
            if self._upgrade_read and self.current is None:
                self._upgrade_read = False
                # what follows the head is the new protocol's (or, if the answer is not a
                # 101, the next request's): it waits for the answer
                self._upgrade_wait = True
                self._upgrade_rest = data[e.args[0]:] if e.args else b""
            else:
                self._reject(400, "upgrade is not supported")
        except httptools.HttpParserError as e:
            if self._bad is None:
                self._reject(400, f"client sent invalid request: {e}")
        else:
            if self._in_head and not self._reading:
                # stub_status Reading: a head still incomplete when this read is parsed (one
                # begun and completed within a read is never observably "reading": no store)
                self._reading = True
                self._st[self._sb + READING] += 1
            if self._in_head and self._head_bytes > self._head_limit:
                self._reject(400, "client sent too long header line",
                             "Request Header Or Cookie Too Large")
            elif self._in_head and len(self._url) > self._line_limit:
                self._reject(414, "client sent too long URI")
            elif (self._tpl is not None and data is fresh and self.requests == before + 1
                  and self.current is None and self._bad is None
                  and data.find(b"\r\n\r\n") == len(data) - 4):
                # this read was exactly one body-less head, from its first byte to its last
                heads = self._heads
                if len(heads) >= HEADS_MAX:
                    heads.clear()
                heads[data] = self._tpl
        self._tpl = None

    def _other_method(self, data: bytes) -> bool:
        """A request whose method llhttp does not know but nginx accepts (capital letters,
        "_" and "-": ``PURGE``-like extensions it proxies and answers 405 for files): parsed
        again by a new parser as if it were a GET, its own method kept for the request
        (``on_headers_complete``). False, with the connection unchanged, if it is not one."""
        while True:
            m = _OTHER_METHOD.match(data)
            part = m is None and _METHOD_PART.fullmatch(data) is not None
            if m is None and not part:
                return False
            # undo on_message_begin for the refused start (its request is counted again)
            self.current = None
            self._in_head = False
            self._st[self._sb + REQUESTS] -= 1
            self.parser = _request_parser(self)
            self._cacheable = False  # (known heads are fed to no parser: keep this one simple)
            if m is None:  # a method's first letters alone: nginx waits for the rest
                self._partial = data
                return True
            self._method = m.group(1)
            fed = b"GET" + data[len(self._method):]
            before = self.requests
            try:
                self.parser.feed_data(fed)
            except httptools.HttpParserInvalidMethodError as e:
                # another such method pipelined behind this request, in the same read
                done = self.requests - before
                rest = _after_heads(fed, done, True) if done else None
                if rest is not None:
                    data = rest
                    continue
                self._reject(400, f"client sent invalid request: {e}")
            except httptools.HttpParserUpgrade:
                self._reject(400, "upgrade is not supported")
            except httptools.HttpParserError as e:
                if self._bad is None:
                    self._reject(400, f"client sent invalid request: {e}")
            return True

    def _known_head(self, tpl: dict[str, object]) -> None:
        """A read that is exactly a head parsed before (``data_received``): the request from
        its fields, then what on_message_begin, on_headers_complete and on_message_complete
        do for it. No header timer: the head is complete."""
        req = Request.__new__(Request)
        req.__dict__ = tpl.copy()
        req.conn = self
        req.start = time.monotonic()
        self._st[self._sb + REQUESTS] += 1
        self._tail_cr = False
        self._writing += 1
        if "routed" not in tpl:
            self._tpl = tpl  # routing may complete it (``_try_fast``)
        self._enqueue(req)
        self._tpl = None

    def eof_received(self) -> bool | None:
        if self._tunnel is not None:  # either side's end ends an upgraded connection
            self._tunnel.close("client")
            return None
        self._eof = True
        if self.current is not None and self.current.body is not None:
            self.current.body.fail(ConnectionResetError("client closed the connection"))
        if self.active is None and not self.queue:
            return None
        return True  # keep the write side open to finish answering (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.app.connections.discard(self)
        st, sb = self._st, self._sb
        st[sb + ACTIVE] -= 1
        self._in_head = False
        if self._reading:
            self._reading = False
            st[sb + READING] -= 1
        if self._wpub:
            st[sb + WRITING] -= self._wpub
            self._wpub = 0
        self._writing = 0
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
        self.write_paused = True
        if self.sink is not None and self.active is not None:
            # a proxied response waits on this client: nginx's send_timeout applies
            self.arm_timer(self.active.location_timeout("send"), "send")

    def resume_writing(self) -> None:
        self.write_paused = False
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
        st, sb = self._st, self._sb
        st[sb + REQUESTS] += 1  # Reading is counted by data_received if the head spans reads
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
            if lname == b"host" or lname == b"content-length":
                req.routed = 400  # nginx: "client sent duplicate header line"

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        if len(self._url) > self._line_limit:
            self._reject(414, "client sent too long URI")
            raise Refused
        if self._head_size + len(self._url) > self._head_limit:
            self._reject(400, "client sent too long header line", "Request Header Or Cookie Too Large")
            raise Refused
        p = self.parser
        url = self._url
        self._in_head = False
        st, sb = self._st, self._sb
        if self._reading:
            self._reading = False
            st[sb + READING] -= 1
        self._writing += 1  # published below, once the fast paths had their chance
        req.head_size = self._head_size + len(url)
        self._head_bytes = 0
        req.start = time.monotonic()
        method = p.get_method()
        if self._method is not None:  # (``_other_method``)
            method, self._method = self._method, None
        req.raw_method = method
        req.method = _METHODS.get(method) or method.decode("ascii", "replace")
        version = p.get_http_version()
        if version != "1.1":
            if version[0] != "1" and version != "0.9":
                self._reject(505, "client sent unsupported HTTP version")
                raise Refused
            if version != "1.0" and version != "0.9":
                version = "1.1"
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
                if not cl.isdigit():  # httptools refuses most; "+5", " 5" and the like too
                    self._reject(400, "client sent invalid \"Content-Length\" header")
                    raise Refused
                req.content_length = int(cl)
        if b"upgrade" in hmap and p.should_upgrade() and method != b"CONNECT":
            req.upgrade = True  # (never cached: the parser stops after its head)
            self._upgrade_read = True  # (for data_received: it may be answered already)
            self._cacheable = False
            self._keep = False
        tpl: dict[str, object] | None = None
        if req.chunked or (req.content_length or 0) > 0:
            req.body = BodyReader(self, req)
            exp = hmap.get(b"expect")
            if exp is not None and exp.lower() == b"100-continue" and req.version == "1.1":
                req.expect_continue = True
        elif self._keep and req.keep_alive and req.routed < 0:
            # what this head parsed to, for data_received to keep if the read was this head alone
            # (built without deletions: a dict never deleted from is copied whole, not key
            # by key, in _known_head)
            tpl = {k: v for k, v in vars(req).items() if k != "conn" and k != "start"}
        self._tpl = tpl  # (routing may add to it: _try_fast)
        if not req.keep_alive:
            self._cacheable = False  # the parser refuses what follows such a request
        self._enqueue(req)

    def _enqueue(self, req: Request) -> None:
        """A complete head: queue it, answer it at once if a fast path can, else wake the task."""
        queue = self.queue
        queue.append(req)
        self.requests += 1
        req.seq = self.requests
        if self.fast:
            pass  # answered after the fast exchange in progress (it wakes the task)
        elif (req.body is None and len(queue) == 1 and self.active is None
                and (self._task is None or ((w := self._req_waiter) is not None and not w.done()))):
            # (the condition above is _task_idle, inline: this runs per request)
            path = req.fast_file
            if path is not None:  # a known head of a file: only the file cache's answer is left
                if not send_cached(self, req, cast(Location, req.location), path):
                    self.wake_task()
            elif req.fast_proxy:  # a known proxied head: only the upstream's side is left
                if not try_fast_proxy(self, req, cast(Location, req.location)):
                    self.wake_task()
            elif not self._try_fast(req):
                self.wake_task()
        else:
            self.wake_task()
        if self._writing != self._wpub:
            self._st[self._sb + WRITING] += self._writing - self._wpub
            self._wpub = self._writing
        if self._reading_paused or len(queue) > 1 or req.body is not None:
            self.update_reading()

    def on_body(self, data: bytes) -> None:
        req = self.current
        if req is None or req.body is None:
            return
        req.body.feed(data)
        loc = req.location
        if loc is not None and req.body.received > loc.client_max_body_size > 0:
            req.body.fail(TooLarge())
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
                and self.active.body.waiter is not None:
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
                self.logs.unrouted(self.group.servers[0], req)
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
        self._bad = (code, text)
        self._bad_message = message
        if self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        if self.current is not None and self.current.body is not None:
            self.current.body.fail(ConnectionResetError("bad request"))
        self.wake_task()

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if not self.write_paused:
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

    async def respond_error(self, req: Request, status: int, text: str | None = None) -> None:
        await errorpages.respond_error(self, req, status, text)

    # -- the per-connection task ------------------------------------------------------------

    async def _next_request(self) -> Request | None:
        first = True
        # A request the fast path is answering stays at the head of the queue until it is done:
        # the task waits for it (and only then answers a malformed request after it).
        while not self.queue or self.fast:
            if self.closed:
                return None
            if self.fast:
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
        drained = False  # every request before a malformed one was answered
        try:
            while True:
                req = await self._next_request()
                if req is None:
                    drained = True
                    break
                self.active = req
                try:
                    await self._handle(req)
                finally:
                    self.queue.popleft()
                    self.active = None
                    self.sink = None
                self.logs.request(req)
                self.done_writing()
                if not req.keep_alive or self.closed:
                    break
                if req.upgrade:
                    self._end_upgrade_wait()
                if req.body is not None and not req.body.done:
                    break
            if self._bad is not None and drained and not self.closed:
                code, text = self._bad
                bad = Request(self)
                bad.keep_alive = False
                bad.request_line = ""
                self.app.error("info", self._bad_message, self)
                await self.respond_error(bad, code, text)
                self.logs.unrouted(self.group.servers[0], bad)
        except (ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.app.error("alert", f"internal error: {e!r}", self)
        finally:
            self.disarm_timer("")
            if self.transport is not None and not self.closed:
                if self.write_paused:
                    with contextlib.suppress(Exception):
                        await self.drain(5.0)
                self.transport.close()

    async def _handle(self, req: Request) -> None:
        taken = await handle(self, req)
        body = req.body
        if not taken or body is None or body.done or self.closed:
            return
        # a body the client was never told to send closes the connection; another is read
        # and dropped (a failure there closes it too)
        if (req.expect_continue and not req.continue_sent) or not await body.discard():
            req.keep_alive = False

    def _try_fast(self, req: Request) -> bool:
        """Answer ``req`` from this callback if it is one of the fast paths' requests."""
        code = req.routed
        if code < 0:
            code = req.routed = route(self, req)
            tpl = self._tpl
            if tpl is not None and code == 0:
                _remember_route(tpl, req)
        loc = req.location
        if code or loc is None or loc.rewrites or req.redirect or req.returned \
                or loc.auth_basic is not None:  # (auth_basic: ``routing.access_phase``)
            return False
        if loc.realip is not None and not req.real_addr:  # (``routing.dispatch``'s preaccess)
            apply_realip(req, loc.realip, self.remote_addr, self.pp)
        if loc.access and not allowed(loc.access, req.real_addr or self.remote_addr):
            return False  # the task answers 403 (``routing.dispatch``)
        if loc.proxy_pass is None:
            if loc.try_files is not None:
                return False
            path = cached_path(req, loc)
            return path is not None and send_cached(self, req, loc, path)
        if req.upgrade:
            return False  # (the task proxies it: a 101 makes a tunnel)
        return try_fast_proxy(self, req, loc)

    def complete(self, req: Request) -> None:
        """A request answered outside the task: log it, then go on with the connection."""
        self.queue.popleft()
        self.active = None
        loc = req.location
        if loc is not None and loc.access_log:  # `access_log off` costs no call
            self.logs.request(req)
        if self._writing:
            self._writing -= 1
            if self._wpub > self._writing:  # not when answered inside on_headers_complete
                self._st[self._sb + WRITING] -= self._wpub - self._writing
                self._wpub = self._writing
        if not req.keep_alive or self.closed:
            if self.transport is not None and not self.closed:
                self.transport.close()
            return
        if req.upgrade:
            self.loop.call_soon(self._end_upgrade_wait)
        if self.queue or self._bad is not None:
            self.wake_task()
        elif self._eof:
            if self.transport is not None:
                self.transport.close()
        else:
            # arm_timer(keepalive_timeout, "idle"), inline when the loop timer already fires
            # no later than the new deadline (it re-arms itself then): every keep-alive request
            deadline = self.loop.time() + self.group.servers[0].keepalive_timeout
            if self._timer is not None and self._timer_at <= deadline:
                self._deadline = deadline
                self._timer_kind = "idle"
            else:
                self.arm_timer(self.group.servers[0].keepalive_timeout, "idle")
            if self._reading_paused:
                self.update_reading()

    def start_tunnel(self, tunnel: Tunnel) -> bytes:
        """The upstream switched protocols: from now on this socket's bytes go to ``tunnel``
        (``data_received``); what the client sent after its head so far is returned."""
        self._tunnel = tunnel
        self.disarm_timer("")
        rest, self._upgrade_rest = self._upgrade_rest, b""
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._eof:
            self.loop.call_soon(tunnel.close, "client")
        return rest

    def _end_upgrade_wait(self) -> None:
        """An Upgrade request was answered without switching: the bytes after it are the
        next request's, read by a new parser (the old one stopped at the Upgrade)."""
        if not self._upgrade_wait or self._tunnel is not None or self.closed:
            return
        self._upgrade_wait = False
        rest, self._upgrade_rest = self._upgrade_rest, b""
        self.parser = _request_parser(self)
        self._cacheable = True
        self.update_reading()  # (the wait may have paused it)
        if rest:
            self.data_received(rest)

    def done_writing(self) -> None:
        if self._writing:
            self._writing -= 1
            if self._wpub > self._writing:
                self._st[self._sb + WRITING] -= self._wpub - self._writing
                self._wpub = self._writing

    def wake_task(self) -> None:
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
