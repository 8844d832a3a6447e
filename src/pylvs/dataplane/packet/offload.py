"""Frames as a host's offloads hand them over: partial checksums and super-frames.

Why this exists: on veth, virtio and tap devices TX checksum offload and TSO/GSO are on by
default, and the kernel hands an AF_PACKET socket the frame exactly as the sender's stack built
it. A TCP/UDP frame then carries only the pseudo-header sum in its checksum field
(``CHECKSUM_PARTIAL``: the device was to finish it), and a TCP stream arrives as super-frames of
up to 64 KiB that the device was to cut into segments of ``gso_size`` bytes. Kernel IPVS forwards
such skbs as they are; a data plane that sends raw frames must finish the work the device would
have done, or every frame reaches the real server with a wrong checksum (or too big).

How it is known: the rings are opened with ``PACKET_VNET_HDR``, so the kernel writes a
``struct virtio_net_hdr`` (10 bytes, little-endian on every host we run on) in front of each
frame: ``flags`` (NEEDS_CSUM: partial, with ``csum_start``/``csum_offset``; DATA_VALID: the
receiving device verified it), ``gso_type`` and ``gso_size``. The ring walk (Python and C)
completes partial checksums of ordinary frames in place and tells the forwarder, through the
frame's *rx meta* (``meta_*``), whether the checksum is known good and whether the frame is a
super-frame; ``segment`` cuts super-frames into MTU-sized, fully checksummed frames with the
sender's own ``gso_size``, as the device (or the kernel's software GSO) would.

What this is not for: deciding where a frame goes (``forward``) or ring I/O (``ring``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pylvs.dataplane.packet.codec import ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP, ones_sum

VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = 10
VNET_NEEDS_CSUM = 1
VNET_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO: gone from the kernel, never produced
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

# the rx meta of a frame: one int the ring hands the forwarder beside the frame
META_CSUM_OK = 1  # the L4 checksum is known good (device-verified or completed here)
META_GSO_SHIFT_TYPE = 8
META_GSO_SHIFT_SIZE = 16

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def meta_gso(meta: int) -> tuple[int, int]:
    """(gso_type without the ECN bit, gso_size) of a frame's rx meta; (0, 0): not a super-frame."""
    return (meta >> META_GSO_SHIFT_TYPE) & 0x7F, meta >> META_GSO_SHIFT_SIZE


def complete_checksum(frame: bytearray | memoryview, csum_start: int, csum_offset: int,
                      end: int) -> bool:
    """Finish a partial checksum in place: the field at ``csum_start + csum_offset`` holds the
    pseudo-header sum; the checksum is the complement of the sum from ``csum_start`` to ``end``
    (what ``skb_checksum_help`` stores). False, frame untouched, when the offsets lie outside."""
    field = csum_start + csum_offset
    if csum_start < ETH_HLEN or field + 2 > end or end > len(frame):
        return False
    c = ~ones_sum(frame[csum_start:end]) & 0xFFFF
    # a UDP checksum that computes to 0 is sent as 0xFFFF (0 means "none"); for TCP the two
    # are the same number in one's complement
    _U16.pack_into(frame, field, c or 0xFFFF)
    return True


def rx_meta(vnet: bytes | bytearray | memoryview, frame: bytearray | memoryview, tp_status: int,
            csum_valid_status: int) -> int:
    """The rx meta of one received frame, completing a partial checksum of an ordinary (not
    GSO) IPv4/IPv6 frame in place. ``vnet`` is the 10-byte header the kernel put in front."""
    flags: int
    gso_type: int
    gso_size: int
    flags, gso_type, _hl, gso_size, cstart, coff = VNET_HDR.unpack_from(vnet)
    meta = 0
    if gso_type:
        return (gso_type & 0x7F) << META_GSO_SHIFT_TYPE | gso_size << META_GSO_SHIFT_SIZE
    if flags & VNET_NEEDS_CSUM:
        if complete_checksum(frame, cstart, coff, _l3_end(frame)):
            meta |= META_CSUM_OK
    elif flags & VNET_DATA_VALID or tp_status & csum_valid_status:
        meta |= META_CSUM_OK
    return meta


