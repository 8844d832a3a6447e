"""``proxy_pass``: one request through upstream connections, with nginx's retries.

Two drivers share ``ProxyAttempt``, the sink an ``upstream.UpstreamConnection`` reports a
response to. The fast path (``try_fast_proxy``, ``finish_fast``) answers a body-less request over
a warm keepalive connection from callbacks alone, without waking the connection's task; it is
the hot path of ``pylvs http``. Everything else (a body, a cold pool, a failed fast try) runs in
the task through ``run``, which goes through the upstream's peers as nginx's
``proxy_next_upstream`` says: pick a peer, connect, exchange, then settle the outcome (done,
next peer, or an error status), each a step below.

Not for: the HTTP rules of what crosses (``message``), upstream sockets and pools
(``upstream``), or choosing a peer (``balancer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time

from pylvs.l7 import gzip
from pylvs.l7.balancer import Peer
from pylvs.l7.config import Location, ProxyPass
from pylvs.l7.expires import ExpiresVar
from pylvs.l7.message import (
    ResponseHead,
    response_framing,
    switch_response_lines,
    upstream_request_head,
)
from pylvs.l7.model import Gzip
from pylvs.l7.proxyheaders import (
    drop_own,
    drop_own_lines,
    filtered_lines,
    rewrite_cookies,
    rewrite_lines,
)
from pylvs.l7.proxyplan import HeaderPlan, header_plan
from pylvs.l7.proxytarget import address_pool, balance_key, dynamic_target
from pylvs.l7.reply import added_lines, head_bytes
from pylvs.l7.request import Request, TooLarge, spool_chunked
from pylvs.l7.status import status_line
from pylvs.l7.tunnel import Tunnel
from pylvs.l7.upstream import UpstreamConnection, UpstreamPool
from pylvs.l7.worker import Connection

_CTYPE = re.compile(rb"(?im)^content-type:[ \t]*([^\r\n]*)")
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_NOTHING_TRIED: frozenset[int] = frozenset()


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
    intercepted = False  # proxy_intercept_errors: an error_page answers this status instead
    dyn: ProxyPass | None = None  # proxy_pass with variables: this request's target
    t_head = -1.0  # when the response head arrived ($upstream_header_time)
    t_start = 0.0  # when the request went to the upstream (set by whoever sends it)
    connect_time = 0.0  # what connecting took (0 on a kept-alive connection)
    gz: gzip.Compressor | None = None  # the response is compressed (gzip on)
    upgrade = False  # the request asked to switch protocols: a 101 is final (``switched``)

    def __init__(self, client: Connection, req: Request, loc: Location,
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
        req, loc = self.req, self.loc
        if head.accel is not None and not loc.accel_ignored:
            self._accel(head)
            return
        self.t_head = time.monotonic()
        self.keep_alive = keep_alive
        status = head.status
        req.upstream_status = head.status_text
        if self.can_retry_status and f"http_{status}" in loc.proxy_next_upstream:
            self.retry_status = status
            return
        if loc.proxy_intercept_errors and status >= 300 \
                and status in header_plan(loc).intercepts:
            self.retry_status = status
            self.intercepted = True
            return
        length = head.length
        chunked, has_body = response_framing(status, self.head_only, req.version, length,
                                             head.coded)
        hf = loc.proxy_headers
        lines = head.lines if hf is None else filtered_lines(head, hf)
        if head.redirects and loc.proxy_redirect:
            lines = rewrite_lines(lines, loc.proxy_redirect, req)
        if head.cookies and loc.proxy_cookies is not None:
            lines = rewrite_cookies(lines, loc.proxy_cookies, req)
        if loc.gzip is not None and (has_body or self.head_only):
            lines, length, chunked = self._gzip(loc.gzip, status, lines, length, chunked)
        self.chunked = chunked and has_body
        # A head-only answer (HEAD, 204, 304) needs no framing: head_bytes keeps it alive.
        line = head.status_line
        if not line:
            line = head.status_line = status_line(status, head.reason)
        out = head_bytes(req, status, line, lines, length, chunked, relayed=True)
        if hf is not None and hf.own:
            out = req.sent_head = drop_own(out, head, hf)
        self._out.append(out)
        req.bytes_sent += len(out)
        self.started = True

    def response_whole(self, head: ResponseHead, body: bytes) -> None:
        """A whole response read at once (``UpstreamConnection``): its head, body and end
        (``response_body`` and ``response_complete`` inline for a body passed as it is).

        On the fast path the client's head for this upstream head is kept on it, with the
        location and Date line it was made for: the next one with the same three is sent
        without ``response_head`` (made again near keepalive_requests/keepalive_time)."""
        req, loc, client = self.req, self.loc, self.client
        if head.accel is not None and not loc.accel_ignored:
            self._accel(head)
            return
        date = client.clock.server_date[loc.server_tokens]
        if (head.client_date is date and head.client_loc is loc and self.fast_peer is not None
                and req.keep_alive and req.seq < loc.keepalive_requests
                and req.start - client.started <= loc.keepalive_time - 0.002):
            self.t_head = time.monotonic()
            self.keep_alive = True
            req.upstream_status = head.status_text
            req.status = head.status
            ch = req.sent_head = head.client_head
            req.bytes_sent += len(ch) + len(body)
            req.body_bytes_sent += len(body)
            self.started = True
            t = client.transport
            if t is not None and not client.closed:
                if len(body) <= 16384:  # one write; a larger body is not copied to join it
                    t.write(ch + body)
                else:
                    t.writelines((ch, body))
                if client.write_paused and not self.upstream_paused:
                    self._check_client_flow()
            if self.result or self._waiter is not None:
                self._finish("ok")
            else:  # _finish, inline: a fast exchange ends here
                self.result = "ok"
                finish_fast(self, "ok")
            return
        self.response_head(head, True, False)
        if not self.started or self.chunked or self.gz is not None:
            if body:
                self.response_body(body)
            self.response_complete()
            return
        if (self.fast_peer is not None and req.keep_alive and not loc.add_header
                and loc.gzip is None and not (head.redirects and loc.proxy_redirect)
                and not (head.cookies and loc.proxy_cookies is not None)
                and not isinstance(loc.expires, ExpiresVar)):
            # the head response_head made: no retry, intercept or gzip on the fast path
            head.client_head, head.client_loc, head.client_date = self._out[0], loc, date
        if body:
            self._out.append(body)
            req.bytes_sent += len(body)
            req.body_bytes_sent += len(body)
        self.flush()
        self._finish("ok")

    def _gzip(self, g: Gzip, status: int, lines: bytes, length: int | None,
              chunked: bool) -> tuple[bytes, int | None, bool]:
        """nginx's gzip filter on a proxied head: (its lines, length, chunked) after it."""
        m = _CTYPE.search(lines)
        zipped, vary = gzip.decide(self.req, g, status, m.group(1) if m else b"", length, lines)
        if zipped:
            if not self.head_only:
                self.gz = gzip.Compressor(g.comp_level)
            lines = gzip.weak_etag(lines) + gzip.ENCODING
            length = None
            chunked = self.req.version == "1.1" and not self.head_only
        if vary:
            lines += gzip.VARY
        return lines, length, chunked

    def response_body(self, data: bytes) -> None:
        if self.retry_status or not self.started:
            return
        if self.gz is not None:
            data = self.gz.feed(data)
            if not data:
                return
        if self.chunked:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
            self.req.bytes_sent += len(data) + 7
        else:
            self._out.append(data)
            self.req.bytes_sent += len(data)
        self.req.body_bytes_sent += len(data)

    def _accel(self, head: ResponseHead) -> None:
        """An X-Accel-Redirect answer: nothing of it reaches the client (its body, if any,
        is not read: the connection is closed); the task follows it (``routing``)."""
        self.t_head = time.monotonic()
        self.req.upstream_status = head.status_text
        self.req.accel = head
        self.keep_alive = False
        self._finish("accel")

    def _finish(self, result: str) -> None:
        if self.result:
            return
        self.result = result
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(result)
        if self.fast_peer is not None:
            finish_fast(self, result)

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
        client = self.client
        t = client.transport
        if t is None or client.closed:
            return
        if len(out) == 1:
            t.write(out[0])
        else:
            t.writelines(out)
        if client.write_paused and not self.upstream_paused:
            self._check_client_flow()

    def response_complete(self) -> None:
        if self.gz is not None and self.started and not self.retry_status:
            gz, self.gz = self.gz, None
            tail = gz.finish()
            if tail:
                self.response_body(tail)
        if self.chunked and self.started:
            self._out.append(b"0\r\n\r\n")
            self.req.bytes_sent += 5
        self.flush()
        self._finish("retry" if self.retry_status else "ok")

    def switched(self, head: bytes) -> None:
        """The upstream's 101 to a request that asked to switch: its head goes to the client
        at once (nginx's: status line, Server, Date, a Location it made absolute,
        ``Connection: upgrade``, then the upstream's headers and ``add_header ... always``) and
        the attempt ends "upgraded"; the task joins the tunnel. The location's header rules
        apply as to any answer: proxy_hide_header and proxy_pass_header (a passed Server or
        Date takes nginx's own line away, whether the upstream sent one or not), proxy_redirect
        and proxy_cookie_*."""
        req, client, loc = self.req, self.client, self.loc
        self.t_head = time.monotonic()
        req.upstream_status = "101"
        req.status = 101
        req.keep_alive = False
        hf = loc.proxy_headers
        reason, lines = switch_response_lines(head, hf.hidden if hf is not None else None)
        hoisted: list[bytes] = []
        if loc.proxy_redirect:
            lines = rewrite_lines(lines, loc.proxy_redirect, req, hoisted)
        if loc.proxy_cookies is not None:
            lines = rewrite_cookies(lines, loc.proxy_cookies, req)
        own = client.clock.server_date[loc.server_tokens]
        if hf is not None and hf.own:
            own = drop_own_lines(b"\r\n" + own, hf.own)[2:]
        added = added_lines(req, loc, 101)  # (only ``always`` ones for a 101)
        out = req.sent_head = b"".join((status_line(101, reason), own, *hoisted,
                                        b"Connection: upgrade\r\n", lines, *added, b"\r\n"))
        req.bytes_sent += len(out)
        self.started = True
        t = client.transport
        if t is not None and not client.closed:
            t.write(out)
        self._finish("upgraded")

    def upstream_failed(self, kind: str, message: str) -> None:
        self.flush()
        self.failure = (kind, message)
        self._finish("failed")

    # -- flow control between the two sockets ------------------------------------------------------

    def _check_client_flow(self) -> None:
        if self.client.write_paused and not self.upstream_paused:
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

    def request_head(self, plan: HeaderPlan | None = None) -> bytes:
        req, loc = self.req, self.loc
        pp = self.dyn or loc.proxy_pass
        assert pp is not None
        if pp.uri is None:
            target = req.raw_target
        elif self.dyn is not None:  # a URI made of variables is sent as it is, as nginx does
            target = pp.uri.encode("latin-1")
        elif loc.modifier in ("", "^~", "="):
            rest = req.uri[len(loc.pattern):] if req.uri.startswith(loc.pattern) else req.uri
            target = (pp.uri + rest + (f"?{req.args}" if req.args else "")).encode("latin-1")
        else:
            target = pp.uri.encode("latin-1")
        if plan is None:
            plan = header_plan(loc)
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
        except (ConnectionError, TimeoutError, TooLarge) as e:
            if not self.result:
                self.failure = ("client", str(e) or type(e).__name__)
                self._finish("too_large" if isinstance(e, TooLarge)
                             else "client_timeout" if isinstance(e, TimeoutError) else "client")
            return
        self.request_sent = True
        conn.start_read_timer()


