"""The seed's cluster, live, in network namespaces: DR with a VRRP failover, then NAT and TUN.

What this shows, with real packets between real network stacks (``pylvs.lab``):
1. DR, as the seed sets it up: the real servers get the VIP on ``lo`` and the ARP sysctls
   (``pylvs rs-setup``), two directors run VRRP (``pylvs keepalived``) for the VIP and the
   ``packet`` data plane, and the seed's ipvsadm commands program them through ``pylvsadm``.
   The client's requests alternate "this is nginx1" / "this is nginx2".
2. Failover: the master director's LAN link goes down; the backup takes the VIP within
   Master_Down_Interval and keeps serving; the link comes back and the master preempts. The
   directors run the connection sync daemons (``pylvsadm --start-daemon``), so one keep-alive
   connection opened through the master is answered by the backup after the failover.
3. NAT (real servers on a private network behind the director) and TUN (IP-in-IP to the real
   servers, decapsulated by ``pylvs rs-setup --mode tun``), each with the same client traffic.

While act 1 runs, the demo prints where to watch it live: ``pylvs top`` over the directors'
control sockets, and the status page and Prometheus metrics that each director's ``pylvs
keepalived`` serves (``--status-address``, ``--metrics-address``) inside its namespace.

What this is not: a test. The suite checks each of these behaviours; this prints them for a person.
Needs root (namespaces, raw sockets); ``make demo`` falls back to the loopback demo without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from pylvs.dataplane.xdp.loader import XdpProgram, XdpUnavailable
from pylvs.lab import VIP, Lab
from pylvs.lab.clients import KEEPALIVE_CLIENT
from pylvs.lab.lvs import LVSCluster

console = Console(highlight=False)
PY = sys.executable
# where each director's pylvs keepalived serves its metrics and status page (pylvs.metrics), on
# the loopback of its own namespace
OBSERVE = "127.0.0.1:9100"
VRRP_CONF = """global_defs {{
    router_id {name}
}}
vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass 1111
    }}
    virtual_ipaddress {{
        {vip}/24 dev eth0 label eth0:0
    }}
}}
"""


def best_plane() -> tuple[str, str]:
    """The fastest data plane this host can run for real packets, and why."""
    try:
        XdpProgram().close()
    except XdpUnavailable as exc:
        return "packet", f"AF_PACKET rings with the C fast path (no XDP here: {exc})"
    return "xdp", "an XDP program forwards established flows; the packet plane decides new ones"


class LabDemo:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.plane, self.plane_why = best_plane()
        self.procs: list[subprocess.Popen[Any]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="pylvs-labdemo-"))

    # ---- helpers -------------------------------------------------------------------------

    def say(self, host: str, cmd: str) -> None:
        console.print(f"[bold blue]{host}[/]# [bold]{cmd}[/]")

    def run(self, host: str, argv: list[str], show: str | None = None, echo: bool = True) -> str:
        if show is not None:
            self.say(host, show)
        res = self.lab.run(host, argv, timeout=60)
        if echo and res.stdout.strip():
            console.print(res.stdout.rstrip("\n"), markup=False)
        if res.returncode != 0:
            raise RuntimeError(f"{host}: {' '.join(argv)} failed: {res.stderr.strip()}")
        return res.stdout

    def start(self, host: str, argv: list[str], log: str) -> subprocess.Popen[Any]:
        f = open(self.tmp / log, "w")  # noqa: SIM115 - the file lives as long as the process
        p = self.lab.popen(host, argv, stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, cond: Any, what: str, timeout: float = 30) -> float:
        t0 = time.monotonic()
        while not cond():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def stop(self, p: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()

    def sock(self, host: str) -> str:
        return str(self.tmp / f"{host}.sock")

    def adm(self, host: str, args: str, echo: bool = True) -> str:
        if echo:
            self.say(host, f"pylvsadm {args}")
        env = dict(os.environ, PYLVS_CONTROL_SOCKET=self.sock(host))
        res = subprocess.run([PY, "-m", "pylvs.cli.ipvsadm", *args.split()], env=env,
                             capture_output=True, text=True, timeout=30)
        if echo and res.stdout:
            console.print(res.stdout.rstrip("\n"), markup=False)
        if res.returncode:
            raise RuntimeError(f"pylvsadm {args}: {res.stderr.strip()}")
        return res.stdout

    def packet_director(self, host: str) -> None:
        """Start the best packet data plane the machine allows (xdp, else packet) on ``host``'s
        LAN interface, leaving ARP for the VIP to the VRRP router (only the master may answer
        for it)."""
        log = f"{host}-director.log"
        self.start(host, [PY, "-m", "pylvs.director.serve_packet", "--control-socket",
                          self.sock(host), "--interfaces", "eth0", "--no-arp",
                          "--dataplane", self.plane], log)
        self.wait(lambda: "director ready" in self.log(log), f"the {self.plane} director on {host}")

    def has_vip(self, host: str) -> bool:
        out = self.lab.run(host, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], timeout=10).stdout
        return f" {VIP}/" in out

    def curl(self, n: int, title: str) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):
            res = self.lab.run("client", ["curl", "-sS", "--max-time", "3", f"http://{VIP}/"], timeout=15)
            seen[res.stdout.strip() if res.returncode == 0 else f"failed: {res.stderr.strip()[:40]}"] += 1
        table = Table(title=title, title_justify="left")
        table.add_column("answer")
        table.add_column("requests", justify="right")
        table.add_column("")
        for answer, count in sorted(seen.items()):
            table.add_row(answer, str(count), "[cyan]" + "█" * round(30 * count / n) + "[/]")
        console.print(table)
        return seen

    def where_to_look(self) -> None:
        """How a person watches the directors while the demo runs: ``pylvs top`` over the VRRP
        router's control socket and ``pylvsadm`` over the packet director's (plain files here,
        so from the host), and the VRRP routers' status page and metrics, which listen on
        127.0.0.1 inside each director's namespace. (The packet director of this demo,
        ``pylvs.director.serve_packet``, does not answer ``pylvs top``'s ``observe`` yet.)"""
        lines = [
            "[bold]Watch it live[/] (in another terminal, while the demo runs):",
            f"  live view:     PYLVS_CONTROL_SOCKET={self.sock('director-vrrp')} pylvs top",
            f"  the table:     PYLVS_CONTROL_SOCKET={self.sock('director')} watch -n1 pylvsadm -Ln --rate",
        ]
        for host in ("director", "backup"):
            ns = self.lab.ns(host)
            lines.append(f"  {host} status: ip netns exec {ns} curl -s http://{OBSERVE}/status.json")
        ns = self.lab.ns("director")
        lines += [
            f"  status page:   ip netns exec {ns} curl -s http://{OBSERVE}/status  (HTML)",
            f"  metrics:       ip netns exec {ns} curl -s http://{OBSERVE}/metrics",
        ]
        for line in lines:
            console.print(line, soft_wrap=True)

    # ---- the acts ------------------------------------------------------------------------

    def dr_with_failover(self) -> bool:
        console.rule("[bold]1. direct routing (DR), the seed's setup")
        console.print(f"Data plane: [bold]{self.plane}[/] ({self.plane_why})")
        console.print("Real servers: VIP on lo, answer ARP only for their own address (SPEC §1.1)")
        for rs in ("rs1", "rs2"):
            self.run(rs, [PY, "-m", "pylvs.cli.main", "rs-setup", "--vip", VIP, "--mode", "dr"],
                     show=f"pylvs rs-setup --vip {VIP} --mode dr", echo=False)
        self.run("rs1", ["ip", "-o", "addr", "show", "dev", "lo"], show="ip -o addr show dev lo")
        console.print("Directors: no IP forwarding, no redirects; VRRP holds the VIP")
        for host, state, prio in (("director", "MASTER", 100), ("backup", "BACKUP", 90)):
            for key in ("net.ipv4.ip_forward=0", "net.ipv4.conf.all.send_redirects=0",
                        "net.ipv4.conf.eth0.send_redirects=0"):
                self.run(host, ["sysctl", "-q", "-w", key], echo=False)
            conf = self.tmp / f"{host}-keepalived.conf"
            conf.write_text(VRRP_CONF.format(name=host, state=state, priority=prio, vip=VIP))
            self.start(host, [PY, "-m", "pylvs.cli.main", "keepalived", "-n", "-l", "-f", str(conf),
                              "--control-socket", self.sock(f"{host}-vrrp"),
                              "--metrics-address", OBSERVE, "--status-address", OBSERVE],
                       f"{host}-vrrp.log")
            self.packet_director(host)
        self.say("director", "pylvs keepalived -f keepalived.conf   (priority 100; backup: 90)")
        took = self.wait(lambda: self.has_vip("director"), "the master to take the VIP")
        console.print(f"[green]director is MASTER[/]: it holds {VIP} on eth0:0 after {took:.1f} s")
        for host in ("director", "backup"):
            echo = host == "director"
            if not echo:
                console.print("[dim]the backup director gets the same table[/]")
            self.adm(host, f"-A -t {VIP}:80 -s rr", echo)
            self.adm(host, f"-a -t {VIP}:80 -r 192.168.168.10:80 -g", echo)
            self.adm(host, f"-a -t {VIP}:80 -r 192.168.168.20:80 -g", echo)
        self.adm("director", "-ln")
        self.where_to_look()
        rr = self.curl(20, f"client: 20 x curl http://{VIP}/ (rr, DR)")
        self.adm("director", "-Ln --stats")
        self.adm("director", "-Lnc")
        console.print("Connection sync: the master multicasts its connections to the backup")
        self.adm("director", "--start-daemon master --mcast-interface eth0")
        self.adm("backup", "--start-daemon backup --mcast-interface eth0")
        self.adm("backup", "-L --daemon")

        console.rule("[bold]2. failover: the master director loses its LAN link")
        trigger, kept = self.tmp / "ask-again", self.tmp / "keepalive.out"
        self.start("client", [PY, "-c", KEEPALIVE_CLIENT, f"{VIP}", str(trigger), str(kept)],
                   "keepalive.log")
        self.wait(lambda: kept.exists() and kept.read_text().endswith("\n"),
                  "the keep-alive client's first answer")
        port, first = kept.read_text().split("\n")[0].split(" ", 1)
        console.print(f"client: one keep-alive connection (port {port}) asked once: {first}")
        self.wait(lambda: f":{port} " in self.adm("backup", "-Lnc", echo=False),
                  "the connection to reach the backup", timeout=10)
        self.adm("backup", "-Lnc")
        probe = self.start("client", [PY, "-c", _PROBE, f"http://{VIP}/", "15"], "probe.log")
        time.sleep(1.0)
        self.run("director", ["ip", "link", "set", "eth0", "down"], show="ip link set eth0 down")
        took = self.wait(lambda: self.has_vip("backup"), "the backup to take the VIP")
        console.print(f"[green]backup is MASTER[/] after {took:.1f} s (3 x advert_int + skew)")
        trigger.write_text("go")
        self.wait(lambda: kept.read_text().count("\n") >= 2, "the keep-alive client's second answer")
        second = kept.read_text().split("\n")[1]
        survived = second == first
        console.print(
            f"client: the same connection asked again through the backup: {second} "
            + ("[green](it survived the failover: the backup knew it from the sync)[/]" if survived
               else "[red](lost)[/]"))
        time.sleep(2)
        self.run("director", ["ip", "link", "set", "eth0", "up"], show="ip link set eth0 up")
        back = self.wait(lambda: self.has_vip("director") and not self.has_vip("backup"),
                         "the master to preempt", timeout=40)
        console.print(f"[green]director preempted[/]: VIP back on the master {back:.1f} s after its link returned")
        probe.wait(60)
        results = [ln.split() for ln in self.log("probe.log").splitlines() if ln.strip()]
        ok = sum(1 for r in results if r[1] == "ok")
        failed = [float(r[0]) for r in results if r[1] != "ok"]
        when = ", ".join(f"{t:.1f}" for t in failed)
        console.print(
            f"client probe (a request every 0.25 s, link down at 1 s): {ok} of {len(results)} "
            f"answered; {len(failed)} failed while the VIP moved" + (f", at t = {when} s" if failed else "")
        )
        self.stop_all()
        for rs in ("rs1", "rs2"):
            self.run(rs, [PY, "-m", "pylvs.cli.main", "rs-setup", "--vip", VIP, "--mode", "dr", "--undo"],
                     echo=False)
        # every request after the master is back must be answered again
        recovered = len(results) >= 5 and all(r[1] == "ok" for r in results[-5:])
        if not recovered:
            console.print("[red]the client is not served again after the master came back[/]")
        return rr["this is nginx1"] == rr["this is nginx2"] == 10 and recovered and survived

    def other_mode(self, mode: str, title: str, note: str) -> bool:
        """NAT or TUN: the lab's ready-made cluster for the mode, administered as in the seed."""
        console.rule(f"[bold]{title}")
        console.print(note)
        with LVSCluster(self.lab, mode, dataplane=self.plane) as cluster:
            for rs in cluster.real_servers if mode == "tun" else ():
                self.say(rs, f"pylvs rs-setup --vip {VIP} --mode tun")
            for args in (f"-A -t {VIP}:80 -s rr",
                         *(f"-a -t {VIP}:80 -r {rip}:80 {cluster.flag}" for rip in cluster.rips)):
                self.say("director", f"pylvsadm {args}")
                cluster.ipvsadm(*args.split())
            seen = self.curl(10, f"client: 10 x curl ({mode.upper()})")
            self.say("director", "pylvsadm -Ln --stats")
            console.print(cluster.ipvsadm("-Ln", "--stats").rstrip("\n"), markup=False)
        return seen["this is nginx1"] == seen["this is nginx2"] == 5


