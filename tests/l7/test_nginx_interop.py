"""The same nginx.conf under real nginx and under pylvs http answers the same way: statuses,
bodies, the request head the app server receives, and the 2:1 order of the upstream."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.l7.conftest import Client, Stack, free_port

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
    port = free_port()
    path = stack.tmp / "nginx-real.conf"
    path.write_text(conf.replace("{{who}}", "nginx").format(tmp=stack.tmp, port=port, **ports))
    proc = subprocess.Popen([nginx_bin, "-g", "daemon off;", "-p", str(stack.tmp), "-c", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc)
        theirs = _answers(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
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


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {proc.stderr.read() if proc.stderr else ''!r}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nginx did not listen")
