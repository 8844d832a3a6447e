"""Connection sync between two real pylvsd processes in two network namespaces: ``pylvsadm
--start-daemon master`` on one, ``backup`` on the other, multicast over the link between them,
and the backup's ``pylvsadm -Lnc`` showing the master's live connection."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pylvs.control.client import ControlClient
from pylvs.core import sync

pytestmark = [pytest.mark.root]

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8081)); s.listen(16)
while True:
    c, _ = s.accept(); c.recv(100); c.sendall(b"this is nginx1\\n")
"""
CLIENT = """
import socket, time
c = socket.create_connection(("127.0.0.100", 8080), timeout=10)
c.sendall(b"hi"); print(c.getsockname()[1], c.recv(100).decode().strip(), flush=True)
time.sleep(60)
"""


def sh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return check()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[list[str], Callable[..., subprocess.Popen[str]], Path]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for network namespaces")
    tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
    names = [f"sy{tag}a", f"sy{tag}b"]
    procs: list[subprocess.Popen[str]] = []
    try:
        for n in names:
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "link", "add", f"sa{tag}", "netns", names[0], "type", "veth", "peer", "name",
           f"sb{tag}", "netns", names[1])
        for i, (n, dev) in enumerate(zip(names, (f"sa{tag}", f"sb{tag}"), strict=True)):
            sh("ip", "-n", n, "addr", "add", f"10.251.{int(tag) % 250}.{i + 1}/24", "dev", dev)
            sh("ip", "-n", n, "link", "set", dev, "up")

        def run(ns: str, *argv: str) -> subprocess.Popen[str]:
            p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            procs.append(p)
            return p

        yield names, run, tmp_path
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for n in names:
            subprocess.run(["ip", "netns", "del", n], check=False, capture_output=True)


