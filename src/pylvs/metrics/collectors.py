"""Prometheus collectors that read a daemon's live objects at scrape time.

What this is for: dashboards and alerts written for node_exporter's IPVS collector and for
keepalived-exporter work unchanged on a pylvs director, so those series carry exactly their names,
types, help strings and labels:
- node_exporter v1.12.0 (``collector/ipvs_linux.go``): the five ``node_ipvs_*_total`` counters of
  the whole table (``/proc/net/ip_vs_stats``) and the three ``node_ipvs_backend_*`` gauges per real
  server with ``local_address, local_port, remote_address, remote_port, proto, local_mark`` as
  procfs fills them from ``/proc/net/ip_vs`` (a fwmark service: empty address, port 0, proto
  ``FWM``, the mark in 8 hex digits);
- mehdy/keepalived-exporter v1.7.1 (``internal/collector/collector.go``): ``keepalived_up``,
  ``keepalived_vrrp_state`` per VIP (0 INIT, 1 BACKUP, 2 MASTER, 3 FAULT) and the per-instance
  advert/transition/error counters with ``iname, intf, vrid``, ``keepalived_script_status``
  (0 BAD, 1 GOOD).
pylvs's own series (``pylvs_*``) add what neither has: split brain, per-service traffic, health
checkers per real server (with the backend labels, so they join with ``node_ipvs_backend_weight``),
the data plane's counters, configuration reloads, and (``pylvs scaleout``) the VIPs announced over
BGP and the sessions' states.

Nothing is counted here: each ``collect()`` reads the counters the core, the checkers, the VRRP
routers and the data plane already keep. ``prometheus_client`` is imported only by this module,
which the daemons load only when metrics are served (it is slow to import).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from pylvs.metrics.sources import Sources, bgp_section, iter_services, service_labels

BACKEND_LABELS = ["local_address", "local_port", "remote_address", "remote_port", "proto",
                  "local_mark"]
SERVICE_LABELS = ["local_address", "local_port", "proto", "local_mark"]
# node_exporter's names (counters without the _total the exposition adds) and help strings
TOTALS = (
    ("node_ipvs_connections", "The total number of connections made."),
    ("node_ipvs_incoming_packets", "The total number of incoming packets."),
    ("node_ipvs_outgoing_packets", "The total number of outgoing packets."),
    ("node_ipvs_incoming_bytes", "The total amount of incoming data."),
    ("node_ipvs_outgoing_bytes", "The total amount of outgoing data."),
)
BACKEND_GAUGES = (
    ("node_ipvs_backend_connections_active",
     "The current active connections by local and remote address."),
    ("node_ipvs_backend_connections_inactive",
     "The current inactive connections by local and remote address."),
    ("node_ipvs_backend_weight", "The current backend weight by local and remote address."),
)
SERVICE_COUNTERS = (
    ("pylvs_ipvs_service_connections", "connections scheduled by this virtual service"),
    ("pylvs_ipvs_service_incoming_packets", "packets from clients to this virtual service"),
    ("pylvs_ipvs_service_outgoing_packets", "packets from real servers back to the clients"),
    ("pylvs_ipvs_service_incoming_bytes", "bytes from clients to this virtual service"),
    ("pylvs_ipvs_service_outgoing_bytes", "bytes from real servers back to the clients"),
)
KEEPALIVED_LABELS = ["iname", "intf", "vrid"]
# keepalived-exporter's VRRPStates; pylvs's STOP has no number there and is left out
KEEPALIVED_STATES = {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3}
# pylvs_vrrp_state, as `pylvs keepalived --metrics-port` always numbered it
PYLVS_STATES = {"INIT": 0, "BACKUP": 1, "MASTER": 2, "FAULT": 3, "STOP": 4}
# (pylvs Stats field, keepalived-exporter name without _total, its help string)
KEEPALIVED_COUNTERS = (
    ("advert_rcvd", "keepalived_advertisements_received", "Advertisements received"),
    ("advert_sent", "keepalived_advertisements_sent", "Advertisements sent"),
    ("become_master", "keepalived_become_master", "Became master"),
    ("release_master", "keepalived_release_master", "Released master"),
    ("packet_len_err", "keepalived_packet_length_errors", "Packet length errors"),
    ("advert_interval_err", "keepalived_advertisements_interval_errors",
     "Advertisement interval errors"),
    ("ip_ttl_err", "keepalived_ip_ttl_errors", "TTL errors"),
    ("invalid_type_rcvd", "keepalived_invalid_type_received", "Invalid type errors"),
    ("addr_list_err", "keepalived_address_list_errors", "Address list errors"),
    ("invalid_authtype", "keepalived_authentication_invalid", "Authentication invalid"),
    ("authtype_mismatch", "keepalived_authentication_mismatch", "Authentication mismatch"),
    ("auth_failure", "keepalived_authentication_failure", "Authentication failure"),
    ("pri_zero_rcvd", "keepalived_priority_zero_received", "Priority zero received"),
    ("pri_zero_sent", "keepalived_priority_zero_sent", "Priority zero sent"),
)
# data-plane describe() keys -> (metric, help, counter?); only keys the plane reports are shown
PROXY_COUNTERS = (
    ("tcp_relays", "pylvs_proxy_tcp_relays", "TCP relays open now", False),
    ("udp_flows", "pylvs_proxy_udp_flows", "UDP flows open now", False),
    ("accepted", "pylvs_proxy_accepted", "client connections accepted", True),
    ("refused", "pylvs_proxy_refused", "client connections refused (no real server, or limits)",
     True),
    ("connect_failures", "pylvs_proxy_connect_failures",
     "connections to a real server that failed or timed out", True),
    ("retried", "pylvs_proxy_retried", "connections retried on another real server", True),
    ("udp_dropped", "pylvs_proxy_udp_dropped", "UDP datagrams dropped", True),
    ("spliced", "pylvs_proxy_spliced", "relays moved to splice(2)", True),
    ("offloaded", "pylvs_proxy_offloaded", "relays handed to the in-kernel relay", True),
)
PACKET_COUNTERS = (
    ("forwarded", "pylvs_packet_forwarded", "frames forwarded (Python path and C fast path)"),
    ("rx_frames", "pylvs_packet_rx_frames", "frames read from the rings"),
    ("tx_frames", "pylvs_packet_tx_frames", "frames sent"),
    ("tx_errors", "pylvs_packet_tx_errors", "frames that could not be sent"),
    ("rx_ring_drops", "pylvs_packet_rx_ring_drops", "frames the kernel dropped, ring full"),
    ("arp_replies", "pylvs_packet_arp_replies", "ARP replies sent for VIPs"),
    ("icmp_forwarded", "pylvs_packet_icmp_forwarded", "ICMP errors forwarded to real servers"),
)


def _vip_address(vip: str) -> str:
    """keepalived-exporter's ip_address label: the address as keepalived's data dump shows it
    (no /32 or /128 on a host address)."""
    addr, _, prefix = vip.partition("/")
    return addr if prefix in ("", "32", "128") else vip


# (remote_address, remote_port, active, inactive, weight)
DestRow = tuple[str, str, int, int, int]
# ([local_address, local_port, proto, local_mark], the service's five counters, its real servers)
ServiceRow = tuple[list[str], tuple[int, int, int, int, int], list[DestRow]]

# packed address -> its text: str(IPv4Address) is the dearest step of a large scrape and real
# servers change rarely; bounded so a churning table cannot grow it without end
_ADDR_TEXT: dict[bytes, str] = {}
_ADDR_TEXT_MAX = 1 << 20


def _addr_text(packed: bytes, addr: object) -> str:
    text = _ADDR_TEXT.get(packed)
    if text is None:
        if len(_ADDR_TEXT) >= _ADDR_TEXT_MAX:
            _ADDR_TEXT.clear()
        text = _ADDR_TEXT[packed] = str(addr)
    return text


def ipvs_rows(sources: Sources) -> Iterator[ServiceRow]:
    """Per service: its labels, its five counters, and per real server its address and port as
    node_exporter labels them, active and inactive connections and weight. The live table is
    read directly (no snapshot objects for 100,000 real servers); a kernel table through its
    backend."""
    table = sources.table() if sources.table is not None else None
    if table is not None:
        for svc in list(table.services()):
            s = svc.stats
            yield (list(service_labels(svc.key)),
                   (s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes),
                   [(_addr_text(d.addr_packed, d.addr), str(d.port), d.activeconns,
                     d.inactconns, d.weight)
                    for d in list(svc.destinations)])
        return
    for st in iter_services(sources):
        ss = st.stats
        yield (list(service_labels(st.spec.key)),
               (ss.conns, ss.inpkts, ss.outpkts, ss.inbytes, ss.outbytes),
               [(str(ds.spec.addr), str(ds.spec.port), ds.activeconns, ds.inactconns,
                 ds.spec.weight)
                for ds in st.dests])


def ipvs_totals(sources: Sources) -> tuple[int, int, int, int, int] | None:
    """The whole table's counters (``/proc/net/ip_vs_stats``), None without a table."""
    table = sources.table() if sources.table is not None else None
    if table is not None:
        t = table.total
        return t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes
    if sources.backend is None or sources.backend() is None:
        return None
    # a kernel table: the sum of its services' (what /proc/net/ip_vs_stats adds up, less the
    # traffic of services deleted since)
    c = [0, 0, 0, 0, 0]
    for st in iter_services(sources):
        s = st.stats
        for i, v in enumerate((s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes)):
            c[i] += v
    return c[0], c[1], c[2], c[3], c[4]


