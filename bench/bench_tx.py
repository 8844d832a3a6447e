"""What one frame costs the sender on a veth: the packet plane's TX ring, its frames copied whole
into the skb (``tx_linear``, the default since 2026-12-08) or with the ring slot's page
attached as a fragment (as before), against the kernel's plain path (one ``send()`` per frame
on an AF_PACKET socket: the reference, measured in the same run).

Why: a veth hands the sender's skb to the peer, and an skb holding a TX ring page must first
have that page copied into one of its own (``skb_copy_ubufs``): a page allocated per frame.
Containers and the lab forward over veths; ``make bench-tx``.

Set-up: two network namespaces made for the run (``btx<pid>a``/``b``), one veth between them,
the receiver dropping every frame at its ingress hook (nftables ``netdev``) after the veth
counted it (``rx_packets``), so only the sending is measured. Per row: ``--frames`` frames of
one size (64 and 1,500 bytes), flushed 64 at a time; the sender's user and system CPU per frame
(``getrusage`` in the sending process) and the frames that arrived. Bounded by the count; the
namespaces are removed at the end, also on failure."""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
ROWS = ("ring", "ring-page", "send")


def role_send(row: str, frames: int, size: int) -> dict[str, float]:
    """In the sending namespace: send ``frames`` frames of ``size`` bytes the ``row``'s way."""
    sys.path.insert(0, SRC)
    from pylvs.dataplane.packet.ring import PacketRing

    frame = bytearray(bytes.fromhex("020000000002" "020000000001" "0800") + bytes(size - 14))
    frame[14] = 0x45
    ring = None
    sock = None
    if row == "send":
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        sock.bind(("eth0", 0))
    else:
        ring = PacketRing("eth0", fast=True, tx_frames=1024)
        ring.tx_linear = row == "ring"
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if sock is not None:
        send = sock.send
        for _ in range(frames):
            send(frame)
    else:
        assert ring is not None
        queue, flush = ring.queue, ring.flush
        for i in range(frames):
            queue(frame)
            if i & 63 == 63:
                flush()
        flush()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.2)
    if ring is not None:
        ring.close()
    return {"user_us": (r1.ru_utime - r0.ru_utime) / frames * 1e6,
            "sys_us": (r1.ru_stime - r0.ru_stime) / frames * 1e6}


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def rx_packets(ns: str) -> int:
    return int(run(["ip", "netns", "exec", ns, "cat",
                    "/sys/class/net/eth0/statistics/rx_packets"]).stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["bench", "send"], default="bench")
    p.add_argument("--row", choices=ROWS, default="ring")
    p.add_argument("--frames", type=int, default=300_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--sizes", default="64,1500")
    p.add_argument("--repeat", type=int, default=2, help="runs of each row (the best is shown)")
    args = p.parse_args()
    if args.role == "send":
        print(json.dumps(role_send(args.row, args.frames, args.size)))
        return 0
    tag = f"btx{os.getpid() % 100000}"
    a, b = f"{tag}a", f"{tag}b"
    results: list[tuple[str, int, dict[str, float], int]] = []
    try:
        run(["ip", "netns", "add", a])
        run(["ip", "netns", "add", b])
        run(["ip", "link", "add", f"{tag}0", "netns", a, "type", "veth", "peer", "name",
             f"{tag}1", "netns", b])
        for ns, dev, mac in ((a, f"{tag}0", "02:00:00:00:00:01"),
                             (b, f"{tag}1", "02:00:00:00:00:02")):
            run(["ip", "-n", ns, "link", "set", dev, "name", "eth0"])
            # no link-local address: no router solicitation counted among the frames
            run(["ip", "-n", ns, "link", "set", "eth0", "address", mac, "addrgenmode", "none"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        subprocess.run(["ip", "netns", "exec", b, "nft", "-f", "-"], check=True, text=True,
                       input="table netdev sink {\n chain in {\n  type filter hook ingress "
                             "device eth0 priority 0; policy drop;\n }\n}\n")
        for size in (int(x) for x in args.sizes.split(",")):
            for row in ROWS:
                best: tuple[dict[str, float], int] | None = None
                for _ in range(args.repeat):
                    before = rx_packets(b)
                    out = run(["ip", "netns", "exec", a, sys.executable, __file__, "--role",
                               "send", "--row", row, "--frames", str(args.frames), "--size",
                               str(size)])
                    got = rx_packets(b) - before
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    if best is None or r["user_us"] + r["sys_us"] < sum(best[0].values()):
                        best = (r, got)
                assert best is not None
                results.append((row, size, *best))
                print(f"  {row} {size} B: {best[0]}", file=sys.stderr, flush=True)
    finally:
        run(["ip", "netns", "del", a], check=False)
        run(["ip", "netns", "del", b], check=False)
    print(f"\nSending on a veth, {args.frames:,} frames per row, best of {args.repeat}; load "
          f"average {os.getloadavg()[0]:.2f}\n")
    print("| way | frame | sender CPU µs/frame | user | system | arrived |")
    print("|---|---|---|---|---|---|")
    for row, size, r, got in results:
        what = {"ring": "TX ring, frame copied whole (tx_linear)",
                "ring-page": "TX ring, slot's page attached (before)",
                "send": "one send() per frame (kernel's plain path)"}[row]
        print(f"| {what} | {size} B | {r['user_us'] + r['sys_us']:.2f} | {r['user_us']:.2f} | "
              f"{r['sys_us']:.2f} | {got:,} of {args.frames:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
