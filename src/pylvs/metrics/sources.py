"""What a daemon hands to the metrics, the status page and ``pylvs top``, and the one document they
share.

What this is for: the metrics sit beside the data planes and below the daemons, so they cannot
import the objects they report on. Each daemon passes small callables instead (the live table, the
health checkers' view, the VRRP status, the data plane's ``describe()``); everything here is read
when a scrape or a page asks, never copied in advance, so there is no second bookkeeping.

The status document (``build_document``) is the JSON of ``/status.json``, of the ``observe``
control operation that ``pylvs top`` reads, and what the HTML page is drawn from: one shape for
the three. Its fields are documented in README.md ("Observability").

Threads: the HTTP server reads from its own thread while the event loop changes the table. The
readers take ``list(...)`` copies of dicts and lists first (one C call under the GIL, so never a
half-changed container) and then read plain attributes, which is safe; a figure may be one
event-loop step older than its neighbour, as with a kernel's ``/proc`` read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pylvs.core.api import IPVSBackend, IPVSError, ServiceStatus
from pylvs.core.model import (
    ForwardingMethod,
    ServiceKey,
    format_addr_port,
)
from pylvs.core.model import (
    Protocol as IPProtocol,
)
from pylvs.core.stats import StatsSnapshot
from pylvs.core.table import IPVSTable

DOCUMENT_VERSION = 1


@dataclass(frozen=True, slots=True)
class CheckerView:
    """One health checker as the page and the metrics show it."""

    kind: str
    where: str
    up: bool
    last_result: str
    last_run: float | None  # wall-clock seconds, None before the first run
    failures: int = 0
    successes: int = 0
    last_duration: float | None = None  # seconds the last probe took, when the checker keeps it


@dataclass(frozen=True, slots=True)
class RealServerHealth:
    """A real server's health under the checkers of one virtual_server block."""

    virtual_server: str
    alive: bool
    checkers: tuple[CheckerView, ...] = ()
    weight: int | None = None  # the weight the checkers give it (shown when out of the table)


@dataclass(frozen=True, slots=True)
class ReloadCounts:
    """Configuration reloads as the daemon counted them. ``failed`` is None when the daemon
    counts only completed reloads, good or rejected (then no outcome is shown, none invented)."""

    completed: int = 0
    failed: int | None = None
    last_success: float | None = None  # wall-clock seconds


class Describable(Protocol):
    """A data plane: ``describe()`` is its JSON-able summary with its counters."""

    def describe(self) -> dict[str, Any]: ...


# (service key, "addr:port" of the real server) -> its health
HealthMap = Mapping[tuple[ServiceKey, str], RealServerHealth]


@dataclass(slots=True)
class Sources:
    """Everything a daemon can show. Each field is optional: a daemon without VRRP gives no
    ``vrrp``; one whose table is the kernel's gives ``backend`` (its own connection to the kernel,
    used from the HTTP thread) instead of ``table``."""

    daemon: str
    table: Callable[[], IPVSTable | None] | None = None
    backend: Callable[[], IPVSBackend | None] | None = None
    health: Callable[[], HealthMap] | None = None
    vrrp: Callable[[], Mapping[str, Any]] | None = None
    scripts: Callable[[], Mapping[str, bool]] | None = None
    dataplane: Callable[[], Describable | None] | None = None
    reloads: Callable[[], ReloadCounts | None] | None = None
    # pylvs http: its series already in Prometheus text (nginx-prometheus-exporter's exact names,
    # which prometheus_client would suffix with _total), written after the IPVS ones
    text: Callable[[], Iterator[str]] | None = None
    # pylvs scaleout: its announcer's status (what is announced and why, the BGP sessions)
    bgp: Callable[[], Mapping[str, Any]] | None = None
    started: float = field(default_factory=time.time)


def proto_name(key: ServiceKey) -> str:
    """The protocol column of ``/proc/net/ip_vs``: TCP, UDP, SCTP, or FWM for a mark."""
    if key.fwmark:
        return "FWM"
    try:
        return IPProtocol(key.protocol).name
    except ValueError:
        return str(key.protocol)


def service_labels(key: ServiceKey) -> tuple[str, str, str, str]:
    """local_address, local_port, proto, local_mark as node_exporter derives them from
    ``/proc/net/ip_vs``: a mark service has no address, port 0 and its mark in 8 hex digits."""
    if key.fwmark:
        return "", "0", "FWM", f"{key.fwmark:08X}"
    return str(key.addr), str(key.port), proto_name(key), ""


def iter_services(sources: Sources) -> Iterator[ServiceStatus]:
    """Every service with its real servers, as listed (counters and estimator rates)."""
    table = sources.table() if sources.table is not None else None
    if table is not None:
        for svc in list(table.services()):
            with contextlib.suppress(IPVSError):  # deleted since the copy was taken
                yield table.get_service(svc.key)
        return
    backend = sources.backend() if sources.backend is not None else None
    if backend is not None:
        yield from backend.get_services()


def stats_dict(s: StatsSnapshot) -> dict[str, int]:
    return {
        "conns": s.conns, "inpkts": s.inpkts, "outpkts": s.outpkts,
        "inbytes": s.inbytes, "outbytes": s.outbytes,
        "cps": s.cps, "inpps": s.inpps, "outpps": s.outpps, "inbps": s.inbps, "outbps": s.outbps,
    }


