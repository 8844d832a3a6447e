"""The IPVS connection table: entries, the TCP/UDP state machines, timeouts and expiry.

What this is for: remembering, per client connection, which real server it was given, so every
later packet (or proxied byte) of that connection goes to the same place; and counting those
connections on the real servers exactly as the kernel does (``ip_vs_conn.c``,
``ip_vs_proto_tcp.c``, ``ip_vs_proto_udp.c`` of Linux 6.1): a connection is *active* while its
TCP state is ESTABLISHED or part of the handshake (SYN_SENT, SYN_RECV, SYNACK) and *inactive*
otherwise (closing states, UDP), a persistence template counts in
``persistconns``, and the OVERLOAD flag of a real server follows its upper/lower thresholds as
connections are bound and unbound.

What this is not for: choosing real servers (schedulers and persistence live in
``pylvs.core.director``) or touching packets and sockets. Everything here is driven by calls with
the caller's clock value; nothing runs on its own.

Layout, chosen for a million entries in a few hundred MB of Python:
- An entry is a slotted ``Connection``. Client address, client port and protocol are packed into
  one int (``ckey``) that is also the hash key, so they cost no objects of their own; virtual and
  real-server addresses and ports are shared with the service and real server objects.
- As in the kernel, entries are hashed on (protocol, client address, client port) only, so the
  same hash serves client->VIP lookups and real-server->client (NAT reply) lookups; the rare
  entries that share a key are chained through ``Connection.next``.
- Expiry is a timer wheel of one-second buckets with lazy re-filing: refreshing a timer (every
  packet) is one float store; an entry is only moved when its bucket comes due and its deadline
  has moved on, or when a state change shortens its timeout. Each entry is touched O(1) times
  per timeout period.

``bench/bench_conntrack.py`` measures the result: about 280 traced bytes per entry with a million
entries (entry, key, deadline, hash slot and wheel slot together).
"""

from __future__ import annotations

import errno
import ipaddress
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from pylvs.core.api import IPVSError
from pylvs.core.model import AF_INET, AF_INET6, ConnEntry, DestFlags, RealServer, Timeouts

# ---- connection flags -------------------------------------------------------------------------
# The meanings of IP_VS_CONN_F_* (include/uapi/linux/ip_vs.h), packed into one byte so that every
# combination is one of Python's shared small ints: an entry's flags then cost no memory of their
# own and changing them allocates nothing. ``kernel_conn_flags`` gives the kernel's bit values
# (what ``ConnEntry.flags`` and netlink carry).
CONN_F_FWD_MASK = 0x07  # the ForwardingMethod, same values as the kernel's
CONN_F_NOOUTPUT = 0x08
CONN_F_INACTIVE = 0x10
CONN_F_HASHED = 0x20
CONN_F_TEMPLATE = 0x40
CONN_F_ONE_PACKET = 0x80

_KERNEL_BITS = (
    (CONN_F_NOOUTPUT, 0x0080),
    (CONN_F_INACTIVE, 0x0100),
    (CONN_F_HASHED, 0x0040),
    (CONN_F_TEMPLATE, 0x1000),
    (CONN_F_ONE_PACKET, 0x2000),
)


def kernel_conn_flags(flags: int) -> int:
    """The IP_VS_CONN_F_* value of an entry's flags."""
    out = flags & CONN_F_FWD_MASK
    for ours, theirs in _KERNEL_BITS:
        if flags & ours:
            out |= theirs
    return out

# ---- directions, as ip_vs_set_state takes them ----------------------------------------------
DIR_INPUT = 0
DIR_OUTPUT = 1
DIR_INPUT_ONLY = 2

# ---- TCP header flag bits (as in the header's flags byte) ------------------------------------
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

# ---- IP_VS_TCP_S_* ---------------------------------------------------------------------------
TCP_S_NONE = 0
TCP_S_ESTABLISHED = 1
TCP_S_SYN_SENT = 2
TCP_S_SYN_RECV = 3
TCP_S_FIN_WAIT = 4
TCP_S_TIME_WAIT = 5
TCP_S_CLOSE = 6
TCP_S_CLOSE_WAIT = 7
TCP_S_LAST_ACK = 8
TCP_S_LISTEN = 9
TCP_S_SYNACK = 10

