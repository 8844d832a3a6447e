"""The XDP program itself, run in the kernel with BPF_PROG_TEST_RUN: crafted frames in, expected
frames and verdicts out, for every method, family, TCP flag transition and malformed input."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.dataplane.xdp.loader import (
    XDP_DROP,
    XDP_PASS,
    XDP_REDIRECT,
    XDP_TX,
    XdpProgram,
    XdpUnavailable,
)
from pylvs.dataplane.xdp.maps import (
    ACTION,
    HOP,
    HOP_KEY,
    KEY,
    SVC,
    SVC_KEY,
    FlowAction,
    FlowKey,
    Method,
    unpack_counters,
)
from tests.dataplane.xdp.frames import (
    CLIENT_MAC,
    DIRECTOR_MAC,
    RS_MAC,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    eth,
    ipv4,
    ipv6,
    l4,
    packet,
)

LO = 1  # BPF_PROG_TEST_RUN runs as if received on the netns's loopback
OTHER_IF = 7


@pytest.fixture(autouse=True)
def empty_flows(prog: XdpProgram) -> Iterator[None]:
    yield
    for key in prog.flow_keys(KEY.size):
        prog.flow_delete(key)


def install(prog: XdpProgram, key: FlowKey, action: FlowAction) -> None:
    prog.flow_put(key.pack(), action.pack())


def test_layouts_match_the_object_btf() -> None:
    import shutil
    import subprocess

    from pylvs.dataplane.xdp.loader import object_path

    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    try:
        text = subprocess.run([bpftool, "btf", "dump", "file", str(object_path())],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError, XdpUnavailable) as exc:
        pytest.skip(f"bpftool/object not available: {exc}")
    assert f"STRUCT 'lvs_flow_key' size={KEY.size} " in text
    assert f"STRUCT 'lvs_action' size={ACTION.size} " in text
    assert f"STRUCT 'lvs_svc_key' size={SVC_KEY.size} " in text
    assert f"STRUCT 'lvs_svc' size={SVC.size} " in text
    assert f"STRUCT 'lvs_hop_key' size={HOP_KEY.size} " in text
    assert f"STRUCT 'lvs_hop' size={HOP.size} " in text
    assert "'first_len' type_id=" in text and "bits_offset=448" in text
    assert "'last_seen_ns' type_id=" in text and "bits_offset=512" in text


def test_no_flow_goes_up(prog: XdpProgram) -> None:
    before = prog.stats()["pass_no_flow"]
    verdict, _out = prog.test_run(packet("192.168.168.60", "192.168.168.100", 40000, 80))
    assert verdict == XDP_PASS
    assert prog.stats()["pass_no_flow"] == before + 1


@pytest.mark.parametrize("client,vip,rs", [
    ("192.168.168.60", "192.168.168.100", "192.168.168.10"),
    ("2001:db8::60", "2001:db8::100", "2001:db8::10"),
])
@pytest.mark.parametrize("ifindex,verdict", [(LO, XDP_TX), (OTHER_IF, XDP_REDIRECT)])
def test_dr_rewrites_macs_only(prog: XdpProgram, client: str, vip: str, rs: str, ifindex: int,
                               verdict: int) -> None:
    frame = packet(client, vip, 40000, 80)
    install(prog, FlowKey(6, client, 40000, vip, 80), FlowAction(Method.DR, ifindex, RS_MAC, DIRECTOR_MAC))
    got_verdict, out = prog.test_run(frame)
    assert got_verdict == verdict
    assert out == RS_MAC + DIRECTOR_MAC + frame[12:]


@pytest.mark.parametrize("proto", [6, 17])
@pytest.mark.parametrize("client,vip,rs", [
    ("192.168.168.60", "192.168.168.100", "10.168.0.10"),
    ("2001:db8::60", "2001:db8::100", "2001:db8:1::10"),
])
def test_nat_both_directions(prog: XdpProgram, proto: int, client: str, vip: str, rs: str) -> None:
    install(prog, FlowKey(proto, client, 40000, vip, 80),
            FlowAction(Method.NAT_IN, LO, RS_MAC, DIRECTOR_MAC, addr=rs, port=8080))
    install(prog, FlowKey(proto, rs, 8080, client, 40000),
            FlowAction(Method.NAT_OUT, LO, CLIENT_MAC, DIRECTOR_MAC, addr=vip, port=80))
    verdict, out = prog.test_run(packet(client, vip, 40000, 80, proto=proto))
    assert verdict == XDP_TX
    assert out == packet(client, rs, 40000, 8080, proto=proto, dmac=RS_MAC, smac=DIRECTOR_MAC)
    verdict, out = prog.test_run(packet(rs, client, 8080, 40000, proto=proto, smac=RS_MAC))
    assert verdict == XDP_TX
    assert out == packet(vip, client, 80, 40000, proto=proto, dmac=CLIENT_MAC, smac=DIRECTOR_MAC)


def test_nat_keeps_a_zero_udp_checksum_over_ipv4(prog: XdpProgram) -> None:
    seg = l4(17, "192.168.168.60", "192.168.168.100", 5000, 53, b"q", udp_csum=False)
    frame = eth(DIRECTOR_MAC, CLIENT_MAC, 0x0800, ipv4("192.168.168.60", "192.168.168.100", 17, seg))
    install(prog, FlowKey(17, "192.168.168.60", 5000, "192.168.168.100", 53),
            FlowAction(Method.NAT_IN, LO, RS_MAC, DIRECTOR_MAC, addr="10.168.0.10", port=5353))
    verdict, out = prog.test_run(frame)
    assert verdict == XDP_TX
    want_seg = l4(17, "192.168.168.60", "10.168.0.10", 5000, 5353, b"q", udp_csum=False)
    assert out == eth(RS_MAC, DIRECTOR_MAC, 0x0800, ipv4("192.168.168.60", "10.168.0.10", 17, want_seg))


def test_tun_ipip(prog: XdpProgram) -> None:
    seg = l4(6, "192.168.168.60", "192.168.168.100", 40000, 80, b"data")
    inner = ipv4("192.168.168.60", "192.168.168.100", 6, seg, ttl=57, tos=0x10)
    install(prog, FlowKey(6, "192.168.168.60", 40000, "192.168.168.100", 80),
            FlowAction(Method.TUN, LO, RS_MAC, DIRECTOR_MAC, addr="192.168.168.10",
                       tun_src="192.168.168.50"))
    verdict, out = prog.test_run(eth(DIRECTOR_MAC, CLIENT_MAC, 0x0800, inner))
    assert verdict == XDP_TX
    outer = ipv4("192.168.168.50", "192.168.168.10", 4, inner, ttl=57, tos=0x10, frag=0x4000, ident=0)
    assert out == eth(RS_MAC, DIRECTOR_MAC, 0x0800, outer)


def test_tun_ipv6_in_ipv6(prog: XdpProgram) -> None:
    seg = l4(6, "2001:db8::60", "2001:db8::100", 40000, 80, b"data")
    inner = ipv6("2001:db8::60", "2001:db8::100", 6, seg, hlim=33, tclass=0x28)
    install(prog, FlowKey(6, "2001:db8::60", 40000, "2001:db8::100", 80),
            FlowAction(Method.TUN, LO, RS_MAC, DIRECTOR_MAC, addr="2001:db8::10",
                       tun_src="2001:db8::50"))
    verdict, out = prog.test_run(eth(DIRECTOR_MAC, CLIENT_MAC, 0x86DD, inner))
    assert verdict == XDP_TX
    assert out == eth(RS_MAC, DIRECTOR_MAC, 0x86DD, ipv6("2001:db8::50", "2001:db8::10", 41, inner,
                                                          hlim=33, tclass=0x28))


@pytest.mark.parametrize("flags", [TCP_SYN, TCP_SYN | TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, TCP_RST | TCP_ACK])
def test_tcp_state_changes_go_to_the_core(prog: XdpProgram, flags: int) -> None:
    install(prog, FlowKey(6, "192.168.168.60", 40000, "192.168.168.100", 80),
            FlowAction(Method.DR, LO, RS_MAC, DIRECTOR_MAC))
    before = prog.stats()["pass_control"]
    frame = packet("192.168.168.60", "192.168.168.100", 40000, 80, flags=flags)
    verdict, out = prog.test_run(frame)
    assert (verdict, out) == (XDP_PASS, frame)
    assert prog.stats()["pass_control"] == before + 1


def test_flow_counters_and_timestamp(prog: XdpProgram) -> None:
    key = FlowKey(6, "192.168.168.60", 40000, "192.168.168.100", 80)
    install(prog, key, FlowAction(Method.DR, LO, RS_MAC, DIRECTOR_MAC))
    frame = packet("192.168.168.60", "192.168.168.100", 40000, 80, payload=b"x" * 100)
    for _ in range(3):
        prog.test_run(frame)
    value = prog.flow_get(key.pack(), ACTION.size)
    assert value is not None
    c = unpack_counters(value)
    assert c.packets == 3 and c.bytes == 3 * (len(frame) - 14) and c.last_seen_ns > 0


def malformed() -> list[tuple[str, bytes, int]]:
    good = packet("192.168.168.60", "192.168.168.100", 40000, 80)
    ip = bytearray(good[14:])
    opts = bytearray(ip)
    opts[0] = 0x46  # IHL 6: options
    frag_mf = bytearray(ip)
    frag_mf[6] = 0x20  # MF
    frag_off = bytearray(ip)
    frag_off[6:8] = struct.pack("!H", 10)
    too_long = bytearray(ip)
    too_long[2:4] = struct.pack("!H", 1500)
    too_short = bytearray(ip)
    too_short[2:4] = struct.pack("!H", 12)
    v6 = packet("2001:db8::60", "2001:db8::100", 40000, 80)
    hop_by_hop = bytearray(v6)
    hop_by_hop[14 + 6] = 0
    return [
        ("ip options", good[:14] + bytes(opts), XDP_PASS),
        ("first fragment", good[:14] + bytes(frag_mf), XDP_PASS),
        ("later fragment", good[:14] + bytes(frag_off), XDP_PASS),
        ("total length past the frame", good[:14] + bytes(too_long), XDP_DROP),
        ("total length under the header", good[:14] + bytes(too_short), XDP_DROP),
        ("ip header cut", good[:14 + 12], XDP_DROP),
        ("tcp header cut", good[:14 + 20 + 8], XDP_DROP),
        ("ipv6 extension header", bytes(hop_by_hop), XDP_PASS),
        ("ipv6 header cut", v6[:14 + 30], XDP_DROP),
        ("arp", eth(b"\xff" * 6, CLIENT_MAC, 0x0806, b"\0" * 28), XDP_PASS),
    ]


@pytest.mark.parametrize("name,frame,verdict", malformed(), ids=[m[0] for m in malformed()])
def test_malformed_frames_are_passed_or_dropped_never_forwarded(prog: XdpProgram, name: str,
                                                              frame: bytes, verdict: int) -> None:
    # A flow exists for the tuple, so forwarding would be possible if the program trusted the frame.
    install(prog, FlowKey(6, "192.168.168.60", 40000, "192.168.168.100", 80),
            FlowAction(Method.DR, LO, RS_MAC, DIRECTOR_MAC))
    install(prog, FlowKey(6, "2001:db8::60", 40000, "2001:db8::100", 80),
            FlowAction(Method.DR, LO, RS_MAC, DIRECTOR_MAC))
    got, out = prog.test_run(frame)
    assert got == verdict, name
    assert out == frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(min_size=0, max_size=120), ethertype=st.sampled_from([0x0800, 0x86DD, 0x0806]))
def test_random_frames_never_abort_or_leave(prog: XdpProgram, body: bytes, ethertype: int) -> None:
    frame = eth(DIRECTOR_MAC, CLIENT_MAC, ethertype, body)
    verdict, out = prog.test_run(frame)
    assert verdict in (XDP_PASS, XDP_DROP)
    assert out == frame
