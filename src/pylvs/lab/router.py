"""The lab's scale-out part: a router spreading flows by ECMP over N active directors, each
announcing the VIP over BGP while it can serve it (``pylvs lab up --ecmp --directors N``).

What this is for: issue #20's cluster as real Linux stacks. The router runs BIRD 2 (Debian's
``bird2``): one eBGP session per director (hold 3 s, keepalive 1 s, BFD), every director's route
to the VIP merged into one multipath kernel route (``merge paths``), and the kernel hashing
flows on their 5-tuple (``fib_multipath_hash_policy=1``) so connections from one client spread.
Each director runs the packet data plane (DR, ``mh`` with ``mh-port``, ``sloppy_tcp`` on) and
``pylvs scaleout run`` with BIRD as its speaker. The client reaches the VIP through the router;
the real servers answer it directly (DR), through the router's leg on the LAN.

With another scheduler (``rr``, ``wlc``...) no table is shared by construction, so the directors
share their connections instead (``sync``): each runs the IPVS sync daemons as master *and*
backup on one group over the fabric (``pylvsadm --start-daemon master|backup --mcast-interface
eth0``), so a flow the router moves to another director finds the entry there (sloppy_tcp off:
it would reschedule, not find). They re-send live entries by time (``SYNC_REFRESH``), so a
director that joins later learns the connections opened before it, and its ``pylvs scaleout``
holds its first announcement until it can have heard one such cycle (``announce_delay auto``).

It is kept apart from the seed's single-LAN lab: new hosts, new segments, a VIP of its own, so
the existing hosts and addresses do not change (rs1/rs2 only gain the VIP on lo and a route to
the client's edge network)::

    edge    10.169.0.0/24   client eth1 .60          router eth0 .1
    fabric  10.170.0.0/24   router eth1 .1           dirK eth0 .1K (K = 1..4)
    LAN     192.168.168/24  router eth2 .1           dirK eth1 .7K    rs1 .10  rs2 .20
    VIP     10.171.0.100 (announced as a /32 by every healthy director)

What this is not for: the seed's director pair and VRRP (``topology``, ``lvs``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

from pylvs.control.client import ControlClient
from pylvs.core.api import IPVSError, SyncDaemonStatus
from pylvs.core.model import DestSpec, ForwardingMethod, ServiceFlags, ServiceKey, ServiceSpec
from pylvs.lab.topology import HOSTS_BY_NAME, HostSpec, Lab, LabError, Link

ECMP_VIP = "10.171.0.100"
EDGE_NET, FABRIC_NET = "10.169.0.0/24", "10.170.0.0/24"
ROUTER_EDGE, ROUTER_FABRIC, ROUTER_LAN = "10.169.0.1", "10.170.0.1", "192.168.168.1"
CLIENT_EDGE = "10.169.0.60"
ROUTER_AS, DIRECTOR_AS = 65000, 65001
HOLD_TIME = 3
MAX_DIRECTORS = 4
REAL_SERVERS = ("rs1", "rs2")
ECHO_PORT = 9000
PORTS = (80, ECHO_PORT)  # the lab's HTTP servers, and the echo servers of the long-lived test
SETUP = [sys.executable, "-m", "pylvs.hostsetup.cli"]
SYNC_INTERFACE, SYNC_ID = "eth0", 0  # the fabric: directors and the router only
# net.ipv4.vs.sync_refresh_period on every synced director, seconds (with sync_threshold "0 0":
# time alone decides). Why set it: with the kernel's default rule ("3 50": again every 50
# packets in) a slow flow is re-sent only every few tens of seconds, so a director that joins
# does not know it when the router moves it there (bench_scaleout: 99 of 300 long-lived
# connections broke on a join; 0 of 300 with 1 s). Why 1 s: the joining director's announcer
# then waits 1 s + the senders' 2 s flush + 1 s (policy.refresh_wait), and each live entry
# costs one sync entry a second, which the lab's few hundred flows do not notice (about 4.5
# times the re-sent entries of the packet rule in that benchmark). 0 keeps the kernel's rule.
SYNC_REFRESH = 1
# each director's announcer serves /metrics, /status and /status.json on its own namespace's
# loopback: pylvs lab exec dir1 -- curl -s 127.0.0.1:9180/status.json
STATUS_ADDRESS = "127.0.0.1:9180"


def director_name(k: int) -> str:
    return f"dir{k}"


def director_addr(k: int) -> str:
    return f"10.170.0.{10 + k}"


def ecmp_hosts(n: int) -> dict[str, HostSpec]:
    """The seed's hosts plus the router and ``n`` directors (the client gains an edge leg)."""
    if not 1 <= n <= MAX_DIRECTORS:
        raise LabError(f"--directors {n}: use 1 to {MAX_DIRECTORS}")
    hosts = dict(HOSTS_BY_NAME)
    client = hosts["client"]
    hosts["client"] = HostSpec(client.name, (*client.links,
                                             Link("eth1", "edge", CLIENT_EDGE, "fd00:169::60")))
    hosts["router"] = HostSpec("router", (
        Link("eth0", "edge", ROUTER_EDGE, "fd00:169::1"),
        Link("eth1", "fabric", ROUTER_FABRIC, "fd00:170::1"),
        Link("eth2", "lan", ROUTER_LAN)))
    for k in range(1, n + 1):
        hosts[director_name(k)] = HostSpec(director_name(k), (
            Link("eth0", "fabric", director_addr(k), f"fd00:170::{10 + k}"),
            Link("eth1", "lan", f"192.168.168.{70 + k}")))
    return hosts


