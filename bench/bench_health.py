"""Real-server failure: how fast pylvs' checkers take a dead server out, and what a client sees.

Run: ``make bench-health`` (or ``python bench/bench_health.py``). Loopback only, bounded.

Two HTTP real servers behind the proxy data plane, checked with TCP_CHECK from a keepalived.conf;
a client makes back-to-back requests through the VIP while RS1 is stopped at a random moment, then
started again, several times. For each failure it records the detection time (stop -> RS1 out of
the table) and the requests that failed. Beside it: the detection bounds keepalived's own timers
give for the same file (it cannot run here without kernel IPVS): a refused connect is seen at the
next check, at most delay_loop away, then each of ``retry`` retries waits delay_before_retry.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from rich.console import Console
from rich.table import Table

from pylvs.config import keepalived
from pylvs.core.director import Director
from pylvs.core.model import ServiceKey
from pylvs.core.table import IPVSTable
from pylvs.dataplane.proxy import ProxyDataPlane
from pylvs.health.checkers import interpret
from pylvs.health.manager import HealthManager

NET = "127.0.77"
CONF = """
virtual_server {net}.100 {port} {{
    delay_loop {delay_loop}
    lb_algo rr
    lb_kind NAT
    warmup 0
    real_server {net}.10 {port} {{
        TCP_CHECK {{
            connect_timeout {connect_timeout}
            retry {retry}
            delay_before_retry {dbr}
        }}
    }}
    real_server {net}.20 {port} {{
        TCP_CHECK {{
            connect_timeout {connect_timeout}
            retry {retry}
            delay_before_retry {dbr}
        }}
    }}
}}
"""


async def _answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()


async def run(trials: int, delay_loop: float, connect_timeout: float, retry: int, dbr: float) -> dict[str, float]:
    rs2 = await asyncio.start_server(_answer, f"{NET}.20", 0)
    port = rs2.sockets[0].getsockname()[1]
    rs1 = await asyncio.start_server(_answer, f"{NET}.10", port, reuse_address=True)
    text = CONF.format(net=NET, port=port, delay_loop=delay_loop, connect_timeout=connect_timeout,
                       retry=retry, dbr=dbr)
    lvs = interpret(keepalived.parse_text(text, "bench.conf").other)
    director = Director(IPVSTable())
    mgr = HealthManager(director.table, lvs)
    await mgr.start()
    plane = ProxyDataPlane(director, connect_timeout=0.5, retries=2)
    await plane.start()
    key = ServiceKey.inet(6, f"{NET}.100", port)
    requests = failures = 0
    stop = False

    async def client() -> None:
        nonlocal requests, failures
        while not stop:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(f"{NET}.100", port), 2)
                w.write(b"GET / HTTP/1.0\r\n\r\n")
                data = await asyncio.wait_for(r.read(), 2)
                w.close()
                if not data.endswith(b"ok"):
                    failures += 1
            except (OSError, TimeoutError):
                failures += 1
            requests += 1

    def has_rs1() -> bool:
        return any(str(d.spec.addr) == f"{NET}.10" for d in director.table.get_service(key).dests)

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(client())
    detections: list[float] = []
    fail_counts: list[int] = []
    try:
        for _ in range(trials):
            await asyncio.sleep(random.uniform(0, delay_loop))
            before = failures
            rs1.close()
            await rs1.wait_closed()
            t0 = loop.time()
            while has_rs1():
                await asyncio.sleep(0.005)
                if loop.time() - t0 > 60:
                    raise RuntimeError("RS1 never left the table")
            detections.append(loop.time() - t0)
            fail_counts.append(failures - before)
            rs1 = await asyncio.start_server(_answer, f"{NET}.10", port, reuse_address=True)
            while not has_rs1():
                await asyncio.sleep(0.01)
    finally:
        stop = True
        await task
        await plane.stop()
        await mgr.stop()
        rs1.close()
        rs2.close()
    return {
        "mean": statistics.mean(detections), "max": max(detections),
        "failed": sum(fail_counts), "requests": requests,
        "ka_min": retry * dbr, "ka_max": delay_loop + retry * dbr,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    console = Console()
    table = Table(title="real-server failure detection (TCP_CHECK, server stopped: connect refused)")
    for col in ("delay_loop / retry / delay_before_retry", "keepalived timers: bound (s)",
                "pylvs measured mean (s)", "pylvs max (s)", "client requests", "failed"):
        table.add_column(col, justify="right")
    for delay_loop, retry, dbr in ((1.0, 1, 0.5), (2.0, 2, 0.25), (0.5, 0, 0.1)):
        t0 = time.monotonic()
        r = asyncio.run(run(args.trials, delay_loop, 1.0, retry, dbr))
        table.add_row(
            f"{delay_loop:g} / {retry} / {dbr:g}",
            f"{r['ka_min']:.2f} .. {r['ka_max']:.2f}",
            f"{r['mean']:.3f}", f"{r['max']:.3f}", str(int(r["requests"])), str(int(r["failed"])),
        )
        console.log(f"{delay_loop}/{retry}/{dbr} done in {time.monotonic() - t0:.1f} s")
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