def rx_meta_plain(frame: bytearray | memoryview, tp_status: int, not_ready_status: int,
                  valid_status: int) -> int:
    """The rx meta without a vnet header (a kernel without ``PACKET_VNET_HDR``): a partial
    checksum of an IPv4 TCP/UDP frame is found from the frame's own headers."""
    if tp_status & valid_status:
        return META_CSUM_OK
    if not tp_status & not_ready_status:
        return 0
    n = len(frame)
    if n < ETH_HLEN + 20 or frame[12] != 8 or frame[13] != 0 or frame[14] >> 4 != 4:
        return 0
    l4 = ETH_HLEN + ((frame[14] & 0x0F) << 2)
    proto = frame[ETH_HLEN + 9]
    off = 16 if proto == IPPROTO_TCP else 6 if proto == IPPROTO_UDP else -1
    if off < 0 or not complete_checksum(frame, l4, off, _l3_end(frame)):
        return 0
    return META_CSUM_OK


def _l3_end(frame: bytearray | memoryview) -> int:
    """Where the IP packet ends (Ethernet padding excluded); the frame's length otherwise."""
    n = len(frame)
    if n >= ETH_HLEN + 20 and frame[12] == 8 and frame[13] == 0 and frame[14] >> 4 == 4:
        return min(n, ETH_HLEN + (frame[16] << 8 | frame[17]))
    if n >= ETH_HLEN + 40 and frame[12] == 0x86 and frame[13] == 0xDD:
        return min(n, ETH_HLEN + 40 + (frame[18] << 8 | frame[19]))
    return n


def segment(frame: bytearray | memoryview, gso_type: int, gso_size: int) -> list[bytearray] | None:
    """Cut an IPv4 or IPv6 TCP (or UDP GSO) super-frame into frames of at most ``gso_size`` payload
    bytes each, with their own lengths, IP IDs, sequence numbers, flags and full checksums, as
    the device would have (``tcp_gso_segment``). None when the frame is not one we can cut
    (the caller drops and counts it)."""
    n = len(frame)
    if gso_size > 0 and n >= ETH_HLEN + 40 and frame[12] == 0x86 and frame[13] == 0xDD:
        return _segment6(frame, gso_type, gso_size)
    if gso_size <= 0 or n < ETH_HLEN + 20 or frame[12] != 8 or frame[13] != 0:
        return None
    vihl = frame[ETH_HLEN]
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20:
        return None
    tot = _U16.unpack_from(frame, ETH_HLEN + 2)[0]
    end = ETH_HLEN + tot
    if tot == 0:  # a >64 KiB GSO frame (BIG TCP) leaves it 0: take the frame's length
        end = n
    if end > n or end < ETH_HLEN + ihl:
        return None
    if frame[ETH_HLEN + 6] & 0x3F or frame[ETH_HLEN + 7]:  # a fragment is never GSO
        return None
    proto = frame[ETH_HLEN + 9]
    l4 = ETH_HLEN + ihl
    hl = _l4_header(frame, proto, gso_type, GSO_TCPV4, l4, end)
    if hl is None:
        return None
    saddr_daddr = bytes(frame[ETH_HLEN + 12:ETH_HLEN + 20])
    ident = _U16.unpack_from(frame, ETH_HLEN + 4)[0]

    def ip_header(seg: bytearray, index: int, seg_len: int) -> bytes:
        """Length, ID and checksum of segment ``index``; its pseudo-header."""
        _U16.pack_into(seg, ETH_HLEN + 2, len(seg) - ETH_HLEN)
        _U16.pack_into(seg, ETH_HLEN + 4, (ident + index) & 0xFFFF)
        seg[ETH_HLEN + 10] = seg[ETH_HLEN + 11] = 0
        _U16.pack_into(seg, ETH_HLEN + 10, ~ones_sum(seg[ETH_HLEN:l4]) & 0xFFFF)
        return saddr_daddr + bytes((0, proto)) + _U16.pack(seg_len)

    return _cut(frame, proto, l4, hl, end, gso_size, ip_header)


