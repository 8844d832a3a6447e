"""The XDP plane's mh tables over its life, each test a director process in a namespace of its own
that opens the plane on a veth and runs SYNs through the program (BPF_PROG_TEST_RUN):

- ``close`` enters the connections the program scheduled and the core has not read yet (a
  planned restart saves its table right after): every one is in the core's table on the
  program's server;
- a NAT connection the program scheduled goes both ways, the server's replies through the
  core (which enters the connection as soon as the first one comes) until the reply flow is in;
- while the core's flood defences hold new connections (``drop_packet`` dropping, the table
  full) the program schedules none: they go up, where the core drops, makes room or refuses
  as IPVS does; the program takes them back once the defences let go."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from pylvs.dataplane.xdp.loader import XdpProgram, XdpUnavailable

# an mh DR service of two real servers under the XDP plane on xr0 (argv[1]: max_connections)
SETUP = r"""
import ipaddress, json, sys
from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.core.table import IPVSTable
from pylvs.dataplane.xdp.loader import XDP_PASS
from pylvs.dataplane.xdp.plane import XdpDataPlane
from tests.dataplane.xdp.frames import TCP_SYN, packet

d = Director(IPVSTable(), max_connections=int(sys.argv[1]))
key = ServiceKey.inet(Protocol.TCP, "10.77.0.100", 80)
d.table.add_service(ServiceSpec(key, "mh"))
for rip in ("10.77.0.10", "10.77.0.11"):
    d.table.add_dest(key, DestSpec(ipaddress.ip_address(rip), 80, ForwardingMethod.DROUTE))
plane = XdpDataPlane(d, interfaces=["xr0"])
plane.open()
"""

SCRIPT = SETUP + r"""
n = int(sys.argv[2])
assert plane.mh is not None and len(plane.mh.live) == 1, "the service's table is not live"
prog = plane.program
assert prog is not None
sent = {}
for i in range(n):
    caddr = str(ipaddress.IPv4Address(0x0A500000 + i))
    verdict, out = prog.test_run(packet(caddr, "10.77.0.100", 1024 + i, 80, flags=TCP_SYN))
    sent[caddr] = out[:6].hex()
before = d.connection_count
scheduled = prog.stats()["mh_scheduled"]
plane.close()
macs = {"10.77.0.10": "02bb00000010", "10.77.0.11": "02bb00000011"}
right = 0
for i, (caddr, mac) in enumerate(sent.items()):
    conn = d.lookup(6, ipaddress.ip_address(caddr).packed, 1024 + i,
                    ipaddress.ip_address("10.77.0.100").packed, 80)
    right += conn is not None and macs[str(ipaddress.ip_address(conn.daddr))] == mac
print(json.dumps({"before": before, "after": d.connection_count, "right": right,
                  "scheduled": scheduled}))
"""


HELD = SETUP + r"""
prog = plane.program
port = [1024]

def syns(n):
    # n SYNs of new connections: how many the program scheduled, how many went up
    before = prog.stats()["mh_scheduled"]
    up = 0
    for _ in range(n):
        port[0] += 1
        up += prog.test_run(packet("10.80.0.1", "10.77.0.100", port[0], 80,
                                   flags=TCP_SYN))[0] == XDP_PASS
    return prog.stats()["mh_scheduled"] - before, up

out = {"open": syns(10)}
d.table.set_sysctl({"drop_packet": 3, "am_droprate": 10})  # "always": 1 in 10 dropped
plane.poll_once(0)
out["drop_packet"] = syns(10) + (len(plane.mh.live), plane.mh_held)
d.table.set_sysctl({"drop_packet": 0})
plane.poll_once(0)
out["drop_packet off"] = syns(20)
plane.split.xdp.import_new()  # the core enters the 30 connections: 30 of 50
out["entered"] = d.connection_count
out["until full"] = syns(20)
plane.split.xdp.import_new()
plane.poll_once(0)
out["full"] = syns(10) + (len(plane.mh.live), plane.mh_held)
plane.close()
print(json.dumps(out))
"""


# an mh NAT service (servers on port 8080) the program schedules (flows "all": the fixtures'
# frames carry full checksums), one connection through it and back: the client's packets in the
# program, the server's replies through the core until it installs the reply flow (sent with
# redirects to xr0: BPF_PROG_TEST_RUN's frames come in on no interface)
NAT = r"""
import ipaddress, json, socket
from pylvs.core.conntrack import TCP_S_ESTABLISHED
from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.core.table import IPVSTable
from pylvs.dataplane.xdp.loader import XDP_PASS, XDP_REDIRECT
from pylvs.dataplane.xdp.plane import XdpDataPlane
from tests.dataplane.xdp.frames import TCP_ACK, TCP_PSH, TCP_SYN, packet

