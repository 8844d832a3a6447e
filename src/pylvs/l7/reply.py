"""A response head as nginx frames it, and whole small responses (pages, redirects, returns).

Why one place: whether a connection stays open after a response (closing statuses,
keepalive_requests, keepalive_time, an unsized body), the Server/Date lines, add_header and the
framing lines are decided the same way for a file, a proxied reply and an error page;
``head_bytes`` is that decision, and the proxy's hot path calls it once per response.

Not for: bodies that stream (``static`` sends files, ``proxying`` relays upstream bodies).
"""

from __future__ import annotations

from pylvs.l7 import gzip
from pylvs.l7.config import Location
from pylvs.l7.expires import Expires, ExpiresVar
from pylvs.l7.expires import lines as expires_lines
from pylvs.l7.expires import parse as parse_expires
from pylvs.l7.request import Request
from pylvs.l7.status import ADD_HEADER_STATUSES, CLOSING_STATUSES, status_line
from pylvs.l7.variables import expand


def head_bytes(req: Request, status: int, line: bytes, lines: bytes, length: int | None,
               chunked: bool, filter_status: int = 0, relayed: bool = False) -> bytes:
    """Bytes of a response head from its status line and header lines; decides keep-alive
    (an upstream's 500 is ``relayed``: only nginx's own error pages of those statuses close)."""
    if status in CLOSING_STATUSES and not relayed:
        req.keep_alive = False
    loc = req.location
    if loc is not None:
        # keepalive_time in nginx's whole milliseconds (0: a connection's first moment stays
        # open); the cheap comparison first, the millisecond rounding only near the limit
        age = req.start - req.conn.started
        if req.seq >= loc.keepalive_requests or (
                age > loc.keepalive_time - 0.002
                and age // 0.001 > loc.keepalive_time * 1000):
            req.keep_alive = False
    if length is None and not chunked and status != 204 and status != 304 \
            and req.method != "HEAD":
        req.keep_alive = False
    req.status = status
    if req.carried is not None:  # after an X-Accel-Redirect
        lines = req.carried.apply(status, lines)
    if loc is not None and loc.expires is not None \
            and (filter_status or status) in ADD_HEADER_STATUSES:
        exp: Expires | None
        if isinstance(loc.expires, ExpiresVar):  # read now, the head's other lines known
            req.sent_head = line + lines
            got = parse_expires(expand(loc.expires.value, req.variable), loc.expires.modified)
            exp = got if isinstance(got, Expires) else None  # (what does not parse: nothing)
        else:
            exp = loc.expires
        if exp is not None:
            lines = expires_lines(exp, req.conn.clock.sec, lines)
    out = [line, req.conn.clock.server_date[loc is None or loc.server_tokens], lines]
    if loc is not None and loc.add_header:
        out += added_lines(req, loc, filter_status or status)
    if length is not None:
        out.append(b"Content-Length: %d\r\n" % length)
    elif chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    out.append(b"Connection: keep-alive\r\n\r\n" if req.keep_alive else b"Connection: close\r\n\r\n")
    head = req.sent_head = b"".join(out)
    return head


def added_lines(req: Request, loc: Location, status: int) -> list[bytes]:
    """The location's ``add_header`` lines for an answer of ``status``: each one whose value is
    not empty, for the statuses nginx adds them to, or for any with ``always``."""
    out = []
    for name, tmpl, always in loc.add_header:
        if always or status in ADD_HEADER_STATUSES:
            value = expand(tmpl, req.variable)
            if value:
                out.append(f"{name}: {value}\r\n".encode("latin-1"))
    return out


def response_head(req: Request, status: int, headers: list[bytes], text: str | None = None,
                  length: int | None = None, chunked: bool = False,
                  filter_status: int = 0) -> bytes:
    """``head_bytes`` from a status, an optional reason and header lines."""
    return head_bytes(req, status, status_line(status, (text or "").encode("latin-1")),
                      b"".join(headers), length, chunked, filter_status)


def respond(req: Request, status: int, body: bytes = b"", headers: list[bytes] | None = None,
            text: str | None = None, content_type: bytes = b"text/html",
            filter_status: int = 0) -> None:
    """A whole response held in memory (a page, a redirect, a ``return``), written at once."""
    hdrs = list(headers or [])
    if body or status >= 300:
        hdrs.insert(0, b"Content-Type: " + content_type + b"\r\n")
    loc = req.location
    if loc is not None and loc.gzip is not None and body:
        zipped, vary = gzip.decide(req, loc.gzip, status, content_type, len(body), b"")
        if vary:
            hdrs.append(gzip.VARY)
        if zipped:
            _respond_gzipped(req, status, gzip.compress_whole(loc.gzip.comp_level, body), hdrs,
                             text, filter_status)
            return
    head = response_head(req, status, hdrs, text, length=len(body), filter_status=filter_status)
    if req.method == "HEAD":
        body = b""
    req.conn.write(head + body)
    req.bytes_sent += len(head) + len(body)
    req.body_bytes_sent += len(body)


def _respond_gzipped(req: Request, status: int, body: bytes, hdrs: list[bytes], text: str | None,
                     filter_status: int) -> None:
    """A whole response compressed: chunked to HTTP/1.1 (as nginx, which no longer knows the
    length once its gzip filter runs), close-delimited to HTTP/1.0."""
    hdrs.append(gzip.ENCODING)
    chunked = req.version == "1.1" and req.method != "HEAD"
    head = response_head(req, status, hdrs, text, length=None, chunked=chunked,
                         filter_status=filter_status)
    if req.method == "HEAD":
        req.conn.write(head)
        req.bytes_sent += len(head)
        return
    framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    req.conn.write(head + framed)
    req.bytes_sent += len(head) + len(framed)
    req.body_bytes_sent += len(framed)
