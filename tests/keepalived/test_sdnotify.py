"""``pylvs keepalived`` speaks systemd's notify protocol: a real daemon in the namespace lab, a
real AF_UNIX datagram listener as ``$NOTIFY_SOCKET``; READY=1 comes once VRRP runs and the
virtual servers are served, RELOADING=1/READY=1 around a SIGHUP, STOPPING=1 on SIGTERM, and
WATCHDOG=1 pings when ``$WATCHDOG_USEC`` is set."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.keepalived.conftest import VIP, Lab, instance_conf


def _receive(sock: socket.socket, timeout: float, log: Path) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no message from pylvs keepalived: {log.read_text(errors='replace')[-2000:]}"
        sock.settimeout(left)
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            continue
        if msg != "WATCHDOG=1":
            return msg


def test_ready_reloading_stopping_in_order(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(lab.tmp / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "500000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        vs = f"""virtual_server {VIP} 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server {lab.addr("c")} 8080 {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
"""
        ctl = str(lab.tmp / "ctl.sock")
        started = time.monotonic()
        a = lab.pylvs("a", instance_conf(state="MASTER", prio=150, version=3, advert=0.2) + vs,
                      "--control-socket", ctl)
        assert _receive(listener, 30, a.log) == "READY=1"
        took = time.monotonic() - started
        # READY means up: the log says so, VRRP runs and the virtual server is served
        assert "Startup complete" in a.logtext()
        listed = subprocess.run([sys.executable, "-m", "pylvs.cli.ipvsadm", "--control-socket", ctl,
                                 "-Ln"], capture_output=True, text=True, timeout=30)
        assert f"TCP  {VIP}:80 rr" in listed.stdout, listed
        assert took < 30

        listener.setblocking(False)  # what queued up meanwhile is pings only; then count afresh
        with contextlib.suppress(BlockingIOError):
            while True:
                assert listener.recv(4096) == b"WATCHDOG=1"
        pings = 0
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            listener.settimeout(max(0.01, end - time.monotonic()))
            try:
                pings += listener.recv(4096) == b"WATCHDOG=1"
            except TimeoutError:
                break
        assert 2 <= pings <= 8, pings

        a.popen.send_signal(signal.SIGHUP)
        reloading = _receive(listener, 20, a.log)
        assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC="), reloading
        assert _receive(listener, 30, a.log) == "READY=1"
        assert "Reload complete" in a.logtext()  # READY comes after the reload, not before

        a.popen.send_signal(signal.SIGTERM)
        assert _receive(listener, 10, a.log) == "STOPPING=1"
        assert a.popen.wait(20) == 0
        assert not lab.has_vip("a")
    finally:
        listener.close()
