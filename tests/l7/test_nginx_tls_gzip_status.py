"""TLS, gzip and stub_status: the same nginx.conf under real nginx 1.22 and under ``pylvs http``
(both as real processes), compared over curl, raw sockets and Python's ssl client; plus
``pylvs http --metrics-address`` and Debian's stock nginx.conf under ``-t``."""

from __future__ import annotations

import gzip as gz
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.l7.conftest import free_port, read_to_close
from tests.l7.proc import running, wait_port

PYLVS = [sys.executable, "-m", "pylvs.cli.main", "http"]

CONF = """
user root;
worker_processes {workers};
pid {tmp}/{who}.pid;
error_log {tmp}/error-{who}.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ text/html html; text/plain txt; application/json json;
             application/octet-stream bin; }}
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:SSL:1m;
    ssl_session_timeout 10m;
    proxy_ssl_session_reuse off;
    gzip on;
    gzip_types text/plain application/json;
    gzip_min_length 100;
    gzip_vary on;
    gzip_disable msie6;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name a.test;
        ssl_certificate {tmp}/a.crt;
        ssl_certificate_key {tmp}/a.key;
        root {tmp}/html;
        location = /who {{ return 200 "server a $scheme $https $host\\n"; }}
        location /up/ {{ proxy_pass https://127.0.0.1:{up}/; }}
        location /upsni/ {{ proxy_pass https://127.0.0.1:{up}/; proxy_ssl_server_name on;
                           proxy_ssl_name b.test; }}
        location = /redir {{ return 302 /who; }}
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name b.test;
        ssl_certificate {tmp}/b.crt;
        ssl_certificate_key {tmp}/b.key;
        location = /who {{ return 200 "server b $scheme $https $host\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{up} ssl;
        server_name up.test;
        ssl_certificate {tmp}/a.crt;
        ssl_certificate_key {tmp}/a.key;
        root {tmp}/html;
        location = /who {{ return 200 "upstream over $scheme sni=$ssl_server_name\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{plain};
        server_name localhost;
        root {tmp}/html;
        location = /status {{ stub_status; }}
        location /app/ {{ proxy_pass http://127.0.0.1:{plain}/;
                         proxy_set_header Accept-Encoding ""; }}
        location /nogzip/ {{ gzip off; }}
    }}
}}
"""


def _cert(tmp: Path, name: str) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-keyout", str(tmp / f"{name[0]}.key"),
                    "-out", str(tmp / f"{name[0]}.crt")], check=True, capture_output=True)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("nginx") is None or shutil.which("openssl") is None:
        pytest.skip("needs nginx and openssl (Debian packages)")
    tmp_path.chmod(0o755)
    _cert(tmp_path, "a.test")
    _cert(tmp_path, "b.test")
    html = tmp_path / "html"
    (html / "nogzip").mkdir(parents=True)
    (html / "big.html").write_text("<p>hello gzip</p>\n" * 200)
    (html / "small.html").write_text("<p>tiny</p>\n")
    (html / "big.txt").write_text("plain text line\n" * 100)
    (html / "big.json").write_text('{"k": "' + "v" * 500 + '"}\n')
    (html / "big.bin").write_bytes(b"\x00binary" * 100)
    (html / "nogzip" / "big.html").write_text("<p>never</p>\n" * 100)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / d).mkdir()
    yield tmp_path


def _conf(tmp: Path, who: str, workers: int = 1) -> tuple[Path, dict[str, int]]:
    ports = {"port": free_port(), "up": free_port(), "plain": free_port()}
    text = CONF.format(tmp=tmp, who=who, workers=workers, **ports)
    path = tmp / f"{who}.conf"
    path.write_text(text)
    return path, ports


def _both(tmp: Path, check: object, workers: int = 1) -> tuple[object, object]:
    """Run ``check(ports)`` against nginx, then against pylvs http, with the same file."""
    out = []
    for who in ("nginx", "pylvs"):
        path, ports = _conf(tmp, who, workers)
        cmd = ([shutil.which("nginx") or "nginx", "-g", "daemon off;", "-p", str(tmp), "-c",
                str(path)] if who == "nginx" else [*PYLVS, "-c", str(path)])
        with running(cmd, ports["plain"]):
            out.append(check(ports))  # type: ignore[operator]
    return out[0], out[1]


# -- TLS ------------------------------------------------------------------------------------------


def _curl(port: int, name: str, path: str) -> tuple[str, dict[str, str], str]:
    r = subprocess.run(["curl", "-sk", "-D", "-", "--resolve", f"{name}:{port}:127.0.0.1",
                        f"https://{name}:{port}{path}"], capture_output=True, timeout=20)
    head, _, body = r.stdout.decode("latin-1").partition("\r\n\r\n")
    lines = head.split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    for h in ("date", "server", "etag", "last-modified"):
        hdrs.pop(h, None)
    if "<hr><center>" in body:  # error pages are signed by the server's name and version
        body = re.sub(r"<hr><center>[^<]*</center>", "<hr><center>SIG</center>", body)
        hdrs.pop("content-length", None)
    return lines[0], hdrs, body


