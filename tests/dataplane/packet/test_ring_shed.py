"""The C ring under overload, on a real veth pair in a private network namespace: SYNs that
waited in the ring longer than ``syn_max_lag`` are shed in C, every other frame still reaches
Python, a client's retransmission of a shed SYN is let through once, ``syn_max_lag=0`` sheds
nothing, and an IPv4 SYN's TCP checksum is checked in C (``META_CSUM_OK`` only when good).

No timing is asserted: the frames are read after they waited a set time, far past the lag
limit (a wait only grows), and the retransmissions are read well inside four times it."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from pylvs.dataplane.packet.ring import fastpath_built
from tests.dataplane.packet.conftest import run_in_namespace

COMMON = r"""
import json, select, socket, struct, time
from pylvs.dataplane.packet import codec, codec6, offload
from pylvs.dataplane.packet.ring import PacketRing

VA = bytes.fromhex(open("/sys/class/net/va/address").read().strip().replace(":", ""))
SRC = b"\x02\0\0\0\0\x0b"
A4, B4 = b"\x0a\0\0\1", b"\x0a\0\0\2"
A6, B6 = bytes.fromhex("20010db8" + "0" * 22 + "01"), bytes.fromhex("20010db8" + "0" * 22 + "02")

def seg(sport, flags, seq=1000, bad=False, v6=False):
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, 80, seq, 0, 5 << 4, flags, 65535, 0, 0))
    if v6:
        struct.pack_into("!H", tcp, 16, codec6.l4_checksum6(B6, A6, 6, tcp))
        return codec.ethernet(VA, SRC, 0x86DD) + codec6.ipv6_header(B6, A6, 6, len(tcp)) + bytes(tcp)
    c = codec.l4_checksum(B4, A4, 6, tcp)
    struct.pack_into("!H", tcp, 16, c ^ 0x5555 if bad else c)
    return codec.ethernet(VA, SRC, codec.ETH_P_IP) + codec.ipv4_header(B4, A4, 6, len(tcp)) + bytes(tcp)

ring = PacketRing("va", fast=True, syn_max_lag=1.0, **RING)
send = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
send.bind(("vb", 0))
got = []

def take(f):
    v6 = f[12] == 0x86
    l4 = 54 if v6 else 34
    # not the kernel's own chatter on a new link, nor the filler
    if f[6:12] == SRC and not 9000 <= (f[l4] << 8 | f[l4 + 1]) < 9500:
        got.append((v6, f[l4] << 8 | f[l4 + 1], f[l4 + 13], ring.fast.rx_meta & offload.META_CSUM_OK))

def read(wait):
    time.sleep(wait)
    del got[:]
    while True:
        r, _, _ = select.select([ring], [], [], 0.3)
        if not r:
            return sorted(got)
        ring.receive(take)

SYN, ACK, SYNACK = codec.TCP_SYN, codec.TCP_ACK, codec.TCP_SYN | codec.TCP_ACK
res = {}

FILL = [seg(9000 + i, ACK) for i in range(30)]

def phase(name, frames, fill=True):
    # the filler behind: the blocks holding the frames are full (a flood's)
    for f in frames + (FILL if fill else []):
        send.send(f)
    res[name] = read(1.5)
    res[name + "_shed"], res[name + "_retried"] = ring.syn_shed, ring.syn_retried

"""

SCRIPT = COMMON + r"""
syns = [seg(1000 + i, SYN) for i in range(20)]
# 0. five SYNs alone, read 1.5 s late: no flood around them (a reader woken late), kept
phase("lone", [seg(500 + i, SYN) for i in range(5)], fill=False)
# 1. everything waited 1.5 s (more than syn_max_lag): the SYNs are shed, nothing else is
phase("late", syns + [seg(2000 + i, SYN, bad=True) for i in range(5)]
      + [seg(3000 + i, SYN, v6=True) for i in range(5)] + [seg(4000 + i, SYNACK) for i in range(5)]
      + [seg(5000 + i, ACK) for i in range(20)])
