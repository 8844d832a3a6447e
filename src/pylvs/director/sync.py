"""The sync daemons of a director process: ``ipvsadm --start-daemon master|backup`` for the
tables pylvs holds itself (the proxy and packet data planes).

What this is for: the multicast sockets and the timer around ``pylvs.core.sync``, set up as the
kernel sets up its own sync threads: the master sends from the interface's address to the group
(224.0.0.81:8848 by default, TTL 1, no loopback) with the interface as the multicast interface;
the backup binds the group and port on that interface and joins the group there. A master
hands its full messages to the socket at once and the others within ``FLUSH_AFTER`` seconds;
a backup applies what it receives as it arrives.

The kernel's sync sysctls (``pylvs.core.sync.SyncSettings``: sync_threshold ("3 50"),
sync_refresh_period, sync_retries, sync_qlen_max, sync_sock_size, sync_ports) are put in front
of the director's other settings when ``SyncDaemons`` is made, so ``pylvs sysctl`` and
``pylvsd --sysctl`` reach them; the re-send rules read them live, the socket size and the
ports are read when a daemon starts (as the kernel's threads read them). With sync_ports N a
master sends each entry on one of N sockets to ports 8848..8848+N-1 (chosen by the entry, as
the kernel picks a thread by connection) and a backup listens on all N.

What this is not for: the wire format and the table updates (``pylvs.core.sync``), or kernel
IPVS (``pylvs.netlink.ipvs`` starts the kernel's own daemons).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pylvs.core import sync
from pylvs.core.api import IPVSError, SyncDaemonStatus
from pylvs.core.conntrack import Connection
from pylvs.core.director import Director

log = logging.getLogger("pylvs.sync")

CHECK_PERIOD = 0.5  # seconds between looks at the master's pending messages


def _interface(name: str) -> tuple[int, int]:
    """(ifindex, mtu) of ``name``; ENODEV when there is no such interface."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        raise IPVSError(errno.ENODEV, f"Unknown mcast interface: {name}") from None
    try:
        with open(f"/sys/class/net/{name}/mtu", encoding="ascii") as f:
            mtu = int(f.read())
    except (OSError, ValueError):
        mtu = 1500
    return index, mtu


@dataclass
class _Running:
    status: SyncDaemonStatus
    socks: list[socket.socket]
    masters: list[sync.SyncMaster] = field(default_factory=list)  # one per port, for a master
    backup_stats: sync.BackupStats = field(default_factory=sync.BackupStats)
    received: int = 0
    dropped: int = 0
    sent: int = 0
    task: asyncio.Task[None] | None = None


