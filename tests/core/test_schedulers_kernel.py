"""Our schedulers against the real kernel IPVS: same tables, same clients, same decisions.

A VM on Debian's own kernel (``vm/vmrun.py``) gets the tables below with ``ipvsadm -R``, and a
client namespace sends crafted TCP SYNs (each one makes the kernel schedule a new connection; the
real servers need not exist). ``ipvsadm -Lnc`` then says where each client went. Here the same
table is built with ``IPVSTable`` and the same clients are scheduled in the same order, counting
each new connection as active (a SYN_RECV entry is an ActiveConn in the kernel's listing) and
setting OVERLOAD when a server reaches its upper threshold, as ``ip_vs_bind_dest`` does.

Every experiment has its own virtual address, so no real server is shared between them (the
kernel reuses a deleted real server, counters included, when the same one is added back).
twos is not in Debian 12's kernel (it came with 6.2), so it is not compared.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pylvs.core.model import (
    SCHED_FLAG_NAMES,
    DestFlags,
    DestSpec,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    format_addr_port,
)
from pylvs.core.table import IPVSTable

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

Client = tuple[str, int, str]  # source address, source port, virtual address
# name -> (ipvsadm -R lines, clients, ipvsadm -R lines after them, clients after those)
Experiment = tuple[list[str], list[Client], list[str], list[Client]]


def _experiments() -> dict[str, Experiment]:
    exps: dict[str, Experiment] = {}
    n = 0

    def add(name: str, sched: str, weights: list[int], clients: int | str = 300,
            flags: str = "", then: list[str] | None = None, more: int = 0,
            upper: list[int] | None = None) -> None:
        nonlocal n
        n += 1
        vip = f"10.3.{n}.1"
        svc = f"-t {vip}:80"
        setup = [f"-A {svc} -s {sched}" + (f" -b {flags}" if flags else "")]
        setup += [f"-a {svc} -r 192.168.{100 + n}.{i + 1}:80 -g -w {w}"
                  + (f" -x {upper[i]}" if upper and upper[i] else "")
                  for i, w in enumerate(weights)]
        base = f"100.{64 + n}"
        if clients == "ports":  # one client address, many source ports
            first = [(f"{base}.9.9", 30000 + 7 * i, vip) for i in range(200)]
        else:
            assert isinstance(clients, int)
            first = [(f"{base}.{i // 250}.{i % 250 + 1}", 40000 + i, vip) for i in range(clients)]
        after = [(f"{base}.{200 + i // 250}.{i % 250 + 1}", 50000 + i, vip) for i in range(more)]
        exps[name] = (setup, first, [c.replace("VS", svc).replace("RS", f"192.168.{100 + n}")
                                     for c in (then or [])], after)

    add("mh", "mh", [1] * 10)
    add("mh_weights", "mh", [1, 2, 3, 5, 8, 4])
    add("mh_big_weights", "mh", [100, 300, 1000, 7])
    add("mh_port", "mh", [1] * 5, "ports", "mh-port")
    add("mh_fallback", "mh", [1] * 10, 0, "mh-fallback", ["-e VS -r RS.4:80 -g -w 0"], 300)
    add("mh_quiesced", "mh", [1] * 10, 0, "", ["-e VS -r RS.4:80 -g -w 0"], 300)
    add("mh_removed", "mh", [1] * 10, 0, "", ["-d VS -r RS.4:80"], 300)
    add("sh", "sh", [1, 2, 3, 1, 2])
    add("sh_port", "sh", [1] * 5, "ports", "sh-port")
    add("sh_fallback", "sh", [1] * 5, 0, "sh-fallback", ["-e VS -r RS.2:80 -g -w 0"], 300)
    add("rr", "rr", [1, 1, 1], 40)
    add("rr_removal", "rr", [1, 1, 1, 1], 5, "", ["-d VS -r RS.4:80"], 7)
    add("wrr_4_3_2", "wrr", [4, 3, 2], 40)
    add("wrr_1_5_2_3", "wrr", [1, 5, 2, 3], 40)
    add("wrr_edit", "wrr", [4, 3, 2], 5, "", ["-e VS -r RS.3:80 -g -w 4"], 11)
    add("wrr_gcd_snap", "wrr", [2, 1], 3, "",
        ["-e VS -r RS.1:80 -g -w 4", "-e VS -r RS.2:80 -g -w 2"], 6)
    add("lc", "lc", [1, 2, 3], 40)
    add("wlc", "wlc", [1, 2, 3], 40)
    add("wlc_quiesced", "wlc", [1, 2, 3, 5], 10, "", ["-e VS -r RS.4:80 -g -w 0"], 20)
    add("sed", "sed", [1, 2, 3], 40)
    add("nq", "nq", [1, 2, 3], 40)
    add("fo", "fo", [1, 3, 3], 20)
    add("ovf", "ovf", [1, 2, 3], 12)
    add("lblc", "lblc", [1, 2, 3], 30)
    add("lblcr", "lblcr", [1, 2, 3], 30)
    add("lblcr_uneven", "lblcr", [1, 1, 5], 60)
    # weight 0 from the start, weight changes that reshape the hash tables
    add("sh_zero_weights", "sh", [2, 0, 1, 0, 3], 300, "sh-fallback")
    add("mh_zero_weights", "mh", [1, 0, 2, 0, 1], 300, "mh-fallback")
    add("mh_weight_raised", "mh", [1] * 5, 0, "", ["-e VS -r RS.2:80 -g -w 3"], 300)
    add("mh_requiesced", "mh", [2, 1, 1], 0, "",
        ["-e VS -r RS.1:80 -g -w 0", "-e VS -r RS.1:80 -g -w 1"], 300)
    add("wrr_with_zero", "wrr", [3, 0, 2], 30)
    # Editing the service without changing its scheduler leaves the scheduler's state alone.
    add("wrr_service_edit", "wrr", [4, 3, 2], 5, "", ["-E VS -s wrr -b flag-1"], 11)
    add("rr_service_edit", "rr", [1, 1, 1], 2, "", ["-E VS -s rr"], 4)
    add("rr_to_wrr", "rr", [3, 1, 2], 2, "", ["-E VS -s wrr"], 12)
    add("rr_readded", "rr", [1, 1, 1, 1], 2, "",
        ["-d VS -r RS.3:80", "-a VS -r RS.3:80 -g -w 1"], 9)
    # Upper thresholds: a server is OVERLOADed once it holds that many connections.
    add("rr_thresholds", "rr", [1, 1, 1], 12, upper=[2, 0, 4])
    add("wrr_thresholds", "wrr", [4, 3, 2], 20, upper=[3, 5, 0])
    add("wrr_all_overloaded", "wrr", [2, 1], 8, upper=[2, 2])
    add("wlc_thresholds", "wlc", [1, 2, 3], 20, upper=[0, 3, 5])
    add("fo_thresholds", "fo", [1, 3, 2], 12, upper=[0, 4, 3])
    add("sh_fallback_thresholds", "sh", [1] * 4, 300, "sh-fallback", upper=[30, 0, 20, 0])
    add("mh_fallback_thresholds", "mh", [1] * 4, 300, "mh-fallback", upper=[30, 0, 20, 0])
    add("mh_thresholds", "mh", [1] * 4, 300, "", upper=[30, 0, 20, 0])
    add("lblc_thresholds", "lblc", [1, 2, 3], 20, upper=[0, 0, 2])
    add("lblcr_thresholds", "lblcr", [1, 2, 3], 20, upper=[0, 0, 2])
    add("nq_with_zero", "nq", [0, 1, 2], 30)
    add("sed_uneven", "sed", [1, 10], 40)
    # dh hashes the virtual address: one service per address, same three servers each.
    setup: list[str] = []
    first: list[Client] = []
    for i in range(1, 41):
        vip = f"10.4.0.{i}"
        setup.append(f"-A -t {vip}:80 -s dh")
        setup += [f"-a -t {vip}:80 -r 192.168.99.{j}:80 -g -w 1" for j in (1, 2, 3)]
        first.append((f"100.120.7.{i}", 41000 + i, vip))
    exps["dh"] = (setup, first, [], [])
    # IPv6: the address fold (XOR of the four words) before each hash.
    for m, (sched, weights, flags) in enumerate(
        (("mh", [1, 2, 1, 3, 1], ""), ("sh", [1, 2, 3], ""), ("mh", [1] * 4, "mh-port")), start=1
    ):
        vip = f"2001:db8:3:{m}::1"
        svc = f"-t [{vip}]:80"
        setup = [f"-A {svc} -s {sched}" + (f" -b {flags}" if flags else "")]
        setup += [f"-a {svc} -r [2001:db8:99:{m}::{i + 1}]:80 -g -w {w}"
                  for i, w in enumerate(weights)]
        first = [(f"2001:db8:100:{m}:{i * 7919 & 0xFFFF:x}::{i + 1:x}", 40000 + 3 * i, vip)
                 for i in range(150)]
        exps[f"{sched}_ipv6" + ("_port" if flags else "")] = (setup, first, [], [])
    setup, first = [], []
    for i in range(1, 21):
        vip = f"2001:db8:4::{i:x}:1"
        setup.append(f"-A -t [{vip}]:80 -s dh")
        setup += [f"-a -t [{vip}]:80 -r [2001:db8:98::{j}]:80 -g -w 1" for j in (1, 2, 3)]
        first.append((f"2001:db8:120::{i:x}", 41000 + i, vip))
    exps["dh_ipv6"] = (setup, first, [], [])
    return exps


EXPERIMENTS = _experiments()

GUEST = r'''
import json, pickle, socket, struct, subprocess, sys, time

exps = json.load(open(sys.argv[1]))

def sh(cmd, stdin=None):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, input=stdin)
    if r.returncode:
        raise SystemExit(f"{cmd}: rc={r.returncode} {r.stderr}")
    return r.stdout

def csum(b):
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def syn(src, dst, sport):
    if ":" in dst:
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
        c = csum(s + d + struct.pack("!IxxxB", len(tcp), 6) + tcp)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        return dst, struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, s, d) + tcp
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    c = csum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    return dst, struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, s, d) + tcp

SENDER = """
import pickle, socket, sys, time
s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
for dst, p in pickle.load(sys.stdin.buffer):
    (s6 if ":" in dst else s4).sendto(p, (dst, 0))
    time.sleep(0.0003)
