"""The narrow interface every IPVS table implements: the in-memory director, the daemon over its
control socket, and the kernel over generic netlink.

What this is for: ``pylvsadm`` (and keepalived.conf's virtual_server part) are written once against
``IPVSBackend`` and work unchanged whichever table is behind it. The operations and their errors
are those of the kernel's IPVS generic-netlink family, so ipvsadm's error texts map one to one.

Errors are ``IPVSError(errno)``, raised with the errno the kernel would return for the same
request (EEXIST, ESRCH, ENOENT, ERANGE, EINVAL, ...); the caller turns them into words.
"""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from pylvs.core.model import (
    ConnEntry,
    DestSpec,
    IPAddress,
    ServiceInfo,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)
from pylvs.core.stats import StatsSnapshot


class IPVSError(Exception):
    """A request the table refused, with the kernel's errno for it."""

    def __init__(self, errno: int, detail: str = "") -> None:
        self.errno = errno
        self.detail = detail
        super().__init__(detail or os.strerror(errno))

    @property
    def name(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))


class BackendUnavailable(Exception):
    """No table to talk to (no daemon on the control socket, no IPVS in the kernel)."""


@dataclass(frozen=True, slots=True)
class DestStatus:
    """A real server as listed: its settings, live connection counts and traffic counters."""

    spec: DestSpec
    activeconns: int = 0
    inactconns: int = 0
    persistconns: int = 0
    stats: StatsSnapshot = field(default_factory=StatsSnapshot)

    def to_wire(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_wire(),
            "activeconns": self.activeconns,
            "inactconns": self.inactconns,
            "persistconns": self.persistconns,
            "stats": self.stats.to_wire(),
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> DestStatus:
        return cls(
            DestSpec.from_wire(d["spec"]),
            int(d["activeconns"]),
            int(d["inactconns"]),
            int(d["persistconns"]),
            StatsSnapshot.from_wire(d["stats"]),
        )


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A virtual service as listed, with its real servers in the table's own order."""

    spec: ServiceSpec
    dests: tuple[DestStatus, ...] = ()
    stats: StatsSnapshot = field(default_factory=StatsSnapshot)

    def to_wire(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_wire(),
            "dests": [d.to_wire() for d in self.dests],
            "stats": self.stats.to_wire(),
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> ServiceStatus:
        return cls(
            ServiceSpec.from_wire(d["spec"]),
            tuple(DestStatus.from_wire(x) for x in d["dests"]),
            StatsSnapshot.from_wire(d["stats"]),
        )


@dataclass(frozen=True, slots=True)
class SyncDaemonStatus:
    """One connection-synchronisation daemon (``ipvsadm -L --daemon``)."""

    state: str  # "master" or "backup"
    mcast_ifn: str
    syncid: int
    sync_maxlen: int = 0
    mcast_group: str = ""
    mcast_port: int = 0
    mcast_ttl: int = 0


class IPVSBackend(Protocol):
    """What a table must do for ``pylvsadm``. Every method may raise ``IPVSError``."""

    def get_info(self) -> ServiceInfo: ...

    def get_services(self) -> list[ServiceStatus]:
        """All services with their real servers, in the table's own (unsorted) order."""
        ...

    def get_service(self, key: ServiceKey) -> ServiceStatus:
        """One service with its real servers; ``IPVSError(ESRCH)`` when there is none."""
        ...

    def add_service(self, spec: ServiceSpec) -> None: ...

    def edit_service(self, spec: ServiceSpec) -> None: ...

    def del_service(self, key: ServiceKey) -> None: ...

    def flush(self) -> None: ...

    def add_dest(self, key: ServiceKey, dest: DestSpec) -> None: ...

    def edit_dest(self, key: ServiceKey, dest: DestSpec) -> None: ...

    def del_dest(self, key: ServiceKey, addr: IPAddress, port: int) -> None: ...

    def zero(self, key: ServiceKey | None = None) -> None: ...

    def get_timeouts(self) -> Timeouts: ...

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Set the non-zero fields; a zero field leaves that timeout as it is."""
        ...

    def get_connections(self) -> list[ConnEntry]: ...

    def get_daemons(self) -> list[SyncDaemonStatus]: ...


def ipvs_error(code: int) -> IPVSError:
    """Shorthand used by table implementations: ``raise ipvs_error(errno.EEXIST)``."""
    return IPVSError(code)
