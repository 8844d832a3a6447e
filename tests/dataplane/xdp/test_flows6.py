"""IPv6 flows from the packet forwarder into the real XDP program: the forwarder decides a
connection in Python, offers it through ``SplitFlowSink`` to the program's map, and the
program (run with BPF_PROG_TEST_RUN) must then make of each later frame exactly what the Python
path makes of it, byte for byte, for DR, NAT (both ways) and TUN; the counters it keeps reach
the Director at the next sync. The generic-mode rule (DR only to the program) holds for IPv6
without handing the IPv4-only C table a 16-byte address."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pylvs.core.model import ForwardingMethod, Protocol
from pylvs.dataplane.packet.codec import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_SYN
from pylvs.dataplane.packet.forward import FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN
from pylvs.dataplane.xdp.flows import SplitFlowSink, XdpFlowSink
from pylvs.dataplane.xdp.loader import XDP_PASS, XDP_REDIRECT, XdpProgram
from pylvs.dataplane.xdp.maps import KEY
from tests.dataplane.packet.test_forward6 import (
    CLIENT,
    DIR_MAC1,
    NAT1,
    NAT1_MAC,
    RS1,
    VIP,
    checksum_ok,
    frame6,
    l4,
    make,
)

ALL = frozenset({FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN})
PSH = 0x08


@pytest.fixture(autouse=True)
def empty_flows(prog: XdpProgram) -> Iterator[None]:
    yield
    for key in prog.flow_keys(KEY.size):
        prog.flow_delete(key)


def c_table() -> Any:
    """The C hot path's table (IPv4 keys) when it is built, as the xdp plane pairs them."""
    try:
        from pylvs.dataplane.packet import _fastpath
    except ImportError:
        return None
    return _fastpath.FlowTable(1024)


def client(flags: int, payload: bytes = b"", proto: int = IPPROTO_TCP) -> bytearray:
    return frame6(CLIENT, VIP, proto, l4(CLIENT, VIP, proto, 40000, 80, payload, flags),
                  hop=61, tclass=0x28)


def server(flags: int, payload: bytes = b"", proto: int = IPPROTO_TCP) -> bytearray:
    return frame6(NAT1, CLIENT, proto, l4(NAT1, CLIENT, proto, 80, 40000, payload, flags),
                  src_mac=NAT1_MAC, dst_mac=DIR_MAC1)


def split_forwarder(prog: XdpProgram, fwd: ForwardingMethod, kinds: frozenset[int] = ALL,
                    proto: Protocol = Protocol.TCP) -> tuple[Any, Any, SplitFlowSink]:
    fw, d = make(fwd, rips=(NAT1,) if fwd == ForwardingMethod.MASQ else (RS1,), proto=proto)
    split = SplitFlowSink(XdpFlowSink(prog), c_table(), kinds)
    fw.flows = split  # as XdpDataPlane.open gives it to both paths
    fw.v6.flows = split
    return fw, d, split


def python_result(fw: Any, ifindex: int, frame: bytearray) -> tuple[int, bytes]:
    """What the Python path makes of ``frame`` (flows detached, so it neither installs nor
    removes anything)."""
    saved, fw.v6.flows = fw.v6.flows, None
    try:
        out = fw.handle(ifindex, frame)
    finally:
        fw.v6.flows = saved
    assert out is not None
    return (out[0], bytes(out[1]))


def program_result(prog: XdpProgram, frame: bytearray) -> tuple[int, bytes]:
    verdict, out = prog.test_run(bytes(frame))
    return verdict, out


def established(fw: Any, fwd: ForwardingMethod) -> None:
    assert fw.handle(2, client(TCP_SYN)) is not None
    if fwd == ForwardingMethod.MASQ:
        assert fw.handle(3, server(TCP_SYN | TCP_ACK)) is not None
    assert fw.handle(2, client(TCP_ACK)) is not None
    if fwd == ForwardingMethod.MASQ:
        assert fw.handle(3, server(TCP_ACK | PSH, b"hello")) is not None


@pytest.mark.parametrize("fwd", [ForwardingMethod.DROUTE, ForwardingMethod.MASQ,
                                 ForwardingMethod.TUNNEL], ids=["dr", "nat", "tun"])