"""

def send(clients):
    pk = pickle.dumps([syn(src, vip, sport) for src, sport, vip in clients])
    r = subprocess.run(["ip", "netns", "exec", "pylvs-cl", sys.executable, "-c", SENDER],
                       input=pk, capture_output=True)
    if r.returncode:
        raise SystemExit(r.stderr.decode())
    time.sleep(0.5)

sh("modprobe ip_vs")
for m in ("rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "fo", "ovf", "lblc", "lblcr"):
    sh(f"modprobe ip_vs_{m}")
sh("ip link set lo up; ip netns add pylvs-cl; ip link add vd type veth peer name vc")
sh("ip link set vc netns pylvs-cl; ip addr add 10.200.0.1/24 dev vd; ip link set vd up")
sh("ip netns exec pylvs-cl sh -c 'ip link set lo up; ip addr add 10.200.0.2/24 dev vc; "
   "ip link set vc up; ip route add default via 10.200.0.1'")
sh("sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.vd.rp_filter=0")
sh("ip route add 100.64.0.0/10 via 10.200.0.2; ip route add 192.168.0.0/16 dev vd")
sh("ip addr add 2001:db8:200::1/64 dev vd nodad")
sh("ip netns exec pylvs-cl sh -c 'ip addr add 2001:db8:200::2/64 dev vc nodad; "
   "ip -6 route add default via 2001:db8:200::1'")
sh("ip -6 route add 2001:db8:100::/40 via 2001:db8:200::2; ip -6 route add 2001:db8:98::/47 dev vd")
vips = sorted({c[2] for e in exps.values() for c in e[1] + e[3]})
sh("ip -batch -", "".join(f"address add {v}/{128 if ':' in v else 32} dev lo\n" for v in vips))
sh("ipvsadm -R", "".join(line + "\n" for e in exps.values() for line in e[0]))
send([c for e in exps.values() for c in e[1]])
sh("ipvsadm -R", "".join(line + "\n" for e in exps.values() for line in e[2]))
send([c for e in exps.values() for c in e[3]])
rows = []
for line in sh("ipvsadm -Lnc").splitlines()[2:]:
    f = line.split()
    rows.append([f[3], f[5]])
print(json.dumps({"conns": rows, "uname": sh("uname -r").strip()}))
'''


@pytest.fixture(scope="module")
def kernel_decisions() -> dict[str, str]:
    sys.path.insert(0, str(REPO / "vm"))
    try:
        import vmrun
    except ImportError as e:
        pytest.skip(f"no VM harness: {e}")
    try:
        vmrun.check_available()
        vmrun.guest_kernel()
    except vmrun.VMUnavailable as e:
        pytest.skip(f"no test VM: {e}")
    payload = json.dumps({k: list(v) for k, v in EXPERIMENTS.items()})
    python = REPO / ".venv" / "bin" / "python"
    script = (
        "cat > /tmp/pylvs-sched-guest.py <<'PYLVS_EOF'\n" + GUEST + "PYLVS_EOF\n"
        "cat > /tmp/pylvs-sched-exps.json <<'PYLVS_EOF'\n" + payload + "\nPYLVS_EOF\n"
        f"{python} /tmp/pylvs-sched-guest.py /tmp/pylvs-sched-exps.json\n"
    )
    r = vmrun.run_in_vm_full(script, timeout=600)
    if r.rc != 0:
        pytest.fail(f"guest failed rc={r.rc}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(r.stdout)
    return {src: dst for src, dst in out["conns"]}


def _key(vip: str) -> ServiceKey:
    return ServiceKey.inet(Protocol.TCP, vip.strip("[]"), 80)


def _endpoint(addr: str, port: int) -> str:
    """As ``ipvsadm -Lnc`` prints it."""
    return format_addr_port(ipaddress.ip_address(addr), port)


def _apply(t: IPVSTable, lines: list[str]) -> None:
    for line in lines:
        f = line.split()
        op, key = f[0], _key(f[2].rsplit(":", 1)[0])
        if op in ("-A", "-E"):
            flags = ServiceFlags.NONE
            if "-b" in f:
                for name in f[f.index("-b") + 1].split(","):
                    flags |= SCHED_FLAG_NAMES[name]
            spec = ServiceSpec(key, f[f.index("-s") + 1], flags)
            (t.add_service if op == "-A" else t.edit_service)(spec)
            continue
        addr, port = f[f.index("-r") + 1].rsplit(":", 1)
        addr = addr.strip("[]")
        if op == "-d":
            t.del_dest(key, ipaddress.ip_address(addr), int(port))
            continue
        upper = int(f[f.index("-x") + 1]) if "-x" in f else 0
        spec = DestSpec(ipaddress.ip_address(addr), int(port), weight=int(f[f.index("-w") + 1]),
                        u_threshold=upper)
        (t.add_dest if op == "-a" else t.edit_dest)(key, spec)


def _ours(exp: Experiment) -> dict[str, str]:
    setup, first, then, after = exp
    t = IPVSTable()
    _apply(t, setup)
    got: dict[str, str] = {}

    def run(clients: list[Client]) -> None:
        for src, sport, vip in clients:
            svc = t.lookup(_key(vip))
            assert svc is not None and svc.scheduler is not None
            d = svc.scheduler.schedule(ipaddress.ip_address(src).packed, sport,
                                       ipaddress.ip_address(vip).packed, 80, 0.0)
            if d is None:
                continue
            d.activeconns += 1  # the kernel's SYN_RECV entry counts as active
            if d.u_threshold and d.activeconns + d.inactconns >= d.u_threshold:
                d.flags |= DestFlags.OVERLOAD  # ip_vs_bind_dest
            if svc.scheduler.reads_conns:
                svc.scheduler.conns_changed(d)
            got[_endpoint(src, sport)] = format_addr_port(d.addr, d.port)

    run(first)
    _apply(t, then)
    run(after)
    return got


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_scheduler_decides_like_the_kernel(name: str, kernel_decisions: dict[str, str]) -> None:
    exp = EXPERIMENTS[name]
    clients = [_endpoint(s, p) for s, p, _ in exp[1] + exp[3]]
    kernel = {c: kernel_decisions[c] for c in clients if c in kernel_decisions}
    ours = _ours(exp)
    assert kernel, "the kernel scheduled none of the clients"
    wrong = [(c, kernel.get(c), ours.get(c)) for c in clients if kernel.get(c) != ours.get(c)]
    assert not wrong, f"{len(wrong)} of {len(clients)} differ (client, kernel, ours): {wrong[:5]}"
