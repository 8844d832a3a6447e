"""nginx's gzip filter: which responses are compressed, and how their heads change.

nginx's rules (ngx_http_gzip_filter_module and ngx_http_gzip_ok, 1.22), kept here:

- a response is a candidate when gzip is on for its location, its status is 200, 403 or 404, it
  has no Content-Encoding yet, its Content-Length (when known) is at least ``gzip_min_length``,
  its type is in ``gzip_types`` (``text/html`` always is; ``*`` is any); a HEAD answer's head is
  filtered as the GET's would be (its length then goes, and no body follows). A candidate gets ``Vary: Accept-Encoding`` when ``gzip_vary`` is on, whether
  it is then compressed or not;
- it is compressed when the request's Accept-Encoding names ``gzip`` as a token with a non-zero
  q, the User-Agent is not disabled (``gzip_disable``: ``msie6`` or regexes, caseless), the
  request's HTTP version is at least ``gzip_http_version``, and, when the request came through a
  proxy (it has ``Via``), ``gzip_proxied`` allows it from the response's Expires, Cache-Control,
  Last-Modified, ETag and the request's Authorization;
- compressed, it loses Content-Length (HTTP/1.1: chunked; HTTP/1.0: the end is the connection's
  close) and Accept-Ranges (a Range is then not applied), its ETag becomes weak (``W/``; one
  that is not a quoted string is dropped), and it gains ``Content-Encoding: gzip``.

The compressed bytes are zlib's at ``gzip_comp_level``; they differ from nginx's (its window
and memory settings come from ``gzip_buffers``, accepted and not applied here) but decompress to
the same body.

Not for: sending (``static``, ``proxying`` and ``reply`` call ``decide`` and ``Compressor``).
"""

from __future__ import annotations

import re
import zlib
from typing import Any, Protocol

from pylvs.l7.directives import HSL, Level, flag_value, ignored, pcre, setting, size_value
from pylvs.l7.model import Gzip
from pylvs.l7.syntax import ConfigError, Directive


class Request(Protocol):
    """What the filter reads of a request (``request.Request`` is one; not imported, as the
    configuration reader imports this module for its directives)."""

    hmap: dict[bytes, bytes]
    method: str
    version: str

_PROXIED = frozenset({"off", "expired", "no-cache", "no-store", "private", "no_last_modified",
                      "no_etag", "auth", "any"})


# -- the directives ------------------------------------------------------------------------------


@setting("gzip", HSL, 1, 1)
def _gzip(lv: Level, d: Directive) -> None:
    lv.s["gzip"] = flag_value(d.args[0], d)


@setting("gzip_types", HSL, 1, -1)
def _gzip_types(lv: Level, d: Directive) -> None:
    lv.s[d.name] = frozenset(a.lower() for a in d.args) | {"text/html"}


@setting("gzip_min_length", HSL, 1, 1)
def _gzip_min_length(lv: Level, d: Directive) -> None:
    lv.s[d.name] = size_value(d.args[0], d)


@setting("gzip_comp_level", HSL, 1, 1)
def _gzip_comp_level(lv: Level, d: Directive) -> None:
    v = d.args[0]
    if not v.isdigit():
        raise ConfigError(f'"{d.name}" directive invalid number', d.file, d.line)
    if not 1 <= int(v) <= 9:
        raise ConfigError('the value must be in 1-9 range', d.file, d.line)
    lv.s[d.name] = int(v)


@setting("gzip_vary", HSL, 1, 1)
def _gzip_vary(lv: Level, d: Directive) -> None:
    lv.s[d.name] = flag_value(d.args[0], d)


@setting("gzip_proxied", HSL, 1, -1)
def _gzip_proxied(lv: Level, d: Directive) -> None:
    for a in d.args:
        if a not in _PROXIED:
            raise ConfigError(f'invalid value "{a}" in "{d.name}" directive', d.file, d.line)
    lv.s[d.name] = frozenset(d.args)


@setting("gzip_disable", HSL, 1, -1)
def _gzip_disable(lv: Level, d: Directive) -> None:
    msie6 = False
    regexes = []
    for a in d.args:
        if a == "msie6":
            msie6 = True
        elif a == "degradation":
            continue  # a system-load condition nginx tests; never true here
        else:
            regexes.append(pcre(a, d, re.IGNORECASE))
    lv.s[d.name] = (msie6, tuple(regexes))


@setting("gzip_http_version", HSL, 1, 1)
def _gzip_http_version(lv: Level, d: Directive) -> None:
    if d.args[0] not in ("1.0", "1.1"):
        raise ConfigError(f'invalid value "{d.args[0]}" in "{d.name}" directive', d.file, d.line)
    lv.s[d.name] = d.args[0]


# memory tuning of nginx's own buffers; zlib's defaults are used
ignored(HSL, "gzip_buffers")


@setting("gzip_static", HSL, 1, 1)
def _gzip_static(lv: Level, d: Directive) -> None:
    if d.args[0] not in ("on", "off", "always"):  # nginx's enum slot
        raise ConfigError(f'invalid value "{d.args[0]}"', d.file, d.line)
    lv.s[d.name] = d.args[0]


def gzip_of(s: dict[str, Any]) -> Gzip | None:
    """A level's gzip settings, None when gzip is off there."""
    if not s.get("gzip", False):
        return None
    return _rules(s)


def gzip_static_of(s: dict[str, Any]) -> tuple[bool, Gzip] | None:
    """A level's gzip_static: (always, the gzip rules it checks a request with: nginx keeps
    gzip_vary, gzip_http_version, gzip_proxied and gzip_disable in its core module, so they
    apply with gzip off too), None when off."""
    mode = s.get("gzip_static", "off")
    return None if mode == "off" else (mode == "always", _rules(s))


