"""Helpers shared by the director, conntrack and persistence tests: a settable clock and a table
with real schedulers behind ``ipvsadm``-like calls."""

from __future__ import annotations

import ipaddress

from pylvs.core.director import Director
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    RealServer,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
)
from pylvs.core.table import IPVSTable


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def make_director(max_connections: int = 1_000_000) -> tuple[Director, FakeClock]:
    clock = FakeClock()
    return Director(IPVSTable(), clock=clock, max_connections=max_connections), clock


def add_service(
    d: Director, vip: str = "10.0.0.100", port: int = 80, *, proto: Protocol = Protocol.TCP,
    scheduler: str = "rr", persistence: int = 0, netmask: int = 0xFFFFFFFF,
    one_packet: bool = False,
) -> ServiceKey:
    key = ServiceKey.inet(proto, vip, port)
    flags = ServiceFlags.NONE
    if persistence:
        flags |= ServiceFlags.PERSISTENT
    if one_packet:
        flags |= ServiceFlags.ONEPACKET
    d.table.add_service(ServiceSpec(key, scheduler, flags, persistence, netmask))
    return key


def add_fwmark_service(d: Director, mark: int, *, persistence: int = 0) -> ServiceKey:
    key = ServiceKey.mark(mark)
    flags = ServiceFlags.PERSISTENT if persistence else ServiceFlags.NONE
    d.table.add_service(ServiceSpec(key, "rr", flags, persistence))
    return key


def add_dest(
    d: Director, key: ServiceKey, rip: str, port: int = 80, *,
    fwd: ForwardingMethod = ForwardingMethod.MASQ, weight: int = 1, u: int = 0, lo: int = 0,
) -> RealServer:
    addr = ipaddress.ip_address(rip)
    d.table.add_dest(key, DestSpec(addr, port, fwd, weight, u, lo))
    svc = d.table.lookup(key)
    assert svc is not None
    rs = svc.find_dest(addr, port)
    assert rs is not None
    return rs