def ecmp_directors(lab_id: str) -> int:
    """How many directors the ECMP lab ``lab_id`` has now (0: not an ECMP lab)."""
    lab = Lab(lab_id, use_nginx=False)
    names = set(lab.namespaces())
    if lab.prefix + "router" not in names:
        return 0
    return sum(1 for k in range(1, MAX_DIRECTORS + 1) if lab.prefix + director_name(k) in names)


def router_bird_conf(n: int, log_path: str, bfd: bool = True) -> str:
    """The router's BIRD: a session per possible director (``n`` are started now, the others
    may be added later), their routes merged into one ECMP route."""
    lines = [
        f"router id {ROUTER_FABRIC};",
        f'log "{log_path}" all;',
        "protocol device { scan time 10; }",
        # every equal BGP route to a prefix becomes one next hop of one kernel route
        "protocol kernel { ipv4 { import none; export all; }; merge paths on limit 16; }",
    ]
    if bfd:
        lines.append("protocol bfd { interface \"eth1\" { min rx interval 100 ms; "
                     "min tx interval 100 ms; multiplier 5; }; }")
    lines.append(
        f"template bgp directors {{ local {ROUTER_FABRIC} as {ROUTER_AS}; hold time {HOLD_TIME}; "
        "keepalive time 1; connect retry time 1; error wait time 1, 10; "
        + ("bfd on; " if bfd else "")
        + "ipv4 { import where net ~ [ 10.171.0.0/24{32,32} ]; export none; }; }")
    for k in range(1, max(n, MAX_DIRECTORS) + 1):  # room for directors added later
        lines.append(f"protocol bgp {director_name(k)} from directors "
                     f"{{ neighbor {director_addr(k)} as {DIRECTOR_AS}; }}")
    return "\n".join(lines) + "\n"


def speaker_conf(k: int, bfd: bool = True) -> str:
    """Director ``k``'s ``pylvs_bgp`` block."""
    return (
        "pylvs_bgp {\n"
        f"    router_id {director_addr(k)}\n"
        f"    local_as {DIRECTOR_AS}\n"
        f"    neighbor {ROUTER_FABRIC} {{\n"
        f"        remote_as {ROUTER_AS}\n"
        f"        source_address {director_addr(k)}\n"
        f"        hold_time {HOLD_TIME}\n"
        "        keepalive_time 1\n"
        "        connect_retry 1\n"
        + ("        bfd\n" if bfd else "")
        + "    }\n"
        f"    vip {ECMP_VIP}\n"
        "    withdraw_wait 1\n"
        "    poll_interval 0.5\n"
        "}\n")


def next_hops(lab: Lab, vip: str = ECMP_VIP) -> list[str]:
    """The router's next hops for ``vip`` (``ip route show VIP``), in the kernel's order."""
    r = lab.run("router", ["ip", "-4", "route", "show", vip], timeout=10)
    hops: list[str] = []
    for line in r.stdout.splitlines():
        words = line.split()
        if "via" in words:
            hops.append(words[words.index("via") + 1])
    return hops


