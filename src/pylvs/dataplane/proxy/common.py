"""State shared by the TCP and UDP halves of the socket-level proxy.

What this is for: one ``ProxyContext`` per ``ProxyDataPlane`` carries the settings, the live
relays and flows, and the counters that ``describe()`` reports, so the hot-path objects reach them
through one attribute instead of through the data plane. ``ServiceEndpoint`` is a virtual service
as a listening socket sees it (packed VIP, port, family), computed once per listener.

What this is not for: any decision about which real server gets a connection (the core's).
"""

from __future__ import annotations

import asyncio
import math
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pylvs.core.model import RealServer, ServiceKey
from pylvs.dataplane.proxy.settings import ProxySettings, Timeouts

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Connection, Director


class LiveRelay(Protocol):
    """What the data plane does with every open TCP relay (``relay.Relay``), seen from here so
    that this module, which every other one imports, imports none of them."""

    def flush(self) -> None:
        """Hand the counts gathered since the last flush to the core."""

    def abort(self) -> None:
        """Close both sides at once (the data plane is stopping)."""

    def tick(self, now: float) -> str | None:
        """The timeout that ran out (``"server"``, ``"client"``, ``"tunnel"``), else None;
        brings the core entry's expiry in line with the relay's."""

    def time_out(self, kind: str) -> None:
        """Close both sides because ``kind`` ran out, and count it."""


@dataclass(slots=True, eq=False)
class ServiceLimits:
    """A service's timeouts, shared by its listener and every relay it started, so that a
    change (``ProxyDataPlane.set_service_timeouts``) reaches the open relays too."""

    timeouts: Timeouts


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """A TCP or UDP virtual service as its listening socket sees it."""

    key: ServiceKey
    protocol: int
    af: int
    vaddr: bytes  # packed, as the core's schedule() wants it
    vport: int
    host: str  # the VIP as text, for bind()
    limits: ServiceLimits = field(
        default_factory=lambda: ServiceLimits(Timeouts()), compare=False, hash=False,
    )

    @classmethod
    def of(cls, key: ServiceKey, limits: ServiceLimits | None = None) -> ServiceEndpoint:
        assert key.addr is not None
        return cls(
            key, key.protocol, key.af, key.addr.packed, key.port, str(key.addr),
            limits if limits is not None else ServiceLimits(Timeouts()),
        )

    def __str__(self) -> str:
        return str(self.key)


@dataclass(slots=True, eq=False)
class ProxyContext:
    """Settings, live objects and counters of one proxy data plane."""

    loop: asyncio.AbstractEventLoop
    director: Director
    settings: ProxySettings
    max_tcp_relays: int
    max_udp_flows: int
    splice: bool = True
    sockmap: bool = True
    relays: set[LiveRelay] = field(default_factory=set)
    # Every UDP flow of every service (``udp.UdpFlow``), counted against ``max_udp_flows``.
    udp_flows: dict[Any, object] = field(default_factory=dict)
    accepted: int = 0
    refused: int = 0
    connect_failures: int = 0
    retried: int = 0
    udp_dropped: int = 0
    spliced: int = 0
    offloaded: int = 0
    # Relays closed because a timeout ran out, by timeout (``settings``).
    timed_out: dict[str, int] = field(
        default_factory=lambda: {"server": 0, "client": 0, "tunnel": 0}
    )
    # Clients refused at the relay limit after waiting ``settings.queue`` (also in ``refused``),
    # and how often a listener had to stop accepting because the limit was reached.
    refused_limit: int = 0
    limit_reached: int = 0
    # Connections the scheduler gave to a server holding its share of the relays, sent to
    # another server instead; relays open per real server and each server's share.
    share_redispatched: int = 0
    per_dest: dict[RealServer, int] = field(default_factory=dict)
    shares: dict[RealServer, int] = field(default_factory=dict)
    _hosts: dict[bytes, str] = field(default_factory=dict)

    def host_of(self, af: int, packed: bytes) -> str:
        """A real server's address as text for connect(), cached: there are few of them."""
        host = self._hosts.get(packed)
        if host is None:
            if len(self._hosts) > 4096:
                self._hosts.clear()
            host = self._hosts[packed] = socket.inet_ntop(
                socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed
            )
        return host

    @property
    def retries(self) -> int:
        return self.settings.retries

    def hold(self, dest: RealServer) -> None:
        """A relay to ``dest`` opens."""
        per = self.per_dest
        per[dest] = per.get(dest, 0) + 1

    def release(self, dest: RealServer) -> None:
        """A relay to ``dest`` closes (or moves to another server)."""
        per = self.per_dest
        n = per.get(dest, 0) - 1
        if n > 0:
            per[dest] = n
        else:
            per.pop(dest, None)

    def update_shares(self) -> None:
        """Each real server's share of the relay limit: its weight over its service's total.

        Recomputed when the plane starts, whenever a server is added, changed or deleted (the
        plane follows the table), and once a second (housekeeping). Servers of weight 0 get no new connections from the scheduler anyway."""
        shares: dict[RealServer, int] = {}
        limit = self.max_tcp_relays
        for svc in self.director.table.services():
            dests = svc.destinations
            total = sum(d.weight for d in dests if d.weight > 0)
            if total <= 0 or len(dests) < 2:
                continue
            for d in dests:
                if d.weight > 0:
                    shares[d] = max(1, math.ceil(limit * d.weight / total))
        self.shares = shares

    def over_share(self, conn: Connection) -> bool:
        """Does ``conn``'s server already hold its share of the relays?"""
        share = self.shares.get(conn.dest)
        return share is not None and self.per_dest.get(conn.dest, 0) >= share

    def reschedule(
        self, ep: ServiceEndpoint, peer: tuple[Any, ...], failed: list[Any]
    ) -> Connection | None:
        """A new connection for the same client to a server not in ``failed``, or None.

        The failed attempt's entry has been closed (TIME_WAIT), so the core's ``schedule``
        replaces it with a fresh one (conn_reuse_mode) and weights, thresholds and quiescent
        servers count as for any connection. For that one decision only, the servers that
        failed for this client carry weight 0 (quiescent, which every scheduler skips; indexed
        schedulers hear it through ``upd_dest``); their weights are restored before returning,
        with no other code run in between, so nothing stays marked: taking a server out is the
        health checker's job. Hash schedulers (sh, dh, mh) keep their table and may name the
        failed server again; the client is then refused, as the kernel would drop it.

        Persistence sends a client to its template's server every time: when that one is down
        the client gets no server (None), as with kernel IPVS until the checker removes it.
        """
        caddr = socket.inet_pton(ep.af, peer[0])
        saved: list[tuple[Any, int]] = []
        svc = self.director.table.lookup(ep.key)
        sched = svc.scheduler if svc is not None else None
        # Schedulers that index their servers (the least-connection family) are told of the
        # weight change through their upd_dest hook; the others read weights live.
        indexed = sched is not None and sched.reads_conns
        for d in failed:
            if d.weight > 0 and not any(d is s for s, _ in saved):
                saved.append((d, d.weight))
                d.weight = 0
                if indexed and d.service is svc:
                    sched.upd_dest(d)  # type: ignore[union-attr]
        try:
            conn = self.director.schedule(ep.protocol, caddr, peer[1], ep.vaddr, ep.vport)
        finally:
            for d, w in saved:
                d.weight = w
                if indexed and d.service is svc:
                    sched.upd_dest(d)  # type: ignore[union-attr]
        if conn is None:
            return None
        if any(conn.dest is d for d in failed):
            self.director.proxy_closed(conn)
            return None
        return conn
