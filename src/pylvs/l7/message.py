"""The proxy's HTTP message rules as plain functions: which headers cross, how bodies are framed.

What a proxy forwards and how it frames it is the subtle part of HTTP proxying (hop-by-hop
headers, headers named in ``Connection``, nginx's own replacements, chunked vs sized bodies).
Keeping those rules here, bytes in and bytes out with no socket and no clock, lets them be tested
with plain calls and read in one place.

Not for: parsing (httptools does that) or any I/O (``server`` and ``upstream`` drive these).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Request headers never forwarded: hop-by-hop (RFC 9110 7.6.1), Expect (the proxy answers it),
# and the framing the proxy redoes.
HOP_REQUEST = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"expect", b"content-length",
})
# Response headers not passed to the client: hop-by-hop, framing, and Date/Server/X-Accel-*
# that nginx replaces or consumes.
HOP_RESPONSE = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"date", b"server", b"x-pad", b"x-accel-expires", b"x-accel-redirect",
    b"x-accel-limit-rate", b"x-accel-buffering", b"x-accel-charset",
})


def connection_tokens(value: bytes | None) -> frozenset[bytes]:
    """Header names a ``Connection`` header declares hop-by-hop."""
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(b","))


def upstream_request_head(request_line: bytes, own: Iterable[bytes],
                          client_headers: Sequence[tuple[bytes, bytes]],
                          overridden: frozenset[bytes], connection: bytes | None,
                          content_length: int | None, chunked: bool,
                          hop_included: bool = False) -> bytes:
    """The head sent upstream: ``own`` lines (proxy_set_header, already expanded, in order),
    then the client's headers minus those replaced, hop-by-hop ones and those its Connection
    header names, then the body framing the proxy itself chose. ``hop_included``: the caller
    prepared ``overridden`` with HOP_REQUEST already in it (once, not per request)."""
    lines = [request_line, *own]
    drop = overridden if hop_included else overridden | HOP_REQUEST
    if connection:
        drop = drop | connection_tokens(connection)
    for name, value in client_headers:
        if name.lower() not in drop:
            lines += (name, b": ", value, b"\r\n")
    if content_length is not None:
        lines.append(b"Content-Length: %d\r\n" % content_length)
    elif chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


# the hop-by-hop response headers no directive lets cross (a 101's Upgrade aside)
_HOP_ONLY = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
})


def switch_response_lines(head: bytes,
                          hidden: frozenset[bytes] | None = None) -> tuple[bytes, bytes]:
    """An upstream's ``101`` head as the client gets it, after nginx's status line, Server,
    Date and its own ``Connection: upgrade``: (the reason phrase, the header lines). The
    upstream's Upgrade header crosses (it names the protocol switched to); the other
    hop-by-hop headers do not, nor, by default, Date, Server and X-Accel-*; ``hidden``: the
    location's set instead of that default (its proxy_hide_header and proxy_pass_header)."""
    drop = HOP_RESPONSE if hidden is None else _HOP_ONLY | hidden
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    reason = lines[0].split(b" ", 2)[2].strip() if lines[0].count(b" ") >= 2 else b""
    out = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        n = name.strip().lower()
        if n in drop and n != b"upgrade":
            continue
        out.append(name.strip() + b": " + value.strip() + b"\r\n")
    return reason, b"".join(out)


def client_response_headers(
        headers: Sequence[tuple[bytes, bytes]]) -> tuple[list[bytes], int | None, bool]:
    """Upstream response headers as lines for the client, the Content-Length if valid, and
    whether the upstream used a transfer coding (the proxy re-frames the body itself)."""
    out: list[bytes] = []
    length: int | None = None
    coded = False
    tokens: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens = connection_tokens(value)
    for name, value in headers:
        n = name.lower()
        if n in HOP_RESPONSE or n in tokens:
            if n == b"transfer-encoding":
                coded = True
            continue
        if n == b"content-length":
            try:
                length = int(value)
            except ValueError:
                pass
            continue
        out.append(name + b": " + value + b"\r\n")
    return out, length, coded