# -- the fast path: a body-less proxied request on a warm upstream connection, driven by
# callbacks from arrival to completion without waking the connection's task -------------------


def try_fast_proxy(client: Connection, req: Request, loc: Location) -> bool:
    """Start the exchange at once if the balancer's peer has an idle kept-alive connection;
    False leaves the request to the task (which then uses the same peer first)."""
    pp = loc.proxy_pass
    assert pp is not None
    plan = header_plan(loc)
    if plan.retries_on_status or loc.proxy_url is not None:
        return False
    pool = client.app.pools[pp.upstream]
    now = req.start  # the head's arrival, read in this same callback: no clock read here
    balancer = pool.balancer
    peer = balancer.get(_NOTHING_TRIED, now, balance_key(pool, req) if balancer.keyed else b"")
    conn = pool.take(peer) if peer is not None else None
    if conn is None:
        req.preset_peer = (peer,)  # the balancer's choice stands for the task's first try
        if peer is not None:
            balancer.free(peer)  # the task counts it again when it starts the try
        return False
    req.proxy_host = pp.proxy_host
    att = ProxyAttempt(client, req, loc, pool, conn, False)
    att.t_start = now
    att.fast_peer = peer
    client.active = req
    client.fast = True
    client.sink = att
    client.disarm_timer("")  # the upstream's timers run now
    known = req.known
    if known is not None and client.up_known is known:
        head = client.up_head  # this connection's client sent this very head before
    else:
        head = att.request_head(plan)
        if known is not None and plan.pure:
            client.up_known, client.up_head = known, head
    att.request_sent = True
    conn.exchange(att, loc.proxy_read_timeout, head)
    return True


