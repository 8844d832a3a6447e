"""State shared by the TCP and UDP halves of the socket-level proxy.

What this is for: one ``ProxyContext`` per ``ProxyDataPlane`` carries the settings, the live
relays and flows, and the counters that ``describe()`` reports, so the hot-path objects reach them
through one attribute instead of through the data plane. ``ServiceEndpoint`` is a virtual service
as a listening socket sees it (packed VIP, port, family), computed once per listener.

What this is not for: any decision about which real server gets a connection (the core's).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pylvs.core.model import ServiceKey

if TYPE_CHECKING:  # pragma: no cover
    from pylvs.core.director import Connection, Director


class LiveRelay(Protocol):
    """What the data plane does with every open TCP relay (``relay.Relay``), seen from here so
    that this module, which every other one imports, imports none of them."""

    def flush(self) -> None:
        """Hand the counts gathered since the last flush to the core."""

    def abort(self) -> None:
        """Close both sides at once (the data plane is stopping)."""


@dataclass(frozen=True, slots=True)
class ServiceEndpoint:
    """A TCP or UDP virtual service as its listening socket sees it."""

    key: ServiceKey
    protocol: int
    af: int
    vaddr: bytes  # packed, as the core's schedule() wants it
    vport: int
    host: str  # the VIP as text, for bind()

    @classmethod
    def of(cls, key: ServiceKey) -> ServiceEndpoint:
        assert key.addr is not None
        return cls(key, key.protocol, key.af, key.addr.packed, key.port, str(key.addr))

    def __str__(self) -> str:
        return str(self.key)


@dataclass(slots=True, eq=False)
class ProxyContext:
    """Settings, live objects and counters of one proxy data plane."""

    loop: asyncio.AbstractEventLoop
    director: Director
    connect_timeout: float
    retries: int
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
