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

When an entry is sent (``ip_vs_sync_conn_needed``, with the kernel's sysctls in
``SyncSettings``): on every change into ESTABLISHED, FIN_WAIT, CLOSE_WAIT, TIME_WAIT or CLOSE
(the kernel sends the closing states at once and ESTABLISHED at the third packet), a UDP entry
when it is created, and a persistence template together with the entries it controls. Then,
while packets come in, it is sent again as the kernel does (``resend_due``): by packet count,
each time its incoming packets reach ``sync_threshold + k * sync_period`` (3, 53, 103, ... by
default), or with ``sync_refresh_period`` by time, so that a backup's timer stays fresh and a
director that joins later (scale-out) learns the connections that were open before it.

What this is not for: sockets, multicast groups and timers (``pylvs.director.sync``).
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pylvs.core.api import IPVSError
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
from pylvs.core.table import SysctlProvider, SysctlValue

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


# ---- when to send again: the kernel's sysctls and ip_vs_sync_conn_needed ----------------------

SYNC_SYSCTL_NAMES = ("sync_ports", "sync_qlen_max", "sync_refresh_period", "sync_retries",
                     "sync_sock_size", "sync_threshold")
# Not a kernel file: the period half of sync_threshold under a name of its own, which pylvs took
# before sync_threshold held both (as in the kernel). Still accepted by set_sysctl, so that old
# clients (a script sending {"sync_threshold": 0, "sync_period": 0}) keep working; never shown.
LEGACY_PERIOD = "sync_period"
# The kernel's default sync_qlen_max is 1/32 of the memory pages, counted in messages: 32768 is
# what that gives with 4 GiB. pylvs's master hands a full message to its socket at once (the
# socket's buffer, sync_sock_size, is its real queue), so it rarely holds more than one message
# ready: the limit matters only when set very low (0 sends nothing, as in the kernel).
DEFAULT_QLEN_MAX = 32768
SYNC_PORTS_MAX = 64  # IPVS_SYNC_PORTS_MAX: more ports than this are not used
_INT_MAX = 2**31 - 1


