"""``PacketDataPlane``: the ``packet`` data plane the director daemon runs (DR, NAT, TUN).

What this is for: tying the sans-IO ``Forwarder`` to the host: one ``PacketRing`` per interface,
the interfaces' MACs/addresses/MTUs, the kernel's neighbour table and default route read once with
pyroute2, the table followed live (VIPs to answer ARP for, firewall rules). It runs inside the daemon's
asyncio loop (``start``/``stop``; the daemon calls ``director.tick()``) or as a plain blocking
loop that ticks the director itself (``run_for``, used by benchmarks).

Keeping the director's own stack out of the way: the kernel sees every frame the rings see. A
packet to a VIP would be answered by the local stack (RST, or a second copy forwarded when
ip_forward=1), and a NAT reply from a real server would be forwarded unchanged. So on start an
nftables table ``inet pylvs_packet`` is installed in this network namespace: at the ``input`` and
``forward`` hooks it drops TCP/UDP to the VIPs and TCP/UDP from NAT real servers; ARP, ICMP and
the director's own traffic are untouched. AF_PACKET taps see frames before these hooks, so the
data plane still gets them. Without ``nft`` a warning is logged and reported in ``describe()``.
Offloads are left as the host has them: the rings read each frame's ``virtio_net_hdr``, so
partial checksums (TX checksum offload of a veth/virtio sender) are completed and super-frames
(a sender's TSO/GSO, the director's own GRO) are cut into segments of the sender's MSS before
they are forwarded (``offload``). ``offloads_off=True`` still switches GRO/GSO/TSO and TX
checksum offload off on the director's interfaces (``ethtool``), for comparison.

The C hot path (``_fastpath``, when built; ``fastpath=False`` or ``PYLVS_PACKET_FASTPATH=0``
turns it off): the rings are walked in C and frames of established DR/NAT/TUN connections are
forwarded there from a flow table the ``Forwarder`` fills; its counters reach the Director before
each ``Director.tick`` (``before_tick``). Any table change clears the flows. Under a flood the
C walk also sheds connection-opening SYNs that waited in the ring longer than ``syn_max_lag``
(default 0.1 s; 0 turns it off): the reader catches up and live connections keep flowing,
and a client's retransmission of a shed SYN gets through (``ring``, "Overload"; counted as
``syn_shed`` and ``syn_retried``).

IPv6: interfaces are read with their global and link-local IPv6 addresses, the IPv6 default
route and neighbours too; the nftables rules cover IPv6 VIPs and NAT real servers (``ip6``);
each interface gets an ``NdSocket`` beside its ``ArpSocket`` (neighbour solicitations for the
VIPs, advertisements for next hops; it joins each VIP's solicited-node group and sends the
unsolicited advertisements ``Forwarder.set_vips`` returns when a VIP appears, outside the
rings' TX slots, which belong to the ring reader).

What this is not for: choosing real servers or tracking connections (the ``Director`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

from pyroute2 import IPRoute

from pylvs.core.director import Director
from pylvs.core.model import ForwardingMethod, RealServer, VirtualService
from pylvs.core.table import TableListener
from pylvs.dataplane.packet.codec6 import multicast_mac, solicited_node
from pylvs.dataplane.packet.forward import Forwarder, Interface
from pylvs.dataplane.packet.heap import FullCollections
from pylvs.dataplane.packet.opening import CFlowOpener
from pylvs.dataplane.packet.ring import ArpSocket, NdSocket, PacketRing, RxFrame, fastpath_wanted

try:
    from pylvs.dataplane.packet import _fastpath
except ImportError:  # built without a compiler: frames go through the Python path only
    _fastpath = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
# How often rings are checked for frames the event loop was not woken for (see _watch_rings).
WATCH_INTERVAL = 0.5
NFT_TABLE = "pylvs_packet"
FLOW_LIMIT = 262144  # established connections the C flow table forwards at most
# Seconds a connection-opening SYN may wait in a ring before the C walk sheds it (ring.py,
# "Overload"): far below a client's first SYN retransmission (1 s), so a shed SYN costs its
# client a retry while the ring stays short; far above the ring's normal wait (its 2 ms block
# timeout), so only a backlog the interpreter cannot clear sheds anything.
SYN_MAX_LAG = 0.1


def syn_max_lag_setting() -> float:
    """``PYLVS_SYN_MAX_LAG`` (seconds, 0 to 10) when set and valid, else ``SYN_MAX_LAG``: as
    ``PYLVS_PACKET_FASTPATH``, a switch that reaches a director started by a lab or a bench."""
    raw = os.environ.get("PYLVS_SYN_MAX_LAG", "").strip()
    if not raw:
        return SYN_MAX_LAG
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 10.0:
        log.warning("PYLVS_SYN_MAX_LAG=%r: not 0-10 seconds, %g used", raw, SYN_MAX_LAG)
        return SYN_MAX_LAG
    return value


Routes = tuple[tuple[int, bytes] | None, tuple[int, bytes] | None]  # IPv4, IPv6 default


def read_interfaces(names: Iterable[str] | None) -> tuple[list[Interface], Routes,
                                                          dict[bytes, bytes]]:
    """Interfaces (all up non-loopback ones when ``names`` is None) with their IPv4 and IPv6
    addresses, the IPv4 and IPv6 default routes, and the kernel's neighbour tables (both
    families), from this network namespace."""
    wanted = set(names) if names is not None else None
    # an explicit plain loop: pyroute2 cannot share a running (or uvloop) event loop
    loop = asyncio.SelectorEventLoop()
    try:
        return _read_interfaces(wanted, loop)
    finally:
        loop.close()


def _read_interfaces(wanted: set[str] | None, loop: asyncio.AbstractEventLoop) -> tuple[
        list[Interface], Routes, dict[bytes, bytes]]:
    ifaces: list[Interface] = []
    neigh: dict[bytes, bytes] = {}
    gateway: tuple[int, bytes] | None = None
    gateway6: tuple[int, bytes] | None = None
    with IPRoute(use_event_loop=loop) as ipr:
        for link in ipr.get_links():
            name = link.get("ifname")
            if name == "lo" or (wanted is not None and name not in wanted):
                continue
            if wanted is None and not link["flags"] & 1:  # IFF_UP
                continue
            mac = link.get("address")
            idx = link["index"]
            addrs = [(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(family=socket.AF_INET, index=idx)]
            addrs6 = [(a.get("address"), a["prefixlen"])
                      for a in ipr.get_addr(family=socket.AF_INET6, index=idx)]
            glob6 = [(a, p) for a, p in addrs6 if a and not a.lower().startswith("fe80:")]
            if not (addrs or glob6) or not mac:
                continue
            nets = []
            for a, plen in addrs:
                net = ipaddress.IPv4Network(f"{a}/{plen}", strict=False)
                nets.append((int(net.network_address), int(net.netmask)))
            nets6 = []
            for a, plen in glob6:
                net6 = ipaddress.IPv6Network(f"{a}/{plen}", strict=False)
                nets6.append((int(net6.network_address), int(net6.netmask)))
            ll6 = [a for a, _ in addrs6 if a and a.lower().startswith("fe80:")]
            ifaces.append(Interface(
                idx, name, bytes.fromhex(mac.replace(":", "")),
                socket.inet_aton(addrs[0][0]) if addrs else bytes(4),
                nets, link.get("mtu") or 1500,
                {socket.inet_aton(a) for a, _ in addrs}
                | {socket.inet_pton(socket.AF_INET6, a) for a, _ in glob6},
                socket.inet_pton(socket.AF_INET6, glob6[0][0]) if glob6 else b"",
                nets6,
                socket.inet_pton(socket.AF_INET6, ll6[0]) if ll6 else b"",
            ))
        if wanted is not None:
            missing = wanted - {i.name for i in ifaces}
            if missing:
                raise OSError(f"packet data plane: no interface with an address {', '.join(sorted(missing))}")
        for n in ipr.get_neighbours(family=socket.AF_INET):
            dst, lladdr = n.get("NDA_DST"), n.get("NDA_LLADDR")
            if dst and lladdr and n["state"] & 0xDE:  # REACHABLE|STALE|DELAY|PROBE|PERMANENT|NOARP
                neigh[socket.inet_aton(dst)] = bytes.fromhex(lladdr.replace(":", ""))
        for n in ipr.get_neighbours(family=socket.AF_INET6):
            dst, lladdr = n.get("NDA_DST"), n.get("NDA_LLADDR")
            if dst and lladdr and n["state"] & 0xDE:
                neigh[socket.inet_pton(socket.AF_INET6, dst)] = bytes.fromhex(lladdr.replace(":", ""))
        for r in ipr.get_default_routes(family=socket.AF_INET):
            gw, oif = r.get("RTA_GATEWAY"), r.get("RTA_OIF")
            if gw and oif:
                gateway = (oif, socket.inet_aton(gw))
                break
        for r in ipr.get_default_routes(family=socket.AF_INET6):
            gw, oif = r.get("RTA_GATEWAY"), r.get("RTA_OIF")
            if gw and oif:
                gateway6 = (oif, socket.inet_pton(socket.AF_INET6, gw))
                break
    return ifaces, (gateway, gateway6), neigh


def kernel_neighbours() -> dict[bytes, bytes]:
    """The kernel's complete IPv4 neighbour entries, from /proc/net/arp (no netlink, so it is
    safe on the event loop and cheap enough to poll)."""
    found: dict[bytes, bytes] = {}
    try:
        with open("/proc/net/arp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and int(parts[2], 16) & 0x2:  # ATF_COM: resolved
                    found[socket.inet_aton(parts[0])] = bytes.fromhex(parts[3].replace(":", ""))
    except (OSError, ValueError, StopIteration):
        pass
    return found


def disable_offloads(names: Iterable[str]) -> None:
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        log.warning("ethtool not installed: GRO/TSO stay as they are")
        return
    for n in names:
        subprocess.run([ethtool, "-K", n, "gro", "off", "gso", "off", "tso", "off", "tx", "off"],
                       capture_output=True, timeout=10, check=False)


class _Follow(TableListener):
    def __init__(self, plane: PacketDataPlane) -> None:
        self.plane = plane

    def service_added(self, svc: VirtualService) -> None:
        self.plane.table_changed()

    def service_changed(self, svc: VirtualService) -> None:
        self.plane.table_changed()

    def service_deleted(self, svc: VirtualService) -> None:
        self.plane.table_changed()

    def dest_added(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane.table_changed()

    def dest_changed(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane.table_changed()

    def dest_deleted(self, svc: VirtualService, dest: RealServer) -> None:
        self.plane.table_changed()


class PacketDataPlane:
    """DR/NAT/TUN forwarding on AF_PACKET rings for one director."""

    name = "packet"

    def __init__(self, director: Director, interfaces: str | list[str] | None = None,
                 firewall: bool = True, offloads_off: bool = False, answer_arp: bool = True,
                 verify_new_checksums: bool = True, fastpath: bool | None = None,
                 flow_limit: int = FLOW_LIMIT, syn_max_lag: float | None = None,
                 open_at_syn: bool = True) -> None:
        """``open_at_syn``: a TCP connection's flow goes in the C table with its SYN (the
        handshake's ACK is forwarded in C); False installs it at the ACK, a second pass through
        the core per connection (the benchmark's reference row)."""
        self.director = director
        self.open_at_syn = open_at_syn
        self.fastpath = fastpath_wanted(fastpath)
        self.flow_limit = flow_limit
        # 0: never shed SYNs at the ring; None: PYLVS_SYN_MAX_LAG, else SYN_MAX_LAG
        self.syn_max_lag = syn_max_lag if syn_max_lag is not None else syn_max_lag_setting()
        self.flows: Any = None  # the _fastpath.FlowTable while open with the C hot path
        # gives a TCP connection's flow in the C table at its SYN (opening.py), with the table
        self.opener: CFlowOpener | None = None
        # run after a drain's frames are decided and before they are sent (the XDP plane writes
        # the flows its SYNs got, so each is in place before its handshake's ACK can return)
        self.before_transmit: Callable[[], object] | None = None
        if isinstance(interfaces, str):
            interfaces = [i for i in interfaces.split(",") if i]
        self.interface_names = interfaces
        self.firewall = firewall
        self.offloads_off = offloads_off
        self.answer_arp = answer_arp
        self.verify_new_checksums = verify_new_checksums
        self.forwarder: Forwarder | None = None
        self.rings: dict[int, PacketRing] = {}
        self.rings_by_fd: dict[int, PacketRing | ArpSocket] = {}
        self.arp_socks: list[ArpSocket] = []
        self.nd_socks: dict[int, NdSocket] = {}  # ifindex -> its neighbour discovery socket
        self.firewall_state = "off"
        # Left in place by close() on a planned restart (the daemon saved its connection
        # table): during the gap a segment for a VIP is then dropped and retransmitted to the
        # next director instead of being reset by this host's own stack; the next start
        # replaces the table in one nft transaction.
        self.keep_firewall = False
        self._rules_for: tuple[set[bytes], set[bytes]] | None = None
        self._listener = _Follow(self)
        self._poller: select.poll | None = None
        self._kick: socket.socket | None = None
        self._kick6: socket.socket | None = None
        self._neigh_check_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.ring_recoveries = 0
        # the collector's full passes on a timer while open (heap.py: why)
        self.collections = FullCollections()

    # -- set-up --------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the rings and install the firewall rules (no event loop needed)."""
        ifaces, (gateway, gateway6), neigh = read_interfaces(self.interface_names)
        if not ifaces:
            raise OSError("packet data plane: no interface with an address to forward on")
        if self.offloads_off:
            disable_offloads(i.name for i in ifaces)
        fw = Forwarder(self.director, ifaces, gateway,
                       verify_new_checksums=self.verify_new_checksums, gateway6=gateway6)
        fw.neighbours.update(neigh)
        fw.on_missing_neighbour = self._kick_kernel_arp
        fw.v6.on_missing_neighbour = self._kick_kernel_arp
        self.forwarder = fw
        self._kick = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._kick.setblocking(False)
        with contextlib.suppress(OSError):  # a kernel without IPv6
            self._kick6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            self._kick6.setblocking(False)
        try:
            for i in ifaces:
                self.rings[i.ifindex] = PacketRing(i.name, fast=self.fastpath,
                                                   syn_max_lag=self.syn_max_lag)
                self.arp_socks.append(ArpSocket(i.name))
                if self._kick6 is not None:
                    self.nd_socks[i.ifindex] = NdSocket(i.name)
            if self.fastpath and _fastpath is not None:
                self.flows = _fastpath.FlowTable(self.flow_limit)
                for r in self.rings.values():
                    self.flows.attach(r.fast)
                fw.flows = self.flows
                self.director.before_tick.append(fw.sync_flows)
                if self.open_at_syn:
                    self.opener = fw.opens = CFlowOpener(self.flows, self.director)
                    self.before_transmit = self.opener.tick
            self.rings_by_fd = {r.fileno(): r for r in self.rings.values()}
            self.rings_by_fd.update({a.fileno(): a for a in self.arp_socks})
            self.rings_by_fd.update({s.fileno(): s for s in self.nd_socks.values()})
        except OSError:
            self.close()
            raise
        self.director.table.listeners.append(self._listener)
        self.collections.start()
        self.director.before_tick.append(self.collections.tick)
        self.table_changed()

    def _kick_kernel_arp(self, ip: bytes) -> None:
        """Make the kernel resolve ``ip`` too (one empty datagram to the discard port), and look
        at its table shortly after: our own ARP request and socket are the fast path, this one
        does not depend on them."""
        if len(ip) == 16:
            if self._kick6 is not None:
                with contextlib.suppress(OSError):
                    self._kick6.sendto(b"", (socket.inet_ntop(socket.AF_INET6, ip), 9))
        elif self._kick is not None:
            with contextlib.suppress(OSError):
                self._kick.sendto(b"", (socket.inet_ntoa(ip), 9))
        self._neigh_check_at = time.monotonic() + 0.2
        if self._loop is not None:
            self._loop.call_later(0.25, self._check_kernel_neighbours)

    def _check_kernel_neighbours(self) -> None:
        self._neigh_check_at = 0.0
        if self.forwarder is not None:
            self.forwarder.learn(kernel_neighbours())

    def close(self) -> None:
        if self._kick is not None:
            self._kick.close()
            self._kick = None
        if self._kick6 is not None:
            self._kick6.close()
            self._kick6 = None
        with contextlib.suppress(ValueError):
            self.director.table.listeners.remove(self._listener)
        with contextlib.suppress(ValueError):
            self.director.before_tick.remove(self.collections.tick)
        self.collections.stop()
        if self.opener is not None:
            self.opener.take_acked()  # the handshakes C saw complete
            self.opener = None
            self.before_transmit = None
            if self.forwarder is not None:
                self.forwarder.opens = None
        if self.flows is not None:
            if self.forwarder is not None:
                self.forwarder.clear_flows()  # what they forwarded still counts
                self.forwarder.flows = None
                with contextlib.suppress(ValueError):
                    self.director.before_tick.remove(self.forwarder.sync_flows)
            self.flows.clear()
            self.flows = None
        for r in self.rings.values():
            r.close()
        self.rings.clear()
        for a in self.arp_socks:
            a.close()
        self.arp_socks.clear()
        for nd in self.nd_socks.values():
            nd.close()
        self.nd_socks.clear()
        self.rings_by_fd.clear()
        self._poller = None
        if self.firewall_state == "on" and not self.keep_firewall:
            self._nft(f"delete table inet {NFT_TABLE}\n")
            self.firewall_state = "off"
        self._rules_for = None

    def table_changed(self) -> None:
        if self.forwarder is not None:
            # a server deleted, quiesced or re-weighted, a service changed: the next packet of
            # each connection goes through the Director again and installs its flow again
            self.forwarder.clear_flows()
        vips: set[bytes] = set()
        nat_rips: set[bytes] = set()
        for svc in self.director.table.services():
            if svc.key.addr is not None:
                vips.add(svc.key.addr.packed)
            for d in svc.destinations:
                if d.fwd == ForwardingMethod.MASQ:
                    nat_rips.add(d.addr.packed)
        if self.forwarder is not None and self.answer_arp:
            # new IPv6 VIPs are announced (unsolicited NAs) through the ND sockets: this may
            # run outside the ring's reader, whose TX slots it must not touch
            for idx, frame in self.forwarder.set_vips(vips):
                nd = self.nd_socks.get(idx)
                if nd is not None:
                    nd.send(frame)
            groups = {multicast_mac(solicited_node(v)) for v in self.forwarder.v6.vips}
            for nd in self.nd_socks.values():
                nd.join(groups)
        if self.firewall and (vips, nat_rips) != self._rules_for:
            # only when the addresses change: weights and schedulers need no new rules
            self._rules_for = (vips, nat_rips)
            self._install_rules(vips, nat_rips)

    def _install_rules(self, vips: set[bytes], rips: set[bytes]) -> None:
        def rules(fam: str, field: str, addrs: set[bytes]) -> str:
            size, af = (4, socket.AF_INET) if fam == "ip" else (16, socket.AF_INET6)
            chosen = sorted(socket.inet_ntop(af, a) for a in addrs if len(a) == size)
            if not chosen:
                return ""
            return f"{fam} {field} {{ {', '.join(chosen)} }} meta l4proto {{ tcp, udp }} drop\n    "

        # input: only traffic to the VIPs (the director's own health checks of NAT real
        # servers come back to it and must pass); forward: also NAT replies, which we rewrite
        vip_rule = rules("ip", "daddr", vips) + rules("ip6", "daddr", vips)
        rip_rule = rules("ip", "saddr", rips) + rules("ip6", "saddr", rips)
        script = (
            f"table inet {NFT_TABLE} {{}}\ndelete table inet {NFT_TABLE}\n"
            f"table inet {NFT_TABLE} {{\n"
            f"  chain input {{ type filter hook input priority -300; policy accept;\n"
            f"    {vip_rule}\n  }}\n"
            f"  chain forward {{ type filter hook forward priority -300; policy accept;\n"
            f"    {vip_rule}\n    {rip_rule}\n  }}\n"
            "}\n"
        )
        self.firewall_state = "on" if self._nft(script) else "failed"

    def _nft(self, script: str) -> bool:
        nft = shutil.which("nft")
        if nft is None:
            log.warning("nft not installed: the local stack may answer or reset forwarded traffic")
            return False
        res = subprocess.run([nft, "-f", "-"], input=script, text=True, capture_output=True,
                             timeout=20, check=False)
        if res.returncode != 0:
            log.warning("nft failed: %s", res.stderr.strip())
            return False
        return True

    # -- the loop ------------------------------------------------------------------------------
    def poll_once(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for frames, forward all that are ready; frames handled."""
        fw = self.forwarder
        assert fw is not None
        if self._poller is None:
            self._poller = select.poll()
            for fd in self.rings_by_fd:
                self._poller.register(fd, select.POLLIN)
        n = 0
        for fd, _ev in self._poller.poll(timeout * 1000):
            n += self._drain(self.rings_by_fd[fd], fw)
        return n

    def _drain(self, ring: PacketRing | ArpSocket, fw: Forwarder) -> int:
        rings = self.rings
        ifindex = ring.ifindex
        handle = fw.handle
        side = fw.side_frames

        # the ring's verdict on each frame (checksum known good, super-frame): the C ring's
        # when it walks, else the Python ring's; ARP sockets have none
        meta_of: Any = (ring.fast if isinstance(ring, PacketRing) and ring.fast is not None
                        else ring)

        # every ring in C: a forwarded frame goes straight to its C queue (one Python call
        # less per frame); 1 back means bigger than a slot, which PacketRing sends otherwise
        queue_of: dict[int, Any] = {idx: (r.fast.queue if r.fast is not None else r.queue)
                                    for idx, r in rings.items()}
        # connections whose handshake's ACK C forwarded (an opening flow's first packet): their
        # entries move on before any later frame of this drain is decided (a FIN)
        opener = self.opener
        acked: list[Any] = opener.acked if opener is not None else []

        def on_frame(frame: RxFrame) -> None:
            if acked:
                opener.take_acked()  # type: ignore[union-attr]
            out = handle(ifindex, frame, meta_of.rx_meta)
            if out is not None and queue_of[out[0]](out[1]) == 1:
                rings[out[0]].queue(out[1])
            if side:
                for idx, f in side:
                    r = rings.get(idx)
                    if r is not None:
                        r.queue(f)
                side.clear()

        # a bounded share per wake-up: under a flood the ring never runs dry, and the event
        # loop (control socket, timers) must still get its turn
        n = (ring.receive(on_frame, 8, self.flows) if isinstance(ring, PacketRing)
             else ring.receive(on_frame))
        if self.before_transmit is not None:
            self.before_transmit()
        for r in rings.values():
            r.flush()
        return n

    def run_for(self, seconds: float) -> int:
        """Forward in a blocking loop for ``seconds`` (benchmarks); frames handled."""
        end = time.monotonic() + seconds
        next_tick = time.monotonic() + 1
        total = 0
        while True:
            now = time.monotonic()
            if now >= end:
                return total
            total += self.poll_once(min(0.2, end - now))
            if self._neigh_check_at and now >= self._neigh_check_at:
                self._check_kernel_neighbours()
            if now >= next_tick:
                self.director.tick()
                next_tick = now + 1

    async def start(self) -> None:
        # in a worker thread: netlink reads must not run on the daemon's event loop
        await asyncio.to_thread(self.open)
        loop = asyncio.get_running_loop()
        self._loop = loop
        fw = self.forwarder
        assert fw is not None
        for src in self.rings_by_fd.values():
            loop.add_reader(src.fileno(), self._drain, src, fw)
        self._watchdog = asyncio.create_task(self._watch_rings(loop, fw))
        # director.tick() is the daemon's job under asyncio (it ticks whatever the data plane)

    async def _watch_rings(self, loop: asyncio.AbstractEventLoop, fw: Forwarder) -> None:
        """Keep forwarding across a link that goes down and comes back.

        When an interface goes down its packet sockets report ENETDOWN, and after that the
        event loop may no longer be woken for the ring even though the kernel goes on filling
        it: the ring fills, every later frame is dropped, and the director stops forwarding
        for good (seen when a VRRP master's link flaps). So a ring found holding frames that
        nobody read is drained here and its descriptor watched afresh.
        """
        waiting: dict[int, int] = {}  # ifindex -> rx_frames when frames were seen waiting
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for idx, ring in list(self.rings.items()):
                moved = ring.resync()
                if not (moved or ring.ready()):
                    waiting.pop(idx, None)
                    continue
                # frames waiting now: fine if the reader made progress since the last look
                if not moved and waiting.get(idx) != ring.rx_frames:
                    waiting[idx] = ring.rx_frames
                    continue
                waiting.pop(idx, None)
                self.ring_recoveries += 1
                log.info("%s: frames waiting in the ring unread, polling it again", ring.ifname)
                loop.remove_reader(ring.fileno())
                loop.add_reader(ring.fileno(), self._drain, ring, fw)
                self._drain(ring, fw)

    async def stop(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if self._loop is not None:
            for fd in self.rings_by_fd:
                self._loop.remove_reader(fd)
        self.close()

    def describe(self) -> dict[str, Any]:
        fw = self.forwarder
        for r in self.rings.values():
            r.kernel_stats()
        return {
            "name": self.name,
            "interfaces": [r.ifname for r in self.rings.values()],
            "firewall": self.firewall_state,
            # frames the Python path forwarded, and those flows forwarded in C
            "forwarded": ((fw.forwarded + fw.v6.forwarded if fw else 0)
                          + (self.flows.forwarded if self.flows is not None else 0)),
            "arp_replies": fw.arp_replies if fw else 0,
            "arp_requests": fw.arp_requests if fw else 0,
            # IPv6: frames the Python path forwarded, neighbour discovery answered and asked
            "ipv6_forwarded": fw.v6.forwarded if fw else 0,
            "nd_replies": fw.v6.nd_replies if fw else 0,
            "nd_solicits": fw.v6.nd_solicits if fw else 0,
            "nd_announced": fw.v6.nd_announced if fw else 0,
            "icmp_forwarded": fw.icmp_forwarded + fw.v6.icmp_forwarded if fw else 0,
            # fragments dropped (overlap, incomplete, table full...) count among the drops
            "drops": ({**fw.drops, **{k: v for k, v in fw.frags.counters.items()
                                      if k not in ("frag_forwarded", "frag_datagrams")}}
                      if fw else {}),
            "fragments_forwarded": fw.frags.counters.get("frag_forwarded", 0) if fw else 0,
            "fragmented_datagrams": fw.frags.counters.get("frag_datagrams", 0) if fw else 0,
            "rx_frames": sum(r.rx_frames for r in self.rings.values()),
            "tx_frames": sum(r.tx_sent + r.tx_fallback for r in self.rings.values()),
            "tx_errors": sum(r.tx_errors for r in self.rings.values()),
            "rx_ring_drops": sum(r.kernel_drops for r in self.rings.values()),
            "ring_recoveries": self.ring_recoveries,
            "tx_ring_full": sum(r.tx_ring_full for r in self.rings.values()),
            "rx_truncated": sum(r.rx_truncated for r in self.rings.values()),
            "gso_split": fw.gso_split if fw else 0,
            "fastpath": "on" if self.flows is not None else "off",
            "flows": self.flows.count if self.flows is not None else 0,
            "fast_frames": sum(r.fast_frames for r in self.rings.values()),
            # connection-opening SYNs shed at the ring: the reader was behind (ring.py)
            "syn_shed": sum(r.syn_shed for r in self.rings.values()),
            "syn_retried": sum(r.syn_retried for r in self.rings.values()),
            "gc_full": self.collections.describe(),
            # flows the C table got at a connection's SYN (opening.py)
            **(self.opener.describe_opening() if self.opener is not None else {}),
        }