def finish_fast(att: ProxyAttempt, result: str) -> None:
    """The end of a fast-path exchange, in whatever callback it happened."""
    client = att.client
    req, conn, pool = att.req, att.conn, att.pool
    peer = att.fast_peer
    assert peer is not None
    client.sink = None
    client.fast = False
    pool.balancer.free(peer)  # this try is over, whatever the task does next
    req.upstream_addr = peer.address
    # _timed, inline (the one try of a fast exchange): $upstream_*_time and the metrics' time
    start = att.t_start
    took = time.monotonic() - start
    req.upstream_times = [(att.connect_time, att.t_head - start if att.t_head >= 0 else -1.0,
                           took)]
    if result == "ok":
        if peer.accessed < peer.checked:  # pool.balancer.succeeded(peer), inline
            peer.fails = 0
        if att.upstream_paused:
            conn.resume_reading()
        pool.release(conn, att.keep_alive)
        if pool.stat_base >= 0:  # counted servers only (no call for the others)
            client.app.upstream_done(pool.stat_base, peer.index, req.status, took)
        client.complete(req)
        return
    if result == "accel":  # nothing was sent: the task follows it (``routing.handle``)
        if pool.stat_base >= 0:
            assert req.accel is not None
            client.app.upstream_done(pool.stat_base, peer.index, req.accel.status, took)
        conn.close()
        client.active = None
        client.wake_task()
        return
    client.app.upstream_done(pool.stat_base, peer.index, 0, 0.0)
    conn.close()
    if result == "client":
        req.keep_alive = False
        req.status = req.status or 499
        client.complete(req)
        return
    kind, msg = att.failure or ("error", "upstream failed")
    url = f"http://{peer.server.address}{req.target}"
    if att.started:
        client.app.error("error", f"{msg} while reading upstream", client, req, url)
        req.keep_alive = False
        client.abort()
        client.complete(req)
        return
    # Nothing reached the client yet: the task takes over (next upstream, 502/504).
    stale = conn.reused and kind == "error" and not conn.got_response
    if not stale:
        client.app.error("error", f"{msg} while reading response header from upstream",
                         client, req, url)
        pool.balancer.failed(peer, time.monotonic())
        req.fast_failed = (peer, kind)
    client.active = None
    req.upstream_status = ""
    client.wake_task()


