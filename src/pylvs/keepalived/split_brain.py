"""Split-brain evidence from ARP, beside what the VRRP adverts tell the router.

Why a module of its own: two masters are what VRRP exists to prevent, and the adverts alone cannot
show every case. While MASTER we ARP for our first VIP after each advert: another host answering
for it is a second master (reported to the router, which decides). When we become MASTER because
the old master's adverts stopped, we ARP for the old master: an answer means it is alive and only
VRRP between us is broken (logged and shown in the state file). Not for: sockets (``netio``) or
the split-brain state itself (:mod:`pylvs.vrrp.router`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pylvs.vrrp import netio
from pylvs.vrrp.plan import InstancePlan
from pylvs.vrrp.router import Action, State, VRRPRouter

log = logging.getLogger("pylvs.vrrp")


@dataclass(slots=True)
class Watched:
    """What the watch needs of one running instance."""

    name: str
    plan: InstancePlan
    router: VRRPRouter
    link: netio.LinkSocket | None


class SplitBrainWatch:
    def __init__(self, probe: bool = True) -> None:
        self.probe = probe  # ARP for the VIP while MASTER (--no-split-brain-probe turns it off)
        self.silent_probe: dict[str, tuple[bytes, float]] = {}  # instance -> (old master, answer by)
        self.silent_peer: dict[str, str] = {}  # last master that went silent yet answered a probe

    def after_advert(self, w: Watched, priority: int) -> None:
        if self.probe and w.link and w.router.state is State.MASTER and priority > 0 and w.plan.vips:
            with contextlib.suppress(OSError):
                w.link.probe(w.plan.router.primary_address, socket.inet_aton(w.plan.vips[0].address))

    def became_master(self, w: Watched, now: float) -> None:
        """Its adverts stopped: does the old master still answer on the wire?"""
        if w.link and len(w.router.previous_master) == 4:
            self.silent_probe[w.name] = (w.router.previous_master, now + 1.0)
            with contextlib.suppress(OSError):
                w.link.probe(w.plan.router.primary_address, w.router.previous_master)

    def forget(self, name: str) -> None:
        self.silent_probe.pop(name, None)
        self.silent_peer.pop(name, None)

    def arp_seen(self, seen: netio.ARPSeen, link: netio.LinkSocket, running: Iterable[Watched],
                 now: float) -> tuple[list[tuple[str, list[Action]]], bool]:
        """One ARP frame from another host: the routers' actions it causes, and whether the
        daemon's visible state changed (a silent peer found)."""
        running = list(running)
        changed = False
        out: list[tuple[str, list[Action]]] = []
        for w in running:
            probe = self.silent_probe.get(w.name)
            if probe and seen.op == 2 and seen.sender_ip == probe[0] and now <= probe[1]:
                del self.silent_probe[w.name]
                peer = str(ipaddress.ip_address(probe[0]))
                self.silent_peer[w.name] = peer
                log.warning("(%s) peer %s stopped advertising but still answers ARP: VRRP between us is "
                            "blocked, or its VRRP daemon died; a split brain follows if it keeps the VIP",
                            w.name, peer)
                changed = True
        for w in running:
            if w.link is link and w.router.state is State.MASTER and w.router.owns_vip(seen.sender_ip):
                mac = seen.sender_mac.hex(":")
                why = f"another host ({mac}) answers ARP for VIP {socket.inet_ntoa(seen.sender_ip)}"
                out.append((w.name, w.router.report_split_brain(seen.sender_ip, why, now)))
        return out, changed
