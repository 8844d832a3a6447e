"""The proxy's in-kernel relay (``pylvs.dataplane.proxy.sockmap``) with real sockets on 127.0.0.0/8: a relay that
has served a few requests is handed to the kernel's socket map, and from then on bytes, FINs,
counters, backpressure and the order of bytes must be exactly what the user-space relay gives.

Socket maps need CAP_BPF/CAP_NET_ADMIN: without them these tests skip (the data plane then keeps
every relay in user space, which the other proxy tests cover).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket

import pytest

from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, ServiceKey, ServiceSpec, parse_address
from pylvs.dataplane.proxy import ProxyDataPlane
from pylvs.dataplane.proxy.flow import OFFLOAD_AFTER
from pylvs.dataplane.proxy.relay import Relay
from tests.dataplane.proxy.test_proxy import (
    TIMEOUT,
    VIP,
    add_service,
    line_servers,
    proxy_test,
    until,
)
from tests.dataplane.proxy.test_proxy_relay import push_until_held

HAND_OVER = OFFLOAD_AFTER + 1


def need_offload(plane: ProxyDataPlane) -> None:
    assert plane.engine is not None
    if plane.engine.offload is None:
        pytest.skip("socket maps need CAP_BPF and CAP_NET_ADMIN")


def only_relay(plane: ProxyDataPlane) -> Relay:
    assert plane.ctx is not None
    (relay,) = plane.ctx.relays
    return relay


async def serve(handler: object, host: str = "127.0.0.11") -> asyncio.AbstractServer:
    return await asyncio.start_server(handler, host, 0, limit=1 << 20)  # type: ignore[arg-type]


def service_to(director: Director, srv: asyncio.AbstractServer, vip: str = VIP) -> ServiceKey:
    host, port = srv.sockets[0].getsockname()[:2]
    af = socket.AF_INET6 if ":" in vip else socket.AF_INET
    with socket.socket(af) as s:
        s.bind((vip, 0))
        vport = s.getsockname()[1]
    key = ServiceKey.inet(6, vip, vport)
    director.table.add_service(ServiceSpec(key, "rr"))
    director.table.add_dest(key, DestSpec(parse_address(host), port, ForwardingMethod.MASQ, 1))
    return key


async def turns(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int = 0) -> bytes:
    """``n`` request/response turns with a line server (by default enough for the hand-over: the
    first request is read at accept, and the turns after it are counted); what came back."""
    got = b""
    for i in range(n or HAND_OVER):
        w.write(b"line %d\n" % i)
        got += await asyncio.wait_for(r.readline(), TIMEOUT)
    return got


@proxy_test
async def test_a_long_lived_connection_moves_to_the_kernel_and_is_still_counted(
    director: Director, plane: ProxyDataPlane,
) -> None:
    need_offload(plane)
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        r, w = await asyncio.open_connection(VIP, key.port)
        received = await turns(r, w)
        relay = only_relay(plane)
        assert relay.offloaded and plane.describe()["counters"]["offloaded"] == 1
        # Where the hand-over falls depends on whether the first line was read at accept.
        plane.flush_stats()
        before = (relay.c2s.rbytes, relay.s2c.rbytes, relay.c2s.rsegs, relay.s2c.rsegs)
        sent_after = received_after = 0
        for i in range(20):  # these go through the kernel only
            line = b"after %d\n" % i
            w.write(line)
            reply = await asyncio.wait_for(r.readline(), TIMEOUT)
            assert reply == b"A:" + line
            sent_after += len(line)
            received_after += len(reply)
        plane.flush_stats()
        assert (relay.c2s.rbytes - before[0], relay.s2c.rbytes - before[1]) == (
            sent_after, received_after,
        )
        assert (relay.c2s.rsegs - before[2], relay.s2c.rsegs - before[3]) == (20, 20)
        st = director.table.get_service(key).stats
        sent = sum(len(b"line %d\n" % i) for i in range(HAND_OVER)) + sent_after
        assert (st.inbytes, st.outbytes) == (sent, len(received) + received_after)
        assert (st.inpkts, st.outpkts) == (HAND_OVER + 20, HAND_OVER + 20)
        w.write_eof()
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b"bye:A"
        w.close()
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relay end")
        (entry,) = director.connection_entries()
        assert entry.state == "TIME_WAIT"
        assert director.table.get_service(key).stats.outbytes == (
            len(received) + received_after + len(b"bye:A")
        )


@proxy_test(sockmap=False)
async def test_with_the_kernel_relay_off_every_relay_stays_in_user_space(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        r, w = await asyncio.open_connection(VIP, key.port)
        await turns(r, w, HAND_OVER * 3)
        assert not only_relay(plane).offloaded
        assert plane.describe()["counters"]["offloaded"] == 0
        w.close()


@proxy_test
async def test_fin_follows_every_byte_the_kernel_was_still_sending(
    director: Director, plane: ProxyDataPlane,
) -> None:
    """A server that writes a large answer and closes at once: the client gets every byte, then
    the end of stream, on each of several offloaded connections at once."""
    need_offload(plane)
    size = 6 << 20
    body = random.Random(7).randbytes(size)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while line := await r.readline():
            if line == b"big\n":
                w.write(body)
                await w.drain()
                break
            w.write(line)
            await w.drain()
        w.close()

    srv = await serve(handle)
    try:
        key = service_to(director, srv)

        async def one() -> bytes:
            r, w = await asyncio.open_connection(VIP, key.port)
            await turns(r, w)
            w.write(b"big\n")
            data = await asyncio.wait_for(r.read(), TIMEOUT)
            w.close()
            return data

        results = await asyncio.gather(*(one() for _ in range(6)))
        assert plane.describe()["counters"]["offloaded"] == 6
        for data in results:
            assert len(data) == size and hashlib.sha256(data).digest() == hashlib.sha256(
                body
            ).digest()
    finally:
        srv.close()


@proxy_test
async def test_bytes_keep_their_order_when_a_full_duplex_stream_is_handed_over(
    director: Director, plane: ProxyDataPlane,
) -> None:
    """An echo stream in both directions at once, in writes of random sizes, across the hand-over
    (the relay is handed to the kernel while bytes are in flight both ways)."""
    need_offload(plane)

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while chunk := await r.read(65536):
            w.write(chunk)
            await w.drain()
        w.close()

    srv = await serve(echo)
    try:
        key = service_to(director, srv)
        rng = random.Random(11)
        stream = rng.randbytes(24 << 20)
        r, w = await asyncio.open_connection(VIP, key.port)

        async def writer() -> None:
            pos = 0
            while pos < len(stream):
                n = rng.choice((1, 7, 100, 1500, 9000, 70000))
                w.write(stream[pos:pos + n])
                pos += n
                if rng.random() < 0.3:
                    await w.drain()
                    await asyncio.sleep(0)
            await w.drain()
            w.write_eof()

        async def reader() -> bytes:
            return await r.read()

        _, back = await asyncio.wait_for(asyncio.gather(writer(), reader()), 60)
        w.close()
        assert plane.describe()["counters"]["offloaded"] == 1
        assert len(back) == len(stream)
        assert back == stream
    finally:
        srv.close()


@proxy_test
async def test_an_offloaded_upload_to_a_server_that_stops_reading_is_held_back(
    director: Director, plane: ProxyDataPlane,
) -> None:
    """The kernel relay pushes back like the user-space one: what the server does not take stays
    in bounded socket buffers and the client's sends block."""
    need_offload(plane)
    release = asyncio.Event()
    received = 0

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        for _ in range(HAND_OVER):
            w.write(await r.readline())
            await w.drain()
        await release.wait()
        while chunk := await r.read(1 << 20):
            received += len(chunk)
        w.write(b"%d" % received)
        await w.drain()
        w.close()

    srv = await serve(handle)
    try:
        key = service_to(director, srv)
        loop = asyncio.get_running_loop()
        s = socket.create_connection((VIP, key.port), timeout=TIMEOUT)
        for i in range(HAND_OVER):
            s.sendall(b"%d\n" % i)
            await loop.run_in_executor(None, s.recv, 100)
        await until(lambda: only_relay(plane).offloaded, "hand-over")
        pushed = await push_until_held(s)  # the credit, then socket buffers, hold it back
        assert pushed < 64 << 20, pushed
        release.set()
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)
        reply = await loop.run_in_executor(None, s.recv, 100)
        s.close()
        assert int(reply) == pushed
    finally:
        srv.close()


@proxy_test
async def test_ipv6_relays_are_handed_over_too(
    director: Director, plane: ProxyDataPlane,
) -> None:
    need_offload(plane)
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6")

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while line := await r.readline():
            w.write(b"v6:" + line)
            await w.drain()
        w.close()

    srv = await serve(handle, "::1")
    try:
        key = service_to(director, srv, "::1")
        r, w = await asyncio.open_connection("::1", key.port)
        await turns(r, w)
        assert only_relay(plane).offloaded
        w.write(b"kernel\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"v6:kernel\n"
        w.close()
    finally:
        srv.close()



def test_a_host_without_the_relay_object_says_so_in_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay's object not built (no clang at install): one line naming what to install, an
    OSError, which the engine logs once and relays in user space."""
    from pylvs.dataplane.proxy import sockmap

    monkeypatch.setattr(sockmap, "OBJECT_NAME", "missing_relay.bpf.o")
    with pytest.raises(OSError) as info:
        sockmap.SockmapRelay(16)
    assert "\n" not in str(info.value)
    assert "missing_relay.bpf.o missing" in str(info.value) and "clang" in str(info.value)