def _timed(req: Request, att: ProxyAttempt) -> float:
    """One try's $upstream_connect_time, $upstream_header_time, $upstream_response_time;
    the response time is returned too (the per-server metrics take it: one clock read)."""
    start = att.t_start
    took = time.monotonic() - start
    times = (att.connect_time, att.t_head - start if att.t_head >= 0 else -1.0, took)
    if req.upstream_times is None:
        req.upstream_times = [times]
    else:
        req.upstream_times.append(times)
    return took


# -- the task path: nginx's tries over the upstream's peers -------------------------------------


class _Tries:
    """The tries of one proxied request so far: the peers tried, how many tries are left, and
    the addresses and statuses $upstream_addr and $upstream_status will list."""

    __slots__ = ("addrs", "connect_time", "deadline", "dyn", "idempotent", "last_kind", "left",
                 "next_upstream", "statuses", "tried")

    def __init__(self, req: Request, loc: Location, left: int) -> None:
        self.tried: set[int] = set()
        self.left = left
        self.dyn: ProxyPass | None = None  # proxy_pass with variables: this request's
        self.connect_time = 0.0  # the current try's
        # proxy_next_upstream_timeout: no next try once it has passed (0: no limit)
        t = loc.proxy_next_upstream_timeout
        self.deadline = time.monotonic() + t if t > 0 else 0.0
        self.addrs: list[str] = []
        self.statuses: list[str] = []
        self.last_kind = "error"
        self.next_upstream = loc.proxy_next_upstream
        self.idempotent = req.method in _IDEMPOTENT or "non_idempotent" in loc.proxy_next_upstream

    def add(self, peer: Peer) -> None:
        self.tried.add(peer.index)
        self.left -= 1
        self.addrs.append(peer.server.address)

    def may_go_on(self, kind: str, req: Request) -> bool:
        """nginx's rule for trying the next peer after an error or a timeout."""
        body_touched = req.body is not None and req.body.started
        return kind in self.next_upstream and self.left > 0 and not body_touched \
            and self.idempotent and self.in_time()

    def in_time(self) -> bool:
        return not self.deadline or time.monotonic() < self.deadline

    def record(self, req: Request, statuses: list[str] | None = None) -> None:
        req.upstream_addr = ", ".join(self.addrs)
        req.upstream_status = ", ".join(self.statuses if statuses is None else statuses)