TCP_STATE_NAMES = (
    "NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE",
    "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK",
)
# tcp_state_active_table[]: the states counted in ActiveConn (the handshake counts: a server
# busy accepting is busy); every other state is InActConn.
TCP_ACTIVE_STATES = frozenset({1, 2, 3, 10})  # ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK
TCP_STATE_ACTIVE = tuple(s in TCP_ACTIVE_STATES for s in range(11))
# Seconds, as tcp_timeouts[] (ESTABLISHED and FIN_WAIT follow ``ipvsadm --set``).
TCP_TIMEOUTS = (2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120)
# Under ``secure_tcp``: Linux 2.4's vs_timeout_table_dos (ESTABLISHED 8 min, SYN_SENT 60 s,
# SYN_RECV 10 s, FIN_WAIT/TIME_WAIT/CLOSE_WAIT 60 s, SYNACK 100 s); later kernels switch only
# the state table. ESTABLISHED and FIN_WAIT never exceed the ``--set`` values.
TCP_TIMEOUTS_SECURE = (2, 480, 60, 10, 60, 60, 10, 60, 30, 120, 100)

UDP_S_NORMAL = 0
UDP_STATE_NAME = "UDP"

# Persistence templates: IP_VS_CTPL_S_*.
CTPL_S_NONE = 0
CTPL_S_ASSURED = 1
CTPL_STATE_NAMES = ("NONE", "ASSURED")

# The timeout a fresh entry gets before its first state transition (ip_vs_conn_new: 3*HZ).
INITIAL_TIMEOUT = 3

_sNO, _sES, _sSS, _sSR, _sFW, _sTW, _sCL, _sCW, _sLA, _sLI, _sSA = range(11)

# tcp_states[]: rows are [direction offset + flag index], columns the current state.
# Row order per direction: syn, fin, ack, rst.
_TCP_STATES: tuple[tuple[int, ...], ...] = (
    # INPUT
    (_sSR, _sES, _sES, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR),
    (_sCL, _sCW, _sSS, _sTW, _sTW, _sTW, _sCL, _sCW, _sLA, _sLI, _sTW),
    (_sES, _sES, _sSS, _sES, _sFW, _sTW, _sCL, _sCW, _sCL, _sLI, _sES),
    (_sCL, _sCL, _sCL, _sSR, _sCL, _sCL, _sCL, _sCL, _sLA, _sLI, _sSR),
    # OUTPUT
    (_sSS, _sES, _sSS, _sSR, _sSS, _sSS, _sSS, _sSS, _sSS, _sLI, _sSR),
    (_sTW, _sFW, _sSS, _sTW, _sFW, _sTW, _sCL, _sTW, _sLA, _sLI, _sTW),
    (_sES, _sES, _sSS, _sES, _sFW, _sTW, _sCL, _sCW, _sLA, _sES, _sES),
    (_sCL, _sCL, _sSS, _sCL, _sCL, _sTW, _sCL, _sCL, _sCL, _sCL, _sCL),
    # INPUT-ONLY (the director sees only client->server packets: DR, TUN)
    (_sSR, _sES, _sES, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR),
    (_sCL, _sFW, _sSS, _sTW, _sFW, _sTW, _sCL, _sCW, _sLA, _sLI, _sTW),
    (_sES, _sES, _sSS, _sES, _sFW, _sTW, _sCL, _sCW, _sCL, _sLI, _sES),
    (_sCL, _sCL, _sCL, _sSR, _sCL, _sCL, _sCL, _sCL, _sLA, _sLI, _sCL),
)
# tcp_states_dos[]: the table ``secure_tcp`` switches to under SYN-flood defence. A client's ACK
# no longer completes a handshake the real server has not answered, and a DR/TUN entry opened by a
# SYN waits in SYNACK.
_TCP_STATES_SECURE: tuple[tuple[int, ...], ...] = (
    # INPUT
    (_sSR, _sES, _sES, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR, _sSR, _sSA),
    (_sCL, _sCW, _sSS, _sTW, _sTW, _sTW, _sCL, _sCW, _sLA, _sLI, _sSA),
    (_sES, _sES, _sSS, _sSR, _sFW, _sTW, _sCL, _sCW, _sCL, _sLI, _sSA),
    (_sCL, _sCL, _sCL, _sSR, _sCL, _sCL, _sCL, _sCL, _sLA, _sLI, _sCL),
    # OUTPUT
    (_sSS, _sES, _sSS, _sSA, _sSS, _sSS, _sSS, _sSS, _sSS, _sLI, _sSA),
    (_sTW, _sFW, _sSS, _sTW, _sFW, _sTW, _sCL, _sTW, _sLA, _sLI, _sTW),
    (_sES, _sES, _sSS, _sES, _sFW, _sTW, _sCL, _sCW, _sLA, _sES, _sES),
    (_sCL, _sCL, _sSS, _sCL, _sCL, _sTW, _sCL, _sCL, _sCL, _sCL, _sCL),
    # INPUT-ONLY
    (_sSA, _sES, _sES, _sSR, _sSA, _sSA, _sSA, _sSA, _sSA, _sSA, _sSA),
    (_sCL, _sFW, _sSS, _sTW, _sFW, _sTW, _sCL, _sCW, _sLA, _sLI, _sTW),
    (_sES, _sES, _sSS, _sES, _sFW, _sTW, _sCL, _sCW, _sCL, _sLI, _sES),
    (_sCL, _sCL, _sCL, _sSR, _sCL, _sCL, _sCL, _sCL, _sLA, _sLI, _sCL),
)
_DIR_OFFSET = (0, 4, 8)


