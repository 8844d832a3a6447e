"""Failover time of pylvs VRRP against keepalived, same configuration, same run.

Two routers (a: priority 100, b: priority 90) and a client in network namespaces on a bridge.
For each case the master is made to fail (SIGKILL, or SIGTERM = priority 0 resignation) or comes
back (preemption), and a probe in the client namespace records, from that instant:
  * arp: the first ARP reply for the VIP from the node that should now hold it;
  * tcp: the first TCP connection to VIP:8080 answered by that node.
Both pairs (pylvs+pylvs, keepalived+keepalived) run the same keepalived.conf. Prints a Markdown
table with the median of --reps runs (and min-max). Needs root, iproute2 and keepalived.

Also: split-brain detection time of pylvs (a keepalived peer that stops receiving VRRP becomes a
second master; time from it holding the VIP to pylvs reporting the split brain).

Usage: python bench/bench_failover.py [--reps N] [--cases v2-kill,v2-term,v2-preempt,v3-kill]
                                      [--split-brain v2,v3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBNET = "10.78.0"
VIP = f"{SUBNET}.100"
PYLVS_ENTRY = "cli"  # "cli": pylvs keepalived; "module": python -m pylvs.keepalived (loads only VRRP)

PROBE = r"""
import json, socket, struct, sys, time, select
vip, mac_hex, node, deadline = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
want_mac = bytes.fromhex(mac_hex)
vip_b = socket.inet_aton(vip)
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
raw.bind(("eth0", 0x0806))
my_mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
my_ip = socket.inet_aton(sys.argv[5])
req = b"\xff" * 6 + my_mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + my_mac + my_ip + b"\0" * 6 + vip_b + b"\0" * 18
t_arp = t_tcp = None
next_arp = 0.0
print("ready", flush=True)
while time.time() < deadline and (t_arp is None or t_tcp is None):
    now = time.time()
    if t_arp is None and now >= next_arp:
        raw.send(req)
        next_arp = now + 0.005
    while t_arp is None:
        r, _, _ = select.select([raw], [], [], 0)
        if not r:
            break
        f = raw.recv(128)
        if f[20:22] == b"\x00\x02" and f[28:32] == vip_b and f[22:28] == want_mac:
            t_arp = time.time()
    if t_tcp is None:
        try:
            s = socket.create_connection((vip, 8080), timeout=0.02)
            data = s.recv(16)
            s.close()
            if data.strip() == node.encode():
                t_tcp = time.time()
        except OSError:
            pass
    time.sleep(0.002)
