"""Nanoseconds per scheduling decision of every IPVS scheduler, at 10 and 100 real servers.

Run: ``python bench/bench_sched.py`` (a few seconds, bounded). Each decision is followed by what a
connection table does for a new connection (the chosen server's activeconns + 1, and, every other
decision, one earlier connection closing), so least-connection schedulers see moving counts.
The least-connection family (lc, wlc, sed, nq) runs with ``conns_changed`` called after each count
change (its O(1) index); the "scan" column is the same scheduler reading live counters instead.
Weights are 1..10 (seeded), clients vary per decision. Times are this process's CPU time
(``time.process_time``), so other load on a shared machine inflates them less than wall time,
but caches and frequency still make them noisy.
"""

from __future__ import annotations

import ipaddress
import random
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rich.console import Console
from rich.table import Table

from pylvs.core.model import (
    DestSpec,
    Protocol,
    RealServer,
    ServiceKey,
    ServiceSpec,
)
from pylvs.core.schedulers import SCHEDULER_NAMES
from pylvs.core.schedulers.base import Scheduler
from pylvs.core.table import IPVSTable

BUDGET_S = 0.04  # CPU seconds per cell: the whole run stays within a few seconds
KEY = ServiceKey.inet(Protocol.TCP, "10.1.1.1", 80)
VADDR = ipaddress.ip_address("10.1.1.1").packed


def build(name: str, n: int, notified: bool) -> tuple[IPVSTable, Scheduler, list[bytes]]:
    rng = random.Random(n)
    t = IPVSTable()
    t.add_service(ServiceSpec(KEY, name))
    for i in range(n):
        addr = ipaddress.ip_address(f"10.0.{i // 200}.{i % 200 + 1}")
        t.add_dest(KEY, DestSpec(addr, 80, weight=rng.randint(1, 10)))
    svc = t.lookup(KEY)
    assert svc is not None and svc.scheduler is not None
    for d in svc.destinations:  # some history, so least-connection has something to compare
        d.activeconns = rng.randint(0, 20)
        d.inactconns = rng.randint(0, 50)
    if notified:
        svc.scheduler.conns_changed(svc.destinations[0])
    clients = [ipaddress.ip_address(0x64400000 + rng.getrandbits(16)).packed for _ in range(1024)]
    return t, svc.scheduler, clients


def run_static(name: str, n: int, notified: bool) -> float:
    """Decisions only: counts do not move between them."""
    _, sched, clients = build(name, n, notified)
    schedule = sched.schedule
    count = 0
    elapsed = 0.0
    while elapsed < BUDGET_S:
        t0 = time.process_time()
        for c in clients:
            schedule(c, 40000, VADDR, 80, 0.0)
        elapsed += time.process_time() - t0
        count += len(clients)
    return elapsed / count * 1e9


def run_churn(name: str, n: int, notified: bool) -> float:
    """Decision + what a connection table does for it: the chosen server gains an active
    connection, and an older one closes (each count change reported when notified)."""
    _, sched, clients = build(name, n, notified)
    schedule = sched.schedule
    notify = sched.conns_changed
    live: deque[RealServer] = deque()
    count = 0
    elapsed = 0.0
    now = 0.0
    while elapsed < BUDGET_S:
        t0 = time.process_time()
        for c in clients:
            d = schedule(c, 40000, VADDR, 80, now)
            if d is not None:
                d.activeconns += 1
                live.append(d)
                if notified:
                    notify(d)
            if len(live) > 200:
                old = live.popleft()
                old.activeconns -= 1
                if notified:
                    notify(old)
        elapsed += time.process_time() - t0
        count += len(clients)
        now += 1.0
    return elapsed / count * 1e9


def main() -> None:
    started = time.process_time()
    table = Table(
        title=f"pylvs schedulers: ns per decision, CPython {sys.version.split()[0]}",
        caption="decision: counts static; +conn: plus the connection table's count updates. "
        "lc/wlc/sed/nq: notified (O(1) index) and scan (no conns_changed).",
    )
    table.add_column("scheduler")
    for n in (10, 100):
        table.add_column(f"{n} RS decision", justify="right")
        table.add_column(f"{n} RS +conn", justify="right")
    table.add_column("100 RS scan +conn", justify="right")
    for name in SCHEDULER_NAMES:
        reads = name in ("lc", "wlc", "sed", "nq")
        row = [name]
        for n in (10, 100):
            row.append(f"{run_static(name, n, reads):,.0f}")
            row.append(f"{run_churn(name, n, reads):,.0f}")
        row.append(f"{run_churn(name, 100, False):,.0f}" if reads else "")
        table.add_row(*row)
    Console().print(table)
    print(f"Target: <= 2000 ns per decision for rr, wrr, wlc at 100 real servers. "
          f"Took {time.process_time() - started:.1f} s CPU; shared machine: numbers are noisy.")


if __name__ == "__main__":
    main()
