"""Scale-out behind ECMP: what a director going or coming costs, how fast the router reacts, and
the aggregate packet rate with 1, 2 and 3 directors. One command (``make bench-scaleout``);
needs root and BIRD 2 (``bird2``).

Set-up (``pylvs.lab.router``): the namespace lab with a router running BIRD (eBGP to each
director, hold 3 s, BFD 100 ms x 5, ``merge paths``, 5-tuple multipath hash) and directors on the
packet data plane (DR, ``mh`` with ``mh-port``, ``sloppy_tcp`` as chosen), each announcing the
VIP with ``pylvs scaleout`` while it can serve it. Real servers: nginx (HTTP keep-alive) and an
echo server (streaming, every byte checked) on rs1/rs2.

Measured, for ``mh`` + ``sloppy_tcp`` and for ``rr`` with the directors sharing connections
through the IPVS sync protocol (each both master and backup on one group), each beside its
control run (``mh`` without sloppy_tcp, ``rr`` without sync: what sloppy and sync save). Sync
runs twice: with the kernel's default re-send rule (``sync_threshold`` 3, ``sync_period`` 50:
an established entry goes again at its 53rd, 103rd, ... incoming packet) and with a re-send by
time (``sync_threshold``/``sync_period`` 0, ``sync_refresh_period`` 1 s), set on every director
with ``set_sysctl`` as ``pylvs sysctl -w`` does; a joining director learns the connections
opened before it only from these re-sends.
- with sync, how long a new connection's entry takes to reach the other directors (from the
  client's connect until both others list it, polled every 20 ms);
- connections broken among ``--conns`` long-lived ones (half streaming echo, half keep-alive
  HTTP, one exchange per connection every 0.5 s) when one of three directors dies (its data plane
  is killed) and, in a second run, when a fourth joins; plus new connections (``--rate``/s) lost;
- time until the router stops sending to a dead director: data plane killed (its speaker
  withdraws), and director frozen (nothing withdraws: BFD, else the hold time);
- new connections lost while a director drains (``pylvs scaleout drain``);
- aggregate packets/s forwarded with 1, 2 and 3 directors announcing (streaming echo at full
  speed), with each director's CPU and the whole machine's.

On this machine's 2 cores every director, the router's forwarding (kernel softirq) and the load
generator share the same two CPUs: more directors cannot add capacity here, and the figures show
what the router and the extra processes cost, not a gain.

Bounded: every phase has a fixed duration; everything started is stopped and the lab removed at
the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from pylvs.control.client import ControlClient  # noqa: E402
from pylvs.core.sync import FLUSH_AFTER  # noqa: E402
from pylvs.lab import router  # noqa: E402
from pylvs.lab.topology import Lab  # noqa: E402
from pylvs.scaleout.cli import request  # noqa: E402

PY = sys.executable
SYNC_SAMPLES = 30
REFRESH = {"sync_threshold": 0, "sync_period": 0, "sync_refresh_period": 1}
RUNS: dict[str, tuple[str, bool, bool, bool, dict[str, int]]] = {
    # name: (scheduler, sloppy_tcp, sync, a control run, sysctls on every director)
    "mh + sloppy_tcp": ("mh", True, False, False, {}),
    "mh, sloppy_tcp off": ("mh", False, False, True, {}),
    "rr + sync": ("rr", False, True, False, {}),
    "rr + sync, sync_refresh_period 1": ("rr", False, True, False, REFRESH),
    "rr, no sync": ("rr", False, False, True, {}),
}


def _sysctl(ecmp: router.ECMPCluster, k: int, values: dict[str, int]) -> None:
    if values:
        with ControlClient(ecmp.control_socket(k)) as c:
            c.set_sysctl(dict(values))


def _tool(lab: Lab, *args: str) -> subprocess.Popen[str]:
    return lab.popen("client", [PY, "-m", "pylvs.lab.router", *args], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True, start_new_session=True)


def _json(p: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = p.communicate(timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.strip()[-500:]}")
    result: dict[str, Any] = json.loads(out)
    return result


def _up(n: int, sloppy: bool, scheduler: str = "mh", sync: bool = False,
        refresh: int = 0) -> tuple[Lab, router.ECMPCluster]:
    lab = Lab(f"bs{random.randrange(36**4):x}"[:8], hosts=router.ecmp_hosts(4))
    # the run's sync_refresh_period, set by the lab on each director before its daemons and
    # its announcer start (so a joining director's announcer sees it: announce_delay auto)
    ecmp = router.ECMPCluster(lab, n, scheduler=scheduler, sloppy=sloppy, sync=sync,
                              sync_refresh=refresh)
    lab.up()
    ecmp.start()
    ecmp.wait_next_hops({router.director_addr(k) for k in range(1, n + 1)}, timeout=30)
    ecmp.echo = router.start_echo_servers(lab)  # type: ignore[attr-defined]
    for _ in range(6):
        lab.curl(f"http://{router.ECMP_VIP}/")
    return lab, ecmp


def _down(lab: Lab, ecmp: router.ECMPCluster) -> None:
    for p in getattr(ecmp, "echo", []):
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
    ecmp.stop()
    lab.down()


def survival(sloppy: bool, conns: int, rate: float, seconds: float, scheduler: str = "mh",
             sync: bool = False, sysctls: dict[str, int] | None = None) -> dict[str, Any]:
    """One director dies, then (fresh long-lived set) a fourth joins, then one drains. With
    ``sync``, first the time a new entry takes to reach the other directors."""
    sysctls = sysctls or {}
    lab, ecmp = _up(3, sloppy, scheduler, sync, int(sysctls.get("sync_refresh_period", 0)))
    out: dict[str, Any] = {"scheduler": scheduler, "sloppy_tcp": int(sloppy), "sync": int(sync),
                           "sysctls": sysctls}
    try:
        for k in (1, 2, 3):
            _sysctl(ecmp, k, sysctls)
        d = {k: router.director_addr(k) for k in range(1, 5)}
        if sync:
            delays = router.sync_delays(ecmp, count=SYNC_SAMPLES, spacing=0.25)
            out["sync_delay_s"] = {"samples": len(delays), "min": round(delays[0], 3),
                                   "median": round(delays[len(delays) // 2], 3),
                                   "max": round(delays[-1], 3)}
        # -- one of three dies
        hold = _tool(lab, "hold", "--echo", str(conns // 2), "--http", str(conns - conns // 2),
                     "--seconds", str(seconds), "--interval", "0.5", "--timeout", "8")
        churn = _tool(lab, "churn", "--rate", str(rate), "--seconds", str(seconds))
        time.sleep(seconds / 3)
        t_kill = time.monotonic()  # from the kill, not from its reaping (a big process's exit
        ecmp.kill("dir2-director")  # takes a while, and the speaker may have acted by then)
        ecmp.wait_next_hops({d[1], d[3]}, timeout=10)
        out["withdraw_after_dataplane_death_s"] = round(time.monotonic() - t_kill, 3)
        h, c = _json(hold, seconds + 60), _json(churn, seconds + 60)
        out["die"] = {"long_lived": conns, "broken": h["echo_broken"] + h["http_broken"],
                      "new": c["ok"] + c["failed"], "new_failed": c["failed"],
                      "errors": h["errors"][:3] + c["errors"][:3]}
        # -- a fourth joins (the two survivors carry a fresh long-lived set)
        hold = _tool(lab, "hold", "--echo", str(conns // 2), "--http", str(conns - conns // 2),
                     "--seconds", str(seconds), "--interval", "0.5", "--timeout", "8")
        churn = _tool(lab, "churn", "--rate", str(rate), "--seconds", str(seconds))
        time.sleep(seconds / 3)
        t_join = time.monotonic()
        ecmp.start_director(4)
        _sysctl(ecmp, 4, sysctls)
        ecmp.wait_next_hops({d[1], d[3], d[4]}, timeout=30)
        route_after = round(time.monotonic() - t_join, 2)
        join_wait = request(ecmp.speaker_socket(4), "status")["result"]["join"]["wait"]
        h, c = _json(hold, seconds + 60), _json(churn, seconds + 60)
        with ControlClient(ecmp.control_socket(4)) as cc:
            st = cc.status()
        out["add"] = {"long_lived": conns, "broken": h["echo_broken"] + h["http_broken"],
                      "new": c["ok"] + c["failed"], "new_failed": c["failed"],
                      "errors": h["errors"][:3] + c["errors"][:3],
                      # what the newcomer could not forward (no entry), what sync gave it
                      "dir4_no_entry_drops": st["dataplane"].get("drops", {}).get(
                          "no_connection", 0),
                      "dir4_synced_entries": st["sync"].get("backup", {}).get(
                          "entries_created", 0),
                      # what the others sent again by the re-send rules, during the whole run
                      "resent_entries": _resent(ecmp, (1, 3)),
                      # the newcomer's announcer held its route back (announce_delay auto)
                      "join_wait_s": join_wait, "route_after_start_s": route_after}
        # -- one drains while new connections keep coming
        churn = _tool(lab, "churn", "--rate", str(rate), "--seconds", str(seconds))
        time.sleep(seconds / 3)
        request(ecmp.speaker_socket(3), "drain")
        ecmp.wait_next_hops({d[1], d[4]}, timeout=10)
        c = _json(churn, seconds + 60)
        out["drain"] = {"new": c["ok"] + c["failed"], "new_failed": c["failed"]}
        request(ecmp.speaker_socket(3), "resume")
        # -- a director freezes: nothing withdraws, the router must notice (BFD / hold time)
        ecmp.wait_next_hops({d[1], d[3], d[4]}, timeout=10)
        bird = request(ecmp.speaker_socket(1), "status")["result"]["bird_pid"]
        os.kill(bird, signal.SIGSTOP)
        try:
            out["router_drops_frozen_director_s"] = round(
                ecmp.wait_next_hops({d[3], d[4]}, timeout=10), 3)
        finally:
            os.kill(bird, signal.SIGCONT)
    finally:
        _down(lab, ecmp)
    return out


def _resent(ecmp: router.ECMPCluster, directors: tuple[int, ...]) -> int:
    total = 0
    for k in directors:
        with ControlClient(ecmp.control_socket(k)) as c:
            total += c.status()["sync"].get("master", {}).get("entries_resent", 0)
    return total


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # busy (not idle, not iowait), total


def throughput(seconds: float, conns: int) -> list[dict[str, Any]]:
    """Packets/s forwarded with 1, 2, 3 directors announcing (the others drained)."""
    lab, ecmp = _up(3, True)
    rows = []
    hz = os.sysconf("SC_CLK_TCK")
    try:
        for active in (1, 2, 3):
            for k in (1, 2, 3):
                request(ecmp.speaker_socket(k), "resume" if k <= active else "drain")
            ecmp.wait_next_hops({router.director_addr(k) for k in range(1, active + 1)},
                                timeout=10)
            pids = {k: ecmp.procs[f"dir{k}-director"].pid for k in (1, 2, 3)}

            def pkts() -> int:
                total = 0
                for k in (1, 2, 3):
                    with ControlClient(ecmp.control_socket(k)) as c:
                        total += sum(s.stats.inpkts for s in c.get_services())
                return total

            p0, c0, m0 = pkts(), {k: _cpu_ticks(p) for k, p in pids.items()}, _machine()
            t0 = time.monotonic()
            hold = _tool(lab, "hold", "--echo", str(conns), "--http", "0", "--seconds",
                         str(seconds), "--interval", "0", "--timeout", "8")
            h = _json(hold, seconds + 60)
            dt = time.monotonic() - t0
            p1, c1, m1 = pkts(), {k: _cpu_ticks(p) for k, p in pids.items()}, _machine()
            rows.append({
                "directors": active, "pps_in": round((p1 - p0) / dt),
                "echo_MB": round(h["bytes"] / 1e6, 1), "broken": h["echo_broken"],
                "director_cpu_pct": {f"dir{k}": round(100 * (c1[k] - c0[k]) / hz / dt)
                                     for k in (1, 2, 3)},
                "machine_busy_pct": round(100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1])),
            })
    finally:
        _down(lab, ecmp)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conns", type=int, default=300, help="long-lived connections (default 300)")
    p.add_argument("--rate", type=float, default=20, help="new connections per second")
    p.add_argument("--seconds", type=float, default=12, help="length of each event's run")
    p.add_argument("--pps-seconds", type=float, default=8)
    p.add_argument("--pps-conns", type=int, default=24)
    p.add_argument("--skip-control", action="store_true",
                   help="no control runs (mh without sloppy_tcp, rr without sync)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="only the survival runs whose name contains NAME (repeatable; e.g. "
                        "'rr + sync')")
    p.add_argument("--skip-throughput", action="store_true",
                   help="no aggregate forwarding phase")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench_scaleout: needs root (network namespaces)", file=sys.stderr)
        return 1
    results: dict[str, Any] = {"survival": []}
    for name, (scheduler, sloppy, sync, control, sysctls) in RUNS.items():
        if (control and args.skip_control) or (args.only and
                                               not any(o in name for o in args.only)):
            continue
        r = survival(sloppy, args.conns, args.rate, args.seconds, scheduler, sync, sysctls)
        results["survival"].append(r)
        print(f"\n== {name}: 3 directors, {args.conns} long-lived connections, "
              f"{args.rate:g} new/s ==")
        if sync:
            sd = r["sync_delay_s"]
            print(f"  sync: a new entry reaches both other directors in {sd['min']:.2f} / "
                  f"{sd['median']:.2f} / {sd['max']:.2f} s (min / median / max of "
                  f"{sd['samples']}; the master flushes a partly filled message after "
                  f"{FLUSH_AFTER:g} s, as the kernel's IPVS_SYNC_FLUSH_TIME)")
        for ev, what in (("die", "one of three dies"), ("add", "a fourth joins")):
            e = r[ev]
            kept = 100 * (e["long_lived"] - e["broken"]) / e["long_lived"]
            print(f"  {what:<18} long-lived broken {e['broken']:>4}/{e['long_lived']} "
                  f"({kept:.1f} % kept)   new lost {e['new_failed']}/{e['new']}")
            if ev == "add":
                print(f"  {'':<18} the newcomer: {e['dir4_no_entry_drops']} packets dropped "
                      f"without an entry, {e['dir4_synced_entries']} entries received by sync"
                      + (f"; dir1+dir3 re-sent {e['resent_entries']} entries" if sync else ""))
                print(f"  {'':<18} its route at the router {e['route_after_start_s']:.1f} s "
                      f"after it started (announcer held back {e['join_wait_s']:g} s)")
            for err in e["errors"]:
                print(f"      e.g. {err}")
        print(f"  drain              new lost {r['drain']['new_failed']}/{r['drain']['new']}")
        print(f"  router stops using a director: data plane killed "
              f"{r['withdraw_after_dataplane_death_s']:.2f} s (speaker withdraws), frozen "
              f"{r['router_drops_frozen_director_s']:.2f} s (BFD 100 ms x 5; hold time "
              f"{router.HOLD_TIME} s)")
    if args.skip_throughput:
        return _write(args.json, results)
    rows = throughput(args.pps_seconds, args.pps_conns)
    results["throughput"] = rows
    print(f"\n== aggregate forwarding, streaming echo on {args.pps_conns} connections, "
          f"{os.cpu_count()} cores ==")
    for row in rows:
        cpu = " ".join(f"{k} {v:>3} %" for k, v in row["director_cpu_pct"].items())
        print(f"  {row['directors']} director(s): {row['pps_in']:>7} packets/s in, "
              f"{row['echo_MB']:>6} MB echoed; CPU {cpu}; machine busy "
              f"{row['machine_busy_pct']} %")
    print("  (2 cores: the directors, the router's forwarding (softirq) and the Python load "
          "generator share them and the machine is saturated, so more directors add no "
          "capacity here: each does less and the total stays bounded by the shared CPUs; on "
          "separate machines the aggregate would scale with the directors)")
    return _write(args.json, results)


def _write(path: str | None, results: dict[str, Any]) -> int:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
