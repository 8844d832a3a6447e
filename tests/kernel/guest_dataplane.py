"""Runs inside the test VM (tests/kernel/test_dataplane_vm.py): the kernel data plane mirroring
a Director's table into kernel IPVS, adopting what the kernel had, applying changes one request
at a time, and reporting what the kernel refused. Prints one JSON object of findings."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from typing import Any

from pylvs.core.api import IPVSError
from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec, Timeouts
from pylvs.core.model import parse_address as A
from pylvs.dataplane.kernel import KernelDataPlane
from pylvs.netlink.ipvs import KernelIPVS


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout


def canon(k: KernelIPVS) -> list[Any]:
    rows = []
    for s in k.get_services():
        rows.append([str(s.spec.key), s.spec.scheduler, s.spec.timeout,
                     sorted([str(d.spec.addr), d.spec.port, int(d.spec.fwd), d.spec.weight]
                            for d in s.dests)])
    return sorted(rows)


def canon_table(d: Director) -> list[Any]:
    rows = []
    for s in d.table.services():
        rows.append([str(s.key), s.scheduler_name, s.timeout,
                     sorted([str(r.addr), r.port, int(r.fwd), r.weight] for r in s.destinations)])
    return sorted(rows)


def main() -> None:
    out: dict[str, Any] = {}
    k = KernelIPVS()
    # What an operator (or a previous daemon) left in the kernel.
    sh("ipvsadm -A -t 10.99.0.1:80 -s rr && ipvsadm -a -t 10.99.0.1:80 -r 10.99.0.1:80 -w 1"
       " && ipvsadm -a -t 10.99.0.1:80 -r 192.168.50.2:80 -m -w 1"
       " && ipvsadm -a -t 10.99.0.1:80 -r 192.168.50.3:80 -m -w 1 && ipvsadm --set 700 100 200")
    out["before"] = sh("ipvsadm -Sn")

    # settings: one the host set itself (taken by the plane), one pylvsd was given (written)
    sh("sysctl -qw net.ipv4.vs.am_droprate=20")
    director = Director()
    t = director.table
    t.set_sysctl({"drop_entry": 3})  # as pylvsd --sysctl drop_entry=3 does before the start
    web = ServiceKey.inet(Protocol.TCP, "10.99.0.1", 80)
    dns = ServiceKey.inet(Protocol.UDP, "10.99.0.1", 53)
    t.add_service(ServiceSpec(web, "rr"))
    t.add_dest(web, DestSpec(A("192.168.50.2"), 80, ForwardingMethod.MASQ, 5))  # edited
    t.add_dest(web, DestSpec(A("192.168.50.4"), 80, ForwardingMethod.MASQ, 1))  # new
    t.add_service(ServiceSpec(dns, "wlc"))
    t.add_dest(dns, DestSpec(A("192.168.50.2"), 53, ForwardingMethod.MASQ, 1))

    plane = KernelDataPlane(director, sync_interval=0)
    plane.start_sync()
    out["adopted"] = plane.adopted
    out["start_requests"] = plane.requests_sent
    out["timeouts_adopted"] = [t.timeouts.tcp, t.timeouts.tcp_fin, t.timeouts.udp]
    out["kernel_after_start"] = canon(k)
    out["table_after_start"] = canon_table(director)
    names = ("am_droprate", "drop_entry", "drop_packet", "sloppy_tcp", "secure_tcp")

    def kernel_sysctls() -> dict[str, int]:
        return {n: int(open(f"/proc/sys/net/ipv4/vs/{n}").read()) for n in names}

    out["sysctl_kernel_after_start"] = kernel_sysctls()
    out["sysctl_table_after_start"] = {n: t.get_sysctl()[n] for n in names}
    t.set_sysctl({"sloppy_tcp": 1, "drop_packet": 3})  # pylvs sysctl -w, through the daemon
    out["sysctl_kernel_after_set"] = kernel_sysctls()

    # One change, one request; nothing else touched.
    n0 = plane.requests_sent
    t.edit_dest(web, DestSpec(A("192.168.50.3"), 80, ForwardingMethod.MASQ, 7))
    out["edit_requests"] = plane.requests_sent - n0
    n0 = plane.requests_sent
    t.del_dest(web, A("192.168.50.4"), 80)
    t.add_dest(web, DestSpec(A("192.168.50.5"), 80, ForwardingMethod.MASQ, 2))
    t.edit_service(ServiceSpec(web, "wlc"))
    t.del_service(dns)
    out["more_requests"] = plane.requests_sent - n0
    out["kernel_after_changes"] = canon(k)
    out["table_after_changes"] = canon_table(director)
    t.set_timeouts(Timeouts(901, 0, 0))  # pylvsadm --set 901 0 0 through the daemon
    plane.sync_counters()
    kt = k.get_timeouts()
    out["kernel_timeouts"] = [kt.tcp, kt.tcp_fin, kt.udp]

    # A service the kernel cannot run (no such scheduler module in this kernel).
    odd = ServiceKey.inet(Protocol.TCP, "10.99.0.2", 80)
    try:
        t.add_service(ServiceSpec(odd, "twos"))
        out["twos_in_table"] = True
    except IPVSError as e:
        out["twos_in_table"] = f"table refused: {e}"
    out["refused"] = plane.refused
    out["out_of_sync"] = plane.out_of_sync
    out["describe"] = plane.describe()

    # Real traffic through the kernel (a local client to a local real server) and the
    # counters and connections read back through the table.
    sh("ip link add pylvsd0 type dummy && ip addr add 10.99.0.1/32 dev pylvsd0 "
       "&& ip link set pylvsd0 up")
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("10.99.0.1", 80))
    srv.listen(16)

    def serve() -> None:
        for _ in range(3):
            c, _a = srv.accept()
            c.sendall(b"hi")
            c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    # Make the local server the only one weighted, so every connection lands there.
    for d in list(t.lookup(web).destinations):  # type: ignore[union-attr]
        if str(d.addr) != "10.99.0.1":
            t.edit_dest(web, DestSpec(d.addr, d.port, d.fwd, 0))
    got = []
    for _ in range(3):
        c = socket.create_connection(("10.99.0.1", 80), timeout=10)
        got.append(c.recv(10).decode())
        c.close()
    th.join(10)
    out["traffic"] = got
    out["ipvsadm_stats"] = sh("ipvsadm -Ln --stats -t 10.99.0.1:80")
    import time
    time.sleep(2.2)  # the kernel folds per-CPU counters on its 2 s estimator tick
    plane.sync_counters()
    svc = t.lookup(web)
    assert svc is not None
    out["table_conns"] = svc.stats.conns
    out["table_dest_conns"] = {f"{d.addr}:{d.port}": d.stats.conns for d in svc.destinations}
    out["connections"] = [[c.state, str(c.daddr)] for c in t.get_connections()]
    svc.stats.zero()  # what pylvsadm -Z through the daemon does to the table
    plane.sync_counters()
    out["kernel_conns_after_zero"] = k.get_service(web).stats.conns

    plane.stop_sync()
    out["kernel_after_stop"] = len(k.get_services())
    k.flush()
    sh("ip link del pylvsd0")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
