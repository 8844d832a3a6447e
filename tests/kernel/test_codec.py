"""The IPVS netlink codec on its own (no kernel needed): what we encode decodes back to the
same spec, the /proc connection table parses, malformed attributes never raise, and a kernel
without IPVS gives one clear line."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pylvs.core.api import BackendUnavailable, IPVSError
from pylvs.core.model import (
    AF_INET6,
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    TunnelFlags,
    TunnelType,
    parse_address,
)
from pylvs.netlink import genl
from pylvs.netlink import ipvs as nl


def _service_roundtrip(spec: ServiceSpec) -> ServiceSpec:
    decoded, _stats = nl.decode_service(genl.parse_attrs(nl.service_attrs(spec)))
    return decoded


@pytest.mark.parametrize("spec", [
    ServiceSpec(ServiceKey.inet(Protocol.TCP, "10.0.0.1", 80), "rr"),
    ServiceSpec(ServiceKey.inet(Protocol.UDP, "10.0.0.1", 53), "sh",
                ServiceFlags.PERSISTENT | ServiceFlags.SCHED1, 300, 0xFFFFFF00),
    ServiceSpec(ServiceKey.inet(Protocol.SCTP, "2001:db8::1", 0), "mh", ServiceFlags.SCHED2,
                0, 64),
    ServiceSpec(ServiceKey.mark(7), "wlc", ServiceFlags.PERSISTENT, 600, 0xFFFFFFFF, "sip"),
    ServiceSpec(ServiceKey.mark(8, AF_INET6), "lc", ServiceFlags.ONEPACKET, 0, 128),
])
def test_service_spec_survives_encode_and_decode(spec: ServiceSpec) -> None:
    assert _service_roundtrip(spec) == spec


@pytest.mark.parametrize("dest", [
    DestSpec(parse_address("192.168.1.1"), 80, ForwardingMethod.MASQ, 3, 100, 10),
    DestSpec(parse_address("192.168.1.2"), 8080, ForwardingMethod.TUNNEL, 1,
             tun_type=TunnelType.GUE, tun_port=6080, tun_flags=TunnelFlags.CSUM),
    DestSpec(parse_address("2001:db8::2"), 443, ForwardingMethod.DROUTE, 2147483647),
])
def test_dest_spec_survives_encode_and_decode(dest: DestSpec) -> None:
    decoded = nl.decode_dest(genl.parse_attrs(nl.dest_attrs(dest)), 2)
    assert decoded.spec == dest


def test_ipv4_real_server_of_an_ipv6_service_keeps_its_family() -> None:
    dest = DestSpec(parse_address("192.168.1.9"), 80, ForwardingMethod.TUNNEL)
    decoded = nl.decode_dest(genl.parse_attrs(nl.dest_attrs(dest)), AF_INET6)
    assert decoded.spec.addr == parse_address("192.168.1.9") and decoded.spec.family == 2


PROC = """Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000002 9448 0A000064 0050 C0A8A80C 0050 ESTABLISHED     898
TCP 0A000002 0000 0A000065 0050 C0A8A80D 0050 ASSURED         118
UDP 2001:0db8:0000:0000:0000:0000:0000:0002 D431 2001:0db8:0000:0000:0000:0000:0000:0001 0035 2001:0db8:0000:0000:0000:0000:0000:0011 0035 UDP             299
TCP 0A000002 9449 0A000070 13C4 C0A8A80C 13C4 ESTABLISHED     60 sip 3a4b
"""


def test_proc_connection_rows_parse() -> None:
    rows = nl.parse_proc_conns(PROC)
    assert len(rows) == 4
    a, tpl, v6, sip = rows
    assert (str(a.caddr), a.cport, str(a.vaddr), a.vport, str(a.daddr), a.dport) == (
        "10.0.0.2", 0x9448, "10.0.0.100", 80, "192.168.168.12", 80)
    assert a.state == "ESTABLISHED" and a.expires == 898 and a.protocol == Protocol.TCP
    assert tpl.flags == nl.IP_VS_CONN_F_TEMPLATE and tpl.cport == 0
    assert v6.af == AF_INET6 and str(v6.daddr) == "2001:db8::11" and v6.vport == 53
    assert (sip.pe_name, sip.pe_data) == ("sip", "3a4b")


_attr = st.tuples(st.integers(0, 16), st.binary(max_size=24)).map(lambda t: genl.nla(*t))


@given(st.lists(_attr, max_size=16), st.binary(max_size=40), st.sampled_from([2, 10]))
def test_malformed_attributes_decode_or_raise_ipvs_error(
    attrs: list[bytes], tail: bytes, af: int,
) -> None:
    parsed = genl.parse_attrs(b"".join(attrs) + tail)
    nl.decode_service(parsed)
    try:
        nl.decode_dest(parsed, af)
    except IPVSError as e:
        assert "unknown here" in str(e)
    for v in parsed.values():
        genl.parse_attrs(v)


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netlink")
def test_kernel_without_ipvs_says_so_in_one_line() -> None:
    with pytest.raises(BackendUnavailable) as exc:
        nl.KernelIPVS(load_module=False)
    text = str(exc.value)
    assert "no IPVS" in text and "--dataplane proxy" in text and "\n" not in text
