"""``gzip_static`` compared with real nginx 1.22 on the same file and files: ``on`` (the ".gz"
beside a file for clients that take gzip, with Vary under gzip_vary, the plain file with Vary
for the others once a .gz exists), ``always``, ``off``; no .gz, a directory named like one, the
.gz's own validators (304, its ETag), a Range of it (nginx 1.22 sends it whole), HEAD, with ``gzip on`` beside it and
gzip_http_version / gzip_disable deciding for it."""

from __future__ import annotations

import gzip
import os

from tests.l7.conftest import Stack, interop_head
from tests.l7.test_nginx_interop import _compare, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-gzs.pid", "{tmp}/error-gzs.log") + """\
    types {{ text/html html; text/css css; application/javascript js; }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /on/ {{ gzip_static on; }}
        location /vary/ {{ gzip_static on; gzip_vary on; }}
        location /always/ {{ gzip_static always; gzip_vary on; }}
        location /off/ {{ gzip_static off; }}
        location /both/ {{ gzip_static on; gzip on; gzip_vary on; gzip_types text/plain; }}
        location /old/ {{ gzip_static on; gzip_http_version 1.1; gzip_disable "Mozilla/4"; }}
    }}
}}
"""


def _client_sets() -> list[tuple[str, str]]:
    return [("", "HTTP/1.1"), ("Accept-Encoding: gzip\r\n", "HTTP/1.1"),
            ("Accept-Encoding: gzip;q=0\r\n", "HTTP/1.1"),
            ("Accept-Encoding: deflate, gzip\r\n", "HTTP/1.1"),
            ("Accept-Encoding: gzip\r\n", "HTTP/1.0"),
            ("Accept-Encoding: gzip\r\nUser-Agent: Mozilla/4.0\r\n", "HTTP/1.1")]


def _requests() -> list[bytes]:
    out = []
    for d in ("on", "vary", "always", "off", "both", "old"):
        for name in ("a.css", "nogz.css", "dir.js"):
            for extra, version in _client_sets():
                out.append(f"GET /{d}/{name} {version}\r\nHost: localhost\r\nConnection: close"
                           f"\r\n{extra}\r\n".encode())
    gz = "Accept-Encoding: gzip\r\n"
    for d in ("on", "vary", "always"):
        out.append(f"HEAD /{d}/a.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{gz}"
                   "\r\n".encode())
        out.append(f"GET /{d}/a.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{gz}"
                   "Range: bytes=2-9\r\n\r\n".encode())
        out.append(f"GET /{d}/a.css HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{gz}"
                   'If-None-Match: "{etag}"\r\n\r\n'.encode())
    return out


def test_gzip_static_answers_as_nginx(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    html = stack.tmp / "html"
    plain = b"body { color: red; }\n" * 20
    packed = gzip.compress(plain, mtime=0)
    for d in ("on", "vary", "always", "off", "both", "old"):
        (html / d).mkdir(parents=True)
        (html / d / "a.css").write_bytes(plain)
        (html / d / "a.css.gz").write_bytes(packed)
        (html / d / "nogz.css").write_bytes(plain)
        (html / d / "dir.js").write_bytes(b"var x = 1;\n")
        (html / d / "dir.js.gz").mkdir()
        for f in ("a.css", "a.css.gz", "nogz.css", "dir.js"):
            os.utime(html / d / f, (1_700_000_000, 1_700_000_000))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    # the .gz's own ETag: mtime and size in hex, as nginx makes it
    etag = f"{1_700_000_000:x}-{len(packed):x}"
    requests = [r.replace(b"{etag}", etag.encode()) for r in _requests()]
    ours = _compare(stack, nginx_bin, CONF, "gzs", requests)  # (ports masked: "PORT")
    served = [a for a in ours if "Content-Encoding: gzip" in a[0]]
    assert served and any(a[1] == packed for a in served)  # the .gz itself, byte for byte
    assert any("HTTP/1.1 304 Not Modified" in a[0] for a in ours)