@dataclass(slots=True)
class SyncSettings:
    """net.ipv4.vs.sync_* with the kernel's defaults and checks, in front of the director's
    other settings (``inner``), so that ``pylvs sysctl`` and ``pylvsd --sysctl`` set them as
    they set the flood defences: every value checked before any is set.

    - ``sync_threshold`` is, as in the kernel, one setting holding two integers, the threshold
      and the period ("3 50"; ``sysctl`` prints them tab-separated): ``get_sysctl`` gives it as
      a list ``[3, 50]``; ``set_sysctl`` takes a list of one or two integers, the kernel's text
      ("3 50", any blanks between) or one integer. One value sets the threshold and keeps the
      period, as writing one integer to the kernel's file does (``proc_do_sync_threshold``
      copies the old pair, lets ``proc_dointvec`` overwrite what was written, then checks the
      pair: 0 <= threshold < period, or any threshold with period 0). The attributes
      ``sync_threshold`` and ``sync_period`` are the two halves (``resend_due`` reads them).
      ``sync_period`` (``LEGACY_PERIOD``) is also taken by ``set_sysctl`` alone, for clients
      written before, and is refused beside a two-value ``sync_threshold``.
    - ``sync_refresh_period`` (seconds, default 0): resend by time instead, see ``resend_due``;
      ``sync_retries`` (0..3): resends within that period, every period / 8.
    - ``sync_sock_size`` (default 0, the system's): SO_SNDBUF of a master's socket, SO_RCVBUF
      of a backup's, applied when a daemon starts, as in the kernel.
    - ``sync_ports`` (a power of 2, default 1): UDP ports from 8848 up a master sends on and a
      backup listens on, one per kernel thread (at most ``SYNC_PORTS_MAX`` used); read when a
      daemon starts.
    - ``sync_qlen_max``: messages a master may hold unsent; more are dropped (counted) as the
      kernel's ``sb_queue_tail`` drops them (see ``DEFAULT_QLEN_MAX``).
    """

    inner: SysctlProvider | None = None
    sync_threshold: int = 3
    sync_period: int = 50
    sync_refresh_period: int = 0
    sync_retries: int = 0
    sync_qlen_max: int = DEFAULT_QLEN_MAX
    sync_sock_size: int = 0
    sync_ports: int = 1

    def own(self) -> dict[str, int]:
        """Every setting as an integer by name, the pair as its two halves."""
        names = (*SYNC_SYSCTL_NAMES, LEGACY_PERIOD)
        return {name: getattr(self, name) for name in names}

    def get_sysctl(self) -> dict[str, SysctlValue]:
        values = self.inner.get_sysctl() if self.inner is not None else {}
        own: dict[str, SysctlValue] = {n: getattr(self, n) for n in SYNC_SYSCTL_NAMES}
        own["sync_threshold"] = [self.sync_threshold, self.sync_period]
        return {**values, **own}

    def set_sysctl(self, values: dict[str, object]) -> None:
        """Checked whole first (IPVSError naming the setting; nothing changed on a bad one),
        the pair as it will be after the write."""
        own = {n: v for n, v in values.items() if n in SYNC_SYSCTL_NAMES or n == LEGACY_PERIOD}
        after = self.own()
        for name, value in own.items():
            if name == "sync_threshold":
                pair = threshold_values(value)
                if len(pair) == 2 and LEGACY_PERIOD in own:
                    raise IPVSError(errno.EINVAL, "sync_threshold holds the period already "
                                    "(\"3 50\"): give sync_period no more")
                after["sync_threshold"] = pair[0]
                after[LEGACY_PERIOD] = pair[1] if len(pair) == 2 else after[LEGACY_PERIOD]
            elif name != LEGACY_PERIOD:
                after[name] = self._integer(name, value)
        if LEGACY_PERIOD in own:
            after[LEGACY_PERIOD] = self._integer(LEGACY_PERIOD, own[LEGACY_PERIOD])
        self.check(after)
        rest = {n: v for n, v in values.items() if n not in own}
        if rest:
            if self.inner is None:
                raise IPVSError(errno.ENOENT, f"unknown setting {next(iter(rest))!r} (known: "
                                f"{', '.join(SYNC_SYSCTL_NAMES)})")
            self.inner.set_sysctl(rest)  # checks its own whole before setting any
        for name, value in after.items():
            setattr(self, name, value)

    def counters(self) -> dict[str, int]:
        return self.inner.counters() if self.inner is not None else {}

    @staticmethod
    def _integer(name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise IPVSError(errno.EINVAL, f"{name}: an integer is required")
        return value

    @staticmethod
    def check(v: dict[str, int]) -> None:
        """The kernel's handlers' rules (proc_do_sync_threshold, proc_do_sync_ports, the
        min/max of the others), on every setting as ``own`` gives them."""
        threshold, period = v["sync_threshold"], v[LEGACY_PERIOD]
        if threshold < 0 or period < 0 or (period and threshold >= period):
            raise IPVSError(errno.EINVAL, f"sync_threshold \"{threshold} {period}\": needs "
                            "0 <= threshold < period (or period 0)")
        if not 0 <= v["sync_refresh_period"] <= _INT_MAX // 1000:
            raise IPVSError(errno.EINVAL, "sync_refresh_period: seconds, 0 or more")
        if not 0 <= v["sync_retries"] <= 3:
            raise IPVSError(errno.EINVAL, "sync_retries: must be 0 to 3")
        if not 0 <= v["sync_qlen_max"] <= 2**63 - 1:
            raise IPVSError(errno.EINVAL, "sync_qlen_max: messages, 0 or more")
        if not 0 <= v["sync_sock_size"] <= _INT_MAX:
            raise IPVSError(errno.EINVAL, "sync_sock_size: bytes, 0 (the system's) or more")
        ports = v["sync_ports"]
        if not 1 <= ports <= _INT_MAX or ports & (ports - 1):
            raise IPVSError(errno.EINVAL, "sync_ports: must be a power of 2 (1, 2, 4, ...)")


def threshold_values(value: object) -> list[int]:
    """A write of sync_threshold as the integers it holds (one or two), or IPVSError: an
    integer, a list of one or two, or the kernel's text. The kernel's ``proc_dointvec`` reads
    integers separated by blanks and ignores what is past the vector's two; pylvs refuses a
    third rather than drop it silently."""
    if isinstance(value, str):
        words = value.split()
        if not all(w.lstrip("+-").isdigit() for w in words):
            raise IPVSError(errno.EINVAL, f"sync_threshold {value!r}: integers are required "
                            "(\"3 50\": threshold and period)")
        items: list[object] = [int(w) for w in words]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    if not 1 <= len(items) <= 2 or any(isinstance(i, bool) or not isinstance(i, int)
                                       for i in items):
        raise IPVSError(errno.EINVAL, "sync_threshold: one or two integers are required "
                        "(\"3 50\": threshold and period)")
    return [i for i in items if isinstance(i, int)]


def crossed(before: int, after: int, threshold: int, period: int) -> bool:
    """Did a packet count going from ``before`` to ``after`` pass a sync point? The kernel
    tests every incoming packet with ``pkts % sync_period == sync_threshold`` (with period 0:
    ``pkts == sync_threshold``, once). Here packets may come in batches (the packet plane's C
    flows and the XDP plane hand their counters back once a second, a proxied connection's per
    read), so an entry is due when its count crossed a ``threshold + k * period`` boundary
    (k >= 0) since the last look: with batches of one this is the kernel's test exactly."""
    if period <= 0:
        return before < threshold <= after
    if before < threshold:
        return threshold <= after
    return threshold + ((before - threshold) // period + 1) * period <= after


def _ms(t: float) -> int:
    return int(t * 1000)


def resend_due(s: SyncSettings, conn: Connection, before: int, after: int, now: float) -> bool:
    """ip_vs_sync_conn_needed for an entry whose incoming packets went from ``before`` to
    ``after`` and whose state did not change (a state change is sent by ``SyncMaster.want``).

    - TCP entries are sent only in ESTABLISHED and the closing states (an SCTP entry would
      follow the same rule with SCTP's states; no pylvs data plane forwards SCTP); UDP has one
      state. A template is not counted against the threshold: it goes whenever an entry it
      controls has a packet, unless the time rule holds it back.
    - ``sync_refresh_period`` > 0: held back while the entry's timer moved by less than the
      period (or half its timeout, if lower, but at least 10 s) since it was last sent, unless
      a retry is left (``sync_retries``, each at least period / 8 after the last send).
    - then the packet rule (``crossed``), when ``sync_period`` > 0; with period 0 and no
      refresh period, only the one crossing of ``sync_threshold``.

    Sets ``conn.sync_endtime`` (in ms, the low two bits counting retries, as the kernel's
    jiffies) when the entry is due."""
    template = bool(conn.flags & CONN_F_TEMPLATE)
    if not template and conn.protocol == _IPPROTO_TCP and conn.state not in SYNC_TCP_STATES:
        return False
    timeout = conn.timeout * 1000
    orig = conn.sync_endtime
    n = (_ms(now) + timeout) & ~3
    refresh = s.sync_refresh_period * 1000
    if refresh > 0 and abs(n - orig) < min(refresh, max(timeout >> 1, 10_000)):
        retries = orig & 3
        if retries >= s.sync_retries or _ms(now) < orig - timeout + (refresh >> 3):
            return False
        n |= retries + 1
    if s.sync_period > 0:
        if not template and not crossed(before, after, s.sync_threshold, s.sync_period):
            return False
    elif refresh <= 0 and not crossed(before, after, s.sync_threshold, 0):
        return False
    conn.sync_endtime = n
    return True


def mark_sent(conn: Connection, now: float) -> None:
    """A state change went out: the time rule counts from here, with no retry used (the
    kernel's ``set:`` label)."""
    conn.sync_endtime = (_ms(now) + conn.timeout * 1000) & ~3


# ---- master ------------------------------------------------------------------------------------

@dataclass(slots=True)
class SyncMaster:
    """Entries waiting to go out, packed as the kernel packs them: ``want`` for a state change
    (``Director.sync_hook``), ``packets`` for incoming packets (``Director.sync_packets``),
    which decides the periodic re-sends by ``settings`` (``resend_due``)."""

    syncid: int
    maxlen: int
    clock: Callable[[], float]
    settings: SyncSettings = field(default_factory=SyncSettings)
    pending: list[SyncConn] = field(default_factory=list)
    first_at: float = 0.0
    sent_entries: int = 0
    resent_entries: int = 0  # of sent_entries: queued by the packet or time rule
    dropped_messages: int = 0  # over sync_qlen_max

    @property
    def message_full(self) -> bool:
        """Enough IPv4 entries wait to fill one message: time to send, not to wait."""
        per_message = max(1, (self.maxlen - _HEADER.size) // _CONN_V4.size)
        return len(self.pending) >= min(per_message, MAX_CONNS_PER_MESSAGE)

    def _queue(self, conn: Connection, fwmark: int | None) -> None:
        if not self.pending:
            self.first_at = self.clock()
        if fwmark is None:
            svc = conn.dest.service
            fwmark = svc.key.fwmark if svc is not None else 0
        self.pending.append(entry_of(conn, fwmark))

    def want(self, conn: Connection, fwmark: int | None = None) -> None:
        """Queue ``conn`` (and its template) if the kernel would sync it now: its state
        changed, or it is new (UDP). ``fwmark``: the service's (by default, looked up)."""
        if conn.flags & CONN_F_ONE_PACKET:
            return
        if conn.protocol == _IPPROTO_TCP and not conn.flags & CONN_F_TEMPLATE \
                and conn.state not in SYNC_TCP_STATES:
            return
        now = self.clock()
        self._queue(conn, fwmark)
        mark_sent(conn, now)
        ct = conn.control
        if ct is not None and ct.flags & CONN_F_TEMPLATE:
            self._queue(ct, fwmark)
            mark_sent(ct, now)

    def packets(self, conn: Connection, count: int) -> bool:
        """``count`` packets came in for ``conn`` (one, or a batch handed back): count them
        and queue the entry, then its template, for each that ``resend_due`` finds due (as
        ``ip_vs_sync_conn`` goes from an entry to its controller). True if anything was
        queued. This runs for every packet the Python paths forward, so the common case (no
        time rule, no template, no boundary crossed) returns before reading the clock."""
        before = conn.in_pkts
        after = conn.in_pkts = before + count
        s = self.settings
        ct = conn.control
        if s.sync_refresh_period <= 0 and (ct is None or not ct.flags & CONN_F_TEMPLATE) \
                and not crossed(before, after, s.sync_threshold, s.sync_period):
            return False
        now = self.clock()
        queued = False
        if not conn.flags & CONN_F_ONE_PACKET and conn.bucket is not None \
                and resend_due(s, conn, before, after, now):
            self._queue(conn, None)
            self.resent_entries += 1
            queued = True
        if ct is not None and ct.flags & CONN_F_TEMPLATE and ct.bucket is not None:
            before = ct.in_pkts
            ct.in_pkts = before + count
            if resend_due(s, ct, before, before + count, now):
                self._queue(ct, None)
                self.resent_entries += 1
                queued = True
        return queued

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
        if len(msgs) > self.settings.sync_qlen_max:  # the queue's hard limit: dropped
            self.dropped_messages += len(msgs) - self.settings.sync_qlen_max
            del msgs[self.settings.sync_qlen_max:]
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
        director.defense.half_open.note(cp)
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
    changed = cp.state != e.state
    cp.state = e.state
    cp.timeout = e.timeout or _default_timeout(director, e)
    table.arm(cp, now)
    if changed:  # half-open now: drop_entry's too
        director.defense.half_open.note(cp)
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
    "CONN_F_SYNC", "DEFAULT_GROUP", "DEFAULT_PORT", "DEFAULT_TTL", "FLUSH_AFTER",
    "LEGACY_PERIOD", "SYNC_PORTS_MAX", "SYNC_SYSCTL_NAMES", "BackupStats", "SyncConn",
    "SyncError", "SyncMaster", "SyncSettings", "apply", "crossed", "decode", "encode", "entry_of", "mark_sent",
    "resend_due", "sync_maxlen", "threshold_values",
]
