"""``autoindex`` compared byte for byte with real nginx 1.22 serving the very same directories:
HTML (exact sizes, rounded sizes, local time), JSON and XML; names that need %-escaping and
HTML-escaping, UTF-8 and over-long names, hidden files, directories first; HTTP/1.1 (chunked)
and HTTP/1.0, HEAD, a directory with an index file (not listed), POST, ``-t``'s refusals."""

from __future__ import annotations

import os
import re
import time

from tests.l7.conftest import Stack, interop_head, read_to_close
from tests.l7.test_nginx_interop import _real_nginx, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-ai.pid", "{tmp}/error-ai.log") + """\
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /d/ {{ autoindex on; }}
        location /h/ {{
            alias {tmp}/html/d/; autoindex on; autoindex_exact_size off; autoindex_localtime on;
        }}
        location /j/ {{ alias {tmp}/html/d/; autoindex on; autoindex_format json; }}
        location /x/ {{ alias {tmp}/html/d/; autoindex on; autoindex_format xml; }}
        location /withindex/ {{ autoindex on; }}
        location /off/ {{ }}
    }}
}}
"""


def _exchange(port: int, data: bytes) -> bytes:
    """Everything one connection answers until it closes (the request asks it to): the status
    line, the header lines sorted without Date and Server (nginx's order differs outside the
    listings), the body with an error page's signature masked."""
    head, _, body = read_to_close(port, data).partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    lines = sorted(ln for ln in lines if not ln.startswith((b"Date:", b"Server:")))
    body = re.sub(rb"<hr><center>[^<]*</center>", b"<hr><center>SIG</center>", body)
    if b"<hr><center>SIG" in body:  # an error page: signed differently, so of another length
        lines = [ln for ln in lines if not ln.startswith(b"Content-Length:")]
    return b"\r\n".join([status, *lines]) + b"\r\n\r\n" + body


def _requests() -> list[bytes]:
    out = []
    for path in ("/d/", "/h/", "/j/", "/x/", "/d/sub/", "/withindex/", "/off/", "/d/nosuch/"):
        out.append(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        out.append(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    out.append(b"HEAD /d/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    out.append(b"POST /d/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
               b"Content-Length: 0\r\n\r\n")
    return out


def test_listings_as_nginx_writes_them(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    html = stack.tmp / "html"
    d = html / "d"
    for sub in ("sub", "zdir", "a" * 49, "b" * 50, "ü" * 52):
        (d / sub).mkdir(parents=True)
    files = {"a.txt": 6, "big.bin": 123_456, "huge.bin": 5_500_000, "sp ace&<b>\".txt": 2,
             ".hidden": 1, "L" * 60 + ".txt": 3, "ünï.txt": 4, "q?#%+=;,.txt": 5,
             "x" * 50: 7, "y" * 51: 8, "é" * 49 + ".t": 9, "k10000": 10_000, "k9999": 9_999}
    for name, size in files.items():
        with open(d / name, "wb") as f:
            f.truncate(size)
    (html / "withindex").mkdir()
    (html / "withindex" / "index.html").write_text("the index\n")
    (html / "off").mkdir()
    stamp = time.mktime((2024, 3, 5, 7, 8, 9, 0, 0, -1))
    for p in [*d.iterdir(), d]:
        os.utime(p, (stamp, stamp))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / sub).mkdir()
    requests = _requests()
    ours_port = stack.proxy(CONF)
    ours = [_exchange(ours_port, r) for r in requests]
    with _real_nginx(stack, nginx_bin, "ai", CONF) as port:
        theirs = [_exchange(port, r) for r in requests]
    wrong = [(r, a, b) for r, a, b in zip(requests, ours, theirs, strict=True) if a != b]
    assert not wrong, "\n".join(f"{r!r}\n  pylvs: {a!r}\n  nginx: {b!r}" for r, a, b in wrong)
    assert b'<a href="sp%20ace%26%3Cb%3E%22.txt">' in ours[0]
    assert b'"type":"directory"' in ours[requests.index(b"GET /j/ HTTP/1.0\r\n\r\n")]