def _rules(s: dict[str, Any]) -> Gzip:
    msie6, regexes = s.get("gzip_disable", (False, ()))
    return Gzip(types=s.get("gzip_types", frozenset({"text/html"})),
                min_length=s.get("gzip_min_length", 20),
                comp_level=s.get("gzip_comp_level", 1),
                vary=s.get("gzip_vary", False),
                proxied=s.get("gzip_proxied", frozenset({"off"})),
                disable_msie6=msie6, disable=regexes,
                http_version=s.get("gzip_http_version", "1.1"))


# -- the request side (ngx_http_gzip_ok) -----------------------------------------------------------


def accepts_gzip(ae: bytes) -> bool:
    """Accept-Encoding names ``gzip`` as a token whose q is not 0 (nginx's scan)."""
    if ae.startswith(b"gzip,"):
        return True
    low = ae.lower()
    start = 0
    while True:
        p = low.find(b"gzip", start)
        if p < 0:
            return False
        if p == 0 or low[p - 1] in b", ":
            break
        start = p + 4
    rest = low[p + 4:]
    for i, c in enumerate(rest):
        if c == 44:  # ","
            return True
        if c == 59:  # ";": a quality follows
            return _quality(rest[i + 1:]) != 0
        if c != 32:
            return False
    return True


def _quality(text: bytes) -> int:
    m = re.match(rb" *q *= *(\d)(?:\.(\d{0,3}))?", text)
    if m is None:
        return 0
    whole = int(m.group(1))
    frac = (m.group(2) or b"").ljust(3, b"0")[:3]
    if whole > 1:
        return 0
    return whole * 100 + int(frac) // 10


def msie6(ua: bytes) -> bool:
    """nginx's ``msie6`` test of a User-Agent: MSIE 4.x, 5.x, or 6.x without SV1."""
    i = ua.find(b"MSIE ")
    if i < 0 or i + 7 >= len(ua) or ua[i + 6:i + 7] != b".":
        return False
    major = ua[i + 5:i + 6]
    if major in (b"4", b"5"):
        return True
    return major == b"6" and b"SV1" not in ua[i + 8:]


def _header(lines: bytes, name: bytes) -> bytes | None:
    m = re.search(rb"(?im)^" + name + rb":[ \t]*(.*?)[ \t]*\r?$", lines)
    return m.group(1) if m else None


def _proxied_ok(req: Request, p: frozenset[str], lines: bytes) -> bool:
    """``gzip_proxied`` for a request that came through a proxy (it has Via)."""
    if "off" in p:
        return False
    if "any" in p:
        return True
    if "auth" in p and b"authorization" in req.hmap:
        return True
    expires = _header(lines, b"expires")
    if expires is not None:
        return "expired" in p  # nginx compares with Date; an expiry date has passed or not
    cc = _header(lines, b"cache-control")
    if cc is not None:
        low = cc.lower()
        return any(f in p and f.encode() in low for f in ("no-cache", "no-store", "private"))
    if _header(lines, b"last-modified") is not None and "no_last_modified" not in p:
        return False
    return not (_header(lines, b"etag") is not None and "no_etag" not in p)


def gzip_ok(req: Request, g: Gzip, lines: bytes) -> bool:
    hmap = req.hmap
    ae = hmap.get(b"accept-encoding")
    if ae is None or len(ae) < 4 or not accepts_gzip(ae):
        return False
    ua = hmap.get(b"user-agent")
    if ua is not None and g.disable_msie6 and msie6(ua):
        return False
    if req.version < g.http_version:
        return False
    if b"via" in hmap and not _proxied_ok(req, g.proxied, lines):
        return False
    if g.disable and ua is not None:
        text = ua.decode("latin-1")
        if any(r.search(text) for r in g.disable):
            return False
    return True


# -- the response side ------------------------------------------------------------------------------


def decide(req: Request, g: Gzip, status: int, ctype: bytes, length: int | None,
           lines: bytes) -> tuple[bool, bool]:
    """(compress, add Vary) for a response of this status, type, length and header lines."""
    if status != 200 and status != 403 and status != 404:
        return False, False
    if length is not None and length < g.min_length:  # HEAD too: nginx filters its head
        return False, False
    if lines and b"ontent-encoding" in lines.lower():
        ce = _header(lines, b"content-encoding")
        if ce:
            return False, False
    mime = ctype.partition(b";")[0].strip().lower().decode("latin-1")
    if "*" not in g.types and mime not in g.types:
        return False, False
    return gzip_ok(req, g, lines), g.vary


VARY = b"Vary: Accept-Encoding\r\n"
ENCODING = b"Content-Encoding: gzip\r\n"


def weak_etag(lines: bytes) -> bytes:
    """An ETag line made weak as nginx's ``ngx_http_weak_etag`` (an unquoted one is dropped),
    and no Accept-Ranges (ranges of the compressed body are not served)."""
    out = []
    for line in lines.split(b"\r\n"):
        low = line[:14].lower()
        if low.startswith(b"etag:"):
            value = line[5:].strip()
            if value.startswith(b'"'):
                line = b"ETag: W/" + value
            elif not value.startswith(b"W/"):
                continue
        elif low.startswith(b"accept-ranges:") or low.startswith(b"content-length:"):
            continue
        out.append(line)
    return b"\r\n".join(out)


class Compressor:
    """A gzip stream (RFC 1952 header and trailer) at the location's level."""

    __slots__ = ("z",)

    def __init__(self, level: int) -> None:
        self.z = zlib.compressobj(level, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        return self.z.compress(data)

    def finish(self) -> bytes:
        return self.z.flush()


def compress_whole(level: int, body: bytes) -> bytes:
    c = Compressor(level)
    return c.feed(body) + c.finish()
