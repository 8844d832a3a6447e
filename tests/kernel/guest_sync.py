"""Inside the VM: pylvs's connection sync against the kernel's own IPVS sync daemons, both ways.

Two network namespaces joined by a veth pair: "m" runs pylvsd (proxy data plane), "k" uses the
kernel's IPVS with the real ipvsadm. Both have the same service 10.97.9.1:80 -> 10.97.9.11:80.
1. pylvs master -> kernel backup: a client connection through pylvsd in "m"; the kernel's
   ``ipvsadm -Lnc`` in "k" must list it.
2. kernel master -> pylvs backup: a client connection through kernel IPVS in "k" (local
   delivery to a real server on a local address); pylvsd's table in "m" must list it.
Prints JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pylvs.control.client import ControlClient
from pylvs.core.api import SyncDaemonStatus
from pylvs.core.model import DestSpec, ForwardingMethod, ServiceKey, ServiceSpec, parse_address

VIP, RIP = "10.97.9.1", "10.97.9.11"


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def wait(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


SERVER = f"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{RIP}", 80)); s.listen(16)
held = []
while True:
    c, _ = s.accept(); held.append(c)
    def echo(c=c):
        while True:
            d = c.recv(100)
            if not d:
                return
            c.sendall(d)
    threading.Thread(target=echo, daemon=True).start()
"""

CLIENT = f"""
import socket, sys, time
c = socket.create_connection(("{VIP}", 80), timeout=20)
for _ in range(3):
    c.sendall(b"ping"); c.recv(100)
print(c.getsockname()[1], flush=True)
time.sleep(120)
"""


def main() -> None:
    out: dict[str, object] = {}
    tmp = Path(tempfile.mkdtemp())
    procs: list[subprocess.Popen[str]] = []

    def run(ns: str, *argv: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        procs.append(p)
        return p

    try:
        for ns in ("m", "k"):
            sh(f"ip netns add {ns} && ip -n {ns} link set lo up")
            sh(f"ip -n {ns} addr add {VIP}/32 dev lo && ip -n {ns} addr add {RIP}/32 dev lo")
        sh("ip link add mv netns m type veth peer name kv netns k")
        sh("ip -n m addr add 10.97.0.1/24 dev mv && ip -n m link set mv up")
        sh("ip -n k addr add 10.97.0.2/24 dev kv && ip -n k link set kv up")
        for ns in ("m", "k"):
            run(ns, sys.executable, "-c", SERVER)

        # the kernel side: the service, a backup daemon (syncid 3) and a master (syncid 4)
        sh(f"ip netns exec k ipvsadm -A -t {VIP}:80 -s rr")
        sh(f"ip netns exec k ipvsadm -a -t {VIP}:80 -r {RIP}:80 -m")
        sh("ip netns exec k ipvsadm --start-daemon backup --mcast-interface kv --syncid 3")
        sh("ip netns exec k ipvsadm --start-daemon master --mcast-interface kv --syncid 4")
        out["kernel_daemons"] = sh("ip netns exec k ipvsadm -L --daemon")

        # the pylvs side: the same service, a master (syncid 3) and a backup (syncid 4)
        sock = str(tmp / "m.sock")
        pylvsd = run("m", sys.executable, "-m", "pylvs.director.main", "--control-socket", sock,
                     "--dataplane", "proxy")
        if not wait(lambda: Path(sock).exists(), 120):
            pylvsd.terminate()
            raise RuntimeError(f"pylvsd did not start: {pylvsd.communicate(timeout=10)[0][-2000:]}")
        ctl = ControlClient(sock)
        key = ServiceKey.inet(6, VIP, 80)
        ctl.add_service(ServiceSpec(key, "rr"))
        ctl.add_dest(key, DestSpec(parse_address(RIP), 80, ForwardingMethod.MASQ, 1))
        ctl.start_daemon(SyncDaemonStatus("master", "mv", 3))
        ctl.start_daemon(SyncDaemonStatus("backup", "mv", 4))
        out["pylvs_daemons"] = [d.state for d in ctl.get_daemons()]

        # 1. a connection through pylvs reaches the kernel's table
        c1 = run("m", sys.executable, "-c", CLIENT)
        assert c1.stdout is not None
        port1 = c1.stdout.readline().strip()
        out["pylvs_client_port"] = port1

        def kernel_has() -> bool:
            rows = sh("ip netns exec k ipvsadm -Lnc")
            return any(f":{port1} " in r and "ESTABLISHED" in r and f"{RIP}:80" in r
                       for r in rows.splitlines())

        out["kernel_learned_pylvs_conn"] = wait(kernel_has, 30)
        out["kernel_conns"] = sh("ip netns exec k ipvsadm -Lnc")

        # 2. a connection through the kernel reaches pylvs's table
        c2 = run("k", sys.executable, "-c", CLIENT)
        assert c2.stdout is not None
        port2 = c2.stdout.readline().strip()
        out["kernel_client_port"] = port2

        def pylvs_has() -> bool:
            return any(int(port2) == e.cport and e.state == "ESTABLISHED"
                       and str(e.daddr) == RIP for e in ctl.get_connections())

        out["pylvs_learned_kernel_conn"] = wait(pylvs_has, 30)
        out["pylvs_conns"] = [f"{e.state} {e.caddr}:{e.cport} -> {e.daddr}:{e.dport}"
                              for e in ctl.get_connections()]
        out["pylvs_status_sync"] = ctl.status().get("sync")
        ctl.close()
        pylvsd.terminate()

        # 3. pylvsd on the kernel data plane: --start-daemon starts the kernel's own daemon
        sh("ip netns add d && ip -n d link set lo up && ip -n d link add dd0 type dummy "
           "&& ip -n d link set dd0 up")
        dsock = str(tmp / "d.sock")
        run("d", sys.executable, "-m", "pylvs.director.main", "--control-socket", dsock,
            "--dataplane", "kernel")
        if not wait(lambda: Path(dsock).exists(), 120):
            raise RuntimeError("pylvsd (kernel) did not start")
        dctl = ControlClient(dsock)
        dctl.start_daemon(SyncDaemonStatus("master", "dd0", 7))
        out["kernel_plane_daemons"] = sh("ip netns exec d ipvsadm -L --daemon")
        out["kernel_plane_listed"] = [d.state for d in dctl.get_daemons()]
        dctl.stop_daemon("master")
        out["kernel_plane_after_stop"] = sh("ip netns exec d ipvsadm -L --daemon")
        dctl.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        subprocess.run("ip netns del m; ip netns del k; ip netns del d", shell=True, check=False)
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
