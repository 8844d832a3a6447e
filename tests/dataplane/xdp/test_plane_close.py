"""The XDP plane's close enters the connections the program scheduled and the core has not read
yet (a planned restart saves its table right after): a director process in a namespace of its
own opens the plane on a veth, the program schedules SYNs (BPF_PROG_TEST_RUN) whose records
wait in the ring, and after ``close`` every one is in the core's table on the program's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from pylvs.dataplane.xdp.loader import XdpProgram, XdpUnavailable

SCRIPT = r"""
import ipaddress, json, sys
from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.core.table import IPVSTable
from pylvs.dataplane.xdp.plane import XdpDataPlane
from tests.dataplane.xdp.frames import TCP_SYN, packet

n = int(sys.argv[1])
d = Director(IPVSTable())
key = ServiceKey.inet(Protocol.TCP, "10.77.0.100", 80)
d.table.add_service(ServiceSpec(key, "mh"))
for rip in ("10.77.0.10", "10.77.0.11"):
    d.table.add_dest(key, DestSpec(ipaddress.ip_address(rip), 80, ForwardingMethod.DROUTE))
plane = XdpDataPlane(d, interfaces=["xr0"])
plane.open()
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


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def test_close_enters_what_the_program_scheduled() -> None:
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
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        out = subprocess.run([*run, sys.executable, "-c", SCRIPT, "3000"], capture_output=True,
                             text=True, timeout=120, cwd=root)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert result["scheduled"] == 3000
        assert result["before"] == 0  # nothing read from the ring before the close
        assert result["after"] == 3000 and result["right"] == 3000, result
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
