"""VRRP codec: wire layout of both versions, checksums, and a decoder that never crashes."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.vrrp import packet as pkt

SRC4 = bytes((10, 0, 0, 1))
MC4 = pkt.VRRP_MCAST_V4
SRC6 = ipaddress.IPv6Address("fe80::1").packed
MC6 = pkt.VRRP_MCAST_V6
VIP = bytes((10, 0, 0, 100))


def test_v2_layout_matches_rfc3768_with_password() -> None:
    adv = pkt.Advertisement(2, 51, 100, (VIP,), 100, auth_type=pkt.AUTH_PASS, auth_data=pkt.password_field("secretpassword"))
    raw = pkt.encode(adv)
    assert len(raw) == 8 + 4 + 8
    assert raw[0] == 0x21 and raw[1] == 51 and raw[2] == 100 and raw[3] == 1
    assert raw[4] == pkt.AUTH_PASS and raw[5] == 1
    assert raw[8:12] == VIP
    assert raw[12:] == b"secretpa"  # keepalived keeps the first 8 characters
    assert pkt.inet_checksum(raw) == 0
    assert pkt.decode(raw, SRC4, MC4) == adv


def test_v2_checksum_known_value() -> None:
    # vrid 51 prio 100 one address 192.168.1.100 no auth, advert 1 s: computed by hand
    raw = bytes.fromhex("2133640100010000c0a80164") + bytes(8)
    csum = pkt.inet_checksum(raw)
    raw = raw[:6] + struct.pack("!H", csum) + raw[8:]
    adv = pkt.decode(raw, SRC4, MC4)
    assert adv.vrid == 51 and adv.priority == 100 and adv.adver_int_cs == 100
    assert pkt.encode(adv) == raw


def test_v3_checksum_covers_ipv4_pseudo_header() -> None:
    adv = pkt.Advertisement(3, 7, 150, (VIP,), 10)
    raw = pkt.encode(adv, SRC4, MC4)
    assert len(raw) == 12 and raw[0] == 0x31
    assert struct.unpack_from("!H", raw, 4)[0] == 10
    phdr = pkt.pseudo_header(SRC4, MC4, len(raw))
    assert pkt.inet_checksum(phdr + raw) == 0
    assert pkt.decode(raw, SRC4, MC4) == adv
    with pytest.raises(pkt.DecodeError) as err:
        pkt.decode(raw, bytes((10, 0, 0, 2)), MC4)  # another source: checksum no longer matches
    assert err.value.counter == "chk_err"


def test_v3_ipv6_round_trip_and_pseudo_header() -> None:
    vips = (ipaddress.IPv6Address("fe80::100").packed, ipaddress.IPv6Address("2001:db8::100").packed)
    adv = pkt.Advertisement(3, 9, 200, vips, 100)
    raw = pkt.encode(adv, SRC6, MC6)
    assert len(raw) == 8 + 32
    assert pkt.inet_checksum(pkt.pseudo_header(SRC6, MC6, len(raw)) + raw) == 0
    assert pkt.decode(raw, SRC6, MC6) == adv


@pytest.mark.parametrize(
    ("raw", "counter"),
    [
        (b"\x21\x01", "packet_len_err"),
        (bytes.fromhex("21330a01000100000a000064"), "packet_len_err"),  # v2 without auth data
        (bytes.fromhex("41330a0100010000") + bytes(12), "vers_err"),
        (bytes.fromhex("22330a0100010000") + bytes(12), "invalid_type_rcvd"),
        (bytes.fromhex("21330a0100010001") + VIP + bytes(8), "chk_err"),
    ],
)
def test_malformed_packets_name_their_keepalived_counter(raw: bytes, counter: str) -> None:
    with pytest.raises(pkt.DecodeError) as err:
        pkt.decode(raw, SRC4, MC4)
    assert err.value.counter == counter


def test_ipv4_envelope_parsed_and_length_checked() -> None:
    payload = pkt.encode(pkt.Advertisement(2, 1, 100, (VIP,), 100))
    dgram = pkt.build_ipv4(SRC4, MC4, payload, ttl=255)
    ip = pkt.parse_ipv4(dgram)
    assert (ip.src, ip.dst, ip.ttl, ip.protocol, ip.payload) == (SRC4, MC4, 255, 112, payload)
    with pytest.raises(pkt.DecodeError):
        pkt.parse_ipv4(dgram[:-1])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([(SRC4, MC4), (SRC6, MC6)]))
def test_decoder_never_crashes_on_garbage(data: bytes, env: tuple[bytes, bytes]) -> None:
    try:
        pkt.decode(data, *env)
    except pkt.DecodeError as exc:
        assert exc.counter in {"packet_len_err", "vers_err", "invalid_type_rcvd", "chk_err"}
    try:
        pkt.parse_ipv4(data)
    except pkt.DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([2, 3]), st.integers(1, 255), st.integers(0, 255),
    st.lists(st.binary(min_size=4, max_size=4), max_size=20), st.integers(1, 40),
)
def test_encode_decode_round_trip(version: int, vrid: int, prio: int, addrs: list[bytes], adv_s: int) -> None:
    adv = pkt.Advertisement(version, vrid, prio, tuple(addrs), adv_s * 100)
    raw = pkt.encode(adv, SRC4, MC4)
    assert pkt.decode(raw, SRC4, MC4) == adv


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 19), st.integers(0, 255))
def test_any_single_byte_corruption_is_rejected_or_decodes_consistently(pos: int, val: int) -> None:
    raw = bytearray(pkt.encode(pkt.Advertisement(2, 5, 100, (VIP,), 100)))
    if raw[pos] == val:
        return
    raw[pos] = val
    with pytest.raises(pkt.DecodeError):
        pkt.decode(bytes(raw), SRC4, MC4)
