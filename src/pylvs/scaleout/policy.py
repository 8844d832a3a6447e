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

``JoinGate`` holds back a director's *first* announcement when it joins a cluster whose
directors share connections through the sync protocol. The reason is the router: the moment a
director's route arrives, ECMP moves part of the live flows onto it (Linux's hash-threshold
multipath about 1/N of them when it becomes the N-th next hop; BIRD hands the router every
path at once with ``merge paths``), and a moved flow's next packet is not a SYN. With
``sloppy_tcp`` off (sync's setup: sloppy would schedule anew), a director without that flow's
entry drops it and the connection dies. The entry reaches the newcomer only when another
director re-sends it, which the kernel's rule does by time only with ``sync_refresh_period``:
so the first announcement waits until the newcomer's backup daemon has been listening for one
refresh cycle, plus the sender's flush of a partly filled message (``FLUSH_AFTER``, 2 s) and a
margin for the message's way and this announcer's poll. With the packet-count rule alone
(``sync_refresh_period`` 0) no wait bounds it (a slow flow is re-sent every 50 packets), so the
announcement goes at once and the log says why; ``announce_delay`` in ``pylvs_bgp`` sets a wait
of its own instead. With ``mh`` + ``sloppy_tcp`` there is no backup daemon and nothing to wait
for: every director computes the same answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pylvs.core.api import ServiceStatus
from pylvs.core.sync import FLUSH_AFTER

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at the director."""

    reachable: bool
    dataplane: str = ""
    services: tuple[ServiceStatus, ...] = ()
    error: str = ""  # why it is not reachable
    sync_backup: bool = False  # a backup sync daemon runs (learns the others' connections)
    sync_refresh_period: int = 0  # net.ipv4.vs.sync_refresh_period, seconds
    tcp_timeout: int = 900  # ESTABLISHED's timeout (ipvsadm --set), which bounds the refresh


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


JOIN_MARGIN = 1.0  # seconds past the sender's flush: the message's way, the backup, one poll


def refresh_wait(obs: Observation) -> tuple[float, str]:
    """How long a director that just joined waits before its first announcement (``auto``),
    and why in words. The others re-send a live entry once its timer moved by
    min(sync_refresh_period, max(timeout / 2, 10 s)) (``pylvs.core.sync.resend_due``) at its
    next packet; that entry may then wait ``FLUSH_AFTER`` in a partly filled message."""
    if not obs.sync_backup:
        return 0.0, "no backup sync daemon: nothing to learn from the others"
    if obs.sync_refresh_period <= 0:
        return 0.0, ("sync_refresh_period is 0: the others re-send by packet count, which no "
                     "wait bounds (set sync_refresh_period, or announce_delay)")
    cycle = min(obs.sync_refresh_period, max(obs.tcp_timeout / 2, 10))
    return cycle + FLUSH_AFTER + JOIN_MARGIN, (
        f"the sync backup hears one refresh cycle: {cycle:g} s + the senders' flush "
        f"{FLUSH_AFTER:g} s + {JOIN_MARGIN:g} s")


class JoinGate:
    """Holds the first announcement back (see the module's docstring). ``delay``: the
    ``announce_delay`` of ``pylvs_bgp``, seconds, or None for ``auto`` (``refresh_wait``).

    The wait counts from the first look at which a VIP would be announced, and starts again if
    the director stops being ready before it ends (the backup must listen for a whole cycle).
    Once the first announcement has gone, the gate stays open for this process's life: later
    withdrawals (quorum, drain) and announcements are the policy's alone."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.opened = False
        self.since: float | None = None
        self.wait = 0.0
        self.why = ""

    def hold(self, verdicts: dict[IPAddress, Verdict], obs: Observation,
             now: float) -> tuple[dict[IPAddress, Verdict], list[str]]:
        """``verdicts`` with the announcements still held back, and the log lines."""
        if self.opened:
            return verdicts, []
        if not any(v.announce for v in verdicts.values()):
            self.since = None
            return verdicts, []
        lines: list[str] = []
        if self.since is None:
            if self.delay is None:
                self.wait, self.why = refresh_wait(obs)
            else:
                self.wait, self.why = self.delay, f"announce_delay {self.delay:g} s"
            if self.wait <= 0:
                self.opened = True
                return verdicts, [f"first announcement now: {self.why}"]
            self.since = now
            lines.append(f"joining: first announcement in {self.wait:g} s ({self.why})")
        if now - self.since >= self.wait:
            self.opened = True
            return verdicts, [*lines, f"joining: waited {self.wait:g} s, announcing"]
        reason = f"joining: held {self.wait:g} s after the director is ready ({self.why})"
        return {vip: Verdict(False, reason) if v.announce else v
                for vip, v in verdicts.items()}, lines

    def describe(self) -> dict[str, object]:
        return {"delay": "auto" if self.delay is None else self.delay, "open": self.opened,
                "wait": self.wait, "why": self.why}