def _flag_row(tcp_flags: int) -> int:
    """tcp_state_idx(): RST beats SYN beats FIN beats ACK; -1 for none of them."""
    if tcp_flags & TCP_RST:
        return 3
    if tcp_flags & TCP_SYN:
        return 0
    if tcp_flags & TCP_FIN:
        return 1
    if tcp_flags & TCP_ACK:
        return 2
    return -1


# (direction, tcp flags, state) -> next state, flattened: index = (direction * 64 + flags) * 16
# + state, for the six low flag bits (FIN SYN RST PSH ACK URG). Flag index -1
# (a segment with none of SYN/FIN/ACK/RST) sends the kernel to CLOSE; those slots hold CLOSE.
def _flatten(rows: tuple[tuple[int, ...], ...]) -> list[int]:
    out = [_sCL] * (3 * 64 * 16)
    for direction in (0, 1, 2):
        for flags in range(64):
            row = _flag_row(flags)
            for st in range(11):
                nxt = _sCL if row < 0 else rows[_DIR_OFFSET[direction] + row][st]
                out[(direction * 64 + flags) * 16 + st] = nxt
    return out


TCP_NEXT_STATE = _flatten(_TCP_STATES)
TCP_NEXT_STATE_SECURE = _flatten(_TCP_STATES_SECURE)


def tcp_next_state(state: int, direction: int, tcp_flags: int, secure: bool = False) -> int:
    """The state after a segment with ``tcp_flags`` seen in ``direction`` (set_tcp_state)."""
    table = TCP_NEXT_STATE_SECURE if secure else TCP_NEXT_STATE
    return table[(direction * 64 + (tcp_flags & 0x3F)) * 16 + state]


def tcp_timeout_table(timeouts: Timeouts, secure: bool = False) -> tuple[int, ...]:
    """Per-state TCP timeouts with the ``--set tcp tcpfin`` values applied (``secure``: the
    SYN-flood defence's shorter ones)."""
    if not secure:
        t = list(TCP_TIMEOUTS)
        t[TCP_S_ESTABLISHED] = timeouts.tcp
        t[TCP_S_FIN_WAIT] = timeouts.tcp_fin
        return tuple(t)
    t = list(TCP_TIMEOUTS_SECURE)
    t[TCP_S_ESTABLISHED] = min(t[TCP_S_ESTABLISHED], timeouts.tcp)
    t[TCP_S_FIN_WAIT] = min(t[TCP_S_FIN_WAIT], timeouts.tcp_fin)
    return tuple(t)


class _Bucket:
    """One second of the timer wheel: the entries whose deadline falls within it."""

    __slots__ = ("at", "conns")

    def __init__(self, at: int) -> None:
        self.at = at
        self.conns: list[Connection] = []


