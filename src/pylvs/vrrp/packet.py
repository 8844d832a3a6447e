"""VRRP advertisement codec: VRRPv2 (RFC 3768, with keepalived's simple password) and VRRPv3
(RFC 5798, IPv4 and IPv6, checksum over the pseudo-header).

Pure functions over bytes: no sockets, no clock. Decoding errors carry the name of the keepalived
statistics counter they are counted in, so the router can count bad input exactly where keepalived
does. Not for: deciding what a valid advertisement means (that is :mod:`pylvs.vrrp.router`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPPROTO_VRRP = 112
VRRP_TTL = 255
VRRP_TYPE_ADVERT = 1
VRRP_MCAST_V4 = bytes((224, 0, 0, 18))
VRRP_MCAST_V6 = ipaddress.IPv6Address("ff02::12").packed

AUTH_NONE = 0
AUTH_PASS = 1
AUTH_AH = 2
AUTH_DATA_LEN = 8  # VRRPv2 carries 8 octets of authentication data

HEADER_LEN = 8
IPV4_HEADER_MIN = 20


class DecodeError(ValueError):
    """A packet that cannot be an advertisement; ``counter`` names the keepalived stat it counts in."""

    def __init__(self, counter: str, message: str) -> None:
        super().__init__(message)
        self.counter = counter


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One decoded VRRP packet. ``adver_int_cs`` is in centiseconds for both versions (v2 carries
    whole seconds on the wire) so the state machine has one unit."""

    version: int
    vrid: int
    priority: int
    addresses: tuple[bytes, ...]
    adver_int_cs: int
    type: int = VRRP_TYPE_ADVERT
    auth_type: int = AUTH_NONE
    auth_data: bytes = b"\0" * AUTH_DATA_LEN

    @property
    def family(self) -> int:
        return 6 if self.addresses and len(self.addresses[0]) == 16 else 4


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    """The fields of an IPv4 datagram a VRRP receiver checks (raw IPv4 sockets deliver the header)."""

    src: bytes
    dst: bytes
    ttl: int
    protocol: int
    payload: bytes


def inet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 one's-complement sum, folded and complemented."""
    if len(data) % 2:
        data += b"\0"
    total: int = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: bytes, dst: bytes, length: int) -> bytes:
    """RFC 5798 section 5.2.8: the IPv4/IPv6 pseudo-header VRRPv3's checksum covers."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return src + dst + struct.pack("!I3xB", length, IPPROTO_VRRP)


def password_field(password: str | bytes) -> bytes:
    """keepalived's simple password: the first 8 octets, zero padded."""
    raw = password.encode() if isinstance(password, str) else password
    return raw[:AUTH_DATA_LEN].ljust(AUTH_DATA_LEN, b"\0")


def encode(adv: Advertisement, src: bytes = b"", dst: bytes = b"") -> bytes:
    """Serialise ``adv``; v3 needs ``src``/``dst`` (the IP addresses it will travel with) for the
    pseudo-header, v2 ignores them."""
    if not 0 < adv.vrid < 256 or not 0 <= adv.priority < 256:
        raise ValueError(f"VRID {adv.vrid} / priority {adv.priority} out of range")
    if len(adv.addresses) > 255:
        raise ValueError("at most 255 addresses fit in one advertisement")
    addrs = b"".join(adv.addresses)
    if adv.version == 2:
        if not 0 <= adv.adver_int_cs // 100 < 256:
            raise ValueError("VRRPv2 advertisement interval must be 0-255 s")
        head = struct.pack(
            "!BBBBBBH", (2 << 4) | adv.type, adv.vrid, adv.priority, len(adv.addresses),
            adv.auth_type, adv.adver_int_cs // 100, 0,
        )
        body = head + addrs + adv.auth_data[:AUTH_DATA_LEN].ljust(AUTH_DATA_LEN, b"\0")
        csum = inet_checksum(body)
    elif adv.version == 3:
        if not 0 <= adv.adver_int_cs < 4096:
            raise ValueError("VRRPv3 advertisement interval must be 0-40.95 s")
        head = struct.pack(
            "!BBBBHH", (3 << 4) | adv.type, adv.vrid, adv.priority, len(adv.addresses),
            adv.adver_int_cs & 0x0FFF, 0,
        )
        body = head + addrs
        if len(src) not in (4, 16) or len(dst) != len(src):
            raise ValueError("VRRPv3 checksum needs the source and destination address")
        csum = inet_checksum(body, _sum16(pseudo_header(src, dst, len(body))))
    else:
        raise ValueError(f"unknown VRRP version {adv.version}")
    return body[:6] + struct.pack("!H", csum) + body[8:]


