"""When a file answer is a 304 or a 412: nginx's not-modified filter, with the ``etag`` and
``if_modified_since`` directives that steer it.

Why apart from ``static``: the rule is nginx's own and subtler than "the validator matches"
(If-Modified-Since and If-None-Match must both agree when both are sent, ``*`` matches even a
file sent without ETag, a listed tag may be weak, ``if_modified_since before`` accepts any
later date; If-Unmodified-Since and If-Match, compared strictly, fail with 412 first), and
the fast cached path never needs it: a request carrying any of these headers leaves that path
(``static.cached_path``), so these settings cost it nothing.

Not for: answers other than a file's 200 (nginx's filter lets them pass, and so does pylvs).
"""

from __future__ import annotations

import calendar
import email.utils

from pylvs.l7.directives import HSL, Level, flag_value, setting
from pylvs.l7.syntax import ConfigError, Directive

IMS_MODES = ("off", "exact", "before")
IMS_DEFAULT = "exact"  # nginx's: the very date of the file


@setting("etag", HSL, 1, 1, once=True)
def _etag(lv: Level, d: Directive) -> None:
    lv.s["etag"] = flag_value(d.args[0], d)


@setting("if_modified_since", HSL, 1, 1, once=True)
def _if_modified_since(lv: Level, d: Directive) -> None:
    if d.args[0] not in IMS_MODES:  # nginx's enum slot: no directive name in the message
        raise ConfigError(f'invalid value "{d.args[0]}"', d.file, d.line)
    lv.s["if_modified_since"] = d.args[0]


def http_time(value: bytes) -> int:
    """An HTTP date as seconds since the epoch, -1 when it is not one (nginx's
    ngx_parse_http_time reads RFC 1123, RFC 850 and asctime dates, all as GMT)."""
    try:
        t = email.utils.parsedate(value.decode("latin-1"))
    except (ValueError, IndexError):
        return -1
    if t is None:
        return -1
    try:
        return calendar.timegm(t)
    except (ValueError, OverflowError):
        return -1


def _modified(ims: bytes, mtime: int, mode: str) -> bool:
    """nginx's ngx_http_test_if_modified: exact wants the very date, before any date not
    earlier than the file's; off never calls a file unmodified."""
    if mode == "off":
        return True
    t = http_time(ims)
    if t == mtime:
        return False
    return mode == "exact" or t < mtime


def _matches(header: bytes, etag: bytes | None, weak: bool = True) -> bool:
    """nginx's ngx_http_test_if_match: ``*`` matches (even without an ETag), else one of the
    comma-separated tags must be the file's (weak: with or without W/; strong: without)."""
    if header == b"*":
        return True
    if etag is None:
        return False
    n = len(etag)
    start, end = 0, len(header)
    while start < end:
        if weak and end - start > 2 and header[start:start + 2] == b"W/":
            start += 2
        if n > end - start:
            return False
        if header[start:start + n] == etag:
            pos = start + n
            while pos < end and header[pos] in b" \t":
                pos += 1
            if pos == end or header[pos:pos + 1] == b",":
                return True
        while start < end and header[start:start + 1] != b",":
            start += 1
        while start < end and header[start] in b" \t,":
            start += 1
    return False


def not_modified(hmap: dict[bytes, bytes], mtime: int, etag: bytes | None, mode: str) -> bool:
    """Whether a file answer of 200 becomes a 304: one of the two conditions is sent and
    neither says the file changed (``etag`` None when ``etag off``)."""
    ims = hmap.get(b"if-modified-since")
    inm = hmap.get(b"if-none-match")
    if ims is None and inm is None:
        return False
    if ims is not None and _modified(ims, mtime, mode):
        return False
    return inm is None or _matches(inm, etag)


def precondition_failed(hmap: dict[bytes, bytes], mtime: int, etag: bytes | None) -> bool:
    """Whether a file answer of 200 becomes a 412: If-Unmodified-Since before the file's date
    (or not a date), or an If-Match naming another tag (strong comparison)."""
    ius = hmap.get(b"if-unmodified-since")
    if ius is not None and http_time(ius) < mtime:
        return True
    im = hmap.get(b"if-match")
    return im is not None and not _matches(im, etag, weak=False)
