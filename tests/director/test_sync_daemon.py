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


def test_backup_director_learns_the_masters_connections(
    pair: tuple[list[str], Callable[..., subprocess.Popen[str]], Path],
) -> None:
    names, run, tmp = pair
    tag = names[0][2:-1]
    socks = [str(tmp / "a.sock"), str(tmp / "b.sock")]
    for ns, sock in zip(names, socks, strict=True):
        run(ns, sys.executable, "-m", "pylvs.director.main", "--control-socket", sock,
            "--dataplane", "proxy")
    assert wait_for(lambda: all(os.path.exists(s) for s in socks), 20)

    def adm(i: int, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYLVS_CONTROL_SOCKET": socks[i]}
        return subprocess.run([sys.executable, "-m", "pylvs.cli.ipvsadm", *args], env=env,
                              capture_output=True, text=True, timeout=30)

    for i in (0, 1):
        assert adm(i, "-A", "-t", "127.0.0.100:8080", "-s", "rr").returncode == 0
        assert adm(i, "-a", "-t", "127.0.0.100:8080", "-r", "127.0.0.1:8081", "-m").returncode == 0
    r = adm(0, "--start-daemon", "master", "--mcast-interface", f"sa{tag}", "--syncid", "5")
    assert r.returncode == 0, r.stderr
    r = adm(1, "--start-daemon", "backup", "--mcast-interface", f"sb{tag}", "--syncid", "5")
    assert r.returncode == 0, r.stderr
    again = adm(1, "--start-daemon", "backup", "--mcast-interface", f"sb{tag}")
    assert again.returncode != 0 and "Daemon has already run" in again.stderr
    listing = adm(0, "-L", "--daemon").stdout
    assert listing == (f"master sync daemon (mcast=sa{tag}, syncid=5, maxlen=1472, "
                       "group=224.0.0.81, port=8848, ttl=1)\n")

    run(names[0], sys.executable, "-c", SERVER)
    time.sleep(0.5)
    client = run(names[0], sys.executable, "-c", CLIENT)
    assert client.stdout is not None
    port, answer = client.stdout.readline().strip().split(" ", 1)
    assert answer == "this is nginx1"

    def backup_has_it() -> bool:
        rows = adm(1, "-Lnc").stdout
        return any(f"127.0.0.1:{port}" in line and "ESTABLISHED" in line
                   and "127.0.0.100:8080" in line and "127.0.0.1:8081" in line
                   for line in rows.splitlines())

    # a partly filled message leaves the master within about 2 s
    assert wait_for(backup_has_it, 10), adm(1, "-Lnc").stdout + adm(0, "-Lnc").stdout
    assert "ESTABLISHED" in adm(0, "-Lnc").stdout
    rs_line = adm(1, "-Ln").stdout.splitlines()[-1].split()
    assert rs_line[1] == "127.0.0.1:8081" and rs_line[-2:] == ["1", "0"]  # ActiveConn, InActConn

    assert adm(1, "--stop-daemon", "backup").returncode == 0
    gone = adm(1, "--stop-daemon", "backup")
    assert gone.returncode != 0 and "No daemon is running" in gone.stderr
