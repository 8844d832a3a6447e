"""Frames built from scratch for the XDP fixtures: every checksum computed over the whole header,
never incrementally, so an expected frame is an independent statement of what is right."""

from __future__ import annotations

import ipaddress
import struct

CLIENT_MAC = bytes.fromhex("02000000003c")
DIRECTOR_MAC = bytes.fromhex("020000000032")
RS_MAC = bytes.fromhex("02000000000a")

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def l4(proto: int, src: str, dst: str, sport: int, dport: int, payload: bytes,
       flags: int = TCP_ACK | TCP_PSH, udp_csum: bool = True) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if proto == 6:
        hdr = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2000, 5 << 4, flags, 65535, 0, 0)
        seg = hdr + payload
        off = 16
    else:
        seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        off = 6
    if len(s) == 4:
        pseudo = s + d + struct.pack("!BBH", 0, proto, len(seg))
    else:
        pseudo = s + d + struct.pack("!IxxxB", len(seg), proto)
    if proto == 17 and not udp_csum and len(s) == 4:
        return seg
    c = csum(pseudo + seg)
    if proto == 17 and c == 0:
        c = 0xFFFF
    return seg[:off] + struct.pack("!H", c) + seg[off + 2:]


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64, tos: int = 0,
         frag: int = 0x4000, ident: int = 7) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, frag, ttl, proto, 0,
                      ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:] + payload


def ipv6(src: str, dst: str, nh: int, payload: bytes, hlim: int = 64, tclass: int = 0) -> bytes:
    first = (6 << 28) | (tclass << 20)
    return (struct.pack("!IHBB", first, len(payload), nh, hlim) + ipaddress.ip_address(src).packed
            + ipaddress.ip_address(dst).packed + payload)


def eth(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def packet(src: str, dst: str, sport: int, dport: int, proto: int = 6, payload: bytes = b"hello",
           flags: int = TCP_ACK | TCP_PSH, dmac: bytes = DIRECTOR_MAC, smac: bytes = CLIENT_MAC,
           ttl: int = 64) -> bytes:
    seg = l4(proto, src, dst, sport, dport, payload, flags)
    if ipaddress.ip_address(src).version == 4:
        return eth(dmac, smac, 0x0800, ipv4(src, dst, proto, seg, ttl=ttl))
    return eth(dmac, smac, 0x86DD, ipv6(src, dst, proto, seg, hlim=ttl))