def adm(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    """pylvsadm against the director on ``sock``."""
    env = {**os.environ, "PYLVS_CONTROL_SOCKET": sock}
    return subprocess.run([sys.executable, "-m", "pylvs.cli.ipvsadm", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def two_directors(pair: tuple[list[str], Callable[..., subprocess.Popen[str]], Path],
                  *options: str) -> list[str]:
    """pylvsd (proxy plane, with ``options``) in each namespace, each with the service
    127.0.0.100:8080 -> 127.0.0.1:8081; their control sockets."""
    names, run, tmp = pair
    socks = [str(tmp / "a.sock"), str(tmp / "b.sock")]
    for ns, sock in zip(names, socks, strict=True):
        run(ns, sys.executable, "-m", "pylvs.director.main", "--control-socket", sock,
            "--dataplane", "proxy", *options)
    assert wait_for(lambda: all(os.path.exists(s) for s in socks), 20)
    for sock in socks:
        assert adm(sock, "-A", "-t", "127.0.0.100:8080", "-s", "rr").returncode == 0
        assert adm(sock, "-a", "-t", "127.0.0.100:8080", "-r", "127.0.0.1:8081",
                   "-m").returncode == 0
    return socks


def serve_and_connect(pair: tuple[list[str], Callable[..., subprocess.Popen[str]], Path],
                      client: str) -> str:
    """The real server and a ``client`` through the VIP, in the master's namespace; the
    client's port once it has its answer."""
    names, run, _tmp = pair
    run(names[0], sys.executable, "-c", SERVER)
    time.sleep(0.5)
    p = run(names[0], sys.executable, "-c", client)
    assert p.stdout is not None
    port, answer = p.stdout.readline().strip().split(" ", 1)
    assert answer == "this is nginx1"
    return port


def test_backup_director_learns_the_masters_connections(
    pair: tuple[list[str], Callable[..., subprocess.Popen[str]], Path],
) -> None:
    tag = pair[0][0][2:-1]
    a, b = two_directors(pair)
    r = adm(a, "--start-daemon", "master", "--mcast-interface", f"sa{tag}", "--syncid", "5")
    assert r.returncode == 0, r.stderr
    r = adm(b, "--start-daemon", "backup", "--mcast-interface", f"sb{tag}", "--syncid", "5")
    assert r.returncode == 0, r.stderr
    again = adm(b, "--start-daemon", "backup", "--mcast-interface", f"sb{tag}")
    assert again.returncode != 0 and "Daemon has already run" in again.stderr
    listing = adm(a, "-L", "--daemon").stdout
    assert listing == (f"master sync daemon (mcast=sa{tag}, syncid=5, maxlen=1472, "
                       "group=224.0.0.81, port=8848, ttl=1)\n")

    port = serve_and_connect(pair, CLIENT)

    def backup_has_it() -> bool:
        rows = adm(b, "-Lnc").stdout
        return any(f"127.0.0.1:{port}" in line and "ESTABLISHED" in line
                   and "127.0.0.100:8080" in line and "127.0.0.1:8081" in line
                   for line in rows.splitlines())

    # a partly filled message leaves the master within about 2 s
    assert wait_for(backup_has_it, 10), adm(b, "-Lnc").stdout + adm(a, "-Lnc").stdout
    assert "ESTABLISHED" in adm(a, "-Lnc").stdout
    rs_line = adm(b, "-Ln").stdout.splitlines()[-1].split()
    assert rs_line[1] == "127.0.0.1:8081" and rs_line[-2:] == ["1", "0"]  # ActiveConn, InActConn

    assert adm(b, "--stop-daemon", "backup").returncode == 0
    gone = adm(b, "--stop-daemon", "backup")
    assert gone.returncode != 0 and "No daemon is running" in gone.stderr


TICKING_CLIENT = """
import socket, time
c = socket.create_connection(("127.0.0.100", 8080), timeout=10)
c.sendall(b"hi"); print(c.getsockname()[1], c.recv(100).decode().strip(), flush=True)
for _ in range(600):  # a long-lived connection that changes no state: a byte every 0.1 s
    c.sendall(b"."); time.sleep(0.1)
"""


def test_a_backup_started_later_learns_an_established_connection_from_the_resends(
    pair: tuple[list[str], Callable[..., subprocess.Popen[str]], Path],
) -> None:
    """The kernel's sync_threshold ("threshold period"): an established entry is sent again
    each time its incoming packets reach threshold + k * period, so a backup (or a director
    joining a scale-out cluster) started after the connection was set up still learns it. Both
    take ``--sysctl sync_threshold="3 5"`` and ``sync_ports=2`` (two sockets each side, ports
    8848 and 8849) at start; ``pylvs sysctl`` reads and refuses settings."""
    tag = pair[0][0][2:-1]
    a, b = two_directors(pair, "--sysctl", "net.ipv4.vs.sync_threshold=3 5", "--sysctl",
                         "sync_ports=2")

    def sysctl(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pylvs.cli.main", "sysctl",
                               "--control-socket", a, *words],
                              capture_output=True, text=True, timeout=30)

    r = sysctl("net.ipv4.vs.sync_threshold", "sync_refresh_period")
    assert r.stdout == ("net.ipv4.vs.sync_threshold = 3\t5\n"
                        "net.ipv4.vs.sync_refresh_period = 0\n"), r.stderr
    bad = sysctl("-w", "net.ipv4.vs.sync_threshold=5")
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert "needs 0 <= threshold < period" in bad.stderr
    assert sysctl("sync_threshold").stdout == "net.ipv4.vs.sync_threshold = 3\t5\n"

    r = adm(a, "--start-daemon", "master", "--mcast-interface", f"sa{tag}", "--syncid", "6")
    assert r.returncode == 0, r.stderr
    port = serve_and_connect(pair, TICKING_CLIENT)

    def listed(sock: str) -> bool:
        return any(f"127.0.0.1:{port}" in line and "ESTABLISHED" in line
                   for line in adm(sock, "-Lnc").stdout.splitlines())

    assert listed(a)
    # the first send (the change into ESTABLISHED) left the master before the backup listens
    time.sleep(sync.FLUSH_AFTER + 1)
    r = adm(b, "--start-daemon", "backup", "--mcast-interface", f"sb{tag}", "--syncid", "6")
    assert r.returncode == 0, r.stderr
    assert not listed(b)
    udp = sh("ip", "netns", "exec", pair[0][1], "ss", "-Hluna").stdout
    assert f"224.0.0.81%sb{tag}:8848 " in udp and f"224.0.0.81%sb{tag}:8849 " in udp, udp
    assert wait_for(lambda: listed(b), 15), adm(b, "-Lnc").stdout
    with ControlClient(a) as c:
        master = c.status()["sync"]["master"]
    assert master["entries_resent"] >= 2 and master["entries_sent"] >= 3, master
    with ControlClient(b) as c:
        assert c.status()["sync"]["backup"]["entries_created"] == 1