class Connection:
    """One IPVS connection entry or persistence template (``struct ip_vs_conn``).

    ``state`` is the kernel's number (``TCP_S_*``, ``UDP_S_NORMAL`` or ``CTPL_S_*`` for a
    template); ``state_name`` the word ``ipvsadm -Lc`` prints. Addresses are packed bytes and
    ports host-order ints, as data planes read them off packets.
    """

    __slots__ = (
        "bucket", "ckey", "control", "daddr", "deadline", "dest", "dport", "flags", "in_pkts",
        "n_control", "next", "state", "sync_endtime", "timeout", "vaddr", "vport",
    )

    def __init__(
        self, ckey: int, vaddr: bytes, vport: int, dest: RealServer, dport: int, flags: int,
        state: int = 0, timeout: int = INITIAL_TIMEOUT,
    ) -> None:
        self.ckey = ckey
        self.vaddr = vaddr
        self.vport = vport
        self.dest = dest
        self.daddr = dest.addr_packed
        self.dport = dport
        self.flags = flags
        self.state = state
        self.timeout = timeout
        self.deadline = 0.0
        self.bucket: _Bucket | None = None
        self.control: Connection | None = None
        self.n_control = 0
        self.next: Connection | None = None
        # For the sync master's re-sends (``pylvs.core.sync``): packets in (client to server)
        # and the kernel's ``sync_endtime`` (ms; the low 2 bits count the retries).
        self.in_pkts = 0
        self.sync_endtime = 0

    # Client address, port and protocol live in ``ckey`` (see ``make_ckey``).
    @property
    def protocol(self) -> int:
        return self.ckey & 0xFF

    @property
    def cport(self) -> int:
        return (self.ckey >> 8) & 0xFFFF

    @property
    def caddr(self) -> bytes:
        return ((self.ckey >> 24) & _ADDR_MASK).to_bytes(len(self.vaddr), "big")

    @property
    def is_template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)

    @property
    def active(self) -> bool:
        """Counted in the real server's ActiveConn (not a template, not INACTIVE)."""
        return not self.flags & (CONN_F_INACTIVE | CONN_F_TEMPLATE)

    @property
    def alive(self) -> bool:
        """Still in the table (False once expired, and for one-packet entries never stored)."""
        return self.bucket is not None

    @property
    def state_name(self) -> str:
        if self.flags & CONN_F_TEMPLATE:
            return CTPL_STATE_NAMES[self.state] if self.state < 2 else "ERR!"
        p = self.ckey & 0xFF
        if p == 6:
            return TCP_STATE_NAMES[self.state] if self.state < 11 else "ERR!"
        if p == 17:
            return UDP_STATE_NAME
        return "NONE"

    def __repr__(self) -> str:
        return (
            f"Connection(proto={self.protocol} {self.caddr.hex()}:{self.cport} -> "
            f"{self.vaddr.hex()}:{self.vport} -> {self.daddr.hex()}:{self.dport} "
            f"{self.state_name})"
        )


# 128 bits of address; the family is told apart by the length of vaddr (same family as caddr).
_ADDR_MASK = (1 << 128) - 1
_from_bytes = int.from_bytes
V6_MARK = 1 << 160


def make_ckey(protocol: int, caddr: bytes, cport: int) -> int:
    """The hash key of an entry: protocol, client address and port in one int.

    IPv6 keys carry a marker bit above the address so that ``::a.b.c.d`` and ``a.b.c.d`` differ.
    """
    k = (_from_bytes(caddr, "big") << 24) | (cport << 8) | protocol
    if len(caddr) == 16:
        k |= V6_MARK
    return k


def bind_dest(conn: Connection, dest: RealServer) -> None:
    """ip_vs_bind_dest: count a new entry on its real server and raise OVERLOAD if due."""
    if conn.flags & CONN_F_TEMPLATE:
        dest.persistconns += 1
    elif conn.flags & CONN_F_INACTIVE:
        dest.inactconns += 1
    else:
        dest.activeconns += 1
    if dest.u_threshold and dest.activeconns + dest.inactconns >= dest.u_threshold:
        dest.flags |= DestFlags.OVERLOAD


def unbind_dest(conn: Connection, dest: RealServer) -> None:
    """ip_vs_unbind_dest: uncount an entry and clear OVERLOAD once below the low-water mark."""
    if conn.flags & CONN_F_TEMPLATE:
        dest.persistconns -= 1
    elif conn.flags & CONN_F_INACTIVE:
        dest.inactconns -= 1
    else:
        dest.activeconns -= 1
    if dest.flags is not _AVAILABLE:
        clear_overload(dest)


