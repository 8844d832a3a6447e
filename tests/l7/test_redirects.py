"""How a redirect's Location is written, compared with real nginx 1.22 on the same file:
absolute_redirect, port_in_redirect and server_name_in_redirect (set at each level, inherited)
over every kind of redirect nginx makes: a directory's 301, ``return``, ``rewrite ...
redirect`` (a path, and a bare word it leaves alone), auto_redirect, and a Location that
``proxy_redirect`` rewrote to a path; with the Host a client sent and without one."""

from __future__ import annotations

import asyncio

from tests.l7.conftest import Stack, interop_head
from tests.l7.test_nginx_interop import _compare, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-redir.pid", "{tmp}/error-redir.log") + """\
    server {{
        listen 127.0.0.1:{port};
        server_name primary.test alias.test;
        root {tmp}/html;
        location /off/ {{ absolute_redirect off; }}
        location /noport/ {{ port_in_redirect off; }}
        location /sname/ {{ server_name_in_redirect on; }}
        location = /ret {{ return 301 /target?a=1; }}
        location = /ret-off {{ absolute_redirect off; return 302 /t; }}
        location = /ret-url {{ port_in_redirect off; return 302 http://elsewhere/t; }}
        location = /rw {{ rewrite ^ /y redirect; }}
        location = /rw-word {{ rewrite ^ foo redirect; }}
        location = /rw-noport {{ port_in_redirect off; server_name_in_redirect on;
                                 rewrite ^ /y permanent; }}
        location /px/ {{ proxy_pass http://127.0.0.1:{up}; }}
        location /app/ {{
            proxy_pass http://127.0.0.1:{up};
            proxy_redirect http://upstream/ /p/;
            port_in_redirect off;
        }}
        location /app-off/ {{
            proxy_pass http://127.0.0.1:{up};
            proxy_redirect http://upstream/ /p/;
            absolute_redirect off;
        }}
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name other.test;
        root {tmp}/html;
        absolute_redirect off;
        location /on/ {{ absolute_redirect on; port_in_redirect off; }}
    }}
}}
"""

PATHS = ["/sub", "/off/sub", "/noport/sub", "/sname/sub", "/ret", "/ret-off", "/ret-url", "/rw",
         "/rw-word", "/rw-noport", "/px", "/app/r", "/app-off/r", "/sub?q=1"]


def _requests() -> list[bytes]:
    out = []
    for path in PATHS:
        out.append(f"GET {path} HTTP/1.1\r\nHost: alias.test\r\n\r\n".encode())
        out.append(f"GET {path} HTTP/1.0\r\n\r\n".encode())  # no Host: the local address
    for path in ("/sub", "/on/sub"):
        out.append(f"GET {path} HTTP/1.1\r\nHost: other.test\r\n\r\n".encode())
    out.append(b"GET http://alias.test/sub HTTP/1.1\r\nHost: x\r\n\r\n")  # the request line's host
    return out


async def _redirecting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream answering every request with a 302 to http://upstream/x."""
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://upstream/x\r\n"
                         b"Content-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def test_locations_as_nginx_writes_them(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    html = stack.tmp / "html"
    for d in ("sub", "off/sub", "noport/sub", "sname/sub", "on/sub"):
        (html / d).mkdir(parents=True)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    fmt = {"up": stack.upstream(_redirecting)}
    requests = _requests()
    ours = _compare(stack, nginx_bin, CONF, "redir", requests, **fmt)  # (ports masked: "PORT")
    # the cases are what they say: the default, each flag, and the untouched ones
    locs = dict(zip(requests, (a[0] for a in ours), strict=True))

    def location(path: str, host: str = "alias.test") -> str:
        head = locs[f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()]
        return next(line for line in head if line.startswith("Location: "))
    assert location("/sub") == "Location: http://alias.test:PORT/sub/"
    assert location("/off/sub") == "Location: /off/sub/"
    assert location("/noport/sub") == "Location: http://alias.test/noport/sub/"
    assert location("/sname/sub") == "Location: http://primary.test:PORT/sname/sub/"
    assert location("/rw-word") == "Location: foo"
    assert location("/on/sub", "other.test") == "Location: http://other.test/on/sub/"
