"""nginx's X-Accel-Redirect: an upstream's answer naming a URI (or ``@name``) that nginx serves
instead, in an internal redirect, as applications ask for protected downloads.

Why apart: what crosses the redirect is nginx's own choice, checked against nginx 1.22
(tests/l7/test_accel.py): of the upstream's headers, Content-Type (it becomes the answer's
type unless the answer is an error or redirect page), Set-Cookie, Content-Disposition,
Cache-Control, Expires and Accept-Ranges (dropped from error pages, as nginx clears it
there) are kept; the rest and the upstream's body are not. The method becomes GET (HEAD stays
HEAD); the URI is read as ``ngx_http_parse_unsafe_uri`` reads it: arguments after the first
"?", %-escapes decoded, and "..", "/../", a NUL or nothing refused as unsafe (a 404). An
``@name`` keeps the request's URI and arguments. ``proxy_ignore_headers X-Accel-Redirect``
switches it off (the header is then hidden, the answer sent as it is).

Not for: noticing the header (``proxying``) or running the redirect (``routing``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

_CARRIED = frozenset({b"set-cookie", b"content-disposition", b"cache-control", b"expires"})
_CT_LINE = re.compile(rb"(?im)^content-type:[^\r\n]*\r\n")


@dataclass(frozen=True, slots=True)
class Carried:
    """What an upstream's X-Accel-Redirect answer leaves on the answer that replaces it."""

    content_type: bytes | None  # the upstream's Content-Type value
    lines: bytes  # Set-Cookie, Content-Disposition, Cache-Control, Expires lines
    ranges: bytes  # Accept-Ranges lines

    @classmethod
    def of(cls, headers: Sequence[tuple[bytes, bytes]]) -> Carried:
        ctype: bytes | None = None
        lines: list[bytes] = []
        ranges: list[bytes] = []
        for name, value in headers:
            n = name.lower()
            if n == b"content-type":
                ctype = value
            elif n in _CARRIED:
                lines.append(name + b": " + value + b"\r\n")
            elif n == b"accept-ranges":
                ranges.append(name + b": " + value + b"\r\n")
        return cls(ctype, b"".join(lines), b"".join(ranges))

    def apply(self, status: int, lines: bytes) -> bytes:
        """An answer's header lines with what crosses the redirect: for a success, the type
        replaced and every carried line added; for an error or redirect page, the lines
        without the type and Accept-Ranges."""
        if status >= 300:
            return lines + self.lines
        if self.content_type is not None:
            ct = b"Content-Type: " + self.content_type + b"\r\n"
            lines, n = _CT_LINE.subn(lambda _m: ct, lines, count=1)
            if not n:
                lines = ct + lines
        return lines + self.lines + self.ranges


def unsafe_uri(value: bytes) -> tuple[str, str] | None:
    """(path, arguments) of an X-Accel-Redirect URI as nginx's ``ngx_http_parse_unsafe_uri``
    reads it; None if it is unsafe."""
    if not value or value[:1] == b"?":
        return None
    path, _, args = value.partition(b"?")
    if b"\0" in path:
        return None
    if b"%" in path:
        path = unquote_to_bytes(path)
        if b"\0" in path:
            return None
    if _dotdot(path):
        return None
    return path.decode("latin-1"), args.decode("latin-1")


def _dotdot(path: bytes) -> bool:
    """A leading "..", or "/.." at the end or before a "/"."""
    if path == b".." or path.startswith(b"../"):
        return True
    return path.endswith(b"/..") or b"/../" in path
