"""Connection-table micro-benchmark: CPU ns per new connection, per lookup, per state change and
per expiry, and traced bytes per entry with a million entries.

Bounded: speed over ``--speed-n`` entries (200,000), memory at ``-n`` entries (1,000,000): about
half a minute of CPU (tracing a million entries' allocations is most of it) and under 1 GB, then it
stops. Bytes per entry depend a little on state: flag values above 255 are ints of their own. Times are process CPU time (``process_time_ns``), so other work on
a shared machine inflates them less than wall time would, but still some: run it twice. This host
has no kernel IPVS to measure beside it; the budget column is our own ceiling.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import sys
import time
import tracemalloc

from rich.console import Console
from rich.table import Table

from pylvs.core.director import DIR_INPUT, TCP_ACK, Director
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
)
from pylvs.core.table import IPVSTable

BUDGET_BYTES = 300  # our own ceiling per entry at 1 M entries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(n_servers: int, clock: Clock, max_connections: int) -> Director:
    """10.0.0.100:80 rr, and 10.0.0.101:80 rr persistent 300 /24, each with n_servers (NAT)."""
    d = Director(IPVSTable(), clock=clock, max_connections=max_connections)
    for vip, flags, timeout in (("10.0.0.100", ServiceFlags.NONE, 0),
                                ("10.0.0.101", ServiceFlags.PERSISTENT, 300)):
        key = ServiceKey.inet(Protocol.TCP, vip, 80)
        d.table.add_service(ServiceSpec(key, "rr", flags, timeout, 0xFFFFFF00))
        for i in range(n_servers):
            addr = ipaddress.ip_address(f"192.168.168.{10 + i}")
            d.table.add_dest(key, DestSpec(addr, 80, ForwardingMethod.MASQ))
    return d


def clients(n: int) -> list[tuple[bytes, int]]:
    """n distinct (client address, port) pairs: 60000 ports per address."""
    out = []
    base = int(ipaddress.ip_address("100.64.0.1"))
    for i in range(n):
        a, p = divmod(i, 60000)
        out.append(((base + a).to_bytes(4, "big"), 1024 + p))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="entries for memory (1,000,000)")
    ap.add_argument("--speed-n", type=int, default=200_000, help="entries for speed (200,000)")
    args = ap.parse_args()
    n = args.n
    sn = min(args.speed_n, n)
    vip = ipaddress.ip_address("10.0.0.100").packed
    clock = Clock()
    addrs = clients(n)

    # Speed, without tracemalloc. The cyclic GC is left on, as in the daemon.
    speed_addrs = addrs[:sn]
    d = build(4, clock, n + 10)
    schedule = d.schedule
    cpu = time.process_time_ns
    t0 = cpu()
    for caddr, cport in speed_addrs:
        schedule(6, caddr, cport, vip, 80)
    t1 = cpu()
    lookup = d.lookup
    for caddr, cport in speed_addrs:
        lookup(6, caddr, cport, vip, 80)
    t2 = cpu()
    conns = [lookup(6, caddr, cport, vip, 80) for caddr, cport in speed_addrs]
    tcp_packet = d.tcp_packet
    t3 = cpu()
    for c in conns:
        tcp_packet(c, DIR_INPUT, TCP_ACK)  # type: ignore[arg-type]
    t4 = cpu()
    packet = d.packet
    for c in conns:
        packet(c, DIR_INPUT, TCP_ACK, 100)  # type: ignore[arg-type]
    t4b = cpu()
    del conns
    clock.now += 3600
    t5 = cpu()
    d.tick()
    t6 = cpu()
    assert d.connection_count == 0
    pvip = ipaddress.ip_address("10.0.0.101").packed
    t7 = cpu()
    for caddr, cport in speed_addrs:
        schedule(6, caddr, cport, pvip, 80)
    t8 = cpu()
    del d

    # Memory: only the table's own allocations are traced (the client list exists before).
    gc.collect()
    gc.disable()  # collections do not change the figure, only the time taken to reach it
    clock.now = 1000.0
    d = build(4, clock, n + 10)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    schedule = d.schedule
    for caddr, cport in addrs:
        schedule(6, caddr, cport, vip, 80)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_entry = (used - base) / n
    assert d.connection_count == n

    py = ".".join(map(str, sys.version_info[:3]))
    table = Table(title=f"pylvs conntrack (Python {py}, CPU time)")
    table.add_column("operation")
    table.add_column("entries", justify="right")
    table.add_column("pylvs", justify="right")
    table.add_column("budget", justify="right")
    table.add_row("new connection (schedule, rr, 4 RS)", f"{sn:,}", f"{(t1 - t0) / sn:,.0f} ns", "")
    table.add_row("new connection, persistent -p 300 -M /24", f"{sn:,}",
                  f"{(t8 - t7) / sn:,.0f} ns", "")
    table.add_row("lookup (client->VIP)", f"{sn:,}", f"{(t2 - t1) / sn:,.0f} ns", "")
    table.add_row("tcp_packet (SYN_RECV->ESTABLISHED)", f"{sn:,}", f"{(t4 - t3) / sn:,.0f} ns", "")
    table.add_row("packet (ESTABLISHED ACK + counters)", f"{sn:,}",
                  f"{(t4b - t4) / sn:,.0f} ns", "")
    table.add_row("expiry (one tick, per entry)", f"{sn:,}", f"{(t6 - t5) / sn:,.0f} ns", "")
    table.add_row("memory per entry (tracemalloc)", f"{n:,}", f"{per_entry:,.0f} B",
                  f"{BUDGET_BYTES} B")
    Console().print(table)


if __name__ == "__main__":
    main()
