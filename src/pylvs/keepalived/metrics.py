"""``pylvs keepalived``'s metrics, status page and ``observe`` operation (``pylvs.metrics``).

What this is for: handing the daemon's live parts to the shared metrics module: the VRRP
instances (``status()``), the tracked scripts, the virtual servers' table (the Director's, or
the kernel's with ``--dataplane kernel``), the checkers' state and the reload count. Every
figure is read when a scrape, the page or ``pylvs top`` asks; nothing is counted here except
how long each health probe took, which the checkers do not keep.

``--metrics-port PORT`` (the older option) still serves ``pylvs_vrrp_state``,
``pylvs_vrrp_split_brain`` and ``pylvs_vrrp_split_brain_events_total`` on 127.0.0.1:PORT, now
beside keepalived-exporter's and node_exporter's series. ``prometheus_client`` is imported only
when metrics are served.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Protocol

from pylvs.control.client import ControlClient, default_socket_path
from pylvs.core.table import IPVSTable
from pylvs.metrics.server import ObservabilityServer, from_args, observe_op
from pylvs.metrics.sources import (
    CheckerView,
    Describable,
    HealthMap,
    RealServerHealth,
    ReloadCounts,
    Sources,
)
from pylvs.metrics.wiring import kernel_backend
from pylvs.vrrp.router import State


class _Settings(Protocol):
    """The daemon's settings read here (``DaemonSettings``; the metrics and status addresses are
    read with getattr by ``from_args``)."""

    @property
    def metrics_port(self) -> int | None: ...

    @property
    def control_socket(self) -> str | None: ...


class _Daemon(Protocol):
    """What is read from ``KeepalivedDaemon`` (a protocol: the daemon module imports this one)."""

    lvs: Any  # LVSRuntime | None
    tracking: Any  # Tracking: .scripts name -> state with .ok

    def status(self) -> dict[str, object]: ...


class Metrics:
    """The daemon's observability: the HTTP listeners the options ask for, and ``observe``."""

    def __init__(self, settings: _Settings, daemon: _Daemon) -> None:
        self.daemon = daemon
        self.durations: dict[int, tuple[Any, float]] = {}  # id(CheckerConfig) -> (it, seconds)
        self._probe_lock = threading.Lock()
        self._kernel = kernel_backend()
        self.sources = Sources(
            "keepalived", table=self._table, backend=self._backend, health=self._health,
            vrrp=self._vrrp, scripts=self._scripts, dataplane=self._dataplane,
            reloads=self._reloads)
        self.observe = observe_op(self.sources)
        socket = settings.control_socket or default_socket_path()
        # raises MetricsError for a bad address or a port in use: the command line reports it
        self.server: ObservabilityServer | None = from_args(
            settings, self.sources, backend=lambda: ControlClient(socket),
            metrics_port=settings.metrics_port)
        if self.server is not None:
            self.server.start()

    # The instances report state changes and split brains here; the series read the routers
    # themselves at scrape time, so there is nothing to record.
    def state(self, name: str, state: State) -> None:
        pass

    def split_brain(self, name: str, active: bool) -> None:
        pass

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    # ---- sources -------------------------------------------------------------------------

    def _table(self) -> IPVSTable | None:
        lvs = self.daemon.lvs
        if lvs is None or lvs.director is None:
            return None
        table: IPVSTable = lvs.director.director.table
        return table

    def _backend(self) -> Any:
        lvs = self.daemon.lvs
        return self._kernel() if lvs is not None and lvs.director is None else None

    def _dataplane(self) -> Describable | None:
        lvs = self.daemon.lvs
        if lvs is None or lvs.director is None:
            return None
        plane: Describable | None = lvs.director.dataplane
        return plane

    def _reloads(self) -> ReloadCounts | None:
        done = getattr(self.daemon, "reloads", None)  # completed reloads, when the daemon counts
        if not isinstance(done, int):
            return None
        failed = getattr(self.daemon, "reload_failures", None)
        return ReloadCounts(done, failed if isinstance(failed, int) else None,
                            getattr(self.daemon, "last_reload_success", None))

    def _vrrp(self) -> dict[str, Any]:
        return dict(self.daemon.status())

    def _scripts(self) -> dict[str, bool]:
        return {name: st.ok for name, st in list(self.daemon.tracking.scripts.items())}

    def _health(self) -> HealthMap:
        lvs = self.daemon.lvs
        if lvs is None:
            return {}
        manager = lvs.health
        self._time_probes(manager)
        wall_minus_clock = time.time() - manager.clock()
        out: dict[Any, RealServerHealth] = {}
        for st in list(manager.states):
            for rs in list(st.servers):
                checkers = tuple(
                    CheckerView(
                        c.config.kind, c.config.where, c.up, c.last_result,
                        c.last_run + wall_minus_clock if c.last_run is not None else None,
                        c.failures, c.successes, self._duration(c.config))
                    for c in rs.checkers)
                view = RealServerHealth(st.config.name, rs.alive, checkers, rs.weight)
                for spec in st.config.services:
                    out[(spec.key, rs.config.name)] = view
        return out

    def _duration(self, config: Any) -> float | None:
        got = self.durations.get(id(config))
        return got[1] if got is not None and got[0] is config else None

    def _time_probes(self, manager: Any) -> None:
        """Time each probe the checkers run (once per manager): the latency series."""
        with self._probe_lock:
            probe = manager.probe
            if getattr(probe, "_pylvs_timed", False):
                return
            durations = self.durations

            @functools.wraps(probe)
            async def timed(config: Any) -> Any:
                t0 = time.monotonic()
                try:
                    return await probe(config)
                finally:
                    if len(durations) > 100_000:  # configs replaced by reloads
                        durations.clear()
                    durations[id(config)] = (config, time.monotonic() - t0)

            timed._pylvs_timed = True  # type: ignore[attr-defined]
            manager.probe = timed

