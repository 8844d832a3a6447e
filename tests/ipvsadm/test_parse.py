"""pylvsadm's command-line rules beyond the recordings, and a fuzz of the parser."""

from __future__ import annotations

import io
import ipaddress
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.core.model import AF_INET, ConnEntry
from pylvs.core.table import IPVSTable
from pylvs.ipvsadm.listing import FMT_EXACT, FMT_NONE, print_largenum
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.runner import run as run_ipvsadm


def run(
    table: IPVSTable, *args: str, stdin: str = "", resolver: Resolver | None = None
) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_ipvsadm(
        list(args), lambda: table, out, err, lambda: io.StringIO(stdin),
        resolver or Resolver.from_environment(),
    )
    return out.getvalue(), err.getvalue(), rc


def saved(table: IPVSTable) -> str:
    return run(table, "-Sn")[0]


def test_popt_forms_glued_equals_long_and_clustered_are_all_accepted() -> None:
    t = IPVSTable()
    assert run(t, "--add-service", "--tcp-service=10.0.0.1:80", "-srr")[2] == 0
    assert run(t, "-a", "-t10.0.0.1:80", "-r", "10.0.0.2", "-mw3")[2] == 0
    assert run(t, "-a", "-t", "10.0.0.1:80", "--real-server=10.0.0.3", "--weight", "7", "-m")[2] == 0
    assert run(t, "-a", "-t", "10.0.0.1:80", "-r", "10.0.0.4", "-w=5", "-g")[2] == 0
    assert saved(t) == (
        "-A -t 10.0.0.1:80 -s rr\n"
        "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 3\n"
        "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m -w 7\n"
        "-a -t 10.0.0.1:80 -r 10.0.0.4:80 -g -w 5\n"
    )


def test_persistent_takes_a_value_only_when_the_next_word_is_not_an_option() -> None:
    t = IPVSTable()
    assert run(t, "-A", "-t", "10.0.0.1:80", "-p", "-s", "rr")[2] == 0
    assert run(t, "-A", "-t", "10.0.0.2:80", "-p", "45")[2] == 0
    assert run(t, "-A", "-t", "10.0.0.3:80", "-p")[2] == 0
    assert saved(t) == (
        "-A -t 10.0.0.1:80 -s rr -p 360\n"
        "-A -t 10.0.0.2:80 -s wlc -p 45\n"
        "-A -t 10.0.0.3:80 -s wlc -p 360\n"
    )


def test_long_options_are_exact_as_in_popt_no_abbreviations() -> None:
    t = IPVSTable()
    assert run(t, "-L", "--numer") == ("", "--numer: unknown option\n", 255)
    assert run(t, "--lis") == ("", "Try `ipvsadm -h' or 'ipvsadm --help' for more information.\n", 255)


def test_a_second_command_is_an_invalid_option_named_as_typed() -> None:
    t = IPVSTable()
    assert run(t, "-LnC") == ("", "invalid option `-LnC'\n", 2)
    assert run(t, "-L", "--start-daemon", "master") == ("", "invalid option `master'\n", 2)
    assert run(t, "-L", "-h") == ("", "invalid option `-h'\n", 2)


def test_option_rules_that_the_recordings_do_not_show() -> None:
    t = IPVSTable()
    assert run(t, "-A", "-t", "10.0.0.1:80", "-o") == (
        "", "One-Packet Scheduling is only for UDP virtual services\n", 2)
    assert run(t, "-A", "-f", "3", "-6", "-6", "-s", "rr")[2] == 0
    assert run(t, "-A", "-6", "-f", "4") == ("", "-6 used before -f\n\n", 2)
    assert run(t, "-a", "-f", "3", "-6", "-r", "2001:db8::9", "-m", "--tun-type", "gre") == (
        "", "Tunnel options conflict with forward method\n", 2)
    assert run(t, "-a", "-f", "3", "-6", "-r", "2001:db8::9", "-i", "--tun-type", "gue") == (
        "", "You need to supply the 'tun-port' option for the 'gue' tunnel type\n", 2)
    assert run(t, "-a", "-f", "3", "-6", "-r", "2001:db8::9", "-i", "--tun-type", "gre",
               "--tun-csum", "--tun-nocsum") == (
        "", "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gre' tunnel type\n", 2)
    assert run(t, "-a", "-f", "3", "-6", "-r", "2001:db8::9", "-i", "--tun-port", "9") == (
        "", "Illegal 'tun-port' option with the 'ipip' tunnel type\n", 2)
    assert run(t, "-L", "--timeout", "--persistent-conn") == (
        "", "options conflicts in the list command\n", 2)
    assert run(t, "-L", "--timeout", "--daemon") == (
        "", "The option 'daemon' conflicts with the 'timeout' option in the 'list' command\n", 2)
    assert run(t, "--start-daemon", "primary") == (
        "", "illegal start-daemon parameter specified\n", 2)
    assert run(t, "--start-daemon", "master", "--mcast-group", "10.1.1.1") == (
        "", "invalid IPv4 mcast-group `10.1.1.1'\n", 2)
    assert run(t, "-A", "-t", "10.0.0.5:80", "-s", "wrr", "-b", "flag-1,flag-3")[2] == 0
    assert run(t, "-Ln", "-t", "10.0.0.5:80")[0].endswith("TCP  10.0.0.5:80 wrr (flag-1,flag-3)\n")
    assert run(t, "-e", "-f", "3", "-6", "-r", "2001:db8::1", "-w", "2") == (
        "", "No such destination\n", 255)


