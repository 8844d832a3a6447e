"""The director's brain without I/O: which real server a new connection goes to, and what
happens to it afterwards.

What this is for: everything ``ip_vs_core.c`` decides for a packet, as plain calls a data plane
makes with the addresses and flags it read off the wire (or off a socket): find the virtual
service (fwmark, exact port, then port 0), apply persistence templates (``-p``/``-M``), ask the
scheduler, create and count the connection entry, run the TCP/UDP state machines, account
packets and bytes, expire entries and run the rate estimator on the caller's clock. The same
object serves the socket proxy (``proxy_*`` events) and the packet forwarder (``tcp_packet`` /
``udp_packet`` + ``account``, or ``packet`` for both in one call).

What this is not for: moving packets, opening sockets, timers or threads. Data planes own those
and call in; ``tick()`` must be called regularly (once a second is plenty).

Addresses are packed bytes (4 or 16), ports host-order ints, exactly as read from headers.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from pylvs.core.conntrack import (
    CONN_F_FWD_MASK,
    CONN_F_HASHED,
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    CONN_F_ONE_PACKET,
    CONN_F_TEMPLATE,
    CTPL_S_ASSURED,
    CTPL_S_NONE,
    DIR_INPUT,
    DIR_INPUT_ONLY,
    DIR_OUTPUT,
    INITIAL_TIMEOUT,
    TCP_ACK,
    TCP_FIN,
    TCP_NEXT_STATE,
    TCP_NEXT_STATE_SECURE,
    TCP_RST,
    TCP_S_CLOSE,
    TCP_S_CLOSE_WAIT,
    TCP_S_ESTABLISHED,
    TCP_S_FIN_WAIT,
    TCP_S_SYN_RECV,
    TCP_S_TIME_WAIT,
    TCP_STATE_ACTIVE,
    TCP_SYN,
    UDP_S_NORMAL,
    V6_MARK,
    Connection,
    ConnectionTable,
    SloppySysctls,
    bind_dest,
    clear_overload,
    conn_entries,
    tcp_next_state,
    tcp_timeout_table,
    unbind_dest,
)
from pylvs.core.defense import DEFENSE_PERIOD, Defense
from pylvs.core.lookup import ServiceCache, ServicePlan
from pylvs.core.model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENCE_TIMEOUT,
    ConnEntry,
    DestFlags,
    RealServer,
    ServiceKey,
    Timeouts,
    VirtualService,
)
from pylvs.core.stats import ESTIMATOR_PERIOD
from pylvs.core.table import IPVSTable

# Re-exported so data planes can import everything they need from here.
__all__ = [
    "CONN_F_INACTIVE", "CONN_F_NOOUTPUT", "CONN_F_ONE_PACKET", "CONN_F_TEMPLATE", "DIR_INPUT",
    "DIR_INPUT_ONLY", "DIR_OUTPUT", "INITIAL_TIMEOUT", "TCP_ACK", "TCP_FIN", "TCP_RST", "TCP_SYN",
    "TCP_S_CLOSE", "TCP_S_CLOSE_WAIT", "TCP_S_ESTABLISHED", "TCP_S_FIN_WAIT", "TCP_S_SYN_RECV",
    "TCP_S_TIME_WAIT", "UDP_S_NORMAL", "Connection", "Director",
]

_AVAILABLE = DestFlags.AVAILABLE
_ceil = math.ceil
_from_bytes = int.from_bytes  # a global lookup is cheaper than int.from_bytes each time
_IPPROTO_IP = 0
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_FTPPORT = 21
_HANDSHAKE_STATES = frozenset({0, 2, 3, 10})  # NONE, SYN_SENT, SYN_RECV, SYNACK


class Director:
    """The connection-handling half of an IPVS director, owning a table and its connections.

    Not thread-safe: one event loop owns it. ``clock`` is a monotonic seconds source; tests pass
    a fake one. Past ``max_connections`` stored entries, a new connection takes the place of the
    oldest half-open entry (while ``drop_entry`` is not 0) or is refused (counted in
    ``refused_full``), so a SYN flood cannot grow memory without bound nor lock clients out;
    ``defense`` holds IPVS's flood defences (``pylvs.core.defense``).
    """

    def __init__(
        self,
        table: IPVSTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_connections: int = 1_000_000,
    ) -> None:
        self.table = table if table is not None else IPVSTable()
        self.clock = clock
        self.defense = Defense(max_connections, self._drop)
        self._half_open = self.defense.half_open.queue
        # sysctl net.ipv4.vs.expire_quiescent_template (off by default, as in the kernel).
        self.expire_quiescent_template = False
        # sysctl net.ipv4.vs.expire_nodest_conn (off by default): entries of a deleted real
        # server go at their next packet instead of living out their timeout.
        self.expire_nodest_conn = False
        self._tcp_next = TCP_NEXT_STATE
        # The state a client's first SYN leaves an entry in: (seen both ways, input only).
        self._syn_states = (TCP_S_SYN_RECV, TCP_S_SYN_RECV)
        self.refused_full = 0
        self.refused_no_dest = 0
        now = clock()
        self.conns = ConnectionTable(self._expire, now)
        self._next_estimate = now + ESTIMATOR_PERIOD
        self._next_defense = now + DEFENSE_PERIOD
        self._secure = False
        self._services = ServiceCache()
        self.table.listeners.append(self._services)
        self.table.connection_provider = self.connection_entries
        self.table.sysctl_provider = self.sysctls = SloppySysctls(self.defense)  # + sloppy_*
        self.defense.on_change = lambda: self._defense_changed(self.conns.count)
        self.defense.refused = lambda: self.refused_full
        self._timeouts_src: Timeouts | None = None
        self._tcp_timeouts: tuple[int, ...] = ()
        self._udp_timeout = 300
        self._load_timeouts()
        # Run first in every tick: a data plane that forwards some packets outside these calls
        # (the packet plane's C flows) reports them here, before anything expires.
        self.before_tick: list[Callable[[], object]] = []
        # A connection synchronisation master (``pylvs.core.sync``) listens here: ``sync_hook``
        # with an entry when its TCP state changes and when a UDP entry is created,
        # ``sync_packets`` with the packets ``account`` counts in (client to server), in
        # whatever batches they come (one, or a C flow's second), for the periodic re-sends.
        self.sync_hook: Callable[[Connection], None] | None = None
        self.sync_packets: Callable[[Connection, int], None] | None = None

    @property
    def max_connections(self) -> int:
        return self.defense.max_connections

    @max_connections.setter
    def max_connections(self, n: int) -> None:
        self.defense.max_connections = n

    @property
    def secure_tcp(self) -> bool:
        """The SYN-flood defence's TCP state and timeout tables are in force; setting it is
        sysctl net.ipv4.vs.secure_tcp at 3 (always on) or 0 (off)."""
        return self._secure

    @secure_tcp.setter
    def secure_tcp(self, on: bool) -> None:
        self.defense.secure_tcp = 3 if on else 0
        self._defense_changed(self.conns.count)

    def _apply_secure(self, on: bool) -> None:
        """ip_vs_protocol_timeout_change: swap the state table and the timeouts."""
        self._secure = on
        table = TCP_NEXT_STATE_SECURE if on else TCP_NEXT_STATE
        self._tcp_next = table
        self._syn_states = (table[(DIR_INPUT * 64 + TCP_SYN) * 16],
                            table[(DIR_INPUT_ONLY * 64 + TCP_SYN) * 16])
        self._load_timeouts()

    def _defense_changed(self, stored: int) -> None:
        """A sysctl was written: update the level at once, as the kernel's handler does."""
        change = self.defense.update(self.max_connections - stored)
        if change is not None:
            self._apply_secure(change)

    # ---- timeouts --------------------------------------------------------------------------

    def _load_timeouts(self) -> None:
        t = self.table.timeouts
        self._timeouts_src = t
        self._tcp_timeouts = tcp_timeout_table(t, self._secure)
        self._udp_timeout = t.udp

    def _tcp_timeout(self, state: int) -> int:
        if self.table.timeouts is not self._timeouts_src:
            self._load_timeouts()
        return self._tcp_timeouts[state]

    def _udp_timeout_now(self) -> int:
        if self.table.timeouts is not self._timeouts_src:
            self._load_timeouts()
        return self._udp_timeout

    # ---- service lookup --------------------------------------------------------------------

    def find_service(
        self, protocol: int, vaddr: bytes, vport: int, fwmark: int = 0,
    ) -> VirtualService | None:
        """ip_vs_service_find: the fwmark service first, then exact port, then port 0."""
        if not fwmark:  # the cached answer without a second call: asked for every new packet
            try:
                plan = self._services.by_addr[(protocol, vaddr, vport)]
            except KeyError:
                pass
            else:
                return plan.svc if plan is not None else None
        plan = self._plan(protocol, vaddr, vport, fwmark)
        return plan.svc if plan is not None else None

    def _plan(self, protocol: int, vaddr: bytes, vport: int, fwmark: int) -> ServicePlan | None:
        cache = self._services
        if fwmark:
            mk = (fwmark, len(vaddr))
            try:
                plan = cache.by_mark[mk]
            except KeyError:
                af = AF_INET6 if len(vaddr) == 16 else AF_INET
                svc = self.table.lookup(ServiceKey.mark(fwmark, af))
                plan = cache.by_mark[mk] = ServicePlan(svc) if svc is not None else None
            if plan is not None:
                return plan
        k = (protocol, vaddr, vport)
        try:
            return cache.by_addr[k]
        except KeyError:
            pass
        if len(cache.by_addr) > 65536:
            cache.by_addr.clear()  # a scan of many VIPs/ports must not grow the cache
        if len(vaddr) not in (4, 16):
            return None
        svc = self.table.lookup_inet(protocol, ipaddress.ip_address(bytes(vaddr)), vport)
        plan = cache.by_addr[k] = ServicePlan(svc) if svc is not None else None
        return plan

    # ---- new connections -------------------------------------------------------------------

    def schedule(
        self, protocol: int, caddr: bytes, cport: int, vaddr: bytes, vport: int, fwmark: int = 0,
    ) -> Connection | None:
        """A new connection's first packet has arrived: bind it to a real server.

        The entry comes back already moved by that first packet (a TCP SYN from the client:
        SYN_RECV; UDP: its one state), so a data plane that also reports the SYN through
        ``tcp_packet`` changes nothing. ``None``: no service, port 0 without persistence, no
        real server available, or the table is full. With ``-o`` (one-packet) on a UDP
        service the entry is returned but not kept. Call ``lookup`` first: an entry that
        already exists is returned as it is, unless a new SYN should replace it
        (conn_reuse_mode: TIME_WAIT or CLOSE without a template; expire_nodest_conn and a
        quiescent server). A packet data plane that gets a SYN for an entry ``lookup`` found
        calls ``schedule`` for it to have that rule applied.
        """
        plan = None if fwmark else self._services.by_addr.get((protocol, vaddr, vport))
        if plan is None:
            plan = self._plan(protocol, vaddr, vport, fwmark)
            if plan is None:
                return None
        if len(caddr) != len(vaddr) or not 0 <= cport <= 0xFFFF or not 0 <= protocol <= 0xFF:
            return None  # not something a parsed header can say
        now = self.clock()
        ckey = (_from_bytes(caddr, "big") << 24) | (cport << 8) | protocol
        if len(caddr) == 16:
            ckey |= V6_MARK
        table = self.conns
        head = table.conns.get(ckey)
        if head is not None:
            old = self._match(head, vaddr, vport)
            if old is not None:
                if not self._reschedule(old, protocol):
                    return old
                self._drop(old)
        defense = self.defense
        if defense.drop_rate and defense.todrop():
            return None  # drop_packet: "we are very loaded"
        if table.count >= defense.max_connections and not defense.make_room():
            self.refused_full += 1
            return None
        svc = plan.svc
        if plan.persistent:
            return self._schedule_persist(plan, protocol, caddr, cport, vaddr, vport, ckey, now)
        port = plan.port
        if port != vport and not svc.key.fwmark:
            return None  # port zero is only supported by persistent services
        sched = svc.scheduler
        dest = sched.schedule(caddr, cport, vaddr, vport, now) if sched is not None else None
        if dest is None:
            self.refused_no_dest += 1
            return None
        flags = dest.fwd | CONN_F_INACTIVE
        if flags & CONN_F_FWD_MASK:  # not MASQ: the director may never see the replies
            flags |= CONN_F_NOOUTPUT
        dport = dest.port or vport
        # ip_vs_conn_stats
        dest.stats.conns += 1
        svc.stats.conns += 1
        self.table.total.conns += 1
        if protocol == _IPPROTO_TCP:
            # The first segment is the client's SYN: NONE -> SYN_RECV in every direction table.
            if self.table.timeouts is not self._timeouts_src:
                self._load_timeouts()
            first = self._syn_states[1 if flags & CONN_F_NOOUTPUT else 0]
            conn = Connection(ckey, vaddr, port or vport, dest, dport, flags,
                              first, self._tcp_timeouts[first])
        else:
            if self.table.timeouts is not self._timeouts_src:
                self._load_timeouts()
            if plan.one_packet and protocol == _IPPROTO_UDP:
                return Connection(ckey, vaddr, port or vport, dest, dport,
                                  flags | CONN_F_ONE_PACKET, UDP_S_NORMAL, self._udp_timeout)
            conn = Connection(ckey, vaddr, port or vport, dest, dport, flags,
                              UDP_S_NORMAL, self._udp_timeout)
        # ip_vs_bind_dest counts a new entry INACTIVE; the SYN that created it moves it to
        # SYN_RECV, an active state: the net effect is one more active connection.
        if protocol == _IPPROTO_TCP:
            dest.activeconns += 1
            conn.flags = flags = flags & ~CONN_F_INACTIVE
        else:
            dest.inactconns += 1
        u = dest.u_threshold
        if u and dest.activeconns + dest.inactconns >= u:
            dest.flags |= DestFlags.OVERLOAD
        if sched.reads_conns:  # type: ignore[union-attr]
            sched.conns_changed(dest)  # type: ignore[union-attr]
        # ConnectionTable.insert, inline: this is the path a SYN flood takes.
        conns = table.conns
        conn.next = conns.get(ckey)
        conns[ckey] = conn
        conn.flags = flags | CONN_F_HASHED
        table.count += 1
        deadline = conn.deadline = now + conn.timeout
        sec = _ceil(deadline)
        if sec <= table.wheel_pos:
            sec = table.wheel_pos + 1
        bucket = table.wheel.get(sec)
        if bucket is None:
            bucket = table.new_bucket(sec)
        bucket.conns.append(conn)
        conn.bucket = bucket
        if protocol == _IPPROTO_TCP:
            self._half_open.append(conn)
        elif self.sync_hook is not None:
            self.sync_hook(conn)
        return conn

    def schedule_sloppy(self, protocol: int, caddr: bytes, cport: int, vaddr: bytes, vport: int,
                        tcp_flags: int) -> Connection | None:
        """sloppy_tcp: ``schedule`` any TCP segment; the entry takes its state from NONE."""
        n = self.table.total.conns
        conn = self.schedule(protocol, caddr, cport, vaddr, vport)
        if conn is not None and conn.bucket is not None and self.table.total.conns != n:
            d = 64 * (DIR_INPUT_ONLY if conn.flags & CONN_F_NOOUTPUT else DIR_INPUT)
            self._set_tcp_state(conn, self._tcp_next[(d + (tcp_flags & 0x3F)) * 16], self.clock())
        return conn

    def _reschedule(self, old: Connection, protocol: int) -> bool:
        """A new SYN for an existing entry (conn_reuse_mode 1): start over when the entry is
        closing (TIME_WAIT, CLOSE) and not under a template, or when ``expire_nodest_conn`` is
        set and its server was made quiescent."""
        if self.expire_nodest_conn and old.dest.weight == 0:
            return True
        if protocol != _IPPROTO_TCP or old.control is not None:
            return False
        return old.state == TCP_S_TIME_WAIT or old.state == TCP_S_CLOSE

    @staticmethod
    def _match(head: Connection, vaddr: bytes, vport: int) -> Connection | None:
        c: Connection | None = head
        while c is not None:
            if c.vport == vport and c.vaddr == vaddr:
                return c
            c = c.next
        return None

    def _schedule_persist(
        self, plan: ServicePlan, protocol: int, caddr: bytes, cport: int, vaddr: bytes,
        vport: int, ckey: int, now: float,
    ) -> Connection | None:
        """ip_vs_sched_persist: reuse or create the client network's template, then the entry."""
        svc = plan.svc
        svc_port = plan.port
        if plan.fwmark:
            # fwmark template: <IPPROTO_IP, snet, 0, fwmark, 0>
            t_proto, t_vaddr, t_vport = _IPPROTO_IP, _fwmark_addr(plan.fwmark, len(vaddr)), 0
        elif vport == svc_port and svc_port != _FTPPORT:
            t_proto, t_vaddr, t_vport = protocol, vaddr, svc_port
        else:
            # port-zero (and FTP) template: <protocol, snet, 0, vaddr, 0>
            t_proto, t_vaddr, t_vport = protocol, vaddr, 0
        # The template's key: the client address masked to the persistence granularity, port 0.
        if len(caddr) == 4:
            tkey = ((_from_bytes(caddr, "big") & plan.mask4) << 24) | t_proto
        else:
            tkey = ((_from_bytes(caddr, "big") & plan.mask6) << 24) | t_proto | V6_MARK
        table = self.conns
        ct: Connection | None = None
        head = table.templates.get(tkey)
        if head is not None:
            ct = self._match(head, t_vaddr, t_vport)
            if ct is not None and (
                ct.dest.flags is not _AVAILABLE or self.expire_quiescent_template
            ) and not self._check_template(ct):
                ct = None
        if ct is None:
            while table.count + 1 >= self.max_connections:
                if not self.defense.make_room():
                    self.refused_full += 1
                    return None
            sched = svc.scheduler
            dest = sched.schedule(caddr, cport, vaddr, vport, now) if sched is not None else None
            if dest is None:
                self.refused_no_dest += 1
                return None
            t_dport = dest.port if (vport == svc_port and svc_port != _FTPPORT) else 0
            ct = Connection(tkey, t_vaddr, t_vport, dest, t_dport, dest.fwd | CONN_F_TEMPLATE,
                            CTPL_S_NONE, svc.timeout or DEFAULT_PERSISTENCE_TIMEOUT)
            bind_dest(ct, dest)
            _conns_changed(dest)
            table.insert(ct, now)
        else:
            dest = ct.dest
        dport = vport
        if dport == svc_port and dest.port:
            dport = dest.port
        flags = dest.fwd | CONN_F_INACTIVE
        if flags & CONN_F_FWD_MASK:
            flags |= CONN_F_NOOUTPUT
        dest.stats.conns += 1
        svc.stats.conns += 1
        self.table.total.conns += 1
        if self.table.timeouts is not self._timeouts_src:
            self._load_timeouts()
        if protocol == _IPPROTO_TCP:
            first = self._syn_states[1 if flags & CONN_F_NOOUTPUT else 0]
            conn = Connection(ckey, vaddr, svc_port or vport, dest, dport, flags,
                              first, self._tcp_timeouts[first])
        elif plan.one_packet and protocol == _IPPROTO_UDP:
            conn = Connection(ckey, vaddr, svc_port or vport, dest, dport,
                              flags | CONN_F_ONE_PACKET, UDP_S_NORMAL, self._udp_timeout)
        else:
            conn = Connection(ckey, vaddr, svc_port or vport, dest, dport, flags,
                              UDP_S_NORMAL, self._udp_timeout)
        if not conn.flags & CONN_F_ONE_PACKET:
            conn.control = ct
            ct.n_control += 1
            if protocol == _IPPROTO_TCP:
                conn.flags &= ~CONN_F_INACTIVE  # bound INACTIVE, then the SYN: SYN_RECV, active
            bind_dest(conn, dest)
            _conns_changed(dest)
            table.insert(conn, now)
            if protocol == _IPPROTO_TCP:
                self._half_open.append(conn)
        # ip_vs_conn_put(ct): the template's timer restarts with every connection it hands out.
        table.arm(ct, now)
        if self.sync_hook is not None and protocol != _IPPROTO_TCP:
            self.sync_hook(conn)
        return conn

    def _check_template(self, ct: Connection) -> bool:
        """ip_vs_check_template: a template whose server is gone (or quiescent, if so set)
        no longer binds; it is unhashed so the next connection makes a fresh one."""
        dest = ct.dest
        if not dest.flags & DestFlags.AVAILABLE or (
            self.expire_quiescent_template and dest.weight == 0
        ):
            self.conns.unhash(ct)
            return False
        return True

    # ---- lookups ---------------------------------------------------------------------------

    def lookup(
        self, protocol: int, caddr: bytes, cport: int, vaddr: bytes, vport: int,
    ) -> Connection | None:
        """The entry of a client->VIP packet, or None (then ``schedule`` it if it opens one)."""
        k = (_from_bytes(caddr, "big") << 24) | (cport << 8) | protocol
        if len(caddr) == 16:
            k |= V6_MARK
        c = self.conns.conns.get(k)
        while c is not None:
            if c.vport == vport and c.vaddr == vaddr:
                if c.dest.flags is not _AVAILABLE and self.expire_nodest_conn:
                    return self._nodest(c)
                return c
            c = c.next
        return None

    def _nodest(self, conn: Connection) -> Connection | None:
        """expire_nodest_conn: an entry whose real server was deleted goes at its next packet,
        so that packet finds nothing and a new connection is scheduled."""
        if conn.dest.flags & DestFlags.AVAILABLE:
            return conn
        self._drop(conn)
        return None

    def lookup_reply(
        self, protocol: int, daddr: bytes, dport: int, caddr: bytes, cport: int,
    ) -> Connection | None:
        """The entry of a real server->client packet (NAT replies), by its source and
        destination."""
        k = (_from_bytes(caddr, "big") << 24) | (cport << 8) | protocol
        if len(caddr) == 16:
            k |= V6_MARK
        c = self.conns.conns.get(k)
        while c is not None:
            if c.dport == dport and c.daddr == daddr:
                return c
            c = c.next
        return None

    # ---- state machines --------------------------------------------------------------------

    def tcp_packet(self, conn: Connection, direction: int, tcp_flags: int) -> None:
        """set_tcp_state: a segment with ``tcp_flags`` passed in ``direction``; the entry's
        timer restarts with the timeout of its (new) state."""
        if conn.bucket is None or conn.ckey & 0xFF != _IPPROTO_TCP:
            return  # expired, never stored, or not TCP
        flags = conn.flags
        if flags & CONN_F_NOOUTPUT:
            if direction == DIR_OUTPUT:
                conn.flags = flags = flags & ~CONN_F_NOOUTPUT
            else:
                direction = DIR_INPUT_ONLY
        old = conn.state
        new = self._tcp_next[(direction * 64 + (tcp_flags & 0x3F)) * 16 + old]
        now = self.clock()
        if new == old:
            conn.deadline = now + conn.timeout
            return
        self._set_tcp_state(conn, new, now)

    def packet(self, conn: Connection, direction: int, tcp_flags: int, nbytes: int) -> None:
        """One forwarded packet in one call: ``tcp_packet`` (TCP) or ``udp_packet`` (other
        protocols) followed by ``account(conn, direction, 1, nbytes)``, for data planes that
        handle every packet and want one call, and one clock reading, per packet."""
        dest = conn.dest
        svc = dest.service
        total = self.table.total
        if direction == DIR_OUTPUT:
            st = dest.stats
            st.outpkts += 1
            st.outbytes += nbytes
            if svc is not None:
                st = svc.stats
                st.outpkts += 1
                st.outbytes += nbytes
            total.outpkts += 1
            total.outbytes += nbytes
        else:
            st = dest.stats
            st.inpkts += 1
            st.inbytes += nbytes
            if svc is not None:
                st = svc.stats
                st.inpkts += 1
                st.inbytes += nbytes
            total.inpkts += 1
            total.inbytes += nbytes
            if self.sync_packets is not None:
                self.sync_packets(conn, 1)
        if conn.bucket is None:
            return
        flags = conn.flags
        if conn.ckey & 0xFF != _IPPROTO_TCP:
            if direction == DIR_OUTPUT:
                conn.flags = flags & ~CONN_F_NOOUTPUT
                ct = conn.control
                if ct is not None:
                    ct.state |= CTPL_S_ASSURED
            conn.timeout = self._udp_timeout_now()
            self.conns.arm(conn, self.clock())
            return
        if flags & CONN_F_NOOUTPUT:
            if direction == DIR_OUTPUT:
                conn.flags = flags & ~CONN_F_NOOUTPUT
            else:
                direction = DIR_INPUT_ONLY
        old = conn.state
        state = self._tcp_next[(direction * 64 + (tcp_flags & 0x3F)) * 16 + old]
        now = self.clock()
        if state == old:
            conn.deadline = now + conn.timeout
        else:
            self._set_tcp_state(conn, state, now)

    def _set_tcp_state(self, conn: Connection, new: int, now: float) -> None:
        """The part of set_tcp_state that runs when the state changes."""
        flags = conn.flags
        dest = conn.dest
        if TCP_STATE_ACTIVE[new]:
            if flags & CONN_F_INACTIVE:
                dest.activeconns += 1
                dest.inactconns -= 1
                conn.flags = flags & ~CONN_F_INACTIVE
                _conns_changed(dest)
        elif not flags & CONN_F_INACTIVE:
            dest.activeconns -= 1
            dest.inactconns += 1
            conn.flags = flags | CONN_F_INACTIVE
            _conns_changed(dest)
        if new == TCP_S_ESTABLISHED:
            ct = conn.control
            if ct is not None and ct.flags & CONN_F_TEMPLATE:
                ct.state |= CTPL_S_ASSURED
        conn.state = new
        conn.timeout = self._tcp_timeout(new)
        self.conns.arm(conn, now)
        if self.sync_hook is not None:
            self.sync_hook(conn)

    def udp_packet(self, conn: Connection, direction: int) -> None:
        """udp_state_transition: restart the timer; a reply assures the template."""
        if conn.bucket is None:
            return
        conn.timeout = self._udp_timeout_now()
        if direction == DIR_OUTPUT:
            conn.flags &= ~CONN_F_NOOUTPUT
            ct = conn.control
            if ct is not None:
                ct.state |= CTPL_S_ASSURED
        self.conns.arm(conn, self.clock())

    # ---- socket-level data planes ----------------------------------------------------------

    def proxy_established(self, conn: Connection) -> None:
        """Both legs of a proxied TCP connection are up: ESTABLISHED, counted active."""
        if conn.bucket is None or conn.ckey & 0xFF != _IPPROTO_TCP:
            return
        conn.flags &= ~CONN_F_NOOUTPUT
        if conn.state != TCP_S_ESTABLISHED:
            self._set_tcp_state(conn, TCP_S_ESTABLISHED, self.clock())

    def proxy_half_closed(self, conn: Connection, by_client: bool) -> None:
        """One side sent FIN: the client's is an input FIN, the server's an output FIN."""
        if conn.bucket is None or conn.ckey & 0xFF != _IPPROTO_TCP:
            return
        conn.flags &= ~CONN_F_NOOUTPUT
        new = tcp_next_state(conn.state, DIR_INPUT if by_client else DIR_OUTPUT, TCP_FIN,
                             self.secure_tcp)
        now = self.clock()
        if new == conn.state:
            conn.deadline = now + conn.timeout
        else:
            self._set_tcp_state(conn, new, now)

    def proxy_closed(self, conn: Connection) -> None:
        """Both sides closed: TIME_WAIT, inactive until it expires (UDP: nothing to do).

        A connection that never got past the handshake (the real server refused it or did not
        answer) goes to CLOSE instead, with its 10 s timeout, as the RST would take it in the
        kernel."""
        if conn.bucket is None or conn.ckey & 0xFF != _IPPROTO_TCP:
            return
        new = TCP_S_CLOSE if conn.state in _HANDSHAKE_STATES else TCP_S_TIME_WAIT
        self._set_tcp_state(conn, new, self.clock())

    # ---- counters --------------------------------------------------------------------------

    def account(self, conn: Connection, direction: int, packets: int, nbytes: int) -> None:
        """ip_vs_in_stats / ip_vs_out_stats: ``DIR_OUTPUT`` is real server->client, anything
        else client->real server. Also restarts the entry's timer, as any packet does."""
        dest = conn.dest
        svc = dest.service
        total = self.table.total
        if direction == DIR_OUTPUT:
            s = dest.stats
            s.outpkts += packets
            s.outbytes += nbytes
            if svc is not None:
                s = svc.stats
                s.outpkts += packets
                s.outbytes += nbytes
            total.outpkts += packets
            total.outbytes += nbytes
        else:
            s = dest.stats
            s.inpkts += packets
            s.inbytes += nbytes
            if svc is not None:
                s = svc.stats
                s.inpkts += packets
                s.inbytes += nbytes
            total.inpkts += packets
            total.inbytes += nbytes
            if self.sync_packets is not None:
                self.sync_packets(conn, packets)
        if conn.bucket is not None:
            conn.deadline = self.clock() + conn.timeout

    # ---- time ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Expire due entries and run the rate estimator every 2 s of clock time."""
        for hook in self.before_tick:
            hook()
        now = self.clock()
        self.conns.expire(now)
        if now >= self._next_defense:
            # defense_work_handler, once a second
            self._next_defense = now + DEFENSE_PERIOD
            change = self.defense.periodic(self.conns.count)
            if change is not None:
                self._apply_secure(change)
        if now >= self._next_estimate:
            self.table.estimate()
            self._next_estimate += ESTIMATOR_PERIOD
            if now >= self._next_estimate:
                # The caller slept through several periods: the kernel's timer would have run
                # late once too; resynchronise instead of replaying the missed ticks.
                self._next_estimate = now + ESTIMATOR_PERIOD

    def _expire(self, conn: Connection, now: float) -> bool:
        """ip_vs_conn_expire: drop an entry, or keep a template that still controls some."""
        if conn.n_control:
            conn.deadline = now + conn.timeout
            return False
        ct = conn.control
        if ct is not None:
            ct.n_control -= 1
            conn.control = None
        # ip_vs_unbind_dest, inline: this runs for every entry that ever lived.
        dest = conn.dest
        flags = conn.flags
        if flags & CONN_F_TEMPLATE:
            dest.persistconns -= 1
        elif flags & CONN_F_INACTIVE:
            dest.inactconns -= 1
        else:
            dest.activeconns -= 1
        if dest.flags is not _AVAILABLE:
            clear_overload(dest)
        svc = dest.service
        if svc is not None:
            sched = svc.scheduler
            if sched is not None and sched.reads_conns:
                sched.conns_changed(dest)
        return True

    def _release(self, conn: Connection) -> None:
        """Undo an entry's counts and its link to its template."""
        ct = conn.control
        if ct is not None:
            ct.n_control -= 1
            conn.control = None
        unbind_dest(conn, conn.dest)
        _conns_changed(conn.dest)

    def _drop(self, conn: Connection) -> None:
        """ip_vs_conn_expire_now for an entry that is being replaced or whose server is gone.

        Its template goes with it when nothing else uses it and it was never assured (no
        connection under it reached ESTABLISHED, no UDP reply): it has bound nobody yet."""
        ct = conn.control
        self._release(conn)
        self.conns.remove(conn)
        if (
            ct is not None and ct.n_control == 0 and not ct.state & CTPL_S_ASSURED
            and ct.bucket is not None
        ):
            self._release(ct)
            self.conns.remove(ct)

    # ---- listing ---------------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Stored entries, templates included."""
        return self.conns.count

    def connection_entries(self) -> list[ConnEntry]:
        """The rows of ``ipvsadm -Lc``: connections and persistence templates."""
        return conn_entries(self.conns.entries(), self.clock())


def _conns_changed(dest: RealServer) -> None:
    """Tell a scheduler that keeps an index of connection counts (lc, wlc, sed, nq) that this
    server's counts or OVERLOAD flag moved; see ``Scheduler.conns_changed``."""
    svc = dest.service
    if svc is not None:
        sched = svc.scheduler
        if sched is not None and sched.reads_conns:
            sched.conns_changed(dest)


def _fwmark_addr(fwmark: int, length: int) -> bytes:
    """A fwmark template's "virtual address": the mark in the first four bytes, as the kernel
    stores it in a ``union nf_inet_addr``."""
    return fwmark.to_bytes(4, "big") + bytes(length - 4)