def _bad_gateway(kind: str) -> int:
    return 504 if kind == "timeout" else 502


async def run(client: Connection, req: Request, loc: Location) -> None:
    """Proxy ``req`` in the connection's task, trying peers until one answers or nginx's
    proxy_next_upstream rules say stop."""
    pp = loc.proxy_pass
    assert pp is not None
    dyn: ProxyPass | None = None
    if loc.proxy_url is not None:
        dyn = await dynamic_target(client, req, loc.proxy_url)
        if dyn is None:
            return
        pp = dyn
    req.proxy_host = pp.proxy_host
    pool = client.app.pools.get(pp.upstream) or address_pool(client, pp.upstream)
    balancer = pool.balancer
    tries = _Tries(req, loc, loc.proxy_next_upstream_tries or balancer.tries)
    tries.dyn = dyn
    if loc.proxy_http_version == "1.0" and req.body is not None and req.content_length is None:
        # An HTTP/1.0 upstream needs a length: spool the chunked body to a temp file first.
        await spool_chunked(client, req)  # (``request``)
    preset, req.preset_peer = req.preset_peer, None
    if req.fast_failed is not None:
        # the fast path's try failed before any byte reached the client: count it here
        peer0, kind0 = req.fast_failed
        req.fast_failed = None
        preset = None
        tries.add(peer0)
        tries.statuses.append(str(_bad_gateway(kind0)))
        tries.last_kind = kind0
        if not (kind0 in tries.next_upstream and tries.left > 0 and tries.idempotent):
            tries.record(req)
            await client.respond_error(req, _bad_gateway(kind0))
            return
    key = balance_key(pool, req) if balancer.keyed else b""
    while True:
        if preset is not None:
            peer, preset = preset[0], None
            if peer is not None:
                peer.conns += 1  # the fast path's choice, counted from now (free below)
        else:
            peer = balancer.get(tries.tried, time.monotonic(), key)
        if peer is None:
            client.app.error("error", "no live upstreams while connecting to upstream", client,
                             req, f"http://{pp.proxy_host}{req.target}")
            req.upstream_addr = ", ".join([*tries.addrs, pp.upstream]) if tries.addrs \
                else pp.upstream
            await client.respond_error(req, _bad_gateway(tries.last_kind))
            return
        tries.add(peer)
        try:
            conn = pool.take(peer)
            fresh_retry = conn is not None
            tries.connect_time = 0.0
            if conn is None:
                got = await _connect(client, req, loc, pool, peer, tries)
                if isinstance(got, str):
                    if got == "retry":
                        continue
                    return
                conn = got
            att, result = await _exchange(client, req, loc, pool, conn, tries)
            if not await _settle(client, req, peer, att, result, tries, fresh_retry):
                return
        finally:
            balancer.free(peer)  # the try is over: least_conn counts it no more