class ECMPCluster:
    """The router and N directors of an ECMP lab: started, changed, stopped."""

    def __init__(self, lab: Lab, n: int, scheduler: str = "mh", bfd: bool = True,
                 sloppy: bool = True, sync: bool = False,
                 sync_refresh: int = SYNC_REFRESH) -> None:
        """``sync_refresh``: with ``sync``, the directors' sync_refresh_period (see
        ``SYNC_REFRESH``; 0 keeps the kernel's packet-count rule)."""
        if n < 1 or n > MAX_DIRECTORS:
            raise LabError(f"--directors {n}: use 1 to {MAX_DIRECTORS}")
        self.lab = lab
        self.n = n
        self.scheduler = scheduler
        self.bfd = bfd
        self.sloppy = sloppy
        self.sync = sync
        self.sync_refresh = sync_refresh
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.router_sock = str(lab.state_dir / "router-bird.ctl")

    # -- paths ---------------------------------------------------------------------------------
    def control_socket(self, k: int) -> str:
        return str(self.lab.state_dir / f"{director_name(k)}-ctl.sock")

    def speaker_socket(self, k: int) -> str:
        return str(self.lab.state_dir / f"{director_name(k)}-scaleout.sock")

    def log_text(self, name: str) -> str:
        try:
            return (self.lab.state_dir / name).read_text(errors="replace")
        except OSError:
            return ""

    def _popen(self, host: str, key: str, argv: list[str], marker: str, what: str) -> None:
        log_name = f"{key}.log"
        with open(self.lab.state_dir / log_name, "w") as log:
            p = self.lab.popen(host, argv, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
        self.procs[key] = p
        deadline = time.monotonic() + 30
        while marker not in self.log_text(log_name):
            if p.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"{what} did not start: {self.log_text(log_name)[-800:]}")
            time.sleep(0.05)

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        lab = self.lab
        for rs in REAL_SERVERS:
            r = lab.run(rs, [*SETUP, "rs-setup", "--vip", ECMP_VIP, "--mode", "dr"])
            if r.returncode != 0:
                raise LabError(f"rs-setup on {rs}: {r.stderr.strip()}")
            lab.run(rs, ["ip", "route", "replace", EDGE_NET, "via", ROUTER_LAN], check=True)
        lab.run("client", ["ip", "route", "replace", "10.171.0.0/24", "via", ROUTER_EDGE],
                check=True)
        # The router's multipath hash of a forwarded packet is the flow hash the client's socket
        # set (a veth keeps it), and Linux gives a socket a new one after a retransmission
        # timeout (net.core.txrehash): a flow stalled on a director without its entry would then
        # hop to another next hop and heal itself, which a real router hashing the headers never
        # does. Off, a flow keeps its path, as through a real router, and what breaks is seen.
        lab.run("client", ["sysctl", "-qw", "net.core.txrehash=0"], check=True)
        lab.run("router", ["sh", "-c", "sysctl -qw net.ipv4.ip_forward=1 "
                           "net.ipv4.fib_multipath_hash_policy=1 net.ipv4.conf.all.rp_filter=0 "
                           "net.ipv4.conf.default.rp_filter=0; for i in eth0 eth1 eth2; do "
                           "sysctl -qw net.ipv4.conf.$i.rp_filter=0; done"], check=True)
        conf = lab.state_dir / "router-bird.conf"
        conf.write_text(router_bird_conf(self.n, str(lab.state_dir / "router-bird.log"), self.bfd))
        r = lab.run("router", ["bird", "-c", str(conf), "-s", self.router_sock,
                               "-P", str(lab.state_dir / "router-bird.pid")])
        if r.returncode != 0:
            raise LabError(f"BIRD on the router did not start: {r.stderr.strip()}")
        for k in range(1, self.n + 1):
            self.start_director(k)

    def start_director(self, k: int) -> None:
        """Director ``k``: the packet data plane with the VIP's service, then its speaker."""
        host = director_name(k)
        sock = self.control_socket(k)
        self._popen(host, f"{host}-director",
                    [sys.executable, "-m", "pylvs.director.serve_packet", "--control-socket",
                     sock, "--interfaces", "eth0,eth1", "--no-arp"],
                    "director ready", f"the packet director on {host}")
        flags = ServiceFlags.SCHED2 if self.scheduler == "mh" else ServiceFlags.NONE  # mh-port
        try:
            self._program(sock, flags)
        except IPVSError as exc:  # e.g. an unknown scheduler: one line, not a traceback
            raise LabError(f"director {host}: {exc}") from None
        conf = self.lab.state_dir / f"{host}-bgp.conf"
        conf.write_text(speaker_conf(k, self.bfd))
        self._popen(host, f"{host}-scaleout",
                    [sys.executable, "-m", "pylvs.cli.main", "scaleout", "run", "--config",
                     str(conf), "--control-socket", sock, "--socket", self.speaker_socket(k),
                     "--run-dir", str(self.lab.state_dir / f"{host}-bird"),
                     "--metrics-address", STATUS_ADDRESS, "--status-address", STATUS_ADDRESS],
                    "BIRD started", f"pylvs scaleout on {host}")

    def _program(self, sock: str, flags: ServiceFlags) -> None:
        """The VIP's services on one director, its sloppy_tcp, and (``sync``) its daemons."""
        with ControlClient(sock) as c:
            for port in PORTS:
                key = ServiceKey.inet(6, ECMP_VIP, port)
                c.add_service(ServiceSpec(key, self.scheduler, flags))
                for rs in REAL_SERVERS:
                    c.add_dest(key, DestSpec(ipaddress.ip_address(self.lab.addr(rs)), port,
                                             ForwardingMethod.DROUTE, 1))
            c.set_sysctl({"sloppy_tcp": 1 if self.sloppy else 0})
            if self.sync and self.sync_refresh > 0:  # before the daemons: their first look
                c.set_sysctl({"sync_threshold": [0, 0], "sync_refresh_period": self.sync_refresh})
            if self.sync:
                # every director both master and backup on one group (syncid 0: any): what one
                # director schedules, the others learn, so a flow the router moves finds its entry
                for state in ("master", "backup"):
                    c.start_daemon(SyncDaemonStatus(state, SYNC_INTERFACE, SYNC_ID))

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process of this cluster (``dir2-director``, ``dir2-scaleout``)."""
        p = self.procs.get(key)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)

    def wait_next_hops(self, want: set[str], timeout: float = 20.0) -> float:
        """Seconds until the router's next hops for the VIP are exactly ``want``."""
        t0 = time.monotonic()
        while set(next_hops(self.lab)) != want:
            if time.monotonic() - t0 > timeout:
                raise LabError(f"router next hops {next_hops(self.lab)}, wanted {sorted(want)}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def detach(self) -> None:
        """Leave everything running (``pylvs lab up --ecmp``): ``Lab.down`` ends it."""
        self.procs.clear()

    def stop(self) -> None:
        """End what this cluster started (the router's BIRD goes with the lab's namespaces)."""
        for key in list(self.procs):
            self.kill(key, signal.SIGTERM)
        self.procs.clear()
        pid_file = self.lab.state_dir / "router-bird.pid"
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def router_status(lab: Lab) -> list[str]:
    """Lines for ``pylvs lab status``: the router's ECMP next hops and BGP sessions."""
    hops = next_hops(lab)
    out = [f"router: {ECMP_VIP} via " + (", ".join(hops) if hops else "nothing (no route)")]
    sock = str(lab.state_dir / "router-bird.ctl")
    r = lab.run("router", ["birdc", "-s", sock, "show", "protocols"], timeout=10)
    for line in r.stdout.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1] == "BGP":
            out.append(f"  BGP {words[0]}: {' '.join(words[5:]) or words[3]}")
    return out


