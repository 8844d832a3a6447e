"""Connection synchronisation between directors, as IPVS's sync daemons do it (``ip_vs_sync``).

What this is for: a backup director that takes over (VRRP failover) must already know where each
live connection and persistence template goes, or every established connection breaks and
persistent clients land on another real server. The master multicasts its connection entries;
the backup keeps them in its own table. This module is the sans-IO part:

- the wire format, version 1 (the kernel's default since 2.6.39; IPv4 and IPv6, fwmark, timeout)
  and the old version 0 (IPv4 only, read only): ``encode``/``decode``;
- ``SyncMaster``: which entries to send and how they are packed into messages (a message is
  full at the size the interface MTU allows, or is sent anyway once its first entry is 2 s old,
  as the kernel's master thread does);
- ``apply``: what a backup does with a received entry (``ip_vs_proc_conn``): create it bound
  to the same real server when its table has that server, or update its state, activity
  counts and timer.

When an entry is sent: on every change into ESTABLISHED, FIN_WAIT, CLOSE_WAIT, TIME_WAIT or
CLOSE (the kernel sends the closing states at once and ESTABLISHED at the third packet), a
UDP entry when it is created (the kernel: at its third packet), and a persistence template
together with the entries it controls. The kernel also re-sends an entry every 50 packets to
keep the backup's timer fresh; here a long-lived entry that changes no state is sent once,
so on the backup it expires after its state's timeout (15 min for ESTABLISHED by default).

What this is not for: sockets, multicast groups and timers (``pylvs.director.sync``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pylvs.core.conntrack import (
    CONN_F_FWD_MASK,
    CONN_F_HASHED,
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    CONN_F_ONE_PACKET,
    CONN_F_TEMPLATE,
    TCP_S_CLOSE,
    TCP_S_CLOSE_WAIT,
    TCP_S_ESTABLISHED,
    TCP_S_FIN_WAIT,
    TCP_S_TIME_WAIT,
    Connection,
    bind_dest,
    make_ckey,
    unbind_dest,
)
from pylvs.core.director import Director, _conns_changed

DEFAULT_GROUP = "224.0.0.81"
DEFAULT_GROUP6 = "ff02::8848"
DEFAULT_PORT = 8848
DEFAULT_TTL = 1
FLUSH_AFTER = 2.0  # seconds a partly filled message may wait (IPVS_SYNC_FLUSH_TIME)
SYNC_PROTO_VER = 1
MAX_CONNS_PER_MESSAGE = 255  # nr_conns is 8 bits

# Flags kept from a received entry (IP_VS_CONN_F_BACKUP_MASK), and the one a synced entry gets.
CONN_F_SEQ_MASK = 0x0600
CONN_F_NO_CPORT = 0x0800
CONN_F_BACKUP_MASK = (CONN_F_FWD_MASK | CONN_F_NOOUTPUT | CONN_F_INACTIVE | CONN_F_SEQ_MASK
                      | CONN_F_NO_CPORT | CONN_F_TEMPLATE)
CONN_F_SYNC = 0x20000

_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_TCP_STATES = 11  # IP_VS_TCP_S_LAST
_UDP_STATES = 1
STYPE_F_INET6 = 1
_OPT_SEQ_DATA = 1
_OPT_PE_DATA = 2
_OPT_PE_NAME = 3
_OPT_F_PARAM = 1 << 6  # an option whose type has this bit may be skipped when unknown

_HEADER = struct.Struct("!BBHBbH")  # reserved, syncid, size, nr_conns, version, spare
_HEADER_V0 = struct.Struct("!BBH")  # nr_conns, syncid, size
_CONN_V4 = struct.Struct("!BBHIHHHHII4s4s4s")
_CONN_V6 = struct.Struct("!BBHIHHHHII16s16s16s")
_CONN_V0 = struct.Struct("!BBHHH4s4s4sHH")
_V0_SEQ_OPTIONS = 24  # struct ip_vs_sync_conn_options: two ip_vs_seq of three u32

# States worth telling a backup about (ip_vs_sync_conn_needed)
SYNC_TCP_STATES = frozenset({TCP_S_ESTABLISHED, TCP_S_FIN_WAIT, TCP_S_CLOSE, TCP_S_CLOSE_WAIT,
                             TCP_S_TIME_WAIT})


class SyncError(ValueError):
    """A message that cannot be read; the whole datagram is dropped, as the kernel does."""


@dataclass(frozen=True, slots=True)
class SyncConn:
    """One entry as it travels: addresses packed (4 or 16 bytes), ports host order, timeout
    in seconds (the full timeout of its state, not what is left of it)."""

    protocol: int
    caddr: bytes
    cport: int
    vaddr: bytes
    vport: int
    daddr: bytes
    dport: int
    flags: int
    state: int
    timeout: int = 0
    fwmark: int = 0

    @property
    def template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)


def sync_maxlen(state: str, requested: int = 0, mtu: int = 1500, ipv6: bool = False) -> int:
    """The largest sync message, as the kernel sets it when a daemon starts: what was asked
    (``--sync-maxlen``) within [1 (master) or 1024 (backup), 65535 - headers], else a 1500-byte
    packet for a master and the interface MTU (at least 1500) for a backup, less the IP and
    UDP headers."""
    hlen = 48 if ipv6 else 28
    if requested:
        return max(1 if state == "master" else 1024, min(requested, 65535 - hlen))
    return (1500 if state == "master" else max(1500, min(mtu, 65535))) - hlen


def entry_of(conn: Connection, fwmark: int = 0) -> SyncConn:
    """What the master sends for one of its entries."""
    return SyncConn(conn.protocol, conn.caddr, conn.cport, conn.vaddr, conn.vport, conn.daddr,
                    conn.dport, conn.flags & ~CONN_F_HASHED, conn.state, int(conn.timeout),
                    fwmark)


def _encode_entry(e: SyncConn) -> bytes:
    v6 = len(e.caddr) == 16
    s = _CONN_V6 if v6 else _CONN_V4
    return s.pack(STYPE_F_INET6 if v6 else 0, e.protocol, s.size & 0x0FFF, e.flags & 0xFFFFFFFF,
                  e.state, e.cport, e.vport, e.dport, e.fwmark, e.timeout & 0xFFFFFFFF,
                  e.caddr, e.vaddr, e.daddr)


def encode(entries: Iterable[SyncConn], syncid: int, maxlen: int) -> list[bytes]:
    """Version 1 messages carrying ``entries`` in order, each at most ``maxlen`` bytes."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = _HEADER.size

    def close() -> None:
        body = b"".join(parts)
        out.append(_HEADER.pack(0, syncid, _HEADER.size + len(body), len(parts), SYNC_PROTO_VER, 0)
                   + body)

    for e in entries:
        raw = _encode_entry(e)  # 36 or 72 bytes: already 32-bit aligned
        if parts and (size + len(raw) > maxlen or len(parts) == MAX_CONNS_PER_MESSAGE):
            close()
            parts = []
            size = _HEADER.size
        parts.append(raw)
        size += len(raw)
    if parts:
        close()
    return out


