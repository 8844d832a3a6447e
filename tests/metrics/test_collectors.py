"""The collectors against a real in-memory table, checked sample by sample with prometheus's own
text parser: node_exporter's and keepalived-exporter's names, types, labels and help strings."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceKey,
    ServiceSpec,
    parse_address,
)
from pylvs.core.table import IPVSTable
from pylvs.metrics.collectors import IPVSCollector
from pylvs.metrics.exposition import Exposition, render_ipvs
from pylvs.metrics.sources import (
    CheckerView,
    RealServerHealth,
    ReloadCounts,
    Sources,
    build_document,
)

TCP = ServiceKey.inet(Protocol.TCP, "10.0.0.1", 80)
FWM = ServiceKey.mark(7)
V6 = ServiceKey.inet(Protocol.UDP, "2001:db8::1", 53)


def _table() -> IPVSTable:
    t = IPVSTable()
    t.add_service(ServiceSpec(TCP, "wrr"))
    t.add_dest(TCP, DestSpec(parse_address("10.0.1.1"), 8080, ForwardingMethod.MASQ, 3))
    t.add_dest(TCP, DestSpec(parse_address("10.0.1.2"), 8080, ForwardingMethod.MASQ, 0))
    t.add_service(ServiceSpec(FWM))
    t.add_dest(FWM, DestSpec(parse_address("10.0.2.1"), 0, ForwardingMethod.DROUTE, 5))
    t.add_service(ServiceSpec(V6))
    t.add_dest(V6, DestSpec(parse_address("2001:db8::10"), 53, ForwardingMethod.MASQ, 1))
    svc = t.lookup(TCP)
    assert svc is not None
    rs = svc.find_dest(parse_address("10.0.1.1"), 8080)
    assert rs is not None
    rs.activeconns, rs.inactconns = 4, 2
    svc.stats.conns, svc.stats.inpkts, svc.stats.outbytes = 9, 77, 12_345_678
    t.total.conns, t.total.inpkts, t.total.outpkts = 11, 100, 90
    t.total.inbytes, t.total.outbytes = 5000, 12_345_678
    return t


def _parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(fam: Any, **labels: str) -> float:
    for s in fam.samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {labels} in {fam.name}")


def test_node_exporter_names_types_labels_and_values() -> None:
    t = _table()
    text = Exposition(Sources("pylvsd", table=lambda: t)).render().decode()
    fams = _parse(text)
    # counters lose _total in the parser's family name, as for node_exporter's output
    for name in ("node_ipvs_connections", "node_ipvs_incoming_packets",
                 "node_ipvs_outgoing_packets", "node_ipvs_incoming_bytes",
                 "node_ipvs_outgoing_bytes"):
        assert fams[name].type == "counter"
        assert f"# TYPE {name}_total counter" in text
    assert _value(fams["node_ipvs_connections"]) == 11
    assert _value(fams["node_ipvs_outgoing_bytes"]) == 12_345_678
    assert "# HELP node_ipvs_connections_total The total number of connections made." in text
    assert ("# HELP node_ipvs_backend_weight The current backend weight by local and remote "
            "address.") in text
    for name in ("node_ipvs_backend_connections_active", "node_ipvs_backend_connections_inactive",
                 "node_ipvs_backend_weight"):
        fam = fams[name]
        assert fam.type == "gauge"
        for s in fam.samples:
            assert set(s.labels) == {"local_address", "local_port", "remote_address",
                                     "remote_port", "proto", "local_mark"}
        assert len(fam.samples) == 4
    rs1 = {"local_address": "10.0.0.1", "local_port": "80", "remote_address": "10.0.1.1",
           "remote_port": "8080", "proto": "TCP", "local_mark": ""}
    assert _value(fams["node_ipvs_backend_connections_active"], **rs1) == 4
    assert _value(fams["node_ipvs_backend_connections_inactive"], **rs1) == 2
    assert _value(fams["node_ipvs_backend_weight"], **rs1) == 3
    assert _value(fams["node_ipvs_backend_weight"], remote_address="10.0.1.2") == 0
    # a fwmark service as procfs reads /proc/net/ip_vs: no address, port 0, FWM, 8 hex digits
    fwm = {"local_address": "", "local_port": "0", "proto": "FWM", "local_mark": "00000007",
           "remote_address": "10.0.2.1", "remote_port": "0"}
    assert _value(fams["node_ipvs_backend_weight"], **fwm) == 5
    assert _value(fams["node_ipvs_backend_weight"], local_address="2001:db8::1",
                  remote_address="2001:db8::10", proto="UDP") == 1
    assert _value(fams["pylvs_ipvs_service_connections"], local_address="10.0.0.1") == 9
    assert _value(fams["pylvs_ipvs_service_outgoing_bytes"], local_address="10.0.0.1") == 12_345_678


def test_fast_writer_writes_what_prometheus_client_writes() -> None:
    t = _table()
    src = Sources("pylvsd", table=lambda: t)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(IPVSCollector(src))
    assert render_ipvs(src) == generate_latest(reg).decode()
    # the backend path (a kernel table) gives the same series from listed services
    src2 = Sources("pylvsd", backend=lambda: t)
    reg2 = CollectorRegistry(auto_describe=False)
    reg2.register(IPVSCollector(src2))
    assert render_ipvs(src2) == generate_latest(reg2).decode()
    assert "node_ipvs_backend_weight" in render_ipvs(src2)


def test_table_changes_show_at_the_next_scrape() -> None:
    t = _table()
    exp = Exposition(Sources("pylvsd", table=lambda: t))
    t.edit_dest(TCP, DestSpec(parse_address("10.0.1.1"), 8080, ForwardingMethod.MASQ, 9))
    t.del_service(FWM)
    fams = _parse(exp.render().decode())
    assert _value(fams["node_ipvs_backend_weight"], remote_address="10.0.1.1") == 9
    assert all(s.labels["proto"] != "FWM" for s in fams["node_ipvs_backend_weight"].samples)


def _vrrp_status() -> dict[str, Any]:
    stats = {"advert_rcvd": 5, "advert_sent": 40, "become_master": 2, "release_master": 1,
             "auth_failure": 3, "split_brain": 1}
    return {"instances": {
        "VI_1": {"state": "MASTER", "vrid": 51, "interface": "eth0", "priority": 150,
                 "effective_priority": 140, "master": "192.168.168.50",
                 "vips": ["192.168.168.100/32", "10.1.0.1/24"],
                 "split_brain": "192.168.168.51", "stats": stats},
        "VI_2": {"state": "STOP", "vrid": 52, "interface": "eth1", "priority": 100,
                 "effective_priority": 100, "master": None, "vips": [], "split_brain": None,
                 "stats": {}},
    }, "arbitrator": None}


def test_keepalived_exporter_series() -> None:
    src = Sources("keepalived", vrrp=_vrrp_status, scripts=lambda: {"chk_nginx": True,
                                                                     "chk_db": False})
    text = Exposition(src).render().decode()
    fams = _parse(text)
    assert _value(fams["keepalived_up"]) == 1
    state = fams["keepalived_vrrp_state"]
    assert {s.labels["ip_address"] for s in state.samples} == {"192.168.168.100", "10.1.0.1/24"}
    assert all(s.labels == {**s.labels, "iname": "VI_1", "intf": "eth0", "vrid": "51"}
               for s in state.samples)
    assert _value(state, ip_address="192.168.168.100") == 2  # MASTER
    assert "# HELP keepalived_vrrp_state State of vrrp" in text
    lab = {"iname": "VI_1", "intf": "eth0", "vrid": "51"}
    assert _value(fams["keepalived_advertisements_received"], **lab) == 5
    assert _value(fams["keepalived_advertisements_sent"], **lab) == 40
    assert _value(fams["keepalived_become_master"], **lab) == 2
    assert _value(fams["keepalived_release_master"], **lab) == 1
    assert _value(fams["keepalived_authentication_failure"], **lab) == 3
    assert "# TYPE keepalived_advertisements_received_total counter" in text
    assert _value(fams["keepalived_script_status"], name="chk_nginx") == 1
    assert _value(fams["keepalived_script_status"], name="chk_db") == 0
    # pylvs's own: the three series --metrics-port always had, plus the effective priority
    assert _value(fams["pylvs_vrrp_state"], instance="VI_1") == 2
    assert _value(fams["pylvs_vrrp_state"], instance="VI_2") == 4
    assert _value(fams["pylvs_vrrp_split_brain"], instance="VI_1") == 1
    assert _value(fams["pylvs_vrrp_split_brain"], instance="VI_2") == 0
    assert _value(fams["pylvs_vrrp_split_brain_events"], instance="VI_1") == 1
    assert _value(fams["pylvs_vrrp_effective_priority"], instance="VI_1") == 140


def _health() -> dict[Any, RealServerHealth]:
    chk = CheckerView("HTTP_GET", "k.conf:12", False, "HTTP status 503", 1700000000.0,
                      failures=4, successes=10, last_duration=0.012)
    return {(TCP, "10.0.1.1:8080"): RealServerHealth("10.0.0.1 80", False, (chk,))}


class _Plane:
    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def describe(self) -> dict[str, Any]:
        return self.d


def test_health_dataplane_and_reload_series() -> None:
    t = _table()
    packet = _Plane({"name": "packet", "forwarded": 1000, "rx_frames": 1200, "tx_frames": 990,
                     "tx_errors": 1, "rx_ring_drops": 2, "drops": {"fragment": 3, "no_route": 4}})
    src = Sources("keepalived", table=lambda: t, health=_health, dataplane=lambda: packet,
                  reloads=lambda: ReloadCounts(4, 1, 1700000100.0))
    fams = _parse(Exposition(src).render().decode())
    lab = {"remote_address": "10.0.1.1", "remote_port": "8080", "local_address": "10.0.0.1",
           "proto": "TCP", "virtual_server": "10.0.0.1 80"}
    assert _value(fams["pylvs_health_real_server_up"], **lab) == 0
    assert _value(fams["pylvs_health_checker_up"], kind="HTTP_GET", checker="k.conf:12") == 0
    assert _value(fams["pylvs_health_checks"], result="success") == 10
    assert _value(fams["pylvs_health_checks"], result="failure") == 4
    assert _value(fams["pylvs_health_check_duration_seconds"], **lab) == 0.012
    assert _value(fams["pylvs_packet_drops"], reason="fragment") == 3
    assert _value(fams["pylvs_packet_drops"], reason="no_route") == 4
    assert _value(fams["pylvs_packet_forwarded"]) == 1000
    assert _value(fams["pylvs_config_reloads"]) == 4
    assert _value(fams["pylvs_config_reload_failures"]) == 1
    assert _value(fams["pylvs_config_last_reload_success_timestamp_seconds"]) == 1700000100.0
    proxy = _Plane({"name": "proxy", "counters": {"tcp_relays": 2, "accepted": 9, "refused": 1,
                                                  "connect_failures": 5}})
    src.dataplane = lambda: proxy
    fams = _parse(Exposition(src).render().decode())
    assert _value(fams["pylvs_proxy_tcp_relays"]) == 2
    assert fams["pylvs_proxy_tcp_relays"].type == "gauge"
    assert _value(fams["pylvs_proxy_refused"]) == 1
    assert _value(fams["pylvs_proxy_connect_failures"]) == 5
    assert "pylvs_proxy_spliced" not in fams  # not reported by the plane: not invented


def test_document_has_health_weights_and_vrrp() -> None:
    t = _table()
    doc = build_document(Sources("keepalived", table=lambda: t, health=_health,
                                 vrrp=_vrrp_status))
    svc = next(s for s in doc["services"] if s["name"] == "TCP 10.0.0.1:80")
    rs = {r["name"]: r for r in svc["real_servers"]}
    assert rs["10.0.1.1:8080"]["health"]["state"] == "down"
    assert rs["10.0.1.1:8080"]["health"]["last_result"] == "HTTP status 503"
    assert rs["10.0.1.1:8080"]["active"] == 4
    assert rs["10.0.1.2:8080"]["health"]["state"] == "drained"  # weight 0, no checker
    assert svc["stats"]["conns"] == 9
    assert doc["vrrp"]["split_brain"] is True
    assert doc["vrrp"]["instances"][0]["name"] == "VI_1"
    fwm = next(s for s in doc["services"] if s["protocol"] == "FWM")
    assert fwm["fwmark"] == 7 and fwm["real_servers"][0]["health"]["state"] == "unchecked"
