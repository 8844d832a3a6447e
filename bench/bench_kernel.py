"""``make bench-kernel``: pylvs' netlink backend against ``ipvsadm -R`` on the real kernel IPVS.

Boots the project's VM (Debian's kernel under QEMU; see vm/vmrun.py) once and runs
bench/guest_bench_kernel.py in it: apply a 1,000-service x 10-server table with pylvs (one
pipelined netlink stream) and with ``ipvsadm -R`` of the same rules, in the same run; then
the latency of a one-server change by each; then parsing 100,000 connection rows.

Under TCG every instruction is emulated, so absolute figures are many times what a real host
shows; both tools run in the same guest, so the ratio is what to read. The machine is shared:
figures are noisy. Bounded: one boot, a fixed number of rounds, a timeout.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vm"))

import vmrun  # noqa: E402


def host_parse() -> None:
    """Reading 100,000 connection rows, on the host's own CPU (the TCG figure is emulation)."""
    import time

    sys.path.insert(0, str(REPO / "bench"))
    from guest_bench_kernel import synthetic_conn_rows

    from pylvs.netlink.ipvs import parse_proc_conns

    blob = synthetic_conn_rows(100_000)
    best_wall = best_cpu = float("inf")
    for _ in range(3):
        w, c = time.perf_counter(), time.process_time()
        parse_proc_conns(blob)
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    print(f"{'parse 100,000 connection rows, host':38} {best_wall:16.3f} s wall, "
          f"{best_cpu:.3f} s CPU (best of 3)")


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--host-only"]
    host_parse()
    if "--host-only" in sys.argv:
        return 0
    rounds = int(args[0]) if args else 3
    try:
        vmrun.check_available()
    except vmrun.VMUnavailable as e:
        print(f"bench-kernel: skipped, no VM: {e}", file=sys.stderr)
        return 0
    py = REPO / ".venv" / "bin" / "python"
    script = REPO / "bench" / "guest_bench_kernel.py"
    cmd = f"cd {shlex.quote(str(REPO))} && {shlex.quote(str(py))} {shlex.quote(str(script))} {rounds}\n"
    r = vmrun.run_in_vm_full(cmd, timeout=900)
    if r.rc != 0:
        print(r.stdout, r.stderr, sep="\n", file=sys.stderr)
        return r.rc
    res = json.loads(r.stdout)
    ms = 1000.0
    print(f"kernel IPVS in a TCG VM (Debian {vmrun.guest_kernel().version}); "
          f"{res['services']} services x {res['dests_per_service']} servers, {rounds} rounds")
    print(f"{'':38} {'pylvs (netlink)':>16} {'ipvsadm':>12}")
    print(f"{'apply table, best of rounds (s)':38} {min(res['apply_pylvs']):16.3f} "
          f"{min(res['apply_ipvsadm_R']):12.3f}   (ipvsadm -R)")
    print(f"{'apply table, median (s)':38} {sorted(res['apply_pylvs'])[len(res['apply_pylvs']) // 2]:16.3f} "
          f"{sorted(res['apply_ipvsadm_R'])[len(res['apply_ipvsadm_R']) // 2]:12.3f}")
    print(f"{'one-server change, median (ms)':38} {res['change_pylvs_median'] * ms:16.3f} "
          f"{res['change_ipvsadm_median'] * ms:12.3f}   (ipvsadm -e, a process per change)")
    print(f"{'one-server change, p99 (ms)':38} {res['change_pylvs_p99'] * ms:16.3f}")
    print(f"{'read back whole table (s)':38} {res['read_table_seconds']:16.3f}")
    print(f"{'parse 100,000 connection rows (s)':38} {res['parse_100k_conns_seconds']:16.3f}")
    print(f"tables applied: pylvs {res['ours_count']}, ipvsadm {res['ipvsadm_count']}; "
          f"VM wall time {r.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
