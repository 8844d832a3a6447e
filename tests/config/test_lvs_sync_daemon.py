"""keepalived's lvs_sync_daemon line, as global_defs reads it."""

from __future__ import annotations

from pylvs.config import keepalived as K


def test_lvs_sync_daemon_is_read_with_its_options() -> None:
    text = """
global_defs {
    lvs_sync_daemon eth1 VI_1 id 12 maxlen 1400 port 8849 ttl 2 group 224.0.0.82
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.1.1.1/24
    }
}
"""
    cfg = K.parse_text(text, "s.conf")
    assert cfg.global_defs.lvs_sync_daemon == K.LVSSyncDaemon(
        "eth1", "VI_1", 12, 1400, 8849, 2, "224.0.0.82")
    assert cfg.diagnostics == ()
    bad = K.parse_text(text.replace("id 12", "id 300").replace("VI_1 id", "VI_9 id"), "b.conf",
                       strict=False)
    assert any("invalid id '300'" in d.message for d in bad.diagnostics)


def test_old_lvs_sync_daemon_interface_in_an_instance_still_works() -> None:
    text = """
vrrp_instance VI_1 {
    interface eth0
    lvs_sync_daemon_interface eth1
    virtual_router_id 51
    virtual_ipaddress {
        10.1.1.1/24
    }
}
vrrp_instance VI_2 {
    interface eth0
    lvs_sync_daemon_interface eth2
    virtual_router_id 52
    virtual_ipaddress {
        10.1.1.2/24
    }
}
"""
    cfg = K.parse_text(text, "old.conf")
    assert cfg.global_defs.lvs_sync_daemon == K.LVSSyncDaemon("eth1", "VI_1")
    assert [(d.line, "deprecated" in d.message or "ignored" in d.message) for d in cfg.diagnostics] == [
        (4, True), (12, True)]


def test_lvs_table_settings_in_global_defs() -> None:
    text = """
global_defs {
    lvs_timeouts tcp 7200 udp 60
    lvs_flush
    lvs_flush_on_stop VS
    lvs_sync_daemon eth1 inst VI_1 id 4
}
vrrp_instance VI_1 {
    interface eth0
    virtual_router_id 51
    virtual_ipaddress {
        10.1.1.1/24
    }
}
"""
    g = K.parse_text(text, "g.conf").global_defs
    assert (g.lvs_timeouts, g.lvs_flush, g.lvs_flush_on_stop) == ((7200, None, 60), True, "VS")
    assert g.lvs_sync_daemon == K.LVSSyncDaemon("eth1", "VI_1", 4)
    bad = K.parse_text(text.replace("udp 60", "udp x").replace("on_stop VS", "on_stop ALL"),
                       "b.conf", strict=False)
    assert [d.line for d in bad.diagnostics if d.severity == "error"] == [3, 5]
