"""The seed's two directors in the namespace lab, each running ``pylvs keepalived -f`` with the
same configuration but its own VRRP state and priority (DR on the packet data plane), for tests
of what happens to the pair: health checks, failover, connection sync."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pylvs.lab import VIP, Lab
from tests.lab.conftest import lab_id, need_root

PY = sys.executable


def wait(cond: Any, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class DirectorPair:
    """``conf`` is a keepalived.conf template with {state}, {priority} and {vip}."""

    def __init__(self, lab: Lab, tmp: Path, conf: str) -> None:
        self.lab = lab
        self.tmp = tmp
        self.conf = conf
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self) -> None:
        for rs in ("rs1", "rs2"):
            r = self.lab.run(rs, [PY, "-m", "pylvs.cli.main", "rs-setup", "--vip", VIP, "--mode", "dr"])
            assert r.returncode == 0, r.stderr
        for host, state, prio in (("director", "MASTER", 100), ("backup", "BACKUP", 90)):
            for key in ("net.ipv4.ip_forward=0", "net.ipv4.conf.all.send_redirects=0"):
                self.lab.run(host, ["sysctl", "-q", "-w", key], check=True)
            conf = self.tmp / f"{host}.conf"
            conf.write_text(self.conf.format(state=state, priority=prio, vip=VIP))
            log = open(self.tmp / f"{host}.log", "w")  # noqa: SIM115 - lives with the process
            self.procs.append(self.lab.popen(
                host, [PY, "-m", "pylvs.cli.main", "keepalived", "-n", "-l", "-f", str(conf),
                       "--dataplane", "packet", "--control-socket", self.sock(host)],
                stdout=log, stderr=subprocess.STDOUT,
            ))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)

    def sock(self, host: str) -> str:
        return str(self.tmp / f"{host}.sock")

    def log(self, host: str) -> str:
        return (self.tmp / f"{host}.log").read_text(errors="replace")

    def adm(self, host: str, *args: str) -> str:
        """What ``pylvsadm ARGS`` prints against ``host``'s director ("" before it is up)."""
        if not os.path.exists(self.sock(host)):
            return ""
        r = subprocess.run([PY, "-m", "pylvs.cli.ipvsadm", *args, "--control-socket", self.sock(host)],
                           capture_output=True, text=True, timeout=30)
        return r.stdout

    def table(self, host: str) -> str:
        return self.adm(host, "-Ln")

    def has_vip(self, host: str) -> bool:
        out = self.lab.run(host, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], timeout=10).stdout
        return f" {VIP}/" in out

    def curl(self, n: int) -> list[str]:
        bodies = []
        for _ in range(n):
            r = self.lab.run("client", ["curl", "-sS", "--max-time", "3", f"http://{VIP}/"], timeout=20)
            bodies.append(r.stdout.strip() if r.returncode == 0 else f"error {r.stderr.strip()}")
        return bodies


def director_pair(tmp: Path, conf: str) -> Iterator[DirectorPair]:
    """Body of a fixture: the lab up, both directors running; everything removed afterwards."""
    need_root()
    for tool in ("curl", "nft"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            pytest.skip(f"needs {tool}")
    lab = Lab(lab_id())
    try:
        lab.up()
        p = DirectorPair(lab, tmp, conf)
        try:
            p.start()
            yield p
        finally:
            p.stop()
    finally:
        lab.down()
