"""The sync daemons of a director process: ``ipvsadm --start-daemon master|backup`` for the
tables pylvs holds itself (the proxy and packet data planes).

What this is for: the multicast sockets and the timer around ``pylvs.core.sync``, set up as the
kernel sets up its own sync threads: the master sends from the interface's address to the group
(224.0.0.81:8848 by default, TTL 1, no loopback) with the interface as the multicast interface;
the backup binds the group and port on that interface and joins the group there. A master
hands its full messages to the socket at once and the others within ``FLUSH_AFTER`` seconds;
a backup applies what it receives as it arrives.

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
    sock: socket.socket
    master: sync.SyncMaster | None = None
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
        if st.state == "master":
            sock = self._master_socket(st, ifindex, group.version)
            run = _Running(st, sock, sync.SyncMaster(st.syncid, st.sync_maxlen, self.director.clock))
            self.director.sync_hook = self._hook(run)
            run.task = loop.create_task(self._flusher(run))
        else:
            sock = self._backup_socket(st, ifindex, group.version)
            run = _Running(st, sock)
            loop.add_reader(sock.fileno(), self._receive, run)
        self.running[st.state] = run
        log.info("sync daemon started: state = %s, mcast_ifn = %s, syncid = %d, group %s:%d",
                 st.state.upper(), st.mcast_ifn, st.syncid, st.mcast_group, st.mcast_port)
        return st

    def stop_daemon(self, state: str) -> None:
        run = self.running.pop(state, None)
        if run is None:
            raise IPVSError(errno.ESRCH, "No daemon is running")
        if run.master is not None:
            self.director.sync_hook = None
            if run.task is not None:
                run.task.cancel()
        else:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(run.sock.fileno())
        run.sock.close()
        log.info("sync daemon stopped: state = %s", state.upper())

    def get_daemons(self) -> list[SyncDaemonStatus]:
        return [r.status for s in ("master", "backup") if (r := self.running.get(s)) is not None]

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state, r in self.running.items():
            if r.master is not None:
                out[state] = {"messages_sent": r.sent, "entries_sent": r.master.sent_entries,
                              "entries_pending": len(r.master.pending)}
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
    def _master_socket(st: SyncDaemonStatus, ifindex: int, version: int) -> socket.socket:
        if version == 6:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, st.mcast_ttl)
                sock.connect((st.mcast_group, st.mcast_port, 0, ifindex))
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
                sock.connect((st.mcast_group, st.mcast_port))
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        return sock

    def _hook(self, run: _Running) -> Callable[[Connection], None]:
        master = run.master
        assert master is not None

        def hook(conn: Connection) -> None:
            svc = conn.dest.service
            master.want(conn, svc.key.fwmark if svc is not None else 0)
            if master.message_full:
                self._send(run, master.due())

        return hook

    def _send(self, run: _Running, messages: list[bytes]) -> None:
        for msg in messages:
            try:
                run.sock.send(msg)
                run.sent += 1
            except OSError as exc:  # a full socket buffer or a link going down: lost, as in the kernel
                log.debug("sync message not sent: %s", exc)

    async def _flusher(self, run: _Running) -> None:
        assert run.master is not None
        while True:
            await asyncio.sleep(CHECK_PERIOD)
            self._send(run, run.master.due())

    # ---- backup ------------------------------------------------------------------------------

    @staticmethod
    def _backup_socket(st: SyncDaemonStatus, ifindex: int, version: int) -> socket.socket:
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, st.mcast_ifn.encode())
            group = ipaddress.ip_address(st.mcast_group)
            if version == 6:
                sock.bind((st.mcast_group, st.mcast_port, 0, ifindex))
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                                group.packed + struct.pack("=I", ifindex))
            else:
                sock.bind((st.mcast_group, st.mcast_port))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                struct.pack("=4s4si", group.packed, bytes(4), ifindex))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _receive(self, run: _Running) -> None:
        syncid = run.status.syncid
        for _ in range(64):  # a bounded batch: the loop's other work goes on under a flood
            try:
                data = run.sock.recv(65535)
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