def _segment6(frame: bytearray | memoryview, gso_type: int,
              gso_size: int) -> list[bytearray] | None:
    """``segment`` for IPv6: TCP (GSO_TCPV6) or UDP (GSO_UDP_L4) right after the fixed header
    (a super-frame with extension headers is refused: no stack here builds one), each segment
    with its own payload length, sequence number, flags and checksum over the IPv6
    pseudo-header."""
    n = len(frame)
    if frame[ETH_HLEN] >> 4 != 6:
        return None
    l4 = ETH_HLEN + 40
    plen = _U16.unpack_from(frame, ETH_HLEN + 4)[0]
    end = l4 + plen if plen else n  # 0: a BIG TCP super-frame, its length is the frame's
    if end > n:
        return None
    proto = frame[ETH_HLEN + 6]
    hl = _l4_header(frame, proto, gso_type, GSO_TCPV6, l4, end)
    if hl is None:
        return None
    addrs = bytes(frame[ETH_HLEN + 8:ETH_HLEN + 40])

    def ip_header(seg: bytearray, index: int, seg_len: int) -> bytes:
        """The payload length of a segment; its pseudo-header."""
        _U16.pack_into(seg, ETH_HLEN + 4, seg_len)
        return addrs + seg_len.to_bytes(4, "big") + bytes((0, 0, 0, proto))

    return _cut(frame, proto, l4, hl, end, gso_size, ip_header)


def _l4_header(frame: bytearray | memoryview, proto: int, gso_type: int, gso_tcp: int, l4: int,
               end: int) -> int | None:
    """The length of the TCP (``gso_tcp``) or UDP (GSO_UDP_L4) header a super-frame's
    segments repeat; None when the protocol and GSO type disagree or it does not fit."""
    if proto == IPPROTO_TCP and gso_type == gso_tcp:
        if end < l4 + 20:
            return None
        hl: int = (frame[l4 + 12] >> 4) << 2
        return hl if hl >= 20 and l4 + hl <= end else None
    if proto == IPPROTO_UDP and gso_type == GSO_UDP_L4:
        return 8 if end >= l4 + 8 else None
    return None


def _cut(frame: bytearray | memoryview, proto: int, l4: int, hl: int, end: int, gso_size: int,
         ip_header: Callable[[bytearray, int, int], bytes]) -> list[bytearray]:
    """The segments of a super-frame whose headers end at ``l4 + hl``, for either IP version:
    ``ip_header(segment, index, l4 length)`` sets the IP header's fields and returns the
    pseudo-header; then sequence numbers, flags (CWR on the first segment only, FIN and PSH
    on the last) or UDP lengths, and the full L4 checksum, as ``tcp_gso_segment`` makes them."""
    head = bytes(frame[:l4 + hl])
    seq = _U32.unpack_from(frame, l4 + 4)[0] if proto == IPPROTO_TCP else 0
    flags = frame[l4 + 13] if proto == IPPROTO_TCP else 0
    out: list[bytearray] = []
    pos = l4 + hl
    while True:
        chunk_end = min(pos + gso_size, end)
        last = chunk_end >= end
        seg = bytearray(head)
        seg += frame[pos:chunk_end]
        seg_len = len(seg) - l4
        pseudo = ip_header(seg, len(out), seg_len)
        if proto == IPPROTO_TCP:
            _U32.pack_into(seg, l4 + 4, (seq + pos - (l4 + hl)) & 0xFFFFFFFF)
            f = flags
            if out:
                f &= ~0x80  # CWR on the first segment only
            if not last:
                f &= ~0x09  # FIN and PSH on the last one only
            seg[l4 + 13] = f
            co = l4 + 16
        else:
            _U16.pack_into(seg, l4 + 4, seg_len)
            co = l4 + 6
        seg[co] = seg[co + 1] = 0
        s = ones_sum(pseudo) + ones_sum(seg[l4:])
        _U16.pack_into(seg, co, _fold(s) if proto == IPPROTO_TCP else (_fold(s) or 0xFFFF))
        out.append(seg)
        pos = chunk_end
        if last or len(out) > 0xFFFF:
            break
    return out


def _fold(s: int) -> int:
    """The complement of a one's-complement sum folded to 16 bits: the checksum."""
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