class ResponseHead:
    """An upstream response head reduced to what the client is sent: its status, reason and
    end-to-end header lines (joined), the Content-Length if valid, whether the upstream used a
    transfer coding, and whether the body is framed at all (a length or chunked) rather than
    delimited by the upstream closing. Its meaning never changes once built (``status_line``
    only caches a value derived from it), so one instance answers every response whose head is
    byte-for-byte the same."""

    __slots__ = (
        "accel",
        "client_date",
        "client_head",
        "client_loc",
        "coded",
        "cookies",
        "filtered",
        "framed",
        "headers",
        "length",
        "lines",
        "reason",
        "redirects",
        "status",
        "status_line",
        "status_text",
        "whole",
    )

    def __init__(self, status: int, reason: bytes, lines: bytes, length: int | None, coded: bool,
                 framed: bool) -> None:
        self.status = status
        self.status_text = str(status)
        self.reason = reason
        self.lines = lines
        self.length = length
        self.coded = coded
        self.framed = framed
        self.status_line = b""  # the client's status line, filled in by the first user
        # the body's length when the head alone says the response is exactly that many bytes
        # after it and the connection stays open (HTTP/1.1, one Content-Length, no transfer
        # coding or closing Connection, a status with a body); -1 otherwise
        self.whole = -1
        # the client's whole head last made from it, and the location and Date line it was
        # made for (``proxying.ProxyAttempt.response_whole``); a cache, not part of the meaning
        self.client_head = b""
        self.client_loc: object | None = None
        self.client_date: bytes | None = None
        # a Location or Refresh line is among ``lines``: proxy_redirect may rewrite them, per
        # request (``proxyheaders``), so the client's head is then never cached
        self.redirects = False
        self.cookies = False  # a Set-Cookie line: proxy_cookie_* may rewrite it, per request
        self.accel: bytes | None = None  # an X-Accel-Redirect value: the task redirects
        # the upstream's header fields as read, for a location whose proxy_hide_header or
        # proxy_pass_header changes what crosses, and the lines last made for one
        # (``proxyheaders.filtered_lines``)
        self.headers: Sequence[tuple[bytes, bytes]] = ()
        self.filtered: tuple[object, bytes] | None = None


def client_response_head(status: int, reason: bytes,
                         headers: Sequence[tuple[bytes, bytes]]) -> ResponseHead:
    """What ``client_response_headers`` keeps, plus the framing facts the proxy decides on."""
    lines, length, coded = client_response_headers(headers)
    framed = False
    for name, value in headers:
        n = name.lower()
        if n == b"content-length" or (n == b"transfer-encoding" and b"chunked" in value.lower()):
            framed = True
            break
    joined = b"".join(lines)
    head = ResponseHead(status, reason, joined, length, coded, framed)
    head.headers = headers
    low = b"\n" + joined.lower()  # one search per name: cheaper than a look at each line
    head.redirects = b"\nlocation:" in low or b"\nrefresh:" in low
    head.cookies = b"\nset-cookie:" in low
    for name, value in headers:  # (hidden from the client: not in ``joined``)
        if len(name) == 16 and name.lower() == b"x-accel-redirect":
            head.accel = value
    return head


def response_framing(status: int, head_only: bool, client_version: str, length: int | None,
                     coded: bool) -> tuple[bool, bool]:
    """(send chunked, body follows) for a proxied response.

    A sized body keeps its Content-Length; an unsized one goes chunked to HTTP/1.1 clients and
    close-delimited to HTTP/1.0 ones. HEAD, 204 and 304 carry no body; a HEAD answer keeps the
    Transfer-Encoding the GET would have had, as nginx does.
    """
    no_body = head_only or status in (204, 304) or 100 <= status < 200
    chunked = client_version == "1.1" and length is None and (not no_body or coded)
    return chunked, not no_body


def single_range(value: bytes, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``a-`` / ``-n`` as [start, end); None = unsatisfiable (416). Several
    ranges or a malformed header give the whole file: a server may ignore Range."""
    unit, _, spec = value.partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return (0, size)
    first, dash, last = spec.strip().partition(b"-")
    if not dash:
        return (0, size)
    try:
        if not first:
            n = int(last)
            if n <= 0:
                return None
            return (max(0, size - n), size)
        a = int(first)
        b = int(last) + 1 if last else size
    except ValueError:
        return (0, size)
    if a < 0 or a >= size or b <= a:
        return None
    return (a, min(b, size))
