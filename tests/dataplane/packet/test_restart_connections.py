"""Live connections through the packet director survive a planned restart of it.

In the namespace lab: a director with a state file (``serve_packet --state-file``), an rr
service in DR or NAT (and DR on the xdp plane), one keep-alive HTTP connection from the client.
The director is stopped with SIGTERM and started again; the same connection, asked again,
must be answered by the same real server, and ``-Lnc`` must show its entry on that server (in
NAT the request is sent while no director runs: TCP's retransmission reaches the new one).
Without the table (a crash: SIGKILL) the same kind of connection gets no answer, which is what
this feature changes. The restart gap (SIGTERM sent to the new director ready) is printed.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylvs.lab import Lab
from tests.dataplane.packet.conftest import VIP, Cluster
from tests.lab.conftest import lab_id, need_root


@pytest.fixture(params=[("dr", "packet"), ("nat", "packet"), ("dr", "xdp")],
                ids=["dr", "nat", "dr-xdp"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    mode, plane = request.param
    need_root()
    for tool in ("curl", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if plane == "xdp":
        from pylvs.dataplane.xdp.loader import XdpProgram, XdpUnavailable

        try:
            XdpProgram().close()
        except XdpUnavailable as exc:
            pytest.skip(str(exc))
    lab = Lab(lab_id())
    c = Cluster(lab, mode)
    c.dataplane = plane
    try:
        lab.up()
        c.start()
        yield c
    finally:
        c.stop()
        lab.down()


class Director:
    """The lab's director started again by the test, with a state file."""

    def __init__(self, c: Cluster, state: Path) -> None:
        self.c = c
        self.state = state
        self.n = 0
        self.p: subprocess.Popen[Any] | None = None
        self.log = Path()

    def start(self) -> float:
        """Start it; the time it took to say it is ready."""
        self.n += 1
        self.log = self.c.lab.state_dir / f"restart-{self.n}.log"
        t0 = time.monotonic()
        with open(self.log, "w") as f:
            self.p = self.c.lab.popen(
                self.c.director_host,
                [sys.executable, "-m", "pylvs.director.serve_packet", "--control-socket",
                 self.c.control_socket, "--interfaces", "eth0,eth1", "--dataplane",
                 self.c.dataplane, "--state-file", str(self.state)],
                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        self.c.procs.append(self.p)
        while "director ready" not in self.text():
            assert self.p.poll() is None, self.text()
            assert time.monotonic() - t0 < 30, self.text()
            time.sleep(0.02)
        return time.monotonic() - t0

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.p is not None
        self.p.send_signal(sig)
        self.p.wait(15)


def lab_director(c: Cluster) -> subprocess.Popen[Any]:
    p = c.procs[-1]
    assert "serve_packet" in " ".join(map(str, p.args))
    return p


def entries(c: Cluster) -> list[list[str]]:
    """``-Lnc`` rows of client connections to the VIP: [proto, expire, state, source, virtual,
    destination]."""
    rows = [line.split() for line in c.adm("-Lnc").splitlines()[2:]]
    return [r for r in rows if r[4] == f"{VIP}:80"]


def test_a_keepalive_connection_survives_a_restart_of_the_director(
        cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    p = lab_director(c)
    p.send_signal(signal.SIGTERM)
    p.wait(15)
    state = tmp_path / "ipvsadm.rules"
    d = Director(c, state)
    d.start()
    c.service("rr")
    rips = set(c.rips)
    # rr: both real servers answer new connections
    assert len(set(c.curl_many(2))) == 2
    ka = c.keepalive_client()
    first = ka.get()
    assert first and ka.get() == first
    rows = entries(c)
    mine = [r for r in rows if r[2] == "ESTABLISHED"]
    assert mine, rows
    rip = {r[5].rsplit(":", 1)[0] for r in mine}
    assert len(rip) == 1 and rip <= rips

    t0 = time.monotonic()
    d.stop()
    table = Path(str(state) + ".connections")
    assert table.exists(), d.text()
    assert "saved" in d.text() and "connection entries" in d.text()
    # The request leaves while no director runs; TCP retransmits it into the new one. (In DR
    # the VIP is on the director's own interface: the packet plane's firewall rules, left in
    # place on a planned restart, keep its stack from answering the segment with a reset.)
    got: list[str] = []
    asker = threading.Thread(target=lambda: got.append(ka.get()))
    asker.start()
    time.sleep(0.3)
    ready = d.start()
    asker.join(30)
    answer = got[0] if got else "(no answer)"
    gap = time.monotonic() - t0
    print(f"\n{c.mode}/{c.dataplane}: restart gap {gap:.2f} s (new director ready in "
          f"{ready:.2f} s)")
    assert answer == first, d.text()[-3000:]
    assert not table.exists(), "read once, then deleted"
    assert "taken back" in d.text()
    after = [r for r in entries(c) if r[2] == "ESTABLISHED"]
    assert {r[5].rsplit(":", 1)[0] for r in after} == rip, after
    assert ka.get() == first
    status = c.status()
    assert status["connections_file"]["restored"] >= 1, status
    # the table itself came back from the state file, unchanged
    assert f"{VIP}:80 rr" in c.adm("-Ln")

    if (c.mode, c.dataplane) != ("dr", "packet"):
        ka.close()
        return
    # A crash writes nothing, and a connection without its entry gets no answer: what the
    # table above is for (and a table from an earlier clean stop is never used after one).
    d.stop(signal.SIGKILL)
    assert not table.exists()
    d.start()
    assert "taken back" not in d.text()
    assert entries(c) == []
    assert ka.get() == "", "a mid-stream segment with no entry is not scheduled (sloppy_tcp off)"
