"""Packets per second through the ``packet`` data plane (DR, NAT) beside kernel IP forwarding,
between the same namespaces in the same run; and new connections per second. Each pylvs
scenario runs with the C hot path (flow table in the ring walk) and, as ``*-py``, with the
pure-Python path (``fastpath=False``).

Set-up: the namespace lab. The client namespace is the load generator: it pre-builds UDP (or
TCP SYN) frames addressed to the director's MAC and pushes them through an AF_PACKET TX ring as
fast as it can for ``--seconds`` (queued through the packet plane's own C ring, one Python call
per frame; ``--py-loop``: the slot loop in Python used until 2026-12-08, a third slower). The
director forwards them:
- ``kernel``: plain Linux IP forwarding (ip_forward=1) from the LAN to nat1 on the back network,
  no pylvs at all: the reference;
- ``dr``: pylvs packet plane, UDP service VIP:80 -> rs1, MAC rewrite only;
- ``nat``: pylvs packet plane, UDP service VIP:80 -> nat1:80, address/port rewrite with
  incremental checksums;
- ``dr-syn``: every frame a TCP SYN from a new client port: new connections per second.
The lab's bridges pass frames through netfilter (br_netfilter, ``bridge-nf-call-*``) unless
``--bridge-nf off``: then the bridge namespace skips it, as a plain switch would, for every
scenario alike (the kernel reference too). That work runs in the softirq of whoever sends onto
the bridge, so it is charged to the director's send() (and to the generator's).
Received packets are read from the sink's kernel interface counters (no user-space sink to slow
things down). "loss" is what the generator sent minus what arrived. CPU is the director process's
user+system time over the run, as % of one core during the load's seconds, and per received
frame (the system share
includes the kernel's delivery of what we transmit: veth hands frames on inside our send()),
"pps per core" is
what that cost allows on one otherwise idle core, the figure that survives a busy machine (the
live rates do not: a starved director loses frames to a full ring).

Then, for DR and NAT on both paths, the generator is paced (2 s per rate) and the highest rate
forwarded with under 0.1% loss is found by bisection over a ladder of rates (``--rates-c``,
``--rates-py``): the issue's "no loss" figure. A rate the generator itself could not reach
counts as not passed (and is reported as the generator's limit).

Offloads: the lab leaves every host's veth offloads at the kernel's defaults (earlier sessions'
figures were taken with them off everywhere; the lab no longer switches them). The generator's frames are raw
AF_PACKET frames, whole and checksummed; with ``--partial`` they leave the generator as a
sender with TX checksum offload sends them (``PACKET_VNET_HDR``, NEEDS_CSUM: only the
pseudo-header sum in the UDP/TCP checksum field), so the director receives every frame
checksum-not-ready and completes it: the cost of issue #16's fix.

Metrics while scraped (issue #18's "Speed"): with ``--scrape SECONDS`` each pylvs scenario of
the table gets a twin ``NAME+scrape`` right after it: the same director also serving
``/metrics`` on 127.0.0.1:19100 in its namespace (``pylvs.metrics``, pylvsd's module: its HTTP
threads in the director's process, so in its CPU figures), while a scraper process in that
namespace fetches ``/metrics`` every SECONDS through the counted seconds; the run prints each
twin's scrape count and mean scrape time. The no-loss search runs unscraped.

Bounded: each scenario runs ``--seconds`` (2) and stops itself; the lab is removed at the end,
also on failure. Needs root. The machine is shared with other work: figures are noisy, the
reference beside ours is the fair comparison.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from pylvs.dataplane.packet import codec, offload  # noqa: E402

VIP = "192.168.168.100"
METRICS = "127.0.0.1:19100"  # the director's /metrics with --scrape, in its namespace
SCRAPED = "+scrape"
CLIENT = "192.168.168.60"


def _frames(dst_mac: bytes, src_mac: bytes, dst_ip: str, dport: int, n_flows: int,
            syn: bool, payload: int, partial: bool = False, sport_base: int = 1024) -> list[bytes]:
    """The generator's frames; ``partial``: each behind a virtio_net_hdr asking for its
    checksum to be completed, the checksum field holding the pseudo-header sum only.
    ``sport_base``: the first flow's source port (generators run side by side take disjoint
    ranges, so that their SYNs are all new connections)."""
    src, dst = socket.inet_aton(CLIENT), socket.inet_aton(dst_ip)
    out = []
    for i in range(n_flows):
        sport = 1024 + (sport_base - 1024 + i) % 64000
        if syn:
            seg = bytearray(struct.pack("!HHIIBBHHH", sport, dport, i, 0, 5 << 4, codec.TCP_SYN,
                                        65535, 0, 0))
            struct.pack_into("!H", seg, 16, codec.l4_checksum(src, dst, 6, seg))
            proto, coff = 6, 16
        else:
            seg = bytearray(struct.pack("!HHHH", sport, dport, 8 + payload, 0) + b"x" * payload)
            struct.pack_into("!H", seg, 6, codec.l4_checksum(src, dst, 17, seg) or 0xFFFF)
            proto, coff = 17, 6
        vnet = b""
        if partial:
            pseudo = src + dst + bytes((0, proto)) + len(seg).to_bytes(2, "big")
            struct.pack_into("!H", seg, coff, codec.ones_sum(pseudo))
            vnet = offload.VNET_HDR.pack(offload.VNET_NEEDS_CSUM, 0, 0, 0, 34, coff)
        ip = codec.ipv4_header(src, dst, proto, len(seg), ident=i & 0xFFFF)
        out.append(vnet + codec.ethernet(dst_mac, src_mac, codec.ETH_P_IP) + ip + bytes(seg))
    return out


def role_gen(args: argparse.Namespace) -> None:
    """In the client namespace: blast pre-built frames through the TX ring for a while."""
    from pylvs.dataplane.packet.ring import TP_STATUS_AVAILABLE, TP_STATUS_SEND_REQUEST, PacketRing

    frames = _frames(bytes.fromhex(args.dst_mac), bytes.fromhex(args.src_mac), args.dst_ip,
                     args.dport, args.flows, args.syn, args.payload, args.partial,
                     args.sport_base)
    if not args.partial and not getattr(args, "py_loop", False):
        cring = PacketRing("eth0", block_nr=2, tx_frames=4096, fast=True)
        if cring.fast is not None:
            print(json.dumps({"sent": _send_c(cring.fast, frames, args.seconds, args.rate)}))
            return
        cring.close()
    ring = PacketRing("eth0", block_nr=2, tx_frames=4096, vnet=args.partial)
    if args.partial and not ring.vnet_len:
        raise SystemExit("generator: --partial needs PACKET_VNET_HDR")
    mm, base, fs, nr = ring.mm, ring.rx_size, ring.frame_size, ring.tx_nr
    u32 = struct.Struct("=I")
    sent = 0
    flow = 0
    nflows = len(frames)
    # fill every slot once; afterwards only slots whose flow changes are rewritten
    slot_flow = [-1] * nr
    end = time.monotonic() + args.seconds
    slot = 0
    batch = 256
    start = time.monotonic()
    while time.monotonic() < end:
        if args.rate:  # paced: never ahead of rate x elapsed
            ahead = sent - args.rate * (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead / args.rate)
            batch = 32
        for _ in range(batch):
            off = base + slot * fs
            if u32.unpack_from(mm, off + 20)[0] != TP_STATUS_AVAILABLE:
                break
            if slot_flow[slot] != flow:
                f = frames[flow]
                mm[off + 48:off + 48 + len(f)] = f
                u32.pack_into(mm, off + 16, len(f))
                u32.pack_into(mm, off + 12, len(f))
                slot_flow[slot] = flow
            u32.pack_into(mm, off + 20, TP_STATUS_SEND_REQUEST)
            slot = (slot + 1) % nr
            flow = (flow + 1) % nflows
            sent += 1
        try:
            ring.sock.send(b"")
        except BlockingIOError:
            pass
    time.sleep(0.2)
    print(json.dumps({"sent": sent}))


def _send_c(fast: Any, frames: list[bytes], seconds: float, rate: int) -> int:
    """The generator's loop on the packet plane's own C TX ring (``_fastpath.Ring.queue``, the
    frame copied into a slot in C, a ``send()`` per 64): a Python call per frame instead of
    the slot bookkeeping above (the lab's ``direct`` row: 397 k -> 529 k frames/s, where the
    kernel's share of each send then sets the limit). A full ring is retried after a kick,
    never dropped here, so ``sent`` is what the kernel took."""
    queue, flush = fast.queue, fast.flush
    nflows = len(frames)
    sent = i = 0
    start = time.monotonic()
    end = start + seconds
    batch = 256
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate:  # paced: never ahead of rate x elapsed
            due = int(rate * (now - start)) - sent
            if due <= 0:
                time.sleep(0.0005)
                continue
            batch = min(due, 256)
        for _ in range(batch):
            if queue(frames[i]):  # ring full (2): kick and retry this frame
                flush()
                if queue(frames[i]):
                    break
            i += 1
            if i == nflows:
                i = 0
            sent += 1
        flush()
    time.sleep(0.2)
    return sent


def role_scrape(args: argparse.Namespace) -> None:
    """In the director namespace: fetch ``--url`` every ``--every`` seconds for ``--seconds``,
    as Prometheus would; print the count and mean duration as JSON."""
    import urllib.request

    times: list[float] = []
    errors: list[str] = []
    end = time.monotonic() + args.seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(args.url, timeout=10) as r:
                body = r.read()
            if b"node_ipvs_connections_total" not in body:
                errors.append("no node_ipvs_connections_total in /metrics")
            times.append(time.perf_counter() - t0)
        except OSError as e:
            errors.append(str(e))
        next_at += args.every
        time.sleep(max(0.0, min(next_at, end) - time.monotonic()))
    print(json.dumps({"scrapes": len(times),
                      "scrape_ms": sum(times) / len(times) * 1e3 if times else 0.0,
                      "errors": errors[:3]}), flush=True)


def role_director(args: argparse.Namespace) -> None:
    """In the director namespace: a Director with one UDP/TCP service and the packet plane."""
    from pylvs.core.director import Director
    from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
    from pylvs.core.table import IPVSTable
    from pylvs.dataplane.packet.dataplane import PacketDataPlane

    d = Director(IPVSTable(), max_connections=2_000_000)
    base_conns = 0
    proto = Protocol.TCP if args.syn else Protocol.UDP
    key = ServiceKey.inet(proto, VIP, 80)
    d.table.add_service(ServiceSpec(key, "rr"))
    fwd = ForwardingMethod.MASQ if args.mode == "nat" else ForwardingMethod.DROUTE
    d.table.add_dest(key, DestSpec(ipaddress.ip_address(args.rip), 80, fwd))
    plane = PacketDataPlane(d, interfaces=["eth0", "eth1"], fastpath=args.path == "c")
    plane.open()
    if (plane.flows is not None) != (args.path == "c"):
        raise SystemExit(f"director: asked for the {args.path} path, C hot path is "
                         f"{'on' if plane.flows is not None else 'off (not built?)'}")
    observe: Any = None
    if args.metrics_address:  # pylvsd's wiring (pylvs.metrics.wiring.director_sources)
        from pylvs.metrics.server import ObservabilityServer, parse_listen
        from pylvs.metrics.sources import Sources

        observe = ObservabilityServer(Sources("pylvsd", table=lambda: d.table,
                                              dataplane=lambda: plane),
                                      parse_listen(args.metrics_address))
        observe.start()
    prof: Any = None
    if os.environ.get("BENCH_PACKET_PROFILE"):
        import cProfile

        prof = cProfile.Profile()
    try:
        print("ready", flush=True)
        # forward until stdin closes; the counted window starts at the line "go"
        t0, base = os.times(), plane.describe()
        w0 = time.monotonic()
        stdin = sys.stdin.fileno()
        while True:
            if prof is not None:
                prof.runcall(plane.run_for, 0.25)
            else:
                plane.run_for(0.25)
            if select.select([stdin], [], [], 0)[0]:
                line = sys.stdin.readline()
                if not line:
                    break
                t0, base, w0 = os.times(), plane.describe(), time.monotonic()
                base_conns = d.connection_count
        t1 = os.times()
        wall = time.monotonic() - w0
        desc = plane.describe()
    finally:
        if observe is not None:
            observe.close()
        plane.close()
    if prof is not None:
        import pstats

        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(14)
    cpu_s = t1.user - t0.user + t1.system - t0.system
    sys_share = (t1.system - t0.system) / cpu_s if cpu_s else 0.0
    rx = desc["rx_frames"] - base["rx_frames"]
    print(json.dumps({"forwarded": desc["forwarded"] - base["forwarded"], "drops": desc["drops"],
                      "cpu": cpu_s / wall * 100,
                      "ring_drops": desc["rx_ring_drops"] - base["rx_ring_drops"],
                      "tx_errors": desc["tx_errors"],
                      "cpu_us_per_packet": cpu_s / max(1, rx) * 1e6,
                      "sys_share": sys_share, "cpu_s": cpu_s,
                      "fast_frames": desc["fast_frames"] - base["fast_frames"],
                      "connections": d.connection_count - base_conns, "rx": rx}), flush=True)


def _rx_packets(lab: Any, host: str) -> int:
    r = lab.run(host, ["cat", "/sys/class/net/eth0/statistics/rx_packets"], check=True)
    return int(r.stdout)


def scenario(lab: Any, name: str, seconds: float, flows: int, payload: int,
             rate: int = 0, partial: bool = False, scrape: float = 0.0) -> dict[str, Any]:
    """One scenario; ``name`` ending in ``+scrape``: its director serves /metrics and a scraper
    fetches them every ``scrape`` seconds while the load runs."""
    me = [sys.executable, os.path.abspath(__file__)]
    scraped = name.endswith(SCRAPED)
    name = name.removesuffix(SCRAPED)
    path = "python" if name.endswith("-py") else "c"
    name = name.removesuffix("-py")
    director_mac = lab.mac("director").replace(":", "")
    client_mac = lab.mac("client").replace(":", "")
    syn = name == "dr-syn"
    sink = "nat1" if name in ("kernel", "nat") else "rs1"
    director: subprocess.Popen[str] | None = None
    lab.run("director", ["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"], check=True)
    if name == "kernel":
        lab.run("director", ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"], check=True)
        dst_ip = "10.168.0.10"
    else:
        dst_ip = VIP
        rip = "10.168.0.10" if name == "nat" else "192.168.168.10"
        director = lab.popen("director", [*me, "--role", "director", "--mode", name.split("-")[0],
                                          "--rip", rip, "--path", path] + (["--syn"] if syn else [])
                             + (["--metrics-address", METRICS] if scraped else []),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert director.stdout is not None
        line = director.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"director did not start: {line}")
        time.sleep(0.5)
    gen_argv = [*me, "--role", "gen", "--dst-mac", director_mac, "--src-mac", client_mac,
                "--dst-ip", dst_ip, "--dport", "80" if name != "kernel" else "9",
                "--payload", str(payload)] + (["--syn"] if syn else []) + (
                    ["--partial"] if partial else [])
    if director is not None and not syn:
        # warm-up: neighbours resolved and the flows' entries made before anything is counted
        lab.run("client", [*gen_argv, "--flows", str(flows), "--seconds", "0.5", "--rate", "4000"],
                check=True, timeout=60)
        time.sleep(0.2)
    if director is not None:
        assert director.stdin is not None
        director.stdin.write("go\n")
        director.stdin.flush()
    scraper: subprocess.Popen[str] | None = None
    if scraped:
        scraper = lab.popen("director", [*me, "--role", "scrape", "--url",
                                         f"http://{METRICS}/metrics", "--every", str(scrape),
                                         "--seconds", str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    before = _rx_packets(lab, sink)
    gen = lab.run("client", [*gen_argv, "--flows", str(flows), "--seconds", str(seconds),
                             "--rate", str(rate)],
                  check=True, timeout=seconds + 60)
    time.sleep(0.5)
    received = _rx_packets(lab, sink) - before
    sent = json.loads(gen.stdout.strip().splitlines()[-1])["sent"]
    res: dict[str, Any] = {"name": name if name == "kernel" else f"{name} ({path})", "sent": sent, "received": received,
                           "pps": received / seconds, "loss": 1 - received / sent if sent else 0.0}
    if scraper is not None:
        out, _ = scraper.communicate(timeout=seconds + 60)
        res.update(json.loads(out.strip().splitlines()[-1]))
        res["name"] += SCRAPED
    if director is not None:
        out, _ = director.communicate(timeout=60)  # closing stdin ends it
        stats = json.loads(out.strip().splitlines()[-1])
        res.update(stats)
        # share of one core while the load ran (the director idles before and after)
        res["cpu"] = stats["cpu_s"] / seconds * 100
        res["conns_per_s"] = stats["connections"] / seconds if syn else None
    lab.run("director", ["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"], check=True)
    return res


def search_no_loss(lab: Any, name: str, ladder: list[int],
                   args: argparse.Namespace) -> tuple[int, str]:
    """Bisect ``ladder`` for the highest rate forwarded with under 0.1% loss (assumes a rate
    that passes means every lower one does). A rung the generator could not reach fails, but
    what it did send without loss still counts: the result is the highest rate actually
    forwarded without loss, with a note when the generator was the limit."""
    lo, hi = -1, len(ladder)  # ladder[lo] passed, ladder[hi] failed
    note = ""
    best = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        rate = ladder[mid]
        r = scenario(lab, name, 2.0, 64000 if name.startswith("dr-syn") else args.flows,
                     args.payload, rate, args.partial)
        short = r["sent"] < 0.9 * rate * 2.0  # a busy machine: the generator fell behind
        print(f"  {name} at {rate:,}/s: sent {r['sent']:,} lost {r['loss']:.2%}"
              + (" (generator short)" if short else ""), file=sys.stderr, flush=True)
        if r["loss"] <= 0.001:
            best = max(best, min(rate, round(r["sent"] / 2.0)))
        if r["loss"] > 0.001 or short:
            hi = mid
            note = f"generator reached only {r['sent'] / 2.0:,.0f}/s when asked {rate:,}" if short else ""
        else:
            lo = mid
    if hi < len(ladder) and lo >= 0 and not note:
        note = f"{ladder[hi]:,}/s lost packets"
    return max(best, ladder[lo] if lo >= 0 else 0), note


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["bench", "gen", "director", "scrape"], default="bench")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--flows", type=int, default=1000)
    p.add_argument("--payload", type=int, default=18, help="UDP payload bytes (64-byte frames)")
    p.add_argument("--scenarios", default="kernel,dr,nat,dr-syn,dr-py,nat-py,dr-syn-py")
    p.add_argument("--path", choices=["c", "python"], default="c", help="director: data path")
    p.add_argument("--mode", default="dr")
    p.add_argument("--rip", default="192.168.168.10")
    p.add_argument("--dst-mac", default="")
    p.add_argument("--src-mac", default="")
    p.add_argument("--dst-ip", default=VIP)
    p.add_argument("--dport", type=int, default=80)
    p.add_argument("--syn", action="store_true")
    p.add_argument("--sport-base", type=int, default=1024,
                   help="generator: the first flow's source port")
    p.add_argument("--partial", action="store_true",
                   help="frames leave the generator with partial checksums (TX offload)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.add_argument("--py-loop", action="store_true",
                   help="generator: fill the TX ring from Python, as before 2026-12-08 (the C "
                        "ring's queue() otherwise)")
    p.add_argument("--rate", type=int, default=0, help="generator: packets/s (0 = flat out)")
    p.add_argument("--no-loss", default="dr,nat,dr-syn,dr-py,nat-py",
                   help="scenarios whose highest rate without loss is searched ('' = none)")
    p.add_argument("--rates-c", default=",".join(str(r) for r in range(50_000, 450_001, 50_000)),
                   help="rate ladder (packets/s) bisected for the C path")
    p.add_argument("--rates-syn", default=",".join(str(r) for r in range(5_000, 60_001, 5_000)),
                   help="rate ladder (new connections/s) bisected for dr-syn")
    p.add_argument("--rates-py", default=",".join(str(r) for r in range(10_000, 150_001, 10_000)),
                   help="rate ladder (packets/s) bisected for the Python path")
    p.add_argument("--bridge-nf", choices=["on", "off"], default="on",
                   help="netfilter on the lab's bridges (br_netfilter), for every scenario")
    p.add_argument("--scrape", type=float, metavar="SECONDS",
                   help="also run each pylvs scenario as NAME+scrape: /metrics served by the "
                   "director and fetched every SECONDS (0.1-60) while the load runs")
    p.add_argument("--metrics-address", default="", help="director: serve /metrics here")
    p.add_argument("--url", default="", help="scraper: what to fetch")
    p.add_argument("--every", type=float, default=1.0, help="scraper: seconds between fetches")
    p.add_argument("--nice", type=int, default=-10,
                   help="priority of the generator and director (root; the machine is shared)")
    args = p.parse_args()
    if args.role in ("gen", "director") and args.nice:
        try:
            os.nice(args.nice)
        except OSError:
            pass
    if args.role == "gen":
        role_gen(args)
        return 0
    if args.role == "director":
        role_director(args)
        return 0
    if args.role == "scrape":
        role_scrape(args)
        return 0
    if args.scrape is not None and not 0.1 <= args.scrape <= 60:
        p.error("--scrape must be 0.1-60 s")
    if os.geteuid() != 0:
        print("bench_packet: needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 1
    from rich.console import Console
    from rich.table import Table

    from pylvs.lab import Lab

    lab = Lab(f"b{os.getpid() % 100000}", servers=False)
    results = []
    no_loss: dict[str, tuple[int, str]] = {}
    load_before = os.getloadavg()
    try:
        lab.up()
        if args.bridge_nf == "off":  # per network namespace: only the lab's bridges
            lab.run("lan", ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0",
                            "net.bridge.bridge-nf-call-ip6tables=0",
                            "net.bridge.bridge-nf-call-arptables=0"], check=True)
        names = [n for n in args.scenarios.split(",") if n]
        if args.scrape is not None:
            names = [m for n in names for m in ((n,) if n == "kernel" else (n, n + SCRAPED))]
        for name in names:
            flows = 64000 if name.startswith("dr-syn") else args.flows
            results.append(scenario(lab, name, args.seconds, flows, args.payload,
                                    partial=args.partial, scrape=args.scrape or 0.0))
        for name in [n for n in args.no_loss.split(",") if n]:
            rates = (args.rates_syn if name.startswith("dr-syn") else
                     args.rates_py if name.endswith("-py") else args.rates_c)
            ladder = [int(r) for r in rates.split(",")]
            no_loss[name] = search_no_loss(lab, name, ladder, args)
    finally:
        lab.down()
    load_after = os.getloadavg()
    t = Table(title=f"packet data plane, {args.seconds:g} s per scenario, 64-byte frames, "
                    f"{args.flows} flows, bridge netfilter {args.bridge_nf}, offloads "
                    f"at defaults, checksums "
                    f"{'partial (TX offload)' if args.partial else 'whole'} "
                    f"(shared 2-core machine: noisy; load average "
                    f"{load_before[0]:.2f} before, {load_after[0]:.2f} after)")
    for col in ("scenario", "sent", "received", "packets/s", "loss", "director CPU",
                "CPU µs/packet (sys)", "user µs/packet", "pps per core", "via C", "new conns/s"):
        t.add_column(col, justify="right")
    for r in results:
        t.add_row(r["name"] + (" (reference)" if r["name"] == "kernel" else ""),
                  f"{r['sent']:,}", f"{r['received']:,}", f"{r['pps']:,.0f}", f"{r['loss']:.1%}",
                  f"{r['cpu']:.0f}%" if "cpu" in r else "kernel",
                  f"{r['cpu_us_per_packet']:.1f} ({r['sys_share']:.0%})" if "cpu" in r else "",
                  f"{r['cpu_us_per_packet'] * (1 - r['sys_share']):.2f}" if "cpu" in r else "",
                  f"{1e6 / r['cpu_us_per_packet']:,.0f}" if r.get("cpu_us_per_packet") else "",
                  f"{r['fast_frames'] / r['rx']:.0%}" if r.get("rx") else "",
                  f"{r['conns_per_s']:,.0f}" if r.get("conns_per_s") else "")
    Console(width=160).print(t)
    for r in results:
        if r["name"].endswith(SCRAPED):
            print(f"{r['name']}: /metrics scraped {r['scrapes']} times every {args.scrape:g} s, "
                  f"mean scrape {r['scrape_ms']:.2f} ms"
                  + (f"; errors: {r['errors']}" if r["errors"] else ""))
    for name, (best, why) in no_loss.items():
        print(f"{name}: highest offered rate forwarded without loss (>99.9%, 2 s): "
              + (f"{best:,} packets/s" if best else "below the lowest rate tried")
              + (f" ({why})" if why else ""))
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