def _peer_cn(port: int, name: str | None) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), 5) as s, \
            ctx.wrap_socket(s, server_hostname=name) as t:
        der = t.getpeercert(binary_form=True)
        version = t.version()
    pem = ssl.DER_cert_to_PEM_cert(der)
    subj = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem,
                          capture_output=True, text=True).stdout
    return f"{subj.strip()} {version}"


def test_tls_sni_and_https_upstream_as_nginx(site: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl")

    def check(p: dict[str, int]) -> list[object]:
        port = p["port"]
        return [
            _curl(port, "a.test", "/who"), _curl(port, "b.test", "/who"),
            _curl(port, "c.test", "/who"),  # no such name: the default (first) server
            _curl(port, "a.test", "/redir"), _curl(port, "a.test", "/big.html"),
            _curl(port, "a.test", "/up/big.txt"),
            _peer_cn(port, "a.test"), _peer_cn(port, "b.test"), _peer_cn(port, None),
        ]

    theirs, ours = _both(site, check)
    assert isinstance(theirs, list) and isinstance(ours, list)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if isinstance(a, tuple):  # the redirect's port differs between the runs
            a = (a[0], {k: re.sub(r":\d+/", ":PORT/", v) for k, v in a[1].items()}, a[2])
            b = (b[0], {k: re.sub(r":\d+/", ":PORT/", v) for k, v in b[1].items()}, b[2])
        assert a == b, (i, a, b)
    assert ours[1][2] == "server b https on b.test\n"  # type: ignore[index]


def test_tls_upstream_sni_sent_when_asked(site: Path) -> None:
    """``proxy_ssl_server_name on`` sends proxy_ssl_name in SNI; by default none is sent."""
    def check(p: dict[str, int]) -> list[str]:
        return [_curl(p["port"], "a.test", "/up/who")[2], _curl(p["port"], "a.test",
                                                             "/upsni/who")[2]]

    theirs, ours = _both(site, check)
    assert ours == theirs == ["upstream over https sni=\n", "upstream over https sni=b.test\n"]


def test_tls_config_errors_as_nginx(tmp_path: Path) -> None:
    text = ("events {}\nhttp {\n server {\n  listen 127.0.0.1:8443 ssl;\n"
            "  ssl_certificate_key /nonexistent.key;\n }\n}\n")
    path = tmp_path / "n.conf"
    path.write_text(text)
    r = subprocess.run([*PYLVS, "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert 'no "ssl_certificate" is defined for the "listen ... ssl" directive in ' \
        f'{path}:3' in r.stderr


# -- gzip ----------------------------------------------------------------------------------------

_AE = b"Accept-Encoding: gzip, deflate\r\n"
GZIP_REQUESTS = [
    b"GET /big.html HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /big.html HTTP/1.1\r\nHost: l\r\n",
    b"GET /small.html HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /big.txt HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /big.json HTTP/1.1\r\nHost: l\r\nAccept-Encoding: br;q=1, gzip;q=0.5\r\n",
    b"GET /big.bin HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"HEAD /big.html HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /big.html HTTP/1.0\r\nHost: l\r\n" + _AE,
    b"GET /big.html HTTP/1.1\r\nHost: l\r\nUser-Agent: Mozilla/4.0 (compatible; MSIE 6.0; "
    b"Windows NT 5.0)\r\n" + _AE,
    b"GET /big.html HTTP/1.1\r\nHost: l\r\nAccept-Encoding: gzip;q=0\r\n",
    b"GET /big.html HTTP/1.1\r\nHost: l\r\nAccept-Encoding: x-gzip\r\n",
    b"GET /big.html HTTP/1.1\r\nHost: l\r\nAccept-Encoding: deflate,gzip\r\n",
    b"GET /big.html HTTP/1.1\r\nHost: l\r\nRange: bytes=0-9\r\n" + _AE,
    b"GET /big.html HTTP/1.1\r\nHost: l\r\nVia: 1.1 cache\r\n" + _AE,
    b"GET /missing.html HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /nogzip/big.html HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /app/big.txt HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /app/big.html HTTP/1.1\r\nHost: l\r\n" + _AE,
    b"GET /app/small.html HTTP/1.1\r\nHost: l\r\n" + _AE,
]


def _raw(port: int, data: bytes) -> tuple[str, dict[str, str], bytes]:
    """One request on its own connection: status line, headers (Date/Server dropped), and the
    body de-chunked and gunzipped, error-page signature masked."""
    raw = read_to_close(port, data + b"Connection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    for h in ("date", "server"):
        hdrs.pop(h, None)
    if hdrs.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    if hdrs.get("content-encoding") == "gzip":
        body = gz.decompress(body)
    if b"<hr><center>" in body:
        body = re.sub(rb"<hr><center>[^<]*</center>", b"<hr><center>SIG</center>", body)
        hdrs.pop("content-length", None)
    return lines[0], hdrs, body


def test_gzip_same_responses_compressed_as_nginx(site: Path) -> None:
    def check(p: dict[str, int]) -> list[tuple[str, dict[str, str], bytes]]:
        return [_raw(p["plain"], r) for r in GZIP_REQUESTS]

    theirs, ours = _both(site, check)
    assert isinstance(theirs, list) and isinstance(ours, list)
    wrong = [(r, a, b) for r, a, b in zip(GZIP_REQUESTS, ours, theirs, strict=True) if a != b]
    assert not wrong, "\n".join(f"{r!r}\n  pylvs: {a[:2]}\n  nginx: {b[:2]}"
                                for r, a, b in wrong)
    assert ours[0][1]["content-encoding"] == "gzip" and ours[0][1]["etag"].startswith('W/"')


# -- stub_status ---------------------------------------------------------------------------------


def test_stub_status_exact_as_nginx(site: Path) -> None:
    def page(port: int) -> bytes:
        return _raw(port, b"GET /status HTTP/1.1\r\nHost: l\r\n")[2]

    def check(p: dict[str, int]) -> list[object]:
        port = p["plain"]
        first = page(port)
        idle = socket.create_connection(("127.0.0.1", port), 5)  # kept alive, waiting
        idle.sendall(b"GET /small.html HTTP/1.1\r\nHost: l\r\n\r\n")
        idle.recv(65536)
        half = socket.create_connection(("127.0.0.1", port), 5)  # a head not finished
        half.sendall(b"GET /small.html HTTP/1.1\r\nHo")
        time.sleep(0.3)
        second = page(port)  # accepted: the port probe, first, idle, half, this (no request on the probe)
        idle.close()
        half.close()
        time.sleep(0.3)
        third = page(port)
        post = _raw(port, b"POST /status HTTP/1.1\r\nHost: l\r\nContent-Length: 0\r\n")
        head = _raw(port, b"HEAD /status HTTP/1.1\r\nHost: l\r\n")
        return [first, second, third, post[:2], head[:2]]

    theirs, ours = _both(site, check)
    assert ours == theirs
    assert isinstance(ours, list)
    assert ours[1] == (b"Active connections: 3 \nserver accepts handled requests\n 5 5 4 \n"
                       b"Reading: 1 Writing: 1 Waiting: 1 \n")


def test_stub_status_shared_by_workers_and_metrics(site: Path) -> None:
    """Two workers: every connection is counted whichever worker took it; the metrics show
    the same figures and the upstream server's responses by class."""
    path, ports = _conf(site, "pylvs-m", workers=2)
    mport = free_port()
    with running([*PYLVS, "-c", str(path), "--metrics-address", str(mport)], ports["plain"]):
        wait_port(mport)
        before = _raw(ports["plain"], b"GET /status HTTP/1.1\r\nHost: l\r\n")[2]
        first = int(before.split(b"\n")[2].split()[0])
        for _ in range(20):
            _raw(ports["plain"], b"GET /app/big.txt HTTP/1.1\r\nHost: l\r\n")
        _raw(ports["plain"], b"GET /app/none.txt HTTP/1.1\r\nHost: l\r\n")
        time.sleep(0.3)
        page = _raw(ports["plain"], b"GET /status HTTP/1.1\r\nHost: l\r\n")[2]
        # 21 client connections + 21 of the proxy to itself + this one since the first page
        n = first + 43
        assert page == (b"Active connections: 1 \nserver accepts handled requests\n"
                        b" %d %d %d \nReading: 0 Writing: 1 Waiting: 0 \n" % (n, n, n - 1))
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            text = r.read().decode()
    up = f'server="127.0.0.1:{ports["plain"]}",upstream="127.0.0.1:{ports["plain"]}"'
    assert f"# TYPE nginx_connections_accepted counter\nnginx_connections_accepted {n}\n" in text
    assert f"nginx_http_requests_total {n - 1}\n" in text
    assert "nginx_connections_active 0\n" in text
    assert f"nginxplus_upstream_server_requests{{{up}}} 21\n" in text
    assert f'nginxplus_upstream_server_responses{{code="2xx",{up}}} 20\n' in text
    assert f'nginxplus_upstream_server_responses{{code="4xx",{up}}} 1\n' in text
    assert f"pylvs_http_upstream_server_response_seconds_count{{{up}}} 21\n" in text


def test_metrics_address_refused_in_one_line(tmp_path: Path) -> None:
    r = subprocess.run([*PYLVS, "--metrics-address", "nowhere:x", "-c", "/etc/nginx/nginx.conf"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "--metrics-address" in r.stderr


# -- Debian's stock nginx.conf --------------------------------------------------------------------


def test_debian_stock_nginx_conf_passes_t() -> None:
    if not Path("/etc/nginx/nginx.conf").exists():
        pytest.skip("needs Debian's nginx package")
    r = subprocess.run([*PYLVS, "-t", "-c", "/etc/nginx/nginx.conf"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ("pylvs http: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
                        "pylvs http: configuration file /etc/nginx/nginx.conf test is "
                        "successful\n")