print(json.dumps({"arp": t_arp, "tcp": t_tcp}), flush=True)
"""

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode() + b"\n"); c.close()
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def conf(prio: int, version: int, advert: float) -> str:
    auth = "    authentication {\n        auth_type PASS\n        auth_pass bench\n    }\n" if version == 2 else ""
    return f"""global_defs {{
    router_id bench
}}
vrrp_instance VI_B {{
    state BACKUP
    interface eth0
    virtual_router_id 61
    priority {prio}
    advert_int {advert}
    version {version}
{auth}    virtual_ipaddress {{
        {VIP}/24 dev eth0
    }}
}}
"""


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.sfx = uuid.uuid4().hex[:6]
        self.tmp = tmp
        self.hub = f"fh{self.sfx}"
        self.ns = {r: f"f{r}{self.sfx}" for r in ("a", "b", "c")}
        self.ip = {"a": f"{SUBNET}.1", "b": f"{SUBNET}.2", "c": f"{SUBNET}.10"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def build(self) -> None:
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for r, ns in self.ns.items():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", self.hub, "link", "add", f"p{r}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", f"p{r}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip[r]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            if r != "c":
                self.procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, r]))

    def mac(self, r: str) -> str:
        return sh("ip", "netns", "exec", self.ns[r], "cat", "/sys/class/net/eth0/address").stdout.strip().replace(":", "")

    def destroy(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in [*self.ns.values(), self.hub]:
            sh("ip", "netns", "del", ns, check=False)

    def has_vip(self, r: str) -> bool:
        return f" {VIP}/" in sh("ip", "-n", self.ns[r], "-o", "addr", "show", "dev", "eth0").stdout

    def clear_vip(self, r: str) -> None:
        sh("ip", "-n", self.ns[r], "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)


class Router:
    def __init__(self, lab: Lab, impl: str, role: str, text: str) -> None:
        self.lab, self.impl, self.role = lab, impl, role
        tag = f"{impl}-{role}-{uuid.uuid4().hex[:4]}"
        cfg = lab.tmp / f"{tag}.conf"
        cfg.write_text(text)
        self.pid = lab.tmp / f"{tag}.pid"
        self.state = lab.tmp / f"{tag}.json"
        log = (lab.tmp / f"{tag}.log").open("wb")
        if impl == "pylvs":
            entry = ["pylvs.cli.main", "keepalived"] if PYLVS_ENTRY == "cli" else ["pylvs.keepalived"]
            cmd = [sys.executable, "-m", *entry, "-n", "-l", "-f", str(cfg), "--state-file", str(self.state)]
        else:
            cmd = [shutil.which("keepalived") or "/usr/sbin/keepalived", "-n", "-l", "-P", "-f", str(cfg),
                   "-p", str(self.pid), "-r", str(self.pid.with_suffix(".vrrp")), "-c", str(self.pid.with_suffix(".chk"))]
        self.popen = subprocess.Popen(["ip", "netns", "exec", lab.ns[role], *cmd], stdout=log, stderr=subprocess.STDOUT,
                                      cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "src")})

    def pids(self) -> list[int]:
        out = [self.popen.pid]
        child = self.pid.with_suffix(".vrrp")
        if self.impl == "keepalived" and child.exists():
            try:
                out.insert(0, int(child.read_text().split()[0]))
            except (ValueError, IndexError):
                pass
        return out

    def kill(self, sig: int) -> None:
        for p in self.pids():
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.kill(signal.SIGKILL)
            self.popen.wait(5)


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def start_probe(lab: Lab, node: str, deadline: float) -> subprocess.Popen[str]:
    p = subprocess.Popen(["ip", "netns", "exec", lab.ns["c"], sys.executable, "-c", PROBE, VIP, lab.mac(node), node,
                          str(deadline), lab.ip["c"]], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    p.stdout.readline()  # "ready"
    return p


def one_run(lab: Lab, impl: str, case: str) -> tuple[float | None, float | None]:
    version, advert = (3, 0.1) if case.startswith("v3") else (2, 1.0)
    a = Router(lab, impl, "a", conf(100, version, advert))
    b = Router(lab, impl, "b", conf(90, version, advert))
    try:
        if not wait_for(lambda: lab.has_vip("a") and not lab.has_vip("b"), 20):
            return None, None
        time.sleep(max(1.5, 3 * advert))  # steady state: backup has heard several adverts
        target = "b"
        if case.endswith("preempt"):
            a.kill(signal.SIGKILL)
            a.popen.wait(5)
            lab.clear_vip("a")
            if not wait_for(lambda: lab.has_vip("b"), 10):
                return None, None
            time.sleep(1.5)
            target = "a"
            probe = start_probe(lab, "a", time.time() + 20)
            t0 = time.time()
            a = Router(lab, impl, "a", conf(100, version, advert))
        else:
            probe = start_probe(lab, "b", time.time() + 20)
            t0 = time.time()
            a.kill(signal.SIGKILL if case.endswith("kill") else signal.SIGTERM)
        out, _ = probe.communicate(timeout=30)
        res = json.loads(out.strip().splitlines()[-1])
        _ = target
        return (res["arp"] - t0 if res["arp"] else None, res["tcp"] - t0 if res["tcp"] else None)
    finally:
        a.stop()
        b.stop()
        lab.clear_vip("a")
        lab.clear_vip("b")


def split_brain_run(lab: Lab, version: int, advert: float) -> float | None:
    """pylvs master (a) and keepalived (b); b stops receiving VRRP (nftables) and becomes a second
    master: the time from b holding the VIP to pylvs reporting the split brain."""
    a = Router(lab, "pylvs", "a", conf(100, version, advert))
    b = Router(lab, "keepalived", "b", conf(90, version, advert))
    try:
        if not wait_for(lambda: lab.has_vip("a") and not lab.has_vip("b"), 20):
            print("# split-brain: no steady state with the VIP on a only", file=sys.stderr)
            return None
        time.sleep(1.0)
        sh("ip", "netns", "exec", lab.ns["b"], "nft", "add table inet fbench")
        sh("ip", "netns", "exec", lab.ns["b"], "nft", "add chain inet fbench in { type filter hook input priority 0 ; }")
        sh("ip", "netns", "exec", lab.ns["b"], "nft", "add rule inet fbench in meta l4proto 112 drop")
        t_appear = t_detect = None
        end = time.monotonic() + 10 + 4 * advert
        while time.monotonic() < end and (t_detect is None or t_appear is None):
            now = time.monotonic()
            if t_appear is None and lab.has_vip("b"):
                t_appear = now
            if t_detect is not None:
                continue
            try:
                inst = json.loads(a.state.read_text())["instances"]["VI_B"]
            except (OSError, ValueError, KeyError):
                inst = {}
            if t_detect is None and inst.get("split_brain"):
                t_detect = now  # may precede the VIP: keepalived advertises before adding it
            time.sleep(0.005)
        if t_appear is None or t_detect is None:
            print(f"# split-brain: appear {t_appear} detect {t_detect}", file=sys.stderr)
            return None
        return max(0.0, t_detect - t_appear)
    finally:
        sh("ip", "netns", "exec", lab.ns["b"], "nft", "delete table inet fbench", check=False)
        a.stop()
        b.stop()
        lab.clear_vip("a")
        lab.clear_vip("b")


def fmt(xs: list[float | None]) -> str:
    got = [x for x in xs if x is not None]
    if not got:
        return "failed"
    miss = len(xs) - len(got)
    s = f"{statistics.median(got):.2f} s ({min(got):.2f}-{max(got):.2f})"
    return s + (f", {miss} failed" if miss else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cases", default="v2-kill,v2-term,v2-preempt,v3-kill")
    ap.add_argument("--split-brain", default="v2,v3", help="split-brain detection cases ('' for none)")
    ap.add_argument("--pylvs-entry", choices=("cli", "module"), default="cli",
                    help="start pylvs as 'pylvs keepalived' (cli) or 'python -m pylvs.keepalived' (module)")
    args = ap.parse_args()
    global PYLVS_ENTRY
    PYLVS_ENTRY = args.pylvs_entry
    if os.geteuid() != 0:
        print("bench_failover: needs root (network namespaces)", file=sys.stderr)
        return 2
    if not shutil.which("keepalived") and not Path("/usr/sbin/keepalived").exists():
        print("bench_failover: keepalived not installed (make sysdeps-test)", file=sys.stderr)
        return 2
    results: dict[tuple[str, str], tuple[list[float | None], list[float | None]]] = {}
    split: dict[str, list[float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="pylvs-failover-") as d:
        lab = Lab(Path(d))
        try:
            lab.build()
            for case in filter(None, args.cases.split(",")):
                for rep in range(args.reps):
                    for impl in ("keepalived", "pylvs"):  # interleaved: same conditions for both
                        arp, tcp = one_run(lab, impl, case)
                        r = results.setdefault((case, impl), ([], []))
                        r[0].append(arp)
                        r[1].append(tcp)
                        print(f"# {case} {impl} rep {rep + 1}: arp {arp} tcp {tcp}", file=sys.stderr, flush=True)
            for v in filter(None, args.split_brain.split(",")):
                for rep in range(args.reps):
                    version, advert = (3, 0.1) if v == "v3" else (2, 1.0)
                    t = split_brain_run(lab, version, advert)
                    split.setdefault(v, []).append(t)
                    print(f"# split-brain {v} rep {rep + 1}: {t}", file=sys.stderr, flush=True)
        finally:
            lab.destroy()
    titles = {"v2-kill": "v2 advert_int 1, master SIGKILLed", "v2-term": "v2 advert_int 1, master SIGTERMed (priority 0)",
              "v2-preempt": "v2 advert_int 1, preemption by the restarted master", "v3-kill": "v3 advert_int 0.1, master SIGKILLed"}
    cases = list(filter(None, args.cases.split(",")))
    if cases:
        print(f"Failover, median of {args.reps} (min-max); priorities 100/90; time from the event to the VIP answering on the new master")
        print()
        print("| case | keepalived ARP | pylvs ARP | keepalived TCP | pylvs TCP |")
        print("|---|---|---|---|---|")
    for case in cases:
        ka, py = results[(case, "keepalived")], results[(case, "pylvs")]
        print(f"| {titles.get(case, case)} | {fmt(ka[0])} | {fmt(py[0])} | {fmt(ka[1])} | {fmt(py[1])} |")
    if split:
        print()
        print("Split brain (pylvs master, keepalived peer that stops receiving VRRP): from the second master")
        print("holding the VIP to pylvs reporting it (keepalived has no such detection)")
        print()
        print("| case | pylvs detection | 2 x advert_int |")
        print("|---|---|---|")
        for v, xs in split.items():
            print(f"| {v} advert_int {'0.1' if v == 'v3' else '1'} | {fmt(xs)} | {'0.2 s' if v == 'v3' else '2 s'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
