"""The XDP program's flow map as the packet forwarder's flow table (``forward.FlowSink``).

The forwarder already offers each connection's rewrite, per direction, once the core has
decided it and the connection is stable (ESTABLISHED TCP, or a stored UDP entry), and takes it
back when the connection leaves that state; the C hot path's table and this map are two sinks
for the same offers, so the Python core stays the only brain.

Counters and timers: the program counts packets and bytes per flow and stamps the last packet
(``bpf_ktime_get_ns``, CLOCK_MONOTONIC, the clock ``time.monotonic`` reads). ``sync`` turns
what changed since the last call into the rows the forwarder gives the Director (so ``--stats``,
``--rate`` and the connection timers in ``-Lnc`` stay true) and drops flows whose connection
has left the table. It reads the map with batch lookups (``_BATCH`` entries a system call):
kernel-made connections make it hold as many flows as the program's new connections of the
last minutes, where a lookup per flow (≈ 3 µs) would cost a tick seconds.

Flows the program made itself (an ``mh`` service's new connection, scheduled from the Maglev
table ``mhtables`` keeps) reach the core as records of the program's ``new_flows`` ring (the
key, the server, the first packet's length and time; a second record when the handshake's ACK
passes): ``import_new`` reads them in bulk from the mapped ring and enters each connection in
the director's table, through ``Director.schedule`` when the scheduler still picks the
program's server, else bound to that server as a sync backup binds an entry, and from then on
the flow is one of this sink's like any other (with a NAT connection's reply flow, when the
program made one with it: the record says so). A record the full ring refused is counted by the
program (``mh_queue_full``); the next ``sync``, which reads the whole flow map anyway, enters
the kernel-made flows it does not know (``REPAIR_LIMIT`` per tick), so none stays out of the
table for good.

A TCP connection the core scheduled gets its way in at its SYN (``open``, written in one batch
per ring drain by ``flush``), marked FLOW_F_OPENING, so that its handshake's ACK is forwarded
by the program, which reports it with the same NEW_ACKED record; a SYN flood (few of the
opened flows see an ACK) turns that down to a sample of SYNs (``_judge``).
"""

from __future__ import annotations

import ipaddress
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any

from pylvs.core.conntrack import TCP_S_SYN_RECV, UDP_S_NORMAL
from pylvs.core.director import DIR_INPUT, DIR_OUTPUT, Director
from pylvs.core.schedulers.mh import remember_client_hash
from pylvs.core.sync import SyncConn, apply
from pylvs.dataplane.packet.heap import collector_paused
from pylvs.dataplane.packet.opening import CFlowOpener, OpenGuard
from pylvs.dataplane.xdp.loader import XdpProgram
from pylvs.dataplane.xdp.maps import (
    ACTION,
    FLOW_F_KERNEL,
    FLOW_F_OPENING,
    FLOW_F_REPLY,
    IMPORT_FIELDS,
    KEY,
    NEW_ACKED,
    NEW_FLOW,
    Method,
    pad16,
    unpack_counters,
    unpack_key,
    unpack_value,
)

log = logging.getLogger("pylvs.dataplane.xdp")

_TCP_ACK = 0x10
IMPORT_BUDGET = 16384  # ring records read per call at most
REPAIR_LIMIT = 8192  # kernel-made flows a sync enters from the flow map at most
_BATCH = 4096  # flow map entries per batch lookup
HASH_CHECK = 64  # one record's client hash in this many is checked in Python
# what a sync reads of each struct lvs_action: flags, last_seen_ns, packets, bytes
SYNC_FIELDS = struct.Struct("=2xH60xQQQ")

# an IPv4 struct lvs_flow_key in one pack: family, proto, pad, ports (be), addresses padded
_KEY4 = struct.Struct("!BBxxHH4s12x4s12x")
# struct lvs_action from first_len on (the part that differs between a server's flows)
_TAIL_AT = 56
_TAIL = struct.Struct("=IIQQQ")
# forward.FLOW_* kinds -> the program's methods
_METHOD = {0: Method.DR, 1: Method.NAT_IN, 2: Method.NAT_OUT, 3: Method.TUN}

