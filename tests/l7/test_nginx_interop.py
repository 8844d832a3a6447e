"""The same nginx.conf under real nginx and under pylvs http answers the same way: statuses,
bodies, the request head the app server receives, and the 2:1 order of the upstream."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.l7.conftest import Client, Stack, free_port, get
from tests.l7.proc import running

CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access-{{who}}.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream tomcat {{
        server 127.0.0.1:{app1} weight=2;
        server 127.0.0.1:{app2} weight=1;
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        index index.html;
        add_header X-Served-By "rs $host";
        rewrite ^/old/(.*)$ /sub/$1 last;
        location ~ .*.jsp$ {{
            proxy_pass http://tomcat;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header HOST $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        location ^~ /api/ {{
            proxy_pass http://tomcat/app/;
        }}
        location = /exact {{
            add_header X-Always "$status" always;
            return 200 "exact $host $request_uri\\n";
        }}
        location /pics/ {{
            alias {tmp}/pictures/;
        }}
        location /spa/ {{
            try_files $uri $uri/ /spa/app.html;
        }}
        location /strict/ {{
            try_files $uri =404;
        }}
        location /rw/ {{
            rewrite ^/rw/perm/(.*)$ /new/$1 permanent;
            rewrite ^/rw/tmp$ /index.html?from=rw redirect;
            rewrite ^/rw/int/(.*)$ /pics/$1 last;
            rewrite ^/rw/brk/(.*)$ /sub/$1 break;
            rewrite ^/rw/chain/(.*)$ /rw/int/$1;
        }}
        location /err/ {{
            error_page 404 /errors/404.html;
            error_page 403 =200 /errors/open.html;
        }}
    }}
}}
"""

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /sub HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /sub/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /missing.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /index.jsp HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /index.jsp HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /index.jsp HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /h.jsp?echo=headers HTTP/1.1\r\nHost: Example.COM:81\r\nX-Forwarded-For: 1.2.3.4\r\n"
    b"User-Agent: probe\r\nAccept: */*\r\nKeep-Alive: 300\r\nConnection: keep-alive\r\n\r\n",
    b"GET /api/v1/x.html?echo=headers HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe\r\n\r\n",
    b"POST /e.jsp?echo=body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"GET /exact?a=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /%69ndex.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"DELETE /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nRange: bytes=2-6\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nRange: bytes=-3\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nRange: bytes=99-\r\n\r\n",
    b"HEAD /index.jsp HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /pics/cat.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /pics/none.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /spa/real.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /spa/deep/client/route HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /spa/docs/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /strict/gone HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /err/nothing HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /err/locked/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /old/index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /rw/perm/a?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /rw/tmp?y=2 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /rw/int/cat.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /rw/brk/index.html HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /rw/chain/cat.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
]


@pytest.fixture
def nginx_bin() -> str:
    path = shutil.which("nginx")
    if path is None:
        pytest.skip("needs nginx (Debian nginx-light)")
    return path


_COMPARED = ("content-type", "content-length", "content-range", "transfer-encoding",
             "connection", "accept-ranges", "x-app-page", "x-served-by", "x-always")


def _answers(port: int) -> list[tuple[int, bytes, str | None, tuple[str | None, ...]]]:
    c = Client(port)
    out = []
    for req in REQUESTS:
        r = c.one(req, head_only=req.startswith(b"HEAD "))
        # error pages are signed by the server's name and version: compare the rest
        body = re.sub(rb"<hr><center>[^<]*</center>", b"<hr><center>SIG</center>", r.body)
        # error pages differ in length by the signature
        framing = tuple(r.headers.get(h) for h in _COMPARED
                        if h != "content-length" or r.status < 300)
        out.append((r.status, body, r.headers.get("location"), framing))
    c.close()
    return out


@pytest.fixture
def prepared(stack: Stack) -> Iterator[tuple[Stack, str, dict[str, int]]]:
    html = stack.tmp / "html"
    (html / "sub").mkdir(parents=True)
    (html / "index.html").write_text("this is nginx1\n")
    (html / "sub" / "index.html").write_text("sub index\n")
    (stack.tmp / "pictures").mkdir()
    (stack.tmp / "pictures" / "cat.txt").write_text("a cat from the alias\n")
    for d in ("spa/docs", "strict", "errors", "err/locked"):
        (html / d).mkdir(parents=True)
    (html / "spa" / "app.html").write_text("single-page app\n")
    (html / "spa" / "real.txt").write_text("real file\n")
    (html / "spa" / "docs" / "index.html").write_text("spa docs\n")
    (html / "errors" / "404.html").write_text("custom 404\n")
    (html / "errors" / "open.html").write_text("all fine\n")
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (stack.tmp / d).mkdir()
    ports = {"app1": stack.app("1"), "app2": stack.app("2")}
    yield stack, CONF, ports


