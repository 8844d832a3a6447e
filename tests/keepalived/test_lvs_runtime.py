"""One keepalived.conf drives the director: services programmed, checked, listed by pylvsadm."""

from __future__ import annotations

import asyncio
import io
import random
from pathlib import Path

from pylvs.cli import ipvsadm
from pylvs.config import keepalived
from pylvs.config.keepalived import LVSConfig
from pylvs.control.client import ControlClient
from pylvs.health.checkers import interpret
from pylvs.keepalived.lvs_runtime import LVSRuntime

CONF = """
virtual_server {net}.100 {port} {{
    delay_loop 0.3
    lb_algo rr
    lb_kind NAT
    protocol TCP
    warmup 0
    real_server {net}.10 {port} {{
        weight {w1}
        TCP_CHECK {{
            connect_timeout 0.5
        }}
    }}
    real_server {net}.20 {port} {{
        weight 1
        TCP_CHECK {{
            connect_timeout 0.5
        }}
    }}
}}
"""


def lvs(net: str, port: int, w1: int = 1) -> LVSConfig:
    cfg = interpret(keepalived.parse_text(CONF.format(net=net, port=port, w1=w1), "k.conf").other)
    assert not cfg.errors
    return cfg


def pylvsadm(sock: str, *argv: str) -> str:
    out = io.StringIO()
    with ControlClient(sock) as client:
        rc = ipvsadm.main(list(argv), backend=client, stdout=out, stderr=io.StringIO())
    assert rc == 0
    return out.getvalue()


async def test_keepalived_conf_runs_the_director_with_checks_and_reload(tmp_path: Path) -> None:
    net = f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"rs1")
        await w.drain()
        w.close()

    rs1 = await asyncio.start_server(answer, f"{net}.10", 0)
    port = rs1.sockets[0].getsockname()[1]  # rs2 (.20) is never started: its check fails
    sock = str(tmp_path / "pylvs.sock")
    rt = LVSRuntime(lvs(net, port), sock, dataplane="proxy")
    await rt.start()
    try:
        for _ in range(200):
            listing = await asyncio.to_thread(pylvsadm, sock, "-Ln")
            if f"{net}.20" not in listing:
                break
            await asyncio.sleep(0.05)
        assert f"-> {net}.10:{port}" in listing and f"{net}.20" not in listing
        r, w = await asyncio.open_connection(f"{net}.100", port)
        assert await r.read() == b"rs1"
        w.close()
        status = await asyncio.to_thread(lambda: ControlClient(sock).call("checkers"))
        alive = {rs["address"]: rs["alive"] for rs in status[0]["real_servers"]}
        assert alive == {f"{net}.10:{port}": True, f"{net}.20:{port}": False}
        await rt.reload(lvs(net, port, w1=4))
        listing = await asyncio.to_thread(pylvsadm, sock, "-Ln")
        assert f"-> {net}.10:{port}" in listing and "Masq    4" in listing
    finally:
        await rt.stop()
        rs1.close()