Row = tuple[Any, int, int, int, float]


@dataclass(slots=True)
class _Flow:
    conn: Any
    direction: int
    packets: int = 0  # as read at the last sync
    nbytes: int = 0
    seen: float = 0.0
    # made at the connection's first packet (by the program for an mh service, or by the core
    # at the SYN): kept while the TCP handshake goes on (``remove``)
    opening: bool = False
    at_syn: bool = False  # installed by the core at the SYN (``open``): its ACK is counted


class XdpFlowSink(OpenGuard):
    """Installs, reads back and removes flows in the program's LRU map. Which SYNs get their
    flow (``open``) is ``OpenGuard``'s policy; an ACK is counted when the core imports its
    record, up to IMPORT_INTERVAL after the program saw it."""

    guard_name = "xdp"

    def __init__(self, program: XdpProgram, limit: int = 1 << 20,
                 director: Director | None = None) -> None:
        super().__init__()
        self.program = program
        self.limit = limit
        self.ident = 0  # the forwarder's outer IPIP ID sequence (the program picks its own)
        self._flows: dict[bytes, _Flow] = {}
        self.refused_full = 0
        # flows the program scheduled itself (Maglev tables): entered in the director's table
        # by ``import_new`` (None: nobody imports them)
        self.director = director
        self.imported = 0
        self.import_refused = 0  # gone from the map, no such server any more, or table full
        self.repaired = 0  # entered by a sync from the flow map (their record was lost)
        self.orphans = 0  # reply flows removed whose connection's way in was gone
        self.drained = True  # the last read emptied the ring
        self.trust_hash = True  # the records' client hashes go to the mh scheduler
        self.hash_mismatch = 0
        self._hash_seq = 0
        self._walked_ns = 0  # when the last sync's walk of the map began
        # flows installed at a SYN, written to the map in one batch by ``flush``
        self._pending_keys: list[bytes] = []
        self._pending_values: list[bytes] = []
        self.open_kinds: frozenset[int] = frozenset()  # the kinds ``open`` takes
        self._heads: dict[tuple[int, bytes, int, int, bytes, bytes | None, int], bytes] = {}

    @property
    def count(self) -> int:
        return len(self._flows)

    @property
    def forwarded(self) -> int:
        """Frames the program sent on (XDP_TX and redirects), all flows together."""
        st = self.program.stats()
        return st.get("tx", 0) + st.get("redirect", 0)

    def __len__(self) -> int:
        return len(self._flows)

    @staticmethod
    def key(proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int) -> bytes:
        family = 4 if len(saddr) == 4 else 6
        return KEY.pack(family, proto, 0, sport.to_bytes(2, "big"), dport.to_bytes(2, "big"),
                        pad16(saddr), pad16(daddr))

    def install(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
                new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
                direction: int, tun_src: bytes | None = None, mtu: int = 0) -> bool:
        if self._pending_keys:
            self.flush()  # an older pending write must not land over this one
        key = self.key(proto, saddr, sport, daddr, dport)
        prev = self._flows.get(key)
        if prev is not None and prev.at_syn:
            # a connection opened at its SYN whose ACK came up (it beat its flow to the map,
            # or the program was not in its path): its handshake completed all the same, so
            # a busy core is not taken for a SYN flood
            self._win_acked += 1
        elif prev is None and len(self._flows) >= self.limit:
            self.refused_full += 1
            return False
        method = _METHOD[kind]
        tun_family = (4 if len(new_ip) == 4 else 6) if method is Method.TUN else 0
        value = ACTION.pack(int(method), tun_family, 0, out_ifindex, bytes(macs[:6]), bytes(macs[6:12]),
                            pad16(new_ip if method is not Method.DR else b""),
                            pad16(tun_src or b""), new_port.to_bytes(2, "big"), mtu, 0, 0, 0, 0, 0)
        try:
            self.program.flow_put(key, value)
        except OSError:
            self.refused_full += 1
            return False
        self._flows[key] = _Flow(conn, direction)
        return True

    def open(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
             new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
             first_len: int, tun_src: bytes | None = None, mtu: int = 0) -> bool:
        """Install a TCP connection's way in at its SYN, which the core has just scheduled and
        forwarded (``kind`` DR, NAT's way in or TUN, with the tunnel's outer source and the
        egress MTU, if ``open_kinds`` has it), so that the handshake's ACK and everything after
        it stay in the kernel: without this the ACK went up too (a second pass through the core
        for every connection) and the flow was installed only then. The flow counts the SYN
        (one packet of ``first_len``) and is marked FLOW_F_OPENING: the program reports its
        next packet (``NEW_ACKED``), which moves the entry on from SYN_RECV as that ACK would
        have. Written by the next ``flush`` (one system call for a ring drain's SYNs).

        A flood's SYNs would fill the map with flows of connections that never open and push
        established flows out of it (LRU), so a SYN gets a flow only while the sink holds
        fewer than half its limit; after that its ACK goes up and installs it as before.
        And a flood's SYNs cost the core the flow's making (≈ 3 µs each, half a SYN's
        decision) for nothing, so while few opened flows see their ACK (``_judge``) only a
        sample of SYNs gets one.

        This runs for every SYN the core schedules, a flood's too, so it is written for speed:
        the IPv4 key in one pack, the value's fixed part made once per server and next hop."""
        flows = self._flows
        if kind not in self.open_kinds or not self._admit(len(flows), self.limit):
            return False
        if len(saddr) == 4:
            key = _KEY4.pack(4, proto, sport, dport, saddr, daddr)
        else:
            key = self.key(proto, saddr, sport, daddr, dport)
        if key in flows:
            return False
        where = (kind, new_ip, new_port, out_ifindex, macs, tun_src, mtu)
        head = self._heads.get(where)
        if head is None:
            if len(self._heads) >= 4096:
                self._heads.clear()
            method = _METHOD[kind]
            tun_family = (4 if len(new_ip) == 4 else 6) if method is Method.TUN else 0
            head = self._heads[where] = ACTION.pack(
                int(method), tun_family, FLOW_F_OPENING, out_ifindex, bytes(macs[:6]),
                bytes(macs[6:12]), pad16(new_ip if method is not Method.DR else b""),
                pad16(tun_src or b""), new_port.to_bytes(2, "big"), mtu, 0, 0, 0, 0,
                0)[:_TAIL_AT]
        self._pending_keys.append(key)
        self._pending_values.append(head + _TAIL.pack(first_len, 0, 0, 1, first_len))
        flows[key] = _Flow(conn, DIR_INPUT, 1, first_len, 0.0, True, True)
        self._win_opened += 1
        return True

    def flush(self) -> int:
        """Write the flows ``open`` installed since the last call (one batch update); a flow
        the kernel did not take is forgotten (its ACK then goes up, as without it). Run by the
        plane before it transmits what a ring drain decided, so that a SYN's flow is in the map
        before its ACK can come back."""
        self._tick()
        keys = self._pending_keys
        if not keys:
            return 0
        values = self._pending_values
        self._pending_keys, self._pending_values = [], []
        done = self.program.flows_put(b"".join(keys), b"".join(values), len(keys))
        if done < len(keys):
            for key in keys[done:]:
                self._flows.pop(key, None)
            self.refused_full += len(keys) - done
        self.opened += done
        return done

    def _row(self, key: bytes, flow: _Flow) -> Row | None:
        """What the flow forwarded since the last read, or None if nothing (or it is gone)."""
        value = self.program.flow_get(key, ACTION.size)
        if value is None:
            return None
        c = unpack_counters(value)
        dp, db = c.packets - flow.packets, c.bytes - flow.nbytes
        flow.packets, flow.nbytes = c.packets, c.bytes
        if dp <= 0:
            return None
        flow.seen = c.last_seen_ns / 1e9
        return (flow.conn, flow.direction, dp, db, flow.seen)

    def remove(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int) -> Row | None:
        """Take a flow out (its connection left the state flows are offered in). Kept: a flow
        the program made for a TCP connection still opening (SYN_RECV), which a packet of the
        handshake going through the core (the server's SYN-ACK of a NAT connection, a SYN
        retransmitted) would otherwise take out, sending the rest of the handshake up too: the
        program reports the handshake's ACK itself (``NEW_ACKED``)."""
        key = self.key(proto, saddr, sport, daddr, dport)
        flow = self._flows.get(key)
        if flow is None:
            return None
        if self._pending_keys:
            self.flush()  # a pending flow must not be written after its removal
        conn = flow.conn
        if flow.opening and proto == 6 and conn.state == TCP_S_SYN_RECV and conn.bucket is not None:
            return None
        del self._flows[key]
        row = self._row(key, flow)
        self.program.flow_delete(key)
        return row if row is not None else (flow.conn, flow.direction, 0, 0, flow.seen)

    def clear(self) -> list[Row]:
        self.flush()
        rows = []
        for key, flow in self._flows.items():
            row = self._row(key, flow)
            if row is not None:
                rows.append(row)
            self.program.flow_delete(key)
        self._flows.clear()
        return rows

    # -- flows the program scheduled itself --------------------------------------------------

    def import_new(self, budget: int = IMPORT_BUDGET) -> int:
        """Enter the flows the program scheduled since the last call in the director's
        connection table, from the records of its ``new_flows`` ring, so ``-Lnc``, the
        connection counts, ``--stats`` and ``--rate`` show them as if the core had scheduled
        them; a TCP flow whose handshake ACK has passed moves on from SYN_RECV as that ACK
        would have moved it. Run before the core handles received frames and at each sync, so
        a connection's FIN, which the program sends up, finds its entry established. At most
        ``budget`` records per call: the rest wait in the ring for the next. Returns how many
        connections were entered."""
        d = self.director
        if d is None:
            return 0
        recs = self.program.read_new_flows(NEW_FLOW.size, budget)
        self.drained = len(recs) < budget
        with collector_paused():
            n = self._enter_records(d, recs)
        return n

    def _enter_records(self, d: Director, recs: list[bytes]) -> int:
        n = 0
        flows = self._flows
        dests: dict[tuple[int, bytes, int, bytes, int], Any] = {}  # this call's server lookups
        for rec in recs:
            key, addr, rport, kind, reply, first_len, hash_in, h, ts = NEW_FLOW.unpack(rec)
            if kind == NEW_ACKED:
                flow = flows.get(key)
                if flow is not None and flow.conn.bucket is not None:
                    d.tcp_packet(flow.conn, DIR_INPUT, _TCP_ACK)
                    if flow.at_syn:
                        flow.at_syn = False
                        self._win_acked += 1
                continue
            if self.trust_hash:
                self._learn_hash(hash_in, h)
            n += self._import(d, key, addr, rport, first_len, 1, first_len, ts, dests,
                              bool(reply))
        return n

    def _learn_hash(self, hash_in: int, h: int) -> None:
        """The program's hash of the client, given to the ``mh`` scheduler so that entering
        the connection does not hash it again (≈ 4 µs of the ≈ 11). One in ``HASH_CHECK`` is
        checked against the Python ``hsiphash``: a mismatch (a program that hashes otherwise)
        stops the use of its hashes for good, with one warning, and is counted."""
        self._hash_seq += 1
        if not remember_client_hash(hash_in, h, verify=not self._hash_seq % HASH_CHECK):
            self.trust_hash = False
            self.hash_mismatch += 1
            log.warning("xdp: the program's mh hash of %#x is %#x, not the scheduler's: its "
                        "hashes are not used any more", hash_in, h)

    def import_for(self, seconds: float, chunk: int = 2048) -> int:
        """``import_new`` a chunk at a time until the ring is empty or ``seconds`` have
        passed: the share of the core's loop a backlog may take. Returns how many entered."""
        end = time.monotonic() + seconds
        n = 0
        while True:
            n += self.import_new(chunk)
            if self.drained or time.monotonic() >= end:
                return n

    def _import(self, d: Director, key: bytes, addr: bytes, rport: bytes, first_len: int,
                packets: int, nbytes: int, last: int,
                dests: dict[tuple[int, bytes, int, bytes, int], Any], reply: bool = False) -> int:
        """Enter one kernel-made flow (``packets``/``nbytes`` it has forwarded so far, the
        last at ``last`` ns) bound to the server at ``addr``/``rport``; ``reply``: the program
        made the NAT connection's reply flow with it, which becomes this sink's too."""
        if key in self._flows:
            return 0
        dport = int.from_bytes(rport, "big")
        proto, caddr, cport, vaddr, vport = unpack_key(key)
        daddr = addr[: len(vaddr)]
        where = (proto, vaddr, vport, daddr, dport)
        found = dests.get(where)
        if found is None:
            found = dests[where] = self._dest(d, proto, vaddr, vport, daddr, dport)
        old = d.lookup(proto, caddr, cport, vaddr, vport)
        # an entry the core already has is kept or replaced by ``schedule``'s own rules
        # (conn_reuse_mode: a SYN on a TIME_WAIT entry is a new connection)
        conn = self._enter(d, proto, caddr, cport, vaddr, vport, found[0], found[1], old)
        if conn is None or conn.daddr != daddr or conn.dport != dport:
            # no such server any more, the table is full, or the core has the connection on
            # another server (it saw the client first): the core's word stands, and the next
            # packet goes up to it
            self.import_refused += 1
            self.program.flow_delete(key)
            if reply:
                self.program.flow_delete(self.key(proto, daddr, dport, caddr, cport))
            return 0
        if conn is not old:
            d.account(conn, DIR_INPUT, 1, first_len)  # the packet that made the flow
        self._flows[key] = _Flow(conn, DIR_INPUT, packets, nbytes, last / 1e9, True)
        if reply:  # its packets (the SYN-ACK on) are read by the next sync
            self._flows[self.key(proto, daddr, dport, caddr, cport)] = _Flow(
                conn, DIR_OUTPUT, 0, 0, last / 1e9, True)
        if packets > 1:  # what the flow forwarded since the first packet (TCP: the ACKs)
            d.account(conn, DIR_INPUT, packets - 1, nbytes - first_len)
            if proto == 6:
                d.tcp_packet(conn, DIR_INPUT, _TCP_ACK)
            else:
                d.udp_packet(conn, DIR_INPUT)
        self.imported += 1
        return 1

    @staticmethod
    def _dest(d: Director, proto: int, vaddr: bytes, vport: int, daddr: bytes,
              dport: int) -> tuple[Any, Any]:
        """(service, server) a kernel-made flow names, either None if the table has none."""
        svc = d.find_service(proto, vaddr, vport)
        dest = svc.find_dest(ipaddress.ip_address(daddr), dport) if svc is not None else None
        return svc, dest

    @staticmethod
    def _enter(d: Director, proto: int, caddr: bytes, cport: int, vaddr: bytes, vport: int,
               svc: Any, dest: Any, old: Any) -> Any:
        """The director's entry for a flow the program scheduled to ``dest`` of ``svc``: made
        by ``schedule`` itself when the scheduler still picks that server (every count as for
        a connection the core scheduled), else bound to that server as a sync backup binds an
        entry it is told about (the table changed between the program's pick and now: the
        connection is where the program sent it; or ``drop_packet`` started dropping before the
        plane took the tables back: the SYN it would drop has already gone to the server, and
        dropping the entry now would break the connection rather than make the client resend)."""
        if svc is None or dest is None:
            return None
        sched = svc.scheduler
        if (sched is not None and not d.defense.drop_rate
                and sched.schedule(caddr, cport, vaddr, vport, d.clock()) is dest):
            return d.schedule(proto, caddr, cport, vaddr, vport)
        state = TCP_S_SYN_RECV if proto == 6 else UDP_S_NORMAL
        conn = apply(d, SyncConn(proto, caddr, cport, vaddr, vport, dest.addr_packed, dest.port,
                                 int(dest.fwd), state))
        if conn is not None and conn is not old:  # ip_vs_conn_stats, as schedule counts it
            dest.stats.conns += 1
            svc.stats.conns += 1
            d.table.total.conns += 1
        return conn

    def sync(self) -> list[Row]:
        """What every flow forwarded since the last call (rows for the forwarder's
        ``sync_flows``), read with batch lookups over the whole map; kernel-made flows this sink
        does not know (their record lost to a full ring, or still in it) are entered on the way,
        ``REPAIR_LIMIT`` at most per call; flows whose entry has left the table are dropped.
        Entries with no packet since the previous walk began (their ``last_seen_ns``, on the
        clock ``time.monotonic_ns`` reads) are passed over without a dictionary lookup: a flood's
        half-open connections fill the map with flows that never move again. Every kernel-made
        flow is looked at by at least one walk after it was made, and a walk that had more
        unknown flows than it could enter makes the next one look at all."""
        self.flush()
        self.import_new()
        rows: list[Row] = []
        flows = self._flows
        unknown: list[tuple[bytes, bytes]] = []
        replies: list[tuple[bytes, bytes]] = []  # kernel-made reply flows this sink lacks
        ksz, vsz = KEY.size, ACTION.size
        since, self._walked_ns = self._walked_ns, time.monotonic_ns()
        token: bytes | None = None
        while True:
            kb, vb, n, token = self.program.flows_batch(token, ksz, vsz, _BATCH)
            for i, (flags, last, packets, nbytes) in enumerate(SYNC_FIELDS.iter_unpack(vb)):
                if last < since:
                    continue
                key = kb[i * ksz:(i + 1) * ksz]
                flow = flows.get(key)
                if flow is None:
                    # a reply flow comes with its connection's way in
                    if flags & FLOW_F_REPLY:
                        if len(replies) < REPAIR_LIMIT:
                            replies.append((key, vb[i * vsz:(i + 1) * vsz]))
                    elif flags & FLOW_F_KERNEL and len(unknown) < REPAIR_LIMIT:
                        unknown.append((key, vb[i * vsz:(i + 1) * vsz]))
                    continue
                dp = packets - flow.packets
                if dp > 0:
                    db = nbytes - flow.nbytes
                    flow.packets, flow.nbytes, flow.seen = packets, nbytes, last / 1e9
                    rows.append((flow.conn, flow.direction, dp, db, flow.seen))
            if token is None or not n:
                break
        if len(unknown) >= REPAIR_LIMIT:
            self._walked_ns = 0  # more than this walk could enter: the next looks at all
        self._repair(unknown)
        self._drop_orphans(replies)
        dead = [key for key, flow in flows.items() if getattr(flow.conn, "bucket", None) is None]
        for key in dead:
            del flows[key]
            self.program.flow_delete(key)
        return rows

    def _drop_orphans(self, replies: list[tuple[bytes, bytes]]) -> None:
        """Remove the program's reply flows whose way in is neither this sink's (entered or
        repaired) nor in the map any more (refused by the core after the program made them, or
        evicted before the core read them): they would answer for a connection the core does
        not have. A reply flow whose way in is still in the map waits for its repair."""
        for key, value in replies:
            proto, _rs, _rport, daddr, dport = unpack_key(key)
            way_in = unpack_value(value)  # its address and port: the VIP's
            n = len(daddr)
            fkey = self.key(proto, daddr, dport, way_in.addr[:n], way_in.port)
            if fkey not in self._flows and self.program.flow_get(fkey, ACTION.size) is None:
                self.program.flow_delete(key)
                self.orphans += 1

    def _repair(self, unknown: list[tuple[bytes, bytes]]) -> None:
        """Enter kernel-made flows the ring's records did not bring (the ring was full: the
        program counted ``mh_queue_full``), from their flow map entries: bound to the server
        the program chose, with what they forwarded so far."""
        d = self.director
        if d is None or not unknown:
            return
        dests: dict[tuple[int, bytes, int, bytes, int], Any] = {}
        with collector_paused():
            self._repair_all(d, unknown, dests)

    def _repair_all(self, d: Director, unknown: list[tuple[bytes, bytes]],
                    dests: dict[tuple[int, bytes, int, bytes, int], Any]) -> None:
        for key, value in unknown:
            _flags, addr, rport, first_len, last, packets, nbytes = IMPORT_FIELDS.unpack(value)
            reply = False
            if value[0] == Method.NAT_IN:  # did the program make its reply flow too?
                proto, caddr, cport, _vaddr, _vport = unpack_key(key)
                n = len(caddr)
                back = self.program.flow_get(
                    self.key(proto, addr[:n], int.from_bytes(rport, "big"), caddr, cport),
                    ACTION.size)
                reply = back is not None and bool(unpack_value(back).flags & FLOW_F_REPLY)
            self.repaired += self._import(d, key, addr, rport, first_len, packets, nbytes,
                                          last, dests, reply)


