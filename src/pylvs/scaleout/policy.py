"""When a director announces a VIP: the decision, without I/O.

A router that spreads flows by ECMP sends a director traffic for every prefix it announces, so a
director must announce a VIP only while it can serve it, and withdraw it the moment it cannot.
The rules, applied to what the director's control socket said at one look:

- a VIP is announced while the director answers, its data plane forwards (not ``none``), it is
  not draining, and *every* virtual service on that VIP has quorum: at least one real server
  with weight > 0 (a VIP is one prefix: a service without servers would black-hole its port);
- a VIP configured in ``pylvs_bgp`` that no service uses is never announced (and said so);
- fwmark services have no address of their own and announce nothing.

``Announcer`` keeps what is announced and turns each look into the changes to make and the log
lines to write (only when something changes, so a steady state logs nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pylvs.core.api import ServiceStatus

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at the director."""

    reachable: bool
    dataplane: str = ""
    services: tuple[ServiceStatus, ...] = ()
    error: str = ""  # why it is not reachable


@dataclass(frozen=True, slots=True)
class Verdict:
    announce: bool
    reason: str


def _label(s: ServiceStatus) -> str:
    k = s.spec.key
    proto = {6: "TCP", 17: "UDP", 132: "SCTP"}.get(int(k.protocol), str(int(k.protocol)))
    addr = f"[{k.addr}]" if k.addr is not None and k.addr.version == 6 else str(k.addr)
    return f"{proto} {addr}:{k.port}"


def services_by_vip(services: Iterable[ServiceStatus]) -> dict[IPAddress, list[ServiceStatus]]:
    out: dict[IPAddress, list[ServiceStatus]] = {}
    for s in services:
        k = s.spec.key
        if k.fwmark or k.addr is None:
            continue
        out.setdefault(k.addr, []).append(s)
    return out


def has_quorum(s: ServiceStatus) -> bool:
    return any(d.spec.weight > 0 for d in s.dests)


def decide(configured: tuple[IPAddress, ...], obs: Observation,
           draining: bool) -> dict[IPAddress, Verdict]:
    """Each candidate VIP (the configured ones, else every VIP in the table) and its verdict."""
    by_vip = services_by_vip(obs.services)
    vips = list(configured) if configured else sorted(by_vip, key=lambda a: (a.version, a))
    out: dict[IPAddress, Verdict] = {}
    for vip in vips:
        svcs = by_vip.get(vip)
        if not obs.reachable:
            out[vip] = Verdict(False, f"the director does not answer ({obs.error})")
        elif not svcs:
            out[vip] = Verdict(False, "no virtual service uses it: never announced")
        elif obs.dataplane in ("", "none"):
            out[vip] = Verdict(False, f"the data plane is {obs.dataplane or 'unknown'}: "
                                      "nothing is forwarded")
        elif draining:
            out[vip] = Verdict(False, "draining")
        else:
            lost = [_label(s) for s in svcs if not has_quorum(s)]
            if lost:
                out[vip] = Verdict(False, "no quorum (no real server with weight > 0) for "
                                   + ", ".join(lost))
            else:
                n = sum(1 for s in svcs for d in s.dests if d.spec.weight > 0)
                out[vip] = Verdict(True, f"{len(svcs)} service(s) with quorum, {n} real "
                                   "server(s) in use")
    return out


def prefix(vip: IPAddress) -> str:
    return f"{vip}/{vip.max_prefixlen}"


class Announcer:
    """What is announced, and the changes each look asks for."""

    def __init__(self) -> None:
        self.announced: set[IPAddress] = set()
        self.reasons: dict[IPAddress, Verdict] = {}

    def update(self, verdicts: dict[IPAddress, Verdict]) -> tuple[bool, list[str]]:
        """Apply a look: (whether the announced set changed, the log lines)."""
        lines: list[str] = []
        want = {v for v, verdict in verdicts.items() if verdict.announce}
        for vip, verdict in verdicts.items():
            if self.reasons.get(vip) == verdict:
                continue
            was = vip in self.announced
            if verdict.announce and not was:
                lines.append(f"announce {prefix(vip)}: {verdict.reason}")
            elif not verdict.announce and was:
                lines.append(f"withdraw {prefix(vip)}: {verdict.reason}")
            elif not verdict.announce:
                lines.append(f"not announcing {prefix(vip)}: {verdict.reason}")
            self.reasons[vip] = verdict
        for vip in sorted(self.announced - set(verdicts), key=lambda a: (a.version, a)):
            lines.append(f"withdraw {prefix(vip)}: no longer configured")
            self.reasons.pop(vip, None)
        changed = want != self.announced
        self.announced = want
        return changed, lines

    def withdraw_all(self, reason: str) -> tuple[bool, list[str]]:
        lines = [f"withdraw {prefix(v)}: {reason}"
                 for v in sorted(self.announced, key=lambda a: (a.version, a))]
        changed = bool(self.announced)
        self.announced = set()
        self.reasons = {}
        return changed, lines
