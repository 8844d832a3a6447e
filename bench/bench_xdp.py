"""Established DR and NAT flows through the ``xdp`` data plane, beside kernel IP forwarding and the
AF_PACKET plane (C path), in the same run and lab; and new connections decided by the Python core
under the XDP plane (issue #19, item 6).

Generator: xdp-tools' ``xdp-trafficgen`` was tried first and does not run on this kernel (xdp-tools
1.3.1, Debian 12's package, fails to load its object: ``tp_xdp_redirect_map_err`` names a
tracepoint newer kernels no longer have); the same technique by hand (an XDP program run by
``BPF_PROG_TEST_RUN`` with ``BPF_F_TEST_XDP_LIVE_FRAMES``) is refused here with EPERM, and the
kernel has no pktgen. So the generator is ``bench_packet.py``'s AF_PACKET TX ring generator
(raw pre-built 64-byte UDP frames, or TCP SYNs from new ports), run as ``--gens`` processes in
the client namespace at once (one per core by default), each queueing its frames through the
packet plane's C TX ring (``--py-gen``: the Python slot loop used until 2026-12-08, about a
third slower). On veth a sender's ``send()`` carries each frame through the lab (bridge,
director's receive and, in softirq, its forwarding) on the sender's CPU, so a flat-out row's
rate is what two cores running the whole path reach: for kernel forwarding and the XDP rows,
the rate at which their per-packet cost fills the CPUs, not a generator ceiling.
``--check-xdp-trafficgen`` repeats the attempt and prints the loader's error.

What each row measures (``--seconds`` per row, flat out unless paced):
- ``offered``: frames that left the client (its eth0 ``tx_packets``); ``forwarded``: frames the
  sink received (its eth0 ``rx_packets``: kernel counters, no user-space sink); ``loss`` is the
  difference over ``offered``;
- ``director CPU µs/packet``: the director's CPU per forwarded frame, counted as (a) the
  director process's on-CPU time (``/proc/PID/task/*/schedstat``, nanoseconds, every thread) plus
  (b) the NET_RX/NET_TX softirq time of the whole machine, measured exactly with bpftrace on the
  ``irq:softirq_entry/exit`` tracepoints (this kernel has tick-sampled CPU accounting without
  IRQ_TIME_ACCOUNTING, so ``/proc/stat``'s softirq column would be a 4 ms sample and would count
  softirq run inside a process twice), minus the softirq that ran inside the director process's
  own context (already in (a)). XDP work runs in softirq, so per-process CPU alone would flatter
  it. The softirq is the machine's: on veth it also holds the generator's and the sink's share of
  the lab's network (bridge, delivery), so the ``direct`` row (the generator's frames sent straight
  to the sink across the same bridge, no director in the path) measures that share and ``net`` is
  the row minus it: the director's own receive, decision and transmit plus the second pass over
  the lab's bridge that forwarding adds (charged to the director here, as in ``bench_packet.py``).
  Other work on the machine adds its own network softirq (noise, reported with the load average).
- ``director NAPI µs/packet`` (rows whose director interfaces have NAPI: the native rows): the
  time in the NAPI polls of the director's own interfaces (eth0, eth1) per forwarded packet, from
  the ``napi:napi_poll`` tracepoint (a poll's time runs from the NET_RX softirq's start or the
  previous poll's end on that CPU to its end; kprobes and fentry are not available here). In
  native mode the director's whole work on a packet (receive, the program, ``XDP_TX`` or the
  redirect's transmit) is in those polls; on veth that includes turning the sender's skb into
  an XDP buffer, which a NIC's driver does not do;
- ``XDP program ns/run``: the XDP program's own run time per packet, as the kernel counts it with
  ``kernel.bpf_stats_enabled=1`` (set for the run, restored after; it adds two clock reads per
  run): the share of the director's cost that is pylvs' program, without veth's and the skb's.

Rows:
- ``direct`` (baseline above), ``kernel``: plain Linux IP forwarding on the director, LAN -> nat1;
- ``packet-dr``, ``packet-nat``: the AF_PACKET plane with its C hot path (the previous best);
- ``xdp-dr-generic``, ``xdp-nat-generic``: the XDP plane in generic (skb) mode, the lab's default
  on veth. In generic mode the program takes DR flows only (an XDP program cannot tell a
  CHECKSUM_PARTIAL skb from a complete one, so NAT stays with the C table: that row shows it);
- only with ``--native-peers`` (off by default: it changes hosts other than the director, for
  benchmark investigation only): an XDP program that passes everything is attached to the
  lab's bridge-side peers of the director's veths (native XDP_TX and redirect on veth need NAPI
  on the peer; for XDP_TX on this kernel GRO is not enough, see ``Bench.set_peer_napi``), and
  ``kernel-napi`` (the reference again in that set-up), ``xdp-dr-native``, ``xdp-nat-native``
  run; and the wire rows: on veth a frame the bridge hands on is an skb, which the director's
  veth must copy into an XDP buffer before the program sees it (``veth_convert_skb_to_xdp_buff``,
  work a NIC's driver does not do: its frames are in its ring's pages already). In
  ``xdp-dr-wire`` and ``xdp-nat-wire`` an XDP program on the client's bridge port (client0)
  redirects the generator's frames straight into the director's veth, so they arrive as XDP
  frames. Kernel forwarding cannot be fed that way without switching the director's GRO on (the
  NAPI an arriving XDP frame needs), which the bench does not do: the director's interfaces stay
  as a fresh host has them, so the wire rows have no kernel reference and are not paced. Their
  ``net of direct`` is negative (the frames skip the bridge's skb) and meaningless; their
  ``director NAPI µs/pkt`` is the director's whole work per packet as a NIC would have it;
- ``xdp-syn``: every frame a TCP SYN of a tuple never seen before (``many_frames``) to a DR
  service under the XDP plane (generic): the program passes them up, the Python core schedules
  each one (until 2026-12-07 13:00 UTC this row's SYNs came from one address's 64,000 ports,
  which repeat within a row above 32 k/s: half its SYNs were then retransmissions);
- ``xdp-syn-sink``: ``xdp-syn`` with the real server replaced by a counting sink: an nftables
  ``netdev`` ingress rule on rs1's eth0 drops the SYNs (its ``rx_packets`` still counts each,
  at the veth). On veth the director's transmit runs the receiver's whole softirq inside the
  director's ``send()``, so in ``xdp-syn`` the real server's TCP stack answering each SYN (and
  the lab carrying that answer) is charged to the director; this row shows what the director
  itself can decide and send, as it would to real servers on other machines;
- ``xdp-hs-sink``: whole handshakes as the director sees them in DR: each connection's SYN
  and, 4,096 connections later, its ACK (``handshake_frames``; the real server is the counting
  sink, so no SYN-ACK). The core schedules the SYN and installs the flow with it, so the ACK
  is the program's; ``new conns/s`` and ``µs per connection`` count SYN and ACK together, and
  ``ACKs up`` is the share of ACKs the program sent up (``pass_no_flow``);
- ``packet-hs-sink``, ``packet-hs-sink-ack-up``: the same two through the packet plane (no
  XDP), whose C table gets the flow at the SYN (since 2026-12-08) or at the ACK (``ACKs up``:
  what its Python path forwarded beyond the SYNs);
- ``xdp-hs-sink-ack-up``: the same with the flow installed at the ACK, as before 2026-12-07
  21:45 UTC (``XdpDataPlane(open_at_syn=False)``): every ACK goes up for a second pass;
- ``xdp-syn-mh``: every frame a TCP SYN of a tuple never seen before (``many_frames``) to an
  ``mh`` DR service: the program schedules each one from the Maglev table the core filled and
  forwards it; the director ticks once a second as the daemon does, entering what it can of
  those connections in its table (``new conns/s``: in the kernel, and entered by the core).
- ``xdp-syn-mh-nat``: ``xdp-syn-mh`` to an ``mh`` NAT service (nat1, a listener on port 80 that
  never accepts: a SYN-ACK for every SYN, with a cookie once its queue is full): the program
  rewrites each SYN to the server and makes the reply flow, by which nat1's SYN-ACK goes back
  to the client from the program too (through the client, the director's default route for
  the row); where the program does not know the way back yet (the gateway's MAC before the
  core resolved it) the SYN-ACK goes through the core. ``SYN-ACKs back``: what the client
  received (retransmissions included), and the share of connections the program answered.

After the flat-out rows, each forwarding row is paced at ``--target`` (0.95) x the rate kernel
forwarding reached in the same set-up and its loss recorded (the issue's "no loss at >= 0.95x
kernel forwarding"); ``xdp-syn`` is bisected over a ladder of SYN rates for the highest without
loss (< 0.1 %), and so are ``xdp-syn-sink`` (same ladder) and ``xdp-syn-mh`` (over
``--syn-mh-rates``). A paced rate the generator
cannot reach is reported as its limit, not a pass.

The director on a core of its own (``--pin --rps-peers``, benchmark investigation only): on veth
a sender's ``send()`` runs the receiver's softirq (the lab's bridge, the real server's receive)
inside the call, so the director's process time carries the lab's share of every frame it
transmits. ``--pin`` puts the director on the first CPU and the generators on the last;
``--rps-peers`` sets RPS on the bridge ports facing the director so that share runs on the last
CPU, as it would on the switch and the servers of a real network. It changes hosts other than
the director and is off by default; rows run so are not the default lab's figures.

Bounded: every row runs ``--seconds`` and stops itself; the lab is removed at the end, also on
failure. Needs root, bpftrace (tracefs is mounted if it is not) and the XDP object built.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, os.path.join(ROOT, "src"))
GEN = os.path.join(BENCH, "bench_packet.py")

VIP = "192.168.168.100"
RS1 = "192.168.168.10"
NAT1 = "10.168.0.10"
CLIENT = "192.168.168.60"

SOFTIRQ_BT = """
tracepoint:irq:softirq_entry /args->vec == 2 || args->vec == 3/ { @s[cpu] = nsecs; }
tracepoint:irq:softirq_exit /(args->vec == 2 || args->vec == 3) && @s[cpu]/ {
  @t[pid] = sum(nsecs - @s[cpu]); delete(@s[cpu]);
}
tracepoint:irq:softirq_entry /args->vec == 3/ { @l[cpu] = nsecs; }
tracepoint:napi:napi_poll /@l[cpu]/ {
  @np[str(args->dev_name)] = sum(nsecs - @l[cpu]); @nw[str(args->dev_name)] = sum(args->work);
  @l[cpu] = nsecs;
}
tracepoint:irq:softirq_exit /args->vec == 3/ { delete(@l[cpu]); }
interval:ms:100 { print(@np); print(@nw); print(@t); }
"""
# the director's interfaces in the lab: their NAPI polls (native XDP: the program's receive,
# verdict and XDP_TX or redirect, all in the poll) are the director's whole work per packet
DIRECTOR_NAPI = ("eth0", "eth1")


class SoftirqClock:
    """Network softirq nanoseconds so far, per task whose context ran them (bpftrace)."""

    def __init__(self) -> None:
        self.mounted = False
        if not os.path.isdir("/sys/kernel/tracing/events/irq"):
            os.makedirs("/sys/kernel/tracing", exist_ok=True)
            subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=True)
            self.mounted = True
        self.proc = subprocess.Popen(["bpftrace", "-f", "json", "-e", SOFTIRQ_BT],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.latest: tuple[float, dict[int, int]] = (0.0, {})
        # NAPI poll nanoseconds and packets per device name, of the reading ``latest`` holds:
        # a poll's time is from the NET_RX softirq's start or the previous poll's end on that
        # CPU to its own end (the napi_poll tracepoint fires as each poll returns)
        self.napi: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self.napi_at_snapshot = self.napi  # ``napi`` as the last ``snapshot`` returned it
        self._np: dict[str, int] = {}
        self._nw: dict[str, int] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.snapshot(timeout=30)  # attached

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError, KeyError):
                msg = json.loads(line)
                if msg.get("type") != "map":
                    continue
                if "@np" in msg["data"]:
                    self._np = {k: int(v) for k, v in msg["data"]["@np"].items()}
                elif "@nw" in msg["data"]:
                    self._nw = {k: int(v) for k, v in msg["data"]["@nw"].items()}
                else:  # @t comes last in each interval's print
                    data = {int(k): int(v) for k, v in msg["data"]["@t"].items()}
                    with self.cond:
                        self.latest = (time.monotonic(), data)
                        self.napi = (self._np, self._nw)
                        self.cond.notify_all()

    def snapshot(self, timeout: float = 5.0) -> dict[int, int]:
        """The first reading taken after this call (its NAPI figures in ``napi_at_snapshot``)."""
        asked = time.monotonic()
        with self.cond:
            if not self.cond.wait_for(lambda: self.latest[0] > asked, timeout):
                raise RuntimeError("bpftrace gives no softirq readings")
            self.napi_at_snapshot = self.napi
            return dict(self.latest[1])

    def director_napi(self) -> tuple[int, int]:
        """Nanoseconds and packets of the director interfaces' NAPI polls at the last
        snapshot."""
        ns, work = self.napi_at_snapshot
        return (sum(ns.get(d, 0) for d in DIRECTOR_NAPI),
                sum(work.get(d, 0) for d in DIRECTOR_NAPI))

    def close(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.mounted:
            subprocess.run(["umount", "/sys/kernel/tracing"], check=False)


def task_cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of every thread of ``pid`` (schedstat's first field)."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total


def prog_runtime(prog_id: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a BPF program, as the kernel counts them while
    kernel.bpf_stats_enabled is 1; (0, 0) without a program."""
    if not prog_id:
        return (0, 0)
    r = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                       capture_output=True, text=True, check=False)
    with contextlib.suppress(ValueError):
        info = json.loads(r.stdout)
        return (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
    return (0, 0)


class _TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts of libbpf 1.x (the kernel ABI's test-run arguments)."""

    _fields_ = [("sz", ctypes.c_size_t), ("data_in", ctypes.c_void_p),
                ("data_out", ctypes.c_void_p), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_void_p),
                ("ctx_out", ctypes.c_void_p), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("repeat", ctypes.c_int), ("duration", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


def program_alone(repeat: int) -> dict[str, tuple[int, float]]:
    """The XDP program by itself: BPF_PROG_TEST_RUN ``repeat`` times on one 64-byte UDP frame
    of an installed DR and NAT flow (and of no flow: XDP_PASS), in a namespace of its own. The
    kernel's mean ns per run: no veth, no skb, no bridge; what pylvs' program costs."""
    from bench_packet import CLIENT, _frames

    from pylvs.dataplane.xdp.loader import XdpProgram
    from pylvs.dataplane.xdp.maps import FlowAction, FlowKey, Method
    from pylvs.libbpf import libbpf

    mac_a, mac_b = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    frame = _frames(mac_a, mac_b, VIP, 80, 1, False, 18)[0]
    out: dict[str, tuple[int, float]] = {}
    lib = libbpf()
    for name, action in (("dr", FlowAction(Method.DR, 1, mac_b, mac_a)),
                         ("nat", FlowAction(Method.NAT_IN, 1, mac_b, mac_a, addr=NAT1, port=80)),
                         ("no flow", None)):
        with XdpProgram() as prog:
            if action is not None:
                prog.flow_put(FlowKey(17, CLIENT, 1024, VIP, 80).pack(), action.pack())
                # the test run repeats on the frame the previous run left: after a NAT rewrite
                # it is addressed to the real server, so that flow is installed too (rewritten
                # onto itself) and every run is a NAT rewrite
                prog.flow_put(FlowKey(17, CLIENT, 1024, NAT1, 80).pack(), action.pack())
            data_in = ctypes.create_string_buffer(frame, len(frame))
            buf = ctypes.create_string_buffer(len(frame) + 256)
            opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts),
                                data_in=ctypes.cast(data_in, ctypes.c_void_p),
                                data_out=ctypes.cast(buf, ctypes.c_void_p),
                                data_size_in=len(frame), data_size_out=len(buf), repeat=repeat)
            if lib.bpf_prog_test_run_opts(prog.prog_fd, ctypes.byref(opts)):
                raise OSError("BPF_PROG_TEST_RUN failed")
            out[name] = (opts.retval, float(opts.duration))
    return out


def role_director(args: argparse.Namespace) -> None:
    """In the director namespace: one UDP (or TCP for SYNs) service and the chosen plane."""
    from pylvs.core.director import Director
    from pylvs.core.model import DestSpec, ForwardingMethod, Protocol, ServiceKey, ServiceSpec
    from pylvs.core.table import IPVSTable
    from pylvs.dataplane.packet.dataplane import PacketDataPlane
    from pylvs.dataplane.xdp.plane import XdpDataPlane

    d = Director(IPVSTable(), max_connections=2_000_000)
    key = ServiceKey.inet(Protocol.TCP if args.syn else Protocol.UDP, VIP, 80)
    d.table.add_service(ServiceSpec(key, args.sched))
    fwd = ForwardingMethod.MASQ if args.mode == "nat" else ForwardingMethod.DROUTE
    d.table.add_dest(key, DestSpec(ipaddress.ip_address(args.rip), 80, fwd))
    plane: PacketDataPlane
    if args.plane == "xdp":
        # the generator writes full checksums, so every kind of flow may be the program's
        plane = XdpDataPlane(d, xdp_mode=args.xdp_mode, xdp_flows="all", interfaces=["eth0", "eth1"],
                             open_at_syn=not args.ack_up)
    else:
        plane = PacketDataPlane(d, interfaces=["eth0", "eth1"], fastpath=True,
                                open_at_syn=not args.ack_up)
    plane.open()
    stdin = sys.stdin.fileno()
    # mh in the kernel: the director ticks as the daemon does (each second: flow sync, which
    # enters the kernel's connections in the table, and the Maglev tables' next hops), and the
    # row starts once the table names the real server's MAC (learned from the kernel's cache)
    ticking = isinstance(plane, XdpDataPlane) and args.sched == "mh"
    if ticking:
        assert isinstance(plane, XdpDataPlane)
        deadline = time.monotonic() + 10
        while plane.next_hop(ipaddress.ip_address(args.rip).packed) is None:
            if time.monotonic() > deadline:
                raise SystemExit("director: the real server's MAC was never learned")
            plane.run_for(0.1)
        plane.refresh_mh()
    next_tick = time.monotonic() + 1

    def state() -> dict[str, Any]:
        desc = plane.describe()
        x = desc.get("xdp", {})
        c = x.get("counters", {})
        return {"conns": d.connection_count, "xdp_flows": x.get("flows", 0),
                "xdp_fwd": c.get("tx", 0) + c.get("redirect", 0),
                "xdp_pass": sum(v for k, v in c.items() if k.startswith("pass")),
                "mh_scheduled": c.get("mh_scheduled", 0), "mh_queue_full": c.get("mh_queue_full", 0),
                "mh_reply": c.get("mh_reply", 0), "pass_control": c.get("pass_control", 0),
                "pass_no_flow": c.get("pass_no_flow", 0), "opened": x.get("opened_at_syn", 0),
                "imported": x.get("imported", 0), "repaired": x.get("repaired", 0),
                "cpu_ns": time.process_time_ns(), "wall_ns": time.monotonic_ns(),
                "mh_services": x.get("mh_services", 0),
                "ring_rx": desc["rx_frames"], "forwarded": desc["forwarded"],
                "fast": desc["fast_frames"],
                "ring_drops": desc["rx_ring_drops"], "drops": sum(desc["drops"].values()),
                "attached": x.get("attached", {})}
    try:
        print("ready", os.getpid(), flush=True)
        base = state()
        while True:
            plane.run_for(0.1)
            if ticking and time.monotonic() >= next_tick:
                d.tick()
                next_tick = time.monotonic() + 1
            if select.select([stdin], [], [], 0)[0]:
                line = sys.stdin.readline()
                if not line:
                    break
                base = state()
                print(json.dumps(base), flush=True)
        end = state()
    finally:
        plane.close()
    print(json.dumps({k: (end[k] - base[k] if isinstance(end[k], int) else end[k]) for k in end}),
          flush=True)


def handshake_frames(dst_mac: bytes, src_mac: bytes, dst_ip: str, dport: int, first: int,
                     n: int, lag: int = 4096) -> list[bytes]:
    """``n`` connections' SYN and handshake ACK (``n`` // 2 tuples of ``many_frames``), each ACK
    ``lag`` tuples after its SYN (at 100 k frames/s, 80 ms: the SYN has been decided and its
    flow installed, as a client's ACK comes after the server's SYN-ACK). The ACKs of the last
    ``lag`` tuples close the list."""
    tuples = n // 2
    syns = many_frames(dst_mac, src_mac, dst_ip, dport, first, tuples)
    acks = many_frames(dst_mac, src_mac, dst_ip, dport, first, tuples, flags=0x10)
    out: list[bytes] = []
    for i in range(tuples):
        out.append(syns[i])
        if i >= lag:
            out.append(acks[i - lag])
    out.extend(acks[max(0, tuples - lag):])
    return out


def many_frames(dst_mac: bytes, src_mac: bytes, dst_ip: str, dport: int, first: int,
                n: int, flags: int = 0x02) -> list[bytes]:
    """``n`` TCP SYNs, each from a (source address, port) no other frame uses: tuple ``g``
    (from ``first``) comes from 10.200.0.0 + g // 60000 + 1, port 1024 + g % 60000. The
    AF_PACKET generator's frames come from one address and at most 64000 ports, so at the
    kernel's rate they repeat within the row; a SYN of a flow the program already made is the
    core's (a retransmission), so the mh row needs tuples that never repeat. The checksums are
    one template's plus what the address and port add (one's complement sums are linear)."""
    from pylvs.dataplane.packet import codec

    dst = socket.inet_aton(dst_ip)
    zero = bytes(4)
    seg0 = bytearray(struct.pack("!HHIIBBHHH", 0, dport, 1 if flags == codec.TCP_SYN else 2,
                                 0 if flags == codec.TCP_SYN else 1, 5 << 4, flags, 65535, 0, 0))
    ip0 = codec.ipv4_header(zero, dst, 6, len(seg0), ident=0)
    eth = codec.ethernet(dst_mac, src_mac, codec.ETH_P_IP)
    # sums with a zero source address and port: ~checksum gives them back
    tcp0 = (~codec.l4_checksum(zero, dst, 6, seg0)) & 0xFFFF
    ipsum0 = (~int.from_bytes(ip0[10:12], "big")) & 0xFFFF

    def fold(x: int) -> int:
        while x >> 16:
            x = (x & 0xFFFF) + (x >> 16)
        return x

    out = []
    for g in range(first, first + n):
        src = 0x0AC80000 + g // 60000 + 1
        sport = 1024 + g % 60000
        hi, lo = src >> 16, src & 0xFFFF
        ipc = (~fold(ipsum0 + hi + lo)) & 0xFFFF
        tcpc = (~fold(tcp0 + hi + lo + sport)) & 0xFFFF
        ip = ip0[:10] + ipc.to_bytes(2, "big") + src.to_bytes(4, "big") + ip0[16:]
        seg = sport.to_bytes(2, "big") + seg0[2:16] + (tcpc or 0xFFFF).to_bytes(2, "big") + seg0[18:]
        out.append(eth + ip + seg)
    return out


def role_gen_many(args: argparse.Namespace) -> None:
    """In the client namespace: ``bench_packet``'s TX ring generator sending ``many_frames``
    (all-new tuples) instead of its own."""
    import bench_packet

    g = json.loads(args.gen)

    def frames(dst_mac: bytes, src_mac: bytes, dst_ip: str, dport: int, n_flows: int,
               *_rest: object) -> list[bytes]:
        make = handshake_frames if g.get("handshake") else many_frames
        return make(dst_mac, src_mac, dst_ip, dport, g["first"], n_flows)

    bench_packet._frames = frames  # type: ignore[assignment]
    bench_packet.role_gen(argparse.Namespace(
        dst_mac=g["dst_mac"], src_mac=g["src_mac"], dst_ip=g["dst_ip"], dport=g["dport"],
        flows=g["n"], syn=True, payload=0, partial=False, sport_base=1024,
        seconds=g["seconds"], rate=g["rate"], py_loop=g.get("py_loop", False)))


class Bench:
    def __init__(self, lab: Any, args: argparse.Namespace, clock: SoftirqClock) -> None:
        self.lab, self.args, self.clock = lab, args, clock
        self.me = [sys.executable, os.path.abspath(__file__)]
        self.tmp = tempfile.mkdtemp(prefix="bench-xdp-")

    def counter(self, host: str, name: str, ifname: str = "eth0") -> int:
        r = self.lab.run(host, ["cat", f"/sys/class/net/{ifname}/statistics/{name}"], check=True)
        return int(r.stdout)

    def gens(self, dst_mac: str, dst_ip: str, dport: int, rate: int, seconds: float,
             syn: bool = False, many: bool = False, handshake: bool = False) -> int:
        """Run the generator processes at once; the frames they handed to the ring.
        ``many``: SYNs whose tuples never repeat (``many_frames``), disjoint per process."""
        n = self.args.gens
        src_mac = self.lab.mac("client").replace(":", "")
        if many:
            # enough tuples for the row: the rate asked, or flat out what a generator process
            # reaches here at most (about 250 k/s)
            per = int((rate // n if rate else 250_000) * seconds * 1.05) + 4096
            argvs = [[*self.me, "--role", "gen-many", "--gen", json.dumps(
                {"dst_mac": dst_mac, "src_mac": src_mac, "dst_ip": dst_ip, "dport": dport,
                 "first": k * per, "n": per, "seconds": seconds, "rate": rate // n,
                 "handshake": handshake, "py_loop": self.args.py_gen})]
                for k in range(n)]
        else:
            argv = [sys.executable, GEN, "--role", "gen", "--dst-mac", dst_mac,
                    "--src-mac", src_mac, "--dst-ip", dst_ip,
                    "--dport", str(dport), "--seconds", str(seconds), "--rate", str(rate // n),
                    "--flows", str(64000 if syn else self.args.flows), "--payload", "18"]
            if self.args.py_gen:
                argv.append("--py-loop")
            if syn:  # disjoint source ports: every SYN of every generator is a new connection
                argv.append("--syn")
                argv[argv.index("--flows") + 1] = str(64000 // n)
            argvs = [[*argv, "--sport-base", str(1024 + k * (64000 // n))] for k in range(n)]
        if self.args.pin:  # every generator on the last CPU, the director has the first
            argvs = [["taskset", "-c", str((os.cpu_count() or 1) - 1), *a] for a in argvs]
        procs = [self.lab.popen("client", a, stdout=subprocess.PIPE, text=True) for a in argvs]
        sent = 0
        for p in procs:
            out, _ = p.communicate(timeout=seconds + 120)  # + building many_frames
            if p.returncode:
                raise RuntimeError(f"generator failed ({p.returncode})")
            sent += json.loads(out.strip().splitlines()[-1])["sent"]
        return sent

    def row(self, name: str, rate: int = 0) -> dict[str, Any]:
        lab, secs = self.lab, self.args.seconds
        kind = name.split("-")
        plane = kind[0]  # direct, kernel, packet, xdp
        handshake = "-hs-" in name
        syn = name.startswith("xdp-syn") or handshake
        mh = name.startswith("xdp-syn-mh")
        sink_drop = name in ("xdp-syn-sink", "xdp-hs-sink", "xdp-hs-sink-ack-up",
                             "packet-hs-sink", "packet-hs-sink-ack-up")
        mode = "nat" if "nat" in kind else "dr"
        director: subprocess.Popen[str] | None = None
        listener: subprocess.Popen[str] | None = None
        dpid = 0
        forward = "1" if plane == "kernel" else "0"
        lab.run("director", ["sysctl", "-q", "-w", f"net.ipv4.ip_forward={forward}"], check=True)
        sink = "nat1" if plane == "kernel" or mode == "nat" else "rs1"
        if plane == "direct":
            dst_mac, dst_ip = lab.mac("rs1"), VIP  # the frame rs1 receives in the DR rows
        elif plane == "kernel":
            dst_mac, dst_ip = lab.mac("director"), NAT1
        else:
            dst_mac, dst_ip = lab.mac("director"), VIP
            argv = [*self.me, "--role", "director", "--plane", plane, "--mode", mode,
                    "--rip", NAT1 if mode == "nat" else RS1]
            if plane == "xdp":
                argv += ["--xdp-mode", "native" if kind[-1] in ("native", "wire") else "generic"]
            if syn:
                argv.append("--syn")
            if name.endswith("ack-up"):
                argv.append("--ack-up")
            if syn and mode == "nat":
                # the generator's sources (10.200/16) reached through the client, so that the
                # server's SYN-ACKs can go back (the lab's director has no default route), and
                # a listener on nat1 so that there are SYN-ACKs (the lab runs no servers here)
                lab.run("director", ["ip", "route", "replace", "default", "via", CLIENT],
                        check=True)
                listener = lab.popen("nat1", [sys.executable, "-c", LISTENER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert listener.stdout is not None
                listener.stdout.readline()
            if mh:  # the director's kernel learns the server's MAC before the plane starts
                argv += ["--sched", "mh"]
                lab.run("director", [sys.executable, "-c", ARP_POKE,
                                     NAT1 if mode == "nat" else RS1], check=False)
            if self.args.pin:
                argv = ["taskset", "-c", "0", *argv]
            director = lab.popen("director", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
            assert director.stdout is not None and director.stdin is not None
            line = director.stdout.readline()
            if not line.startswith("ready"):
                director.kill()
                raise RuntimeError(f"{name}: director did not start: {line!r}")
            dpid = int(line.split()[1])
            time.sleep(0.3)
            if not syn:  # warm-up: neighbours and every flow's entry made before counting
                self.gens(dst_mac.replace(":", ""), dst_ip, 80, 4000 * self.args.gens, 1.0)
                time.sleep(0.3)
        dst_mac = dst_mac.replace(":", "")
        # the UDP rows' sink drops the frames once counted: otherwise nat1 (the kernel and NAT
        # rows' sink) routes an ICMP port unreachable for each (perf: __icmp_send and its route
        # lookups), work the `direct` row's rs1 does not do and "net of direct" would charge
        # to those rows' director
        udp_sink = "" if syn or not self.args.sink_drop_udp else sink
        if sink_drop:
            self.sink_drop(True)
        if udp_sink:
            self.sink_drop(True, udp_sink, "ip protocol udp udp dport { 9, 80 }")
        wire = kind[-1] == "wire"
        if wire:
            self.set_wire(True)
        try:
            if director is not None:
                assert director.stdin is not None and director.stdout is not None
                director.stdin.write("go\n")
                director.stdin.flush()
                warm = json.loads(director.stdout.readline())
            c0 = (self.counter("client", "tx_packets"), self.counter(sink, "rx_packets"),
                  self.counter("director", "rx_packets"), self.counter("client", "rx_packets"))
            prog = self.prog_id() if plane == "xdp" else 0
            b0 = prog_runtime(prog)
            s0, p0 = self.clock.snapshot(), task_cpu_ns(dpid) if dpid else 0
            n0 = self.clock.director_napi()
            t0 = time.monotonic()
            # SYN rows: tuples that never repeat (one address's 64,000 ports would repeat within
            # a row above 32 k/s, and a repeated SYN is a retransmission, not a new connection)
            sent = self.gens(dst_mac, dst_ip, 9 if plane in ("kernel", "direct") else 80, rate,
                             secs, syn, many=syn, handshake=handshake)
            time.sleep(0.3)
            wall = time.monotonic() - t0
            s1, p1 = self.clock.snapshot(), task_cpu_ns(dpid) if dpid else 0
            n1 = self.clock.director_napi()
            b1 = prog_runtime(prog)
            c1 = (self.counter("client", "tx_packets"), self.counter(sink, "rx_packets"),
                  self.counter("director", "rx_packets"), self.counter("client", "rx_packets"))
        finally:
            if sink_drop:
                self.sink_drop(False)
            if udp_sink:
                self.sink_drop(False, udp_sink)
            if wire:
                self.set_wire(False)
            if syn and mode == "nat":
                lab.run("director", ["ip", "route", "del", "default", "via", CLIENT], check=False)
            if listener is not None:
                listener.communicate(timeout=10)  # closing stdin ends it
            stats: dict[str, Any] = {}
            if director is not None:
                out, _ = director.communicate(timeout=60)  # closing stdin ends it
                with contextlib.suppress(ValueError, IndexError):
                    stats = json.loads(out.strip().splitlines()[-1])
        offered, fwd, at_dir, back = (c1[i] - c0[i] for i in range(4))
        soft = sum(s1.values()) - sum(s0.values())
        soft_in_dir = s1.get(dpid, 0) - s0.get(dpid, 0) if dpid else 0
        proc = p1 - p0
        res: dict[str, Any] = {
            "name": name, "rate": rate, "sent": sent, "offered": offered, "forwarded": fwd,
            "at_director": at_dir,
            # a handful of the sink's own frames (ARP, ND) can make it negative: clamp
            "loss": max(0.0, 1 - fwd / offered) if offered else 0.0,
            "pps_offered": offered / secs, "pps": fwd / secs, "wall": wall,
            "proc_ns": proc, "softirq_ns": soft, "softirq_in_director_ns": soft_in_dir,
            "cpu_us_per_packet": (proc + soft - soft_in_dir) / 1e3 / max(1, fwd),
            "proc_us_per_packet": proc / 1e3 / max(1, fwd),
        }
        if prog and b1[1] > b0[1]:
            res["prog_ns_per_run"] = (b1[0] - b0[0]) / (b1[1] - b0[1])
        if n1[1] - n0[1] >= fwd // 2 > 0:  # the director's interfaces had NAPI (native XDP)
            res["napi_us_per_packet"] = (n1[0] - n0[0]) / 1e3 / fwd
            res["napi_packets"] = n1[1] - n0[1]
        if stats:
            res["director"] = stats
            res["warm_xdp_flows"] = warm.get("xdp_flows", 0)
            res["via_xdp"] = stats.get("xdp_fwd", 0) / fwd if fwd else 0.0
            res["conns_per_s"] = stats.get("conns", 0) / secs if syn else None
            if handshake:  # per connection (a SYN and its ACK), and the ACKs the core saw
                # (the packet plane's: what its Python path forwarded beyond the SYNs)
                up = (stats.get("pass_no_flow", 0) if plane == "xdp" else
                      stats.get("forwarded", 0) - stats.get("fast", 0) - stats.get("conns", 0))
                res["acks_up"] = max(0, up) / max(1, offered // 2)
                res["proc_us_per_conn"] = proc / 1e3 / max(1, offered // 2)
            if syn and mode == "nat":  # the server's SYN-ACKs that reached the client, and
                # the share the program answered from the reply flows it made
                res["replies_per_s"] = back / secs
                res["reply_flows"] = (stats.get("mh_reply", 0) / stats["mh_scheduled"]
                                      if stats.get("mh_scheduled") else 0.0)
            if mh:
                res["mh_per_s"] = stats.get("mh_scheduled", 0) / secs
                # the director process does little else in this row than entering the
                # program's connections: its own CPU time per entered one (both counted by
                # the director from "go" to its end) bounds the entering's cost
                entered = stats.get("imported", 0)
                res["entered"], res["lost"] = entered, stats.get("mh_queue_full", 0)
                res["repaired"] = stats.get("repaired", 0)
                res["entered_per_s"] = entered / (stats.get("wall_ns", 0) / 1e9 or secs)
                res["proc_us_per_entered"] = (stats.get("cpu_ns", 0) / 1e3 / entered
                                              if entered else 0.0)
        return res

    def sink_drop(self, on: bool, host: str = "rs1", rule: str = f"ip daddr {VIP} ip protocol tcp"
                  ) -> None:
        """``host`` as a counting sink: what ``rule`` matches (by default TCP to the VIP: SYNs,
        the handshake rows' ACKs) dropped at its eth0's ingress hook, after veth counted it in
        ``rx_packets``, so its stack never answers."""
        script = "table netdev pylvs_bench_sink\ndelete table netdev pylvs_bench_sink\n"
        if on:
            script += ("table netdev pylvs_bench_sink {\n  chain in {\n"
                       "    type filter hook ingress device eth0 priority 0; policy accept;\n"
                       f"    {rule} drop\n  }}\n}}\n")
        self.lab.run(host, ["nft", "-f", "-"], input=script, check=True)

    def prog_id(self) -> int:
        """The id of the XDP program on the director's eth0 (0: none)."""
        r = self.lab.run("director", ["ip", "-j", "-d", "link", "show", "eth0"], check=True)
        xdp = json.loads(r.stdout)[0].get("xdp", {})
        prog: dict[str, Any] = xdp.get("prog") or next(
            (a.get("prog", {}) for a in xdp.get("attached", [])), {})
        return int(prog.get("id", 0))

    def set_peer_napi(self, on: bool) -> None:
        """Native XDP on the director's veths needs NAPI on their bridge-side peers; for XDP_TX
        (DR) GRO is not enough on this kernel: veth flushes XDP_TX frames to the peer only when
        the peer has an XDP program (``veth_xdp_flush``), so with GRO alone the peer's ring
        fills after 256 frames and every later one is an ``xdp_tx_error``. So the native rows
        get an XDP program that passes everything on both peers (benchmark set-up only)."""
        for port in ("director0", "director1"):
            # (off first: ip refuses to attach over a program already there)
            self.lab.run("lan", ["ip", "link", "set", "dev", port, "xdpdrv", "off"], check=False)
            if on:
                self.lab.run("lan", ["ip", "link", "set", "dev", port, "xdpdrv", "obj",
                                     self.pass_obj(), "sec", "xdp"], check=True)

    def set_wire(self, on: bool) -> None:
        """The wire rows' set-up (with ``set_peer_napi(True)``): ``WIRE_PROGRAM`` on client0,
        redirecting the generator's frames into director0, whose peer is the director's eth0;
        benchmark set-up only, removed after the row."""
        self.lab.run("lan", ["ip", "link", "set", "dev", "client0", "xdpdrv", "off"], check=False)
        if not on:
            return
        mac = bytes.fromhex(self.lab.mac("director").replace(":", ""))
        ifindex = int(self.lab.run("lan", ["cat", "/sys/class/net/director0/ifindex"],
                                   check=True).stdout)
        src = os.path.join(self.tmp, "xdp_wire.c")
        obj = os.path.join(self.tmp, "xdp_wire.o")
        with open(src, "w") as f:
            f.write(WIRE_PROGRAM % {"ifindex": ifindex, "mac_test": " || ".join(
                f"d[{i}] != {b}" for i, b in enumerate(mac))})
        arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True,
                              check=False).stdout.strip() or "x86_64-linux-gnu"
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", f"-I/usr/include/{arch}", "-c",
                        src, "-o", obj], check=True)
        self.lab.run("lan", ["ip", "link", "set", "dev", "client0", "xdpdrv", "obj", obj,
                             "sec", "xdp"], check=True)

    def pass_obj(self) -> str:
        path = os.path.join(self.tmp, "xdp_pass.o")
        if not os.path.exists(path):
            src = os.path.join(self.tmp, "xdp_pass.c")
            with open(src, "w") as f:
                f.write(PASS_PROGRAM)
            subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-c", src, "-o", path],
                           check=True)
        return path


# one datagram to the address (port 9, discard) makes the kernel resolve its MAC
# the NAT SYN rows' real server: a listener on port 80 (never accepting), so that nat1 answers
# each SYN with a SYN-ACK (its SYN queue full, with a cookie) rather than a RST; ends with stdin
LISTENER = ("import socket, sys\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', 80)); s.listen(4096); print('listening', flush=True)\n"
            "sys.stdin.read()\n")

ARP_POKE = ("import socket, sys, time\n"
            "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', (sys.argv[1], 9))\n"
            "time.sleep(0.5)\n")

# the wire rows' program on the client's bridge port (client0): every frame addressed to the
# director's MAC redirected straight into the director's veth (ndo_xdp_xmit), so it arrives there
# as an XDP frame, as a NIC's driver hands its ring's buffers to XDP, and not as an skb that
# veth must first copy into an XDP buffer; anything else (ARP) goes on to the bridge
WIRE_PROGRAM = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int xdp_wire(struct xdp_md *ctx)
{
    unsigned char *d = (unsigned char *)(long)ctx->data;
    if (d + 14 > (unsigned char *)(long)ctx->data_end)
        return XDP_PASS;
    if (%(mac_test)s)
        return XDP_PASS;
    return bpf_redirect(%(ifindex)d, 0);
}
char LICENSE[] SEC("license") = "GPL";
"""

PASS_PROGRAM = """struct xdp_md;
__attribute__((section("xdp"), used)) int xdp_pass(struct xdp_md *ctx) { return 2; /* PASS */ }
char LICENSE[] __attribute__((section("license"), used)) = "GPL";
"""


def no_loss_rate(b: Bench, name: str, ladder: list[int], seconds: float,
                 paced: list[dict[str, Any]]) -> tuple[int, str]:
    """Bisect ``ladder`` for the highest SYN rate ``name`` forwards without loss (< 0.1 %);
    (that rate, why it is not higher when the generator was the limit)."""
    best = (0, "")
    lo, hi = -1, len(ladder)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        r = b.row(name, ladder[mid])
        paced.append(r)
        short = r["offered"] < 0.9 * ladder[mid] * seconds
        ok = r["loss"] <= 0.001 and not short
        mh = f", {r['mh_per_s']:,.0f} scheduled in the kernel/s" if "mh_per_s" in r else ""
        print(f"  {name} at {ladder[mid]:,}/s: offered {r['pps_offered']:,.0f}/s, "
              f"lost {r['loss']:.2%}{' (generator short)' if short else ''}, "
              f"{r['conns_per_s'] or 0:,.0f} conns/s entered by the core{mh}",
              file=sys.stderr, flush=True)
        if r["loss"] <= 0.001:
            best = max(best, (round(r["pps_offered"]), ""))
        if ok:
            lo = mid
        else:
            hi = mid
            if short:
                best = (best[0], f"the generator reached only {r['pps_offered']:,.0f}/s when "
                                 f"asked {ladder[mid]:,}")
    return best


def check_trafficgen(lab: Any) -> str:
    """One attempt at xdp-trafficgen on the client's veth; its output (the reason it fails)."""
    r = lab.run("client", ["timeout", "-s", "INT", "3", "xdp-trafficgen", "udp", "eth0",
                           "-m", lab.mac("director"), "-a", VIP, "-p", "80", "-n", "1000"],
                check=False)
    return f"exit {r.returncode}: " + " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:])


def fmt_row(r: dict[str, Any], base_us: float, secs: float) -> str:
    direct = r["name"] == "direct"
    cpu = r["cpu_us_per_packet"]
    net = "" if direct else f"{cpu - base_us:.2f}"
    via = f"{r['via_xdp']:.0%}" if "via_xdp" in r else ""
    conns = f"{r['conns_per_s']:,.0f}" if r.get("conns_per_s") else ""
    if "mh_per_s" in r:  # scheduled in the kernel / entered in the core's table
        conns = (f"{r['mh_per_s']:,.0f} in the kernel, {r.get('entered_per_s', 0):,.0f} entered"
                 f" ({r.get('proc_us_per_entered', 0):.1f} µs each), {r.get('lost', 0):,} lost"
                 f" from the ring, {r.get('repaired', 0):,} repaired")
    if "acks_up" in r:
        conns += (f"; {r['acks_up']:.0%} of the ACKs up to the core, director process "
                  f"{r['proc_us_per_conn']:.2f} µs per connection")
    if "replies_per_s" in r:
        conns += (f"; {r['replies_per_s']:,.0f} SYN-ACKs back to the client/s, "
                  f"{r['reply_flows']:.0%} of the connections answered by the program")
    rate = f"{r['rate']:,}" if r["rate"] else "flat out"
    if r["rate"] and r["offered"] < 0.9 * r["rate"] * secs:
        rate += f" (generator reached {r['pps_offered']:,.0f})"
    prog = f"{r['prog_ns_per_run']:.0f}" if "prog_ns_per_run" in r else ""
    napi = f"{r['napi_us_per_packet']:.2f}" if "napi_us_per_packet" in r else ""
    return (f"| {r['name']} | {rate} | {r['pps_offered']:,.0f} | {r['pps']:,.0f} | {r['loss']:.2%} "
            f"| {cpu:.2f} | {net} | {r['proc_us_per_packet']:.2f} | {napi} | {prog} | {via} "
            f"| {conns} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--role", choices=["bench", "director", "gen-many"], default="bench")
    p.add_argument("--gen", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--sched", choices=["rr", "mh"], default="rr")
    p.add_argument("--plane", choices=["packet", "xdp"], default="xdp")
    p.add_argument("--mode", choices=["dr", "nat"], default="dr")
    p.add_argument("--xdp-mode", choices=["generic", "native"], default="generic")
    p.add_argument("--rip", default=RS1)
    p.add_argument("--syn", action="store_true")
    p.add_argument("--ack-up", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--flows", type=int, default=1000)
    p.add_argument("--gens", type=int, default=os.cpu_count() or 1,
                   help="generator processes at once (default: one per core)")
    p.add_argument("--rows", default="",
                   help="rows to run (default: direct,kernel,packet-dr,packet-nat,"
                        "xdp-dr-generic,xdp-nat-generic,xdp-syn,xdp-syn-sink,xdp-hs-sink,"
                        "xdp-hs-sink-ack-up,packet-hs-sink,packet-hs-sink-ack-up,xdp-syn-mh,"
                        "xdp-syn-mh-nat, and "
                        "with --native-peers also kernel-napi,xdp-dr-native,xdp-nat-native,"
                        "xdp-dr-wire,xdp-nat-wire)")
    p.add_argument("--native-peers", action="store_true",
                   help="benchmark investigation only: the native rows (kernel-napi, "
                        "xdp-*-native) attach a pass-through XDP program to the lab's "
                        "bridge-side peers of the director's veths, which changes hosts other "
                        "than the director; off by default, and without it those rows are refused")
    p.add_argument("--target", type=float, default=0.95,
                   help="paced check at this fraction of kernel forwarding's rate (0: none)")
    p.add_argument("--syn-rates", default=",".join(str(r) for r in range(10_000, 150_001, 10_000)))
    p.add_argument("--hs-rates", default=",".join(str(r) for r in range(20_000, 240_001, 20_000)),
                   help="frames/s for the handshake rows (a SYN and an ACK per connection)")
    p.add_argument("--syn-mh-rates",
                   default=",".join(str(r) for r in range(50_000, 600_001, 50_000)))
    p.add_argument("--bridge-nf", choices=["on", "off"], default="off",
                   help="netfilter on the lab's bridges (off: a plain switch, as in the first "
                        "table of bench_packet)")
    p.add_argument("--pin", action="store_true",
                   help="the director process on CPU 0, the generators on the last CPU: the "
                        "director's work on one core of its own (the frames' receive softirq "
                        "runs where the generators send them)")
    p.add_argument("--rps-peers", action="store_true",
                   help="benchmark investigation only, with --pin: RPS on the lab bridge's "
                        "ports facing the director sends what the director transmits to the "
                        "last CPU, so the lab's share of each frame (the bridge, the real "
                        "server's receive) runs there, as it would on other machines, and not "
                        "inside the director's send() on its own core; changes hosts other "
                        "than the director, off by default")
    p.add_argument("--no-sink-drop-udp", dest="sink_drop_udp", action="store_false",
                   help="let the UDP rows' sink's stack see the frames (and answer each with an "
                        "ICMP port unreachable, as before 2026-12-08)")
    p.add_argument("--py-gen", action="store_true",
                   help="the generators fill their TX rings from Python, as before 2026-12-08 "
                        "(by default the packet plane's C ring queue() does)")
    p.add_argument("--check-xdp-trafficgen", action="store_true")
    p.add_argument("--json", default="", help="also write every row to this file")
    p.add_argument("--repeat", type=int, default=1_000_000,
                   help="BPF_PROG_TEST_RUN runs of the program alone (0: skip)")
    args = p.parse_args()
    if args.role == "director":
        with contextlib.suppress(OSError):
            os.nice(-10)
        role_director(args)
        return 0
    if args.role == "gen-many":
        role_gen_many(args)
        return 0
    native = ("kernel-napi", "xdp-dr-native", "xdp-nat-native", "xdp-dr-wire", "xdp-nat-wire")
    if not args.rows:
        args.rows = ",".join(["direct", "kernel", "packet-dr", "packet-nat", "xdp-dr-generic",
                              "xdp-nat-generic", "xdp-syn", "xdp-syn-sink", "xdp-hs-sink",
                              "xdp-hs-sink-ack-up", "packet-hs-sink", "packet-hs-sink-ack-up",
                              "xdp-syn-mh", "xdp-syn-mh-nat"]
                             + (list(native) if args.native_peers else []))
    if not args.native_peers and any(n in native for n in args.rows.split(",")):
        print("bench_xdp: the native rows change hosts other than the director (XDP programs "
              "on the lab bridge's ports); run them only with --native-peers", file=sys.stderr)
        return 2
    if args.rps_peers and not args.pin:
        print("bench_xdp: --rps-peers moves the lab's work off the director's core: it needs "
              "--pin (the director on the first CPU)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench_xdp: needs root (network namespaces, XDP, bpftrace)", file=sys.stderr)
        return 1
    from pylvs.dataplane.xdp.loader import XdpProgram, XdpUnavailable
    try:
        XdpProgram().close()
    except XdpUnavailable as exc:
        print(f"bench_xdp: {exc}", file=sys.stderr)
        return 1
    from pylvs.lab import Lab

    # BPF_PROG_TEST_RUN touches no interface (the frame never leaves the call)
    alone = program_alone(args.repeat) if args.repeat else {}
    load_before = os.getloadavg()
    lab = Lab(f"x{os.getpid() % 100000}", servers=False)
    clock: SoftirqClock | None = None
    b: Bench | None = None
    stats_was: str | None = None
    rows: list[dict[str, Any]] = []
    paced: list[dict[str, Any]] = []
    syn_best: dict[str, tuple[int, str]] = {}
    tg = ""
    try:
        lab.up()
        nf = "1" if args.bridge_nf == "on" else "0"
        lab.run("lan", ["sysctl", "-q", "-w", f"net.bridge.bridge-nf-call-iptables={nf}",
                        f"net.bridge.bridge-nf-call-ip6tables={nf}",
                        f"net.bridge.bridge-nf-call-arptables={nf}"], check=False)
        if args.rps_peers:
            last = f"{1 << (os.cpu_count() or 1) - 1:x}"
            for port in ("director0", "director1"):
                lab.run("lan", ["sh", "-c", f"echo {last} > /sys/class/net/{port}/queues/rx-0/"
                                            "rps_cpus"], check=True)
        if args.check_xdp_trafficgen:
            tg = check_trafficgen(lab)
            print(f"xdp-trafficgen: {tg}", file=sys.stderr)
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            stats_was = f.read().strip()
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        clock = SoftirqClock()
        b = Bench(lab, args, clock)
        names = [n for n in args.rows.split(",") if n]
        gro = False
        kernel_rate: dict[bool, float] = {}
        for name in names:
            if name in native and not gro:
                b.set_peer_napi(True)  # only with --native-peers (checked above)
                gro = True
            r = b.row(name)
            r["napi"] = gro
            rows.append(r)
            if name.startswith("kernel"):
                kernel_rate[gro] = r["pps"]
            print(json.dumps({k: v for k, v in r.items() if k != "director"}), file=sys.stderr,
                  flush=True)
        if args.target:
            for g in (False, True):
                # (the wire rows have no kernel reference fed their way: not paced)
                todo = [r["name"] for r in rows if r["napi"] == g and r["name"].split("-")[0]
                        in ("packet", "xdp") and not r["name"].startswith("xdp-syn")
                        and "-hs-" not in r["name"] and not r["name"].endswith("-wire")]
                if not todo or g not in kernel_rate:
                    continue
                if args.native_peers:
                    b.set_peer_napi(g)
                rate = int(args.target * kernel_rate[g])
                for name in todo:
                    r = b.row(name, rate)
                    r["napi"] = g
                    paced.append(r)
                    print(json.dumps({k: v for k, v in r.items() if k != "director"}),
                          file=sys.stderr, flush=True)
        if gro and args.native_peers:
            b.set_peer_napi(False)
        for syn_row, rates in (("xdp-syn", args.syn_rates), ("xdp-syn-sink", args.syn_rates),
                               ("xdp-hs-sink", args.hs_rates),
                               ("xdp-hs-sink-ack-up", args.hs_rates),
                               ("packet-hs-sink", args.hs_rates),
                               ("packet-hs-sink-ack-up", args.hs_rates),
                               ("xdp-syn-mh", args.syn_mh_rates),
                               ("xdp-syn-mh-nat", args.syn_mh_rates)):
            if syn_row in names:
                syn_best[syn_row] = no_loss_rate(b, syn_row, [int(x) for x in rates.split(",")],
                                                 args.seconds, paced)
    finally:
        if stats_was is not None:
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write(stats_was)
        if clock is not None:
            clock.close()
        lab.down()
        if b is not None:
            shutil.rmtree(b.tmp, ignore_errors=True)
    load_after = os.getloadavg()
    base = next((r["cpu_us_per_packet"] for r in rows if r["name"] == "direct"), 0.0)
    print(f"\nXDP plane vs kernel forwarding and the AF_PACKET plane: {args.seconds:g} s per row, "
          f"64-byte UDP frames over {args.flows} flows, {args.gens} AF_PACKET generator "
          f"processes, bridge netfilter {args.bridge_nf}; load average {load_before[0]:.2f} "
          f"{load_before[1]:.2f} {load_before[2]:.2f} before, {load_after[0]:.2f} "
          f"{load_after[1]:.2f} {load_after[2]:.2f} after")
    if tg:
        print(f"xdp-trafficgen: {tg}")
    print("\n| row | paced at | offered/s | forwarded/s | loss | director CPU µs/pkt | net of "
          "`direct` | director process µs/pkt | director NAPI µs/pkt | XDP program ns/run | "
          "via XDP | new conns/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows + paced:
        print(fmt_row(r, base, args.seconds))
    for g, krate in sorted(kernel_rate.items()):
        setup = " (XDP pass programs on the director's peers)" if g else ""
        print(f"kernel forwarding{setup}: {krate:,.0f}/s; "
              f"target {args.target:g}x = {args.target * krate:,.0f}/s")
    for name, (verdict, ns) in alone.items():
        print(f"XDP program alone (BPF_PROG_TEST_RUN x {args.repeat:,}), {name}: {ns:.0f} ns per "
              f"packet, verdict {['ABORTED', 'DROP', 'PASS', 'TX', 'REDIRECT'][verdict]}")
    for syn_row, (best, why) in syn_best.items():
        what = (f"frames (a SYN and an ACK per connection): {best:,}/s = {best // 2:,} "
                f"connections/s" if "-hs-" in syn_row else f"SYN rate: {best:,}/s")
        print(f"{syn_row}: highest {what} with no loss" + (f" ({why})" if why else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "paced": paced, "alone": alone, "syn_best": syn_best,
                       "load": [load_before, load_after], "trafficgen": tg}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
