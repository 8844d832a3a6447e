"""The LVS half of ``pylvs keepalived``: the virtual servers of a keepalived.conf, checked and served.

What this is for: with the VRRP half (``pylvs.keepalived.daemon``), one process runs a whole director
from one keepalived.conf, as keepalived does. This part programs the virtual services into a table
and keeps them healthy with the checkers (``pylvs.health``):
- on a host with kernel IPVS (``dataplane="kernel"``), the table is the kernel's, through netlink,
  as keepalived's ipvswrapper does; the control socket serves that same table;
- elsewhere, a pylvs ``Director`` with the chosen data plane forwards the traffic and the control
  socket lets ``pylvsadm`` read and change the live table.
The control socket also answers ``checkers``: every checker's state and last result.

What this is not for: VRRP, or parsing (``pylvs.config``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
from typing import Any

from pylvs.config.keepalived import GlobalDefs, LVSConfig, LVSSyncDaemon
from pylvs.control.server import ControlServer, ControlSocketBusy
from pylvs.core.api import IPVSBackend, IPVSError, SyncDaemonStatus
from pylvs.core.model import Timeouts
from pylvs.dataplane import registry
from pylvs.director.main import DirectorDaemon, StartupError
from pylvs.health.manager import HealthManager

log = logging.getLogger("pylvs.keepalived")


class LVSRuntime:
    """Table + data plane + checkers for the virtual_server blocks of one configuration."""

    def __init__(self, config: LVSConfig, control_socket: str, dataplane: str = "proxy",
                 global_defs: GlobalDefs | None = None) -> None:
        self.config = config
        self.global_defs = global_defs or GlobalDefs()
        self.dataplane = dataplane = registry.resolve(dataplane)
        self.director: DirectorDaemon | None = None
        self.server: ControlServer | None = None
        backend: IPVSBackend
        if dataplane == "kernel":
            from pylvs.netlink.ipvs import KernelIPVS

            backend = KernelIPVS()
            self.server = ControlServer(backend, control_socket, extra={"checkers": self._checkers})
        else:
            # Under keepalived the VIPs are VRRP's: the master holds them as local addresses and
            # its kernel answers ARP; the packet plane must not answer for them on a backup.
            # VRRP owns the VIPs: the packet planes (and xdp, built on it) must not answer ARP
            options = {"answer_arp": False} if dataplane in ("packet", "xdp") else {}
            self.director = DirectorDaemon(control_socket, dataplane=dataplane, dataplane_options=options)
            self.director.server.extra["checkers"] = self._checkers
            backend = self.director.director.table
        self.backend = backend
        self.health = HealthManager(backend, config)

    def _checkers(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return self.health.status()

    def sync_daemon(self, state: str, cfg: LVSSyncDaemon) -> None:
        """Run the connection sync daemon in ``state`` ("master" or "backup") and not the
        other, as keepalived does when its lvs_sync_daemon instance changes state: the
        kernel's daemons with kernel IPVS, this process's otherwise."""
        other = "backup" if state == "master" else "master"
        want = SyncDaemonStatus(state, cfg.interface, cfg.syncid, cfg.maxlen, cfg.group,
                                cfg.port, cfg.ttl)
        backend: Any = self.director.sync if self.director is not None else (
            self.server.backend if self.server is not None else None)
        if backend is None:
            return
        with contextlib.suppress(IPVSError):
            backend.stop_daemon(other)
        try:
            backend.start_daemon(want)
        except IPVSError as exc:
            if exc.errno != errno.EEXIST:
                log.warning("lvs_sync_daemon: cannot start the %s sync daemon on %s: %s",
                            state, cfg.interface, exc)

    def _table_settings(self) -> None:
        """global_defs lvs_flush and lvs_timeouts, applied before the virtual servers."""
        g = self.global_defs
        if g.lvs_flush:
            self.backend.flush()
        if g.lvs_timeouts is not None:
            now = self.backend.get_timeouts()
            tcp, fin, udp = g.lvs_timeouts
            self.backend.set_timeouts(Timeouts(tcp or now.tcp, fin or now.tcp_fin, udp or now.udp))

    async def start(self) -> None:
        if self.director is not None:
            await self.director.start()
        elif self.server is not None:
            try:
                await self.server.start()
            except ControlSocketBusy as exc:
                raise StartupError(str(exc)) from None
        log.info("Initializing ipvs")  # keepalived's line as it opens the table
        try:
            self._table_settings()
        except IPVSError as exc:
            log.error("lvs_flush / lvs_timeouts not applied: %s", exc)
        await self.health.start()
        log.info("%d virtual server(s) under health checks", len(self.config.virtual_servers))

    async def reload(self, config: LVSConfig) -> None:
        """A new configuration: only the services and real servers that differ change."""
        log.info("Reinitializing ipvs")
        await self.health.reload(config)
        self.config = config

    async def stop(self, release: bool = True) -> None:
        # keepalived takes its virtual servers out of the kernel's table when it stops (all at
        # once with lvs_flush_on_stop; kept with -I, release=False); a table of this process's
        # own goes with the process
        kernel = self.director is None and release
        flush_all = kernel and self.global_defs.lvs_flush_on_stop == "all"
        await self.health.stop(remove_services=kernel and not flush_all,
                               announce=release and self.global_defs.lvs_flush_on_stop is None)
        if flush_all:
            with contextlib.suppress(IPVSError):
                self.backend.flush()
        if self.director is not None:
            await self.director.stop()
        elif self.server is not None:
            await self.server.stop()
