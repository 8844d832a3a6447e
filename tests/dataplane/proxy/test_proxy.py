"""The proxy data plane with real sockets on 127.0.0.0/8: a VIP on 127.0.0.100, real servers on
127.0.0.1x, a Director table in front, on uvloop (the daemon's loop) unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import os
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from pylvs.core.director import Director
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    parse_address,
)
from pylvs.dataplane.proxy import ProxyDataPlane

VIP = "127.0.0.100"
TIMEOUT = 20.0


# ---- real servers and clients -------------------------------------------------------------


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody uses at ``host`` right now (the VIP port of one test's service)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class LineServer:
    """A real server answering each line with ``<name>:<line>``, and ``bye:<name>`` at EOF."""

    def __init__(self, name: str, host: str) -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.connections = 0

    async def start(self) -> LineServer:
        self.server = await asyncio.start_server(self._handle, self.host, 0, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                w.write(self.name.encode() + b":" + line)
                await w.drain()
            w.write(b"bye:" + self.name.encode())
            await w.drain()
        except OSError:
            pass
        finally:
            w.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def dest(self, weight: int = 1) -> DestSpec:
        return DestSpec(parse_address(self.host), self.port, ForwardingMethod.MASQ, weight)


@contextlib.asynccontextmanager
async def line_servers(*names: str) -> AsyncIterator[list[LineServer]]:
    """Real servers A on 127.0.0.11, B on 127.0.0.12, ... on random ports."""
    servers: list[LineServer] = []
    try:
        for i, n in enumerate(names):
            servers.append(await LineServer(n, f"127.0.0.{11 + i}").start())
        yield servers
    finally:
        for s in servers:
            await s.close()


def tcp_key(port: int) -> ServiceKey:
    return ServiceKey.inet(6, VIP, port)


def add_service(
    director: Director, servers: list[LineServer], scheduler: str = "rr",
    weights: list[int] | None = None, **kw: Any,
) -> ServiceKey:
    key = tcp_key(free_port(VIP))
    director.table.add_service(ServiceSpec(key, scheduler, **kw))
    for i, s in enumerate(servers):
        director.table.add_dest(key, s.dest(weights[i] if weights else 1))
    return key


async def ask(port: int, line: bytes = b"hello\n") -> bytes:
    """One client connection through the VIP: send a line, half-close, read to the end."""
    r, w = await asyncio.wait_for(asyncio.open_connection(VIP, port), TIMEOUT)
    try:
        w.write(line)
        w.write_eof()
        return await asyncio.wait_for(r.read(), TIMEOUT)
    finally:
        w.close()


def who(reply: bytes) -> str:
    return reply.split(b":", 1)[0].decode()


def proxy_test(
    fn: Callable[..., Awaitable[None]] | None = None, *, loop: str = "uvloop",
    **plane_options: Any,
) -> Any:
    """Run an async test on a fresh loop (uvloop unless ``loop="asyncio"``), handing it a new
    ``director`` and, if it asks for one, a started ``plane`` (with ``plane_options``) that is
    stopped afterwards."""

    def deco(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
        sig = inspect.signature(fn)
        wants_plane = "plane" in sig.parameters

        def test(**kwargs: Any) -> None:
            async def main() -> None:
                director = Director()
                options = {"connect_timeout": 2.0, "housekeeping_interval": 0.2, **plane_options}
                plane = ProxyDataPlane(director, **options)
                if wants_plane:
                    await plane.start()
                    kwargs["plane"] = plane
                try:
                    await asyncio.wait_for(fn(director=director, **kwargs), 120)
                finally:
                    await plane.stop()

            if loop == "uvloop":
                uvloop.run(main())
            else:
                asyncio.run(main())

        test.__name__ = fn.__name__
        test.__doc__ = fn.__doc__
        test.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p for n, p in sig.parameters.items() if n not in ("director", "plane")]
        )
        return test

    return deco(fn) if fn is not None else deco


async def until(cond: Any, what: str) -> None:
    for _ in range(int(TIMEOUT / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---- scheduling through the proxy ---------------------------------------------------------


@proxy_test
async def test_rr_alternates_two_backends(director: Director, plane: ProxyDataPlane) -> None:
    async with line_servers("A", "B") as (a, b):
        key = add_service(director, [a, b], "rr")
        replies = [await ask(key.port) for _ in range(6)]
        names = [who(r) for r in replies]
        assert set(names) == {"A", "B"}
        assert all(names[i] != names[i + 1] for i in range(5)), names
        assert all(r.endswith(b"bye:" + n.encode()) for r, n in zip(replies, names, strict=True))


@proxy_test
async def test_wrr_sends_three_to_one(director: Director, plane: ProxyDataPlane) -> None:
    async with line_servers("A", "B") as (a, b):
        key = add_service(director, [a, b], "wrr", weights=[3, 1])
        counts = Counter([who(await ask(key.port)) for _ in range(40)])
        assert counts == {"A": 30, "B": 10}


@proxy_test
async def test_weight_zero_gets_no_new_connection_while_existing_one_keeps_working(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A", "B") as (a, b):
        key = add_service(director, [a, b], "rr")
        r, w = await asyncio.open_connection(VIP, key.port)
        w.write(b"first\n")
        first = await asyncio.wait_for(r.readline(), TIMEOUT)
        busy = a if who(first) == "A" else b
        other = b if busy is a else a
        director.table.edit_dest(key, busy.dest(weight=0))
        assert {who(await ask(key.port)) for _ in range(4)} == {other.name}
        w.write(b"second\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == busy.name.encode() + b":second\n"
        w.write_eof()
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b"bye:" + busy.name.encode()
        w.close()


@proxy_test
async def test_persistence_keeps_client_on_one_server(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A", "B", "C") as servers:
        key = add_service(
            director, servers, "rr", flags=ServiceFlags.PERSISTENT, timeout=60,
        )
        # Every connection comes from a new source port; the template pins the client address.
        (name,) = {who(await ask(key.port)) for _ in range(6)}
        (template,) = [e for e in director.connection_entries() if e.cport == 0]
        assert template.dport == next(s.port for s in servers if s.name == name)


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "lc", "wlc", "sed", "nq"])
@proxy_test
async def test_dead_backend_is_skipped_without_client_error(
    director: Director, plane: ProxyDataPlane, scheduler: str,
) -> None:
    async with line_servers("A", "B") as (a, b):
        key = add_service(director, [a, b], scheduler)
        await b.close()  # B's address stays in the table but nothing listens any more
        replies = [await ask(key.port) for _ in range(6)]
        assert [who(r) for r in replies] == ["A"] * 6
        assert plane.describe()["counters"]["connect_failures"] >= 1
        # Nothing was marked in the core: B keeps its weight until a health check says otherwise.
        assert {d.spec.weight for d in director.table.get_service(key).dests} == {1}


@proxy_test
async def test_connect_timeout_to_silent_backend_retries_elsewhere(
    director: Director,
) -> None:
    # A listening socket with a full backlog never completes the handshake: a black hole.
    hole = socket.socket()
    hole.bind(("127.0.0.13", 0))
    hole.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            f.connect(hole.getsockname())
        fillers.append(f)
    p = ProxyDataPlane(director, connect_timeout=0.3)
    await p.start()
    try:
        async with line_servers("A") as (a,):
            key = add_service(director, [a], "rr")
            director.table.add_dest(
                key, DestSpec(parse_address("127.0.0.13"), hole.getsockname()[1],
                              ForwardingMethod.MASQ, 1),
            )
            assert {who(await ask(key.port)) for _ in range(4)} == {"A"}
    finally:
        await p.stop()
        for f in fillers:
            f.close()
        hole.close()


@proxy_test
async def test_no_server_resets_the_client_at_once(
    director: Director, plane: ProxyDataPlane,
) -> None:
    key = tcp_key(free_port(VIP))
    director.table.add_service(ServiceSpec(key, "rr"))  # no real server at all

    def client() -> None:
        with socket.create_connection((VIP, key.port), timeout=TIMEOUT) as s:
            s.recv(100)  # an orderly close (b"") would not raise: the proxy must reset

    with pytest.raises(ConnectionResetError):
        await asyncio.get_running_loop().run_in_executor(None, client)
    assert plane.describe()["counters"]["refused"] == 1


# ---- stream behaviour ---------------------------------------------------------------------


@proxy_test
async def test_half_close_client_shuts_write_and_still_receives_the_reply(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        r, w = await asyncio.open_connection(VIP, key.port)
        w.write(b"one\ntwo\n")
        w.write_eof()  # shutdown(SHUT_WR): the server only answers "bye" after seeing it
        data = await asyncio.wait_for(r.read(), TIMEOUT)
        assert data == b"A:one\nA:two\nbye:A"
        w.close()


@proxy_test
async def test_half_close_by_server_reaches_client_which_can_still_send(
    director: Director, plane: ProxyDataPlane,
) -> None:
    got: list[bytes] = []
    done = asyncio.Event()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"banner\n")
        w.write_eof()  # the server is done talking but keeps listening
        got.append(await r.read())
        done.set()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        director.table.add_dest(key, DestSpec(
            parse_address("127.0.0.11"), srv.sockets[0].getsockname()[1], ForwardingMethod.MASQ,
        ))
        r, w = await asyncio.open_connection(VIP, key.port)
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b"banner\n"  # EOF seen
        w.write(b"after the server's FIN")
        w.write_eof()
        await asyncio.wait_for(done.wait(), TIMEOUT)
        assert got == [b"after the server's FIN"]
        w.close()
    finally:
        srv.close()


async def transfer_both_ways(director: Director, plane: ProxyDataPlane) -> None:
    """50 MB up, then 50 MB down, through the proxy, checked by SHA-256 at both ends."""
    size = 50 * 1024 * 1024
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    for _ in range(size // len(block)):
        sent.update(block)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        # Upload first (hashed), then the same 50 MB back down, then the upload's digest.
        h = hashlib.sha256()
        while chunk := await r.read(1 << 20):
            h.update(chunk)
        for _ in range(size // len(block)):
            w.write(block)
            await w.drain()
        w.write(h.digest())
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        director.table.add_dest(key, DestSpec(
            parse_address("127.0.0.11"), srv.sockets[0].getsockname()[1], ForwardingMethod.MASQ,
        ))
        r, w = await asyncio.open_connection(VIP, key.port)
        for _ in range(size // len(block)):
            w.write(block)
            await w.drain()
        w.write_eof()
        down = hashlib.sha256()
        n = 0
        while n < size:
            chunk = await asyncio.wait_for(r.read(min(1 << 20, size - n)), TIMEOUT)
            assert chunk
            down.update(chunk)
            n += len(chunk)
        upload_digest = await asyncio.wait_for(r.read(), TIMEOUT)
        w.close()
        assert down.digest() == sent.digest()
        assert upload_digest == sent.digest()
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relay end")
        st = director.table.get_service(key).stats
        assert st.inbytes == size and st.outbytes == size + 32
    finally:
        srv.close()


@proxy_test
async def test_large_transfer_keeps_every_byte_both_ways_through_splice(
    director: Director, plane: ProxyDataPlane,
) -> None:
    await transfer_both_ways(director, plane)
    assert plane.describe()["counters"]["spliced"] == 2  # both directions went zero-copy


@proxy_test(splice=False)
async def test_large_transfer_keeps_every_byte_both_ways_through_transports(
    director: Director, plane: ProxyDataPlane,
) -> None:
    await transfer_both_ways(director, plane)
    assert plane.describe()["counters"]["spliced"] == 0


@proxy_test(loop="asyncio")
async def test_large_transfer_on_the_default_loop(
    director: Director, plane: ProxyDataPlane,
) -> None:
    await transfer_both_ways(director, plane)


@proxy_test
async def test_client_reset_during_a_spliced_download_resets_the_server(
    director: Director, plane: ProxyDataPlane,
) -> None:
    ended: list[str] = []
    block = b"y" * (1 << 20)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            for _ in range(2000):  # bounded: 2 GB at most
                w.write(block)
                await w.drain()
            ended.append("finished")
        except OSError:
            ended.append("reset")
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        director.table.add_dest(key, DestSpec(
            parse_address("127.0.0.11"), srv.sockets[0].getsockname()[1], ForwardingMethod.MASQ,
        ))
        r, w = await asyncio.open_connection(VIP, key.port)
        got = 0
        while got < 8 << 20:
            got += len(await asyncio.wait_for(r.read(1 << 20), TIMEOUT))
        assert plane.describe()["counters"]["spliced"] == 1
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        w.transport.abort()
        await until(lambda: bool(ended), "server notices")
        assert ended == ["reset"]
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relay gone")
    finally:
        srv.close()


@proxy_test
async def test_slow_client_pauses_the_server_side_instead_of_buffering(
    director: Director, plane: ProxyDataPlane,
) -> None:
    pushed = 0
    block = b"x" * 65536

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal pushed
        with contextlib.suppress(OSError):
            for _ in range(4096):  # up to 256 MB if nothing pushed back
                w.write(block)
                await w.drain()
                pushed += len(block)
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        director.table.add_dest(key, DestSpec(
            parse_address("127.0.0.11"), srv.sockets[0].getsockname()[1], ForwardingMethod.MASQ,
        ))
        _r, w = await asyncio.open_connection(VIP, key.port, limit=65536)
        await until(lambda: pushed > 0, "server writing")
        await asyncio.sleep(1.0)  # the client reads nothing meanwhile
        # Kernel socket buffers on both legs plus at most one read held in the proxy, not 256 MB.
        assert pushed < 64 * 1024 * 1024, pushed
        w.close()
    finally:
        srv.close()


@proxy_test
async def test_client_reset_is_passed_to_the_server(
    director: Director, plane: ProxyDataPlane,
) -> None:
    lost: list[str] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while await r.read(65536):
                pass
            lost.append("eof")
        except ConnectionResetError:
            lost.append("reset")
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.11", 0)
    try:
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        director.table.add_dest(key, DestSpec(
            parse_address("127.0.0.11"), srv.sockets[0].getsockname()[1], ForwardingMethod.MASQ,
        ))
        s = socket.create_connection((VIP, key.port), timeout=TIMEOUT)
        s.sendall(b"some bytes")
        await until(lambda: plane.describe()["counters"]["tcp_relays"] == 1, "relay up")
        await asyncio.sleep(0.1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
        await until(lambda: bool(lost), "server notices")
        assert lost == ["reset"]
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relay gone")
    finally:
        srv.close()


@proxy_test
async def test_abusive_clients_cannot_break_the_proxy(
    director: Director, plane: ProxyDataPlane,
) -> None:
    """Random bytes, early closes, resets and half-closes from 300 clients at once; afterwards
    the proxy still serves and every relay is gone."""
    rnd = random.Random(4242)
    async with line_servers("A", "B") as (a, b):
        key = add_service(director, [a, b])

        async def abuse(i: int) -> None:
            action = rnd.choice(["garbage", "reset", "close", "halfclose", "nothing"])
            payload = rnd.randbytes(rnd.randint(0, 200_000))
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(VIP, key.port), TIMEOUT)
            except OSError:
                return
            try:
                if action in ("garbage", "halfclose"):
                    w.write(payload)
                if action == "halfclose":
                    w.write_eof()
                    with contextlib.suppress(OSError):
                        await asyncio.wait_for(r.read(), TIMEOUT)
                if action == "reset":
                    w.write(payload[:1000])
                    w.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2,
                    )
                    w.transport.abort()
                    return
                await asyncio.sleep(rnd.random() * 0.05)
            finally:
                w.close()

        await asyncio.gather(*(abuse(i) for i in range(300)))
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relays drain")
        assert who(await ask(key.port)) in ("A", "B")
        dests = director.table.get_service(key).dests
        assert sum(d.activeconns for d in dests) == 0


@proxy_test
async def test_ipv6_vip_is_proxied(director: Director, plane: ProxyDataPlane) -> None:
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 on this host")
    srv = await asyncio.start_server(
        lambda r, w: (w.write(b"v6 ok"), w.close()), "::1", 0,  # type: ignore[func-returns-value]
    )
    try:
        port = free_port6()
        key = ServiceKey.inet(6, "::1", port)
        director.table.add_service(ServiceSpec(key, "rr"))
        director.table.add_dest(key, DestSpec(
            parse_address("::1"), srv.sockets[0].getsockname()[1], ForwardingMethod.MASQ,
        ))
        r, w = await asyncio.open_connection("::1", port)
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b"v6 ok"
        w.close()
        (entry,) = director.connection_entries()
        assert str(entry.caddr) == "::1" and entry.vport == port
    finally:
        srv.close()


def free_port6() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- following the table ------------------------------------------------------------------


@proxy_test
async def test_service_added_and_deleted_while_running_opens_and_closes_its_listener(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        assert who(await ask(key.port)) == "A"
        # A connection in flight survives the deletion of its service, as in IPVS.
        r, w = await asyncio.open_connection(VIP, key.port)
        w.write(b"before\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"A:before\n"
        director.table.del_service(key)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(VIP, key.port)
        w.write(b"after\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"A:after\n"
        w.close()
        assert plane.describe()["listeners"] == []


async def add_then_delete_at_once(director: Director, plane: ProxyDataPlane) -> None:
    for _ in range(20):
        key = tcp_key(free_port(VIP))
        director.table.add_service(ServiceSpec(key, "rr"))
        director.table.del_service(key)  # before the listener's set-up has run
        await asyncio.sleep(0.01)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(VIP, key.port)
    assert plane.describe()["listeners"] == []


@proxy_test
async def test_service_added_and_deleted_in_one_go_leaves_no_listener(
    director: Director, plane: ProxyDataPlane,
) -> None:
    await add_then_delete_at_once(director, plane)


@proxy_test(loop="asyncio")
async def test_service_added_and_deleted_in_one_go_on_the_default_loop(
    director: Director, plane: ProxyDataPlane,
) -> None:
    await add_then_delete_at_once(director, plane)


@proxy_test
async def test_fwmark_and_port_zero_services_are_skipped_and_reported(
    director: Director, plane: ProxyDataPlane,
) -> None:
    director.table.add_service(ServiceSpec(ServiceKey.mark(7), "rr"))
    director.table.add_service(ServiceSpec(
        tcp_key(0), "rr", flags=ServiceFlags.PERSISTENT, timeout=60,
    ))
    skipped = plane.describe()["skipped"]
    assert set(skipped) == {"FWM 7", f"TCP {VIP}:0"}
    assert plane.describe()["listeners"] == []


@proxy_test
async def test_vip_port_taken_is_reported_not_fatal(
    director: Director, plane: ProxyDataPlane,
) -> None:
    squatter = socket.socket()
    squatter.bind((VIP, 0))
    squatter.listen(1)
    try:
        key = tcp_key(squatter.getsockname()[1])
        director.table.add_service(ServiceSpec(key, "rr"))
        (lst,) = plane.describe()["listeners"]
        assert lst["state"] == "error" and "cannot bind" in lst["error"]
    finally:
        squatter.close()


@proxy_test
async def test_stop_closes_listeners_and_relays(director: Director) -> None:
    plane = ProxyDataPlane(director)
    await plane.start()
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        r, w = await asyncio.open_connection(VIP, key.port)
        w.write(b"x\n")
        assert await asyncio.wait_for(r.readline(), TIMEOUT) == b"A:x\n"
        follower = plane._follower
        await plane.stop()
        assert follower not in director.table.listeners
        assert await asyncio.wait_for(r.read(), TIMEOUT) == b""  # the relay was dropped
        w.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(VIP, key.port)
        assert plane.describe()["running"] is False


# ---- counters -----------------------------------------------------------------------------


@proxy_test
async def test_counters_and_active_inactive_connections_as_ipvsadm_lists_them(
    director: Director, plane: ProxyDataPlane,
) -> None:
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        r, w = await asyncio.open_connection(VIP, key.port)
        received = b""
        for line in (b"one\n", b"two\n", b"three\n"):
            w.write(line)
            received += await asyncio.wait_for(r.readline(), TIMEOUT)
        (entry,) = director.connection_entries()
        assert entry.state == "ESTABLISHED" and entry.dport == a.port
        (dest,) = director.table.get_service(key).dests
        assert (dest.activeconns, dest.inactconns) == (1, 0)
        plane.flush_stats()
        st = director.table.get_service(key).stats
        assert st.conns == 1
        assert st.inbytes == len(b"one\ntwo\nthree\n") and st.outbytes == len(received)
        assert st.inpkts == 3 and st.outpkts == 3
        w.write_eof()
        tail = await asyncio.wait_for(r.read(), TIMEOUT)
        w.close()
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "relay end")
        (entry,) = director.connection_entries()
        assert entry.state == "TIME_WAIT"
        (dest,) = director.table.get_service(key).dests
        assert (dest.activeconns, dest.inactconns) == (0, 1)
        st = director.table.get_service(key).stats
        assert st.outbytes == len(received) + len(tail)
        assert director.table.total.conns == 1


@proxy_test
async def test_two_thousand_concurrent_connections(
    director: Director, plane: ProxyDataPlane,
) -> None:
    n = 2000
    async with line_servers("A", "B") as (a, b):
        key = add_service(director, [a, b])
        sem = asyncio.Semaphore(256)  # bounded connect rate; all n stay open together

        async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with sem:
                return await asyncio.wait_for(asyncio.open_connection(VIP, key.port), TIMEOUT)

        conns = await asyncio.gather(*(open_one() for _ in range(n)))
        try:
            for i, (_, w) in enumerate(conns):
                w.write(b"%d\n" % i)
            replies = await asyncio.gather(
                *(asyncio.wait_for(r.readline(), TIMEOUT) for r, _ in conns)
            )
            assert [rep.split(b":")[1] for rep in replies] == [b"%d\n" % i for i in range(n)]
            assert plane.describe()["counters"]["tcp_relays"] == n
            dests = director.table.get_service(key).dests
            assert sum(d.activeconns for d in dests) == n
            assert {d.activeconns for d in dests} == {n // 2}
        finally:
            for _, w in conns:
                w.close()
        await until(lambda: not plane.describe()["counters"]["tcp_relays"], "all relays end")


# ---- UDP ----------------------------------------------------------------------------------


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: bytes) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.peers: set[Any] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.peers.add(addr)
        assert self.transport is not None
        self.transport.sendto(self.name + b":" + data, addr)


@proxy_test
async def test_udp_echo_through_the_proxy_answers_from_the_vip(
    director: Director, plane: ProxyDataPlane,
) -> None:
    loop = asyncio.get_running_loop()
    ta, ea = await loop.create_datagram_endpoint(lambda: UdpEcho(b"A"), ("127.0.0.11", 0))
    tb, eb = await loop.create_datagram_endpoint(lambda: UdpEcho(b"B"), ("127.0.0.12", 0))
    clients: list[socket.socket] = []
    try:
        port = free_port(VIP, socket.SOCK_DGRAM)
        key = ServiceKey.inet(17, VIP, port)
        director.table.add_service(ServiceSpec(key, "rr"))
        for t in (ta, tb):
            host, p = t.get_extra_info("sockname")
            director.table.add_dest(key, DestSpec(parse_address(host), p, ForwardingMethod.MASQ))
        names = []
        for i in range(4):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.settimeout(TIMEOUT)
            clients.append(c)
            for j in range(3):  # one flow per client address: the same server every time
                msg = b"c%d-%d" % (i, j)
                c.sendto(msg, (VIP, port))
                data, src = await loop.run_in_executor(None, c.recvfrom, 2048)
                assert src == (VIP, port)
                assert data.endswith(b":" + msg)
                names.append((i, data[:1]))
        per_client = {i: {n for k, n in names if k == i} for i in range(4)}
        assert all(len(v) == 1 for v in per_client.values())
        assert Counter(next(iter(v)) for v in per_client.values()) == {b"A": 2, b"B": 2}
        assert len(ea.peers | eb.peers) == 4  # four flows, four upstream sockets
        entries = [e for e in director.connection_entries() if e.protocol == 17]
        assert len(entries) == 4 and {e.state for e in entries} == {"UDP"}
        st = director.table.get_service(key).stats
        assert (st.conns, st.inpkts, st.outpkts) == (4, 12, 12)
    finally:
        for c in clients:
            c.close()
        ta.close()
        tb.close()


@proxy_test
async def test_udp_flow_closes_after_the_udp_timeout(director: Director) -> None:
    loop = asyncio.get_running_loop()
    ta, _ = await loop.create_datagram_endpoint(lambda: UdpEcho(b"A"), ("127.0.0.11", 0))
    director.table.set_timeouts(Timeouts(0, 0, 1))
    p = ProxyDataPlane(director, housekeeping_interval=0.1)
    await p.start()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(TIMEOUT)
    try:
        port = free_port(VIP, socket.SOCK_DGRAM)
        key = ServiceKey.inet(17, VIP, port)
        director.table.add_service(ServiceSpec(key, "rr"))
        host, hp = ta.get_extra_info("sockname")
        director.table.add_dest(key, DestSpec(parse_address(host), hp, ForwardingMethod.MASQ))
        c.sendto(b"ping", (VIP, port))
        await loop.run_in_executor(None, c.recvfrom, 2048)
        assert p.describe()["counters"]["udp_flows"] == 1
        await until(lambda: p.describe()["counters"]["udp_flows"] == 0, "flow expiry")
        await until(lambda: not director.connection_entries(), "core entry expiry")
    finally:
        c.close()
        await p.stop()
        ta.close()


@proxy_test
async def test_udp_flows_are_bounded(director: Director) -> None:
    loop = asyncio.get_running_loop()
    ta, _ = await loop.create_datagram_endpoint(lambda: UdpEcho(b"A"), ("127.0.0.11", 0))
    p = ProxyDataPlane(director, max_udp_flows=3)
    await p.start()
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(6)]
    try:
        port = free_port(VIP, socket.SOCK_DGRAM)
        key = ServiceKey.inet(17, VIP, port)
        director.table.add_service(ServiceSpec(key, "rr"))
        host, hp = ta.get_extra_info("sockname")
        director.table.add_dest(key, DestSpec(parse_address(host), hp, ForwardingMethod.MASQ))
        for c in clients:
            c.sendto(b"x", (VIP, port))
        await until(lambda: p.describe()["counters"]["udp_dropped"] == 3, "drops")
        assert p.describe()["counters"]["udp_flows"] == 3
    finally:
        for c in clients:
            c.close()
        await p.stop()
        ta.close()


# ---- the plain asyncio loop ---------------------------------------------------------------


@proxy_test(loop="asyncio")
async def test_rr_and_dead_backend_on_the_default_loop(
    director: Director, plane: ProxyDataPlane,
) -> None:
    assert not isinstance(asyncio.get_running_loop(), uvloop.Loop)
    async with line_servers("A", "B", "C") as (a, b, c):
        key = add_service(director, [a, b, c], "rr")
        await c.close()
        names = [who(await ask(key.port)) for _ in range(6)]
        assert set(names) == {"A", "B"}


@proxy_test(loop="asyncio")
async def test_half_close_on_the_default_loop(director: Director, plane: ProxyDataPlane) -> None:
    async with line_servers("A") as (a,):
        key = add_service(director, [a])
        assert await ask(key.port, b"x\ny\n") == b"A:x\nA:y\nbye:A"
