"""Runs inside the VM for bench/bench_kernel.py: the same 1,000-service x 10-server table applied
to kernel IPVS by pylvs (pipelined netlink) and by ``ipvsadm -R``, then one-server changes by
each, and reading back connection rows. Prints one JSON object of timings (seconds)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
from pylvs.core.model import parse_address as A
from pylvs.netlink.ipvs import KernelIPVS, parse_proc_conns, req_edit_dest, requests_for

N_SERVICES = 1000
N_DESTS = 10


def table() -> list[tuple[ServiceSpec, list[DestSpec]]]:
    out = []
    for i in range(N_SERVICES):
        key = ServiceKey.inet(Protocol.TCP, f"10.{i // 250}.{i % 250}.1", 80)
        out.append((ServiceSpec(key, "wlc"), [
            DestSpec(A(f"192.168.{i % 250}.{j + 1}"), 8000 + i // 250, ForwardingMethod.MASQ,
                     j + 1)
            for j in range(N_DESTS)
        ]))
    return out


def rules(t: list[tuple[ServiceSpec, list[DestSpec]]]) -> str:
    lines = []
    for spec, dests in t:
        k = spec.key
        lines.append(f"-A -t {k.addr}:{k.port} -s {spec.scheduler}")
        lines.extend(f"-a -t {k.addr}:{k.port} -r {d.addr}:{d.port} -m -w {d.weight}"
                     for d in dests)
    return "\n".join(lines) + "\n"


def synthetic_conn_rows(n: int) -> str:
    """``/proc/net/ip_vs_conn`` text with ``n`` rows and up to 65,536 distinct clients."""
    rows = ["Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"]
    for i in range(n):
        rows.append(f"TCP 0A00{i >> 8 & 0xFF:02X}{i & 0xFF:02X} {1024 + i % 60000:04X} 0A000001 "
                    f"0050 C0A8{i % 250:02X}01 1F40 ESTABLISHED     899")
    return "\n".join(rows) + "\n"


def count(k: KernelIPVS) -> list[int]:
    svcs = k.get_services()
    return [len(svcs), sum(len(s.dests) for s in svcs)]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    out: dict[str, Any] = {"services": N_SERVICES, "dests_per_service": N_DESTS}
    t = table()
    text = rules(t)
    k = KernelIPVS()
    ours, theirs = [], []
    for _ in range(rounds):
        k.flush()
        t0 = time.perf_counter()
        failures = KernelIPVS().pipeline(requests_for(t))  # includes opening the socket
        ours.append(time.perf_counter() - t0)
        assert not failures, failures[:3]
        out["ours_count"] = count(k)
        k.flush()
        t0 = time.perf_counter()
        p = subprocess.run(["ipvsadm", "-R"], input=text, text=True, capture_output=True)
        theirs.append(time.perf_counter() - t0)
        assert p.returncode == 0, p.stderr
        out["ipvsadm_count"] = count(k)
    out["apply_pylvs"] = ours
    out["apply_ipvsadm_R"] = theirs

    # One-server change in the full table: a weight edit.
    spec, dests = t[500]
    d = dests[3]
    lat_ours = []
    for w in range(1, 201):
        req = req_edit_dest(spec.key, DestSpec(d.addr, d.port, d.fwd, w))
        t0 = time.perf_counter()
        k.pipeline([req])
        lat_ours.append(time.perf_counter() - t0)
    lat_api = []
    for w in range(1, 201):
        t0 = time.perf_counter()
        k.edit_dest(spec.key, DestSpec(d.addr, d.port, d.fwd, w))
        lat_api.append(time.perf_counter() - t0)
    lat_theirs = []
    for w in range(1, 21):
        t0 = time.perf_counter()
        subprocess.run(["ipvsadm", "-e", "-t", f"{spec.key.addr}:80", "-r", f"{d.addr}:{d.port}",
                        "-m", "-w", str(w)], check=True)
        lat_theirs.append(time.perf_counter() - t0)
    out["change_pylvs_median"] = statistics.median(lat_api)
    out["change_pylvs_p99"] = sorted(lat_api)[int(len(lat_api) * 0.99) - 1]
    out["change_pylvs_pipelined_median"] = statistics.median(lat_ours)
    out["change_ipvsadm_median"] = statistics.median(lat_theirs)

    t0 = time.perf_counter()
    svcs = k.get_services()
    out["read_table_seconds"] = time.perf_counter() - t0
    out["read_table_rows"] = len(svcs)

    # Reading 100,000 connection rows: the kernel's /proc format, rows synthesised here
    # (making 100,000 real connections under TCG would take far longer than the bench).
    blob = synthetic_conn_rows(100_000)
    t0 = time.perf_counter()
    conns = parse_proc_conns(blob)
    out["parse_100k_conns_seconds"] = time.perf_counter() - t0
    assert len(conns) == 100_000
    k.flush()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
