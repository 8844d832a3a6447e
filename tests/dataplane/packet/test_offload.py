"""Partial checksums and super-frames (``offload``): completed and cut as a device would, and
never an exception on arbitrary bytes."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.model import ForwardingMethod
from pylvs.dataplane.packet import codec, offload
from pylvs.dataplane.packet.ring import fastpath_built
from tests.dataplane.packet.test_forward import CLIENT, CLIENT_MAC, DIR_MAC, VIP, make

SADDR, DADDR = bytes((192, 168, 168, 60)), bytes((192, 168, 168, 100))


def tcp_frame(payload: bytes, flags: int = codec.TCP_ACK | codec.TCP_PSH, seq: int = 1000,
              partial: bool = False, ident: int = 7) -> bytearray:
    """An Ethernet/IPv4/TCP frame; ``partial``: the checksum field holds only the
    pseudo-header sum, as a sender with TX checksum offload leaves it."""
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, seq, 1, 5 << 4, flags, 65535, 0, 0))
    seg_len = len(tcp) + len(payload)
    pseudo = SADDR + DADDR + bytes((0, codec.IPPROTO_TCP)) + seg_len.to_bytes(2, "big")
    if partial:
        struct.pack_into("!H", tcp, 16, codec.ones_sum(pseudo))
    else:
        struct.pack_into("!H", tcp, 16, codec.l4_checksum(SADDR, DADDR, codec.IPPROTO_TCP,
                                                          bytes(tcp) + payload))
    ip = codec.ipv4_header(SADDR, DADDR, codec.IPPROTO_TCP, seg_len, ident=ident)
    return bytearray(codec.ethernet(DIR_MAC, CLIENT_MAC, codec.ETH_P_IP) + ip + bytes(tcp) + payload)


def valid_l4(frame: bytes | bytearray) -> bool:
    ihl = (frame[14] & 0x0F) << 2
    end = 14 + struct.unpack_from("!H", frame, 16)[0]
    return codec.ones_sum(frame[14:14 + ihl]) == 0xFFFF and codec.l4_checksum_ok(
        frame, 14, 14 + ihl, end, frame[23])


def test_partial_checksum_is_completed_to_the_full_one() -> None:
    payload = bytes(range(256)) * 3 + b"x"
    full = tcp_frame(payload)
    part = tcp_frame(payload, partial=True)
    assert part != full and not valid_l4(part)
    vnet = offload.VNET_HDR.pack(offload.VNET_NEEDS_CSUM, 0, 0, 0, 34, 16)
    meta = offload.rx_meta(vnet, part, 0, 0x80)
    assert meta == offload.META_CSUM_OK
    assert part == full


def test_partial_checksum_without_a_vnet_header_uses_the_frames_headers() -> None:
    part = tcp_frame(b"hello", partial=True)
    assert offload.rx_meta_plain(part, 1 << 3, 1 << 3, 1 << 7) == offload.META_CSUM_OK
    assert valid_l4(part)


def test_device_verified_frame_is_marked_and_not_touched() -> None:
    f = tcp_frame(b"abc")
    f[-1] ^= 0xFF  # would fail verification: the mark alone decides
    before = bytes(f)
    assert offload.rx_meta(bytes(10), f, 0x80, 0x80) == offload.META_CSUM_OK
    assert offload.rx_meta(bytes((offload.VNET_DATA_VALID,)) + bytes(9), f, 0, 0x80) == 1
    assert offload.rx_meta(bytes(10), f, 0, 0x80) == 0
    assert bytes(f) == before


def test_offsets_outside_the_packet_leave_it_unchecked() -> None:
    f = tcp_frame(b"abc", partial=True)
    before = bytes(f)
    vnet = offload.VNET_HDR.pack(offload.VNET_NEEDS_CSUM, 0, 0, 0, 34, 4000)
    assert offload.rx_meta(vnet, f, 0, 0x80) == 0
    assert bytes(f) == before


def test_super_frame_is_cut_at_the_senders_mss_with_full_checksums() -> None:
    payload = bytes(i & 0xFF for i in range(10000))
    big = tcp_frame(payload, flags=codec.TCP_ACK | codec.TCP_PSH | codec.TCP_FIN, seq=5,
                    partial=True, ident=100)
    segs = offload.segment(big, offload.GSO_TCPV4, 1448)
    assert segs is not None and len(segs) == 7
    assert b"".join(bytes(s[54:]) for s in segs) == payload
    for i, s in enumerate(segs):
        assert valid_l4(s), i
        assert len(s) <= 14 + 20 + 20 + 1448
        assert struct.unpack_from("!I", s, 38)[0] == 5 + 1448 * i
        assert struct.unpack_from("!H", s, 18)[0] == 100 + i
        last = i == len(segs) - 1
        assert bool(s[47] & codec.TCP_FIN) == last and bool(s[47] & codec.TCP_PSH) == last


def test_forwarder_cuts_a_super_frame_before_it_reaches_a_real_server() -> None:
    fw, _d = make(ForwardingMethod.MASQ)
    syn = tcp_frame(b"", flags=codec.TCP_SYN)
    assert fw.handle(2, syn) is not None
    assert fw.handle(2, tcp_frame(b"", flags=codec.TCP_ACK)) is not None
    fw.side_frames.clear()
    big = tcp_frame(bytes(5000), partial=True)
    meta = offload.GSO_TCPV4 << offload.META_GSO_SHIFT_TYPE | 1400 << offload.META_GSO_SHIFT_SIZE
    assert fw.handle(2, big, meta) is None
    outs = fw.side_frames
    assert len(outs) == 4 and fw.gso_split == 1
    for _idx, f in outs:
        assert len(f) <= 1514 and valid_l4(f)
        assert bytes(f[30:34]) != VIP  # NAT: to the real server


def test_new_connection_with_a_known_good_checksum_is_not_verified_again() -> None:
    fw, _d = make(ForwardingMethod.DROUTE)
    bad = tcp_frame(b"", flags=codec.TCP_SYN)
    bad[50] ^= 0x55  # the checksum field: wrong
    assert fw.handle(2, bytearray(bad)) is None
    assert fw.drops.get("bad_l4_checksum") == 1
    assert fw.handle(2, bytearray(bad), offload.META_CSUM_OK) is not None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFF), st.integers(0, 0xFFFF),
       st.integers(0, 400), st.integers(0, 400))
def test_arbitrary_bytes_never_raise(data: bytes, gso_type: int, gso_size: int, cstart: int,
                                     coff: int) -> None:
    frame = bytearray(data)
    vnet = offload.VNET_HDR.pack(offload.VNET_NEEDS_CSUM, 0, 0, gso_size, cstart, coff)
    offload.rx_meta(vnet, frame, 0, 0x80)
    offload.rx_meta_plain(frame, 1 << 3, 1 << 3, 1 << 7)
    segs = offload.segment(bytearray(data), gso_type, gso_size)
    if segs is not None:  # each segment: at most the headers and gso_size payload bytes
        assert all(len(s) <= 14 + 60 + 60 + gso_size for s in segs)
    fw, _d = make(ForwardingMethod.MASQ)
    meta = gso_type << offload.META_GSO_SHIFT_TYPE | gso_size << offload.META_GSO_SHIFT_SIZE
    fw.handle(2, bytearray(data), meta)


def test_client_address_is_the_test_clients() -> None:
    # the frames built here are the forwarder tests' client (their scheduling relies on it)
    assert SADDR == CLIENT


RING_SCRIPT = r"""
import json, select, socket, struct, time
from pylvs.dataplane.packet import codec, offload
from pylvs.dataplane.packet.ring import PacketRing

