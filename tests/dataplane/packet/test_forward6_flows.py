"""Which IPv6 flows the forwarder offers to a flow sink, without I/O: the IPv4 path's rules
(``Forwarder._offer``) with 16-byte addresses. A recording sink stands in for the table here
(what a real sink does with the offers is tested against the kernel in tests/dataplane/xdp)."""

from __future__ import annotations

from typing import Any

from pylvs.core.director import DIR_INPUT, DIR_OUTPUT
from pylvs.core.model import ForwardingMethod, Protocol
from pylvs.dataplane.packet.codec import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_SYN
from pylvs.dataplane.packet.forward import FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN
from tests.dataplane.packet.test_forward6 import (
    CLIENT,
    CLIENT_MAC,
    DIR6,
    DIR_MAC,
    DIR_MAC1,
    NAT1,
    NAT1_MAC,
    RS1,
    RS1_MAC,
    VIP,
    frame6,
    l4,
    make,
)

ACK, FIN, SYN = TCP_ACK, TCP_FIN, TCP_SYN
PSH = 0x08


class RecordingSink:
    """A flow sink that keeps what it is told and forwards nothing: the forwarder's decisions
    are what is under test. ``refuse``: answer False to every install, as a full table does."""

    def __init__(self, refuse: bool = False) -> None:
        self.ident = 0
        self.refuse = refuse
        self.installed: dict[tuple[int, bytes, int, bytes, int], dict[str, Any]] = {}
        self.removed: list[tuple[int, bytes, int, bytes, int]] = []
        self.rows: list[tuple[Any, int, int, int, float]] = []  # what sync/clear return
        self.cleared = 0
        self.synced = 0

    @property
    def count(self) -> int:
        return len(self.installed)

    def install(self, proto: int, saddr: bytes, sport: int, daddr: bytes, dport: int, kind: int,
                new_ip: bytes, new_port: int, out_ifindex: int, macs: bytes, conn: Any,
                direction: int, tun_src: bytes | None = None, mtu: int = 0) -> bool:
        if self.refuse:
            return False
        self.installed[(proto, saddr, sport, daddr, dport)] = {
            "kind": kind, "new_ip": new_ip, "new_port": new_port, "ifindex": out_ifindex,
            "macs": bytes(macs), "conn": conn, "direction": direction, "tun_src": tun_src,
            "mtu": mtu}
        return True

    def remove(self, proto: int, saddr: bytes, sport: int, daddr: bytes,
               dport: int) -> tuple[Any, int, int, int, float] | None:
        key = (proto, saddr, sport, daddr, dport)
        self.removed.append(key)
        flow = self.installed.pop(key, None)
        return None if flow is None else (flow["conn"], flow["direction"], 3, 300, 0.0)

    def clear(self) -> list[tuple[Any, int, int, int, float]]:
        self.cleared += 1
        self.installed.clear()
        rows, self.rows = self.rows, []
        return rows

    def sync(self) -> list[tuple[Any, int, int, int, float]]:
        self.synced += 1
        rows, self.rows = self.rows, []
        return rows


def client(flags: int, payload: bytes = b"", proto: int = IPPROTO_TCP,
           sport: int = 40000) -> bytearray:
    return frame6(CLIENT, VIP, proto, l4(CLIENT, VIP, proto, sport, 80, payload, flags))


def server(flags: int, payload: bytes = b"", proto: int = IPPROTO_TCP,
           sport: int = 40000) -> bytearray:
    return frame6(NAT1, CLIENT, proto, l4(NAT1, CLIENT, proto, 80, sport, payload, flags),
                  src_mac=NAT1_MAC, dst_mac=DIR_MAC1)


def setup(fwd: ForwardingMethod, proto: Protocol = Protocol.TCP) -> tuple[Any, Any, RecordingSink]:
    fw, d = make(fwd, rips=(NAT1,) if fwd == ForwardingMethod.MASQ else (RS1,), proto=proto)
    sink = RecordingSink()
    fw.v6.flows = sink
    return fw, d, sink


def test_dr_is_offered_once_established_with_the_macs_only() -> None:
    fw, d, sink = setup(ForwardingMethod.DROUTE)
    assert fw.handle(2, client(SYN)) is not None
    assert sink.installed == {}  # SYN_RECV: not yet
    assert fw.handle(2, client(ACK)) is not None
    assert d.connection_entries()[0].state == "ESTABLISHED"
    flow = sink.installed.pop((IPPROTO_TCP, CLIENT, 40000, VIP, 80))
    conn = flow.pop("conn")
    assert (conn.caddr, conn.vaddr, conn.daddr) == (CLIENT, VIP, RS1)
    assert flow == {"kind": FLOW_DR, "new_ip": RS1, "new_port": 80, "ifindex": 2,
                    "macs": RS1_MAC + DIR_MAC, "direction": DIR_INPUT, "tun_src": None,
                    "mtu": 0}
    assert sink.installed == {}  # DR: the real server answers the client itself


