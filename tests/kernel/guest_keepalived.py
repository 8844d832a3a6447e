"""Inside the VM: ``pylvs keepalived -f`` on a kernel with IPVS, checked with the real ipvsadm.

The virtual server and its real servers are local addresses on a dummy interface; the kernel
forwards connections to them (local delivery), which is enough to have real IPVS connections
bound to each real server. The checkers (TCP_CHECK on port 8081 of each real server) decide
which real servers the kernel's table holds; a SIGHUP that changes one real server's weight
must leave the other real servers and their live connections alone. Prints JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

CONF = """
global_defs {{
    lvs_timeouts tcp 1000 udp 200
}}
virtual_server 10.99.9.1 80 {{
    delay_loop 0.5
    lb_algo rr
    lb_kind NAT
    protocol TCP
    warmup 0
    real_server 10.99.9.11 80 {{
        weight {w1}
        TCP_CHECK {{
            connect_port 8081
            connect_timeout 1
            retry 0
        }}
    }}
    real_server 10.99.9.12 80 {{
        weight 1
        TCP_CHECK {{
            connect_port 8081
            connect_timeout 1
            retry 0
        }}
    }}
}}
"""


VIP_HEX = socket.inet_aton("10.99.9.1").hex().upper()


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def listener(addr: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    return s


# pylvs keepalived once started: a wait ends early when it has exited
KEEPALIVED: list[subprocess.Popen[bytes]] = []


def wait(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Until ``cond`` (False after ``timeout``, or as soon as keepalived is gone). The waits
    together stay well inside the host's 400 s for the guest, so a failure comes back as
    this script's JSON with keepalived's log, not as a guest killed with nothing said."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if KEEPALIVED and KEEPALIVED[0].poll() is not None:
            return False
        time.sleep(0.2)
    return False


def dests() -> dict[str, int]:
    """Real servers of the service with their weights, from the real ipvsadm."""
    out = {}
    for line in sh("ipvsadm -Ln -t 10.99.9.1:80 2>/dev/null || true").splitlines():
        parts = line.split()
        if parts[:1] == ["->"] and parts[1][0].isdigit():
            out[parts[1]] = int(parts[3])
    return out


def conn_dests() -> list[str]:
    """The real server of every ESTABLISHED kernel connection to the VIP."""
    rows = []
    for line in Path("/proc/net/ip_vs_conn").read_text().splitlines()[1:]:
        f = line.split()
        # Pro FromIP FPrt ToIP TPrt DestIP DPrt State ...; addresses in hex
        if f[7] == "ESTABLISHED" and f[3] == VIP_HEX:
            rows.append(socket.inet_ntoa(bytes.fromhex(f[5])))
    return sorted(rows)


def main() -> None:
    out: dict[str, object] = {}
    sh("ip link add pylvska0 type dummy && ip link set pylvska0 up")
    for a in ("10.99.9.1", "10.99.9.11", "10.99.9.12"):
        sh(f"ip addr add {a}/32 dev pylvska0")
    service = listener("0.0.0.0", 80)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                c, _ = service.accept()
            except OSError:
                return
            held.append(c)

    threading.Thread(target=accept, daemon=True).start()
    check1 = listener("10.99.9.11", 8081)
    tmp = Path(tempfile.mkdtemp())
    conf = tmp / "keepalived.conf"
    conf.write_text(CONF.format(w1=1))
    log = open(tmp / "keepalived.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylvs.cli.main", "keepalived", "-n", "-l", "-f", str(conf),
         "--dataplane", "kernel", "--control-socket", str(tmp / "ctl.sock")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    KEEPALIVED.append(proc)
    try:
        out["only_healthy_server"] = wait(lambda: dests() == {"10.99.9.11:80": 1})
        out["table_initial"] = dests()
        out["timeouts"] = sh("ipvsadm -L --timeout").strip()
        check2 = listener("10.99.9.12", 8081)
        out["second_comes_up"] = wait(lambda: dests() == {"10.99.9.11:80": 1, "10.99.9.12:80": 1})
        clients = [socket.create_connection(("10.99.9.1", 80), timeout=10) for _ in range(4)]
        wait(lambda: len(held) >= 4, 20)
        time.sleep(0.5)
        out["conns_before"] = conn_dests()
        conf.write_text(CONF.format(w1=5))
        os.kill(proc.pid, signal.SIGHUP)
        out["reloaded"] = wait(lambda: dests().get("10.99.9.11:80") == 5)
        out["table_after_reload"] = dests()
        out["conns_after"] = conn_dests()
        # the clients' connections still carry data (within 10 s: a connection the reload
        # broke is a failure with the log, not a guest that waits for ever)
        for c in clients:
            c.sendall(b"x")
        for h in held[:4]:
            h.settimeout(10)

        def carried(h: socket.socket) -> bool:
            try:
                return h.recv(1) == b"x"
            except OSError:
                return False

        out["clients_alive"] = all([carried(h) for h in held[:4]])
        check2.close()
        out["failed_server_removed"] = wait(lambda: dests() == {"10.99.9.11:80": 5})
        for c in clients:
            c.close()
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
            out["stop"] = f"exit {proc.returncode} after {time.monotonic() - stopping:.1f} s"
        except subprocess.TimeoutExpired:
            proc.kill()
            out["stop"] = "still running 30 s after SIGTERM: killed"
        out["table_after_stop"] = sh("ipvsadm -Ln")
        log.close()
        out["log_tail"] = (tmp / "keepalived.log").read_text()[-2000:]
        check1.close()
        service.close()
        sh("ipvsadm -C; ip link del pylvska0")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