VA = bytes.fromhex(open("/sys/class/net/va/address").read().strip().replace(":", ""))
S, D = b"\x0a\0\0\1", b"\x0a\0\0\2"

def frame(i, partial):
    udp = bytearray(struct.pack("!HHHH", 1000 + i, 80, 8 + 100, 0) + bytes(range(100)))
    if partial:  # what a TX-offloading sender leaves: the pseudo-header sum only
        struct.pack_into("!H", udp, 6, codec.ones_sum(S + D + b"\0\x11" + len(udp).to_bytes(2, "big")))
    else:
        struct.pack_into("!H", udp, 6, codec.l4_checksum(S, D, 17, udp) or 0xFFFF)
    ip = codec.ipv4_header(S, D, 17, len(udp))
    return codec.ethernet(VA, b"\x02\0\0\0\0\x0b", codec.ETH_P_IP) + ip + bytes(udp)

ring = PacketRing("va", fast=FAST)
assert ring.vnet_len == 10
peer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
peer.setsockopt(263, 15, 1)  # PACKET_VNET_HDR: the peer sends as a TX-offloading stack does
peer.bind(("vb", 0))
for i in range(20):
    partial = i % 2 == 0
    vnet = offload.VNET_HDR.pack(offload.VNET_NEEDS_CSUM, 0, 0, 0, 34, 6) if partial else bytes(10)
    peer.send(vnet + frame(i, partial))
got = []
src = ring.fast if ring.fast is not None else ring
deadline = time.monotonic() + 5
while len(got) < 20 and time.monotonic() < deadline:
    select.select([ring], [], [], 0.2)
    ring.receive(lambda f: got.append((bytes(f), src.rx_meta)))
ok = [codec.l4_checksum_ok(f, 14, 34, len(f), 17) for f, _m in got]
# partial ones completed (marked good); whole ones no device verified (left to verify)
metas = all(m == (1 if (int.from_bytes(f[34:36], "big") - 1000) % 2 == 0 else 0) for f, m in got)
print(json.dumps({"n": len(got), "ok": all(ok), "metas": metas,
                  "same": all(f == frame(int.from_bytes(f[34:36], "big") - 1000, False)
                              for f, _m in got)}))
ring.close()
"""


@pytest.mark.parametrize("fast", [False, True], ids=["python", "c"])
def test_ring_completes_partial_checksums_from_a_real_sender(fast: bool) -> None:
    """Frames sent with NEEDS_CSUM arrive checksum-not-ready; both ring walks hand them on
    with the checksum the sender's device would have written, marked good."""
    if fast and not fastpath_built():
        pytest.skip("the C hot path is not built (no compiler at install)")
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and AF_PACKET")
    ns = f"ploff{os.getpid() % 10000}{random.randrange(100)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"],
                    ["ip", "link", "set", "va", "up"], ["ip", "link", "set", "vb", "up"]):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                            f"FAST = {fast}\n" + RING_SCRIPT],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert res == {"n": 20, "ok": True, "metas": True, "same": True}, res
