"""Health checks driving a live table: a real server stops, leaves the table, comes back.

Real HTTP servers on loopback, the real Director table and, for the client's view, the proxy
data plane forwarding real connections while a server dies.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

import pytest

from pylvs.config import keepalived
from pylvs.config.keepalived import LVSConfig
from pylvs.core.director import Director
from pylvs.core.model import ServiceKey
from pylvs.core.table import IPVSTable
from pylvs.dataplane.proxy import ProxyDataPlane
from pylvs.health.checkers import interpret
from pylvs.health.checkers.base import CheckResult
from pylvs.health.manager import HealthManager


class Backend:
    """An HTTP server that can be stopped and started again on the same address."""

    def __init__(self, addr: str, port: int, body: bytes) -> None:
        self.addr, self.port, self.body = addr, port, body
        self.server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(self.body), self.body))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.addr, self.port, reuse_address=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def pair() -> AsyncIterator[tuple[str, int, list[Backend]]]:
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    first = Backend(f"{net}.10", 0, b"this is nginx1\n")
    await first.start()
    assert first.server is not None
    port = first.server.sockets[0].getsockname()[1]
    first.port = port
    second = Backend(f"{net}.20", port, b"this is nginx2\n")
    await second.start()
    yield net, port, [first, second]
    for b in (first, second):
        await b.stop()


def conf(net: str, port: int, rs_extra: str = "", vs_extra: str = "", check: str = "") -> LVSConfig:
    check = check or """TCP_CHECK {
                connect_timeout 0.5
                retry 1
                delay_before_retry 0.2
            }"""
    text = f"""
virtual_server {net}.100 {port} {{
    delay_loop 0.3
    lb_algo rr
    lb_kind NAT
    protocol TCP
    warmup 0
    {vs_extra}
    real_server {net}.10 {port} {{
        weight 1
        {rs_extra}
        {check}
    }}
    real_server {net}.20 {port} {{
        weight 1
        {check}
    }}
}}
"""
    lvs = interpret(keepalived.parse_text(text, "t.conf").other)
    assert not lvs.errors, lvs.errors
    return lvs


def dests(table: IPVSTable, net: str, port: int) -> dict[str, int]:
    svc = table.get_service(ServiceKey.inet(6, f"{net}.100", port))
    return {str(d.spec.addr): d.spec.weight for d in svc.dests}


async def wait_for(pred, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not pred():
        assert loop.time() - t0 < timeout, "condition not reached"
        await asyncio.sleep(0.02)
    return loop.time() - t0


async def test_stopped_server_leaves_the_table_and_returns_when_started(pair: tuple[str, int, list[Backend]]) -> None:
    net, port, (rs1, _) = pair
    table = IPVSTable()
    mgr = HealthManager(table, conf(net, port))
    await mgr.start()
    try:
        assert dests(table, net, port) == {f"{net}.10": 1, f"{net}.20": 1}
        await rs1.stop()
        # bound from the issue: delay_loop + connect_timeout x (retry + 1), plus scheduling slack
        took = await wait_for(lambda: f"{net}.10" not in dests(table, net, port))
        assert took < 0.3 + 0.5 * 2 + 1.0
        status = mgr.status()[0]["real_servers"]
        assert [r["alive"] for r in status] == [False, True]
        await rs1.start()
        await wait_for(lambda: f"{net}.10" in dests(table, net, port))
    finally:
        await mgr.stop()


async def test_inhibit_on_failure_sets_weight_zero_instead_of_removing(pair: tuple[str, int, list[Backend]]) -> None:
    net, port, (rs1, _) = pair
    table = IPVSTable()
    mgr = HealthManager(table, conf(net, port, rs_extra="inhibit_on_failure"))
    await mgr.start()
    try:
        await rs1.stop()
        await wait_for(lambda: dests(table, net, port).get(f"{net}.10") == 0)
        await rs1.start()
        await wait_for(lambda: dests(table, net, port).get(f"{net}.10") == 1)
    finally:
        await mgr.stop()


async def test_http_digest_mismatch_marks_the_server_down(pair: tuple[str, int, list[Backend]]) -> None:
    net, port, _ = pair
    digest = hashlib.md5(b"this is nginx1\n").hexdigest()
    check = f"""HTTP_GET {{
                url {{
                    path /
                    digest {digest}
                }}
                connect_timeout 0.5
                retry 0
            }}"""
    table = IPVSTable()
    mgr = HealthManager(table, conf(net, port, check=check))
    await mgr.start()
    try:
        # nginx2 serves another page: its digest differs, it must leave the table
        await wait_for(lambda: dests(table, net, port) == {f"{net}.10": 1})
    finally:
        await mgr.stop()


async def test_sorry_server_takes_over_when_none_is_left(pair: tuple[str, int, list[Backend]], tmp_path) -> None:  # type: ignore[no-untyped-def]
    net, port, backends = pair
    marker = tmp_path / "quorum"
    table = IPVSTable()
    mgr = HealthManager(table, conf(
        net, port, vs_extra=f'sorry_server {net}.99 {port}\n quorum_down "touch {marker}"'))
    await mgr.start()
    try:
        for b in backends:
            await b.stop()
        await wait_for(lambda: dests(table, net, port) == {f"{net}.99": 1})
        await wait_for(marker.exists)
        for b in backends:
            await b.start()
        await wait_for(lambda: dests(table, net, port) == {f"{net}.10": 1, f"{net}.20": 1})
    finally:
        await mgr.stop()


async def test_reload_changes_only_the_difference(pair: tuple[str, int, list[Backend]]) -> None:
    net, port, _ = pair
    director = Director(IPVSTable())
    table = director.table
    mgr = HealthManager(table, conf(net, port))
    await mgr.start()
    try:
        svc = table.lookup(ServiceKey.inet(6, f"{net}.100", port))
        assert svc is not None
        rs2_before = svc.find_dest(svc.destinations[0].addr.__class__(f"{net}.20"), port)
        changes = mgr.changes
        new = conf(net, port, rs_extra="weight 5")
        await mgr.reload(new)
        assert dests(table, net, port) == {f"{net}.10": 5, f"{net}.20": 1}
        assert mgr.changes == changes + 1  # one edit_dest, nothing else touched
        rs2_after = svc.find_dest(rs2_before.addr, port) if rs2_before else None
        assert rs2_after is rs2_before  # the same live object: its connections survive
    finally:
        await mgr.stop()


async def test_client_sees_no_failed_request_while_a_server_dies(pair: tuple[str, int, list[Backend]]) -> None:
    net, port, (rs1, _) = pair
    director = Director(IPVSTable())
    mgr = HealthManager(director.table, conf(net, port))
    await mgr.start()
    plane = ProxyDataPlane(director, connect_timeout=0.5, retries=2)
    await plane.start()
    failures = 0
    answers: dict[bytes, int] = {}

    async def one() -> None:
        nonlocal failures
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(f"{net}.100", port), 2)
            w.write(b"GET / HTTP/1.0\r\n\r\n")
            data = await asyncio.wait_for(r.read(), 3)
            w.close()
            body = data.split(b"\r\n\r\n", 1)[-1]
            answers[body] = answers.get(body, 0) + 1
            if not body:
                failures += 1
        except (OSError, TimeoutError):
            failures += 1

    try:
        await wait_for(lambda: plane.describe().get("listeners", 1) != 0, 5)
        for i in range(120):
            if i == 30:
                await rs1.stop()
            await one()
            await asyncio.sleep(0.01)
        assert failures == 0
        assert answers.get(b"this is nginx2\n", 0) > 60
        assert f"{net}.10" not in dests(director.table, net, port)
    finally:
        await plane.stop()
        await mgr.stop()


async def test_ha_suspend_stops_checking_while_the_vip_is_not_local(pair: tuple[str, int, list[Backend]]) -> None:
    net, port, (rs1, _) = pair
    lvs = conf(net, port, vs_extra="ha_suspend")
    # a VIP outside loopback that this host does not hold (never sent to: only bound)
    vs = lvs.virtual_servers[0]
    from dataclasses import replace

    from pylvs.core.model import ServiceKey as K
    foreign = replace(vs.services[0], key=K.inet(6, "192.0.2.100", port))
    lvs.virtual_servers[0] = replace(vs, services=(foreign,))
    table = IPVSTable()
    mgr = HealthManager(table, lvs)
    await mgr.start()
    try:
        await rs1.stop()
        await asyncio.sleep(1.5)  # several delay_loops: a checking director would have reacted
        svc = table.get_service(foreign.key)
        assert {str(d.spec.addr) for d in svc.dests} == {f"{net}.10", f"{net}.20"}
        results = [c["last_result"] for r in mgr.status()[0]["real_servers"] for c in r["checkers"]]
        assert all("ha_suspend" in r for r in results)
    finally:
        await mgr.stop()


async def test_file_check_drains_a_server_and_moves_its_weight(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"
    drain, load = tmp_path / "drain", tmp_path / "load"
    text = f"""
