"""The ``xdp`` data plane: the AF_PACKET plane's brain with an XDP program in front of it.

Why this shape (the path up, chosen by measurement in BENCHMARKS.md): packets the program does
not forward (new connections, TCP SYN/FIN/RST, ARP/ND, fragments, anything unusual) continue up
the stack with ``XDP_PASS`` and reach the packet plane's AF_PACKET rings exactly as they did
without XDP, so every scheduler, persistence template, threshold and the TCP state machine
decide them with the code every other plane uses. What the forwarder would have handed to the
C flow table (a stable connection's rewrite, per direction) goes into the program's flow map
instead, and the rest of that flow never leaves the kernel's driver hook. An AF_XDP socket
would save the copy into the ring for new connections, at the price of a second receive path
to keep correct; a ring buffer would carry only metadata and need the frame anyway.

Attach mode: ``native`` (the driver's hook) where the driver supports XDP; ``generic`` (skb
mode) otherwise. ``auto`` picks native except on veth: there native XDP_TX only reaches the
peer when the *peer* has an XDP program of its own (on 6.18, GRO on the peer is enough for
redirect but not for XDP_TX: the peer's ring fills and every frame is an xdp_tx_error,
measured by ``make bench-xdp``), and a director cannot set that from its own side.

Which flows (``xdp_flows``, ``--xdp-flows``): DR flows always (a MAC rewrite is right whatever
the checksum state); NAT (both ways) and TUN only in native mode on a real NIC, where the
program sees complete checksums. On veth, native or generic, a local sender's TX checksum
offload leaves frames that carry only the pseudo-header sum, which an XDP program cannot tell
apart (measured: with native NAT on veth the receivers counted checksum errors), so NAT and TUN
stay with the C table, or with Python where there is none (``SplitFlowSink``). ``all`` gives
the program every kind anyway, for an operator who knows every sender computes full checksums
(a warning says so); ``dr`` keeps it to DR. IPv4 and IPv6 alike: the forwarder's IPv6 path
(``forward6.IPv6Path.flows``) is given the same sink, which sends IPv6 flows (16-byte keys) to
the program only, never to the IPv4-only C table.

``mh`` in the kernel: services whose whole decision is the Maglev table lookup (DR, and TUN and
NAT where the program takes those flows) get their table
in the program's maps (``mhtables``), refreshed on every table change and each tick, and the
program schedules their new connections itself (none while the core's flood defences hold new
connections: ``held_by_core``, checked on each pass of the loop); the plane enters those connections in the
director's table from the program's ring of records (``XdpFlowSink.import_new``) before each
batch of frames, every ``IMPORT_INTERVAL`` (for ``IMPORT_SLICE`` at most) and at each sync,
where records lost to a full ring are repaired from the flow map.

Connections the core schedules get their flow with their SYN (``forward6.NextHop._open``,
``XdpFlowSink.open``): the flows of a ring drain's SYNs are written in one batch before the
drain's frames are sent (``before_transmit``), so the handshake's ACK finds its flow and stays
in the kernel; the program reports it (``NEW_ACKED``) and the import above moves the entry to
ESTABLISHED. Before, every connection's ACK came up for a second pass through the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import socket
import struct
import time
from typing import Any

from pylvs.core.director import Director
from pylvs.dataplane.packet.dataplane import PacketDataPlane
from pylvs.dataplane.packet.forward import FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN
from pylvs.dataplane.packet.ring import ArpSocket, PacketRing
from pylvs.dataplane.xdp.flows import SplitFlowSink, SplitOpener, XdpFlowSink
from pylvs.dataplane.xdp.loader import XdpProgram, XdpUnavailable
from pylvs.dataplane.xdp.mhtables import (
    MhMaps,
    NextHop,
    held_by_core,
    reply_routes,
    wanted_tables,
)

log = logging.getLogger("pylvs.dataplane.xdp")

MODES = ("auto", "native", "generic")
# which kinds of flow the program takes: auto (DR, plus NAT/TUN in native mode on a real NIC),
# dr, or all (the operator vouches that senders compute full checksums)
FLOWS = ("auto", "dr", "all")


# kernel-scheduled connections are entered in the table this often, besides before each batch
# of frames and at each tick (a flood the program forwards alone wakes no ring), and while the
# ring holds a backlog as often as the loop comes round, for at most IMPORT_SLICE seconds at a
# time (≈ 7-10 µs a connection): between slices the loop polls the rings without waiting and
# other tasks run, so frames going up are never held longer than a slice; before a batch of
# frames only IMPORT_DRAIN records are read (a FIN going up ends a connection older than most:
# its record, the ring being in order, is among the first)
IMPORT_INTERVAL = 0.1
IMPORT_SLICE = 0.07
IMPORT_DRAIN = 1024

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 3


def driver_name(ifname: str) -> str:
    """The interface's driver as ``ethtool -i`` names it (``veth``, ``virtio_net``, ...), read
    with the same ioctl; ``""`` when the device does not say."""
    info = ctypes.create_string_buffer(struct.pack("=I", ETHTOOL_GDRVINFO), 196)
    ifreq = struct.pack("=16sQ", ifname.encode()[:15], ctypes.addressof(info)).ljust(40, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    except OSError:
        return ""
    return info.raw[4:36].split(b"\0", 1)[0].decode(errors="replace")


class XdpDataPlane(PacketDataPlane):
    """Forwards established flows in XDP; the AF_PACKET plane behind it does everything else."""

    name = "xdp"

    def __init__(self, director: Director, xdp_mode: str = "auto", xdp_flows: str = "auto",
                 open_at_syn: bool = True, **options: Any) -> None:
        """``open_at_syn``: a TCP connection's flow goes in with its SYN (the handshake's ACK
        stays in the kernel); False installs it at the ACK, a second pass through the core per
        connection (the benchmark's reference row)."""
        if xdp_mode not in MODES:
            raise ValueError(f"xdp mode must be one of {', '.join(MODES)}, not {xdp_mode!r}")
        if xdp_flows not in FLOWS:
            raise ValueError(f"xdp flows must be one of {', '.join(FLOWS)}, not {xdp_flows!r}")
        self.xdp_flows = xdp_flows
        super().__init__(director, open_at_syn=open_at_syn, **options)
        self.xdp_mode = xdp_mode
        self.program: XdpProgram | None = None
        self.split: SplitFlowSink | None = None
        self.attach_modes: dict[str, str] = {}
        self.mh: MhMaps | None = None  # the Maglev tables the program schedules mh services from
        self.mh_held: str | None = None  # why the core decides every new connection now
        self._imported_at = 0.0
        self._importer: asyncio.Task[None] | None = None

    def open(self) -> None:
        program = XdpProgram()  # XdpUnavailable: one line, before anything is touched
        try:
            super().open()
            fw = self.forwarder
            assert fw is not None
            xdp_sink = XdpFlowSink(program, self.flow_limit, self.director)
            for ifindex in self.rings:
                name = self.rings[ifindex].ifname
                mode = self.xdp_mode
                if mode == "auto" and driver_name(name) == "veth":
                    mode = "generic"
                self.attach_modes[name] = program.attach(ifindex, mode)
            # Which flows the program takes: DR everywhere (a MAC rewrite is right whatever the
            # checksum state); NAT and TUN only where the program sees complete checksums, that
            # is native mode on a real NIC. On veth, native or generic, a sender's TX checksum
            # offload leaves partial checksums the program cannot tell apart (measured: NAT
            # frames with bad checksums at the receivers), so those flows stay with the C table
            # unless the operator says every sender computes full checksums (flows="all").
            trusted = all(m == "native" and driver_name(n) != "veth"
                          for n, m in self.attach_modes.items())
            everything = frozenset({FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN})
            if self.xdp_flows == "all":
                kinds = everything
                if not trusted:
                    log.warning("xdp flows=all on %s: NAT and TUN rewrites are only right if "
                                "every sender computes full checksums (no TX checksum offload)",
                                ", ".join(sorted(self.attach_modes)))
            elif self.xdp_flows == "dr" or not trusted:
                kinds = frozenset({FLOW_DR})
            else:
                kinds = everything
            # The rings keep reading the C table (self.flows); the forwarder offers to both.
            split = SplitFlowSink(xdp_sink, self.flows, kinds)
            if self.flows is None:  # no C table: the forwarder had no flows to sync before
                self.director.before_tick.append(fw.sync_flows)
            fw.flows = split
            fw.v6.flows = split  # IPv6 flows: the program's only (SplitFlowSink)
            # a TCP connection's flow goes in at its SYN (the program's written before the SYN
            # is sent), to the program or, for the kinds it does not take, to the C table
            if self.open_at_syn:
                xdp_sink.open_kinds = kinds & {FLOW_DR, FLOW_NAT_DST, FLOW_TUN}
                opens = SplitOpener(xdp_sink, self.opener, kinds)
                fw.opens = fw.v6.opens = opens
                self.before_transmit = opens.before_transmit
            self.split = split
            self.program = program
            self.mh = MhMaps(program)
            fw.on_unknown_reply = fw.v6.on_unknown_reply = self._late_import
            self.refresh_mh()
            # next hops learned since (a server's MAC) reach the tables at the next tick
            self.director.before_tick.append(self.refresh_mh)
        except BaseException:
            self.mh = None
            self.program = None
            program.close()
            super().close()
            raise
        log.info("xdp program attached: %s",
                 ", ".join(f"{n} ({m})" for n, m in sorted(self.attach_modes.items())))

    # -- kernel-scheduled mh services --------------------------------------------------------

    def next_hop(self, ip: bytes) -> NextHop | None:
        """Where the forwarder would send a real server's packets, if it knows the MAC yet."""
        fw = self.forwarder
        if fw is None:
            return None
        path: Any = fw if len(ip) == 4 else fw.v6
        r = path.route(ip)
        if r is None:
            return None
        iface, hop = r
        mac = path.neighbours.get(hop)
        if mac is None:
            return None
        src = iface.addr if len(ip) == 4 else (iface.addr6 or iface.ll6)
        return NextHop(iface.ifindex, bytes(mac), bytes(iface.mac), bytes(src or b""), iface.mtu)

    def refresh_mh(self) -> None:
        """Rewrite the Maglev tables of the services the program may schedule (only those
        whose table, servers or next hops changed)."""
        if self.mh is None or self.split is None:
            return
        held = held_by_core(self.director)
        if held != self.mh_held:
            if held:
                log.info("xdp: new mh connections go to the core: %s", held)
            else:
                log.info("xdp: the program schedules mh services again")
            self.mh_held = held
        self.mh.apply([] if held else wanted_tables(
            self.director.table.services(), self.split.xdp_kinds, self.next_hop))
        fw = self.forwarder
        if fw is not None:
            self.mh.set_hops(reply_routes(fw.interfaces.values(), fw.gateway, fw.v6.gateway,
                                          fw.neighbours))

    def _late_import(self) -> bool:
        """A packet of no known connection and to no service (the forwarder's
        ``on_unknown_reply``): if the program schedules NAT connections, it may be the server's
        reply to one whose record is still in the ring (a backlog), so the ring is read now
        (``IMPORT_SLICE`` at most) rather than the reply lost. True if anything was entered."""
        mh, split = self.mh, self.split
        if mh is None or split is None or not mh.nat:
            return False
        return split.xdp.import_for(IMPORT_SLICE) > 0

    def _hold_changed(self) -> bool:
        """Did the core's defences start or stop holding new connections (``held_by_core``)
        since the tables were last written? Checked on every pass of the loop (a few attribute
        reads, and one formatted reason while they hold)."""
        return (held_by_core(self.director) is None) != (self.mh_held is None)

    def table_changed(self) -> None:
        # flows the program scheduled are entered first, so the flows the change clears
        # include them and their connections go on under the core's rules
        split = getattr(self, "split", None)
        if split is not None:
            split.xdp.import_new()
        super().table_changed()
        if getattr(self, "mh", None) is not None:
            self.refresh_mh()

    def _records_due(self) -> bool:
        """Whether the program's ring may hold records: connections it schedules (live mh
        tables) or the ACKs of flows opened at SYNs."""
        split = self.split
        return split is not None and bool(split.xdp.opened
                                          or (self.mh is not None and self.mh.live))

    def backlog(self) -> bool:
        """Whether the last read of the program's ring left records in it."""
        return self.split is not None and not self.split.xdp.drained

    def import_due(self, at_once: bool = False) -> int:
        """Enter the program's new connections (for ``IMPORT_SLICE`` at most) if the ring
        holds a backlog or ``IMPORT_INTERVAL`` has passed; first, take the Maglev tables out or
        put them back if the core's defences started or stopped holding new connections. Run
        on every pass of the loop, blocking (``poll_once``) or asyncio's (``_import_loop``);
        ``at_once``: whether or not the interval has passed (a listing)."""
        if self.mh is not None and self._hold_changed():
            self.refresh_mh()
        now = time.monotonic()
        if (self.split is None or not self._records_due()
                or (not at_once and not self.backlog()
                    and now - self._imported_at < IMPORT_INTERVAL)):
            return 0
        self._imported_at = now
        return self.split.xdp.import_for(IMPORT_SLICE)

    def refresh_table(self) -> None:
        """Before the table is listed (``-Lnc``): the program's records so far entered, so a
        connection whose handshake ACK the program forwarded is listed ESTABLISHED at once,
        as IPVS's table would show it, not after the next ``IMPORT_INTERVAL``. (The C table's
        handshakes need nothing: each drain that forwards one moves its entry on.)"""
        self.import_due(at_once=True)

    def poll_once(self, timeout: float) -> int:
        n = super().poll_once(min(timeout, 0.0 if self.backlog() else IMPORT_INTERVAL))
        self.import_due()
        return n

    async def start(self) -> None:
        await super().start()
        self._importer = asyncio.create_task(self._import_loop())

    async def _import_loop(self) -> None:
        while True:  # a backlog: the next slice once the other tasks had their turn
            await asyncio.sleep(0.0 if self.backlog() else IMPORT_INTERVAL)
            self.import_due()

    async def stop(self) -> None:
        importer, self._importer = self._importer, None
        if importer is not None:
            importer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await importer
        await super().stop()

    def _drain(self, ring: PacketRing | ArpSocket, fw: Any) -> int:
        # a frame going up may belong to a flow the program scheduled (a FIN): its entry first
        if self.split is not None and self._records_due():
            self.split.xdp.import_new(IMPORT_DRAIN)
        return super()._drain(ring, fw)

    def close(self) -> None:
        if self.refresh_mh in self.director.before_tick:
            self.director.before_tick.remove(self.refresh_mh)
        if self.mh is not None and self.split is not None:
            # what the program scheduled and the core has not entered yet: entered now, so the
            # table a planned restart saves has those connections too
            self.split.xdp.import_for(float("inf"))
        if self.mh is not None:
            self.mh.clear()
            self.mh = None
        fw = self.forwarder
        if fw is not None:
            fw.on_unknown_reply = fw.v6.on_unknown_reply = None
            fw.opens = fw.v6.opens = None
        self.before_transmit = None
        if fw is not None and self.split is not None:
            fw.clear_flows()  # what the program forwarded still counts
            fw.v6.flows = None
            if self.flows is None:
                fw.flows = None
                if fw.sync_flows in self.director.before_tick:
                    self.director.before_tick.remove(fw.sync_flows)
            else:
                fw.flows = self.flows
        self.split = None
        super().close()
        if self.program is not None:
            self.program.close()  # detaches from every interface
            self.program = None
        self.attach_modes.clear()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["fastpath"] = "xdp" if self.program is not None else "off"
        info["xdp"] = {
            "attached": dict(self.attach_modes),
            "flows": self.split.xdp.count if self.split is not None else 0,
            "kinds": sorted(self.split.xdp_kinds) if self.split is not None else [],
            "counters": self.program.stats() if self.program is not None else {},
            "mh_services": len(self.mh.live) if self.mh is not None else 0,
            "imported": self.split.xdp.imported if self.split is not None else 0,
            "repaired": self.split.xdp.repaired if self.split is not None else 0,
            "orphan_replies": self.split.xdp.orphans if self.split is not None else 0,
            "import_refused": self.split.xdp.import_refused if self.split is not None else 0,
            "opened_at_syn": self.split.xdp.opened if self.split is not None else 0,
            "open_skipped": self.split.xdp.open_skipped if self.split is not None else 0,
            "open_paused": self.split.xdp.open_paused if self.split is not None else False,
            "open_sampled_out": self.split.xdp.open_sampled_out if self.split is not None else 0,
        }
        return info


__all__ = ["XdpDataPlane", "XdpUnavailable"]
