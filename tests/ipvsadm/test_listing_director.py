"""pylvsadm's connection and counter listings of a live Director (the table a daemon serves)."""

from __future__ import annotations

import io
import ipaddress

from pylvs.core.conntrack import TCP_ACK, TCP_FIN, TCP_SYN
from pylvs.core.director import DIR_INPUT, DIR_OUTPUT, Director
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.runner import run as run_ipvsadm


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_connections_of_a_live_director_list_as_ipvsadm_lists_them() -> None:
    now = [1000.0]
    director = Director(clock=lambda: now[0])

    def run(*args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        rc = run_ipvsadm(
            list(args), lambda: director.table, out, err, io.StringIO, Resolver.from_environment()
        )
        assert rc == 0, err.getvalue()
        return out.getvalue()

    for line in (
        "-A -t 10.0.0.100:80 -s rr", "-a -t 10.0.0.100:80 -r 192.168.168.11:80 -m",
        "-A -t 10.0.0.101:80 -s rr -p 120", "-a -t 10.0.0.101:80 -r 192.168.168.13:80 -m",
        "-A -u 10.0.0.100:53 -s rr", "-a -u 10.0.0.100:53 -r 192.168.168.11:53 -m",
    ):
        run(*line.split())
    established = director.schedule(6, _ip("10.0.0.2"), 37954, _ip("10.0.0.100"), 80)
    persistent = director.schedule(6, _ip("10.0.0.2"), 59010, _ip("10.0.0.101"), 80)
    syn_only = director.schedule(6, _ip("10.0.0.2"), 42776, _ip("10.0.0.100"), 80)
    udp = director.schedule(17, _ip("10.0.0.2"), 58622, _ip("10.0.0.100"), 53)
    assert None not in (established, persistent, syn_only, udp)
    for conn in (established, persistent):
        assert conn is not None
        director.tcp_packet(conn, DIR_OUTPUT, TCP_SYN | TCP_ACK)
        director.tcp_packet(conn, DIR_INPUT, TCP_ACK)
    assert persistent is not None
    director.tcp_packet(persistent, DIR_INPUT, TCP_FIN | TCP_ACK)
    director.tcp_packet(persistent, DIR_OUTPUT, TCP_FIN | TCP_ACK)
    director.tcp_packet(persistent, DIR_INPUT, TCP_ACK)
    now[0] += 2.5

    lines = run("-Lnc").splitlines()
    assert lines[:2] == [
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
    ]
    assert sorted(lines[2:]) == sorted([
        "TCP 14:57  ESTABLISHED 10.0.0.2:37954     10.0.0.100:80      192.168.168.11:80",
        "TCP 00:57  SYN_RECV    10.0.0.2:42776     10.0.0.100:80      192.168.168.11:80",
        "TCP 01:57  TIME_WAIT   10.0.0.2:59010     10.0.0.101:80      192.168.168.13:80",
        "TCP 01:57  ASSURED     10.0.0.2:0         10.0.0.101:80      192.168.168.13:80",
        "UDP 04:57  UDP         10.0.0.2:58622     10.0.0.100:53      192.168.168.11:53",
    ])
    assert run("-Ln", "--persistent-conn").splitlines()[3:] == [
        "TCP  10.0.0.100:80 rr",
        # SYN_RECV counts as active, as the recorded kernel shows for an unanswered SYN
        "  -> 192.168.168.11:80            1         0           2          0         ",
        "TCP  10.0.0.101:80 rr persistent 120",
        "  -> 192.168.168.13:80            1         1           0          1         ",
        "UDP  10.0.0.100:53 rr",
        "  -> 192.168.168.11:53            1         0           0          1         ",
    ]
