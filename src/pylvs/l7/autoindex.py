"""nginx's ``autoindex``: a directory without an index file listed as HTML, JSON or XML.

Why by hand: the listing is nginx's byte for byte (checked against nginx 1.22 in
tests/l7/test_autoindex.py), which users and scripts that scrape it rely on:

- entries: every name not starting with ".", directories first, then by the bytes of the
  name; an entry whose stat fails because it vanished or is a dangling link is left out;
- HTML: a link per entry (the name %-escaped as a URI component, a directory's with "/"),
  the name shown HTML-escaped and padded to 50 bytes (nginx counts UTF-8 characters only
  under ``charset utf-8``, which pylvs accepts without effect; a longer name is cut to its
  first 47 bytes and "..>"), the time as ``DD-Mon-YYYY HH:MM`` (GMT, or local time with
  ``autoindex_localtime on``) and the size, exact in 19 columns or, with
  ``autoindex_exact_size off``, nginx's rounded K/M/G; a directory's size is "-";
- JSON: ``{ "name":..., "type":"directory"|"file", "mtime":RFC 1123, "size":N }`` per line;
  XML: ``<directory mtime=...>`` / ``<file mtime=... size=...>`` in a ``<list>``; both with
  CRLF line ends, as nginx's.

Not for: when a listing is made (``routing.files``: a URI ending in "/" whose index files do
not exist) or sending it (``routing``).
"""

from __future__ import annotations

import email.utils
import errno
import os
import stat
import time
from dataclasses import dataclass
from urllib.parse import quote

NAME_LEN = 50  # NGX_HTTP_AUTOINDEX_NAME_LEN
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CONTENT_TYPES = {"html": b"text/html", "json": b"application/json",
                 "xml": b"text/xml; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class AutoIndex:
    """A location's autoindex settings."""

    format: str = "html"  # html, json, xml
    exact_size: bool = True
    localtime: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    name: bytes
    is_dir: bool
    mtime: int
    size: int


def entries(path: str) -> list[Entry]:
    """The directory's entries in nginx's order; ``OSError`` if it cannot be read."""
    out: list[Entry] = []
    with os.scandir(os.fsencode(path)) as it:
        for de in it:
            name = de.name
            if name.startswith(b"."):
                continue
            try:
                st = de.stat()  # (follows links, as nginx's ngx_de_info)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ELOOP):
                    continue
                raise
            out.append(Entry(name, stat.S_ISDIR(st.st_mode), int(st.st_mtime), st.st_size))
    out.sort(key=lambda e: (not e.is_dir, e.name))
    return out


def escape_html(text: bytes) -> bytes:
    """ngx_escape_html: &, <, > and the double quote."""
    return (text.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;")
            .replace(b'"', b"&quot;"))


def _size(size: int, exact: bool, is_dir: bool) -> bytes:
    if exact:
        return b"                  -" if is_dir else b"%19d" % size
    if is_dir:
        return b"      -"
    for unit, scale in ((1 << 30, b"G"), (1 << 20, b"M")):
        if size > unit - 1:
            n = size // unit + (1 if size % unit > unit // 2 - 1 else 0)
            return b"%6d%s" % (n, scale)
    if size > 9999:
        return b"%6dK" % (size // 1024 + (1 if size % 1024 > 511 else 0))
    return b" %6d" % size


def html(uri: str, items: list[Entry], ai: AutoIndex) -> bytes:
    title = escape_html(uri.encode("utf-8", "surrogateescape"))
    out = [b"<html>\r\n<head><title>Index of ", title, b"</title></head>\r\n<body>\r\n"
           b"<h1>Index of ", title, b'</h1><hr><pre><a href="../">../</a>\r\n']
    for e in items:
        href = quote(e.name, safe="").encode() + (b"/" if e.is_dir else b"")
        length = len(e.name)
        if length > NAME_LEN:
            shown = escape_html(e.name[:NAME_LEN - 3]) + b"..&gt;</a>"
        else:
            shown = escape_html(e.name)
            if e.is_dir and length < NAME_LEN:
                shown += b"/"
                length += 1
            shown += b"</a>" + b" " * (NAME_LEN - length)
        t = time.localtime(e.mtime) if ai.localtime else time.gmtime(e.mtime)
        when = b"%02d-%s-%d %02d:%02d " % (t.tm_mday, _MONTHS[t.tm_mon - 1].encode(),
                                           t.tm_year, t.tm_hour, t.tm_min)
        out += [b'<a href="', href, b'">', shown, b" ", when,
                _size(e.size, ai.exact_size, e.is_dir), b"\r\n"]
    out.append(b"</pre><hr></body>\r\n</html>\r\n")
    return b"".join(out)


def escape_json(text: bytes) -> bytes:
    """ngx_escape_json: the double quote, the backslash and control bytes."""
    out = bytearray()
    for c in text:
        if c in (0x22, 0x5C):
            out += b"\\" + bytes((c,))
        elif c < 0x20:
            out += b"\\u%04x" % c
        else:
            out.append(c)
    return bytes(out)


def json(items: list[Entry]) -> bytes:
    rows = []
    for e in items:
        mtime = email.utils.formatdate(e.mtime, usegmt=True).encode()
        row = (b'{ "name":"' + escape_json(e.name) + b'", "type":"'
               + (b"directory" if e.is_dir else b"file") + b'", "mtime":"' + mtime + b'"')
        if not e.is_dir:
            row += b', "size":%d' % e.size
        rows.append(row + b" }")
    return b"[\r\n" + b",\r\n".join(rows) + b"\r\n]"


def xml(items: list[Entry]) -> bytes:
    out = [b'<?xml version="1.0"?>\r\n<list>\r\n']
    for e in items:
        t = time.gmtime(e.mtime)
        mtime = b"%04d-%02d-%02dT%02d:%02d:%02dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour,
                                                     t.tm_min, t.tm_sec)
        if e.is_dir:
            out.append(b'<directory mtime="' + mtime + b'">' + escape_html(e.name)
                       + b"</directory>\r\n")
        else:
            out.append(b'<file mtime="' + mtime + b'" size="%d">' % e.size
                       + escape_html(e.name) + b"</file>\r\n")
    out.append(b"</list>\r\n")
    return b"".join(out)


def listing(uri: str, path: str, ai: AutoIndex) -> bytes:
    """The body for the directory at ``path`` (``OSError`` if it cannot be read)."""
    items = entries(path)
    if ai.format == "json":
        return json(items)
    if ai.format == "xml":
        return xml(items)
    return html(uri, items, ai)
