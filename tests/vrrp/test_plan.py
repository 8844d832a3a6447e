"""From keepalived.conf to what each router runs: keepalived's defaults and inheritance."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.config import keepalived as K
from pylvs.vrrp import packet as pkt
from pylvs.vrrp.plan import HostError, plan_instances
from pylvs.vrrp.router import Received, RouterConfig, State, VRRPRouter


def _lo_ok() -> bool:
    try:
        socket.if_nametoindex("lo")
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _lo_ok(), reason="no loopback interface")

CONF = """
global_defs {
    vrrp_garp_master_repeat 2
    vrrp_garp_master_refresh 30
    vrrp_skip_check_adv_addr
}
vrrp_instance A {
    interface lo
    virtual_router_id 7
    priority 120
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 123456789
    }
    unicast_src_ip 127.0.0.1
    unicast_peer {
        127.0.0.2
    }
    garp_master_repeat 4
    virtual_ipaddress {
        127.0.0.100/8 label lo:v
    }
    notify "/bin/echo x"
}
vrrp_instance B {
    state MASTER
    interface lo
    virtual_router_id 8
    advert_int 0.3
    version 3
    virtual_ipaddress {
        127.0.0.101
    }
}
"""


def test_instance_settings_inherit_global_defs_like_keepalived() -> None:
    a, b = plan_instances(K.parse_text(CONF))
    ra = a.router
    assert (ra.vrid, ra.priority, ra.version, ra.adver_int) == (7, 120, 2, 1.0)
    assert ra.auth_type == pkt.AUTH_PASS and ra.auth_pass == b"12345678"
    assert ra.unicast_peers == (bytes((127, 0, 0, 2)),) and ra.primary_address == bytes((127, 0, 0, 1))
    assert ra.garp_master_repeat == 4 and ra.garp_master_refresh == 30.0 and not ra.check_vips
    assert a.vips[0].label == "lo:v" and a.vips[0].prefixlen == 8 and a.mcast_group is None
    assert a.notify[0] == "/bin/echo x"
    rb = b.router
    assert rb.version == 3 and rb.adver_int == pytest.approx(0.3) and rb.initial_state is State.MASTER
    assert rb.garp_master_repeat == 2 and rb.auth_type == pkt.AUTH_NONE
    assert b.mcast_group == pkt.VRRP_MCAST_V4 and b.vips[0].prefixlen == 32


def test_missing_interface_is_a_host_error_with_file_and_line() -> None:
    cfg = K.parse_text("vrrp_instance X {\n interface nosuchif0\n virtual_router_id 3\n virtual_ipaddress { 10.0.0.1 }\n}\n", "h.conf")
    with pytest.raises(HostError, match=r"h.conf:1: .*nosuchif0"):
        plan_instances(cfg)


CFG = RouterConfig(name="F", vrid=9, priority=100, primary_address=bytes((10, 0, 0, 2)), vips=("10.0.0.9/24",),
                   auth_type=pkt.AUTH_PASS, auth_pass=b"pw")


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 255), st.floats(0, 10)), max_size=30),
       st.sampled_from([State.MASTER, State.BACKUP]))
def test_router_survives_any_packet_sequence(packets: list[tuple[bytes, int, float]], initial: State) -> None:
    import dataclasses

    r = VRRPRouter(dataclasses.replace(CFG, initial_state=initial))
    r.start(0.0)
    now = 0.0
    for data, ttl, dt in packets:
        now += dt
        r.receive(Received(data, bytes((10, 0, 0, 1)), pkt.VRRP_MCAST_V4, ttl), now)
        r.tick(now)
        assert r.state in (State.MASTER, State.BACKUP)
        deadline = r.next_deadline()
        assert deadline is None or deadline >= now - 10