def test_same_config_same_answers_as_nginx(prepared: tuple[Stack, str, dict[str, int]],
                                            nginx_bin: str) -> None:
    stack, conf, ports = prepared
    ours_port = stack.proxy(conf.replace("{{who}}", "pylvs"), **ports)
    ours = _answers(ours_port)
    with _real_nginx(stack, nginx_bin, "real", conf.replace("{{who}}", "nginx"), **ports) as port:
        theirs = _answers(port)
    for req, a, b in zip(REQUESTS, ours, theirs, strict=True):
        a_loc = a[2].replace(str(ours_port), "PORT") if a[2] else None
        b_loc = b[2].replace(str(port), "PORT") if b[2] else None
        assert (a[0], a[1], a_loc, a[3]) == (b[0], b[1], b_loc, b[3]), req
    log_ours = (stack.tmp / "access-pylvs.log").read_text().splitlines()
    log_theirs = (stack.tmp / "access-nginx.log").read_text().splitlines()
    assert [_strip_time(x) for x in log_ours] == [_strip_time(x) for x in log_theirs]


def _strip_time(line: str) -> str:
    """Access log line without the timestamp and the error-page sizes (our pages are not nginx's)."""
    pre, _, rest = line.partition(" [")
    _, _, rest = rest.partition("] ")
    fields = rest.split('" ')
    return pre + " " + fields[0] + '" ' + fields[1].split(" ")[0]


@contextlib.contextmanager
def _real_nginx(stack: Stack, nginx_bin: str, name: str, conf: str, **fmt: Any) -> Iterator[int]:
    """Real nginx on ``conf`` (``{port}``, ``{tmp}`` and ``fmt`` filled) on a port of its own."""
    port = free_port()
    path = stack.tmp / f"nginx-{name}.conf"
    path.write_text(conf.format(tmp=stack.tmp, port=port, **fmt))
    with running([nginx_bin, "-g", "daemon off;", "-p", str(stack.tmp), "-c", str(path)], port):
        yield port


# -- the edges of HTTP parsing, over raw sockets: bare LF, URI and Host rules, methods, Expect,
# bodiless statuses, error_page on return, malformed requests -------------------------------------

