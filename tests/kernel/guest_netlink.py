"""Runs inside the test VM (tests/kernel/test_netlink_vm.py): exercises KernelIPVS against the
kernel and the real ipvsadm on the same table, and prints one JSON object of findings."""

from __future__ import annotations

import errno
import io
import json
import subprocess
import sys
import time
from typing import Any

from pylvs.cli import ipvsadm as pylvsadm_cli
from pylvs.core.api import IPVSError
from pylvs.core.model import (
    DestSpec,
    ForwardingMethod,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    TunnelFlags,
    TunnelType,
    parse_address,
)
from pylvs.netlink.ipvs import KernelIPVS, req_add_dest, req_add_service, requests_for

A = parse_address
T80 = ServiceKey.inet(Protocol.TCP, "10.0.0.100", 80)
U53 = ServiceKey.inet(Protocol.UDP, "10.0.0.100", 53)
S0 = ServiceKey.inet(Protocol.SCTP, "10.0.0.101", 0)
V6 = ServiceKey.inet(Protocol.TCP, "2001:db8::100", 443)
FW = ServiceKey.mark(7)
FW6 = ServiceKey.mark(8, af=10)

# The same table twice: as ipvsadm command lines and as specs.
IPVSADM_LINES = [
    "-A -t 10.0.0.100:80 -s rr",
    "-a -t 10.0.0.100:80 -r 192.168.168.11:80 -m -w 3",
    "-a -t 10.0.0.100:80 -r 192.168.168.12:80 -g -w 0 -x 100 -y 10",
    "-a -t 10.0.0.100:80 -r 192.168.168.13:80 -i -w 2 --tun-type gue --tun-port 6080 --tun-csum",
    "-a -t 10.0.0.100:80 -r 192.168.168.14:80 -i -w 1 --tun-type gre --tun-csum",
    "-A -u 10.0.0.100:53 -s sh -b sh-fallback,sh-port -p 120 -M 255.255.255.0",
    "-a -u 10.0.0.100:53 -r 192.168.168.11:53 -m -w 1",
    "-A --sctp-service 10.0.0.101:0 -s mh -b mh-port -p 60",
    "-a --sctp-service 10.0.0.101:0 -r 192.168.168.21:0 -g -w 5",
    "-A -t [2001:db8::100]:443 -s wlc -p 300 -M 64",
    "-a -t [2001:db8::100]:443 -r [2001:db8::11]:443 -m -w 1",
    "-a -t [2001:db8::100]:443 -r 192.168.168.31:443 -i -w 1",
    "-A -f 7 -s lblcr -p 600 --pe sip",
    "-a -f 7 -r 192.168.168.41:0 -g -w 1",
    "-A -f 8 -6 -s sed -o",
    "-a -f 8 -6 -r [2001:db8::41]:0 -g -w 7",
]
SPECS: list[tuple[ServiceSpec, list[DestSpec]]] = [
    (ServiceSpec(T80, "rr"), [
        DestSpec(A("192.168.168.11"), 80, ForwardingMethod.MASQ, 3),
        DestSpec(A("192.168.168.12"), 80, ForwardingMethod.DROUTE, 0, 100, 10),
        DestSpec(A("192.168.168.13"), 80, ForwardingMethod.TUNNEL, 2,
                 tun_type=TunnelType.GUE, tun_port=6080, tun_flags=TunnelFlags.CSUM),
        DestSpec(A("192.168.168.14"), 80, ForwardingMethod.TUNNEL, 1,
                 tun_type=TunnelType.GRE, tun_flags=TunnelFlags.CSUM),
    ]),
    (ServiceSpec(U53, "sh", ServiceFlags.SCHED1 | ServiceFlags.SCHED2 | ServiceFlags.PERSISTENT,
                 120, 0xFFFFFF00), [
        DestSpec(A("192.168.168.11"), 53, ForwardingMethod.MASQ, 1),
    ]),
    (ServiceSpec(S0, "mh", ServiceFlags.SCHED2 | ServiceFlags.PERSISTENT, 60), [
        DestSpec(A("192.168.168.21"), 0, ForwardingMethod.DROUTE, 5),
    ]),
    (ServiceSpec(V6, "wlc", ServiceFlags.PERSISTENT, 300, 64), [
        DestSpec(A("2001:db8::11"), 443, ForwardingMethod.MASQ, 1),
        DestSpec(A("192.168.168.31"), 443, ForwardingMethod.TUNNEL, 1),
    ]),
    (ServiceSpec(FW, "lblcr", ServiceFlags.PERSISTENT, 600, 0xFFFFFFFF, "sip"), [
        DestSpec(A("192.168.168.41"), 0, ForwardingMethod.DROUTE, 1),
    ]),
    (ServiceSpec(FW6, "sed", ServiceFlags.ONEPACKET, 0, 128), [
        DestSpec(A("2001:db8::41"), 0, ForwardingMethod.DROUTE, 7),
    ]),
]