_AVAILABLE = DestFlags.AVAILABLE


def clear_overload(dest: RealServer) -> None:
    """The OVERLOAD half of ip_vs_unbind_dest, after the counts went down."""
    if dest.flags & DestFlags.OVERLOAD:
        total = dest.activeconns + dest.inactconns
        if dest.l_threshold:
            if total < dest.l_threshold:
                dest.flags &= ~DestFlags.OVERLOAD
        elif dest.u_threshold:
            if total * 4 < dest.u_threshold * 3:
                dest.flags &= ~DestFlags.OVERLOAD
        else:
            dest.flags &= ~DestFlags.OVERLOAD


class ConnectionTable:
    """Entries by hash key, plus the timer wheel that expires them.

    ``on_expire(conn, now)`` is called for an entry whose deadline has passed; it returns True to
    let the table drop it, False when it re-armed the entry instead (a template that still
    controls connections).
    """

    def __init__(self, on_expire: Callable[[Connection, float], bool], now: float) -> None:
        self.conns: dict[int, Connection] = {}
        self.templates: dict[int, Connection] = {}
        self.count = 0  # entries stored (connections and templates)
        self.wheel: dict[int, _Bucket] = {}
        self.wheel_pos = math.floor(now)  # every bucket at or before this second is done
        self._on_expire = on_expire
        self._removed = 0  # entries removed early, still referenced by their wheel bucket

    # ---- hashing -------------------------------------------------------------------------

    @staticmethod
    def _unlink(table: dict[int, Connection], conn: Connection) -> None:
        head = table.get(conn.ckey)
        if head is conn:
            if conn.next is None:
                del table[conn.ckey]
            else:
                table[conn.ckey] = conn.next
        else:
            while head is not None:
                if head.next is conn:
                    head.next = conn.next
                    break
                head = head.next
        conn.next = None

    def insert(self, conn: Connection, now: float, until: float | None = None) -> None:
        """Hash a new entry and start its timer (``conn.timeout`` from ``now``, or a first
        deadline ``until`` given by the caller)."""
        table = self.templates if conn.flags & CONN_F_TEMPLATE else self.conns
        ckey = conn.ckey
        conn.next = table.get(ckey)
        table[ckey] = conn
        conn.flags |= CONN_F_HASHED
        self.count += 1
        deadline = conn.deadline = now + conn.timeout if until is None else until
        sec = math.ceil(deadline)
        if sec <= self.wheel_pos:
            sec = self.wheel_pos + 1
        bucket = self.wheel.get(sec)
        if bucket is None:
            bucket = self.wheel[sec] = _Bucket(sec)
        bucket.conns.append(conn)
        conn.bucket = bucket

    def adopt(self, conn: Connection, now: float, expires: float,
              control: Connection | None = None) -> bool:
        """Take in an entry made outside the scheduler, keeping what it was: the entries a
        director saved at a planned stop and reads back at its next start
        (``pylvs.director.conntable``). The sync backup's ``pylvs.core.sync.apply`` makes a
        received entry its own way (only ESTABLISHED counts active there, no template link);
        an adopted entry keeps its flags, state and link, so the counts are what they were.

        ``conn`` is built on a real server of the live table with its state's full
        ``timeout``. It is counted on that server as binding counts it (active, inactive or
        persistent by its flags, OVERLOAD as the thresholds say), the scheduler hears of it,
        it is linked under ``control`` (a template adopted before it, if that is still
        there), and it expires ``expires`` seconds after ``now``; its timer restarts with
        ``conn.timeout`` afterwards, as every entry's does. False, and nothing changed, when
        an entry with the same addresses is already there."""
        table = self.templates if conn.flags & CONN_F_TEMPLATE else self.conns
        c = table.get(conn.ckey)
        while c is not None:
            if c.vport == conn.vport and c.vaddr == conn.vaddr:
                return False
            c = c.next
        conn.flags &= ~CONN_F_HASHED
        dest = conn.dest
        bind_dest(conn, dest)
        svc = dest.service
        sched = svc.scheduler if svc is not None else None
        if sched is not None and sched.reads_conns:
            sched.conns_changed(dest)
        if control is not None and control.bucket is not None and not conn.is_template:
            conn.control = control
            control.n_control += 1
        self.insert(conn, now, now + max(0.0, expires))
        return True

    def unhash(self, conn: Connection) -> None:
        """Take an entry out of the hash (it stays on the wheel until it expires)."""
        if conn.flags & CONN_F_HASHED:
            self._unlink(self.templates if conn.flags & CONN_F_TEMPLATE else self.conns, conn)
            conn.flags &= ~CONN_F_HASHED

    def remove(self, conn: Connection) -> None:
        """Take an entry out now. Its wheel bucket still lists it until that second comes
        (100 s ahead for a flood's SYNACK entries): when such leftovers outnumber the stored
        entries the wheel is swept, so memory follows the table, not how many entries a
        flood made and had evicted (the kernel frees an evicted entry at once)."""
        self.unhash(conn)
        conn.bucket = None
        self.count -= 1
        self._removed += 1
        if self._removed > self.count + 1024:
            self._removed = 0
            for bucket in self.wheel.values():
                bucket.conns = [c for c in bucket.conns if c.bucket is bucket]

    # ---- the timer wheel -----------------------------------------------------------------

    def arm(self, conn: Connection, now: float) -> None:
        """Set the deadline to ``now + conn.timeout`` and file the entry no later than it."""
        deadline = now + conn.timeout
        conn.deadline = deadline
        b = conn.bucket
        sec = math.ceil(deadline)
        if b is not None and b.at <= sec:
            return  # its bucket comes first; it is re-filed then
        if sec <= self.wheel_pos:
            sec = self.wheel_pos + 1
        bucket = self.wheel.get(sec)
        if bucket is None:
            bucket = self.wheel[sec] = _Bucket(sec)
        bucket.conns.append(conn)
        conn.bucket = bucket

    def expire(self, now: float) -> int:
        """Run every bucket due by ``now``; returns how many entries were dropped."""
        end = math.floor(now)
        pos = self.wheel_pos
        if end <= pos:
            return 0
        wheel = self.wheel
        if end - pos > 2 * len(wheel) + 64:
            due = sorted(s for s in wheel if s <= end)
        else:
            due = [s for s in range(pos + 1, end + 1) if s in wheel]
        self.wheel_pos = end
        dropped = 0
        on_expire = self._on_expire
        conns = self.conns
        templates = self.templates
        for sec in due:
            bucket = wheel.pop(sec)
            for conn in bucket.conns:
                if conn.bucket is not bucket:
                    continue  # stale: re-filed earlier, or already gone
                conn.bucket = None
                if conn.deadline > now:
                    self._refile(conn)
                elif on_expire(conn, now):
                    flags = conn.flags
                    if flags & CONN_F_HASHED:
                        table = templates if flags & CONN_F_TEMPLATE else conns
                        ckey = conn.ckey
                        if conn.next is None and table.get(ckey) is conn:
                            del table[ckey]
                        else:
                            self._unlink(table, conn)
                        conn.flags = flags & ~CONN_F_HASHED
                    dropped += 1
                elif conn.bucket is None:
                    self._refile(conn)
        self.count -= dropped
        return dropped

    def new_bucket(self, sec: int) -> _Bucket:
        bucket = self.wheel[sec] = _Bucket(sec)
        return bucket

    def _refile(self, conn: Connection) -> None:
        sec = math.ceil(conn.deadline)
        if sec <= self.wheel_pos:
            sec = self.wheel_pos + 1
        bucket = self.wheel.get(sec)
        if bucket is None:
            bucket = self.wheel[sec] = _Bucket(sec)
        bucket.conns.append(conn)
        conn.bucket = bucket

    # ---- listing -------------------------------------------------------------------------

    def live(self) -> Iterator[Connection]:
        """Every entry still counted, including templates already unhashed (wheel order)."""
        seen: set[int] = set()
        for bucket in list(self.wheel.values()):
            for c in bucket.conns:
                # An entry can sit twice in its own bucket (re-filed where a stale copy was).
                if c.bucket is bucket and id(c) not in seen:
                    seen.add(id(c))
                    yield c

    def entries(self) -> Iterator[Connection]:
        """Every stored entry: connections, then templates (hash order within each)."""
        for table in (self.conns, self.templates):
            for head in table.values():
                c: Connection | None = head
                while c is not None:
                    yield c
                    c = c.next


