"""The TPACKET_V3 ring driver on a real veth pair: frames in, frames out, full rings, jumbo
frames, with the Python ring walk and with the C one (``_fastpath.Ring``, which also owns the
TX slots). Runs inside a private network namespace."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from pylvs.dataplane.packet.ring import fastpath_built

SCRIPT = r"""
import json, select, socket, struct, time
from pylvs.dataplane.packet.ring import PacketRing
from pylvs.dataplane.packet import codec

VA = bytes.fromhex(open("/sys/class/net/va/address").read().strip().replace(":", ""))

def frame(i, size=64):
    # addressed to va: the ring only takes frames for this host (and broadcasts)
    ip = codec.ipv4_header(b"\x0a\0\0\1", b"\x0a\0\0\2", 17, size - 34, ident=i & 0xffff)
    return codec.ethernet(VA, b"\x02\0\0\0\0\x0b", codec.ETH_P_IP) + ip + bytes(size - 34)

ring = PacketRing("va", fast=FAST)
assert (ring.fast is not None) == FAST
peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
peer.bind(("vb", 3))
peer.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: hold all 3000 frames
peer.settimeout(0.5)
# in: frames sent on the peer arrive through the ring, each as a writable view
for i in range(500):
    peer.send(frame(i))
got, deadline = [], time.monotonic() + 10
while len(got) < 500 and time.monotonic() < deadline:
    select.select([ring], [], [], 0.2)
    def take(f):
        f[0] = f[0]  # writable in place
        got.append(struct.unpack_from("!H", f, 18)[0])
    ring.receive(take)
# out: more frames than the ring has slots, then one bigger than a slot
for i in range(3000):
    ring.queue(frame(i))
ring.flush()
ring.queue(frame(9999, 4000))
ring.flush()
# the vnet header of a queued slot: hdr_len the whole frame (the kernel copies it whole into
# its skb, ring.py _TX_VNET), or 0 with tx_linear off; the frame arrives the same either way
from pylvs.dataplane.packet.ring import TPACKET3_HDRLEN, TP_STATUS_SEND_REQUEST
hdr_len = {}
for linear in (False, True):
    ring.tx_linear = linear
    ring.queue(frame(7000 + linear, 100))
    for k in range(ring.tx_nr):
        at = ring.rx_size + k * ring.frame_size
        if struct.unpack_from("=I", ring.mm, at + 20)[0] == TP_STATUS_SEND_REQUEST:
            hdr_len[linear] = struct.unpack_from("<H", ring.mm, at + TPACKET3_HDRLEN + 2)[0]
    ring.flush()
seen, big, hundred = 0, 0, []
try:
    while True:
        data, addr = peer.recvfrom(9000)
        if addr[2] == 4 or data[6:12] != b"\x02\0\0\0\0\x0b":
            continue  # our own sends, or the kernel's IPv6 chatter on a new link
        if len(data) == 4000:
            big += 1
        elif len(data) == 100:
            hundred.append(data == frame(struct.unpack_from("!H", data, 18)[0], 100))
        else:
            seen += 1
except socket.timeout:
    pass
# a callback that raises: the exception comes out, and its block is not read a second time
for i in range(1000, 1003):
    peer.send(frame(i))
time.sleep(0.1)
seen_ids = []
def fail(f):
    seen_ids.append(struct.unpack_from("!H", f, 18)[0])
    raise RuntimeError("callback failed")
raised = False
try:
    ring.receive(fail)
except RuntimeError:
    raised = True
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    ring.receive(lambda f: seen_ids.append(struct.unpack_from("!H", f, 18)[0]))
    time.sleep(0.05)
print(json.dumps({"in": len(got), "in_ids": sorted(set(got)) == list(range(500)), "out": seen,
                  "big": big, "full": ring.tx_ring_full, "errors": ring.tx_errors,
                  "raised": raised, "no_reread": len(seen_ids) == len(set(seen_ids)),
                  "hdr_len": [hdr_len.get(False), hdr_len.get(True)], "hundred": sorted(hundred)}))
ring.close()
"""


@pytest.mark.parametrize("fast", [False, True], ids=["python", "c"])
def test_ring_receives_and_sends_on_a_veth_pair(fast: bool) -> None:
    if fast and not fastpath_built():
        pytest.skip("the C hot path is not built (no compiler at install)")
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and AF_PACKET")
    ns = f"plring{os.getpid() % 10000}{random.randrange(100)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "link", "add", "va", "mtu", "9000", "type", "veth", "peer", "name", "vb",
                     "mtu", "9000"],
                    ["ip", "link", "set", "va", "up"], ["ip", "link", "set", "vb", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                            f"FAST = {fast}\n" + SCRIPT],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert res["in"] == 500 and res["in_ids"], res
    assert res["full"] == 0 and res["errors"] == 0
    assert res["out"] == 3000
    assert res["big"] == 1
    assert res["hdr_len"] == [0, 100] and res["hundred"] == [True, True], res
    assert res["raised"] and res["no_reread"], res


FLOW_SCRIPT = r"""
import json, select, socket, time
from pylvs.dataplane.packet import _fastpath, codec
from pylvs.dataplane.packet.ring import PacketRing

VA = bytes.fromhex(open("/sys/class/net/va/address").read().strip().replace(":", ""))
VC = bytes.fromhex(open("/sys/class/net/vc/address").read().strip().replace(":", ""))
PEER = b"\x02\0\0\0\0\x0d"

