"""A spoofed-SYN flood through the packet data plane while a legitimate client keeps connecting:
the legitimate success rate, the connection table's size and the director's memory, during and
after the flood. One command (``make bench-synflood``); needs root.

Set-up: the namespace lab in DR mode (``pylvs.lab.LVSCluster``: the daemon with the packet
plane, nginx on rs1/rs2), the seed's service VIP:80 over both. The client namespace runs two
things at once:
- the flood: TCP SYNs from random spoofed sources (10.77.0.0/16, random ports), pre-built and
  pushed through an AF_PACKET TX ring to the director's MAC, paced at ``--rate`` per second
  (0: as fast as the generator goes) for ``--seconds``;
- the legitimate client: one new TCP connection after another to VIP:80, each an HTTP GET that
  must be answered within ``--timeout`` seconds (one SYN retransmission fits in the default 3 s).
The director's table is made small (``--max-connections``, through the ``set_sysctl`` control
request) so the flood fills it within the first seconds, as 1.1 M SYNs fill the default 1 M.

Printed: SYNs sent, the legitimate attempts and successes during the flood and in the
``--after`` seconds after it, the table's size and the director's RSS sampled every 0.5 s, and
the defence counters. ``--defence off`` runs the same with drop_entry and secure_tcp at 0: the
behaviour before the defence (a full table refuses every new client).

Bounded: the flood stops after ``--seconds`` and at most ``--count`` frames; everything it
started is stopped and the lab removed at the end, also on failure.

Roles (``--role gen|legit``) are what runs inside the client namespace; the test
``tests/dataplane/packet/test_synflood.py`` uses them too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from pylvs.dataplane.packet import codec  # noqa: E402

VIP = "192.168.168.100"
# the packet plane's counters of SYNs dropped in C before Python (its describe())
SHED_COUNTERS = ("syn_shed", "syn_retried")


def spoofed_syns(dst_mac: bytes, src_mac: bytes, n: int, seed: int = 1) -> list[bytes]:
    """``n`` SYN frames to VIP:80 from random addresses in 10.77.0.0/16 and random ports."""
    rnd = random.Random(seed)
    dst = socket.inet_aton(VIP)
    out = []
    for i in range(n):
        src = bytes((10, 77, rnd.randrange(256), rnd.randrange(1, 255)))
        sport = rnd.randrange(1024, 65535)
        seg = bytearray(struct.pack("!HHIIBBHHH", sport, 80, rnd.getrandbits(32), 0, 5 << 4,
                                    codec.TCP_SYN, 65535, 0, 0))
        struct.pack_into("!H", seg, 16, codec.l4_checksum(src, dst, 6, seg))
        ip = codec.ipv4_header(src, dst, 6, len(seg), ident=i & 0xFFFF)
        out.append(codec.ethernet(dst_mac, src_mac, codec.ETH_P_IP) + ip + bytes(seg))
    return out


def role_gen(args: argparse.Namespace) -> None:
    """In the client namespace: the flood, through the TX ring, paced or not, bounded."""
    from pylvs.dataplane.packet.ring import TP_STATUS_AVAILABLE, TP_STATUS_SEND_REQUEST, PacketRing

    ring = PacketRing("eth0", block_nr=2, tx_frames=4096)
    frames = spoofed_syns(bytes.fromhex(args.dst_mac), bytes.fromhex(args.src_mac),
                          min(args.count, 200_000), args.seed)
    mm, base, fs, nr = ring.mm, ring.rx_size, ring.frame_size, ring.tx_nr
    vnet = getattr(ring, "vnet_len", 0)
    zero_vnet = bytes(vnet)
    u32 = struct.Struct("=I")
    u16 = struct.Struct("!H")
    # each pass over the pool sends new SYNs, as a random-source flood does: the sequence
    # number's high half goes up by the pass number and the window down by as much, which
    # leaves the TCP checksum as it is (one's complement sum); --replay sends the pool as it is
    hi_win = [(u16.unpack_from(f, 38)[0], u16.unpack_from(f, 48)[0]) for f in frames]
    npass = 0
    sent = flow = slot = 0
    start = time.monotonic()
    end = start + args.seconds
    print("flooding", flush=True)
    while time.monotonic() < end and sent < args.count:
        batch = 256
        if args.rate:
            ahead = sent - args.rate * (time.monotonic() - start)
            if ahead > 0:
                time.sleep(min(0.05, ahead / args.rate))
                continue
            batch = 32
        for _ in range(min(batch, args.count - sent)):
            off = base + slot * fs
            if u32.unpack_from(mm, off + 20)[0] != TP_STATUS_AVAILABLE:
                break
            f = frames[flow]
            # the ring's slots start with a virtio_net_hdr when it has one: all zero, a whole
            # checksummed frame
            mm[off + 48:off + 48 + vnet + len(f)] = zero_vnet + f
            if npass:
                hi, win = hi_win[flow]
                hi += npass
                win -= npass
                tcp = off + 48 + vnet + 34
                u16.pack_into(mm, tcp + 4, hi - 0xFFFF if hi > 0xFFFF else hi)
                u16.pack_into(mm, tcp + 14, win + 0xFFFF if win < 0 else win)
            u32.pack_into(mm, off + 16, vnet + len(f))
            u32.pack_into(mm, off + 12, vnet + len(f))
            u32.pack_into(mm, off + 20, TP_STATUS_SEND_REQUEST)
            slot = (slot + 1) % nr
            flow += 1
            if flow == len(frames):
                flow = 0
                if not args.replay:
                    npass = npass % 0xFFFE + 1
            sent += 1
        try:
            ring.sock.send(b"")
        except BlockingIOError:
            pass
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 2)}), flush=True)


def role_legit(args: argparse.Namespace) -> None:
    """In the client namespace: new connections one after another, each a GET answered within
    ``--timeout``; one JSON line per attempt: when it started (monotonic), whether it
    succeeded, and the error if not."""
    end = time.monotonic() + args.seconds
    print("connecting", flush=True)
    while time.monotonic() < end:
        t0 = time.monotonic()
        err = ""
        try:
            with socket.create_connection((VIP, 80), timeout=args.timeout) as s:
                s.settimeout(args.timeout)
                s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                buf = b""
                while chunk := s.recv(4096):
                    buf += chunk
            if b" 200 " not in buf.split(b"\r\n", 1)[0] or b"nginx" not in buf:
                err = "bad reply"
        except OSError as exc:
            err = type(exc).__name__
        print(json.dumps({"t": round(t0, 3), "ok": not err, "err": err}), flush=True)
        time.sleep(args.pause)


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int, system_only: bool = False) -> float:
    """User + system (or only system) CPU seconds of process ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[12]) if system_only else int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _plane(cluster: Any) -> dict[str, Any]:
    from pylvs.control.client import ControlClient

    with ControlClient(cluster.control_socket, timeout=5) as c:
        plane: dict[str, Any] = c.call("status")["dataplane"]
    return plane