def test_fwmark_above_int_max_prints_negative_like_ipvsadm_131() -> None:
    t = IPVSTable()
    assert run(t, "-A", "-f", "4294967295", "-s", "rr")[2] == 0
    assert saved(t) == "-A -f -1 -s rr\n"


def test_big_counters_round_to_units_unless_exact() -> None:
    assert print_largenum(99_999_999, FMT_NONE) == " 99999999"
    assert print_largenum(100_000_000, FMT_NONE) == "  100000K"
    assert print_largenum(1_000_000_000, FMT_NONE) == "    1000M"
    assert print_largenum(99_999_999_999, FMT_NONE) == "   99999M"
    assert print_largenum(100_000_000_000, FMT_NONE) == "     100G"
    assert print_largenum(100_000_000_000_000, FMT_NONE) == "     100T"
    assert print_largenum(123_456_789_012, FMT_EXACT) == " 123456789012"
    assert print_largenum(5, FMT_EXACT) == "        5"


def test_names_come_from_the_hosts_file_and_long_ones_are_cut_like_ipvsadm(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    long = "a-very-long-host-name.with.many.labels.example.org"
    hosts.write_text(f"10.0.0.1 {long} short\n10.0.0.2\tbackend-two\n")
    services = tmp_path / "services"
    services.write_text("http\t\t80/tcp\t\twww\nweb8\t8080/tcp\n")
    res = Resolver(str(hosts), str(services))
    t = IPVSTable()
    assert run(t, "-A", "-t", "short:www", "-s", "rr", resolver=res)[2] == 0
    assert run(t, "-a", "-t", "short:http", "-r", "backend-two:web8", "-m", resolver=res)[2] == 0
    out = run(t, "-L", resolver=res)[0].splitlines()
    assert out[3] == f"TCP  {long}"[:33] + " rr"
    assert out[4] == "  -> backend-two:web8             Masq    1      0          0         "
    assert run(t, "-S", resolver=res)[0].splitlines()[0] == f"-A -t {long}:http -s rr"


def test_connection_rows_show_templates_and_persistence_engine_data() -> None:
    t = IPVSTable()
    ip = ipaddress.ip_address
    t.connection_provider = lambda: [
        ConnEntry(0, AF_INET, ip("10.0.0.2"), 0, ip("0.0.0.1"), 0, ip("192.168.1.1"), 0,
                  "ASSURED", 125.9),
        ConnEntry(17, AF_INET, ip("10.0.0.2"), 5060, ip("10.0.0.100"), 5060, ip("192.168.1.2"),
                  5060, "UDP", 299.0, pe_name="sip", pe_data="abc123"),
    ]
    out, err, rc = run(t, "-Lnc", "--persistent-conn")
    assert (err, rc) == ("", 0)
    assert out.splitlines() == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination        pe name          pe_data",
        "IP  02:05  ASSURED     10.0.0.2:0         0.0.0.1:0          192.168.1.1:0",
        "UDP 04:59  UDP         10.0.0.2:5060      10.0.0.100:5060    192.168.1.2:5060 sip                abc123",
    ]


_WORDS = [
    "-A", "-E", "-D", "-C", "-R", "-S", "-a", "-e", "-d", "-L", "-l", "-Z", "--set", "-h", "-v",
    "-t", "-u", "--sctp-service", "-f", "-s", "-p", "-M", "-r", "-g", "-i", "-m", "-w", "-x",
    "-y", "-b", "--pe", "-6", "-o", "-c", "-n", "--stats", "--rate", "--thresholds",
    "--persistent-conn", "--tun-info", "--nosort", "--sort", "--exact", "--timeout", "--daemon",
    "--tun-type", "--tun-port", "--tun-nocsum", "--tun-csum", "--tun-remcsum", "--mcast-group",
    "--mcast-interface", "--mcast-port", "--mcast-ttl", "--syncid", "--sync-maxlen",
    "--start-daemon", "--stop-daemon", "-Ln", "-Lnc", "--", "-", "rr", "wrr", "sh", "mh",
    "sh-port,sh-fallback", "10.0.0.1:80", "[2001:db8::1]:80", "2001:db8::2", "10.0.0.2", "1",
    "0", "-1", "65536", "master", "backup", "gue", "gre", "ipip", "255.255.255.0", "sip",
    "10.0.0.1:http", "::", "0.0.0.0:0", "x",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=12)), max_size=10),
    st.text(max_size=80),
)
def test_any_command_line_gets_an_answer_never_a_traceback(argv: list[str], stdin: str) -> None:
    table = IPVSTable()
    _out, err, rc = run(table, *argv, stdin=stdin)
    assert 0 <= rc <= 255
    if rc != 0:
        assert err.strip() != "", (argv, rc)


