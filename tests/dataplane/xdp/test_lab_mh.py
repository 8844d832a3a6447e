"""``mh`` scheduled by the XDP program, end to end in the namespace lab: an mh DR service under
``--dataplane xdp``; once the director knows its real servers' MACs the program schedules new
connections itself, the requests are answered, and the core's table shows those connections
(``-Lnc``, the connection counters, ``--stats``) as if it had scheduled them; a server
quiesced with ``-e -w 0`` stops getting the program's new connections at once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.dataplane.packet.conftest import VIP, Cluster
from tests.dataplane.xdp.test_lab import xdp_cluster, xdp_counters


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    yield from xdp_cluster("dr")


def wait_for(what: str, check: object, seconds: float = 20.0) -> None:
    """Poll ``check()`` until true (the director's tick publishes tables and imports)."""
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what}")
        time.sleep(0.2)


def stats_conns(c: Cluster) -> int:
    """The service's Conns column of ``-Ln --stats``."""
    for line in c.adm("-Ln", "--stats").splitlines():
        if line.startswith("TCP"):
            return int(line.split()[2])
    raise AssertionError("no TCP service in -Ln --stats")


def test_mh_connections_are_scheduled_in_the_kernel_and_counted_by_the_core(cluster: Cluster) -> None:
    c = cluster
    c.service("mh", "-b", "mh-port,mh-fallback")
    assert c.status()["dataplane"]["xdp"]["mh_services"] == 1
    # the first requests teach the director its real servers' MACs (their slots send new
    # connections up until then); the next tick publishes the table with them
    c.curl_many(4)
    wait_for("the program schedules the service's new connections", lambda: (
        c.curl_many(1) and xdp_counters(c).get("mh_scheduled", 0) > 0))
    before = xdp_counters(c)
    conns_before = stats_conns(c)
    bodies = c.curl_many(20)
    after = xdp_counters(c)
    assert set(bodies) <= {"this is nginx1", "this is nginx2"}
    assert len(set(bodies)) == 2  # mh-port: clients' ports spread them over both servers
    assert after["mh_scheduled"] - before["mh_scheduled"] >= 20, (before, after)
    # the core counts every one of them, and lists them
    wait_for("the core's Conns counts the kernel's connections",
             lambda: stats_conns(c) - conns_before >= 20)
    listing = c.adm("-Lnc")
    assert listing.count(VIP) >= 20, listing
    # a long-lived connection scheduled in the kernel is an active connection of its server
    ka = c.keepalive_client()
    try:
        first = ka.get()
        assert {ka.get() for _ in range(5)} == {first}

        def one_active() -> bool:
            rows = [ln.split() for ln in c.adm("-Ln").splitlines() if "->" in ln and ":80" in ln]
            return sum(int(r[-2]) for r in rows if len(r) >= 6 and r[-2].isdigit()) >= 1
        wait_for("ActiveConn shows the keep-alive connection", one_active)
        assert "ESTABLISHED" in c.adm("-Lnc")
    finally:
        ka.close()
    # quiescing a server reaches the program's table at once: its clients' SYNs go up and
    # the core falls back to the other server (mh-fallback)
    c.adm("-e", "-t", f"{VIP}:80", "-r", f"{c.rips[0]}:80", "-g", "-w", "0")
    before = xdp_counters(c)
    assert set(c.curl_many(12)) == {"this is nginx2"}
    after = xdp_counters(c)
    assert after["pass_mh_unavailable"] > before["pass_mh_unavailable"], (before, after)
    assert after["mh_scheduled"] > before["mh_scheduled"], (before, after)