def ipvsadm(*args: str) -> dict[str, Any]:
    p = subprocess.run(["ipvsadm", *args], capture_output=True, text=True)
    return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}


def pylvsadm(*args: str) -> dict[str, Any]:
    o, e = io.StringIO(), io.StringIO()
    rc = pylvsadm_cli.main(list(args), stdout=o, stderr=e)
    return {"rc": rc, "stdout": o.getvalue(), "stderr": e.getvalue()}


def norm(spec: ServiceSpec) -> ServiceSpec:
    """A spec as the kernel lists it: HASHED set; the netmask of a non-persistent IPv6 service
    is whatever ipvsadm sent (ipvsadm sends 128)."""
    return ServiceSpec(spec.key, spec.scheduler, spec.flags | ServiceFlags.HASHED, spec.timeout,
                       spec.netmask, spec.pe_name)


def canon(spec: ServiceSpec | DestSpec) -> str:
    return json.dumps(spec.to_wire(), sort_keys=True)


def table_of(k: KernelIPVS) -> list[Any]:
    rows = []
    for s in k.get_services():
        rows.append([canon(s.spec), sorted(canon(d.spec) for d in s.dests)])
    return sorted(rows)


def main() -> None:
    out: dict[str, Any] = {}
    k = KernelIPVS()
    out["info"] = repr(k.get_info())

    # 1. KernelIPVS builds the table; ipvsadm reads it.
    k.flush()
    for spec, dests in SPECS:
        k.add_service(spec)
        for d in dests:
            k.add_dest(spec.key, d)
    out["ours_save"] = ipvsadm("-Sn")
    out["ours_list"] = ipvsadm("-Ln")
    out["ours_thresholds"] = ipvsadm("-Ln", "--thresholds")
    out["ours_table"] = table_of(k)
    out["ours_info_services"] = k.get_info().num_services

    # 2. ipvsadm builds the same table; KernelIPVS reads it.
    k.flush()
    for line in IPVSADM_LINES:
        r = ipvsadm(*line.split())
        if r["rc"]:
            out.setdefault("ipvsadm_failures", []).append([line, r])
    out["theirs_save"] = ipvsadm("-Sn")
    out["theirs_list"] = ipvsadm("-Ln")
    out["theirs_thresholds"] = ipvsadm("-Ln", "--thresholds")
    out["theirs_table"] = table_of(k)
    expected = sorted(
        [canon(norm(s)), sorted(canon(d) for d in ds)] for s, ds in SPECS
    )
    out["expected_table"] = expected

    # 3. Edits, both ways.
    k.edit_service(ServiceSpec(T80, "wrr", ServiceFlags.PERSISTENT, 30, 0xFFFF0000))
    k.edit_dest(T80, DestSpec(A("192.168.168.11"), 80, ForwardingMethod.DROUTE, 9, 50, 5))
    out["after_edit"] = ipvsadm("-Ln", "-t", "10.0.0.100:80")
    out["after_edit_thresholds"] = ipvsadm("-Ln", "-t", "10.0.0.100:80", "--thresholds")
    ipvsadm("-E", "-t", "10.0.0.100:80", "-s", "lc")
    ipvsadm("-e", "-t", "10.0.0.100:80", "-r", "192.168.168.12:80", "-m", "-w", "4")
    st = k.get_service(T80)
    out["read_edit"] = [st.spec.scheduler, st.spec.timeout,
                        sorted((str(d.spec.addr), int(d.spec.fwd), d.spec.weight)
                               for d in st.dests)]

    # 4. Errors: the kernel's errno for each refusal.
    def err(f: Any) -> int:
        try:
            f()
        except IPVSError as e:
            return e.errno
        return 0

    nope = ServiceKey.inet(Protocol.TCP, "10.9.9.9", 1)
    out["errors"] = {
        "dup_service": err(lambda: k.add_service(ServiceSpec(T80, "rr"))),
        "no_service_edit": err(lambda: k.edit_service(ServiceSpec(nope, "rr"))),
        "no_service_del": err(lambda: k.del_service(nope)),
        "no_service_get": err(lambda: k.get_service(nope)),
        "no_scheduler": err(lambda: k.add_service(ServiceSpec(nope, "nosuch"))),
        "no_pe": err(lambda: k.add_service(ServiceSpec(nope, "rr", pe_name="nope"))),
        "dup_dest": err(lambda: k.add_dest(T80, DestSpec(A("192.168.168.11"), 80))),
        "no_dest_del": err(lambda: k.del_dest(T80, A("192.168.168.99"), 80)),
        "no_dest_edit": err(lambda: k.edit_dest(T80, DestSpec(A("192.168.168.99"), 80))),
        "dest_no_service": err(lambda: k.add_dest(nope, DestSpec(A("192.168.168.99"), 80))),
        "thresholds": err(lambda: k.add_dest(T80, DestSpec(A("192.168.168.98"), 80,
                                                             u_threshold=1, l_threshold=5))),
        "zero_no_service": err(lambda: k.zero(nope)),
    }
    out["errnos"] = {"EEXIST": errno.EEXIST, "ESRCH": errno.ESRCH, "ENOENT": errno.ENOENT,
                     "ERANGE": errno.ERANGE}

    # 5. Timeouts.
    k.set_timeouts(Timeouts(1000, 0, 77))
    out["timeouts_ipvsadm"] = ipvsadm("-L", "--timeout")["stdout"]
    ipvsadm("--set", "0", "33", "0")
    t = k.get_timeouts()
    out["timeouts_read"] = [t.tcp, t.tcp_fin, t.udp]
    k.set_timeouts(Timeouts(900, 120, 300))

    # 6. Zero and flush.
    k.zero()
    k.zero(T80)
    k.flush()
    out["after_flush"] = ipvsadm("-Sn")["stdout"]
    out["conns_empty"] = len(k.get_connections())

    # 7. Pipelined apply of 200 x 10, with two refusals in the middle that do not stop it.
    table = []
    for i in range(200):
        key = ServiceKey.inet(Protocol.TCP, f"10.1.{i // 250}.{i % 250 + 1}", 80)
        table.append((ServiceSpec(key, "wlc"),
                      [DestSpec(A(f"192.168.{i // 250}.{j + 1}"), 80 + i, weight=j)
                       for j in range(10)]))
    reqs = requests_for(table)
    reqs.insert(50, req_add_service(table[0][0]))  # duplicate: EEXIST
    reqs.insert(500, req_add_dest(ServiceKey.inet(Protocol.TCP, "10.77.0.1", 1),
                                  DestSpec(A("192.168.0.1"), 1)))  # no service: ESRCH
    t0 = time.perf_counter()
    failures = k.pipeline(reqs)
    out["pipeline_seconds"] = time.perf_counter() - t0
    out["pipeline_failures"] = [[f.index, f.errno] for f in failures]
    services = k.get_services()
    out["pipeline_services"] = len(services)
    out["pipeline_dests"] = sum(len(s.dests) for s in services)
    out["pipeline_save_lines"] = len(ipvsadm("-Sn")["stdout"].splitlines())
    k.flush()

    # 8. Sync daemons through pylvsadm (no director running: the kernel backend), read back by
    # the real ipvsadm and by pylvsadm.
    subprocess.run("ip link add pylvsy0 type dummy && ip link set pylvsy0 multicast on up",
                   shell=True, check=True)
    out["daemon_start"] = pylvsadm("--start-daemon", "master", "--mcast-interface", "pylvsy0",
                                   "--syncid", "5")
    out["daemon_list_ours"] = pylvsadm("-L", "--daemon")
    out["daemon_list_theirs"] = ipvsadm("-L", "--daemon")
    out["daemon_stop"] = pylvsadm("--stop-daemon", "master")
    out["daemon_after_stop"] = ipvsadm("-L", "--daemon")
    k.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
