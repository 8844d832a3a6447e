"""virtual_routes in a vrrp_instance, read with ip route's words; bad lines are errors at their line."""

from __future__ import annotations

from pylvs.config import keepalived as K

CONF = """
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.1.1.1/24
    }
    virtual_routes {
        src 10.1.1.1 to 10.9.0.0/24 via 10.1.1.254 dev eth1 metric 5 table 100
        default gw 10.1.1.253
        unreachable 10.8.0.0/16
        %s
    }
}
"""


def test_routes_are_read_with_ip_route_words() -> None:
    cfg = K.parse_text(CONF % "2001:db8::/64 dev eth0", "r.conf")
    assert cfg.diagnostics == ()
    r1, r2, r3, r4 = cfg.vrrp_instances[0].virtual_routes
    assert (r1.dst, r1.src, r1.via, r1.dev, r1.metric, r1.table) == (
        "10.9.0.0/24", "10.1.1.1", "10.1.1.254", "eth1", 5, 100)
    assert (r2.dst, r2.via) == ("default", "10.1.1.253")
    assert (r3.kind, r3.dst) == ("unreachable", "10.8.0.0/16")
    assert (r4.dst, r4.dev, r4.line) == ("2001:db8::/64", "eth0", 12)


def test_bad_route_lines_are_reported_at_their_line_and_left_out() -> None:
    # keepalived logs such a line and runs without it; so does pylvs, with a warning
    for bad, why in (("10.7.0.0/99", "invalid destination"), ("10.7.0.0/24 via nowhere", "invalid IP"),
                     ("10.7.0.0/24 frobnicate", "unknown word 'frobnicate'"),
                     ("via 10.1.1.1", "needs a destination"), ("10.7.0.0/24 or 10.1.1.2", "without a first"),
                     ("10.7.0.0/24 metric x", "invalid metric")):
        cfg = K.parse_text(CONF % bad, "r.conf")
        (d,) = cfg.diagnostics
        assert (d.line, d.severity) == (12, "warning") and why in d.message, (bad, d)
        assert d.message.endswith("this line is ignored")
        assert len(cfg.vrrp_instances[0].virtual_routes) == 3


def test_multipath_and_unsupported_options() -> None:
    cfg = K.parse_text(CONF % "10.6.0.0/24 via 10.1.1.1 or 10.1.1.2 dev eth0 mtu 1400 no_track",
                       "r.conf", strict=False)
    r = cfg.vrrp_instances[0].virtual_routes[-1]
    assert (r.via, r.alt_via, r.dev) == ("10.1.1.1", ("10.1.1.2",), "eth0")
    assert [(d.severity, d.line) for d in cfg.diagnostics] == [("warning", 12)]
    assert "'mtu' is not supported" in cfg.diagnostics[0].message


def test_rules_are_read_with_ip_rule_words() -> None:
    text = CONF.replace("    virtual_routes {", """    virtual_rules {
        from 10.2.0.0/16 to 10.3.0.0/24 table 100 preference 50 fwmark 0x10/0xff iif eth1
        to 2001:db8::/64 lookup main
        from 10.2.0.0/16 priority 7
    }
    virtual_routes {""") % "10.6.0.0/24 dev eth0"
    cfg = K.parse_text(text, "r.conf", strict=False)
    r1, r2 = cfg.vrrp_instances[0].virtual_rules
    assert (r1.src, r1.dst, r1.table, r1.priority, r1.fwmark, r1.fwmask, r1.iif) == (
        "10.2.0.0/16", "10.3.0.0/24", 100, 50, 16, 255, "eth1")
    assert (r2.dst, r2.table) == ("2001:db8::/64", 254)
    assert [d.message for d in cfg.diagnostics] == [
        "virtual_rules: a rule needs a table; this line is ignored"]


def test_use_vmac_with_and_without_a_name() -> None:
    base = CONF % "10.6.0.0/24 dev eth0"
    cfg = K.parse_text(base.replace("    interface eth0\n", "    interface eth0\n    use_vmac\n"), "v.conf")
    assert cfg.vrrp_instances[0].vmac == "vrrp.51" and not cfg.vrrp_instances[0].vmac_xmit_base
    cfg = K.parse_text(base.replace("    interface eth0\n",
                                    "    interface eth0\n    use_vmac vrrp51\n    vmac_xmit_base\n"), "v.conf")
    assert cfg.vrrp_instances[0].vmac == "vrrp51" and cfg.vrrp_instances[0].vmac_xmit_base
    assert cfg.diagnostics == ()
    assert K.parse_text(base, "v.conf").vrrp_instances[0].vmac is None
