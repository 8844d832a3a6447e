"""A scrape of a large director: 10,000 virtual services and 100,000 real servers.

Run: ``python bench/bench_metrics.py [--services N] [--per-service M] [--scrapes K]``.

What it measures, with the daemon's own pieces in one process: an ``IPVSTable`` of that size,
the ``ObservabilityServer`` serving ``/metrics`` from its threads as pylvsd does, and an asyncio
event loop standing in for the data plane (a 1 ms timer whose lateness is recorded). ``curl``, a
separate process, scrapes ``/metrics`` K times; for each scrape the wall time curl reports, the
body size, and the event loop's worst lateness during the scrape are printed, beside the same
loop's lateness with no scrape running. The answer to "does a scrape block the data plane" is the
lateness: the scrape runs in its own thread, so the loop keeps running and loses only the GIL
time the scrape takes in slices (the interpreter switches threads every 5 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.core.table import IPVSTable
from pylvs.metrics.server import ObservabilityServer
from pylvs.metrics.sources import Sources


def build(services: int, per: int) -> IPVSTable:
    t = IPVSTable()
    vbase = int(ipaddress.IPv4Address("10.0.0.0"))
    rbase = int(ipaddress.IPv4Address("10.64.0.0"))
    for i in range(services):
        key = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address(vbase + i), 80)
        t.add_service(ServiceSpec(key, "wlc"))
        for j in range(per):
            t.add_dest(key, DestSpec(ipaddress.IPv4Address(rbase + i * per + j), 8080,
                                     ForwardingMethod.MASQ, 1 + j % 10))
    return t


async def loop_lateness(stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    """Every 1 ms: how late the timer fired (the data plane's view of a blocked loop)."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append((t0, time.perf_counter() - t0 - 0.001))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--scrapes", type=int, default=5)
    a = ap.parse_args()
    t0 = time.perf_counter()
    table = build(a.services, a.per_service)
    print(f"table: {a.services} services, {a.services * a.per_service} real servers "
          f"(built in {time.perf_counter() - t0:.1f} s)")
    srv = ObservabilityServer(Sources("bench", table=lambda: table), metrics=("127.0.0.1", 0))
    srv.start()
    port = srv.addresses[0][1]
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete,
                              args=(loop_lateness(stop, samples),), daemon=True)
    # the "data plane" loop runs in a thread of its own here so the main thread can drive curl
    runner.start()
    try:
        time.sleep(2.0)
        idle = [late for _, late in samples]
        print(f"event loop, no scrape: worst lateness {max(idle) * 1000:.1f} ms, "
              f"p99 {statistics.quantiles(idle, n=100)[98] * 1000:.2f} ms")
        rows = []
        for _ in range(a.scrapes):
            start = time.perf_counter()
            cpu0 = time.process_time()
            out = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}",
                 f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True, check=True)
            end = time.perf_counter()
            cpu = time.process_time() - cpu0
            code, total, size = out.stdout.split()
            during = [late for t, late in samples if start <= t <= end] or [0.0]
            rows.append((float(total), cpu, int(size), max(during),
                         statistics.quantiles(during, n=100)[98] if len(during) > 1 else during[0]))
            assert code == "200", code
            time.sleep(0.5)
        print("scrape  wall(s)  cpu(s)  bytes       loop worst(ms)  loop p99(ms)")
        for i, (wall, cpu, size, worst, p99) in enumerate(rows, 1):
            print(f"{i:6d}  {wall:7.3f}  {cpu:6.3f}  {size:10d}  {worst * 1000:14.1f}  "
                  f"{p99 * 1000:12.2f}")
        walls = [r[0] for r in rows]
        print(f"median scrape {statistics.median(walls):.3f} s, worst {max(walls):.3f} s "
              f"(target < 1 s); machine load {Path('/proc/loadavg').read_text().split()[0]}")
    finally:
        stop.set()
        runner.join(timeout=5)
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
