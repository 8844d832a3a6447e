"""pylvs http on loopback: the seed's layer 7 and HTTP/1.1 correctness, over real sockets."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.l7.app import pattern_body
from tests.l7.conftest import Client, Stack, get, wait_for

COMBINED = re.compile(
    r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "([^"]*)" (\d{3}) (\d+) '
    r'"([^"]*)" "([^"]*)"$')


def test_jsp_goes_two_to_one_to_the_app_servers(seed: Stack) -> None:
    c = Client(seed.port)
    pages = [c.one(get("/index.jsp")).body for _ in range(9)]
    c.close()
    assert pages.count(b"dynamic page 1\n") == 6
    assert pages.count(b"dynamic page 2\n") == 3
    # smooth: never two "page 2" in a row, as nginx's weighted round robin spreads them
    assert pages[:3] == [b"dynamic page 1\n", b"dynamic page 2\n", b"dynamic page 1\n"]


def test_static_pages_come_from_the_root(seed: Stack) -> None:
    c = Client(seed.port)
    r = c.one(get("/"))
    assert r.status == 200 and r.body == b"this is nginx1\n"
    assert r.headers["content-type"] == "text/html"
    big = (seed.tmp / "html" / "big.bin").read_bytes()
    r = c.one(get("/big.bin"))
    assert r.status == 200 and r.body == big
    assert c.one(get("/missing.html")).status == 404
    assert c.one(get("/a/../index.html")).body == b"this is nginx1\n"
    assert c.one(get("/../../etc/passwd")).status == 400
    c.close()


def test_app_sees_client_address_and_host_as_nginx_sets_them(seed: Stack) -> None:
    c = Client(seed.port)
    r = c.one(get("/x.jsp?echo=headers", host="www.example.com:8080",
                  extra="X-Forwarded-For: 10.9.8.7\r\nConnection: keep-alive, X-Drop\r\n"
                        "X-Drop: 1\r\nTE: trailers\r\nUser-Agent: t\r\n"))
    c.close()
    head = r.body.decode()
    lines = head.split("\r\n")
    assert lines[0] == "GET /x.jsp?echo=headers HTTP/1.1"
    assert "HOST: www.example.com" in lines
    assert "X-Real-IP: 127.0.0.1" in lines
    assert "X-Forwarded-For: 10.9.8.7, 127.0.0.1" in lines
    assert "User-Agent: t" in lines
    lower = head.lower()
    assert "connection:" not in lower and "x-drop" not in lower and "\r\nte:" not in lower


def test_keepalive_on_both_sides(stack: Stack) -> None:
    conns = []

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    up = stack.upstream(app)
    port = stack.proxy(_PROXY_CONF, up=up, extra="keepalive 4;", loc="")
    c = Client(port)
    for _ in range(5):
        r = c.one(get("/k"))
        assert r.status == 200 and r.body == b"ok"
        assert r.headers["connection"] == "keep-alive"
    c.close()
    assert len(conns) == 1  # one upstream connection served all five requests


_PROXY_CONF = """
events {{}}
http {{
    error_log {tmp}/error.log;
    access_log {tmp}/access.log;
    upstream up {{ server 127.0.0.1:{up}; {extra} }}
    server {{
        listen 127.0.0.1:{port};
        root {tmp};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {loc}
        }}
    }}
}}
"""


def test_chunked_upload_and_download_stream_through(seed: Stack) -> None:
    c = Client(seed.port)
    body = pattern_body(300_000)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7000]), body[i:i + 7000])
                      for i in range(0, len(body), 7000)) + b"0\r\n\r\n"
    c.send(b"POST /up.jsp?echo=body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunks)
    r = c.read(1)[0]
    assert r.status == 200 and r.body == body
    r = c.one(get("/down.jsp?size=200000&chunked=1"))
    assert r.status == 200 and r.body == pattern_body(200_000)
    assert r.headers.get("transfer-encoding") == "chunked"
    c.close()


def test_head_gets_headers_only(seed: Stack) -> None:
    c = Client(seed.port)
    r = c.one(b"HEAD /index.jsp HTTP/1.1\r\nHost: x\r\n\r\n", head_only=True)
    assert r.status == 200 and r.headers["content-length"] == "15"
    r = c.one(b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n", head_only=True)
    assert r.status == 200 and r.headers["content-length"] == "15"
    # the connection is still in sync: the next answer is whole
    assert c.one(get("/index.html")).body == b"this is nginx1\n"
    assert c.raw.count(b"this is nginx1") == 1
    c.close()


def test_expect_100_continue_is_answered_before_the_body(seed: Stack) -> None:
    c = Client(seed.port)
    c.send(b"POST /e.jsp?echo=body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
           b"Expect: 100-continue\r\n\r\n")
    c.sock.settimeout(5)
    interim = c.sock.recv(100)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    c.send(b"hello")
    r = c.read(1)[0]
    assert r.status == 200 and r.body == b"hello"
    c.close()


def test_pipelined_requests_are_answered_in_order(seed: Stack) -> None:
    c = Client(seed.port)
    c.send(get("/a.jsp?size=50000") + get("/index.html") + get("/b.jsp?echo=headers")
           + get("/nope") + get("/c.jsp?size=10"))
    rs = c.read(5)
    assert [r.status for r in rs] == [200, 200, 200, 404, 200]
    assert rs[0].body == pattern_body(50000)
    assert rs[1].body == b"this is nginx1\n"
    assert rs[2].body.startswith(b"GET /b.jsp?echo=headers HTTP/1.1")
    assert rs[4].body == pattern_body(10)
    c.close()


def test_upstream_down_is_502(stack: Stack) -> None:
    down = _closed_port()
    port = stack.proxy(_PROXY_CONF, up=down, extra="", loc="")
    c = Client(port)
    r = c.one(get("/"))
    assert r.status == 502 and b"502 Bad Gateway" in r.body
    assert r.headers["connection"] == "keep-alive"
    c.close()
    assert wait_for(lambda: "connect() failed (111: Connection refused) while connecting to "
                            "upstream" in _read(stack.tmp / "error.log"))


def test_upstream_read_timeout_is_504(stack: Stack) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(5)
        writer.close()

    up = stack.upstream(silent)
    port = stack.proxy(_PROXY_CONF, up=up, extra="", loc="proxy_read_timeout 300ms;")
    c = Client(port)
    t0 = time.monotonic()
    r = c.one(get("/slow"))
    assert r.status == 504
    assert time.monotonic() - t0 < 4
    c.close()
    assert wait_for(lambda: "upstream timed out (110: Connection timed out) while reading "
                            "response header from upstream" in _read(stack.tmp / "error.log"))


def test_next_upstream_on_failure(stack: Stack) -> None:
    app = stack.app("7")
    down = _closed_port()
    conf = _PROXY_CONF.replace("server 127.0.0.1:{up};", "server 127.0.0.1:{up}; server 127.0.0.1:{app};")
    port = stack.proxy(conf, up=down, app=app, extra="", loc="")
    c = Client(port)
    for _ in range(4):
        r = c.one(get("/p.jsp"))
        assert r.status == 200 and r.body == b"dynamic page 7\n"
    c.close()
    log = _read(stack.tmp / "error.log")
    assert log.count("Connection refused") == 1  # max_fails=1: the dead peer is skipped after


def test_next_upstream_http_503_and_backup(stack: Stack) -> None:
    async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
        await writer.drain()
        writer.close()

    b = stack.upstream(busy)
    app = stack.app("backup")
    conf = _PROXY_CONF.replace("server 127.0.0.1:{up};",
                               "server 127.0.0.1:{up}; server 127.0.0.1:{app} backup;")
    port = stack.proxy(conf, up=b, app=app, extra="",
                       loc="proxy_next_upstream error timeout http_503;")
    c = Client(port)
    r = c.one(get("/x.jsp"))
    assert r.status == 200 and r.body == b"dynamic page backup\n"
    c.close()


def test_malformed_request_gets_400_and_close(seed: Stack) -> None:
    for bad in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"):
        c = Client(seed.port)
        r = c.one(bad)
        assert r.status == 400, bad
        assert r.headers.get("connection") == "close"
        assert c.wait_closed()
        c.close()


def test_malformed_request_after_a_good_one_is_answered_in_order(seed: Stack) -> None:
    c = Client(seed.port)
    c.send(get("/index.html") + b"\x01\x02 nonsense\r\n\r\n")
    rs = c.read(2)
    assert [r.status for r in rs] == [200, 400]
    assert c.wait_closed()
    c.close()


def test_oversized_headers_are_refused(seed: Stack) -> None:
    c = Client(seed.port)
    r = c.one(get("/", extra="X-Big: " + "a" * 40000 + "\r\n"))
    assert r.status in (400, 431)
    assert c.wait_closed()
    c.close()
    c = Client(seed.port)
    r = c.one(get("/" + "u" * 9000))
    assert r.status == 414
    c.close()


def test_oversized_body_is_413(seed: Stack) -> None:
    c = Client(seed.port)
    r = c.one(b"POST /x.jsp HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
    assert r.status == 413
    assert c.wait_closed()
    c.close()


def test_slowloris_client_times_out(stack: Stack) -> None:
    (stack.tmp / "index.html").write_text("hi\n")
    conf = _PROXY_CONF.replace("location / {{", "client_header_timeout 500ms;\n location /x {{")
    port = stack.proxy(conf, up=_closed_port(), extra="", loc="")
    slow = Client(port)
    slow.send(b"GET / HTTP/1.1\r\n")
    t0 = time.monotonic()
    for _ in range(3):
        slow.send(b"X-a: b\r\n")
        time.sleep(0.1)
    # meanwhile other clients are served
    ok = Client(port)
    assert ok.one(get("/index.html")).body == b"hi\n"
    ok.close()
    assert slow.wait_closed(5)
    assert time.monotonic() - t0 < 4
    slow.close()


def test_upstream_reset_mid_response_closes_cleanly_and_logs(stack: Stack) -> None:
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    up = stack.upstream(breaks)
    port = stack.proxy(_PROXY_CONF, up=up, extra="", loc="")
    c = Client(port, timeout=5)
    c.send(get("/r"))
    t0 = time.monotonic()
    got = c.read(1)
    assert not got  # never a complete (corrupt) response
    assert c.closed and time.monotonic() - t0 < 4
    assert c.raw.startswith(b"HTTP/1.1 200 OK") and len(c.raw) < 100000
    c.close()
    assert wait_for(lambda: "while reading upstream" in _read(stack.tmp / "error.log"))
    # the proxy still serves: the next client gets the same clean cut, not a hang
    c = Client(port, timeout=5)
    c.send(get("/r2"))
    assert not c.read(1) and c.closed and c.raw.startswith(b"HTTP/1.1 200 OK")
    c.close()


def test_access_log_is_in_combined_format(seed: Stack) -> None:
    c = Client(seed.port)
    c.one(get("/index.html", extra="Referer: http://ref/\r\nUser-Agent: agent/1.0\r\n"))
    c.one(get("/nothing"))
    c.close()
    log = seed.tmp / "access.log"
    assert wait_for(lambda: _read(log).count("\n") >= 2)
    lines = _read(log).splitlines()
    m = COMBINED.match(lines[0])
    assert m, lines[0]
    assert m.group(1) == "127.0.0.1"
    assert m.group(3) == "GET /index.html HTTP/1.1"
    assert (m.group(4), m.group(5), m.group(6), m.group(7)) == ("200", "15", "http://ref/",
                                                              "agent/1.0")
    m = COMBINED.match(lines[1])
    assert m and m.group(4) == "404" and m.group(6) == "-" and m.group(7) == "-"


def test_keepalive_timeout_closes_idle_clients(stack: Stack) -> None:
    (stack.tmp / "index.html").write_text("hi\n")
    conf = _PROXY_CONF.replace("location / {{", "keepalive_timeout 300ms;\n location /x {{")
    port = stack.proxy(conf, up=_closed_port(), extra="", loc="")
    c = Client(port)
    assert c.one(get("/index.html")).status == 200
    assert c.wait_closed(5)
    c.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        return ""


def test_chunked_body_over_client_max_body_size_is_413(stack: Stack) -> None:
    app = stack.app("1")
    port = stack.proxy(_PROXY_CONF, up=app, extra="", loc="client_max_body_size 1k;")
    c = Client(port)
    chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
    c.send(b"POST /e.jsp?echo=body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunk * 3 + b"0\r\n\r\n")
    r = c.read(1)
    assert r and r[0].status == 413
    assert c.wait_closed()
    c.close()


def test_http10_client_gets_close_delimited_body(seed: Stack) -> None:
    c = Client(seed.port)
    c.send(b"GET /d.jsp?size=5000&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n")
    assert c.wait_closed()
    head, _, body = c.raw.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head
    assert body == pattern_body(5000)
    c.close()


def test_upstream_body_until_close_is_rechunked_for_http11(stack: Stack) -> None:
    async def old(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 70000)
        await writer.drain()
        writer.close()

    up = stack.upstream(old)
    port = stack.proxy(_PROXY_CONF, up=up, extra="", loc="")
    c = Client(port)
    r = c.one(get("/old"))
    assert r.status == 200 and r.body == b"z" * 70000
    assert r.headers["transfer-encoding"] == "chunked"
    assert c.one(get("/old")).body == b"z" * 70000  # and the client connection stays usable
    c.close()


def test_chunked_upload_to_http10_upstream_is_sized(stack: Stack) -> None:
    """proxy_http_version 1.0 (nginx's default) needs a Content-Length: the body is spooled."""
    app = stack.app("1")
    conf = _PROXY_CONF.replace("proxy_http_version 1.1;", "").replace('proxy_set_header Connection "";', "")
    port = stack.proxy(conf, up=app, extra="", loc="")
    c = Client(port)
    body = pattern_body(100_000)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 9000]), body[i:i + 9000])
                      for i in range(0, len(body), 9000)) + b"0\r\n\r\n"
    c.send(b"POST /u?echo=body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    r = c.read(1)[0]
    assert r.status == 200 and r.body == body
    r = c.one(get("/h?echo=headers"))
    assert r.body.startswith(b"GET /h?echo=headers HTTP/1.0\r\n")
    assert b"Connection: close\r\n" in r.body
    c.close()


def test_client_connection_close_is_honoured(seed: Stack) -> None:
    c = Client(seed.port)
    r = c.one(get("/index.jsp", extra="Connection: close\r\n"))
    assert r.status == 200 and r.headers["connection"] == "close"
    assert c.wait_closed()
    c.close()


_FUZZ_PIECES = st.sampled_from([
    b"GET ", b"POST ", b"HEAD ", b"/", b"/x.jsp", b"/index.html", b"?a=b", b"%", b"%2e%2e/",
    b" HTTP/1.1", b" HTTP/1.0", b" HTTP/9.9", b"\r\n", b"\n", b"Host: x", b"Host:", b": ",
    b"Content-Length: 5", b"Content-Length: -1", b"Transfer-Encoding: chunked", b"5\r\nhello",
    b"0\r\n\r\n", b"Expect: 100-continue", b"Connection: close", b"\x00", b"\xff", b" ", b"\t",
])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_FUZZ_PIECES, max_size=25))
def test_random_requests_never_hang_or_break_the_server(seed: Stack, pieces: list[bytes]) -> None:
    c = Client(seed.port, timeout=3)
    try:
        c.send(b"".join(pieces) + b"\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)  # the client is done: whatever it sent must be answered
        assert c.wait_closed(10)
        assert c.raw == b"" or re.match(rb"HTTP/1\.1 [1-5]\d\d ", c.raw), c.raw[:200]
    finally:
        c.close()
    ok = Client(seed.port)
    assert ok.one(get("/index.html")).body == b"this is nginx1\n"
    ok.close()


def test_unknown_transfer_coding_is_501(seed: Stack) -> None:
    c = Client(seed.port)
    r = c.one(b"POST /x.jsp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
              b"0\r\n\r\n")
    assert r.status == 501
    assert c.wait_closed()
    c.close()


def test_upstream_closing_an_idle_keepalive_connection_is_not_an_error(stack: Stack) -> None:
    served = []

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # answers one request with keep-alive, then silently closes the idle connection
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    up = stack.upstream(one_shot)
    port = stack.proxy(_PROXY_CONF, up=up, extra="keepalive 4;", loc="")
    c = Client(port)
    assert c.one(get("/a")).body == b"yes"
    time.sleep(0.5)
    r = c.one(get("/b"))
    assert r.status == 200 and r.body == b"yes"
    assert len(served) == 2
    c.close()
    time.sleep(0.3)  # let the scripted upstream finish before the loop stops


def test_static_byte_ranges(seed: Stack) -> None:
    big = (seed.tmp / "html" / "big.bin").read_bytes()
    c = Client(seed.port)
    r = c.one(get("/big.bin", extra="Range: bytes=100-199\r\n"))
    assert r.status == 206 and r.body == big[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(big)}"
    r = c.one(get("/big.bin", extra="Range: bytes=-10\r\n"))
    assert r.status == 206 and r.body == big[-10:]
    r = c.one(get("/big.bin", extra=f"Range: bytes={len(big)}-\r\n"))
    assert r.status == 416
    r = c.one(get("/index.html", extra="Range: bytes=0-\r\n"))
    assert r.status == 200 and r.body == b"this is nginx1\n"
    c.close()


def test_download_is_streamed_with_backpressure_not_buffered(stack: Stack) -> None:
    total = 64 * 1024 * 1024
    written = [0]

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"x" * 65536
        try:
            while written[0] < total:
                writer.write(block)
                await writer.drain()
                written[0] += len(block)
        except ConnectionError:
            pass
        writer.close()

    up = stack.upstream(firehose)
    port = stack.proxy(_PROXY_CONF, up=up, extra="", loc="")
    c = Client(port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.send(get("/big"))
    time.sleep(1.5)  # the client reads nothing: the proxy must stop reading the upstream
    stalled_at = written[0]
    assert stalled_at < 24 * 1024 * 1024, stalled_at  # socket buffers, not the whole body
    got = 0
    while got < total:  # now drain it all: the stream resumes and completes
        data = c.sock.recv(1 << 20)
        assert data
        got += len(data)
    c.close()
    assert written[0] == total


def test_upload_is_streamed_with_backpressure_not_buffered(stack: Stack) -> None:
    release = asyncio.Event()
    received = [0]

    async def sluggish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await release.wait()
        while received[0] < length:
            data = await reader.read(1 << 20)
            if not data:
                break
            received[0] += len(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    up = stack.upstream(sluggish)
    port = stack.proxy(_PROXY_CONF, up=up, extra="", loc="client_max_body_size 0;")
    total = 64 * 1024 * 1024
    c = Client(port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
    c.sock.setblocking(False)
    sent = 0
    block = b"y" * 65536
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            sent += c.sock.send(block)
        except BlockingIOError:
            time.sleep(0.01)
    assert sent < 24 * 1024 * 1024, sent  # the proxy stopped reading: nothing piles up in it
    stack.lt.loop.call_soon_threadsafe(release.set)
    c.sock.setblocking(True)
    while sent < total:
        sent += c.sock.send(block[: min(len(block), total - sent)])
    r = c.read(1)
    assert r and r[0].status == 200
    c.close()
    assert received[0] == total


def test_client_that_stops_reading_a_proxied_body_hits_send_timeout(stack: Stack) -> None:
    total = 64 * 1024 * 1024

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        try:
            for _ in range(total // 65536):
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    up = stack.upstream(firehose)
    port = stack.proxy(_PROXY_CONF, up=up, extra="",
                       loc="send_timeout 500ms; proxy_read_timeout 30s;")
    c = Client(port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.send(get("/big"))
    time.sleep(2.0)  # read nothing: the proxy gives up on this client after send_timeout
    c.sock.settimeout(10)
    got, closed = 0, False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            data = c.sock.recv(1 << 20)
        except ConnectionResetError:
            closed = True
            break
        if not data:
            closed = True
            break
        got += len(data)
    c.close()
    assert closed and got < total


def _scripted(behaviours: list[str]) -> object:
    """An upstream keeping its connection alive whose n-th request gets behaviours[n]:
    "ok" answers, "hang" never answers, "break" resets mid-body."""
    count = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                what = behaviours[min(count[0], len(behaviours) - 1)]
                count[0] += 1
                if what == "hang":
                    await asyncio.sleep(3)
                    break
                if what == "break":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
                    await writer.drain()
                    await asyncio.sleep(0.1)
                    writer.transport.abort()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return handler


def test_read_timeout_on_a_kept_alive_upstream_is_504_and_client_stays(stack: Stack) -> None:
    up = stack.upstream(_scripted(["ok", "hang", "ok"]))  # type: ignore[arg-type]
    port = stack.proxy(_PROXY_CONF, up=up, extra="keepalive 4;", loc="proxy_read_timeout 300ms;")
    c = Client(port)
    assert c.one(get("/1")).body == b"ok"
    r = c.one(get("/2"))
    assert r.status == 504
    assert r.headers["connection"] == "keep-alive"
    assert c.one(get("/3")).body == b"ok"
    c.close()


def test_reset_mid_body_on_a_kept_alive_upstream_cuts_the_client(stack: Stack) -> None:
    up = stack.upstream(_scripted(["ok", "break"]))  # type: ignore[arg-type]
    port = stack.proxy(_PROXY_CONF, up=up, extra="keepalive 4;", loc="")
    c = Client(port, timeout=5)
    assert c.one(get("/1")).body == b"ok"
    c.send(get("/2"))
    assert not c.read(1) and c.closed
    c.close()
    assert wait_for(lambda: "while reading upstream" in _read(stack.tmp / "error.log"))


def test_pipelined_requests_on_warm_upstreams_keep_their_order(seed: Stack) -> None:
    c = Client(seed.port)
    assert c.one(get("/warm.jsp")).status == 200  # the pool now has a connection
    c.send(get("/a.jsp?size=70000") + get("/b.jsp?size=3") + get("/index.html")
           + get("/c.jsp?echo=headers") + get("/d.jsp?size=5&chunked=1"))
    rs = c.read(5)
    assert [r.status for r in rs] == [200] * 5
    assert rs[0].body == pattern_body(70000) and rs[1].body == pattern_body(3)
    assert rs[2].body == b"this is nginx1\n" and rs[3].body.startswith(b"GET /c.jsp")
    assert rs[4].body == pattern_body(5)
    c.close()


def test_client_leaving_mid_response_on_a_warm_upstream(seed: Stack) -> None:
    c = Client(seed.port)
    assert c.one(get("/warm.jsp")).status == 200
    c.send(get("/big.jsp?size=20000000"))
    c.sock.recv(1000)
    c.close()
    ok = Client(seed.port)
    for _ in range(3):
        assert ok.one(get("/after.jsp")).status == 200
    ok.close()


def test_client_body_timeout_is_408(stack: Stack) -> None:
    app = stack.app("1")
    port = stack.proxy(_PROXY_CONF, up=app, extra="", loc="client_body_timeout 300ms;")
    c = Client(port)
    c.send(b"POST /e?echo=body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
    r = c.read(1)
    assert r and r[0].status == 408
    assert c.wait_closed()
    c.close()