class SyncDaemons:
    """At most one master and one backup, as in the kernel; the methods are named as the
    table's (``KernelIPVS``) so that callers treat both alike."""

    def __init__(self, director: Director) -> None:
        self.director = director
        self.running: dict[str, _Running] = {}
        self.settings = sync.SyncSettings(director.table.sysctl_provider)
        director.table.sysctl_provider = self.settings

    # ---- the control socket's operations -----------------------------------------------------

    def start_daemon(self, want: SyncDaemonStatus) -> SyncDaemonStatus:
        if want.state not in ("master", "backup"):
            raise IPVSError(errno.EINVAL)
        if want.state in self.running:
            raise IPVSError(errno.EEXIST, "Daemon has already run")
        ifindex, mtu = _interface(want.mcast_ifn)
        group = ipaddress.ip_address(want.mcast_group or sync.DEFAULT_GROUP)
        st = replace(
            want, mcast_group=str(group), mcast_port=want.mcast_port or sync.DEFAULT_PORT,
            mcast_ttl=want.mcast_ttl or sync.DEFAULT_TTL,
            sync_maxlen=sync.sync_maxlen(want.state, want.sync_maxlen, mtu, group.version == 6),
        )
        loop = asyncio.get_running_loop()
        ports = min(self.settings.sync_ports, sync.SYNC_PORTS_MAX)
        make = self._master_socket if st.state == "master" else self._backup_socket
        bufsize = socket.SO_SNDBUF if st.state == "master" else socket.SO_RCVBUF
        socks: list[socket.socket] = []
        try:
            for i in range(ports):
                socks.append(make(st, ifindex, group.version, i))
                if self.settings.sync_sock_size > 0:  # the kernel's set_sock_size
                    socks[-1].setsockopt(socket.SOL_SOCKET, bufsize, self.settings.sync_sock_size)
        except OSError:
            for sock in socks:
                sock.close()
            raise
        run = _Running(st, socks)
        if st.state == "master":
            run.masters = [sync.SyncMaster(st.syncid, st.sync_maxlen, self.director.clock,
                                           self.settings) for _ in socks]
            self.director.sync_hook, self.director.sync_packets = self._hooks(run)
            run.task = loop.create_task(self._flusher(run))
        else:
            for sock in socks:
                loop.add_reader(sock.fileno(), self._receive, run, sock)
        self.running[st.state] = run
        log.info("sync daemon started: state = %s, mcast_ifn = %s, syncid = %d, group %s:%d%s",
                 st.state.upper(), st.mcast_ifn, st.syncid, st.mcast_group, st.mcast_port,
                 f" (and {ports - 1} more ports)" if ports > 1 else "")
        return st

    def stop_daemon(self, state: str) -> None:
        run = self.running.pop(state, None)
        if run is None:
            raise IPVSError(errno.ESRCH, "No daemon is running")
        if run.masters:
            self.director.sync_hook = self.director.sync_packets = None
            if run.task is not None:
                run.task.cancel()
        for sock in run.socks:
            if not run.masters:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        log.info("sync daemon stopped: state = %s", state.upper())

    def get_daemons(self) -> list[SyncDaemonStatus]:
        return [r.status for s in ("master", "backup") if (r := self.running.get(s)) is not None]

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state, r in self.running.items():
            if r.masters:
                out[state] = {"messages_sent": r.sent,
                              "entries_sent": sum(m.sent_entries for m in r.masters),
                              "entries_resent": sum(m.resent_entries for m in r.masters),
                              "entries_pending": sum(len(m.pending) for m in r.masters),
                              "messages_dropped": sum(m.dropped_messages for m in r.masters)}
            else:
                b = r.backup_stats
                out[state] = {"messages_received": r.received, "messages_dropped": r.dropped,
                              "entries_created": b.created, "entries_updated": b.updated,
                              "entries_without_server": b.no_dest}
        return out

    def close(self) -> None:
        for state in list(self.running):
            self.stop_daemon(state)

    # ---- master ------------------------------------------------------------------------------

    @staticmethod
    def _master_socket(st: SyncDaemonStatus, ifindex: int, version: int,
                       port: int) -> socket.socket:
        if version == 6:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, st.mcast_ttl)
                sock.connect((st.mcast_group, st.mcast_port + port, 0, ifindex))
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                # ip_mreqn: group (unused here), local address, ifindex
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                struct.pack("=4s4si", bytes(4), bytes(4), ifindex))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, st.mcast_ttl)
                # unbound: with the multicast interface set, the kernel takes that
                # interface's address as the source, as the kernel's sync thread binds it
                sock.connect((st.mcast_group, st.mcast_port + port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        return sock

    def _hooks(self, run: _Running) -> tuple[Callable[[Connection], None],
                                             Callable[[Connection, int], None]]:
        """The director's ``sync_hook`` (a state change) and ``sync_packets`` (packets in)."""
        masters = run.masters
        mask = len(masters) - 1

        def port_of(conn: Connection) -> int:
            # the kernel's select_master_thread_id hashes the entry's address likewise
            return (id(conn) >> 6) & mask

        def changed(conn: Connection) -> None:
            i = port_of(conn)
            masters[i].want(conn)
            if masters[i].message_full:
                self._send(run, i, masters[i].due())

        def packets(conn: Connection, count: int) -> None:
            i = port_of(conn)
            if masters[i].packets(conn, count) and masters[i].message_full:
                self._send(run, i, masters[i].due())

        return changed, packets

    def _send(self, run: _Running, port: int, messages: list[bytes]) -> None:
        """Hand ``messages`` to the socket of the ``port``-th sync port (from 0)."""
        sock = run.socks[port]
        for msg in messages:
            try:
                sock.send(msg)
                run.sent += 1
            except OSError as exc:  # a full socket buffer or a link going down: lost, as in the kernel
                log.debug("sync message not sent: %s", exc)

    async def _flusher(self, run: _Running) -> None:
        while True:
            await asyncio.sleep(CHECK_PERIOD)
            for i, m in enumerate(run.masters):
                self._send(run, i, m.due())

    # ---- backup ------------------------------------------------------------------------------

    @staticmethod
    def _backup_socket(st: SyncDaemonStatus, ifindex: int, version: int,
                       port: int) -> socket.socket:
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, st.mcast_ifn.encode())
            group = ipaddress.ip_address(st.mcast_group)
            if version == 6:
                sock.bind((st.mcast_group, st.mcast_port + port, 0, ifindex))
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                group.packed + struct.pack("=I", ifindex))
            else:
                sock.bind((st.mcast_group, st.mcast_port + port))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                struct.pack("=4s4si", group.packed, bytes(4), ifindex))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _receive(self, run: _Running, sock: socket.socket) -> None:
        syncid = run.status.syncid
        for _ in range(64):  # a bounded batch: the loop's other work goes on under a flood
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            run.received += 1
            try:
                entries = sync.decode(data, syncid)
            except sync.SyncError as exc:
                run.dropped += 1
                log.debug("sync message dropped: %s", exc)
                continue
            for e in entries:
                sync.apply(self.director, e, run.backup_stats)