track_file drain {{
    file {drain}
    weight 0
}}
track_file load {{
    file {load}
}}
virtual_server {net}.100 80 {{
    lb_algo wrr
    lb_kind DR
    real_server {net}.10 80 {{
        weight 5
        FILE_CHECK {{
            track_file drain
        }}
        FILE_CHECK {{
            track_file load
            weight -1
            dynamic
        }}
    }}
}}
"""
    cfg = keepalived.parse_text(text, "f.conf")
    lvs = interpret(cfg.other, cfg.track_files)
    assert not lvs.errors, lvs.errors
    table = IPVSTable()
    mgr = HealthManager(table, lvs)
    await mgr.start()
    try:
        await wait_for(lambda: dests(table, net, 80) == {f"{net}.10": 5})
        load.write_text("2\n")  # 5 + 2 x -1
        await wait_for(lambda: dests(table, net, 80) == {f"{net}.10": 3}, timeout=5)
        drain.write_text("1\n")  # any non-zero value with weight 0: the server leaves
        await wait_for(lambda: dests(table, net, 80) == {}, timeout=5)
        drain.unlink()  # a missing file reads 0
        await wait_for(lambda: dests(table, net, 80) == {f"{net}.10": 3}, timeout=5)
    finally:
        await mgr.stop()


async def test_a_checker_stops_even_when_its_probe_swallows_the_cancellation(
        pair: tuple[str, int, list[Backend]]) -> None:
    """Python 3.11's asyncio.wait_for, which every probe's timeout is, returns the result and
    drops a cancellation that comes as the probe finishes. A checker cancelled then (a stop, a
    reload) must still end: before, its loop went on and the stop waited for ever."""
    net, port, _backends = pair
    entered = asyncio.Event()

    async def swallowing(cfg: object) -> CheckResult:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # what wait_for does when the awaited call completed at the same moment
        return CheckResult(True, "connected")

    table = IPVSTable()
    mgr = HealthManager(table, conf(net, port), probe=swallowing)
    await mgr.start()
    await asyncio.wait_for(entered.wait(), 10)
    await asyncio.wait_for(mgr.stop(), 10)