def _health_dict(h: RealServerHealth | None, weight: int) -> dict[str, Any]:
    if h is None:
        # no checker: the real server is in the table as configured
        return {"state": "drained" if weight == 0 else "unchecked", "virtual_server": None,
                "checkers": [], "last_result": None}
    state = "up" if h.alive else "down"
    if h.alive and weight == 0:
        state = "drained"
    last = max((c for c in h.checkers if c.last_run is not None), key=lambda c: c.last_run or 0.0,
               default=None)
    return {
        "state": state,
        "virtual_server": h.virtual_server,
        "last_result": last.last_result if last is not None else None,
        "checkers": [
            {"kind": c.kind, "where": c.where, "up": c.up, "last_result": c.last_result,
             "last_run": c.last_run, "failures": c.failures, "successes": c.successes,
             "last_duration": c.last_duration}
            for c in h.checkers
        ],
    }


def vrrp_section(sources: Sources) -> dict[str, Any] | None:
    """The VRRP instances (name, state, priorities, master, peers, split brain), or None."""
    if sources.vrrp is None:
        return None
    raw: Mapping[str, Any] = {}
    for _ in range(3):  # a reload may replace the instances while we read them
        try:
            raw = sources.vrrp()
            break
        except RuntimeError:
            continue
    instances = []
    for name, i in sorted(dict(raw.get("instances") or {}).items()):
        instances.append({
            "name": name,
            "state": i.get("state"),
            "vrid": i.get("vrid"),
            "interface": i.get("interface"),
            "priority": i.get("priority"),
            "effective_priority": i.get("effective_priority"),
            "master": i.get("master"),
            "peers": list(i.get("peers") or []),
            "vips": [str(v) for v in i.get("vips") or []],
            "faults": list(i.get("faults") or []),
            "split_brain": i.get("split_brain"),
        })
    return {
        "instances": instances,
        "split_brain": any(i["split_brain"] for i in instances),
        "arbitrator": raw.get("arbitrator"),
    }


def bgp_section(sources: Sources) -> dict[str, Any] | None:
    """What the scale-out announcer announces over BGP and why, and its sessions, or None."""
    if sources.bgp is None:
        return None
    raw = dict(sources.bgp())
    vips = dict(raw.get("vips") or {})
    return {
        "draining": bool(raw.get("draining")),
        "announced": list(raw.get("announced") or []),
        "vips": [{"prefix": p, "announced": bool(v.get("announce")), "reason": v.get("reason")}
                 for p, v in sorted(vips.items())],
        "neighbors": [{"address": n.get("address"), "remote_as": n.get("remote_as"),
                       "state": n.get("state"), "last_error": n.get("last_error") or ""}
                      for n in list(raw.get("neighbors") or [])],
    }


def build_document(sources: Sources) -> dict[str, Any]:
    """The status document: services and real servers with weights, counts, rates and health,
    VRRP instances and split brain, BGP announcements and sessions, data-plane counters."""
    health = sources.health() if sources.health is not None else {}
    # real servers the checkers took out of the table are still shown (down), as HAProxy does
    missing: dict[ServiceKey, list[tuple[str, RealServerHealth]]] = {}
    for (hkey, name), h in health.items():
        missing.setdefault(hkey, []).append((name, h))
    services = []
    for st in iter_services(sources):
        key = st.spec.key
        laddr, lport, proto, mark = service_labels(key)
        rss = []
        for d in st.dests:
            addr = format_addr_port(d.spec.addr, d.spec.port)
            rss.append({
                "address": str(d.spec.addr),
                "port": d.spec.port,
                "name": addr,
                "in_table": True,
                "forward": ForwardingMethod(d.spec.fwd).label,
                "weight": d.spec.weight,
                "active": d.activeconns,
                "inactive": d.inactconns,
                "persistent": d.persistconns,
                "stats": stats_dict(d.stats),
                "health": _health_dict(health.get((key, addr)), d.spec.weight),
            })
        listed = {r["name"] for r in rss}
        for name, h in sorted(missing.get(key, []), key=lambda t: t[0]):
            if name in listed:
                continue
            addr_text, _, port_text = name.rpartition(":")
            rss.append({
                "address": addr_text.strip("[]"),
                "port": int(port_text),
                "name": name,
                "in_table": False,
                "forward": "-",
                "weight": h.weight if h.weight is not None else 0,
                "active": 0, "inactive": 0, "persistent": 0,
                "stats": stats_dict(StatsSnapshot()),
                "health": _health_dict(h, h.weight if h.weight is not None else 0),
            })
        services.append({
            "name": str(key),
            "protocol": proto,
            "address": laddr,
            "port": int(lport),
            "fwmark": key.fwmark,
            "local_mark": mark,
            "scheduler": st.spec.scheduler,
            "persistent": st.spec.timeout if st.spec.persistent else 0,
            "stats": stats_dict(st.stats),
            "real_servers": rss,
        })
    plane = sources.dataplane() if sources.dataplane is not None else None
    return {
        "version": DOCUMENT_VERSION,
        "daemon": sources.daemon,
        "time": time.time(),
        "uptime": round(time.time() - sources.started, 1),
        "vrrp": vrrp_section(sources),
        "bgp": bgp_section(sources),
        "dataplane": plane.describe() if plane is not None else None,
        "services": services,
    }