def frame(sport):
    udp = bytearray(sport.to_bytes(2, "big") + b"\0\x50\0\x0a\0\0xy")
    ip = codec.ipv4_header(b"\x0a\0\0\1", b"\x0a\0\0\2", 17, len(udp))
    return codec.ethernet(VA, b"\x02\0\0\0\0\x0b", codec.ETH_P_IP) + ip + bytes(udp)

rin, rout = PacketRing("va", fast=True), PacketRing("vc", fast=True)
flows = _fastpath.FlowTable(16)
flows.attach(rin.fast)
flows.attach(rout.fast)
conn = object()
assert flows.install(17, b"\x0a\0\0\1", 1000, b"\x0a\0\0\2", 80, 0, b"", 0, rout.ifindex,
                     PEER + VC, conn, 0)
send = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
send.bind(("vb", 0))
sink = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sink.bind(("vd", 0x0800))
sink.settimeout(0.5)
for i in range(300):
    send.send(frame(1000 if i % 3 else 2000))  # two of three match the flow
to_python, deadline = [], time.monotonic() + 10
while rin.rx_frames < 300 and time.monotonic() < deadline:
    select.select([rin], [], [], 0.2)
    rin.receive(lambda f: to_python.append(bytes(f)), 0, flows)
rout.flush()
got = []
try:
    while True:
        data, addr = sink.recvfrom(2048)
        if addr[2] != 4:
            got.append(data)
except socket.timeout:
    pass
(row,) = flows.sync()
print(json.dumps({"python": len(to_python), "python_ports": sorted({f[34:36].hex() for f in to_python}),
                  "out": len(got), "macs_ok": all(g[0:12] == PEER + VC for g in got),
                  "ip_same": all(g[14:] == frame(1000)[14:] for g in got),
                  "fast": rin.fast_frames, "row": [row[0] is conn, row[1], row[2], row[3]],
                  "tx_sent": rout.tx_sent}))
rin.close()
rout.close()
"""


def test_c_flows_forward_between_rings_and_hand_the_rest_to_python() -> None:
    if not fastpath_built():
        pytest.skip("the C hot path is not built (no compiler at install)")
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and AF_PACKET")
    ns = f"plflow{os.getpid() % 10000}{random.randrange(100)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    ["ip", "link", "add", "vc", "type", "veth", "peer", "name", "vd"],
                    *(["ip", "link", "set", n, "up"] for n in ("va", "vb", "vc", "vd"))):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", FLOW_SCRIPT],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert res["python"] == 100 and res["python_ports"] == ["07d0"], res
    assert res["fast"] == 200 and res["out"] == 200 and res["tx_sent"] == 200, res
    assert res["macs_ok"] and res["ip_same"], res
    assert res["row"] == [True, 0, 200, 200 * 30], res


FILTER_SCRIPT = r"""
import json, select, socket, time
from pylvs.dataplane.packet import codec, codec6
from pylvs.dataplane.packet.ring import NdSocket, PacketRing

VA = bytes.fromhex(open("/sys/class/net/va/address").read().strip().replace(":", ""))
SRC = b"\x02\0\0\0\0\x0b"
A6, B6 = bytes.fromhex("20010db8" + "0" * 22 + "01"), bytes.fromhex("20010db8" + "0" * 22 + "02")
v4 = codec.ethernet(VA, SRC, codec.ETH_P_IP) + codec.ipv4_header(b"\x0a\0\0\1", b"\x0a\0\0\2", 17, 8) + bytes(8)
v6 = codec.ethernet(VA, SRC, 0x86DD) + codec6.ipv6_header(B6, A6, 17, 8) + bytes(8)
arp = codec.arp_request(SRC, b"\x0a\0\0\1", b"\x0a\0\0\2")
ns = codec6.neighbour_solicit(SRC, B6, A6)  # to the solicited-node group: a multicast frame
na = codec6.neighbour_advert(SRC, B6, VA, A6, codec6.NA_SOLICITED)  # unicast
ring, nd = PacketRing("va", fast=FAST), NdSocket("va")
send = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
send.bind(("vb", 0))
for f in (v4, v6, arp, ns, na):
    send.send(f)
in_ring, in_nd, deadline = [], [], time.monotonic() + 3
while time.monotonic() < deadline and (len(in_ring) < 2 or len(in_nd) < 2):
    select.select([ring, nd], [], [], 0.2)
    ring.receive(lambda f: in_ring.append(bytes(f[12:14]).hex()))
    nd.receive(lambda f: in_nd.append(f[54]) if f[6:12] == SRC else None)
time.sleep(0.3)
ring.receive(lambda f: in_ring.append(bytes(f[12:14]).hex()))
nd.receive(lambda f: in_nd.append(f[54]) if f[6:12] == SRC else None)
print(json.dumps({"ring": sorted(in_ring), "nd": sorted(in_nd)}))
ring.close(); nd.close()
"""


@pytest.mark.parametrize("fast", [False, True], ids=["python", "c"])
def test_ring_takes_ipv4_and_ipv6_and_the_nd_socket_takes_neighbour_discovery(fast: bool) -> None:
    if fast and not fastpath_built():
        pytest.skip("the C hot path is not built (no compiler at install)")
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and AF_PACKET")
    ns = f"plnd{os.getpid() % 10000}{random.randrange(100)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    ["ip", "link", "set", "va", "up"], ["ip", "link", "set", "vb", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                            f"FAST = {fast}\n" + FILTER_SCRIPT],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    # ARP and neighbour discovery never reach the ring; NS (multicast) and NA reach the ND socket
    assert res == {"ring": ["0800", "86dd"], "nd": [135, 136]}, res