d = Director(IPVSTable())
key = ServiceKey.inet(Protocol.TCP, "10.77.0.100", 80)
d.table.add_service(ServiceSpec(key, "mh"))
for rip in ("10.77.0.10", "10.77.0.11"):
    d.table.add_dest(key, DestSpec(ipaddress.ip_address(rip), 8080, ForwardingMethod.MASQ))
plane = XdpDataPlane(d, interfaces=["xr0"], xdp_flows="all")
plane.open()
prog, fw = plane.program, plane.forwarder
ifx = socket.if_nametoindex("xr0")
mine = bytes.fromhex(open("/sys/class/net/xr0/address").read().strip().replace(":", ""))
client, cport, vip = "10.77.0.50", 40000, "10.77.0.100"
cmac = bytes.fromhex("02cc00000050")
out = {"nat": plane.mh.nat, "live": len(plane.mh.live)}
v, f = prog.test_run(packet(client, vip, cport, 80, flags=TCP_SYN, payload=b"", smac=cmac))
rs = str(ipaddress.ip_address(bytes(f[30:34])))
rmac = bytes.fromhex("02bb000000" + rs.rsplit(".", 1)[1])
out["syn"] = [v == XDP_REDIRECT, f == packet(client, rs, cport, 8080, flags=TCP_SYN, payload=b"",
                                       dmac=rmac, smac=mine)]
out["entered before the reply"] = d.connection_count
synack = packet(rs, client, 8080, cport, flags=TCP_SYN | TCP_ACK, payload=b"", smac=rmac)
v, _ = prog.test_run(synack)
res = fw.handle(ifx, bytearray(synack))
out["synack"] = [v == XDP_PASS, res is not None and bytes(res[1]) == packet(
    vip, client, 80, cport, flags=TCP_SYN | TCP_ACK, payload=b"", dmac=cmac, smac=mine)]
ok = True
for fl in (TCP_ACK, TCP_ACK | TCP_PSH):
    v, f = prog.test_run(packet(client, vip, cport, 80, flags=fl, smac=cmac))
    ok &= v == XDP_REDIRECT and f == packet(client, rs, cport, 8080, flags=fl, dmac=rmac, smac=mine)
out["client in the program"] = ok
plane.split.xdp.import_new()
conn = d.lookup(6, ipaddress.ip_address(client).packed, cport, ipaddress.ip_address(vip).packed, 80)
out["established"] = conn is not None and conn.state == TCP_S_ESTABLISHED
reply = packet(rs, client, 8080, cport, smac=rmac)
back = packet(vip, client, 80, cport, dmac=cmac, smac=mine)
v, _ = prog.test_run(reply)
res = fw.handle(ifx, bytearray(reply))
v2, f2 = prog.test_run(reply)
out["reply"] = [v == XDP_PASS, res is not None and bytes(res[1]) == back, v2 == XDP_REDIRECT, f2 == back]
# a client behind the default route (10.77.0.60, resolved): the program makes the reply flow
# and the whole handshake stays in the kernel
far, gmac = "10.99.0.7", bytes.fromhex("02cc00000060")
v, f = prog.test_run(packet(far, vip, cport, 80, flags=TCP_SYN, payload=b"", smac=gmac))
rs2 = str(ipaddress.ip_address(bytes(f[30:34])))
rmac2 = bytes.fromhex("02bb000000" + rs2.rsplit(".", 1)[1])
v2, f2 = prog.test_run(packet(rs2, far, 8080, cport, flags=TCP_SYN | TCP_ACK, payload=b"",
                              smac=rmac2))
