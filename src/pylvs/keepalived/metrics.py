"""Prometheus series of ``pylvs keepalived`` (``--metrics-port``): each instance's VRRP state and
its split-brain evidence.

Why a module of its own: the series are the daemon's only dependency on prometheus_client, which
is slow to import, so it is imported here and only when a port is given. Kept small on purpose:
one shared metrics module for every daemon is planned to replace it.
"""

from __future__ import annotations

from pylvs.vrrp.router import State


class Metrics:
    """State and split-brain series on their own registry (served only when a port is given)."""

    STATES = {State.INIT: 0, State.BACKUP: 1, State.MASTER: 2, State.FAULT: 3, State.STOP: 4}

    def __init__(self, port: int | None) -> None:
        self.enabled = bool(port)
        if not port:
            return  # prometheus_client is slow to import: only when metrics are served
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.g_state = Gauge("pylvs_vrrp_state", "VRRP state (0 init, 1 backup, 2 master, 3 fault, 4 stop)",
                             ["instance"], registry=self.registry)
        self.g_split = Gauge("pylvs_vrrp_split_brain", "1 while another master of our VRID is seen",
                             ["instance"], registry=self.registry)
        self.c_split = Counter("pylvs_vrrp_split_brain_events", "split brains detected",
                               ["instance"], registry=self.registry)
        start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def state(self, name: str, state: State) -> None:
        if not self.enabled:
            return
        self.g_state.labels(name).set(self.STATES[state])

    def split_brain(self, name: str, active: bool) -> None:
        if not self.enabled:
            return
        self.g_split.labels(name).set(1 if active else 0)
        if active:
            self.c_split.labels(name).inc()