def decode(data: bytes, syncid: int = 0) -> list[SyncConn]:
    """The entries of one received datagram (version 1 or 0). ``syncid`` other than 0 keeps
    only messages with that id (a backup's filter). Raises ``SyncError`` for a datagram the
    kernel would drop whole; single entries it would skip (an unknown protocol, a state out of
    range) are left out."""
    if len(data) < _HEADER_V0.size:
        raise SyncError("message header too short")
    reserved, msg_syncid, size = _HEADER_V0.unpack_from(data)
    if size != len(data):
        raise SyncError(f"message says {size} bytes, datagram has {len(data)}")
    if syncid and msg_syncid != syncid:
        return []
    if (len(data) >= _HEADER.size and reserved == 0
            and data[5] == SYNC_PROTO_VER and data[6:8] == b"\0\0"):
        return _decode_v1(data)
    return _decode_v0(data)


def _decode_v1(data: bytes) -> list[SyncConn]:
    nr_conns = data[4]
    out: list[SyncConn] = []
    pos = _HEADER.size
    for _ in range(nr_conns):
        if pos + _CONN_V4.size > len(data):
            raise SyncError("entry runs past the end of the message")
        ver_size = struct.unpack_from("!H", data, pos + 2)[0]
        size = ver_size & 0x0FFF
        if ver_size >> 12:
            raise SyncError(f"entry of unknown version {ver_size >> 12}")
        end = pos + size
        if end > len(data):
            raise SyncError("entry runs past the end of the message")
        e = _decode_entry(data, pos, end)
        if e is not None:
            out.append(e)
        pos += (size + 3) & ~3
    return out


