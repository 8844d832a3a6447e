"""Rule files: ``-S`` fed to ``-R`` rebuilds the same table, and the director's strict reading
(``pylvs.ipvsadm.rules``)."""

from __future__ import annotations

import io
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.core.api import ServiceStatus
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    TunnelFlags,
    TunnelType,
)
from pylvs.core.table import IPVSTable
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.rules import RestoreError, apply_commands, parse_restore, save_rules
from pylvs.ipvsadm.runner import run as run_ipvsadm


def run(table: IPVSTable, *args: str, stdin: str = "") -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_ipvsadm(
        list(args), lambda: table, out, err, lambda: io.StringIO(stdin), Resolver.from_environment()
    )
    return out.getvalue(), err.getvalue(), rc


def snapshot(table: IPVSTable) -> list[tuple[ServiceSpec, list[DestSpec]]]:
    def key(s: ServiceStatus) -> tuple[int, int, int, str, int]:
        k = s.spec.key
        return (k.fwmark, int(k.af), k.protocol, str(k.addr), k.port)

    return [
        (s.spec, sorted((d.spec for d in s.dests), key=lambda d: (str(d.addr), d.port)))
        for s in sorted(table.get_services(), key=key)
    ]


VARIED_TABLE = [
    "-A -t 192.168.168.100:80 -s wrr",
    "-a -t 192.168.168.100:80 -r 192.168.168.10:80 -g -w 4",
    "-a -t 192.168.168.100:80 -r 192.168.168.20:8080 -m -w 3 -x 100 -y 50",
    "-a -t 192.168.168.100:80 -r 192.168.168.30:80 -i -w 2",
    "-A -t 192.168.168.101:443 -s sh -b sh-fallback,sh-port -p 60 -M 255.255.255.0",
    "-a -t 192.168.168.101:443 -r 192.168.168.10 -g",
    "-A -t 192.168.168.102:0 -s rr -p",
    "-A -u 192.168.168.100:53 -s rr -o",
    "-a -u 192.168.168.100:53 -r 192.168.168.10:53 -m",
    "-A -f 1 -s lc",
    "-a -f 1 -r 192.168.168.20:8080 -m -w 2",
    "-A -f 2 -6 -s wlc -p 30 -M 64",
    "-a -f 2 -6 -r [2001:db8::30]:8080 -m -w 3",
    "-A -t [2001:db8::1]:80 -s rr",
    "-a -t [2001:db8::1]:80 -r [2001:db8::20]:8080 -m -w 2",
    "-a -t [2001:db8::1]:80 -r 192.168.168.50 -i --tun-type gue --tun-port 6080 --tun-remcsum",
    "-A --sctp-service 192.168.168.104:5000 -s nq",
    "-a --sctp-service 192.168.168.104:5000 -r 192.168.168.10 -i --tun-type gre --tun-csum",
    "-A -t 192.168.168.112:5060 -s rr -p 30 --pe sip",
    "-A -t 192.168.168.113:80 -s mh -b mh-port",
]


def build(lines: list[str]) -> IPVSTable:
    table = IPVSTable()
    for line in lines:
        _out, err, rc = run(table, *line.split())
        assert (err, rc) == ("", 0), line
    return table


def test_save_fed_to_restore_rebuilds_an_identical_table() -> None:
    table = build(VARIED_TABLE)
    saved, _, rc = run(table, "-Sn")
    assert rc == 0
    again = IPVSTable()
    out, err, rc = run(again, "-R", stdin=saved)
    assert (out, err, rc) == ("", "", 0)
    # -S never writes thresholds (ipvsadm's format), so compare everything else.
    want = [(s, [d for d in ds]) for s, ds in snapshot(table)]
    got = snapshot(again)
    assert [s for s, _ in got] == [s for s, _ in want]
    for (_, wd), (_, gd) in zip(want, got, strict=True):
        assert [d.__class__(**{**_fields(d), "u_threshold": 0, "l_threshold": 0}) for d in wd] == gd
    assert run(again, "-Sn")[0] == saved


def _fields(d: DestSpec) -> dict[str, object]:
    return {f: getattr(d, f) for f in d.__dataclass_fields__}


def test_save_rules_is_what_save_prints() -> None:
    table = build(VARIED_TABLE)
    assert save_rules(table, numeric=True) == run(table, "-Sn")[0]


def test_plain_restore_applies_lines_before_a_bad_one_like_ipvsadm() -> None:
    table = IPVSTable()
    _out, err, rc = run(table, "-R", stdin="-A -t 10.1.1.1:80 -s rr\nnonsense\n-A -t 10.1.1.2:80\n")
    assert rc == 255
    assert err == "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n"
    assert [s.spec.key.addr for s in table.get_services()] == [ipaddress.ip_address("10.1.1.1")]


def test_strict_restore_names_the_bad_line_and_applies_nothing() -> None:
    text = "-A -t 10.1.1.1:80 -s rr\n\n# a comment\n-a -t 10.1.1.1:80 -r 10.2.2.2 -w lots\n"
    with pytest.raises(RestoreError) as exc:
        parse_restore(text, "/etc/pylvs/rules")
    assert str(exc.value) == "/etc/pylvs/rules:4: illegal weight specified"
    with pytest.raises(RestoreError, match=r"^rules:2: --bogus: unknown option$"):
        parse_restore("-C\n-L --bogus\n", "rules")
    with pytest.raises(RestoreError, match=r"^rules:1: the 'list' command does not change"):
        parse_restore("-Ln\n", "rules")
    with pytest.raises(RestoreError, match=r"^r:3: Try `ipvsadm -h'"):
        parse_restore("-C\n\nbogus line\n", "r")