class SplitFlowSink:
    """Flows of some kinds to the XDP program, the others to a second table (the C hot path's,
    or none: then the Python path forwards them).

    Why: in generic (skb) mode the program may see packets whose L4 checksum the sender left
    to offload (CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not a checksum), which
    an XDP program cannot tell from complete ones. A MAC rewrite (DR) is right either way; an
    address rewrite (NAT) or an encapsulation (TUN, whose inner checksum a decapsulator then
    checks) is not, so those stay on the path that reads the ring's checksum status.

    IPv6 flows (16-byte addresses) go to the program only: the C table's keys are IPv4, so an
    IPv6 flow of a kind the program does not take here is refused (``install`` returns False)
    and its packets stay on the Python path.
    """

    def __init__(self, xdp: XdpFlowSink, other: Any, xdp_kinds: frozenset[int]) -> None:
        self.xdp = xdp
        self.other = other
        self.xdp_kinds = xdp_kinds

    @property
    def ident(self) -> int:
        return int(self.other.ident) if self.other is not None else self.xdp.ident

    @ident.setter
    def ident(self, value: int) -> None:
        if self.other is not None:
            self.other.ident = value
        self.xdp.ident = value

    @property
    def count(self) -> int:
        return self.xdp.count + (self.other.count if self.other is not None else 0)

    @property
    def forwarded(self) -> int:
        return self.xdp.forwarded + (int(self.other.forwarded) if self.other is not None else 0)

    def install(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
                new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
                direction: int, tun_src: bytes | None = None, mtu: int = 0) -> bool:
        if kind in self.xdp_kinds:
            target: Any = self.xdp
        else:
            target = self.other if len(saddr) == 4 else None  # never IPv6 to the C table
        if target is None:
            return False
        return bool(target.install(proto, saddr, sport, daddr, dport, kind, new_ip, new_port,
                                   out_ifindex, macs, conn, direction, tun_src, mtu))

    def remove(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int) -> Row | None:
        row = self.xdp.remove(proto, saddr, sport, daddr, dport)
        if row is None and self.other is not None and len(saddr) == 4:
            other_row: Row | None = self.other.remove(proto, saddr, sport, daddr, dport)
            return other_row
        return row

    def clear(self) -> list[Row]:
        rows = self.xdp.clear()
        if self.other is not None:
            rows.extend(self.other.clear())
        return rows

    def sync(self) -> list[Row]:
        rows = self.xdp.sync()
        if self.other is not None:
            rows.extend(self.other.sync())
        return rows


class SplitOpener:
    """The forwarder's ``opens`` in the XDP plane: a SYN's flow goes where the connection's
    flows go (``SplitFlowSink``'s rule): the kinds the program takes to the program
    (``XdpFlowSink.open``), the others (NAT and TUN in generic mode) to the C table
    (``opening.CFlowOpener``, IPv4 only), so that those handshakes' ACKs stay out of the Python
    core too."""

    def __init__(self, xdp: XdpFlowSink, other: CFlowOpener | None,
                 xdp_kinds: frozenset[int]) -> None:
        self.xdp = xdp
        self.other = other
        self.xdp_kinds = xdp_kinds

    def open(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
             new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
             first_len: int, tun_src: bytes | None = None, mtu: int = 0) -> bool:
        target: Any = self.xdp if kind in self.xdp_kinds else self.other
        if target is None:
            return False
        return bool(target.open(proto, saddr, sport, daddr, dport, kind, new_ip, new_port,
                                out_ifindex, macs, conn, first_len, tun_src, mtu))

    def before_transmit(self) -> None:
        """A drain's SYN flows written to the program; the C table's flood guard judged."""
        self.xdp.flush()
        if self.other is not None:
            self.other.tick()