def _decode_entry(data: bytes, pos: int, end: int) -> SyncConn | None:
    typ = data[pos]
    if typ & STYPE_F_INET6:
        s = _CONN_V6
    elif typ == 0:
        s = _CONN_V4
    else:
        raise SyncError(f"entry of unknown type {typ}")
    if pos + s.size > end:
        raise SyncError("entry shorter than its header")
    (_t, protocol, _vs, flags, state, cport, vport, dport, fwmark, timeout,
     caddr, vaddr, daddr) = s.unpack_from(data, pos)
    p = pos + s.size
    seen: set[int] = set()
    while p < end:  # options: sequence data, persistence-engine data and name
        if p + 2 > end:
            raise SyncError("truncated option")
        ptype, plen = data[p], data[p + 1]
        p += 2
        if not plen or p + plen > end:
            raise SyncError("option runs past its entry")
        kind = ptype & ~_OPT_F_PARAM
        if kind in (_OPT_SEQ_DATA, _OPT_PE_DATA, _OPT_PE_NAME):
            if kind in seen:
                raise SyncError("option found twice")
            seen.add(kind)
        elif not ptype & _OPT_F_PARAM:
            return None  # an unknown mandatory option: this entry is skipped
        p += plen
    if _OPT_PE_DATA in seen:
        return None  # persistence engines (sip) are not implemented: skip like an unknown one
    flags = (flags & CONN_F_BACKUP_MASK) | CONN_F_SYNC
    return _checked(SyncConn(protocol, caddr, cport, vaddr, vport, daddr, dport, flags, state,
                             timeout, fwmark))


def _decode_v0(data: bytes) -> list[SyncConn]:
    nr_conns = data[0]
    out: list[SyncConn] = []
    pos = _HEADER_V0.size
    for _ in range(nr_conns):
        if pos + _CONN_V0.size > len(data):
            raise SyncError("v0 entry runs past the end of the message")
        (_r, protocol, cport, vport, dport, caddr, vaddr, daddr, flags,
         state) = _CONN_V0.unpack_from(data, pos)
        pos += _CONN_V0.size
        if flags & CONN_F_SEQ_MASK:
            pos += _V0_SEQ_OPTIONS
            if pos > len(data):
                raise SyncError("v0 entry options run past the end of the message")
        flags = (flags | CONN_F_SYNC) & ~CONN_F_HASHED
        e = _checked(SyncConn(protocol, caddr, cport, vaddr, vport, daddr, dport, flags, state))
        if e is not None:
            out.append(e)
    return out


def _checked(e: SyncConn) -> SyncConn | None:
    """The kernel's per-entry checks: a known protocol and a state it has; templates carry
    state 0."""
    if e.template:
        if e.state:
            return SyncConn(e.protocol, e.caddr, e.cport, e.vaddr, e.vport, e.daddr, e.dport,
                            e.flags, 0, e.timeout, e.fwmark)
        return e
    states = {_IPPROTO_TCP: _TCP_STATES, _IPPROTO_UDP: _UDP_STATES}.get(e.protocol)
    if states is None or e.state >= states:
        return None
    return e


# ---- master ------------------------------------------------------------------------------------