# 2. the clients send their 20 SYNs again (same ports and sequence numbers), 10 new SYNs come
# too; read 1.5 s later (more than syn_max_lag, less than 4 x): the retransmissions pass
phase("retry", syns + [seg(6000 + i, SYN) for i in range(10)])
# 3. a third copy: one pass per shed SYN, so this one is shed again
phase("third", syns)
# 4. syn_max_lag 0: nothing shed, however late; good SYNs marked, bad ones not
ring.fast.syn_max_lag = 0.0
phase("off", [seg(7000 + i, SYN) for i in range(5)] + [seg(8000 + i, SYN, bad=True) for i in range(5)])
print(json.dumps(res))
ring.close()
"""

# The same ring: five SYNs are shed; their
# retransmissions then come first in a ring more than three quarters full of ACKs: shed again.
HALF_SCRIPT = COMMON + r"""
syns = [seg(1000 + i, SYN) for i in range(5)]
phase("first", syns)
phase("full", syns + [seg(5000 + i, ACK) for i in range(170)], fill=False)
print(json.dumps(res))
ring.close()
"""


def _run(script: str, ring: str) -> Any:
    """``script`` in a namespace of its own, with a veth pair va/vb and ``RING`` (the ring's
    geometry) set; its JSON result."""
    if not fastpath_built():
        pytest.skip("the C hot path is not built (no compiler at install)")
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and AF_PACKET")
    if shutil.which("ethtool") is None:
        pytest.skip("needs ethtool (the test's own veth must not vouch for checksums)")
    # veth marks frames from a packet socket "checksum unnecessary" unless its receive
    # checksum offload is off: off here, so the ring's verdict is the C walk's own
    return run_in_namespace("plshed", [["ip", "link", "add", "va", "type", "veth", "peer", "name",
                                        "vb"], ["ethtool", "-K", "va", "rx", "off"],
                                       ["ip", "link", "set", "va", "up"],
                                       ["ip", "link", "set", "vb", "up"]],
                            f"RING = {ring}\n" + script)


# A ring of 8 blocks of 4 KiB (25 frames of this size each; three quarters full: six). Blocks
# are handed over when full or 100 ms after their first frame (the plane's 2 ms would let a
# sender descheduled between two frames, as on a loaded CI machine, leave a SYN alone in a
# block, which is then "late without a flood around it" and kept: the frames each phase sends
# back to back must share blocks, as a flood's do)
SMALL = "{'block_size': 4096, 'block_nr': 8, 'block_timeout_ms': 100}"


def test_late_syns_are_shed_in_c_and_everything_else_reaches_python() -> None:
    res = _run(SCRIPT, SMALL)
    # 0: late but no backlog: kept
    assert res["lone_shed"] == 0 and [x[1] for x in res["lone"]] == [500 + i for i in range(5)], res
    syn, ack, synack = 0x02, 0x10, 0x12
    # 1: 20 + 5 bad + 5 IPv6 SYNs shed; the SYN-ACKs and ACKs all reached Python
    assert res["late_shed"] == 30 and res["late_retried"] == 0, res
    assert [tuple(x[1:3]) for x in res["late"]] == (
        [(4000 + i, synack) for i in range(5)] + [(5000 + i, ack) for i in range(20)]), res
    # 2: the 20 retransmissions reached Python with their checksum checked; the 10 new shed
    assert res["retry_retried"] == 20 and res["retry_shed"] == 40, res
    assert res["retry"] == [[False, 1000 + i, syn, 1] for i in range(20)], res
    # 3: a third copy is shed again
    assert res["third"] == [] and res["third_shed"] == 60 and res["third_retried"] == 20, res
    # 4: nothing shed; the good SYNs are marked checksum-good, the bad ones are left to Python
    assert res["off_shed"] == 60, res
    assert res["off"] == ([[False, 7000 + i, syn, 1] for i in range(5)]
                          + [[False, 8000 + i, syn, 0] for i in range(5)]), res


def test_a_retransmission_is_shed_when_the_ring_is_nearly_full() -> None:
    """A flood that sends its SYNs again looks like retrying clients: retransmissions pass
    only while the ring is less than three quarters full, so they cannot fill it."""
    res = _run(HALF_SCRIPT, SMALL)
    assert res["first_shed"] == 5 and res["first_retried"] == 0, res
    # behind them 170 ACKs took 7 of the 8 blocks: shed again, and every ACK read
    assert res["full_shed"] == 10 and res["full_retried"] == 0, res
    assert [x[1] for x in res["full"]] == [5000 + i for i in range(170)], res


def test_syn_max_lag_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pylvs.dataplane.packet.dataplane import SYN_MAX_LAG, syn_max_lag_setting

    monkeypatch.delenv("PYLVS_SYN_MAX_LAG", raising=False)
    assert syn_max_lag_setting() == SYN_MAX_LAG
    monkeypatch.setenv("PYLVS_SYN_MAX_LAG", "0")
    assert syn_max_lag_setting() == 0.0
    monkeypatch.setenv("PYLVS_SYN_MAX_LAG", "0.25")
    assert syn_max_lag_setting() == 0.25
    for bad in ("-1", "11", "soon", "nan"):
        monkeypatch.setenv("PYLVS_SYN_MAX_LAG", bad)
        assert syn_max_lag_setting() == SYN_MAX_LAG, bad