def test_strict_restore_applies_in_order_and_reports_refusals_with_line_numbers() -> None:
    table = IPVSTable()
    cmds = parse_restore("ipvsadm -A -t 10.1.1.1:80 -s rr\n-a -t 10.1.1.1:80 -r 10.2.2.2 -m\n", "f")
    assert [c.lineno for c in cmds] == [1, 2]
    apply_commands(table, cmds, "f")
    assert run(table, "-Sn")[0] == (
        "-A -t 10.1.1.1:80 -s rr\n-a -t 10.1.1.1:80 -r 10.2.2.2:80 -m -w 1\n"
    )
    before = run(table, "-Sn")[0]
    dup = parse_restore("-A -t 10.9.9.9:80 -s rr\n-A -t 10.1.1.1:80 -s wrr\n", "f")
    with pytest.raises(RestoreError, match=r"^f:2: Service already exists$"):
        apply_commands(table, dup, "f")
    assert run(table, "-Sn")[0] == before  # refused as a whole: line 1 was not applied either
    bad_sched = parse_restore("-D -t 10.1.1.1:80\n-A -t 10.1.1.1:80 -s nosuch\n", "g")
    with pytest.raises(RestoreError, match=r"^g:2: Scheduler or persistence engine not found$"):
        apply_commands(table, bad_sched, "g")
    assert run(table, "-Sn")[0] == before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_strict_restore_never_fails_other_than_with_a_located_error(text: str) -> None:
    try:
        parse_restore(text, "fuzz")
    except RestoreError as exc:
        assert str(exc).startswith("fuzz:")
        line = str(exc).split(":")[1]
        assert line.isdigit() and 1 <= int(line) <= text.count("\n") + 1


_addrs4 = st.integers(0x01000000, 0xDFFFFFFF).map(lambda n: ipaddress.IPv4Address(n))  # unicast
_addrs6 = st.integers(1, 2**64).map(lambda n: ipaddress.IPv6Address((0x20010DB8 << 96) | n))


@st.composite
def tables(draw: st.DrawFn) -> list[tuple[ServiceSpec, list[DestSpec]]]:
    specs: dict[ServiceKey, tuple[ServiceSpec, list[DestSpec]]] = {}
    for _ in range(draw(st.integers(0, 5))):
        v6 = draw(st.booleans())
        if draw(st.booleans()):
            af = 10 if v6 else 2
            key = ServiceKey.mark(draw(st.integers(1, 2**31 - 1)), af)
        else:
            addr = draw(_addrs6 if v6 else _addrs4)
            key = ServiceKey.inet(draw(st.sampled_from([6, 17, 132])), addr, draw(st.integers(1, 65535)))
        persistent = draw(st.booleans())
        sched = draw(st.sampled_from(["rr", "wrr", "lc", "wlc", "sh", "mh", "sed", "nq", "fo"]))
        flags = ServiceFlags.PERSISTENT if persistent else ServiceFlags.NONE
        if sched in ("sh", "mh") and draw(st.booleans()):
            flags |= ServiceFlags.SCHED2
        if key.protocol == 17 and draw(st.booleans()):
            flags |= ServiceFlags.ONEPACKET
        if key.af == 10:
            netmask = draw(st.integers(1, 128)) if persistent else 128
        else:
            netmask = draw(st.sampled_from([0xFFFFFFFF, 0xFFFFFF00, 0xFFFF0000])) if persistent else 0xFFFFFFFF
        spec = ServiceSpec(key, sched, flags, draw(st.integers(1, 86400)) if persistent else 0, netmask)
        dests: dict[tuple[object, int], DestSpec] = {}
        for _ in range(draw(st.integers(0, 4))):
            fwd = draw(st.sampled_from([ForwardingMethod.MASQ, ForwardingMethod.DROUTE, ForwardingMethod.TUNNEL]))
            same = key.af == 10
            daddr = draw(_addrs6 if same else _addrs4)
            port = key.port if fwd != ForwardingMethod.MASQ and not key.fwmark else draw(st.integers(0, 65535))
            tun = TunnelType.IPIP
            tflags = TunnelFlags.NOCSUM
            tport = 0
            if fwd == ForwardingMethod.TUNNEL:
                tun = draw(st.sampled_from(list(TunnelType)))
                if tun == TunnelType.GUE:
                    tport = draw(st.integers(1, 65535))
                    tflags = draw(st.sampled_from(list(TunnelFlags)))
                elif tun == TunnelType.GRE:
                    tflags = draw(st.sampled_from([TunnelFlags.NOCSUM, TunnelFlags.CSUM]))
            dests[(daddr, port)] = DestSpec(
                daddr, port, fwd, draw(st.integers(0, 2**31 - 1)), tun_type=tun, tun_port=tport,
                tun_flags=tflags,
            )
        specs[key] = (spec, list(dests.values()))
    return list(specs.values())


@settings(max_examples=60, deadline=None)
@given(tables())
def test_any_table_survives_save_then_restore(content: list[tuple[ServiceSpec, list[DestSpec]]]) -> None:
    table = IPVSTable()
    for spec, dests in content:
        table.add_service(spec)
        for d in dests:
            table.add_dest(spec.key, d)
    saved, err, rc = run(table, "-Sn")
    assert (err, rc) == ("", 0)
    again = IPVSTable()
    assert run(again, "-R", stdin=saved)[1:] == ("", 0)
    assert snapshot(again) == snapshot(table)
    strict = IPVSTable()
    apply_commands(strict, parse_restore(saved, "saved"), "saved")
    assert snapshot(strict) == snapshot(table)
