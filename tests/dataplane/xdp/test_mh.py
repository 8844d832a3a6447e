"""``mh`` scheduled in the XDP program from the Maglev table the core fills: run in the kernel with
BPF_PROG_TEST_RUN, the program must pick, for every client, the real server pylvs' mh scheduler
picks (itself checked against the kernel's ip_vs_mh), send up what the core must decide (a
server with weight 0, persistent or threshold services), and make a flow of each connection it
schedules that later packets use and the core then enters in its connection table."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator

import pytest

from pylvs.core.conntrack import TCP_S_CLOSE, TCP_S_ESTABLISHED, TCP_S_SYN_RECV
from pylvs.core.director import Director
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
)
from pylvs.core.table import IPVSTable
from pylvs.dataplane.packet.forward import FLOW_DR, FLOW_NAT_DST, FLOW_NAT_SRC, FLOW_TUN, Forwarder
from pylvs.dataplane.packet.interface import Interface
from pylvs.dataplane.xdp.flows import XdpFlowSink
from pylvs.dataplane.xdp.loader import XDP_PASS, XDP_TX, XdpProgram
from pylvs.dataplane.xdp.maps import ACTION, KEY, NEW_FLOW, FlowKey, unpack_value
from pylvs.dataplane.xdp.mhtables import (
    MhMaps,
    NextHop,
    reply_routes,
    unsuitable,
    wanted_tables,
)
from tests.dataplane.xdp.frames import (
    CLIENT_MAC,
    DIRECTOR_MAC,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    packet,
)

LO = 1
MH_PORT = ServiceFlags.SCHED2
KINDS = frozenset({FLOW_DR})


def rs_mac(ip: bytes) -> bytes:
    """Each real server's MAC names it: the program's choice reads off the frame it sends."""
    return b"\x02\xaa" + ip[-4:]


def resolve(ip: bytes) -> NextHop:
    return NextHop(LO, rs_mac(ip), DIRECTOR_MAC, b"", 1500)


@pytest.fixture
def maps(prog: XdpProgram) -> Iterator[MhMaps]:
    m = MhMaps(prog)
    try:
        yield m
    finally:
        m.clear()
        for key in prog.flow_keys(KEY.size):
            prog.flow_delete(key)
        while prog.read_new_flows(NEW_FLOW.size, 1 << 20):
            pass


def director(vip: str, rss: list[tuple[str, int]], proto: Protocol = Protocol.TCP,
             flags: ServiceFlags = ServiceFlags.NONE, timeout: int = 0,
             u_threshold: int = 0) -> tuple[Director, ServiceKey]:
    d = Director(IPVSTable())
    key = ServiceKey.inet(proto, vip, 80)
    d.table.add_service(ServiceSpec(key, "mh", flags | (ServiceFlags.PERSISTENT if timeout else 0),
                                    timeout))
    for ip, weight in rss:
        d.table.add_dest(key, DestSpec(ipaddress.ip_address(ip), 80, ForwardingMethod.DROUTE,
                                       weight, u_threshold))
    return d, key


def fill(maps: MhMaps, d: Director) -> int:
    return maps.apply(wanted_tables(d.table.services(), KINDS, resolve))


def clients(family: int, n: int, seed: int) -> list[tuple[str, int]]:
    rnd = random.Random(seed)
    out = set()
    while len(out) < n:
        if family == 4:
            addr = str(ipaddress.IPv4Address(rnd.getrandbits(32) | 0x01000000))
        else:
            addr = str(ipaddress.IPv6Address((0x2001_0db8 << 96) | rnd.getrandbits(96)))
        out.add((addr, rnd.randrange(1024, 65536)))
    return sorted(out)


SERVERS4 = [("192.168.168.10", 1), ("192.168.168.11", 3), ("192.168.168.12", 2),
            ("192.168.168.13", 5), ("192.168.168.14", 1)]
SERVERS6 = [("2001:db8:1::10", 2), ("2001:db8:1::11", 1), ("2001:db8:1::12", 4)]


@pytest.mark.parametrize("flags", [ServiceFlags.NONE, MH_PORT], ids=["addr", "mh-port"])
@pytest.mark.parametrize("family,vip,servers", [(4, "192.168.168.100", SERVERS4),
                                                (6, "2001:db8::100", SERVERS6)], ids=["v4", "v6"])
@pytest.mark.parametrize("proto", [6, 17], ids=["tcp", "udp"])
def test_the_program_picks_what_the_scheduler_picks(prog: XdpProgram, maps: MhMaps, flags: ServiceFlags,
                                                    family: int, vip: str, servers: list[tuple[str, int]],
                                                    proto: int) -> None:
    d, _key = director(vip, servers, Protocol(proto), flags)
    assert fill(maps, d) == 1
    svc = next(iter(d.table.services()))
    assert svc.scheduler is not None
    vaddr = ipaddress.ip_address(vip).packed
    by_mac = {rs_mac(r.addr_packed): r for r in svc.destinations}
    before = prog.stats()["mh_scheduled"]
    picked = set()
    n = 1500
    for caddr, cport in clients(family, n, seed=proto * 10 + family + int(flags)):
        want = svc.scheduler.schedule(ipaddress.ip_address(caddr).packed, cport, vaddr, 80, 0.0)
        assert want is not None
        verdict, out = prog.test_run(packet(caddr, vip, cport, 80, proto=proto, flags=TCP_SYN))
        assert verdict == XDP_TX, (caddr, cport)
        got = by_mac[out[:6]]
        assert got is want, (caddr, cport, got.addr, want.addr)
        picked.add(got.addr)
    assert len(picked) == len(servers)  # every server was somebody's pick
    assert prog.stats()["mh_scheduled"] == before + n


def test_weight_zero_slots_go_up(prog: XdpProgram, maps: MhMaps) -> None:
    d, key = director("192.168.168.100", SERVERS4, flags=ServiceFlags.SCHED1)  # mh-fallback
    # quiesce one server: its slots stay its own (last weight), so its clients go to the core
    d.table.edit_dest(key, DestSpec(ipaddress.ip_address("192.168.168.13"), 80,
                                    ForwardingMethod.DROUTE, 0))
    fill(maps, d)
    svc = next(iter(d.table.services()))
    assert svc.scheduler is not None
    quiet = svc.find_dest(ipaddress.ip_address("192.168.168.13"), 80)
    up = tx = 0
    before = prog.stats()["pass_mh_unavailable"]
    for caddr, cport in clients(4, 800, seed=7):
        frame = packet(caddr, "192.168.168.100", cport, 80, flags=TCP_SYN)
        verdict, out = prog.test_run(frame)
        # the slot's server, without fallback: what the program looks at
        svc.flags = ServiceFlags.NONE
        slot = svc.scheduler.schedule(ipaddress.ip_address(caddr).packed, cport,
                                      ipaddress.ip_address("192.168.168.100").packed, 80, 0.0)
        svc.flags = ServiceFlags.SCHED1
        if slot is None:  # the quiesced server's slot: up, untouched, the core falls back
            assert (verdict, out) == (XDP_PASS, frame)
            assert prog.flow_get(FlowKey(6, caddr, cport, "192.168.168.100", 80).pack(),
                                 ACTION.size) is None
            up += 1
        else:
            assert verdict == XDP_TX and out[:6] == rs_mac(slot.addr_packed) != rs_mac(quiet.addr_packed)  # type: ignore[union-attr]
            tx += 1
    assert up > 100 and tx > 300  # the quiesced server has 5 of the 12 weight units
    assert prog.stats()["pass_mh_unavailable"] == before + up


@pytest.mark.parametrize("case", ["persistent", "threshold", "rr", "nat", "tun-not-given"])
def test_services_the_core_must_decide_go_up(prog: XdpProgram, maps: MhMaps, case: str) -> None:
    if case == "persistent":
        d, _ = director("192.168.168.100", SERVERS4, timeout=300)
    elif case == "threshold":
        d, _ = director("192.168.168.100", SERVERS4, u_threshold=100)
    else:
        d = Director(IPVSTable())
        key = ServiceKey.inet(Protocol.TCP, "192.168.168.100", 80)
        d.table.add_service(ServiceSpec(key, "rr" if case == "rr" else "mh"))
        fwd = {"rr": ForwardingMethod.DROUTE, "nat": ForwardingMethod.MASQ,
               "tun-not-given": ForwardingMethod.TUNNEL}[case]
        d.table.add_dest(key, DestSpec(ipaddress.ip_address("192.168.168.10"), 80, fwd))
    svc = next(iter(d.table.services()))
    assert unsuitable(svc, KINDS) is not None
    assert fill(maps, d) == 0
    for caddr, cport in clients(4, 50, seed=3):
        frame = packet(caddr, "192.168.168.100", cport, 80, flags=TCP_SYN)
        assert prog.test_run(frame) == (XDP_PASS, frame)
    if case == "tun-not-given":  # where the plane gives the program TUN flows, it may
        assert unsuitable(svc, KINDS | {FLOW_TUN}) is None


def test_a_syn_makes_a_flow_that_later_packets_use_and_the_core_enters(prog: XdpProgram,
                                                                       maps: MhMaps) -> None:
    d, _key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    svc = next(iter(d.table.services()))
    caddr, cport, vip = "192.168.168.60", 40000, "192.168.168.100"
    syn = packet(caddr, vip, cport, 80, flags=TCP_SYN, payload=b"")
    verdict, out = prog.test_run(syn)
    assert verdict == XDP_TX
    dest = next(r for r in svc.destinations if rs_mac(r.addr_packed) == out[:6])
    fkey = FlowKey(6, caddr, cport, vip, 80).pack()
    raw = prog.flow_get(fkey, ACTION.size)
    assert raw is not None
    v = unpack_value(raw)
    assert v.kernel and v.counters.packets == 1 and v.first_len == len(syn) - 14
    # a SYN retransmission of a known flow is the core's, as before
    assert prog.test_run(syn)[0] == XDP_PASS
    # the handshake's ACK and the data use the flow
    for _ in range(3):
        verdict, out = prog.test_run(packet(caddr, vip, cport, 80, flags=TCP_ACK))
        assert verdict == XDP_TX and out[:6] == rs_mac(dest.addr_packed)
    # the core enters it bound to the program's pick from the ring's records: the SYN counted,
    # the handshake's ACK (its own record) moved the entry on
    sink = XdpFlowSink(prog, director=d)
    assert sink.import_new() == 1
    conn = d.lookup(6, ipaddress.ip_address(caddr).packed, cport,
                    ipaddress.ip_address(vip).packed, 80)
    assert conn is not None and conn.dest is dest
    assert conn.state == TCP_S_ESTABLISHED and dest.activeconns == 1
    assert dest.stats.conns == 1 and dest.stats.inpkts == 1
    assert sink.count == 1 and sink.imported == 1
    # the sync reads what the flow forwarded since (the 3 ACKs), as for any flow
    for row_conn, direction, pkts, nbytes, _seen in sink.sync():
        d.account(row_conn, direction, pkts, nbytes)
    assert dest.stats.inpkts == 4
    # the FIN goes up; the core's entry takes the flow out when it leaves ESTABLISHED
    fin = packet(caddr, vip, cport, 80, flags=TCP_FIN | TCP_ACK)
    assert prog.test_run(fin) == (XDP_PASS, fin)
    d.tcp_packet(conn, 0, TCP_FIN | TCP_ACK)
    assert conn.state != TCP_S_ESTABLISHED


def test_an_import_when_the_table_changed_binds_the_programs_server(prog: XdpProgram,
                                                                    maps: MhMaps) -> None:
    d, key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    caddr, cport, vip = "192.168.168.61", 40001, "192.168.168.100"
    verdict, out = prog.test_run(packet(caddr, vip, cport, 80, flags=TCP_SYN))
    assert verdict == XDP_TX
    svc = next(iter(d.table.services()))
    dest = next(r for r in svc.destinations if rs_mac(r.addr_packed) == out[:6])
    # the server is quiesced before the core reads the queue: the connection stays on it
    d.table.edit_dest(key, DestSpec(dest.addr, 80, ForwardingMethod.DROUTE, 0))
    sink = XdpFlowSink(prog, director=d)
    assert sink.import_new() == 1
    conn = d.lookup(6, ipaddress.ip_address(caddr).packed, cport,
                    ipaddress.ip_address(vip).packed, 80)
    assert conn is not None and conn.dest is dest and conn.state == TCP_S_SYN_RECV
    assert dest.stats.conns == 1


def test_table_edits_reach_the_program(prog: XdpProgram, maps: MhMaps) -> None:
    d, key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    assert fill(maps, d) == 0  # nothing changed: nothing rewritten
    d.table.del_dest(key, ipaddress.ip_address("192.168.168.13"), 80)
    assert fill(maps, d) == 1
    svc = next(iter(d.table.services()))
    assert svc.scheduler is not None
    for caddr, cport in clients(4, 300, seed=11):
        want = svc.scheduler.schedule(ipaddress.ip_address(caddr).packed, cport,
                                      ipaddress.ip_address("192.168.168.100").packed, 80, 0.0)
        verdict, out = prog.test_run(packet(caddr, "192.168.168.100", cport, 80, flags=TCP_SYN))
        assert want is not None and verdict == XDP_TX and out[:6] == rs_mac(want.addr_packed)
    d.table.del_service(key)
    assert fill(maps, d) == 0 and not maps.live
    frame = packet("192.168.168.62", "192.168.168.100", 40002, 80, flags=TCP_SYN)
    assert prog.test_run(frame) == (XDP_PASS, frame)


def test_a_new_syn_on_a_closed_entry_is_a_new_connection(prog: XdpProgram, maps: MhMaps) -> None:
    d, _key = director("192.168.168.100", SERVERS4)
    fill(maps, d)
    caddr, cport, vip = "192.168.168.63", 40003, "192.168.168.100"
    ca, va = ipaddress.ip_address(caddr).packed, ipaddress.ip_address(vip).packed
    sink = XdpFlowSink(prog, director=d)
    syn = packet(caddr, vip, cport, 80, flags=TCP_SYN)
    assert prog.test_run(syn)[0] == XDP_TX
    assert prog.test_run(packet(caddr, vip, cport, 80, flags=TCP_ACK))[0] == XDP_TX
    assert sink.import_new() == 1
    first = d.lookup(6, ca, cport, va, 80)
    assert first is not None and first.state == TCP_S_ESTABLISHED
    d.tcp_packet(first, 0, TCP_RST)  # the connection ends; the core takes its flow out
    assert first.state == TCP_S_CLOSE
    sink.remove(6, ca, cport, va, 80)
    # the client reuses the port: the program schedules it, the core replaces the entry
    assert prog.test_run(syn)[0] == XDP_TX
    assert sink.import_new() == 1
    second = d.lookup(6, ca, cport, va, 80)
    assert second is not None and second is not first and second.state == TCP_S_SYN_RECV
    assert second.dest is first.dest and first.dest.stats.conns == 2


@pytest.mark.parametrize("edit", ["rr", "persistent", "threshold"])
def test_a_service_edited_out_of_reach_goes_back_to_the_core(prog: XdpProgram, maps: MhMaps,
                                                            edit: str) -> None:
    d, key = director("192.168.168.100", SERVERS4)
    assert fill(maps, d) == 1
    if edit == "threshold":
        d.table.edit_dest(key, DestSpec(ipaddress.ip_address("192.168.168.12"), 80,
                                        ForwardingMethod.DROUTE, 2, 50))
    else:
        d.table.edit_service(ServiceSpec(key, edit if edit == "rr" else "mh",
                                         ServiceFlags.PERSISTENT if edit == "persistent"
                                         else ServiceFlags.NONE, 300 if edit == "persistent" else 0))
    fill(maps, d)
    assert not maps.live
    frame = packet("192.168.168.64", "192.168.168.100", 40004, 80, flags=TCP_SYN)
    assert prog.test_run(frame) == (XDP_PASS, frame)


def test_tun_servers_get_the_slot_encapsulated_where_the_program_takes_tun(prog: XdpProgram,
                                                                          maps: MhMaps) -> None:
    d = Director(IPVSTable())
    key = ServiceKey.inet(Protocol.TCP, "192.168.168.100", 80)
    d.table.add_service(ServiceSpec(key, "mh"))
    for ip in ("192.168.168.10", "192.168.168.11"):
        d.table.add_dest(key, DestSpec(ipaddress.ip_address(ip), 80, ForwardingMethod.TUNNEL))
    svc = next(iter(d.table.services()))
    assert svc.scheduler is not None

    def tun_hop(ip: bytes) -> NextHop:
        return NextHop(LO, rs_mac(ip), DIRECTOR_MAC, ipaddress.ip_address("192.168.168.50").packed,
                       1500)

    assert maps.apply(wanted_tables(d.table.services(), KINDS | {FLOW_TUN}, tun_hop)) == 1
    for caddr, cport in clients(4, 200, seed=5):
        frame = packet(caddr, "192.168.168.100", cport, 80, flags=TCP_SYN)
        want = svc.scheduler.schedule(ipaddress.ip_address(caddr).packed, cport,
                                      ipaddress.ip_address("192.168.168.100").packed, 80, 0.0)
        assert want is not None
        verdict, out = prog.test_run(frame)
        assert verdict == XDP_TX and out[:6] == rs_mac(want.addr_packed)
        # IPIP: outer source the director's, destination the server's, the SYN inside as sent
        assert out[14 + 9] == 4 and out[14 + 12:14 + 16] == ipaddress.ip_address("192.168.168.50").packed
        assert out[14 + 16:14 + 20] == want.addr_packed and out[34:] == frame[14:]


@pytest.mark.parametrize("family,vip,servers", [(4, "192.168.168.100", SERVERS4),
                                                (6, "2001:db8::100", SERVERS6)], ids=["v4", "v6"])
@pytest.mark.parametrize("proto", [6, 17], ids=["tcp", "udp"])
def test_nat_servers_get_the_destination_rewritten_where_the_program_takes_nat(
        prog: XdpProgram, maps: MhMaps, family: int, vip: str, servers: list[tuple[str, int]],
        proto: int) -> None:
    """A NAT service's new connection: the frame the program sends is the client's with the
    destination the scheduler's server and its port (8080, not the VIP's 80), every checksum
    right (the expected frame is built from scratch), and the core enters a NAT connection."""
    d = Director(IPVSTable())
    key = ServiceKey.inet(Protocol(proto), vip, 80)
    d.table.add_service(ServiceSpec(key, "mh"))
    for ip, weight in servers:
        d.table.add_dest(key, DestSpec(ipaddress.ip_address(ip), 8080, ForwardingMethod.MASQ,
                                       weight))
    svc = next(iter(d.table.services()))
    assert svc.scheduler is not None
    assert unsuitable(svc, KINDS) is not None  # where the program does not take NAT flows
    nat = KINDS | {FLOW_NAT_DST, FLOW_NAT_SRC}
    assert maps.apply(wanted_tables(d.table.services(), nat, resolve)) == 1 and maps.nat
    vaddr = ipaddress.ip_address(vip).packed
    sink = XdpFlowSink(prog, director=d)
    picked = set()
    flows = clients(family, 300, seed=17 + proto + family)
    for caddr, cport in flows:
        want = svc.scheduler.schedule(ipaddress.ip_address(caddr).packed, cport, vaddr, 80, 0.0)
        assert want is not None
        rs = str(want.addr)
        verdict, out = prog.test_run(packet(caddr, vip, cport, 80, proto=proto, flags=TCP_SYN))
        assert verdict == XDP_TX
        assert out == packet(caddr, rs, cport, 8080, proto=proto, flags=TCP_SYN,
                             dmac=rs_mac(want.addr_packed), smac=DIRECTOR_MAC)
        picked.add(rs)
    assert len(picked) == len(servers)
    assert sink.import_new() == len(flows)
    for caddr, cport in flows:
        conn = d.lookup(proto, ipaddress.ip_address(caddr).packed, cport, vaddr, 80)
        assert conn is not None and conn.dest.fwd is ForwardingMethod.MASQ
        # the reply's lookup finds it: the core rewrites the server's answers back
        assert d.lookup_reply(proto, conn.daddr, 8080, conn.caddr, cport) is conn
    maps.clear()
    assert not maps.nat


GW_MAC = bytes.fromhex("02ee000000fe")


@pytest.mark.parametrize("where", ["on-link", "gateway", "no-route"])
@pytest.mark.parametrize("family,vip,client,rs", [
    (4, "192.168.168.100", "192.168.168.60", "10.168.0.10"),
    (6, "2001:db8::100", "2001:db8::60", "2001:db8:1::10"),
], ids=["v4", "v6"])
def test_a_nat_connection_scheduled_here_is_answered_from_here(
        prog: XdpProgram, maps: MhMaps, where: str, family: int, vip: str, client: str,
        rs: str) -> None:
    """The program makes a NAT connection's reply flow with it where the core's routes say
    where the client is (its network on the interface the SYN came in on: the SYN's source MAC;
    else the default route's resolved gateway): the server's SYN-ACK and replies go back from
    here, source the VIP again, and the core's entry stays SYN_RECV until the client's ACK.
    With no route the reply flow is not made and the SYN-ACK goes up, as before."""
    d = Director(IPVSTable())
    key = ServiceKey.inet(Protocol.TCP, vip, 80)
    d.table.add_service(ServiceSpec(key, "mh"))
    d.table.add_dest(key, DestSpec(ipaddress.ip_address(rs), 8080, ForwardingMethod.MASQ))
    maps.apply(wanted_tables(d.table.services(), KINDS | {FLOW_NAT_DST, FLOW_NAT_SRC}, resolve))
    net = ipaddress.ip_network(f"{client}/{24 if family == 4 else 64}", strict=False)
    mask = int(net.netmask)
    lo = Interface(LO, "lo", DIRECTOR_MAC, b"", mtu=1500)
    if where == "on-link":
        if family == 4:
            lo.networks.append((int(net.network_address), mask))
        else:
            lo.networks6.append((int(net.network_address), mask))
    gw_ip = ipaddress.ip_address("192.168.168.1" if family == 4 else "2001:db8::1").packed
    gw = (LO, gw_ip) if where == "gateway" else None
    maps.set_hops(reply_routes([lo], gw if family == 4 else None, gw if family == 6 else None,
                               {gw_ip: GW_MAC}))
    cport = 40123
    syn = packet(client, vip, cport, 80, flags=TCP_SYN, payload=b"")
    verdict, out = prog.test_run(syn)
    assert verdict == XDP_TX
    assert out == packet(client, rs, cport, 8080, flags=TCP_SYN, payload=b"",
                         dmac=rs_mac(ipaddress.ip_address(rs).packed), smac=DIRECTOR_MAC)
    synack = packet(rs, client, 8080, cport, flags=TCP_SYN | TCP_ACK, payload=b"",
                    smac=rs_mac(ipaddress.ip_address(rs).packed))
    verdict, out = prog.test_run(synack)
    if where == "no-route":
        assert (verdict, out) == (XDP_PASS, synack)
        return
    back = GW_MAC if where == "gateway" else CLIENT_MAC
    assert verdict == XDP_TX
    assert out == packet(vip, client, 80, cport, flags=TCP_SYN | TCP_ACK, payload=b"",
                         dmac=back, smac=DIRECTOR_MAC)
    # the core enters the connection with both flows; the SYN-ACK leaves it in SYN_RECV
    sink = XdpFlowSink(prog, director=d)
    assert sink.import_new() == 1 and sink.count == 2
    ca, va = ipaddress.ip_address(client).packed, ipaddress.ip_address(vip).packed
    conn = d.lookup(6, ca, cport, va, 80)
    assert conn is not None and conn.state == TCP_S_SYN_RECV
    fw = Forwarder(d, [lo])
    fw.flows = sink
    assert fw.sync_flows() == 1  # the SYN-ACK, an output packet of the entry
    assert conn.state == TCP_S_SYN_RECV and conn.dest.stats.outpkts == 1
    # the handshake's ACK and the data in, a reply out: all here
    for flags in (TCP_ACK, TCP_ACK | TCP_PSH):
        assert prog.test_run(packet(client, vip, cport, 80, flags=flags))[0] == XDP_TX
    verdict, out = prog.test_run(packet(rs, client, 8080, cport))
    assert verdict == XDP_TX and out == packet(vip, client, 80, cport, dmac=back,
                                               smac=DIRECTOR_MAC)
    sink.import_new()
    assert conn.state == TCP_S_ESTABLISHED
    fw.sync_flows()
    assert conn.dest.stats.inpkts == 3 and conn.dest.stats.outpkts == 2
    # the server's FIN goes up: the core takes both flows out
    fin = packet(rs, client, 8080, cport, flags=TCP_FIN | TCP_ACK)
    assert prog.test_run(fin) == (XDP_PASS, fin)
    d.tcp_packet(conn, 1, TCP_FIN | TCP_ACK)
    for k in (FlowKey(6, client, cport, vip, 80), FlowKey(6, rs, 8080, client, cport)):
        sink.remove(6, ipaddress.ip_address(k.saddr).packed, k.sport,
                    ipaddress.ip_address(k.daddr).packed, k.dport)
        assert prog.flow_get(k.pack(), ACTION.size) is None


def nat_on_link(maps: MhMaps) -> Director:
    """An mh NAT service (one server, 10.168.0.10:8080) in the program, whose clients on
    192.168.168.0/24 (lo's network here) it answers itself."""
    d = Director(IPVSTable())
    key = ServiceKey.inet(Protocol.TCP, "192.168.168.100", 80)
    d.table.add_service(ServiceSpec(key, "mh"))
    d.table.add_dest(key, DestSpec(ipaddress.ip_address("10.168.0.10"), 8080,
                                   ForwardingMethod.MASQ))
    maps.apply(wanted_tables(d.table.services(), KINDS | {FLOW_NAT_DST, FLOW_NAT_SRC}, resolve))
    lo = Interface(LO, "lo", DIRECTOR_MAC, b"", mtu=1500)
    lo.networks.append((int(ipaddress.ip_address("192.168.168.0")), 0xFFFFFF00))
    maps.set_hops(reply_routes([lo], None, None, {}))
    return d


def test_a_nat_connection_whose_record_was_lost_is_repaired_with_its_reply_flow(
        prog: XdpProgram, maps: MhMaps) -> None:
    """The ring's record lost (full ring): the sync enters the connection from the flow map,
    and the reply flow the program made with it is the sink's too (both leave together)."""
    d = nat_on_link(maps)
    assert prog.test_run(packet("192.168.168.61", "192.168.168.100", 40200, 80,
                                flags=TCP_SYN))[0] == XDP_TX
    assert prog.stats()["mh_reply"] >= 1
    while prog.read_new_flows(NEW_FLOW.size, 1 << 20):  # the record is lost
        pass
    sink = XdpFlowSink(prog, director=d)
    sink.sync()
    assert sink.repaired == 1 and sink.count == 2
    conn = d.lookup(6, ipaddress.ip_address("192.168.168.61").packed, 40200,
                    ipaddress.ip_address("192.168.168.100").packed, 80)
    assert conn is not None and conn.state == TCP_S_SYN_RECV
    # a RST leaves IPVS's SYN_RECV as it is (the flows stay); the client's FIN moves it on,
    # and both flows leave with it
    d.tcp_packet(conn, 0, TCP_RST)
    assert conn.state == TCP_S_SYN_RECV
    d.tcp_packet(conn, 0, TCP_FIN | TCP_ACK)
    for k in (FlowKey(6, "192.168.168.61", 40200, "192.168.168.100", 80),
              FlowKey(6, "10.168.0.10", 8080, "192.168.168.61", 40200)):
        sink.remove(6, ipaddress.ip_address(k.saddr).packed, k.sport,
                    ipaddress.ip_address(k.daddr).packed, k.dport)
        assert prog.flow_get(k.pack(), ACTION.size) is None
    assert sink.count == 0


def test_a_reply_flow_whose_way_in_is_gone_is_removed(prog: XdpProgram, maps: MhMaps) -> None:
    """The program made a NAT connection's two flows; the way in left the map before the core
    read the record (evicted). The next sync finds the reply flow with no connection behind it
    and removes it, rather than let it answer for a connection the core does not have; a reply
    flow whose way in is still there waits for its repair instead."""
    d = nat_on_link(maps)
    for cport in (40300, 40301):
        assert prog.test_run(packet("192.168.168.62", "192.168.168.100", cport, 80,
                                    flags=TCP_SYN))[0] == XDP_TX
    while prog.read_new_flows(NEW_FLOW.size, 1 << 20):  # both records lost
        pass
    gone = FlowKey(6, "192.168.168.62", 40300, "192.168.168.100", 80)
    assert prog.flow_delete(gone.pack())  # its way in evicted
    sink = XdpFlowSink(prog, director=d)
    sink.sync()
    assert sink.orphans == 1 and sink.repaired == 1 and sink.count == 2
    assert prog.flow_get(FlowKey(6, "10.168.0.10", 8080, "192.168.168.62", 40300).pack(),
                         ACTION.size) is None
    assert prog.flow_get(FlowKey(6, "10.168.0.10", 8080, "192.168.168.62", 40301).pack(),
                         ACTION.size) is not None
