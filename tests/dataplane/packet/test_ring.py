"""The TPACKET_V3 ring driver on a real veth pair: frames in, frames out, full rings, jumbo
frames. Runs inside a private network namespace."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, select, socket, struct, time
from pylvs.dataplane.packet.ring import PacketRing
from pylvs.dataplane.packet import codec

VA = bytes.fromhex(open("/sys/class/net/va/address").read().strip().replace(":", ""))

def frame(i, size=64):
    # addressed to va: the ring only takes frames for this host (and broadcasts)
    ip = codec.ipv4_header(b"\x0a\0\0\1", b"\x0a\0\0\2", 17, size - 34, ident=i & 0xffff)
    return codec.ethernet(VA, b"\x02\0\0\0\0\x0b", codec.ETH_P_IP) + ip + bytes(size - 34)

ring = PacketRing("va")
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
seen, big = 0, 0
try:
    while True:
        data, addr = peer.recvfrom(9000)
        if addr[2] == 4 or data[6:12] != b"\x02\0\0\0\0\x0b":
            continue  # our own sends, or the kernel's IPv6 chatter on a new link
        if len(data) == 4000:
            big += 1
        else:
            seen += 1
except socket.timeout:
    pass
print(json.dumps({"in": len(got), "in_ids": sorted(set(got)) == list(range(500)), "out": seen,
                  "big": big, "full": ring.tx_ring_full, "errors": ring.tx_errors}))
ring.close()
"""


def test_ring_receives_and_sends_on_a_veth_pair() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and AF_PACKET")
    ns = f"plring{os.getpid() % 10000}{random.randrange(100)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "link", "add", "va", "mtu", "9000", "type", "veth", "peer", "name", "vb",
                     "mtu", "9000"],
                    ["ip", "link", "set", "va", "up"], ["ip", "link", "set", "vb", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert res["in"] == 500 and res["in_ids"], res
    assert res["full"] == 0 and res["errors"] == 0
    assert res["out"] == 3000
    assert res["big"] == 1