class IPVSCollector(Collector):
    """node_exporter's IPVS series plus pylvs's per-service traffic counters."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        total = ipvs_totals(self.sources)
        if total is not None:
            for (name, help_text), value in zip(TOTALS, total, strict=True):
                yield CounterMetricFamily(name, help_text, value=value)
        backend = [GaugeMetricFamily(n, h, labels=BACKEND_LABELS) for n, h in BACKEND_GAUGES]
        services = [CounterMetricFamily(n, h, labels=SERVICE_LABELS) for n, h in SERVICE_COUNTERS]
        # node_exporter sums real servers that share a label set; in one table they cannot
        for svc_labels, svc_counts, dests in ipvs_rows(self.sources):
            for fam, v in zip(services, svc_counts, strict=True):
                fam.add_metric(svc_labels, v)
            laddr, lport, proto, mark = svc_labels
            for raddr, rport, act, inact, w in dests:
                labels = [laddr, lport, raddr, rport, proto, mark]
                backend[0].add_metric(labels, act)
                backend[1].add_metric(labels, inact)
                backend[2].add_metric(labels, w)
        yield from backend
        yield from services


class KeepalivedCollector(Collector):
    """keepalived-exporter's VRRP series, and pylvs's state and split-brain series."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        if self.sources.vrrp is None:
            return
        raw: Mapping[str, Any] = {}
        up = 0
        for _ in range(3):
            try:
                raw = self.sources.vrrp()
                up = 1
                break
            except RuntimeError:  # instances replaced by a reload while read
                continue
        yield GaugeMetricFamily("keepalived_up", "Status", value=up)
        state = GaugeMetricFamily("keepalived_vrrp_state", "State of vrrp",
                                  labels=[*KEEPALIVED_LABELS, "ip_address"])
        counters = [CounterMetricFamily(n, h, labels=KEEPALIVED_LABELS)
                    for _f, n, h in KEEPALIVED_COUNTERS]
        p_state = GaugeMetricFamily(
            "pylvs_vrrp_state", "VRRP state (0 init, 1 backup, 2 master, 3 fault, 4 stop)",
            labels=["instance"])
        p_split = GaugeMetricFamily(
            "pylvs_vrrp_split_brain", "1 while another master of our VRID is seen",
            labels=["instance"])
        p_events = CounterMetricFamily("pylvs_vrrp_split_brain_events", "split brains detected",
                                       labels=["instance"])
        p_prio = GaugeMetricFamily("pylvs_vrrp_effective_priority",
                                   "priority after tracking weights", labels=["instance"])
        for name, inst in sorted(dict(raw.get("instances") or {}).items()):
            labels = [name, str(inst.get("interface") or ""), str(inst.get("vrid"))]
            st = str(inst.get("state"))
            if st in KEEPALIVED_STATES:
                vips = [str(v) for v in inst.get("vips") or []]
                for vip in vips or [""]:
                    state.add_metric([*labels, _vip_address(vip)], KEEPALIVED_STATES[st])
            stats = inst.get("stats") or {}
            for fam, (field_name, _n, _h) in zip(counters, KEEPALIVED_COUNTERS, strict=True):
                fam.add_metric(labels, int(stats.get(field_name, 0)))
            if st in PYLVS_STATES:
                p_state.add_metric([name], PYLVS_STATES[st])
            p_split.add_metric([name], 1 if inst.get("split_brain") else 0)
            p_events.add_metric([name], int(stats.get("split_brain", 0)))
            if inst.get("effective_priority") is not None:
                p_prio.add_metric([name], int(inst["effective_priority"]))
        yield state
        yield from counters
        yield p_state
        yield p_split
        yield p_events
        yield p_prio
        if self.sources.scripts is not None:
            scripts = GaugeMetricFamily("keepalived_script_status", "Tracker Script Status",
                                        labels=["name"])
            for sname, good in sorted(self.sources.scripts().items()):
                scripts.add_metric([sname], 1 if good else 0)
            yield scripts


