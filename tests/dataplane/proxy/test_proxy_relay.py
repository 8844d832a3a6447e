"""The TCP relay of the proxy data plane at its edges, with real sockets on 127.0.0.0/8: bytes and
FINs that arrive before the real server accepted, resets both ways, backpressure on uploads, the
relay limit, many spliced streams at once, and relays that leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import socket
from collections.abc import Iterator

import pytest

from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, ServiceSpec, parse_address
from pylvs.dataplane.proxy import ProxyDataPlane
from pylvs.dataplane.proxy.relay import Relay
from tests.dataplane.proxy.test_proxy import (
    TIMEOUT,
    VIP,
    add_service,
    ask,
    free_port,
    line_servers,
    proxy_test,
    tcp_key,
    until,
    who,
)

RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends a reset


@contextlib.contextmanager
def black_hole(host: str) -> Iterator[tuple[str, int]]:
    """A listening socket whose backlog is full: connects to it never complete."""
    hole = socket.socket()
    fillers: list[socket.socket] = []
    try:
        hole.bind((host, 0))
        hole.listen(0)
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(hole.getsockname())
            fillers.append(f)
        yield hole.getsockname()
    finally:
        for f in fillers:
            f.close()
        hole.close()


async def push_until_held(s: socket.socket) -> int:
    """Send on ``s`` until sends have blocked for 0.5 s (or 256 MiB went); bytes sent."""
    s.setblocking(False)
    block = b"u" * 65536
    pushed = 0
    stalled_for = 0
    while stalled_for < 50 and pushed < 256 << 20:
        try:
            pushed += s.send(block)
            stalled_for = 0
        except BlockingIOError:
            stalled_for += 1
            await asyncio.sleep(0.01)
    return pushed


def add_dest(director: Director, key: object, addr: tuple[str, int], weight: int = 1) -> None:
    director.table.add_dest(
        key,  # type: ignore[arg-type]
        DestSpec(parse_address(addr[0]), addr[1], ForwardingMethod.MASQ, weight),
    )


@proxy_test
async def test_bytes_and_fin_sent_before_the_real_server_accepts_reach_the_next_one(
    director: Director,
) -> None:
    """The first choice never answers: what the client sent meanwhile, FIN included, waits in
    its socket and goes to the server the retry picks."""
    plane = ProxyDataPlane(director, connect_timeout=0.3)
    await plane.start()
    try:
        with black_hole("127.0.0.13") as hole:
            async with line_servers("A") as (a,):
                key = tcp_key(free_port(VIP))
                director.table.add_service(ServiceSpec(key, "rr"))
                add_dest(director, key, hole)  # the only choice for now
                r, w = await asyncio.open_connection(VIP, key.port)
                w.write(b"one\ntwo\n")
                w.write_eof()
                await until(lambda: plane.describe()["counters"]["tcp_relays"] == 1, "relay")
                director.table.add_dest(key, a.dest())  # there for the retry
                reply = await asyncio.wait_for(r.read(), TIMEOUT)
                w.close()
                assert reply == b"A:one\nA:two\nbye:A"
                counters = plane.describe()["counters"]
                assert counters["connect_failures"] == 1 and counters["retried"] == 1
    finally:
        await plane.stop()


@proxy_test
async def test_client_leaving_before_the_real_server_answers_ends_the_relay_at_once(
    director: Director,
) -> None:
    plane = ProxyDataPlane(director, connect_timeout=30.0)
    await plane.start()
    try:
        with black_hole("127.0.0.13") as hole:
            key = tcp_key(free_port(VIP))
            director.table.add_service(ServiceSpec(key, "rr"))
            add_dest(director, key, hole)
            s = socket.create_connection((VIP, key.port), timeout=TIMEOUT)
            s.sendall(b"waiting")
            await until(lambda: plane.describe()["counters"]["tcp_relays"] == 1, "relay up")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
            s.close()
            # Well before the 30 s connect timeout: the reset is noticed, not the timer.
            await until(lambda: plane.describe()["counters"]["tcp_relays"] == 0, "relay gone")
            (entry,) = director.connection_entries()
            assert entry.state == "CLOSE"  # never established
            assert plane.describe()["counters"]["connect_failures"] == 0
    finally:
        await plane.stop()


@proxy_test
async def test_only_silent_servers_reset_the_client_after_the_timeouts(
    director: Director,
) -> None:
    plane = ProxyDataPlane(director, connect_timeout=0.2, retries=1)
    await plane.start()
    try:
        with black_hole("127.0.0.13") as h1, black_hole("127.0.0.14") as h2:
            key = tcp_key(free_port(VIP))
            director.table.add_service(ServiceSpec(key, "rr"))
            add_dest(director, key, h1)
            add_dest(director, key, h2)

            def client() -> None:
                with socket.create_connection((VIP, key.port), timeout=TIMEOUT) as s:
                    s.recv(100)

            with pytest.raises(ConnectionResetError):
                await asyncio.get_running_loop().run_in_executor(None, client)
            counters = plane.describe()["counters"]
            assert counters["connect_failures"] == 2 and counters["refused"] == 1
            assert counters["tcp_relays"] == 0
    finally:
        await plane.stop()


@proxy_test
async def test_server_reset_is_passed_to_the_client(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        w.transport.abort()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        add_dest(director, key, ("127.0.0.11", srv.sockets[0].getsockname()[1]))
        r, w = await asyncio.open_connection(VIP, key.port)
        w.write(b"reset me\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(r.read(), TIMEOUT)
        w.close()
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relay gone")
    finally:
        srv.close()


@proxy_test(splice=False)
async def test_upload_to_a_server_that_stops_reading_is_held_back(
    director: Director, plane: ProxyDataPlane,
) -> None:
    """Backpressure client->server: the proxy stops reading the client, whose sends then block,
    instead of buffering what the server does not take."""
    release = asyncio.Event()
    received = 0

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        await release.wait()
        while chunk := await r.read(1 << 20):
            received += len(chunk)
        w.write(b"%d" % received)
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0, limit=65536)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        add_dest(director, key, ("127.0.0.11", srv.sockets[0].getsockname()[1]))
        s = socket.create_connection((VIP, key.port), timeout=TIMEOUT)
        pushed = await push_until_held(s)
        # Kernel buffers of both legs plus at most one read held in the proxy, not 256 MB.
        assert pushed < 64 << 20, pushed
        release.set()
        s.setblocking(True)
        s.shutdown(socket.SHUT_WR)
        reply = await asyncio.get_running_loop().run_in_executor(None, s.recv, 100)
        s.close()
        assert int(reply) == pushed  # nothing lost while held back
    finally:
        srv.close()


@proxy_test
async def test_relay_limit_resets_the_connections_beyond_it(director: Director) -> None:
    plane = ProxyDataPlane(director, max_tcp_relays=2)
    await plane.start()
    try:
        async with line_servers("A") as (a,):
            key = add_service(director, [a])
            held = [await asyncio.open_connection(VIP, key.port) for _ in range(2)]
            for r, w in held:
                w.write(b"x\n")
                assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"A:x\n"

            def client() -> None:
                with socket.create_connection((VIP, key.port), timeout=TIMEOUT) as s:
                    s.recv(100)

            with pytest.raises(ConnectionResetError):
                await asyncio.get_running_loop().run_in_executor(None, client)
            assert plane.describe()["counters"]["refused"] == 1
            for _, w in held:
                w.close()
            await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relays end")
            assert who(await ask(key.port)) == "A"  # room again
    finally:
        await plane.stop()


@proxy_test
async def test_twenty_spliced_downloads_at_once_keep_every_byte(
    director: Director, plane: ProxyDataPlane,
) -> None:
    size = 8 << 20

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seed = await r.readexactly(8)
        block = hashlib.sha256(seed).digest() * 2048  # 64 KiB, different per client
        for _ in range(size // len(block)):
            w.write(block)
            await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        add_dest(director, key, ("127.0.0.11", srv.sockets[0].getsockname()[1]))

        async def download(i: int) -> bool:
            seed = os.urandom(8)
            block = hashlib.sha256(seed).digest() * 2048
            want = hashlib.sha256(block * (size // len(block))).digest()
            r, w = await asyncio.open_connection(VIP, key.port)
            w.write(seed)
            got = hashlib.sha256()
            n = 0
            while chunk := await asyncio.wait_for(r.read(1 << 20), TIMEOUT):
                got.update(chunk)
                n += len(chunk)
            w.close()
            return n == size and got.digest() == want

        assert all(await asyncio.gather(*(download(i) for i in range(20))))
        assert plane.describe()["counters"]["spliced"] == 20
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relays end")
        st = director.table.get_service(key).stats  # each relay hands its counts over at its end
        assert st.outbytes == 20 * size and st.inbytes == 20 * 8
    finally:
        srv.close()


@proxy_test
async def test_finished_relays_are_freed_without_the_cyclic_collector(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A", "B") as (a, b):
        key = add_service(director, [a, b])
        gc.collect()
        gc.disable()
        try:
            for _ in range(50):
                assert who(await ask(key.port)) in ("A", "B")
            await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relays end")
            left = sum(isinstance(o, Relay) for o in gc.get_objects())
            assert left <= 1, left  # the module's finished-relay sentinel at most
        finally:
            gc.enable()
