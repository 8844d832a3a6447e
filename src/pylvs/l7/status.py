"""What nginx puts on the wire for a status, whoever answers: reason phrases, status lines, its
HTML error page, and the Date/Server lines every response carries.

Why a module of its own: static files, proxied responses, redirects and error pages all write
these same bytes, and they are built once (per status, per second) rather than per response;
keeping them here, below every module that answers, lets each of those use them without
importing the others.

Not for: deciding which status a request gets (``routing``, ``static``, ``proxying``) or the
framing of a response (``reply``).
"""

from __future__ import annotations

import email.utils
import http
import time

from pylvs import __version__ as _pkg_version

# Statuses add_header applies to without "always", as in nginx.
ADD_HEADER_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})
# Statuses after which nginx closes the connection.
CLOSING_STATUSES = frozenset({400, 408, 413, 414, 500, 501})
REDIRECTS = (301, 302, 303, 307, 308)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# nginx's own status lines where they differ from RFC 9110's phrases (clients and monitoring
# that match on them see the same words).
_NGINX_REASONS = {
    302: "Moved Temporarily", 405: "Not Allowed", 408: "Request Time-out",
    413: "Request Entity Too Large", 414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable", 503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def _phrase(code: int) -> str:
    if code in _NGINX_REASONS:
        return _NGINX_REASONS[code]
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


_REASONS = {code: _phrase(code) for code in range(100, 600)}


def reason(code: int) -> str:
    return _REASONS.get(code) or _phrase(code)


_CONTENT_TYPES: dict[str, bytes] = {}


def content_type_line(ctype: str) -> bytes:
    line = _CONTENT_TYPES.get(ctype)
    if line is None:
        if len(_CONTENT_TYPES) > 1024:
            _CONTENT_TYPES.clear()
        line = _CONTENT_TYPES[ctype] = b"Content-Type: " + ctype.encode("latin-1") + b"\r\n"
    return line


SERVER_FULL = b"Server: pylvs/" + _pkg_version.encode() + b"\r\n"
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, text: bytes = b"") -> bytes:
    """``HTTP/1.1 200 OK`` and its CRLF, built once per status and reason."""
    line = _STATUS_LINES.get((status, text))
    if line is None:
        if len(_STATUS_LINES) > 1024:
            _STATUS_LINES.clear()
        line = _STATUS_LINES[(status, text)] = b"HTTP/1.1 %d %s\r\n" % (
            status, text or reason(status).encode("latin-1"))
    return line


STATUS_200 = status_line(200)

# nginx's error pages say "302 Found" where its status line says "302 Moved Temporarily".
_PAGE_TITLES = {302: "Found", 401: "Authorization Required"}


def error_page(code: int, tokens: bool, detail: str | None = None) -> bytes:
    """nginx's built-in HTML page for an error or redirect status, signed as pylvs. ``detail``:
    nginx's pages for its internal 4xx codes answered as 400 (494 "Request Header Or Cookie
    Too Large"), titled by the detail, headed by the status, the detail on a line below."""
    heading = f"{code} {_PAGE_TITLES.get(code) or reason(code)}"
    title = f"{code} {detail}" if detail else heading
    extra = f"<center>{detail}</center>\r\n" if detail else ""
    sig = f"pylvs/{_pkg_version}" if tokens else "pylvs"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{heading}</h1></center>\r\n{extra}<hr><center>{sig}</center>\r\n"
            "</body>\r\n</html>\r\n").encode()


class Clock:
    """Date header and $time_local, formatted once a second rather than per request."""

    def __init__(self) -> None:
        self._sec = -1
        self.date = b""
        self.local = ""
        self.errlog = ""
        # "Server:" and "Date:" lines of every response, by server_tokens (off, on)
        self.server_date = (b"", b"")

    @property
    def sec(self) -> int:
        """The second the Date line shows (what ``expires`` counts from, as nginx does)."""
        return self._sec

    def tick(self) -> None:
        now = time.time()
        sec = int(now)
        if sec == self._sec:
            return
        self._sec = sec
        self.date = email.utils.formatdate(sec, usegmt=True).encode()
        date_line = b"Date: " + self.date + b"\r\n"
        self.server_date = (b"Server: pylvs\r\n" + date_line, SERVER_FULL + date_line)
        lt = time.localtime(sec)
        off = lt.tm_gmtoff or 0
        sign = "+" if off >= 0 else "-"
        off = abs(off)
        self.local = (f"{lt.tm_mday:02d}/{_MONTHS[lt.tm_mon - 1]}/{lt.tm_year}:"
                      f"{lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d} "
                      f"{sign}{off // 3600:02d}{off % 3600 // 60:02d}")
        self.errlog = time.strftime("%Y/%m/%d %H:%M:%S", lt)