def conn_entries(conns: Iterable[Connection], now: float) -> list[ConnEntry]:
    """The rows of ``ipvsadm -Lc`` for these entries, expiry counted from ``now``."""
    rows: list[ConnEntry] = []
    for c in conns:
        af = AF_INET6 if len(c.vaddr) == 16 else AF_INET
        rows.append(ConnEntry(
            protocol=c.ckey & 0xFF,
            af=af,
            caddr=ipaddress.ip_address(c.caddr),
            cport=c.cport,
            vaddr=ipaddress.ip_address(c.vaddr),
            vport=c.vport,
            daddr=c.dest.addr,
            dport=c.dport,
            state=c.state_name,
            expires=max(0.0, c.deadline - now),
            flags=kernel_conn_flags(c.flags),
        ))
    return rows


# ---- which packets may open an entry: sloppy_tcp / sloppy_sctp ---------------------------------

SLOPPY_NAMES = ("sloppy_sctp", "sloppy_tcp")
SCTP_CID_INIT = 1
SCTP_CID_ABORT = 6


class Settings(Protocol):
    """The settings SloppySysctls stands in front of (``pylvs.core.defense.Defense``)."""

    def get_sysctl(self) -> dict[str, int]: ...

    def set_sysctl(self, values: dict[str, object]) -> None: ...

    def counters(self) -> dict[str, int]: ...

    def check(self, name: str, value: object) -> int: ...