# A client that asks the VIP every 0.25 s and writes "t ok|fail" per request.
_PROBE = r"""
import sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
t0 = time.monotonic()
while time.monotonic() - t0 < seconds:
    t = time.monotonic() - t0
    try:
        urllib.request.urlopen(url, timeout=1).read()
        print(f"{t:.2f} ok", flush=True)
    except Exception as exc:
        print(f"{t:.2f} fail {type(exc).__name__}", flush=True)
    time.sleep(0.25)
"""


@contextlib.contextmanager
def _lab() -> Iterator[Lab]:
    lab = Lab(f"demo{os.getpid() % 1000}")
    with console.status("building the lab: namespaces, veths, bridges, nginx on the real servers"):
        lab.up()
    try:
        yield lab
    finally:
        lab.down()


def main() -> int:
    console.print(Panel.fit(
        "[bold]pylvs lab demo[/]: the seed's LVS cluster in network namespaces\n"
        f"client .60 -> VIP {VIP} (directors .50 MASTER / .51 BACKUP, VRRP) -> RS1 .10 / RS2 .20 (nginx)\n"
        "NAT: RSs 10.168.0.10/.20 behind the director",
        border_style="blue",
    ))
    with _lab() as lab:
        demo = LabDemo(lab)
        try:
            results = {
                "DR + failover": demo.dr_with_failover(),
                "NAT": demo.other_mode(
                    "nat", "3. NAT: real servers on a private network, the director as their gateway",
                    "nat1 10.168.0.10 / nat2 10.168.0.20 route through the director; replies come back through it"),
                "TUN": demo.other_mode(
                    "tun", "4. TUN: IP-in-IP to the real servers, which answer the client directly",
                    "the real servers decapsulate IPIP (pylvs rs-setup --mode tun) and answer from the VIP"),
            }
        finally:
            demo.stop_all()
        if all(results.values()):
            shutil.rmtree(demo.tmp, ignore_errors=True)
        else:
            console.print(f"logs of every process are kept in {demo.tmp}")
    summary = Table(title="summary")
    summary.add_column("act")
    summary.add_column("result")
    for act, ok in results.items():
        summary.add_row(act, "[green]as expected[/]" if ok else "[red]unexpected[/]")
    console.print(summary)
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