# -- long-lived connections: what survives a director going or coming --------------------------


async def _echo_server(port: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "0.0.0.0", port, reuse_address=True)
    print("echo ready", flush=True)
    async with server:
        await server.serve_forever()


async def _hold(vip: str, echo: int, http: int, seconds: float, interval: float,
                timeout: float, progress: float = 0.0) -> dict[str, Any]:
    """``echo`` streaming connections (random bytes, each echo checked byte for byte) and
    ``http`` keep-alive HTTP connections, each used every ``interval`` s for ``seconds`` s; a
    connection that errs, stalls past ``timeout`` or gets other bytes back is broken. With
    ``progress``, a line ``progress {JSON}`` every ``progress`` s: connections open (connected,
    not broken, not yet finished), broken so far, exchanges so far (the demo's live counts)."""
    start = time.monotonic()
    end = start + seconds
    result: dict[str, Any] = {"echo_ok": 0, "echo_broken": 0, "http_ok": 0, "http_broken": 0,
                              "bytes": 0, "requests": 0, "errors": []}
    live = {"open": 0, "exchanges": 0}

    async def one_echo(i: int) -> None:
        rng = random.Random(i)
        connected = False
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(vip, ECHO_PORT)
            live["open"] += 1
            connected = True
            while time.monotonic() < end:
                chunk = rng.randbytes(rng.randrange(1, 4000))
                writer.write(chunk)
                async with asyncio.timeout(timeout):
                    got = await reader.readexactly(len(chunk))
                if got != chunk:
                    raise ValueError("echo differs")
                result["bytes"] += len(chunk)
                live["exchanges"] += 1
                await asyncio.sleep(interval)
            writer.close()
            live["open"] -= 1
            result["echo_ok"] += 1
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            live["open"] -= connected
            result["echo_broken"] += 1
            result["errors"].append(f"echo {i}: {type(exc).__name__} {exc}")

    async def one_http(i: int) -> None:
        connected = False
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(vip, 80)
            live["open"] += 1
            connected = True
            server = None
            while time.monotonic() < end:
                writer.write(f"GET /?c={i} HTTP/1.1\r\nHost: {vip}\r\n\r\n".encode())
                async with asyncio.timeout(timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                async with asyncio.timeout(timeout):
                    body = await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200") or (server and body != server):
                    raise ValueError(f"answer changed: {head[:40]!r} {body!r}")
                server = body  # the same real server for the whole connection
                result["requests"] += 1
                live["exchanges"] += 1
                await asyncio.sleep(interval)
            writer.close()
            live["open"] -= 1
            result["http_ok"] += 1
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
            live["open"] -= connected
            result["http_broken"] += 1
            result["errors"].append(f"http {i}: {type(exc).__name__} {exc}")

    async def report() -> None:
        while True:
            await asyncio.sleep(progress)
            broken = result["echo_broken"] + result["http_broken"]
            print("progress " + json.dumps({"t": round(time.monotonic() - start, 1),
                                            "open": live["open"], "broken": broken,
                                            "exchanges": live["exchanges"]}), flush=True)

    reporter = asyncio.create_task(report()) if progress > 0 else None
    await asyncio.gather(*(one_echo(i) for i in range(echo)),
                         *(one_http(i) for i in range(http)))
    if reporter is not None:
        reporter.cancel()
    result["errors"] = result["errors"][:10]
    return result


async def _churn(vip: str, rate: float, seconds: float, timeout: float) -> dict[str, Any]:
    """New connections at ``rate`` per second for ``seconds``: one HTTP GET each."""
    result: dict[str, Any] = {"ok": 0, "failed": 0, "errors": []}

    async def one() -> None:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(vip, 80)
            writer.write(f"GET / HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n".encode())
            async with asyncio.timeout(timeout):
                data = await reader.read()
            writer.close()
            if not data.startswith(b"HTTP/1.1 200"):
                raise ValueError(f"answer {data[:30]!r}")
            result["ok"] += 1
        except (OSError, ValueError, TimeoutError) as exc:
            result["failed"] += 1
            result["errors"].append(f"{type(exc).__name__} {exc}")

    tasks = []
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        tasks.append(asyncio.create_task(one()))
        i += 1
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    result["errors"] = result["errors"][:10]
    return result


async def _open(vip: str, count: int, spacing: float) -> None:
    """``count`` connections to ``vip``:80, ``spacing`` s apart, each printed as ``PORT TIME``
    (wall clock, shared by every namespace) once connected; all held until stdin closes."""
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection(vip, 80)
        port = writer.get_extra_info("sockname")[1]
        print(f"{port} {time.time():.6f}", flush=True)
        writers.append(writer)
        await asyncio.sleep(spacing)
    print("done", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in writers:
        w.close()


def sync_delays(cluster: ECMPCluster, count: int = 10, spacing: float = 0.3,
                timeout: float = 10.0) -> list[float]:
    """With ``sync``: for ``count`` new connections, seconds from the client's connect until
    every running director holds the entry (polled every 20 ms through the control sockets).
    A connection that does not reach them all within ``timeout`` raises LabError."""
    directors = [k for k in range(1, MAX_DIRECTORS + 1)
                 if (p := cluster.procs.get(f"{director_name(k)}-director")) is not None
                 and p.poll() is None]
    client = cluster.lab.popen("client", [sys.executable, "-m", "pylvs.lab.router", "open",
                                          "--count", str(count), "--spacing", str(spacing)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    assert client.stdout is not None and client.stdin is not None
    opened: dict[int, float] = {}
    seen: dict[int, dict[int, float]] = {}
    os.set_blocking(client.stdout.fileno(), False)
    deadline = time.monotonic() + count * spacing + timeout
    buf = ""
    try:
        while len(opened) < count or any(len(seen.get(p, {})) < len(directors) for p in opened):
            if time.monotonic() > deadline:
                raise LabError(f"sync: entries did not reach every director in {timeout:g} s: "
                               f"{ {p: sorted(v) for p, v in seen.items()} }")
            with contextlib.suppress(BlockingIOError):
                buf += os.read(client.stdout.fileno(), 65536).decode()
            *lines, buf = buf.split("\n")
            for line in lines:
                words = line.split()
                if len(words) == 2:
                    opened[int(words[0])] = float(words[1])
            if client.poll() is not None and not lines:
                why = client.stderr.read().decode(errors="replace") if client.stderr else ""
                raise LabError(f"sync: the client ended: {why.strip()[-300:]}")
            for k in directors:
                with ControlClient(cluster.control_socket(k)) as c:
                    rows = c.get_connections()
                now = time.time()
                for row in rows:
                    if str(row.caddr) == CLIENT_EDGE and row.vport == 80 and row.cport in opened:
                        seen.setdefault(row.cport, {}).setdefault(k, now)
            time.sleep(0.02)
    finally:
        with contextlib.suppress(OSError):
            client.stdin.close()
        try:
            client.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait(5)
    return sorted(max(seen[p].values()) - t for p, t in opened.items())


def start_echo_servers(lab: Lab) -> list[subprocess.Popen[Any]]:
    """An echo server on :9000 on each real server (the caller ends them, or ``Lab.down``)."""
    procs = []
    for rs in REAL_SERVERS:
        p = lab.popen(rs, [sys.executable, "-m", "pylvs.lab.router", "echo"],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                      start_new_session=True)
        procs.append(p)
        assert p.stdout is not None
        if p.stdout.readline().strip() != "echo ready":
            raise LabError(f"the echo server on {rs} did not start")
    return procs


def main(argv: list[str] | None = None) -> int:
    """``python -m pylvs.lab.router echo | hold | churn | open``: the two ends of the long-lived
    test, the steady new connections, and the connections whose sync is timed."""
    p = argparse.ArgumentParser(prog="python -m pylvs.lab.router")
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("echo", help="echo server on :9000")
    h = sub.add_parser("hold", help="hold connections to the VIP, print the outcome as JSON")
    h.add_argument("--vip", default=ECMP_VIP)
    h.add_argument("--echo", type=int, default=10)
    h.add_argument("--http", type=int, default=10)
    h.add_argument("--seconds", type=float, default=20)
    h.add_argument("--interval", type=float, default=0.2)
    h.add_argument("--timeout", type=float, default=10)
    h.add_argument("--progress", type=float, default=0, metavar="SECONDS",
                   help="print 'progress {JSON}' (open, broken, exchanges) this often")
    c = sub.add_parser("churn", help="new connections at a steady rate, outcome as JSON")
    c.add_argument("--vip", default=ECMP_VIP)
    c.add_argument("--rate", type=float, default=20)
    c.add_argument("--seconds", type=float, default=10)
    c.add_argument("--timeout", type=float, default=3)
    o = sub.add_parser("open", help="open connections one by one, print PORT TIME for each, "
                       "hold them until stdin closes")
    o.add_argument("--vip", default=ECMP_VIP)
    o.add_argument("--count", type=int, default=10)
    o.add_argument("--spacing", type=float, default=0.3)
    args = p.parse_args(argv)
    if args.what == "open":
        asyncio.run(_open(args.vip, args.count, args.spacing))
        return 0
    if args.what == "churn":
        print(json.dumps(asyncio.run(_churn(args.vip, args.rate, args.seconds, args.timeout))),
              flush=True)
        return 0
    if args.what == "echo":
        asyncio.run(_echo_server(ECHO_PORT))
        return 0
    print(json.dumps(asyncio.run(_hold(args.vip, args.echo, args.http, args.seconds,
                                       args.interval, args.timeout, args.progress))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