def run_flood(cluster: Any, *, rate: int, seconds: float, count: int, after: float,
              max_connections: int, defence: bool = True, timeout: float = 3.0,
              replay: bool = False, legit_clients: int = 1) -> dict[str, Any]:
    """Flood ``cluster`` (an ``LVSCluster`` in DR mode with its service) while a legitimate
    client connects; the measured figures. Everything started here is stopped here."""
    from pylvs.control.client import ControlClient

    lab = cluster.lab
    settings: dict[str, object] = {"max_connections": max_connections}
    if not defence:
        settings.update(drop_entry=0, secure_tcp=0)
    with ControlClient(cluster.control_socket) as c:
        c.set_sysctl(settings)
        pid = int(c.call("status")["pid"])
    me = os.path.abspath(__file__)
    dst_mac = lab.mac("director").replace(":", "")
    src_mac = lab.mac("client").replace(":", "")
    gen = None
    legits: list[subprocess.Popen[str]] = []
    samples: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    try:
        # the legitimate clients run until stopped below; their attempts are sorted by when
        # they started
        for _ in range(legit_clients):
            legits.append(lab.popen("client", [sys.executable, me, "--role", "legit", "--seconds",
                                               str(seconds + after + 60), "--timeout",
                                               str(timeout)], stdout=subprocess.PIPE, text=True))
        for legit in legits:
            assert legit.stdout is not None and legit.stdout.readline().strip() == "connecting"
            threading.Thread(target=lambda out=legit.stdout: lines.extend(
                json.loads(x) for x in out if x.startswith("{")), daemon=True).start()
        gen = lab.popen("client", [sys.executable, me, "--role", "gen", "--dst-mac", dst_mac,
                                   "--src-mac", src_mac, "--rate", str(rate), "--seconds",
                                   str(seconds), "--count", str(count),
                                   # a pool of its own: no SYN of an earlier flood comes again
                                   "--seed", str(random.randrange(1, 2**31))]
                        + (["--replay"] if replay else []),
                        stdout=subprocess.PIPE, text=True)
        # the generator builds its frames first (legitimate traffic meanwhile): the flood
        # starts when it says so
        assert gen.stdout is not None and gen.stdout.readline().strip() == "flooding"
        before = _plane(cluster)
        cpu0, sys0 = _cpu_s(pid), _cpu_s(pid, True)
        t_flood = time.monotonic()
        t_end = t_flood + seconds + after + 2
        cpu1: float | None = None
        t_cpu1 = sys1 = 0.0
        at_end: dict[str, Any] = {}
        while time.monotonic() < t_end:
            with ControlClient(cluster.control_socket, timeout=5) as c:
                st = c.call("status")
            samples.append({"t": round(time.monotonic() - t_flood, 1),
                            "connections": st["connections"], "rss_kb": _rss_kb(pid)})
            time.sleep(0.5)
            if cpu1 is None and gen.poll() is not None:  # the flood is over
                cpu1, t_cpu1, at_end = _cpu_s(pid), time.monotonic(), _plane(cluster)
                sys1 = _cpu_s(pid, True)
        gen_out, _ = gen.communicate(timeout=seconds + 30)
        if cpu1 is None:
            cpu1, t_cpu1, at_end = _cpu_s(pid), time.monotonic(), _plane(cluster)
            sys1 = _cpu_s(pid, True)
    finally:
        for p in (gen, *legits):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
    time.sleep(0.5)  # the readers take the last lines
    with ControlClient(cluster.control_socket) as c:
        counters = {**c.call("get_sysctl"), **c.call("get_defense")}
        plane = c.call("status")["dataplane"]
    sent = json.loads(gen_out.strip().splitlines()[-1])
    # the legitimate attempts by when they started: during the flood, from its 2nd second
    # (the table is full by then), after it
    flood_end = t_flood + sent["seconds"]

    def window(lo: float, hi: float) -> tuple[int, int]:
        xs = [x for x in lines if lo <= x["t"] < hi]
        return len(xs), sum(1 for x in xs if x["ok"])

    errors: dict[str, int] = {}
    for x in lines:
        if x["err"]:
            errors[x["err"]] = errors.get(x["err"], 0) + 1
    during = [s for s in samples if s["t"] <= sent["seconds"]]
    return {
        "syns_sent": sent["sent"], "flood_seconds": sent["seconds"],
        "syn_rate": round(sent["sent"] / max(sent["seconds"], 1e-9)),
        "legit_during": window(t_flood, flood_end),
        "legit_late": window(t_flood + 2, flood_end),
        "legit_after": window(flood_end, flood_end + after),
        "legit_clients": legit_clients,
        "legit_errors": errors,
        "max_connections": max_connections,
        "table_max": max((s["connections"] for s in samples), default=0),
        "table_end": samples[-1]["connections"] if samples else 0,
        "rss_mb_max_during": round(max((s["rss_kb"] for s in during), default=0) / 1024, 1),
        "rss_mb_end": round((samples[-1]["rss_kb"] if samples else 0) / 1024, 1),
        # every 5 s from the flood's start: bounded memory is a flat line once the table is full
        "rss_mb_every_5s": [round(x["rss_kb"] / 1024) for x in samples[::10]],
        "settings": counters, "drops": plane.get("drops"),
        # the director's process while the flood ran (up to the sample after it ended):
        # CPU share, frames its rings received, frames the kernel dropped for a full RX ring
        # (PACKET_STATISTICS tp_drops), frames shed before Python (drop_packet, overload)
        "director_cpu": round((cpu1 - cpu0) / max(t_cpu1 - t_flood, 1e-9), 2),
        "rx_frames": at_end.get("rx_frames", 0) - before.get("rx_frames", 0),
        "rx_ring_drops": at_end.get("rx_ring_drops", 0) - before.get("rx_ring_drops", 0),
        "shed": {k: at_end.get(k, 0) - before.get(k, 0) for k in SHED_COUNTERS},
        "system_share": round((sys1 - sys0) / max(cpu1 - cpu0, 1e-9), 2),
        "cpu_us_per_frame": round(1e6 * (cpu1 - cpu0) / max(
            at_end.get("rx_frames", 0) - before.get("rx_frames", 0), 1), 2),
    }


