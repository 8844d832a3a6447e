"""Upstream response heads: taken whole from the bytes read and remembered, yet every head the
upstream sends reaches the client as its own (interim 1xx heads first, oversized ones refused)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from pylvs.l7.upstream import read_response_head
from tests.l7.conftest import Client, Stack, get

_CONF = """
events {{}}
http {{
    error_log {tmp}/error.log;
    upstream up {{ server 127.0.0.1:{up}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def test_read_response_head_keeps_end_to_end_fields() -> None:
    head = read_response_head(b"HTTP/1.1 201 Made\r\nServer: x\r\nX-A: 1\r\nContent-Length: 3\r\n"
                              b"Connection: close\r\n\r\nabc")
    assert head is not None
    assert (head.status, head.reason, head.lines, head.length) == (201, b"Made", b"X-A: 1\r\n", 3)
    assert head.framed and not head.coded


def test_read_response_head_skips_interim_heads() -> None:
    head = read_response_head(b"HTTP/1.1 100 Continue\r\n\r\n"
                              b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert head is not None and head.status == 200 and head.coded and head.framed
    assert head.length is None and head.lines == b""


def test_read_response_head_of_garbage_is_none() -> None:
    assert read_response_head(b"SSH-2.0-OpenSSH\r\n\r\n") is None
    assert read_response_head(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n") is None  # not complete


def _serve(answers: list[bytes]) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                          Awaitable[None]]:
    """An upstream answering its successive requests (over any connections) with ``answers``."""
    queue = list(answers)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while queue:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(queue.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handler


def test_heads_differing_in_one_field_each_reach_the_client(stack: Stack) -> None:
    answers = [b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 2\r\n\r\nok" % (i % 3)
               for i in range(9)]
    up = stack.upstream(_serve(answers))
    port = stack.proxy(_CONF, up=up)
    c = Client(port)
    seen = [c.one(get(f"/{i}")).headers["x-n"] for i in range(9)]
    c.close()
    assert seen == [str(i % 3) for i in range(9)]


def test_interim_heads_are_skipped_and_the_next_head_is_its_own(stack: Stack) -> None:
    answers = [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok",
               b"HTTP/1.1 200 OK\r\nX-B: 2\r\nContent-Length: 3\r\n\r\nabc",
               b"HTTP/1.1 200 OK\r\nX-C: 3\r\nContent-Length: 2\r\n\r\nhi"]
    up = stack.upstream(_serve(answers))
    port = stack.proxy(_CONF, up=up)
    c = Client(port)
    a = c.one(get("/a"))
    assert (a.status, a.headers.get("x-a"), a.body) == (200, "1", b"ok")
    b = c.one(get("/b"))
    assert (b.status, b.headers.get("x-b"), b.body) == (200, "2", b"abc")
    third = c.one(get("/c"))
    assert (third.status, third.headers.get("x-c"), third.body) == (200, "3", b"hi")
    c.close()


def test_oversized_upstream_head_is_502(stack: Stack) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\n")
            # an endless head: the proxy must give up on it, not buffer it without bound
            for _ in range(20):
                writer.write(b"X-More: " + b"z" * 8000 + b"\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    up = stack.upstream(handler)
    port = stack.proxy(_CONF, up=up)
    c = Client(port)
    r = c.one(get("/big"))
    assert r.status == 502
    c.close()
    log = (stack.tmp / "error.log").read_text()
    assert "upstream sent too big header while reading response header from upstream" in log


def test_garbage_after_a_warm_proxied_request_gets_one_answer_each_in_order(seed: Stack) -> None:
    c = Client(seed.port)
    for _ in range(3):  # warm keepalive connections to both app servers
        assert c.one(get("/index.jsp")).status == 200
    c.send(get("/index.jsp") + b"\x01\x02 nonsense\r\n\r\n")
    rs = c.read(3)
    assert [r.status for r in rs] == [200, 400]
    assert rs[0].body in (b"dynamic page 1\n", b"dynamic page 2\n")
    assert c.wait_closed()
    c.close()


def test_half_closed_client_gets_its_answers_then_the_close(seed: Stack) -> None:
    c = Client(seed.port, timeout=5)
    assert c.one(get("/index.jsp")).status == 200
    c.send(get("/index.jsp") + get("/index.html"))
    c.sock.shutdown(socket.SHUT_WR)
    t0 = time.monotonic()
    rs = c.read(3)
    assert [r.status for r in rs] == [200, 200]
    assert rs[1].body == b"this is nginx1\n"
    assert c.closed and time.monotonic() - t0 < 4  # not held until keepalive_timeout
    c.close()
