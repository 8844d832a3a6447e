"""X-Accel-Redirect compared with real nginx 1.22 on the same file: an upstream's answer naming a
URI (an ``internal`` location's file, a ``return``, a URI with escapes and arguments, ``@name``,
unsafe and relative ones) is replaced by what that URI answers, with the upstream's
Content-Type, Set-Cookie, Content-Disposition, Cache-Control, Expires and Accept-Ranges kept
and nothing else; POST becomes GET, HEAD stays; ``proxy_ignore_headers X-Accel-Redirect`` sends
the answer as it is; through a keep-alive upstream (pylvs' fast path) and pipelined."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

from tests.l7.conftest import Stack, interop_head
from tests.l7.test_nginx_interop import _compare, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-xa.pid", "{tmp}/error-xa.log") + """\
    types {{ text/plain txt; }}
    upstream app {{ server 127.0.0.1:{up}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location /app/ {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /ign/ {{ proxy_pass http://app; proxy_ignore_headers X-Accel-Redirect; }}
        location /protected/ {{ internal; }}
        location @named {{ return 200 "named $uri $args\\n"; }}
        location /ret/ {{ return 200 "ret uri=$uri args=$args method=$request_method\\n"; }}
    }}
}}
"""

_HEADERS = ("Content-Type: application/x-up\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            "Content-Disposition: attachment; filename=f.txt\r\nCache-Control: private\r\n"
            "Expires: Thu, 01 Jan 2030 00:00:00 GMT\r\nLast-Modified: Thu, 01 Jan 2015 "
            "00:00:00 GMT\r\nETag: \"up\"\r\nX-Custom: yes\r\nAccept-Ranges: none\r\nLink: <x>\r\n"
            "Vary: Foo\r\nX-Accel-Expires: 10\r\nLocation: /elsewhere\r\n")


async def _accelerating(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request (kept alive) with an X-Accel-Redirect to its ``xa`` argument
    (default /protected/f.txt), the headers above and a body of its own."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next((int(ln.split(":", 1)[1]) for ln in lines
                           if ln.lower().startswith("content-length:")), 0)
            if length:
                await reader.readexactly(length)
            query = parse_qs(urlsplit(lines[0].split(" ")[1]).query)
            xa = query.get("xa", ["/protected/f.txt"])[0]
            body = b"upstream body"
            writer.write(f"HTTP/1.1 200 OK\r\nX-Accel-Redirect: {xa}\r\n{_HEADERS}"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


REQUESTS = [
    _get("/app/a"),
    _get("/app/a?xa=/ret/x%253Fy%3Fa%3D1"),  # the upstream decodes once: /ret/x%3Fy?a=1
    _get("/app/a?xa=@named"),
    _get("/app/a?xa=/nonexist"),
    _get("/app/a?xa=/../etc/passwd"),
    _get("/app/a?xa=/ret/..%252F..%252Fx"),
    _get("/app/a?xa=ret/rel"),
    _get("/app/a?xa=/ret/p", "POST", "Content-Length: 1\r\n\r\nx")[:-4] + b"\r\n\r\nx",
    _get("/app/a", "HEAD"),
    _get("/ign/a"),
    _get("/protected/f.txt"),  # a client's own request: 404
    _get("/app/a") + _get("/app/a?xa=/ret/second"),  # pipelined, one connection
]


def test_x_accel_redirect_as_nginx(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    html = stack.tmp / "html"
    (html / "protected").mkdir(parents=True)
    (html / "protected" / "f.txt").write_text("secret file\n")
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    fmt = {"up": stack.upstream(_accelerating)}
    ours = _compare(stack, nginx_bin, CONF, "xa", REQUESTS, **fmt)
    first = ours[0]
    assert first[0][0] == "HTTP/1.1 200 OK" and first[1] == b"secret file\n"
    assert "Content-Disposition: attachment; filename=f.txt" in first[0]
    assert "X-Custom: yes" not in first[0]
    ignored = ours[REQUESTS.index(_get("/ign/a"))]
    assert ignored[1] == b"upstream body"
