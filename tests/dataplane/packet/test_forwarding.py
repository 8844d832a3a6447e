"""The packet data plane forwards the seed's cluster in DR, NAT and TUN: real curl through real
namespaces, with captures showing which way the replies go. DR and NAT run twice: with the C
hot path (when built) and with the pure-Python path."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.dataplane.packet.conftest import (
    VIP,
    Cluster,
    cluster_fixture,
    one_handshake,
    tcp_frames,
)

NGINX = ("this is nginx1", "this is nginx2")


# DR and NAT once more with the C hot path off: the pure-Python path stays the reference
@pytest.fixture(scope="module", params=["dr", "nat", "tun", "dr/python", "nat/python"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    mode, _, path = request.param.partition("/")
    yield from cluster_fixture(mode, fastpath=path != "python")


def test_rr_alternates_rs1_rs2(cluster: Cluster) -> None:
    cluster.service("rr")
    bodies = cluster.curl_many(6)
    assert set(bodies) == set(NGINX)
    assert all(a != b for a, b in itertools.pairwise(bodies)), bodies
    listing = cluster.adm("-Ln")
    label = {"dr": "Route", "nat": "Masq", "tun": "Tunnel"}[cluster.mode]
    assert listing.count(label) == 2
    # six finished connections, three per real server, counted inactive until they expire
    assert re.search(rf"{re.escape(cluster.rips[0])}:80\s+{label}\s+1\s+0\s+3", listing), listing
    plane = cluster.status()["dataplane"]
    assert plane["name"] == "packet"
    assert plane["firewall"] == "on"
    assert plane["forwarded"] >= 6 * 5  # at least SYN, ACK, request, FIN, ACK per connection


def c_frames(c: Cluster) -> dict[str, int]:
    return {"fast_frames": c.status()["dataplane"]["fast_frames"]}


def opened_at_syn(c: Cluster) -> int:
    return int(c.status()["dataplane"].get("opened_at_syn", 0))


def test_a_handshake_ack_is_forwarded_in_c(cluster: Cluster) -> None:
    """With the C hot path a connection's flow goes in at its SYN, so the handshake's ACK is
    forwarded by the C ring walk (no second pass through the Python core) and reported: the
    entry is ESTABLISHED. The pure-Python path has no such table."""
    cluster.service("rr")
    cluster.curl_many(2)  # the servers' MACs are known
    c_path = cluster.status()["dataplane"]["fastpath"] == "on"
    before, after, opened = one_handshake(cluster, VIP, c_frames, opened_at_syn)
    if c_path:
        assert opened == 1
        # the ACK (the SYN, and in NAT the server's SYN-ACK, go through the Python core)
        assert after["fast_frames"] - before["fast_frames"] == 1, (before, after)
    else:
        assert opened == 0 and after == before


def test_replies_take_the_right_path(cluster: Cluster) -> None:
    """DR and TUN: replies reach the client straight from the real server's MAC and never cross
    the director. NAT: they come from the director's MAC, rewritten back to the VIP."""
    cluster.service("rr")
    lab = cluster.lab
    with cluster.capture("client") as at_client, cluster.capture("director") as at_director:
        cluster.curl_many(4)
    replies = tcp_frames(at_client, src=VIP, sport=80)
    assert replies, "no replies captured at the client"
    # the director's own stack never answered (a RST would break every connection)
    assert not [r for r in replies if r[4] & 0x04], "a RST came from the VIP"
    macs = {m for m, *_ in replies}
    director_macs = {bytes.fromhex(lab.mac("director").replace(":", ""))}
    rs_macs = {bytes.fromhex(lab.mac(h).replace(":", "")) for h in ("rs1", "rs2")}
    replies_at_director = tcp_frames(at_director, src=VIP, sport=80)
    requests_at_director = tcp_frames(at_director, dst=VIP)
    assert requests_at_director, "the requests did not reach the director"
    if cluster.mode == "nat":
        assert macs == director_macs
        # the director rewrote the real servers' replies: they reach the client from the VIP
        assert len(replies_at_director) >= 4
    else:
        assert macs == rs_macs  # both real servers answered, each from its own MAC
        assert replies_at_director == []


def test_wrr_3_to_1(cluster: Cluster) -> None:
    cluster.service("wrr", weights=(3, 1))
    counts = Counter(cluster.curl_many(8))
    assert counts == {"this is nginx1": 6, "this is nginx2": 2}


def test_persistence_sends_a_client_to_one_server(cluster: Cluster) -> None:
    cluster.service("rr", "-p", "60")
    assert len(set(cluster.curl_many(5))) == 1
    assert "persistent 60" in cluster.adm("-Ln")


def test_weight_zero_quiesces_and_removed_server_keeps_its_connection(cluster: Cluster) -> None:
    cluster.service("rr")
    ka = cluster.keepalive_client()
    try:
        first = ka.get()
        assert first in NGINX
        idx = NGINX.index(first)
        rip, other = cluster.rips[idx], NGINX[1 - idx]
        cluster.adm("-e", "-t", f"{VIP}:80", "-r", f"{rip}:80", cluster.flag, "-w", "0")
        assert set(cluster.curl_many(3)) == {other}  # no new connections to the quiesced server
        assert ka.get() == first  # the established one carries on
        cluster.adm("-d", "-t", f"{VIP}:80", "-r", f"{rip}:80")
        assert ka.get() == first  # and even survives the server's removal, as in IPVS
        assert set(cluster.curl_many(2)) == {other}
    finally:
        ka.close()