@dataclass(slots=True)
class SyncMaster:
    """Entries waiting to go out, packed as the kernel packs them."""

    syncid: int
    maxlen: int
    clock: Callable[[], float]
    pending: list[SyncConn] = field(default_factory=list)
    first_at: float = 0.0
    sent_entries: int = 0

    @property
    def message_full(self) -> bool:
        """Enough IPv4 entries wait to fill one message: time to send, not to wait."""
        per_message = max(1, (self.maxlen - _HEADER.size) // _CONN_V4.size)
        return len(self.pending) >= min(per_message, MAX_CONNS_PER_MESSAGE)

    def want(self, conn: Connection, fwmark: int = 0) -> None:
        """Queue ``conn`` (and its template) if the kernel would sync it now."""
        if conn.flags & CONN_F_ONE_PACKET:
            return
        if conn.protocol == _IPPROTO_TCP and not conn.flags & CONN_F_TEMPLATE \
                and conn.state not in SYNC_TCP_STATES:
            return
        if not self.pending:
            self.first_at = self.clock()
        self.pending.append(entry_of(conn, fwmark))
        ct = conn.control
        if ct is not None and ct.flags & CONN_F_TEMPLATE:
            self.pending.append(entry_of(ct, fwmark))

    def due(self, flush: bool = False) -> list[bytes]:
        """Messages to send now: every full one, and the partly filled last one too once its
        first entry has waited ``FLUSH_AFTER`` seconds (or with ``flush``)."""
        if not self.pending:
            return []
        msgs = encode(self.pending, self.syncid, self.maxlen)
        last = msgs[-1]
        last_full = last[4] == MAX_CONNS_PER_MESSAGE or len(last) + _CONN_V4.size > self.maxlen
        if not (flush or last_full or self.clock() - self.first_at >= FLUSH_AFTER):
            if len(msgs) == 1:
                return []
            kept = last[4]  # the last message's entries wait for more company
            self.pending = self.pending[-kept:]
            self.first_at = self.clock()
            msgs.pop()
        else:
            self.pending = []
        self.sent_entries += sum(m[4] for m in msgs)
        return msgs


# ---- backup ------------------------------------------------------------------------------------

@dataclass(slots=True)
class BackupStats:
    created: int = 0
    updated: int = 0
    no_dest: int = 0  # no service or real server in this table for the entry
    full: int = 0  # left out: the table was at max_connections with nothing half-open to drop


def apply(director: Director, e: SyncConn, stats: BackupStats | None = None) -> Connection | None:
    """ip_vs_proc_conn: create the entry bound to the same real server when this table has
    it (else it is counted in ``no_dest`` and left out), or update the one there: its state,
    its active/inactive count, its timer. A new entry is left out (``full``) when the table
    is at ``max_connections``."""
    stats = stats if stats is not None else BackupStats()
    now = director.clock()
    table = director.conns
    # a template's client address is its network (masked by the master) and its port 0
    ckey = make_ckey(e.protocol, e.caddr, e.cport)
    heads = table.templates if e.template else table.conns
    cp = heads.get(ckey)
    while cp is not None and not (cp.vport == e.vport and cp.vaddr == e.vaddr):
        cp = cp.next
    flags = e.flags
    if cp is None:
        svc = director.find_service(e.protocol, e.vaddr, e.vport, e.fwmark)
        if svc is None and e.template and e.fwmark:
            svc = director.find_service(0, e.vaddr, e.vport, e.fwmark)
        dest = None
        if svc is not None:
            daddr = ipaddress.ip_address(e.daddr)
            dest = svc.find_dest(daddr, e.dport) or svc.find_dest(daddr, 0)
        if dest is None:
            stats.no_dest += 1
            return None
        # A backup's table has the same bound as the master's: a master (or anyone on the
        # sync group) sending more entries than fit cannot grow it without limit. As for a new
        # connection, the oldest half-open entry gives way first (while drop_entry is on).
        if table.count >= director.max_connections and not director.defense.make_room():
            stats.full += 1
            return None
        if not e.template and e.protocol == _IPPROTO_TCP:
            flags = (flags & ~CONN_F_INACTIVE) if e.state == TCP_S_ESTABLISHED \
                else flags | CONN_F_INACTIVE
        cp = Connection(ckey, e.vaddr, e.vport, dest, e.dport, flags & ~CONN_F_HASHED, e.state,
                        e.timeout or _default_timeout(director, e))
        bind_dest(cp, dest)
        _conns_changed(dest)
        table.insert(cp, now)
        stats.created += 1
        return cp
    if cp.protocol == _IPPROTO_TCP and not cp.flags & CONN_F_TEMPLATE and cp.state != e.state:
        # as the kernel's backup: only ESTABLISHED counts active
        dest = cp.dest
        if e.state != TCP_S_ESTABLISHED and not cp.flags & CONN_F_INACTIVE:
            unbind_dest(cp, dest)
            cp.flags |= CONN_F_INACTIVE
            bind_dest(cp, dest)
            _conns_changed(dest)
        elif e.state == TCP_S_ESTABLISHED and cp.flags & CONN_F_INACTIVE:
            unbind_dest(cp, dest)
            cp.flags &= ~CONN_F_INACTIVE
            bind_dest(cp, dest)
            _conns_changed(dest)
    cp.state = e.state
    cp.timeout = e.timeout or _default_timeout(director, e)
    table.arm(cp, now)
    stats.updated += 1
    return cp


def _default_timeout(director: Director, e: SyncConn) -> int:
    """A v0 entry carries no timeout: its state's (3 minutes for a template)."""
    if e.template:
        return 180
    if e.protocol == _IPPROTO_TCP:
        return director._tcp_timeout(e.state)
    return director._udp_timeout_now()


__all__ = [
    "CONN_F_SYNC", "DEFAULT_GROUP", "DEFAULT_PORT", "DEFAULT_TTL", "FLUSH_AFTER", "BackupStats",
    "SyncConn", "SyncError", "SyncMaster", "apply", "decode", "encode", "entry_of",
    "sync_maxlen",
]
