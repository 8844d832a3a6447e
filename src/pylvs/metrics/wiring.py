"""How a daemon plugs its live objects into the metrics: one function per kind of daemon.

What this is for: keeping the daemons' own change to a few lines (an option and a call). The
daemons are above this package, so they are described here by the attributes read, as protocols.
"""

from __future__ import annotations

import argparse
import threading
from typing import Any, Protocol

from pylvs.control.client import ControlClient
from pylvs.core.api import IPVSBackend
from pylvs.core.director import Director
from pylvs.core.table import IPVSTable
from pylvs.metrics.server import ObservabilityServer, from_args, observe_op
from pylvs.metrics.sources import Describable, ReloadCounts, Sources


class ServesControl(Protocol):
    """A control server whose ``extra`` operations can be extended (``ControlServer``)."""

    extra: dict[str, Any]


class DirectorLike(Protocol):
    """What ``pylvsd`` (``DirectorDaemon``) shows: its Director, data plane and control socket."""

    director: Director
    dataplane: Any
    dataplane_name: str
    control_socket: str
    server: Any
    reloads: int  # SIGHUP re-reads of its rule file, applied or rejected
    reload_failures: int
    last_reload_success: float | None


def kernel_backend() -> Any:
    """One netlink connection to the kernel's IPVS per thread (a socket is not shared between
    the event loop and the HTTP threads)."""
    local = threading.local()

    def get() -> IPVSBackend | None:
        k = getattr(local, "kernel", None)
        if k is None:
            from pylvs.netlink.ipvs import KernelIPVS

            k = local.kernel = KernelIPVS()
        return k

    return get


def director_sources(daemon: DirectorLike, name: str = "pylvsd") -> Sources:
    """The table (the kernel's when the kernel forwards), the data plane of a director, and its
    SIGHUP reloads."""

    def reloads() -> ReloadCounts:
        return ReloadCounts(daemon.reloads, daemon.reload_failures, daemon.last_reload_success)

    if daemon.dataplane_name == "kernel":
        return Sources(name, backend=kernel_backend(), dataplane=lambda: daemon.dataplane,
                       reloads=reloads)

    def table() -> IPVSTable:
        return daemon.director.table

    def plane() -> Describable | None:
        return daemon.dataplane  # type: ignore[no-any-return]

    return Sources(name, table=table, dataplane=plane, reloads=reloads)


def observe_director(daemon: DirectorLike, args: argparse.Namespace) -> ObservabilityServer | None:
    """Answer ``observe`` on the control socket (``pylvs top``) and build the HTTP server the
    options ask for (not started). Raises ``MetricsError`` for a bad option or a busy port."""
    sources = director_sources(daemon)
    daemon.server.extra["observe"] = observe_op(sources)
    return from_args(args, sources, backend=lambda: ControlClient(daemon.control_socket))