def test_connection_listing_shows_states(cluster: Cluster) -> None:
    cluster.service("rr")
    ka = cluster.keepalive_client()
    try:
        ka.get()
        lines = [ln for ln in cluster.adm("-Lnc").splitlines() if ln.startswith("TCP")]
        assert any("ESTABLISHED" in ln for ln in lines), lines
        est = next(ln for ln in lines if "ESTABLISHED" in ln)
        assert re.match(r"TCP (14|15):\d\d  ESTABLISHED", est), est
    finally:
        ka.close()
    cluster.curl_many(1)
    states = {ln.split()[2] for ln in cluster.adm("-Lnc").splitlines() if ln.startswith("TCP")}
    # DR/TUN see only the client's half: FIN_WAIT; NAT sees both: TIME_WAIT or CLOSE
    assert states & ({"FIN_WAIT"} if cluster.mode != "nat" else {"TIME_WAIT", "CLOSE", "FIN_WAIT"})


def test_udp_service_alternates_and_answers_from_the_vip(cluster: Cluster) -> None:
    cluster.adm("-C")
    cluster.adm("-A", "-u", f"{VIP}:5353", "-s", "rr")
    for rip in cluster.rips:
        cluster.adm("-a", "-u", f"{VIP}:5353", "-r", f"{rip}:5353", cluster.flag)
    procs = cluster.udp_responders(5353)
    try:
        answers = cluster.udp_ask(5353, 4)
    finally:
        for p in procs:
            p.kill()
            p.wait(5)
    # connected client sockets only accept answers from VIP:5353, so every answer proves it
    assert sorted(answers) == ["udp1", "udp1", "udp2", "udp2"]
    assert [ln for ln in cluster.adm("-Lnc").splitlines() if ln.startswith("UDP")]


def test_large_upload_passes(cluster: Cluster) -> None:
    """Full-size segments: in TUN the director answers "fragmentation needed" (the encapsulated
    packet would exceed the MTU) and the client's path MTU discovery makes them fit."""
    cluster.service("rr")
    lab = cluster.lab
    body = lab.state_dir / "upload.bin"
    body.write_bytes(b"x" * 300_000)
    r = lab.run("client", ["curl", "-sS", "--max-time", "20", "--data-binary", f"@{body}",
                           f"http://{VIP}/"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in NGINX
    if cluster.mode == "tun":
        assert cluster.status()["dataplane"]["drops"].get("too_big", 0) >= 1


def test_forwarding_resumes_after_the_directors_link_flaps(cluster: Cluster) -> None:
    """A VRRP master whose link goes down and comes back must forward again (its rings keep
    filling while the event loop is no longer woken for them)."""
    if cluster.mode != "dr":
        pytest.skip("one mode is enough: the rings are the same in every mode")
    cluster.service("rr")
    assert set(cluster.curl_many(2)) == set(NGINX)
    lab = cluster.lab
    lab.run("director", ["ip", "link", "set", "eth0", "down"], check=True)
    lab.run("director", ["ip", "link", "set", "eth0", "up"], check=True)
    answered: list[str] = []
    for _ in range(20):  # the link needs a moment to come back; then every request is answered
        res = lab.run("client", ["curl", "-sS", "--max-time", "2", f"http://{VIP}/"], timeout=15)
        if res.returncode == 0:
            answered.append(res.stdout.strip())
            if len(answered) == 4:
                break
    assert len(answered) == 4 and set(answered) == set(NGINX)


def test_established_connections_take_the_c_path_and_stay_counted(cluster: Cluster) -> None:
    """Requests on one kept-alive connection: with the C hot path, its segments after the
    handshake are forwarded by the flow table, and the Director still counts every packet
    (``-Ln --stats``) within a tick; without it, Python forwards them all."""
    cluster.service("rr")
    before = cluster.status()["dataplane"]
    ka = cluster.keepalive_client()
    try:
        for _ in range(10):
            assert ka.get() in NGINX
    finally:
        ka.close()
    time.sleep(2.5)  # a tick hands the flows' counters over
    after = cluster.status()["dataplane"]
    fast = after["fast_frames"] - before["fast_frames"]
    if cluster.fastpath and after["fastpath"] == "on":
        assert fast >= 10, after  # at least the requests after the first
    else:
        assert after["fastpath"] == "off" and fast == 0
    stats = cluster.adm("-Ln", "--stats")
    # the client's segments of the 10 requests: at least 10 in, however they were forwarded
    m = re.search(rf"TCP\s+{re.escape(VIP)}:80\s+(\d+)\s+(\d+)", stats)
    assert m is not None and int(m.group(2)) >= 10 + 3, stats
    assert after["forwarded"] - before["forwarded"] >= 10 + 3  # C ones and Python ones