def test_the_program_forwards_established_ipv6_exactly_as_python(
        prog: XdpProgram, fwd: ForwardingMethod) -> None:
    fw, d, split = split_forwarder(prog, fwd)
    established(fw, fwd)
    assert split.xdp.count == (2 if fwd == ForwardingMethod.MASQ else 1)
    other = split.other
    assert other is None or other.count == 0  # the C table saw no IPv6 flow
    sent = {"in": 0, "out": 0}
    for payload in (b"", b"GET / HTTP/1.1\r\n\r\n", b"x" * 1400):
        frame = client(TCP_ACK | PSH, payload)
        verdict, out = program_result(prog, frame)
        assert verdict == XDP_REDIRECT  # to eth0/eth1, not the test run's loopback
        assert out == python_result(fw, 2, bytearray(frame))[1]
        sent["in"] += 1
        if fwd == ForwardingMethod.MASQ:
            reply = server(TCP_ACK | PSH, payload)
            verdict, back = program_result(prog, reply)
            assert verdict == XDP_REDIRECT and back == python_result(fw, 3, bytearray(reply))[1]
            assert back[22:38] == VIP and checksum_ok(back)
            sent["out"] += 1
    # the program's counters reach the Director at the next sync, as its packets would have
    total = d.table.total
    inp, outp = total.inpkts, total.outpkts
    assert fw.sync_flows() == sent["in"] + sent["out"]
    assert (total.inpkts, total.outpkts) == (inp + sent["in"], outp + sent["out"])
    # a FIN goes up to the core, which takes the connection's flows out of the program
    verdict, _ = program_result(prog, client(TCP_FIN | TCP_ACK))
    assert verdict == XDP_PASS
    assert fw.handle(2, client(TCP_FIN | TCP_ACK)) is not None
    assert split.xdp.count == 0 and prog.flow_keys(KEY.size) == []
    verdict, _ = program_result(prog, client(TCP_ACK))
    assert verdict == XDP_PASS  # no flow: up to the core


def test_nat_udp_both_ways(prog: XdpProgram) -> None:
    fw, _d, split = split_forwarder(prog, ForwardingMethod.MASQ, proto=Protocol.UDP)
    assert fw.handle(2, client(0, b"q", IPPROTO_UDP)) is not None
    assert fw.handle(3, server(0, b"a", IPPROTO_UDP)) is not None
    assert split.xdp.count == 2
    for frame, ifindex in ((client(0, b"query", IPPROTO_UDP), 2),
                           (server(0, b"answer", IPPROTO_UDP), 3)):
        verdict, out = program_result(prog, frame)
        assert verdict == XDP_REDIRECT and out == python_result(fw, ifindex, bytearray(frame))[1]
        assert checksum_ok(out)


@pytest.mark.parametrize("fwd", [ForwardingMethod.MASQ, ForwardingMethod.TUNNEL],
                         ids=["nat", "tun"])
def test_generic_mode_keeps_ipv6_nat_and_tun_in_python(prog: XdpProgram,
                                                       fwd: ForwardingMethod) -> None:
    """Generic mode gives the program DR flows only; an IPv6 NAT or TUN flow then has no
    table at all (the C one is IPv4-only): it is refused, and Python keeps forwarding it."""
    fw, _d, split = split_forwarder(prog, fwd, kinds=frozenset({FLOW_DR}))
    established(fw, fwd)
    assert split.xdp.count == 0 and prog.flow_keys(KEY.size) == []
    assert split.other is None or split.other.count == 0
    verdict, _ = program_result(prog, client(TCP_ACK | PSH, b"more"))
    assert verdict == XDP_PASS
    out = fw.handle(2, client(TCP_ACK | PSH, b"more"))
    assert out is not None  # the Python path forwards it


def test_generic_mode_takes_ipv6_dr(prog: XdpProgram) -> None:
    fw, _d, split = split_forwarder(prog, ForwardingMethod.DROUTE, kinds=frozenset({FLOW_DR}))
    established(fw, ForwardingMethod.DROUTE)
    assert split.xdp.count == 1
    frame = client(TCP_ACK, b"data")
    verdict, out = program_result(prog, frame)
    assert verdict == XDP_REDIRECT and out == python_result(fw, 2, bytearray(frame))[1]


def test_split_never_hands_the_c_table_a_16_byte_address(prog: XdpProgram) -> None:
    class Refuses:
        """Stands for the C table: any call with an IPv6 address is the bug under test."""

        ident = 0
        count = 0

        def install(self, proto: int, saddr: bytes, *rest: Any) -> bool:
            assert len(saddr) == 4, "an IPv6 flow reached the IPv4-only table"
            return True

        def remove(self, proto: int, saddr: bytes, *rest: Any) -> None:
            assert len(saddr) == 4, "an IPv6 flow reached the IPv4-only table"

    split = SplitFlowSink(XdpFlowSink(prog), Refuses(), frozenset({FLOW_DR}))
    for kind in (FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN):
        assert not split.install(IPPROTO_TCP, CLIENT, 40000, VIP, 80, kind, NAT1, 80, 3,
                                 bytes(12), None, 0, CLIENT, 1500)
    assert split.remove(IPPROTO_TCP, CLIENT, 40000, VIP, 80) is None
    # IPv4 flows of those kinds still go there
    assert split.install(IPPROTO_TCP, bytes(4), 1, bytes(4), 2, FLOW_NAT_DST, bytes(4), 80, 3,
                         bytes(12), None, 0)