class PylvsCollector(Collector):
    """Health checkers per real server, the data plane's counters, configuration reloads, BGP."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._health()
        yield from self._dataplane()
        yield from self._bgp()
        r = self.sources.reloads() if self.sources.reloads is not None else None
        if r is not None:
            yield CounterMetricFamily("pylvs_config_reloads",
                                      "configuration reloads completed (applied or rejected)",
                                      value=r.completed)
            if r.failed is not None:
                yield CounterMetricFamily("pylvs_config_reload_failures",
                                          "configuration reloads rejected (the running one stays)",
                                          value=r.failed)
            if r.last_success is not None:
                yield GaugeMetricFamily(
                    "pylvs_config_last_reload_success_timestamp_seconds",
                    "when the configuration was last loaded or reloaded successfully",
                    value=r.last_success)

    def _health(self) -> Iterator[Metric]:
        if self.sources.health is None:
            return
        health = self.sources.health()
        labels = [*BACKEND_LABELS, "virtual_server"]
        rs_up = GaugeMetricFamily("pylvs_health_real_server_up",
                                  "1 while every checker of the real server passes",
                                  labels=labels)
        chk_labels = [*labels, "kind", "checker"]
        chk_up = GaugeMetricFamily("pylvs_health_checker_up", "1 while the checker passes",
                                   labels=chk_labels)
        chk_runs = CounterMetricFamily("pylvs_health_checks", "checks run, by result",
                                       labels=[*chk_labels, "result"])
        chk_last = GaugeMetricFamily("pylvs_health_check_last_run_timestamp_seconds",
                                     "when the checker last ran", labels=chk_labels)
        chk_dur = GaugeMetricFamily("pylvs_health_check_duration_seconds",
                                    "how long the checker's last check took", labels=chk_labels)
        for (key, rs_name), h in health.items():
            laddr, lport, proto, mark = service_labels(key)
            raddr, _, rport = rs_name.rpartition(":")
            base = [laddr, lport, raddr.strip("[]"), rport, proto, mark, h.virtual_server]
            rs_up.add_metric(base, 1 if h.alive else 0)
            for c in h.checkers:
                cl = [*base, c.kind, c.where]
                chk_up.add_metric(cl, 1 if c.up else 0)
                chk_runs.add_metric([*cl, "success"], c.successes)
                chk_runs.add_metric([*cl, "failure"], c.failures)
                if c.last_run is not None:
                    chk_last.add_metric(cl, c.last_run)
                if c.last_duration is not None:
                    chk_dur.add_metric(cl, c.last_duration)
        yield rs_up
        yield chk_up
        yield chk_runs
        yield chk_last
        yield chk_dur

    def _dataplane(self) -> Iterator[Metric]:
        plane = self.sources.dataplane() if self.sources.dataplane is not None else None
        if plane is None:
            return
        d = plane.describe()
        name = str(d.get("name", ""))
        info = GaugeMetricFamily("pylvs_dataplane_info", "the data plane forwarding the traffic",
                                 labels=["dataplane"])
        info.add_metric([name], 1)
        yield info
        if name == "proxy":
            counters = d.get("counters") or {}
            for k, metric, help_text, is_counter in PROXY_COUNTERS:
                if k not in counters:
                    continue
                fam: Metric = (CounterMetricFamily(metric, help_text, value=counters[k])
                               if is_counter else GaugeMetricFamily(metric, help_text,
                                                                   value=counters[k]))
                yield fam
        elif name == "packet":
            for k, metric, help_text in PACKET_COUNTERS:
                if k in d:
                    yield CounterMetricFamily(metric, help_text, value=d[k])
            drops = CounterMetricFamily("pylvs_packet_drops", "frames dropped, by reason",
                                        labels=["reason"])
            for reason, n in sorted((d.get("drops") or {}).items()):
                drops.add_metric([str(reason)], n)
            yield drops
        elif name == "kernel" and "requests_sent" in d:
            yield CounterMetricFamily("pylvs_kernel_requests", "netlink requests sent to IPVS",
                                      value=d["requests_sent"])


    def _bgp(self) -> Iterator[Metric]:
        """pylvs scaleout: each VIP announced or not, each BGP session's state."""
        b = bgp_section(self.sources)
        if b is None:
            return
        announced = GaugeMetricFamily("pylvs_bgp_announced",
                                      "1 while this director announces the VIP over BGP",
                                      labels=["vip"])
        for v in b["vips"]:
            announced.add_metric([v["prefix"]], 1 if v["announced"] else 0)
        yield announced
        yield GaugeMetricFamily("pylvs_bgp_draining",
                                "1 while the announcer is drained (every VIP withdrawn)",
                                value=1 if b["draining"] else 0)
        up = GaugeMetricFamily("pylvs_bgp_session_up", "1 while the BGP session is Established",
                               labels=["neighbor", "remote_as"])
        state = GaugeMetricFamily("pylvs_bgp_session_state",
                                  "the BGP session's state (1 on the current one)",
                                  labels=["neighbor", "remote_as", "state"])
        for n in b["neighbors"]:
            labels = [str(n["address"]), str(n["remote_as"])]
            up.add_metric(labels, 1 if n["state"] == "Established" else 0)
            state.add_metric([*labels, str(n["state"])], 1)
        yield up
        yield state


def registry_for(sources: Sources) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) with the three collectors."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IPVSCollector(sources))
    reg.register(KeepalivedCollector(sources))
    reg.register(PylvsCollector(sources))
    return reg

