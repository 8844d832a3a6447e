"""``$sent_http_*`` in an access log compared with real nginx 1.22's log of the same requests:
the response head as sent (a file's, also from the file cache's fast path, an error page's, a
redirect's Location, a proxied answer's own headers, Cache-Control lines joined, a header not
sent), whatever path made it."""

from __future__ import annotations

import asyncio

from tests.l7.conftest import Stack, interop_head, wait_for
from tests.l7.test_nginx_interop import _raw_answer, _real_nginx, nginx_bin  # noqa: F401

CONF = interop_head("{tmp}/nginx-sh.pid", "{tmp}/error-sh.log") + """\
    log_format sent '$request_uri $status ct=$sent_http_content_type '
                    'cl=$sent_http_content_length loc=$sent_http_location '
                    'up=$sent_http_x_up cc=$sent_http_cache_control none=$sent_http_x_none';
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        access_log {tmp}/access-{who}.log sent;
        location = /moved {{ return 301 /elsewhere; }}
        location /app/ {{ proxy_pass http://127.0.0.1:{up}/; }}
        location /exp/ {{ expires 1h; }}
    }}
}}
"""


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/x-up\r\nX-Up: yes\r\n"
                         b"Cache-Control: private\r\nCache-Control: max-age=5\r\n"
                         b"Content-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


REQUESTS = [f"GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for p in (
    "/f.txt", "/f.txt", "/nosuch", "/moved", "/app/x", "/app/x", "/exp/g.txt")]


def test_sent_http_as_nginx_logs_it(stack: Stack, nginx_bin: str) -> None:  # noqa: F811
    html = stack.tmp / "html"
    (html / "exp").mkdir(parents=True)
    (html / "f.txt").write_text("file\n")
    (html / "exp" / "g.txt").write_text("g\n")
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    up = stack.upstream(_upstream)
    port = stack.proxy(CONF, up=up, who="pylvs")
    for r in REQUESTS:
        _raw_answer(port, r)
    with _real_nginx(stack, nginx_bin, "sh", CONF, up=up, who="nginx") as nport:
        for r in REQUESTS:
            _raw_answer(nport, r)
    logs = {}
    for who, p in (("pylvs", port), ("nginx", nport)):
        path = stack.tmp / f"access-{who}.log"
        assert wait_for(lambda f=path: f.exists() and len(f.read_text().splitlines())
                        == len(REQUESTS), 5)
        # each on its own port; error and redirect pages differ in length (their signature)
        logs[who] = [_paged(line.replace(f":{p}/", ":PORT/"))
                     for line in path.read_text().splitlines()]
    assert logs["pylvs"] == logs["nginx"]
    assert "/app/x 200 ct=text/x-up cl=2 loc=- up=yes cc=private, max-age=5 none=-" \
        in logs["pylvs"]


def _paged(line: str) -> str:
    """A log line without the Content-Length of nginx's own pages (3xx and 4xx here)."""
    status = line.split(" ")[1]
    if status[0] in "34":
        head, _, rest = line.partition(" cl=")
        return head + " loc=" + rest.partition(" loc=")[2]
    return line