async def _connect(client: Connection, req: Request, loc: Location, pool: UpstreamPool,
                   peer: Peer, tries: _Tries) -> UpstreamConnection | str:
    """A new connection to ``peer``; on failure the error is logged and counted, and the
    answer is "retry" (next peer) or "done" (the error status was sent)."""
    t = time.monotonic()
    try:
        conn = await pool.connect(peer, loc.proxy_connect_timeout)
        tries.connect_time = time.monotonic() - t
        return conn
    except (TimeoutError, OSError) as e:
        times = (-1.0, -1.0, time.monotonic() - t)
        req.upstream_times = [*(req.upstream_times or []), times]
        kind = "timeout" if isinstance(e, TimeoutError) else "error"
        if kind == "timeout":
            msg = "upstream timed out (110: Connection timed out)"
        else:
            err = getattr(e, "errno", None) or 111
            msg = f"connect() failed ({err}: {os.strerror(err)})"
        client.app.error("error", f"{msg} while connecting to upstream", client, req,
                         f"http://{peer.server.address}{req.target}")
        pool.balancer.failed(peer, time.monotonic())
        tries.statuses.append("502" if kind == "error" else "504")
        tries.last_kind = kind
        if tries.may_go_on(kind, req):
            return "retry"
        tries.record(req)
        await client.respond_error(req, _bad_gateway(kind))
        return "done"


async def _exchange(client: Connection, req: Request, loc: Location, pool: UpstreamPool,
                    conn: UpstreamConnection, tries: _Tries) -> tuple[ProxyAttempt, str]:
    """Send the request (and its body, in its own task) and wait for the attempt's end."""
    can_retry_status = tries.left > 0 and tries.idempotent and req.body is None \
        and tries.in_time()
    att = ProxyAttempt(client, req, loc, pool, conn, can_retry_status)
    att.dyn = tries.dyn
    att.upgrade = req.upgrade
    att.connect_time = tries.connect_time
    att.t_start = time.monotonic()
    client.sink = att
    body_task: asyncio.Task[None] | None = None
    try:
        if req.body is not None:
            conn.exchange(att, loc.proxy_read_timeout, att.request_head(), timer=False)
            body_task = client.loop.create_task(att.send_body(loc.proxy_send_timeout))
        else:
            att.request_sent = True
            conn.exchange(att, loc.proxy_read_timeout, att.request_head())
        result = await att.wait()
    finally:
        if body_task is not None and not body_task.done():
            body_task.cancel()
        if body_task is not None:
            with contextlib.suppress(BaseException):
                await body_task
        client.sink = None
    tries.statuses.append(req.upstream_status or "502")
    return att, result