def _sum16(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    return total


def expected_length(version: int, naddr: int, family: int) -> int:
    alen = 4 if family == 4 else 16
    return HEADER_LEN + naddr * alen + (AUTH_DATA_LEN if version == 2 else 0)


def decode(payload: bytes, src: bytes, dst: bytes, verify_checksum: bool = True) -> Advertisement:
    """Parse the VRRP part of a received packet. ``src``/``dst`` are the IP addresses it came with
    (their length gives the family). Raises :class:`DecodeError` for anything malformed."""
    family = 4 if len(src) == 4 else 6
    if len(payload) < HEADER_LEN:
        raise DecodeError("packet_len_err", f"VRRP header too short: {len(payload)} octets")
    vers_type, vrid, priority, naddr = payload[0], payload[1], payload[2], payload[3]
    version, ptype = vers_type >> 4, vers_type & 0x0F
    if version not in (2, 3):
        raise DecodeError("vers_err", f"unknown VRRP version {version}")
    if version == 2 and family == 6:
        raise DecodeError("vers_err", "VRRPv2 over IPv6")
    want = expected_length(version, naddr, family)
    if len(payload) != want:
        kind = "long" if len(payload) > want else "short"
        raise DecodeError("packet_len_err", f"packet too {kind}: {len(payload)} octets, expected {want}")
    if ptype != VRRP_TYPE_ADVERT:
        raise DecodeError("invalid_type_rcvd", f"invalid packet type {ptype}")
    alen = 4 if family == 4 else 16
    addresses = tuple(payload[HEADER_LEN + i * alen:HEADER_LEN + (i + 1) * alen] for i in range(naddr))
    if version == 2:
        auth_type, adv_s = payload[4], payload[5]
        if verify_checksum and inet_checksum(payload) != 0:
            raise DecodeError("chk_err", "invalid VRRPv2 checksum")
        return Advertisement(2, vrid, priority, addresses, adv_s * 100, ptype, auth_type, payload[-AUTH_DATA_LEN:])
    adv_cs = struct.unpack_from("!H", payload, 4)[0] & 0x0FFF
    if verify_checksum and inet_checksum(payload, _sum16(pseudo_header(src, dst, len(payload)))) != 0:
        raise DecodeError("chk_err", "invalid VRRPv3 checksum")
    return Advertisement(3, vrid, priority, addresses, adv_cs, ptype)


def parse_ipv4(datagram: bytes) -> IPv4Packet:
    """Split what a raw IPv4 socket delivers into header fields and payload."""
    if len(datagram) < IPV4_HEADER_MIN:
        raise DecodeError("packet_len_err", f"IPv4 header too short: {len(datagram)} octets")
    if datagram[0] >> 4 != 4:
        raise DecodeError("packet_len_err", "not an IPv4 datagram")
    ihl = (datagram[0] & 0x0F) * 4
    total = struct.unpack_from("!H", datagram, 2)[0]
    if ihl < IPV4_HEADER_MIN or len(datagram) < ihl:
        raise DecodeError("packet_len_err", f"bad IPv4 header length {ihl}")
    if total != len(datagram):
        raise DecodeError("packet_len_err", f"IPv4 total length {total} but received {len(datagram)}")
    return IPv4Packet(datagram[12:16], datagram[16:20], datagram[8], datagram[9], datagram[ihl:])


def build_ipv4(src: bytes, dst: bytes, payload: bytes, ttl: int = VRRP_TTL, ident: int = 0) -> bytes:
    """An IPv4 header in front of ``payload`` (tests and IP_HDRINCL senders), TOS network control."""
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), ident, 0, ttl, IPPROTO_VRRP, 0, src, dst)
    csum = inet_checksum(head)
    return head[:10] + struct.pack("!H", csum) + head[12:] + payload