def _rate(pair: tuple[int, int]) -> str:
    attempts, ok = pair
    return f"{ok}/{attempts} ({100 * ok / attempts:.2f} %)" if attempts else "no attempt"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["gen", "legit"])
    p.add_argument("--dst-mac")
    p.add_argument("--src-mac")
    p.add_argument("--rate", type=int, default=0, help="SYNs per second (0: generator's full rate)")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--count", type=int, default=3_000_000)
    p.add_argument("--after", type=float, default=5, help="seconds measured after the flood")
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--pause", type=float, default=0.01)
    p.add_argument("--max-connections", type=int, default=100_000)
    p.add_argument("--defence", choices=["on", "off", "both"], default="on")
    p.add_argument("--legit", type=int, default=4,
                   help="legitimate clients connecting side by side, one connection at a time each")
    p.add_argument("--seed", type=int, default=1, help="(gen) the spoofed SYN pool's seed")
    p.add_argument("--replay", action="store_true",
                   help="send the same pool of SYNs again on each pass (default: new ones)")
    p.add_argument("--syn-max-lag", type=float, default=None,
                   help="the packet plane's syn_max_lag (s; 0: no shedding at the ring)")
    args = p.parse_args()
    if args.role == "gen":
        role_gen(args)
        return 0
    if args.role == "legit":
        role_legit(args)
        return 0
    if os.geteuid() != 0:
        print("bench_synflood: needs root (network namespaces)", file=sys.stderr)
        return 1
    from pylvs.lab import Lab
    from pylvs.lab.lvs import LVSCluster

    if args.syn_max_lag is not None:  # the director started below inherits it
        os.environ["PYLVS_SYN_MAX_LAG"] = str(args.syn_max_lag)

    lab = Lab(f"sf{os.getpid() % 10000}")
    try:
        lab.up()
        with LVSCluster(lab, "dr") as cluster:
            runs = ["on", "off"] if args.defence == "both" else [args.defence]
            for mode in runs:
                cluster.seed_service("rr")
                r = run_flood(cluster, rate=args.rate, seconds=args.seconds, count=args.count,
                              after=args.after, max_connections=args.max_connections,
                              defence=mode == "on", timeout=args.timeout, replay=args.replay,
                              legit_clients=args.legit)
                print(f"defence {mode}: {r['syns_sent']} spoofed SYNs in {r['flood_seconds']} s "
                      f"({r['syn_rate']}/s), table max {r['table_max']} of "
                      f"{r['max_connections']}, at the end {r['table_end']}")
                print(f"  legitimate connections during the flood: {_rate(r['legit_during'])} "
                      f"(from its 2nd second, table full: {_rate(r['legit_late'])}); "
                      f"in the {args.after:g} s after: {_rate(r['legit_after'])}")
                print(f"  director RSS: max {r['rss_mb_max_during']} MB during, "
                      f"{r['rss_mb_end']} MB at the end (every 5 s: {r['rss_mb_every_5s']}); "
                      f"errors {r['legit_errors']}")
                print(f"  director CPU {r['director_cpu']:.0%} of a core "
                      f"({r['system_share']:.0%} in the kernel), "
                      f"{r['cpu_us_per_frame']} us per frame; {r['rx_frames']} frames received, "
                      f"{r['rx_ring_drops']} lost in the kernel (RX ring full), shed {r['shed']}")
                print(f"  settings {r['settings']}")
                print(f"  {json.dumps(r)}", flush=True)
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
