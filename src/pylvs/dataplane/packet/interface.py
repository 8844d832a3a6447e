"""``Interface``: what the forwarders (``forward`` for IPv4, ``forward6`` for IPv6) know of one
director interface: its index, MAC, addresses, on-link networks and MTU.

Why a module of its own: both forwarding halves use it and ``forward`` builds on ``forward6``,
so it sits below both (``forward.Interface`` is the same class).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Interface:
    """A director interface the data plane sends and receives on."""

    ifindex: int
    name: str
    mac: bytes
    addr: bytes  # primary IPv4 address (source of ARP requests and IPIP outer headers)
    networks: list[tuple[int, int]] = field(default_factory=list)  # (network, mask) as ints
    mtu: int = 1500
    local: set[bytes] = field(default_factory=set)  # every address configured on it (v4, v6)
    addr6: bytes = b""  # primary global IPv6 address (NS source, IPv6-in-IPv6 outer source)
    networks6: list[tuple[int, int]] = field(default_factory=list)  # IPv6 (network, mask)
    ll6: bytes = b""  # link-local IPv6 address: the NS source when there is no global one

    def on_link(self, ip: int) -> bool:
        # a plain loop: asked once per new connection, twice as fast as any() over a generator
        for net, mask in self.networks:  # noqa: SIM110
            if ip & mask == net:
                return True
        return False

    def on_link6(self, ip: int) -> bool:
        return any(ip & mask == net for net, mask in self.networks6)