class SloppySysctls:
    """net.ipv4.vs.sloppy_tcp and sloppy_sctp, in front of the other settings (``inner``, the
    flood defences), so one ``get_sysctl``/``set_sysctl`` serves them all.

    Why: with several active directors behind ECMP, a router that rehashes (a director added or
    gone) sends an established flow to a director that has no entry for it. Without sloppy the
    director drops it (only a SYN opens an entry) and the connection dies; with sloppy_tcp the
    segment is scheduled, and with ``mh`` every director picks the same real server, so the
    flow carries on. The gates are the kernel's (``tcp_conn_schedule``/``sctp_conn_schedule``
    in ``ip_vs_proto_tcp.c``/``ip_vs_proto_sctp.c``): a RST (an SCTP ABORT) never opens an
    entry; a SYN (INIT) always does; anything else only while the setting is on. Both default
    to 0, as in the kernel."""

    def __init__(self, inner: Settings) -> None:
        self.inner = inner
        self.sloppy_tcp = 0
        self.sloppy_sctp = 0

    def tcp_opens(self, tcp_flags: int) -> bool:
        """May a TCP segment with these flags, of no known connection, be scheduled?
        (pylvs without sloppy also refuses SYN+ACK, which no client sends first.)"""
        if tcp_flags & TCP_RST:
            return False
        if self.sloppy_tcp:
            return True
        return tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN

    def sctp_opens(self, chunk_type: int) -> bool:
        """May an SCTP packet whose first chunk is ``chunk_type`` open an entry? No pylvs data
        plane forwards SCTP yet; this is the rule one must follow."""
        if chunk_type == SCTP_CID_ABORT:
            return False
        return chunk_type == SCTP_CID_INIT or bool(self.sloppy_sctp)

    def get_sysctl(self) -> dict[str, int]:
        values = self.inner.get_sysctl()
        return {**values, "sloppy_sctp": self.sloppy_sctp, "sloppy_tcp": self.sloppy_tcp}

    def set_sysctl(self, values: dict[str, object]) -> None:
        """Every value checked before any is set (IPVSError, nothing changed, on a bad one)."""
        known = set(self.inner.get_sysctl()) | set(SLOPPY_NAMES)
        own: dict[str, int] = {}
        for name, value in values.items():
            if name not in known:
                raise IPVSError(errno.ENOENT, f"unknown setting {name!r} (known: "
                                f"{', '.join(sorted(known))})")
            if name in SLOPPY_NAMES:
                if isinstance(value, bool) or value not in (0, 1):
                    raise IPVSError(errno.EINVAL, f"{name}: must be 0 or 1")
                own[name] = 1 if value else 0
        rest = {n: v for n, v in values.items() if n not in own}
        if rest:
            for name, value in rest.items():  # checked first, so a bad one changes nothing
                self.inner.check(name, value)
            self.inner.set_sysctl(rest)
        for name, value in own.items():
            setattr(self, name, value)

    def counters(self) -> dict[str, int]:
        return self.inner.counters()