EDGE_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-edge.pid;
error_log {tmp}/error-edge.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        location = /host {{ return 200 "host=$host uri=$uri ru=$request_uri args=$args\\n"; }}
        location /dots/ {{ return 200 "dots uri=$uri\\n"; }}
        location = /r204 {{ return 204; }}
        location = /r304 {{ return 304; }}
        location = /r302 {{ error_page 302 /b.txt; return 302 /elsewhere; }}
        location = /r301 {{ return 301 /moved; }}
        location = /r404 {{ error_page 404 =200 /b.txt; return 404; }}
        location = /r500 {{ error_page 500 /b.txt; return 500; }}
        location /lf/ {{ proxy_pass http://127.0.0.1:{lf}/; }}
        location /echo/ {{ proxy_pass http://127.0.0.1:{app}/; }}
        # auto_redirect: a proxied location's name without its slash is a 301 to the name
        location /app/ {{ proxy_pass http://127.0.0.1:{app}/; }}
        location = /ex/ {{ proxy_pass http://127.0.0.1:{app}/; }}
        location ~ ^/rx$ {{ return 200 "regex\\n"; }}
        location ^~ /rx/ {{ proxy_pass http://127.0.0.1:{app}/; }}
        location /both/ {{ proxy_pass http://127.0.0.1:{app}/; }}
        location = /both {{ return 200 "exact both\\n"; }}
        location /p/ {{ proxy_pass http://127.0.0.1:{app}/; }}
        location /p {{ return 200 "prefix p\\n"; }}
        location /outer/ {{ location /outer/in/ {{ proxy_pass http://127.0.0.1:{app}/; }} }}
        location /files/ {{ }}
        location = /rw {{ rewrite ^ /app last; }}
    }}
}}
"""

_H = b"Host: localhost\r\n"
EDGE_REQUESTS: list[bytes] = [
    # bare LF line ends, in the request line and in headers; an upstream answering with them
    b"GET /host HTTP/1.1\nHost: localhost\n\n",
    b"GET /host HTTP/1.1\r\nHost: localhost\n\r\n",
    b"GET /lf/x HTTP/1.1\nHost: localhost\n\n",
    # URI normalisation for matching, $request_uri raw, fragments, bad escapes
    b"GET /dots/a/../b/./c//d HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /../x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /dots/%zz HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /dots/%4 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /dots/a%2Fb%2e%2e HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /host#frag HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /host?x=1#frag HTTP/1.1\r\n" + _H + b"\r\n",
    # Host: from an absolute URI first, lower-cased, trailing dot removed, invalid ones refused
    b"GET http://Abs.Example./host?q=1 HTTP/1.0\r\nHost: other\r\n\r\n",
    b"GET /host HTTP/1.1\r\nHost: Example.COM.:81\r\n\r\n",
    b"GET /host HTTP/1.1\r\nHost: \r\n\r\n",
    b"GET /host HTTP/1.1\r\nHost: a..b\r\n\r\n",
    b"GET /host HTTP/1.0\r\nHost: \r\n\r\n",
    b"GET /host HTTP/1.1\r\nHost: localhost\r\nHost: other\r\n\r\n",
    # methods, Expect, statuses without a body, error_page on return's codes
    b"TRACE /host HTTP/1.1\r\n" + _H + b"\r\n",
    b"POST /host HTTP/1.1\r\n" + _H + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    b"GET /r204 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /r304 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /r302 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /r301 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /r404 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /r500 HTTP/1.1\r\n" + _H + b"\r\n",
    b"HEAD /r500 HTTP/1.1\r\n" + _H + b"\r\n",
    # auto_redirect (proxied "/app/": "/app" is a 301 to it), and where it does not apply
    b"GET /app HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /app?x=1&y HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /ex HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /rx HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /both HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /p HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /outer/in HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /files HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /x/../app HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /rw?a=b HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /APP HTTP/1.1\r\n" + _H + b"\r\n",
    # methods llhttp does not know and nginx accepts (proxied, a file's 405), and ones it refuses
    b"FOO /host HTTP/1.1\r\n" + _H + b"\r\n",
    b"PURGE_X-Y /echo/m HTTP/1.1\r\n" + _H + b"Content-Length: 3\r\n\r\nabc",
    b"GETX /b.txt HTTP/1.1\r\n" + _H + b"\r\n",
    b"GETX /app HTTP/1.1\r\n" + _H + b"\r\n",
    b"foo /host HTTP/1.1\r\n" + _H + b"\r\n",
    b"F0O /host HTTP/1.1\r\n" + _H + b"\r\n",
    b"PURG",  # a method's first letters: nginx waits for the rest
    b"GET /host HTTP/1.1\r\n" + _H + b"\r\nPURGE_X-Y /echo/m HTTP/1.1\r\n" + _H + b"\r\n",
    # ... and behind requests with bodies, in the same read
    b"POST /echo/a HTTP/1.1\r\n" + _H + b"Content-Length: 5\r\n\r\nhelloPURGE_X-Y /echo/m HTTP/1.1\r\n"
    + _H + b"\r\n",
    b"POST /echo/a HTTP/1.1\r\n" + _H + b"content-length:2\r\n\r\nhiGET /host HTTP/1.1\r\n" + _H
    + b"\r\nFOO /host HTTP/1.1\r\n" + _H + b"Content-Length: 1\r\n\r\nzFOO /b.txt HTTP/1.1\r\n"
    + _H + b"\r\n",
    b"POST /echo/a HTTP/1.1\r\n" + _H + b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    b"PURGE_X-Y /echo/m HTTP/1.1\r\n" + _H + b"\r\n",
    # malformed requests
    b"G@T /host HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /host HTTP/2.0\r\n" + _H + b"\r\n",
    b"GET /host HTTP/1.2\r\n" + _H + b"\r\n",
    b"GET /host XTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /host HTTP/1.1\r\nBad Header: x\r\n" + _H + b"\r\n",
    b"GET /host HTTP/1.1\r\n" + _H + b"X: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /host HTTP/1.1\r\n" + _H + b"Content-Length: abc\r\n\r\n",
    b"GET /host HTTP/1.1\r\n" + _H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"GET /host HTTP/1.1\r\n" + _H + b"Transfer-Encoding: gzip\r\n\r\n",
]


def _raw_answer(port: int, data: bytes) -> tuple[list[str], bytes, bool]:
    """What one connection answers to ``data``: its head lines (Date and Server dropped, the rest
    sorted: their order differs), its bodies with the signature masked, and whether it closed."""
    import socket

    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(data)
    s.settimeout(0.5)
    raw, closed = b"", False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            got = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not got:
            closed = True
            break
        raw += got
    s.close()
    heads: list[str] = []
    bodies = b""
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            name = line.partition(":")[0].lower()
            if name == "content-length":
                length = int(line.partition(":")[2])
            if name in ("date", "server"):
                continue
            if name == "content-length" and b"<hr><center>" in rest[:length]:
                continue  # our error pages are signed "pylvs", theirs "nginx/1.22.1"
            kept.append(line.replace(str(port), "PORT"))
        heads += [kept[0], *sorted(kept[1:])]
        if not sep:
            break
        body_len = 0 if lines[0].split(" ")[1] in ("100", "204", "304") or data.startswith(
            b"HEAD") else length
        bodies += re.sub(rb"<hr><center>[^<]*</center>", b"<hr><center>SIG</center>",
                         rest[:body_len])
        raw = rest[body_len:]
    return heads, bodies, closed


async def _bare_lf_upstream(reader: Any, writer: Any) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 8\n\nbare lf\n")
    await writer.drain()
    writer.close()


def test_http_edges_answered_as_nginx(prepared: tuple[Stack, str, dict[str, int]],
                                      nginx_bin: str) -> None:
    stack, _, ports = prepared
    (stack.tmp / "html" / "b.txt").write_text("b file\n")
    fmt = {"lf": stack.upstream(_bare_lf_upstream), "app": ports["app1"]}
    _compare(stack, nginx_bin, EDGE_CONF, "edge", EDGE_REQUESTS, **fmt)


# (the edge file's main and http settings, its own pid and log)
ROOT_VARS_CONF = EDGE_CONF.partition("    server {{")[0].replace("-edge", "-rootvars") + """\
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/sites/$host;
        location = /dr {{ return 200 "dr=$document_root\\n"; }}
        location ~ ^/al/([a-z.]+)/(.+)$ {{ alias {tmp}/sites/$1/$2; }}
        location = /al-dr {{ alias {tmp}/sites; return 200 "dr=$document_root\\n"; }}
        location /tf/ {{ try_files $uri /index.html =404; }}
        location /deeper/ {{ root {tmp}/sites/$host/$host; }}
    }}
}}
"""


def _site_request(host: str, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def test_variables_in_root_answered_as_nginx(prepared: tuple[Stack, str, dict[str, int]],
                                             nginx_bin: str) -> None:
    """``root /srv/$host``: the path is made per request, for files, index files, try_files
    and $document_root, as nginx makes it."""
    stack, _, _ = prepared
    sites = stack.tmp / "sites"
    for host, name, text in (("a.test", "index.html", "site a\n"), ("b.test", "x.txt", "b x\n"),
                             ("a.test", "a.test/deeper/d.txt", "deeper a\n")):
        (sites / host / name).parent.mkdir(parents=True, exist_ok=True)
        (sites / host / name).write_text(text)
    requests = [_site_request(h, p) for h, p in (
        ("a.test", "/index.html"), ("a.test", "/"), ("a.test", "/missing"), ("a.test", "/dr"),
        ("b.test", "/x.txt"), ("b.test", "/index.html"), ("B.Test.", "/x.txt"),
        ("c.test", "/x.txt"), ("c.test", "/"), ("localhost", "/al/b.test/x.txt"),
        ("a.test", "/al-dr"), ("a.test", "/tf/none"), ("b.test", "/tf/none"),
        ("a.test", "/deeper/d.txt"), ("b.test", "/deeper/d.txt"))]
    _compare(stack, nginx_bin, ROOT_VARS_CONF, "rootvars", requests)


# -- `-t` on files nginx refuses: the same [emerg] words and FILE:LINE, never a traceback ------

_SERVER = "events {{}}\nhttp {{\n{http}\n server {{\n  listen 127.0.0.1:8080;\n{server}\n }}\n}}\n"
_LONG = "a" * 300
REFUSED_FILES = {
    "server_name_dot": _SERVER.format(http="", server="  server_name .;"),
    "server_name_star": _SERVER.format(http="", server="  server_name *.;"),
    "listen_a..b": _SERVER.format(http="", server="  listen a..b:8081;"),
    "listen_long": _SERVER.format(http="", server=f"  listen {_LONG}:8081;"),
    "upstream_a..b": _SERVER.format(http=" upstream u { server a..b:80; }", server=""),
    "upstream_long": _SERVER.format(http=f" upstream u {{ server {_LONG}:80; }}", server=""),
    "proxy_pass_a..b": _SERVER.format(http="", server="  location / { proxy_pass http://a..b; }"),
    "deep_unknown": "events {}\n" + "a {\n" * 3000 + "}\n" * 3000,
    "keepalive_huge": _SERVER.format(
        http=" upstream u { server 127.0.0.1:80; keepalive 999999999999999999999999; }",
        server=""),
    "size_huge": _SERVER.format(http="", server="  client_max_body_size 99999999999999999999g;"),
    "buffers_zero": _SERVER.format(http="", server="  large_client_header_buffers 0 0;"),
    "time_huge": _SERVER.format(http="", server="  keepalive_timeout 99999999999999999999d;"),
    "weight_huge": _SERVER.format(
        http=" upstream u { server 127.0.0.1:80 weight=99999999999999999999; }", server=""),
    "tries_word": _SERVER.format(http="", server="  proxy_next_upstream_tries x;"),
    "requests_huge": _SERVER.format(http="", server="  keepalive_requests 99999999999999999999;"),
    "workers_huge": "worker_processes 99999999999999999999999;\nevents {}\nhttp {}\n",
    # nesting, named locations, the rewrite module's directives and if's grammar
    "nested_outside": _SERVER.format(http="", server="  location /a { location /b {} }"),
    "nested_in_exact": _SERVER.format(http="", server="  location = /a { location /a/b {} }"),
    "nested_in_regex": _SERVER.format(http="", server="  location ~ ^/x { location /y {} }"),
    "named_nested": _SERVER.format(http="", server="  location /a { location @n {} }"),
    "in_named": _SERVER.format(http="", server="  location @n { location /a {} }"),
    "named_proxy_uri": _SERVER.format(
        http="", server="  location @x { proxy_pass http://127.0.0.1/x; }"),
    "if_proxy_uri": _SERVER.format(
        http="", server="  location / { if ($host) { proxy_pass http://127.0.0.1/x; } }"),
    "unknown_variable": _SERVER.format(http="", server="  location /a { return 200 $foo; }"),
    "unknown_in_if": _SERVER.format(http="", server="  if ($nope) { return 200; }"),
    "if_root_in_server": _SERVER.format(http="", server="  if ($host) { root /x; }"),
    "if_alias": _SERVER.format(http="", server="  location / { if ($host) { alias /y; } }"),
    "if_try_files": _SERVER.format(
        http="", server="  location / { if ($host) { try_files $uri =404; } }"),
    "if_in_if": _SERVER.format(http="", server="  location / { if ($host) { if ($host) {} } }"),
    "if_location": _SERVER.format(http="", server="  location / { if ($host) { location /x {} } }"),
    "if_no_parens": _SERVER.format(http="", server="  location / { if $host { } }"),
    "if_open": _SERVER.format(http="", server="  location / { if ($host { } }"),
    "if_empty_right": _SERVER.format(http="", server="  location / { if ($host = ) { } }"),
    "if_bad_regex": _SERVER.format(http="", server='  location / { if ($host ~ "(" ) { } }'),
    "regex_unmatched": _SERVER.format(http="", server="  location ~ a) {}"),
    "regex_repeat": _SERVER.format(http="", server="  location ~ *a {}"),
    "if_double_equals": _SERVER.format(http="", server="  location / { if ($host == a) { } }"),
    "if_bad_file_op": _SERVER.format(http="", server="  location / { if (-q /x) { } }"),
    "if_extra": _SERVER.format(http="", server="  location / { if ($host a b) { } }"),
    "if_literal": _SERVER.format(http="", server="  location / { if (a) { } }"),
    "set_name": _SERVER.format(http="", server="  location / { set a b; }"),
    "set_builtin": _SERVER.format(http="", server="  location / { set $uri b; }"),
    "set_one_arg": _SERVER.format(http="", server="  set $a;"),
    "break_arg": _SERVER.format(http="", server="  location / { break 1; }"),
    "pool_small": _SERVER.format(http="", server="  connection_pool_size 100;"),
    "pool_align": _SERVER.format(http="", server="  connection_pool_size 120;"),
    "pool_word": _SERVER.format(http="", server="  connection_pool_size x;"),
    "pool_in_location": _SERVER.format(
        http="", server="  location / { connection_pool_size 512; }"),
    "keepalive_time_word": _SERVER.format(http="", server="  keepalive_time x;"),
    "next_timeout_word": _SERVER.format(http="", server="  proxy_next_upstream_timeout x;"),
    "intercept_word": _SERVER.format(http="", server="  proxy_intercept_errors x;"),
    "absolute_redirect_word": _SERVER.format(http="", server="  absolute_redirect x;"),
    "port_in_redirect_twice": _SERVER.format(
        http="port_in_redirect off;", server="  location / { port_in_redirect on; "
                                             "port_in_redirect off; }"),
    "server_name_in_redirect_main": "server_name_in_redirect on;\n" + _SERVER.format(
        http="", server=""),
    "absolute_redirect_args": _SERVER.format(http="", server="  absolute_redirect on off;"),
    "satisfy_word": _SERVER.format(http="", server="  satisfy some;"),
    "auth_basic_args": _SERVER.format(http="", server="  auth_basic a b;"),
    "auth_basic_twice": _SERVER.format(http="auth_basic a;", server="  location / { "
                                       "auth_basic_user_file /x; auth_basic_user_file /y; }"),
    "auth_basic_main": "auth_basic a;\n" + _SERVER.format(http="", server=""),
    "gzip_static_word": _SERVER.format(http="", server="  gzip_static yes;"),
    "autoindex_format_word": _SERVER.format(http="", server="  autoindex_format yaml;"),
    "autoindex_twice": _SERVER.format(http="", server="  autoindex on; autoindex off;"),
}


def _emerg(stderr: str) -> str:
    """The [emerg] message of a -t run, without the prefix, time and pid nginx put before it."""
    line = next(x for x in stderr.splitlines() if "[emerg]" in x)
    return re.sub(r"^.*\[emerg\] (\d+#\d+: )?", "", line)


def t_both(tmp: Path, nginx_bin: str, text: str) -> tuple[subprocess.CompletedProcess[str],
                                                          subprocess.CompletedProcess[str]]:
    """``text`` as tmp/nginx.conf, checked with ``-t`` by real nginx and by pylvs http: their
    two runs (nginx's pid and error log kept in ``tmp``)."""
    path = tmp / "nginx.conf"
    path.write_text(text)
    theirs = subprocess.run([nginx_bin, "-t", "-p", str(tmp), "-c", str(path), "-g",
                             f"pid {tmp}/n.pid; error_log {tmp}/e.log;"],
                            capture_output=True, text=True, timeout=60)
    ours = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "http", "-t", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    return theirs, ours


@pytest.mark.parametrize("name", sorted(REFUSED_FILES))
def test_t_refuses_as_nginx(tmp_path: Any, nginx_bin: str, name: str) -> None:
    theirs, ours = t_both(tmp_path, nginx_bin, REFUSED_FILES[name])
    assert theirs.returncode == 1 and ours.returncode == 1, (theirs.stderr, ours.stderr)
    assert "Traceback" not in ours.stderr
    assert _emerg(ours.stderr) == _emerg(theirs.stderr)


def test_t_bounds_includes_and_nesting_without_traceback(tmp_path: Any) -> None:
    """Files real nginx 1.22 cannot check (an include loop crashes it) are refused with a
    FILE:LINE line; thousands of nested blocks are read without exhausting the stack, and
    locations nest at most 100 deep (nginx has no bound)."""

    def t(text: str, **files: str) -> str:
        for fname, body in files.items():
            (tmp_path / fname).write_text(body)
        path = tmp_path / "nginx.conf"
        path.write_text(text)
        r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "http", "-t", "-c", str(path)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        return _emerg(r.stderr)

    conf = str(tmp_path / "nginx.conf")
    assert t("include nginx.conf;\nevents {}\nhttp {}\n") == \
        f'include loop: "{conf}" is already being read in {conf}:1'
    loop = str(tmp_path / "b.conf")
    assert t("events {}\nhttp {\n include a.conf;\n}\n", **{"a.conf": "include b.conf;\n",
                                                           "b.conf": "\ninclude a.conf;\n"}) == \
        f'include loop: "{tmp_path / "a.conf"}" is already being read in {loop}:2'
    chain = {f"c{i}.conf": f"include c{i + 1}.conf;\n" for i in range(40)}
    assert t("events {}\nhttp {\n include c0.conf;\n}\n", **chain).startswith(
        '"include" nested deeper than 32 files in ')
    deep = ("events {}\nhttp {\n server {\n  listen 127.0.0.1:8080;\n" + "location /a {\n" * 3000
            + "}\n" * 3000 + " }\n}\n")
    assert t(deep) == f"locations nested deeper than 100 levels in {conf}:105"


# -- the rewrite module and location nesting (issue 17, item 2): nested locations with
# inheritance, set/if/break/return, named locations, alias with captures; same file, same bytes --

SCRIPT_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-script.pid;
error_log {tmp}/error-script.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        set $who "server";
        if ($http_x_block) {{ return 429 "blocked $http_x_block\\n"; }}
        if ($arg_srv ~* ^(?<first>[a-z])) {{ set $who "srv-$first"; }}
        location = /who {{ return 200 "who=$who\\n"; }}
        location /n/ {{
            add_header X-Level outer;
            location /n/deep/ {{ return 200 "deep $uri\\n"; }}
            location ~ \\.txt$ {{ return 200 "txt in n $uri\\n"; }}
            location = /n/exact {{ return 200 "nested exact\\n"; }}
            return 200 "outer $uri\\n";
        }}
        location ^~ /m/ {{
            location ~ \\.txt$ {{ return 200 "txt in m\\n"; }}
            return 200 "m $uri\\n";
        }}
        location ~ \\.txt$ {{ return 200 "top txt $uri\\n"; }}
        location ~ ^/r/(\\w+) {{
            location ~ /r/a(\\w+) {{ return 200 "inner $1\\n"; }}
            return 200 "regex $1\\n";
        }}
        location /inh/ {{
            add_header X-Inh yes;
            error_page 404 /errors/404.html;
            location /inh/sub/ {{ }}
        }}
        location /if/ {{
            set $v "none";
            if ($arg_a = 1) {{ set $v "one"; }}
            if ($arg_a ~ ^(\\d)(\\d)$) {{ set $v "two $2$1"; }}
            if ($arg_a != 1) {{ add_header X-Not-One yes; }}
            if ($http_x_flag) {{ return 403; }}
            return 200 "v=$v\\n";
        }}
        location /ft/ {{
            if (!-e $document_root$uri) {{ return 404 "none $uri\\n"; }}
            if (-d $document_root$uri) {{ return 200 "dir $uri\\n"; }}
            if (-f $document_root$uri) {{ add_header X-File yes; }}
        }}
        location /ifconf/ {{
            if ($arg_alt) {{ root {tmp}/alt; add_header X-Alt "$arg_alt"; }}
        }}
        location /brk/ {{
            rewrite ^/brk/(.*)$ /brk/$1.html;
            break;
            return 200 "never\\n";
        }}
        location /rwif/ {{
            if ($arg_go) {{ rewrite ^ /who last; }}
            return 200 "stayed\\n";
        }}
        location /tf/ {{ try_files $uri @fallback; }}
        location @fallback {{ return 200 "named for $uri $args\\n"; }}
        location /ep/ {{ error_page 404 = @nf; }}
        location /ep2/ {{ error_page 404 @nf; }}
        location @nf {{ return 200 "nf $uri $request_method\\n"; }}
        location ~ ^/ar/(.+)\\.img$ {{ alias {tmp}/pictures/$1.txt; }}
        location ~ ^/an/(?<pic>.+)$ {{ alias {tmp}/pictures/$pic; }}
    }}
}}
"""

SCRIPT_REQUESTS = [
    b"GET /who HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /who?srv=Zed HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /who HTTP/1.1\r\n" + _H + b"X-Block: yes\r\n\r\n",
    b"GET /n/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /n/a.txt HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /n/deep/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /n/deep/a.txt HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /n/exact HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /m/a.txt HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /m/a HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /z.txt HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /r/abc HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /r/xyz HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /inh/sub/f.html HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /inh/sub/missing HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /if/ HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /if/?a=1 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /if/?a=47 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /if/?a=1 HTTP/1.1\r\n" + _H + b"X-Flag: 1\r\n\r\n",
    b"GET /if/?a=1 HTTP/1.1\r\n" + _H + b"X-Flag: 0\r\n\r\n",
    b"GET /ft/none HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /ft/dir HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /ft/f.html HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /ifconf/f.html HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /ifconf/f.html?alt=1 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /brk/f HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /rwif/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /rwif/x?go=1 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /tf/f.html HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /tf/nothing?q=1 HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /ep/nothing HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /ep2/nothing HTTP/1.1\r\n" + _H + b"\r\n",
    b"POST /ep/nothing HTTP/1.1\r\n" + _H + b"Content-Length: 0\r\n\r\n",
    b"GET /ar/cat.img HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /an/cat.txt HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /an/dog.txt HTTP/1.1\r\n" + _H + b"\r\n",
]


def _compare(stack: Stack, nginx_bin: str, conf: str, name: str, requests: list[bytes],
             **fmt: Any) -> list[tuple[list[str], bytes, bool]]:
    """Answers of pylvs http and real nginx to ``requests``, each on its own connection, found
    equal; pylvs' (``_raw_answer``'s form), for what a test checks beyond that."""
    ours_port = stack.proxy(conf, **fmt)
    ours = [_raw_answer(ours_port, r) for r in requests]
    with _real_nginx(stack, nginx_bin, name, conf, **fmt) as port:
        theirs = [_raw_answer(port, r) for r in requests]
    wrong = [(req[:80], a, b) for req, a, b in zip(requests, ours, theirs, strict=True)
             if a != b]
    assert not wrong, "\n".join(f"{r!r}\n  pylvs: {a}\n  nginx: {b}" for r, a, b in wrong)
    return ours


def test_script_and_nesting_answered_as_nginx(prepared: tuple[Stack, str, dict[str, int]],
                                              nginx_bin: str) -> None:
    stack, _, _ = prepared
    html = stack.tmp / "html"
    for d in ("inh/sub", "ft/dir", "ifconf", "brk", "tf"):
        (html / d).mkdir(parents=True)
    for f in ("inh/sub/f.html", "ft/f.html", "ifconf/f.html", "brk/f.html", "tf/f.html"):
        (html / f).write_text(f"file {f}\n")
    (stack.tmp / "alt" / "ifconf").mkdir(parents=True)
    (stack.tmp / "alt" / "ifconf" / "f.html").write_text("from the alt root\n")
    _compare(stack, nginx_bin, SCRIPT_CONF, "script", SCRIPT_REQUESTS)


# -- proxying by variables, proxy_next_upstream, proxy_intercept_errors, keepalive_time and
# connection_pool_size, the upstream timing variables and server_name captures (items 5-8) ----

PROXY_VARS_CONF = """
user root;
worker_processes 1;
pid {tmp}/nginx-pv.pid;
error_log {tmp}/error-pv.log;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    connection_pool_size 512;
    keepalive_time 1h;
    log_format timing '$status u=$upstream_status c=$upstream_connect_time '
                      'h=$upstream_header_time r=$upstream_response_time t=$request_time '
                      'ct=$connection_time n=$name';
    access_log {tmp}/timing-{port}.log timing;
    upstream tomcat {{ server 127.0.0.1:{app}; }}
    upstream next1 {{ server 127.0.0.1:{bad}; server 127.0.0.1:{app}; }}
    upstream next2 {{ server 127.0.0.1:{bad}; server 127.0.0.1:{app}; }}
    upstream next3 {{ server 127.0.0.1:{bad}; server 127.0.0.1:{app}; }}
    upstream icpt1 {{ server 127.0.0.1:{bad}; }}
    upstream icpt2 {{ server 127.0.0.1:{bad}; }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost "~^(?<name>[a-z]+)\\.example\\.com$";
        location = /who {{ return 200 "name=$name host=$host\\n"; }}
        location /v/ {{ proxy_pass http://127.0.0.1:{app}$request_uri; }}
        location /fixed/ {{ proxy_pass http://127.0.0.1:{app}/app/$arg_p?echo=headers; }}
        location /pool/ {{ set $pool tomcat; proxy_pass http://$pool; }}
        location /name/ {{ set $h localhost; proxy_pass http://$h:{app}; }}
        location /next/ {{ proxy_pass http://next1; proxy_next_upstream error http_500; }}
        location /off/ {{ proxy_pass http://next2; proxy_next_upstream off; }}
        location /tries/ {{
            proxy_pass http://next3;
            proxy_next_upstream http_500;
            proxy_next_upstream_tries 1;
        }}
        location /icpt/ {{
            proxy_pass http://icpt1;
            proxy_intercept_errors on;
            error_page 500 /errors/404.html;
        }}
        location /pass/ {{
            proxy_pass http://icpt2;
            proxy_intercept_errors on;
            error_page 404 /errors/404.html;
        }}
        location = /kt {{ keepalive_time 0; return 200 "kt\n"; }}
    }}
}}
"""

PROXY_VARS_REQUESTS = [
    b"GET /who HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /who HTTP/1.1\r\nHost: Shop.Example.com\r\n\r\n",
    b"GET /v/a?echo=headers HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /fixed/x?p=q HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /pool/p?echo=headers HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /name/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /next/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /off/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /tries/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /icpt/x HTTP/1.1\r\n" + _H + b"\r\n",
    b"GET /pass/x HTTP/1.1\r\n" + _H + b"\r\n",
]


async def _failing_upstream(reader: Any, writer: Any) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: 8\r\nConnection: close\r\n\r\nfailing\n")
    await writer.drain()
    writer.close()


def _timing(path: Any) -> list[str]:
    """Access log lines with durations and addresses masked: their form must be nginx's."""
    lines = path.read_text().splitlines()
    return [re.sub(r"\d+\.\d{3}", "T", line) for line in lines]


def test_proxy_variables_next_upstream_and_intercept_as_nginx(
        prepared: tuple[Stack, str, dict[str, int]], nginx_bin: str) -> None:
    stack, _, ports = prepared
    fmt = {"app": ports["app1"], "bad": stack.upstream(_failing_upstream)}
    _compare(stack, nginx_bin, PROXY_VARS_CONF, "pv", PROXY_VARS_REQUESTS, **fmt)
    logs = sorted(stack.tmp.glob("timing-*.log"))
    assert len(logs) == 2
    ours, theirs = (_timing(p) for p in (logs if str(stack.port) in logs[0].name
                                         else logs[::-1]))
    assert ours == theirs
    # keepalive_time 0: nginx keeps the connection open within its first millisecond only; a
    # later request's answer closes it. A loaded machine can take longer than that millisecond
    # to answer a connection's first request (then it closes too, as nginx's would): one of
    # twenty fresh connections must have been answered within it.
    for _attempt in range(20):
        c = Client(stack.port)
        if c.one(get("/kt")).headers["connection"] == "keep-alive":
            break
        c.close()
    else:
        raise AssertionError("no first answer within keepalive_time 0 kept the connection")
    time.sleep(0.05)
    r = c.one(get("/kt"))
    assert r.headers["connection"] == "close" and c.wait_closed()
    c.close()