def test_nat_is_offered_both_ways_with_the_new_address_and_port() -> None:
    fw, d, sink = setup(ForwardingMethod.MASQ)
    assert fw.handle(2, client(SYN)) is not None
    assert fw.handle(3, server(SYN | ACK)) is not None
    assert sink.installed == {}
    assert fw.handle(2, client(ACK)) is not None
    assert d.connection_entries()[0].state == "ESTABLISHED"
    inbound = sink.installed[(IPPROTO_TCP, CLIENT, 40000, VIP, 80)]
    assert (inbound["kind"], inbound["new_ip"], inbound["new_port"], inbound["ifindex"],
            inbound["macs"], inbound["direction"]) == (FLOW_NAT_DST, NAT1, 80, 3,
                                                       NAT1_MAC + DIR_MAC1, DIR_INPUT)
    assert fw.handle(3, server(ACK | PSH, b"hello")) is not None  # the reply direction
    outbound = sink.installed[(IPPROTO_TCP, NAT1, 80, CLIENT, 40000)]
    assert (outbound["kind"], outbound["new_ip"], outbound["new_port"], outbound["ifindex"],
            outbound["macs"], outbound["direction"]) == (FLOW_NAT_SRC, VIP, 80, 2,
                                                         CLIENT_MAC + DIR_MAC, DIR_OUTPUT)
    assert outbound["conn"] is inbound["conn"]


def test_tun_is_offered_with_the_outer_addresses_and_the_mtu() -> None:
    fw, _d, sink = setup(ForwardingMethod.TUNNEL)
    assert fw.handle(2, client(SYN)) is not None
    assert fw.handle(2, client(ACK)) is not None
    flow = sink.installed[(IPPROTO_TCP, CLIENT, 40000, VIP, 80)]
    assert (flow["kind"], flow["new_ip"], flow["tun_src"], flow["mtu"], flow["ifindex"],
            flow["macs"]) == (FLOW_TUN, RS1, DIR6, 1500, 2, RS1_MAC + DIR_MAC)


def test_a_packet_that_would_not_fit_the_tunnel_offers_nothing() -> None:
    fw, _d, sink = setup(ForwardingMethod.TUNNEL)
    assert fw.handle(2, client(SYN)) is not None
    assert fw.handle(2, client(ACK, b"x" * 1440)) is None  # packet too big back, not forwarded
    assert sink.installed == {}


def test_udp_is_offered_from_its_first_datagram_both_ways_in_nat() -> None:
    fw, _d, sink = setup(ForwardingMethod.MASQ, Protocol.UDP)
    assert fw.handle(2, client(0, b"q", IPPROTO_UDP)) is not None
    assert sink.installed[(IPPROTO_UDP, CLIENT, 40000, VIP, 80)]["kind"] == FLOW_NAT_DST
    assert fw.handle(3, server(0, b"a", IPPROTO_UDP)) is not None
    assert sink.installed[(IPPROTO_UDP, NAT1, 80, CLIENT, 40000)]["kind"] == FLOW_NAT_SRC


def test_leaving_established_takes_both_directions_out_and_counts_them() -> None:
    fw, d, sink = setup(ForwardingMethod.MASQ)
    fw.handle(2, client(SYN))
    fw.handle(3, server(SYN | ACK))
    fw.handle(2, client(ACK))
    fw.handle(3, server(ACK, b"hello"))
    assert sink.count == 2
    total = d.table.total
    inp, outp = total.inpkts, total.outpkts
    assert fw.handle(2, client(FIN | ACK)) is not None  # the program passes FIN up
    assert sink.installed == {}
    assert set(sink.removed) == {(IPPROTO_TCP, CLIENT, 40000, VIP, 80),
                                 (IPPROTO_TCP, NAT1, 80, CLIENT, 40000)}
    assert d.connection_entries()[0].state != "ESTABLISHED"
    # the FIN itself, and what each flow forwarded since the last sync (3 packets each here)
    assert (total.inpkts, total.outpkts) == (inp + 1 + 3, outp + 3)
    # later packets of the closing connection install nothing
    fw.handle(3, server(FIN | ACK))
    fw.handle(2, client(ACK))
    assert sink.installed == {}


def test_the_ipv4_sink_never_sees_ipv6_flows() -> None:
    """The packet plane gives the C table (IPv4 keys) to ``flows`` only: an IPv6 connection,
    however established, is never offered to it."""
    fw, _d = make(ForwardingMethod.MASQ, rips=(NAT1,))
    v4 = RecordingSink()
    fw.flows = v4
    for f, i in ((client(SYN), 2), (server(SYN | ACK), 3), (client(ACK), 2),
                 (server(ACK, b"x"), 3), (client(FIN | ACK), 2)):
        assert fw.handle(i, f) is not None
    assert v4.installed == {} and v4.removed == []


def test_a_refused_offer_leaves_the_flow_on_the_python_path() -> None:
    fw, _d = make(ForwardingMethod.DROUTE, rips=(RS1,))
    fw.v6.flows = RecordingSink(refuse=True)
    fw.handle(2, client(SYN))
    for _ in range(3):
        out = fw.handle(2, client(ACK, b"data"))
        assert out is not None and out[1][0:6] == RS1_MAC
    assert fw.v6.forwarded == 4


def test_clear_and_sync_cover_the_ipv6_sink() -> None:
    fw, d, sink = setup(ForwardingMethod.DROUTE)
    fw.handle(2, client(SYN))
    fw.handle(2, client(ACK))
    conn = sink.installed[(IPPROTO_TCP, CLIENT, 40000, VIP, 80)]["conn"]
    before = d.table.total.inpkts
    sink.rows = [(conn, DIR_INPUT, 5, 500, 0.0)]
    assert fw.sync_flows() == 5 and sink.synced == 1
    assert d.table.total.inpkts == before + 5
    # a neighbour change (a new MAC for the real server) forgets every flow, IPv6 ones too
    fw.learn({RS1: b"\x02\0\0\0\0\x99"})
    assert sink.cleared == 1 and sink.installed == {}
    # one sink given to both paths (the xdp plane) is synced and cleared once
    fw.flows = sink
    fw.sync_flows()
    fw.clear_flows()
    assert (sink.synced, sink.cleared) == (2, 2)
