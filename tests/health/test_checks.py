"""Every checker against real servers on loopback: healthy, dead, slow, garbage, hanging scripts."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import random
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pylvs.config.keepalived import CheckerConfig
from pylvs.health.checkers import run_check
from pylvs.health.checkers.dns import DnsOptions, dns_check
from pylvs.health.checkers.http import HttpOptions, UrlCheck
from pylvs.health.checkers.misc import MiscOptions
from pylvs.health.checkers.ping import ping_check
from pylvs.health.checkers.smtp import SmtpOptions
from pylvs.health.checkers.udp import UdpOptions

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def loopback() -> str:
    return f"127.0.{random.randint(1, 250)}.{random.randint(2, 250)}"


def cfg(kind: str, port: int, addr: str = "127.0.0.1", **kw: object) -> CheckerConfig:
    kw.setdefault("connect_timeout", 1.0)
    return CheckerConfig(kind=kind, file="t.conf", line=1, connect_ip=ipaddress.ip_address(addr),
                         connect_port=port, **kw)  # type: ignore[arg-type]


async def serve(handler: Handler) -> tuple[asyncio.AbstractServer, str, int]:
    addr = loopback()
    server = await asyncio.start_server(handler, addr, 0)
    return server, addr, server.sockets[0].getsockname()[1]


def http_handler(status: int, body: bytes, delay: float = 0.0) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # a TCP_CHECK connects and leaves
            writer.close()
            return
        if delay:
            await asyncio.sleep(delay)
        writer.write(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
        await writer.drain()
        writer.close()
    return handle


@pytest.fixture
async def page() -> AsyncIterator[tuple[str, int]]:
    server, addr, port = await serve(http_handler(200, b"this is nginx1\n"))
    yield addr, port
    server.close()
    await server.wait_closed()


async def test_tcp_check_passes_on_a_listening_server_and_fails_on_a_closed_port(page: tuple[str, int]) -> None:
    addr, port = page
    assert (await run_check(cfg("TCP_CHECK", port, addr))).ok
    s = socket.socket()
    s.bind((addr, 0))
    closed = s.getsockname()[1]
    s.close()
    res = await run_check(cfg("TCP_CHECK", closed, addr))
    assert not res.ok and "refused" in res.detail.lower()


async def test_http_get_checks_status_and_digest(page: tuple[str, int]) -> None:
    addr, port = page
    good = hashlib.md5(b"this is nginx1\n").hexdigest()
    assert (await run_check(cfg("HTTP_GET", port, addr, options=HttpOptions(urls=(UrlCheck("/", digest=good),))))).ok
    res = await run_check(cfg("HTTP_GET", port, addr, options=HttpOptions(urls=(UrlCheck("/", digest="0" * 32),))))
    assert not res.ok and "digest" in res.detail
    res = await run_check(cfg("HTTP_GET", port, addr, options=HttpOptions(urls=(UrlCheck("/", status_codes=((300, 399),)),))))
    assert not res.ok and "status 200" in res.detail


async def test_slow_server_fails_at_connect_timeout_without_blocking_other_checks() -> None:
    slow, addr, port = await serve(http_handler(200, b"late", delay=5))
    fast, faddr, fport = await serve(http_handler(200, b"ok"))
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        slow_res, fast_res = await asyncio.gather(
            run_check(cfg("HTTP_GET", port, addr, options=HttpOptions(urls=(UrlCheck("/"),)))),
            run_check(cfg("HTTP_GET", fport, faddr, options=HttpOptions(urls=(UrlCheck("/"),)))),
        )
        assert not slow_res.ok and "timed out" in slow_res.detail
        assert fast_res.ok
        assert loop.time() - t0 < 4  # bounded by connect_timeout (1 s), not by the server
    finally:
        for s in (slow, fast):
            s.close()


async def test_garbage_answer_marks_the_check_failed() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\x00\xffnot http at all\r\n\r\n")
        await writer.drain()
        writer.close()
    server, addr, port = await serve(garbage)
    try:
        res = await run_check(cfg("HTTP_GET", port, addr, options=HttpOptions(urls=(UrlCheck("/"),))))
        assert not res.ok and "status line" in res.detail
    finally:
        server.close()


async def test_misc_check_exit_codes_dynamic_weight_and_hang_killed() -> None:
    assert (await run_check(cfg("MISC_CHECK", 0, options=MiscOptions("exit 0")))).ok
    assert not (await run_check(cfg("MISC_CHECK", 0, options=MiscOptions("exit 1")))).ok
    dyn = await run_check(cfg("MISC_CHECK", 0, options=MiscOptions("exit 12", dynamic=True)))
    assert dyn.ok and dyn.weight == 10
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    hung = await run_check(cfg("MISC_CHECK", 0, options=MiscOptions("sleep 30", timeout=0.5)))
    assert not hung.ok and "killed" in hung.detail
    assert loop.time() - t0 < 5


async def test_smtp_check_wants_banner_and_helo() -> None:
    async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mail ESMTP\r\n")
        line = await reader.readline()
        writer.write(b"250 hello\r\n" if line.startswith(b"HELO lvs") else b"500 no\r\n")
        await writer.drain()
        await reader.readline()
        writer.close()
    server, addr, port = await serve(smtp)
    try:
        assert (await run_check(cfg("SMTP_CHECK", port, addr, options=SmtpOptions("lvs.example")))).ok
        assert not (await run_check(cfg("SMTP_CHECK", port, addr, options=SmtpOptions("other")))).ok
    finally:
        server.close()


async def test_dns_check_accepts_noerror_and_refuses_servfail() -> None:
    loop = asyncio.get_running_loop()
    rcode = {"value": 0}

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            qid = data[:2]
            self.t.sendto(qid + struct.pack("!H", 0x8180 | rcode["value"]) + data[4:], addr)

    addr = loopback()
    transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=(addr, 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        assert (await dns_check(cfg("DNS_CHECK", port, addr, options=DnsOptions("A", "example.org")))).ok
        rcode["value"] = 2
        res = await dns_check(cfg("DNS_CHECK", port, addr))
        assert not res.ok and "rcode 2" in res.detail
    finally:
        transport.close()


def test_genhash_prints_the_digest_a_digest_check_expects() -> None:
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "15")
            self.end_headers()
            self.wfile.write(b"this is nginx1\n")

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer((loopback(), 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        host, port = srv.server_address[:2]
        res = subprocess.run(
            [sys.executable, "-m", "pylvs.cli.main", "genhash", "-s", str(host), "-p", str(port), "-u", "/"],
            capture_output=True, text=True, timeout=30,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout == f"MD5SUM = {hashlib.md5(b'this is nginx1' + chr(10).encode()).hexdigest()}\n"
        bad = subprocess.run(
            [sys.executable, "-m", "pylvs.cli.main", "genhash", "-s", "not-an-ip", "-u", "/"],
            capture_output=True, text=True, timeout=30,
        )
        assert bad.returncode == 2 and "not an IP address" in bad.stderr
    finally:
        srv.shutdown()
        srv.server_close()


async def _udp_responder(answer: bytes | None) -> tuple[asyncio.DatagramTransport, str, int]:
    loop = asyncio.get_running_loop()

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if answer is not None:
                self.t.sendto(answer, addr)

    addr = loopback()
    transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=(addr, 0))
    return transport, addr, transport.get_extra_info("sockname")[1]


def _closed_udp_port(addr: str) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


async def test_udp_check_fails_on_port_unreachable_and_passes_on_silence() -> None:
    transport, addr, port = await _udp_responder(None)  # listens, never answers
    try:
        assert (await run_check(cfg("UDP_CHECK", port, addr, connect_timeout=0.3))).ok
        res = await run_check(cfg("UDP_CHECK", port, addr, connect_timeout=0.3,
                                  options=UdpOptions(require_reply=True)))
        assert not res.ok and "no reply" in res.detail
    finally:
        transport.close()
    dead = _closed_udp_port(addr)
    res = await run_check(cfg("UDP_CHECK", dead, addr, connect_timeout=2.0))
    assert not res.ok and "refused" in res.detail.lower()


async def test_udp_check_require_reply_checks_pattern_with_wildcards_and_length() -> None:
    transport, addr, port = await _udp_responder(b"\x4f\x12hello")
    try:
        want = {"require_reply": True, "payload": b"ping"}
        assert (await run_check(cfg("UDP_CHECK", port, addr, options=UdpOptions(
            reply_value=b"\x40\x12", reply_mask=b"\xf0\xff", **want)))).ok  # type: ignore[arg-type]
        res = await run_check(cfg("UDP_CHECK", port, addr, options=UdpOptions(
            reply_value=b"\x40\x13", reply_mask=b"\xff\xff", **want)))  # type: ignore[arg-type]
        assert not res.ok and "does not match" in res.detail
        res = await run_check(cfg("UDP_CHECK", port, addr,
                                  options=UdpOptions(max_reply_length=4, **want)))  # type: ignore[arg-type]
        assert not res.ok and "7 bytes" in res.detail
    finally:
        transport.close()


async def test_ping_check_gets_an_echo_reply_from_loopback() -> None:
    res = await run_check(cfg("PING_CHECK", 0, loopback()))
    assert res.ok, res.detail
    v6 = await run_check(cfg("PING_CHECK", 0, "::1"))
    assert v6.ok, v6.detail


@pytest.mark.root
async def test_ping_check_over_a_raw_socket_skips_other_icmp() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("raw ICMP sockets need root")
    for addr in (loopback(), "::1"):
        res = await ping_check(cfg("PING_CHECK", 0, addr), raw=True)
        assert res.ok, res.detail


@pytest.mark.root
def test_ping_check_fails_where_the_host_cannot_be_reached() -> None:
    import os
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    ns = f"pyck{os.getpid() % 100000}{random.randint(0, 999)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        # lo stays down in the new namespace: no route anywhere, nothing is sent
        code = ("import asyncio, ipaddress; from pylvs.config.keepalived import CheckerConfig; "
                "from pylvs.health.checkers import run_check; "
                "c = CheckerConfig(kind='PING_CHECK', file='t', line=1, "
                "connect_ip=ipaddress.ip_address('127.0.0.1'), connect_port=0, connect_timeout=1.0); "
                "r = asyncio.run(run_check(c)); print(r.ok, r.detail)")
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.startswith("False PING_CHECK 127.0.0.1"), out.stdout + out.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