# Mostly close together (the keyed fast path), sometimes anywhere (the wrapping comparison).
_any4 = st.one_of(
    st.integers(0x0A000000, 0x0A0000FF), st.integers(0, 2**32 - 1)
).map(ipaddress.IPv4Address)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_any4, st.integers(0, 65535)), max_size=12, unique=True),
    st.lists(st.tuples(st.integers(1, 2**32 - 1), st.sampled_from([2, 10])), max_size=8, unique=True),
)
def test_fast_ordering_is_exactly_ipvsadms_merge_sort(
    dests: list[tuple[ipaddress.IPv4Address, int]], marks: list[tuple[int, int]]
) -> None:
    from pylvs.core.api import DestStatus, ServiceStatus
    from pylvs.core.model import DestSpec, ServiceKey, ServiceSpec
    from pylvs.ipvsadm import listing as L

    ds = [DestStatus(DestSpec(a, p)) for a, p in dests]
    assert L.sort_dests(ds) == L.glibc_msort(ds, L.cmp_dests)
    ss = [ServiceStatus(ServiceSpec(ServiceKey.mark(m, af))) for m, af in marks]
    ss += [ServiceStatus(ServiceSpec(ServiceKey.inet(6, a, p))) for a, p in dests[:6]]
    assert L.sort_services(ss, 0) == L.glibc_msort(ss, L.cmp_services)


def test_sync_daemon_commands_say_when_the_table_has_no_sync_daemon() -> None:
    t = IPVSTable()
    assert run(t, "--start-daemon", "master", "--mcast-interface", "eth1", "--syncid", "7") == (
        "", "Connection synchronisation daemons are not supported here\n", 255)
    assert run(t, "--stop-daemon", "backup")[2] == 255
    assert run(t, "--stop-daemon", "master", "--syncid", "300") == ("", "illegal syncid specified\n", 2)
    assert run(t, "-L", "--daemon") == ("", "", 0)


_LINES = [
    "-A -t 10.0.0.1:80 -s rr", "-a -t 10.0.0.1:80 -r 10.0.0.2 -m", "-D -t 10.0.0.1:80", "-C",
    "-E -t 10.0.0.1:80 -s foo", "-L -n", "-Sn", "-R", "# comment", "", "  ", "ipvsadm -Z",
    "-a -t 10.0.0.1:80 -r 10.0.0.3 -w 99999999999", "--set 1 2", "-Ln --bogus", "-h",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_LINES), st.text(max_size=30)), max_size=8))
def test_any_restore_input_gets_an_answer_never_a_traceback(lines: list[str]) -> None:
    _out, err, rc = run(IPVSTable(), "-R", stdin="\n".join(lines))
    assert 0 <= rc <= 255
    if rc != 0:
        assert err.strip() != ""


def test_table_refuses_what_the_kernel_refuses_for_real_servers() -> None:
    t = IPVSTable()
    assert run(t, "-A", "-t", "10.0.0.1:80", "-s", "rr")[2] == 0
    invalid = "Invalid operation.  Possibly wrong module version, address not unicast, ...\n"
    for addr in ("0.1.2.3", "224.0.0.5", "255.255.255.255"):
        assert run(t, "-a", "-t", "10.0.0.1:80", "-r", addr, "-m") == ("", invalid, 255), addr
    assert run(t, "-A", "-t", "[2001:db8::1]:80", "-s", "rr")[2] == 0
    assert run(t, "-a", "-t", "[2001:db8::1]:80", "-r", "[fe80::1]:80", "-m") == ("", invalid, 255)
    # editing never checks the address; a missing one is simply not there
    assert run(t, "-e", "-t", "10.0.0.1:80", "-r", "0.1.2.3", "-m") == ("", "No such destination\n", 255)
    # the other family only through a tunnel, as the kernel checks it too
    assert run(t, "-a", "-t", "[2001:db8::1]:80", "-r", "10.0.0.9", "-i")[2] == 0


def test_table_refuses_a_real_server_of_the_other_family_unless_tunnelled() -> None:
    import errno

    import pytest

    from pylvs.core.api import IPVSError
    from pylvs.core.model import DestSpec, ForwardingMethod, ServiceKey, ServiceSpec

    t = IPVSTable()
    key = ServiceKey.inet(6, "2001:db8::1", 80)
    t.add_service(ServiceSpec(key, "rr", netmask=128))
    with pytest.raises(IPVSError) as exc:
        t.add_dest(key, DestSpec(ipaddress.ip_address("10.0.0.9"), 80, ForwardingMethod.MASQ))
    assert exc.value.errno == errno.EINVAL
    t.add_dest(key, DestSpec(ipaddress.ip_address("10.0.0.9"), 80, ForwardingMethod.TUNNEL))
    with pytest.raises(IPVSError) as exc:
        t.edit_dest(key, DestSpec(ipaddress.ip_address("10.0.0.9"), 80, ForwardingMethod.DROUTE))
    assert exc.value.errno == errno.EINVAL
