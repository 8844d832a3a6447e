"""nginx's ``expires`` (ngx_http_headers_module): the ``Expires`` and ``Cache-Control`` lines
of a response.

Why apart: the value is read once (``off``, ``epoch``, ``max``, ``[modified] [+|-]TIME``,
``@HhMm``) and its lines depend on the second the
response's Date line shows, on the response's own ``Last-Modified`` (``modified``) and on its
status (200, 201, 204, 206, 301, 302, 303, 304, 307, 308 only, as add_header). nginx replaces
an ``Expires`` or ``Cache-Control`` the response already has (a proxied one's): the lines
handed in are returned without them. ``reply.head_bytes`` is the one caller, so files (cached
or not), proxied responses and nginx's own pages all get them the same way.

A value with variables (``ExpiresVar``: ``expires $expires``, with a ``map`` of
``$sent_http_content_type`` the usual way) is read per response, after the head's other lines
are known (so ``$sent_http_*`` sees them); a value that does not parse then, or is empty,
adds nothing, as nginx's. Such a location's answers are never served from the cached heads of
files and proxied responses (``static.cached_path``, ``proxying``), which are per location.

Not for: ``add_header`` (``reply``), which runs after it as in nginx.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass

from pylvs.l7.variables import Template

MAX_LINES = b"Expires: Thu, 31 Dec 2037 23:55:55 GMT\r\nCache-Control: max-age=315360000\r\n"
EPOCH_LINES = b"Expires: Thu, 01 Jan 1970 00:00:01 GMT\r\nCache-Control: no-cache\r\n"
_UNITS = {"y": 365 * 86400, "M": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60,
          "s": 1}
_TIME = re.compile(r"(?:(\d+)y)?(?:(\d+)M)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?"
                   r"(?:(\d+)s?)?")
_INT_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class ExpiresVar:
    """``expires [modified] VALUE`` whose value holds variables, read per response."""

    value: Template
    modified: bool


@dataclass(frozen=True)
class Expires:
    """``kind``: "access" (from now), "modified" (from Last-Modified, else now), "daily"
    (``@``: the next such time of day), "epoch", "max" or "off"; ``seconds`` the time (negative:
    in the past)."""

    kind: str
    seconds: int = 0


def parse_time(text: str) -> int | None:
    """nginx's ngx_parse_time in seconds: ``1y2M3w4d5h6m7s`` (units in that order, each at most
    once, the last number without one in seconds); None if it is not one."""
    m = _TIME.fullmatch(text)
    if m is None or not any(g is not None for g in m.groups()):
        return None
    total = 0
    for g, unit in zip(m.groups(), "yMwdhms", strict=True):
        if g is not None:
            total += int(g) * _UNITS[unit]
    return total if total <= _INT_MAX else None


def parse(text: str, modified: bool) -> Expires | str:
    """One value as nginx's ngx_http_parse_expires reads it; a string is its error."""
    if not modified:
        if text == "epoch":
            return Expires("epoch")
        if text == "max":
            return Expires("max")
        if text == "off":
            return Expires("off")
    kind = "modified" if modified else "access"
    minus = False
    if text.startswith("@"):
        if modified:
            return 'daily time cannot be used with "modified" parameter'
        text, kind = text[1:], "daily"
    elif text.startswith(("+", "-")):
        text, minus = text[1:], text[0] == "-"
    seconds = parse_time(text)
    if seconds is None:
        return "invalid value"
    if kind == "daily" and seconds > 86400:
        return "daily time value must be less than 24 hours"
    return Expires(kind, -seconds if minus else seconds)


def _next_time(when: int, now: int) -> int:
    """nginx's ngx_next_time: today's ``when`` (seconds after local midnight) if it is still
    ahead, else tomorrow's."""
    tm = time.localtime(now)
    h, rest = divmod(when, 3600)
    base = (tm.tm_year, tm.tm_mon, tm.tm_mday, h, rest // 60, rest % 60, 0, 0, -1)
    nxt = int(time.mktime(base))
    if nxt - now > 0:
        return nxt
    return int(time.mktime((tm.tm_year, tm.tm_mon, tm.tm_mday + 1, *base[3:])))


_DROP = re.compile(rb"(?im)^(?:expires|cache-control):[^\n]*\n")
_LAST_MODIFIED = re.compile(rb"(?im)^last-modified:[ \t]*([^\r\n]*)")


def lines(exp: Expires, now: int, head: bytes) -> bytes:
    """``head`` (a response's header lines) without its Expires and Cache-Control, then
    ``exp``'s (none for ``off``)."""
    if exp.kind == "off":
        return head
    if head:
        head = _DROP.sub(b"", head)
    if exp.kind == "max":
        return head + MAX_LINES
    if exp.kind == "epoch":
        return head + EPOCH_LINES
    if exp.kind == "daily":
        at = _next_time(exp.seconds, now)
        max_age = at - now
    else:
        lm = _LAST_MODIFIED.search(head) if exp.kind == "modified" else None
        modified = email.utils.parsedate_tz(lm.group(1).decode("latin-1")) if lm else None
        if modified is not None:
            at = int(email.utils.mktime_tz(modified)) + exp.seconds
            max_age = at - now
        else:
            at, max_age = now + exp.seconds, exp.seconds
    date = email.utils.formatdate(at, usegmt=True).encode()
    cc = b"no-cache" if exp.seconds < 0 or max_age < 0 else b"max-age=%d" % max_age
    return head + b"Expires: " + date + b"\r\nCache-Control: " + cc + b"\r\n"