out["far"] = [v == XDP_REDIRECT, v2 == XDP_REDIRECT, f2 == packet(
    vip, far, 80, cport, flags=TCP_SYN | TCP_ACK, payload=b"", dmac=gmac, smac=mine)]
plane.close()
print(json.dumps(out))
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@contextlib.contextmanager
def director_ns() -> Iterator[tuple[str, ...]]:
    """A namespace with a veth (xr0, 10.77.0.1/24) whose real servers' MACs are known: the
    command prefix that runs in it."""
    try:
        XdpProgram().close()
    except XdpUnavailable as exc:
        pytest.skip(str(exc))
    ns = f"pylvs-xc-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", ns)
    try:
        run = ("ip", "netns", "exec", ns)
        sh(*run, "ip", "link", "add", "xr0", "type", "veth", "peer", "name", "xr1")
        sh(*run, "ip", "addr", "add", "10.77.0.1/24", "dev", "xr0")
        for dev in ("xr0", "xr1", "lo"):
            sh(*run, "ip", "link", "set", dev, "up")
        for last in ("10", "11"):  # the real servers' MACs, known before the plane opens
            sh(*run, "ip", "neigh", "replace", f"10.77.0.{last}", "lladdr",
               f"02:bb:00:00:00:{last}", "dev", "xr0", "nud", "permanent")
        for last in ("50", "60"):  # a client on the link, the default route's gateway
            sh(*run, "ip", "neigh", "replace", f"10.77.0.{last}", "lladdr",
               f"02:cc:00:00:00:{last}", "dev", "xr0", "nud", "permanent")
        sh(*run, "ip", "route", "add", "default", "via", "10.77.0.60")
        yield run
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def run_script(run: tuple[str, ...], script: str, *args: str) -> dict[str, object]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    out = subprocess.run([*run, sys.executable, "-c", script, *args], capture_output=True,
                         text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_the_core_decides_while_its_flood_defences_hold_new_connections() -> None:
    with director_ns() as run:
        r = run_script(run, HELD, "50")
    assert r["open"] == [10, 0]
    # drop_packet dropping: every SYN goes up (the core drops 1 in 10), no table is live
    assert r["drop_packet"] == [0, 10, 0, "drop_packet is dropping 1 in 10 new connections"], r
    assert r["drop_packet off"] == [20, 0]
    # the 10 the program forwarded before the plane saw drop_packet are entered, none dropped:
    # their SYNs have gone to the server already
    assert r["entered"] == 30
    assert r["until full"] == [20, 0]
    assert r["full"] == [0, 10, 0, "the connection table is full (50)"], r


def test_close_enters_what_the_program_scheduled() -> None:
    with director_ns() as run:
        result = run_script(run, SCRIPT, "1000000", "3000")
    assert result["scheduled"] == 3000
    assert result["before"] == 0  # nothing read from the ring before the close
    assert result["after"] == 3000 and result["right"] == 3000, result


def test_a_nat_connection_the_program_scheduled_goes_both_ways() -> None:
    """The client's packets never leave the program. Where the program cannot answer for the
    connection (BPF_PROG_TEST_RUN's SYN comes in on lo, not on the client's link), the server's
    SYN-ACK goes up, reaches the core before it read the program's record, finds its connection
    (the plane reads the ring for it) and goes back rewritten; once established, the core's
    reply flow takes the rest. A client behind the default route is answered by the program
    (the reply flow it made with the connection, to the resolved gateway)."""
    with director_ns() as run:
        r = run_script(run, NAT)
    assert r["nat"] is True and r["live"] == 1
    assert r["syn"] == [True, True]
    assert r["entered before the reply"] == 0
    assert r["synack"] == [True, True], r
    assert r["client in the program"] is True
    assert r["established"] is True
    assert r["reply"] == [True, True, True, True], r
    assert r["far"] == [True, True, True], r