async def _settle(client: Connection, req: Request, peer: Peer, att: ProxyAttempt, result: str,
                  tries: _Tries, fresh_retry: bool) -> bool:
    """What an attempt's end means: True to try the next peer, False when answered."""
    took = _timed(req, att)
    app, pool, conn = client.app, att.pool, att.conn
    balancer = pool.balancer
    app.upstream_done(pool.stat_base, peer.index,
                      req.status if result == "ok" else att.retry_status, took)
    if result == "ok":
        balancer.succeeded(peer)
        reusable = att.keep_alive and att.request_sent and not att.upstream_paused
        if att.upstream_paused:
            conn.resume_reading()
            reusable = att.keep_alive and att.request_sent
        pool.release(conn, reusable)
        tries.record(req)
        return False
    if result == "accel":  # the task follows it (``routing.dispatch``)
        balancer.succeeded(peer)
        conn.close()
        tries.record(req)
        return False
    if result == "upgraded":
        balancer.succeeded(peer)
        tries.record(req)
        await _tunnel(client, req, att.loc, conn)
        return False
    if result == "retry" and att.intercepted:  # the location's error_page answers
        balancer.succeeded(peer)
        pool.release(conn, att.keep_alive and att.request_sent)
        tries.record(req)
        await client.respond_error(req, att.retry_status)
        return False
    if result == "retry":
        status = att.retry_status
        if status != 404 and status != 403:
            balancer.failed(peer, time.monotonic())
        pool.release(conn, att.keep_alive and att.request_sent)
        tries.last_kind = "error"
        return True
    conn.close()
    if result == "too_large" and not att.started:
        app.error("error", "client intended to send too large chunked body", client, req)
        req.upstream_addr = ", ".join(tries.addrs)
        await client.respond_error(req, 413)
        return False
    if result == "client_timeout" and not att.started:
        app.error("info", "client timed out (110: Connection timed out) while reading "
                          "client request body", client, req)
        req.upstream_addr = ", ".join(tries.addrs)
        await client.respond_error(req, 408)
        return False
    if result in ("client", "too_large", "client_timeout"):
        req.keep_alive = False
        req.upstream_addr = ", ".join(tries.addrs)
        req.status = req.status or 499
        client.abort()
        return False
    kind, msg = att.failure or ("error", "upstream failed")
    addr = peer.server.address
    if att.started:
        app.error("error", f"{msg} while reading upstream", client, req,
                  f"http://{addr}{req.target}")
        req.keep_alive = False
        req.upstream_addr = ", ".join(tries.addrs)
        client.abort()
        return False
    if fresh_retry and kind == "error" and not conn.got_response and (
            req.body is None or not req.body.started):
        # A kept-alive connection the upstream had closed meanwhile: not the peer's
        # failure; try again (the pool holds finitely many such connections).
        tries.tried.discard(peer.index)
        tries.left += 1
        tries.addrs.pop()
        tries.statuses.pop()
        return True
    where = "" if " while " in msg else " while reading response header from upstream"
    app.error("error", f"{msg}{where}", client, req, f"http://{addr}{req.target}")
    balancer.failed(peer, time.monotonic())
    tries.last_kind = kind
    if tries.may_go_on(kind, req):
        tries.statuses[-1:] = [str(_bad_gateway(kind))]
        return True
    tries.record(req, [*tries.statuses[:-1], str(_bad_gateway(kind))])
    await client.respond_error(req, _bad_gateway(kind))
    return False


async def _tunnel(client: Connection, req: Request, loc: Location,
                  conn: UpstreamConnection) -> None:
    """Relay an upgraded connection until either side ends it or it is idle for
    proxy_read_timeout (``tunnel``); the request is then logged with what was relayed."""
    tunnel = Tunnel(client, conn, loc.proxy_read_timeout, client.loop)
    client.sink = tunnel
    early = client.start_tunnel(tunnel)  # what the client sent after its head
    conn.attach(tunnel)
    if early:
        tunnel.from_client(early)
    try:
        why = await tunnel.done
    finally:
        client.sink = None
        tunnel.close("client")
    if why == "timeout":
        client.app.error("error", "upstream timed out (110: Connection timed out) while "
                         "proxying upgraded connection", client, req,
                         f"http://{conn.peer.server.address}{req.target}")
    req.body_bytes_sent += tunnel.to_client
    req.bytes_sent += tunnel.to_client


# -- proxy_pass with variables: the URL made per request, without a resolver --------------------
