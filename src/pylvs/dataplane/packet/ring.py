"""AF_PACKET sockets with memory-mapped TPACKET_V3 rings: frames in and out without a system
call per packet.

What this is for: the ``packet`` data plane's I/O, one ``PacketRing`` per director interface.
Receiving: the kernel fills blocks of the RX ring and marks them ready; ``receive`` walks every
ready block and hands each frame that was addressed to this host (or broadcast) to a callback,
then returns the block to the kernel. Sending: frames are copied into free slots of the TX ring
and one ``send()`` flushes a whole batch (optionally with ``PACKET_QDISC_BYPASS``, straight to the
driver, invisible to tcpdump);
frames bigger than a slot go out by a plain ``send`` on a second socket. The layout constants are those of
``include/uapi/linux/if_packet.h``.

Offloads: the socket is opened with ``PACKET_VNET_HDR`` (when the kernel has it), so every
received frame comes with the ``virtio_net_hdr`` its sender's stack left: a partial checksum
(TX checksum offload, the default on veth/virtio/tap) is completed in place before anyone looks
at the frame, a checksum the device verified is marked good, and a TSO/GSO super-frame is
flagged with its ``gso_size`` for the forwarder to cut (``offload``). Each frame's verdict is
``rx_meta`` while the callback runs. Frames the ring could not hold whole (``tp_snaplen <
tp_len``) are dropped and counted (``rx_truncated``). TX slots carry a vnet header that says
the frame is whole and checksummed, and has the kernel copy all of it into its skb (``_TX_VNET``:
why).

The ring carries IPv4 and IPv6 (bound to every protocol, with a classic BPF filter that lets
only those two through, IPv6 neighbour discovery excepted); ARP and neighbour discovery have
their own small sockets (``ArpSocket``, ``NdSocket``) so that a full ring never starves
neighbour resolution.

With ``fast=True`` and the C extension built (``_fastpath``; ``PYLVS_PACKET_FASTPATH=0`` turns it
off) the ring walk and every TX slot belong to a ``_fastpath.Ring``: ``receive`` can then forward
frames of installed flows without calling back into Python, and ``queue``/``flush`` go through the
same C object, so the reader position and the TX slots have one owner. Without it the Python code
below does the same work, frame by frame.

Overload (C ring only): a connection-opening TCP SYN (SYN without ACK, RST or FIN) that waited
in the ring longer than ``syn_max_lag`` seconds among a flood's frames (its ring block holds 8
or more: a trickle read late, as after a link flap, sheds nothing) is dropped in C and counted
(``syn_shed``) instead of being handed to Python. Why: when a flood arrives faster than the interpreter
schedules new connections, the ring fills and the kernel then drops whatever comes next, the
packets of live connections among them, while every frame still read waits up to a whole ring
(about a second) behind the flood. Kernel IPVS never queues; shedding only stale SYNs keeps the
ring short and the connections already made unharmed, and a client whose SYN was shed sends it
again (1 s, 3 s), as after a drop by the kernel's ``drop_packet``. That retransmission (same
addresses, ports and sequence number as a shed SYN: spoofed SYNs are never sent twice) is let
through while the reader is less than 4 x ``syn_max_lag`` behind and the ring less than three
quarters full (``syn_retried``), so real clients get in on their first retry, and a flood that
sends its SYNs again cannot use that to fill the ring; fingerprints of shed SYNs take 8 MiB per
ring, allocated at the first shed. The same walk checks an
IPv4 SYN's TCP checksum (what the new-connection path asks first) and marks it good
(``offload.META_CSUM_OK``) when it is, so the interpreter does not compute it.

What this is not for: deciding anything about the frames (``forward``) or configuring interfaces.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from pylvs.dataplane.packet import offload
from pylvs.dataplane.packet.offload import VNET_HDR_LEN

try:
    from pylvs.dataplane.packet import _fastpath
except ImportError:  # built without a compiler: the pure-Python path does everything
    _fastpath = None  # type: ignore[assignment]

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
SO_ATTACH_FILTER = 26
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_MR_MULTICAST = 0

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2
TP_STATUS_WRONG_FORMAT = 4
TP_STATUS_CSUMNOTREADY = 1 << 3  # partial checksum (the vnet header says where)
TP_STATUS_CSUM_VALID = 1 << 7  # the device verified the checksum

PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2

# classic BPF (struct sock_filter: code, jt, jf, k); jumps count instructions after the next
_LDH, _LDB, _JEQ, _JGE, _JGT, _RET = 0x28, 0x30, 0x15, 0x35, 0x25, 0x06
_ALL = 0xFFFFFFFF  # accept the whole frame
# the ring: IPv4, or IPv6 that is not ICMPv6 types 133-137 (router/neighbour discovery)
RING_FILTER = (
    (_LDH, 0, 0, 12), (_JEQ, 6, 0, ETH_P_IP), (_JEQ, 0, 6, ETH_P_IPV6),
    (_LDB, 0, 0, 20), (_JEQ, 0, 3, 58), (_LDB, 0, 0, 54), (_JGE, 0, 1, 133), (_JGT, 0, 1, 137),
    (_RET, 0, 0, _ALL), (_RET, 0, 0, 0),
)
# the ND socket: IPv6 whose next header is ICMPv6 of type 135 or 136 (NS, NA)
ND_FILTER = (
    (_LDH, 0, 0, 12), (_JEQ, 0, 6, ETH_P_IPV6), (_LDB, 0, 0, 20), (_JEQ, 0, 4, 58),
    (_LDB, 0, 0, 54), (_JGE, 0, 2, 135), (_JGT, 1, 0, 136),
    (_RET, 0, 0, _ALL), (_RET, 0, 0, 0),
)


def attach_filter(sock: socket.socket, program: tuple[tuple[int, int, int, int], ...]) -> None:
    """Attach a classic BPF program (SO_ATTACH_FILTER): the kernel copies it."""
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                    struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(buf)))

TPACKET3_HDRLEN = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
_BLOCK = struct.Struct("=IIIIIIQ")  # version, offset_to_priv, block_status, num_pkts, offset_first
_PKT = struct.Struct("=IIIIIIHH")  # next_offset, sec, nsec, snaplen, len, status, mac, net
_REQ3 = struct.Struct("=IIIIIII")
_U32 = struct.Struct("=I")
Frame = bytes | bytearray | memoryview
# A TX slot's virtio_net_hdr: no checksum to complete, no GSO, and hdr_len (little-endian)
# the whole frame. Why hdr_len: the kernel copies that many bytes into the skb's linear part
# and attaches the rest of the slot as a page fragment; a device that hands the skb on (veth:
# containers, the lab) must then copy that fragment into a page of its own
# (``skb_copy_ubufs``), one page allocated per frame. Linear, a 64-byte frame cost the sender
# 1.18 µs on a veth instead of 1.62, a 1,500-byte one 1.26 instead of 1.66 (``make bench-tx``,
# BENCHMARKS.md "Transmit"). A real NIC takes either.
_TX_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
RxFrame = bytearray | memoryview  # what receive() hands out: writable
_PKT_HOT = struct.Struct("=I8xIIIH")  # tp_next_offset, tp_snaplen, tp_len, tp_status, tp_mac
_LEN_STATUS = struct.Struct("=II")  # tp_len, tp_status


def fastpath_built() -> bool:
    """Whether the C hot path was compiled for this installation."""
    return _fastpath is not None


def fastpath_wanted(option: bool | None = None) -> bool:
    """Whether to run the C hot path: built, not turned off by ``PYLVS_PACKET_FASTPATH=0``
    and not by the data plane's option (None: on when built)."""
    if _fastpath is None or option is False:
        return False
    return os.environ.get("PYLVS_PACKET_FASTPATH", "1").strip().lower() not in ("0", "no", "off", "false")


class PacketRing:
    """One interface's AF_PACKET socket with an RX ring and a TX ring."""

    # Many small blocks: the kernel hands a block over when it is full or ``block_timeout_ms``
    # after its first frame, so at ~100 k frames/s each block holds only a couple of
    # milliseconds; the ring's slack against a reader that is not scheduled is about
    # block_nr x block_timeout_ms (16 blocks of 256 KiB held 32 ms, 128 of 64 KiB hold 256 ms).
    # Blocks of 128 KiB: a GSO super-frame (up to 64 KiB) must fit one block whole.
    # 128 of them (16 MiB, about 100 k small frames): with stale SYNs shed (see "Overload") a
    # flood no longer keeps the ring full, and its depth is how far a reader that stops for a
    # while (a GC pause: 100-200 ms with a full connection table; not being scheduled) can
    # fall behind without the kernel dropping frames. 64 blocks lost 2-3 % of a 210 k SYNs/s
    # flood that way, the retransmissions of shed SYNs among them (BENCHMARKS.md).
    def __init__(self, ifname: str, block_size: int = 1 << 17, block_nr: int = 128,
                 frame_size: int = 2048, tx_frames: int = 1024, block_timeout_ms: int = 2,
                 qdisc_bypass: bool = False, protocol: int = ETH_P_ALL, fast: bool = False,
                 vnet: bool = True, syn_max_lag: float = 0.0) -> None:
        self.ifname = ifname
        self.fast: Any = None  # the _fastpath.Ring owning the reader and the TX slots
        self.protocol = protocol
        # protocol 0 until bound: no frames of other interfaces slip into the ring meanwhile
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        if protocol == ETH_P_ALL:  # IPv4 and IPv6 only (see RING_FILTER), set before bind
            try:
                attach_filter(self.sock, RING_FILTER)
            except OSError:
                self.sock.close()
                raise
        self.vnet_len = 0  # VNET_HDR_LEN once the kernel accepted PACKET_VNET_HDR
        self._tx_linear = True
        self.rx_meta = 0  # the verdict on the frame the callback is looking at (offload.META_*)
        self._rx_truncated = 0
        try:
            if vnet:
                try:
                    self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                    self.vnet_len = VNET_HDR_LEN
                except OSError:
                    pass  # partial checksums are then completed from the frame's own headers
            self._setup(block_size, block_nr, frame_size, tx_frames, block_timeout_ms, qdisc_bypass)
            if fast and _fastpath is not None:
                self.fast = _fastpath.Ring(self.mm, self.view, self.sock.fileno(), self.ifindex,
                                           self.rx_size, block_size, self.block_nr, frame_size,
                                           self.tx_nr, self.vnet_len)
                self.fast.syn_max_lag = syn_max_lag
        except OSError:
            self.sock.close()
            raise

    def _setup(self, block_size: int, block_nr: int, frame_size: int, tx_frames: int,
               tov: int, bypass: bool) -> None:
        s = self.sock
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        try:
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # older kernels: outgoing frames are skipped by their packet type instead
        if bypass:  # faster, but then tcpdump on the director no longer sees what we send
            try:
                s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            except OSError:
                pass
        s.setsockopt(SOL_PACKET, PACKET_RX_RING,
                     _REQ3.pack(block_size, block_nr, frame_size, block_size * block_nr // frame_size,
                                tov, 0, 0))
        tx_block = 1 << 16
        tx_per_block = tx_block // frame_size
        tx_blocks = max(1, tx_frames // tx_per_block)
        s.setsockopt(SOL_PACKET, PACKET_TX_RING,
                     _REQ3.pack(tx_block, tx_blocks, frame_size, tx_blocks * tx_per_block, 0, 0, 0))
        self.rx_size = block_size * block_nr
        self.tx_size = tx_block * tx_blocks
        self.mm = mmap.mmap(s.fileno(), self.rx_size + self.tx_size,
                            mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.mm)
        self.block_size = block_size
        self.block_nr = block_nr
        self.frame_size = frame_size
        self.tx_nr = tx_blocks * tx_per_block
        self.tx_max = frame_size - TPACKET3_HDRLEN - self.vnet_len
        self._rx_cur_py = 0
        self._tx_cur = 0
        self._tx_pending = 0
        s.bind((self.ifname, self.protocol))  # CPython applies htons here itself
        self.ifindex: int = socket.if_nametoindex(self.ifname)
        s.setblocking(False)
        self._rx_frames = 0
        self._tx_sent = 0
        self.tx_fallback = 0
        self._tx_errors = 0
        self.kernel_packets = 0
        self.kernel_drops = 0
        self._tx_ring_full = 0
        self._plain: socket.socket | None = None

    # counters: what the Python code counted plus what the C ring counted
    @property
    def rx_frames(self) -> int:
        return self._rx_frames + (self.fast.rx_frames if self.fast is not None else 0)

    @property
    def rx_truncated(self) -> int:
        """Frames dropped because the ring held only part of them (snaplen < len)."""
        return self._rx_truncated + (self.fast.rx_truncated if self.fast is not None else 0)

    @property
    def tx_sent(self) -> int:
        return self._tx_sent + (self.fast.tx_sent if self.fast is not None else 0)

    @property
    def tx_errors(self) -> int:
        return self._tx_errors + (self.fast.tx_errors if self.fast is not None else 0)

    @property
    def tx_ring_full(self) -> int:
        return self._tx_ring_full + (self.fast.tx_ring_full if self.fast is not None else 0)

    @property
    def syn_shed(self) -> int:
        """Connection-opening SYNs dropped in C because the reader was behind (C ring only)."""
        return self.fast.syn_shed if self.fast is not None else 0

    @property
    def syn_retried(self) -> int:
        """Late SYNs let through as retransmissions of shed ones (C ring only)."""
        return self.fast.syn_retried if self.fast is not None else 0

    @property
    def fast_frames(self) -> int:
        """Frames the C flow table forwarded without Python."""
        return self.fast.fast_frames if self.fast is not None else 0

    @property
    def _rx_cur(self) -> int:
        return self.fast.rx_cur if self.fast is not None else self._rx_cur_py

    @_rx_cur.setter
    def _rx_cur(self, value: int) -> None:
        if self.fast is not None:
            self.fast.rx_cur = value
        else:
            self._rx_cur_py = value

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, on_frame: Callable[[RxFrame], None], max_blocks: int = 0,
                flows: Any = None) -> int:
        """Hand every ready frame addressed to us to ``on_frame``, as a writable view into the
        ring: it may rewrite the frame in place (no copy) but must not keep the view, which is
        only valid until the block goes back to the kernel. Returns the number of frames;
        ``max_blocks`` bounds the work (0 = all). ``flows`` (a ``_fastpath.FlowTable``, C ring
        only): frames of its flows are forwarded in C and not handed to ``on_frame``."""
        if self.fast is not None:
            n: int = self.fast.receive(on_frame, max_blocks, flows)
            return n
        vlen = self.vnet_len
        mm = self.mm
        view = self.view
        bs = self.block_size
        count = 0
        counted = 0  # of count, already added to _rx_frames
        blocks = 0
        unpack_pkt = _PKT_HOT.unpack_from
        while True:
            base = self._rx_cur * bs
            status = _U32.unpack_from(mm, base + 8)[0]
            if not status & TP_STATUS_USER:
                break
            num = _U32.unpack_from(mm, base + 12)[0]
            off = base + _U32.unpack_from(mm, base + 16)[0]
            try:
                for _ in range(num):
                    nxt, snap, flen, tp_status, mac = unpack_pkt(mm, off)
                    # struct sockaddr_ll follows the header: sll_pkttype at +10
                    if mm[off + TPACKET3_HDRLEN + 10] <= PACKET_BROADCAST:
                        if snap < flen:
                            self._rx_truncated += 1
                        else:
                            start = off + mac
                            frame = view[start:start + snap]
                            if vlen:
                                self.rx_meta = offload.rx_meta(view[start - vlen:start], frame,
                                                               tp_status, TP_STATUS_CSUM_VALID)
                            else:
                                self.rx_meta = offload.rx_meta_plain(frame, tp_status,
                                                                     TP_STATUS_CSUMNOTREADY,
                                                                     TP_STATUS_CSUM_VALID)
                            on_frame(frame)
                        count += 1
                    off += nxt
            finally:
                # also when on_frame raised: the block goes back, so it is never read twice
                # (as the C walk does)
                _U32.pack_into(mm, base + 8, TP_STATUS_KERNEL)
                self._rx_cur = (self._rx_cur + 1) % self.block_nr
                self._rx_frames += count - counted
                counted = count
            blocks += 1
            if max_blocks and blocks >= max_blocks:
                break
        return count

    def ready(self) -> bool:
        """Whether the block the reader waits on has been handed over by the kernel."""
        if self.fast is not None:
            return bool(self.fast.ready())
        return bool(_U32.unpack_from(self.mm, self._rx_cur * self.block_size + 8)[0] & TP_STATUS_USER)

    def resync(self) -> bool:
        """Point the reader at the oldest block the kernel has handed over, if it is not there.

        Reader and kernel walk the blocks in the same order, but an interface that goes down and
        up can leave the kernel filling a block other than the one the reader waits on; every
        block then fills and frames are dropped. Block descriptors carry a sequence number, so
        the oldest ready block is where reading must resume. True when the reader moved.
        """
        mm = self.mm
        bs = self.block_size
        if _U32.unpack_from(mm, self._rx_cur * bs + 8)[0] & TP_STATUS_USER:
            return False
        ready = [
            (struct.unpack_from("=Q", mm, i * bs + 24)[0], i)
            for i in range(self.block_nr)
            if _U32.unpack_from(mm, i * bs + 8)[0] & TP_STATUS_USER
        ]
        if not ready:
            return False
        self._rx_cur = min(ready)[1]
        return True

    @property
    def tx_linear(self) -> bool:
        """The kernel copies each TX frame whole into its skb (``_TX_VNET``); False, for
        benchmarks only: the slot's page is attached as a fragment, as before."""
        return self._tx_linear

    @tx_linear.setter
    def tx_linear(self, on: bool) -> None:
        self._tx_linear = on
        if self.fast is not None:
            self.fast.tx_linear = on

    def queue(self, frame: Frame) -> None:
        """Put ``frame`` in the TX ring (sent by ``flush``, or every 64 frames). A frame bigger
        than a slot goes out by a plain ``send``; when the ring stays full it is dropped and
        counted (``tx_ring_full``), as a full NIC queue would."""
        if self.fast is not None:
            if self.fast.queue(frame) == 1:  # bigger than a slot
                self._send_plain(frame)
            return
        n = len(frame)
        base = self.rx_size + self._tx_cur * self.frame_size
        mm = self.mm
        status = _U32.unpack_from(mm, base + 20)[0]
        if status == TP_STATUS_WRONG_FORMAT:  # the kernel refused that slot's frame: reuse it
            self._tx_errors += 1
            _U32.pack_into(mm, base + 20, TP_STATUS_AVAILABLE)
            status = TP_STATUS_AVAILABLE
        if n > self.tx_max:  # bigger than a ring slot (jumbo frames): one sendto of its own
            self._send_plain(frame)
            return
        if status != TP_STATUS_AVAILABLE:
            # a full ring: have the kernel send what is queued, then look at the slot again
            self._kick()
            status = _U32.unpack_from(mm, base + 20)[0]
            if status != TP_STATUS_AVAILABLE:
                self._tx_ring_full += 1
                return
        data = base + TPACKET3_HDRLEN
        if self.vnet_len:  # a whole, checksummed frame, all of it in the skb's linear part
            _TX_VNET.pack_into(mm, data, 0, 0, n if self._tx_linear else 0, 0, 0, 0)
            data += self.vnet_len
        self.view[data:data + n] = frame
        # tp_len and tp_status together: the kernel reads the slot only during send()
        _LEN_STATUS.pack_into(mm, base + 16, n + self.vnet_len, TP_STATUS_SEND_REQUEST)
        self._tx_cur = (self._tx_cur + 1) % self.tx_nr
        self._tx_pending += 1
        if self._tx_pending >= 64:
            self.flush()

    def flush(self) -> None:
        """Ask the kernel to send every queued frame."""
        if self.fast is not None:
            self.fast.flush()
        elif self._tx_pending:
            self._kick()

    def _kick(self) -> None:
        # with a TX ring, send() transmits the ring's ready slots and ignores its own buffer
        try:
            self.sock.send(b"")
        except BlockingIOError:
            pass
        except OSError:
            self._tx_errors += 1
        self._tx_sent += self._tx_pending
        self._tx_pending = 0

    def _send_plain(self, frame: Frame) -> None:
        if self._plain is None:
            self._plain = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self._plain.bind((self.ifname, 0))
        try:
            self._plain.send(frame)
            self.tx_fallback += 1
        except OSError:
            self._tx_errors += 1

    def kernel_stats(self) -> tuple[int, int]:
        """(packets, drops) the kernel counted for this socket since the last call
        (PACKET_STATISTICS): drops are frames lost because the RX ring was full."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, _freeze = struct.unpack("=III", raw)
        self.kernel_packets += packets
        self.kernel_drops += drops
        return packets, drops

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.fast is not None:  # gives the mapping back before it is unmapped
                self.fast.close()
            if self._plain is not None:
                self._plain.close()
            self.view.release()
            self.mm.close()
            self.sock.close()


class ArpSocket:
    """ARP frames of one interface on their own AF_PACKET socket, outside the ring: when a
    flood fills the ring, the neighbour answers the forwarder waits for still get through."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.bind((ifname, ETH_P_ARP))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.ifindex: int = socket.if_nametoindex(ifname)
        self.rx_meta = 0  # ARP has no L4 checksum and no super-frames

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self, on_frame: Callable[[RxFrame], None]) -> int:
        n = 0
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError:  # ENETDOWN while the link is down: nothing to read
                return n
            if addr[2] <= PACKET_BROADCAST:  # not our own requests going out
                on_frame(bytearray(data))
                n += 1

    def close(self) -> None:
        self.sock.close()


class NdSocket(ArpSocket):
    """IPv6 neighbour solicitations and advertisements of one interface on their own socket
    (``ND_FILTER``), as ``ArpSocket`` does for ARP; multicast frames are taken too (a
    solicitation goes to the target's solicited-node group, ``join`` asks the interface to
    pass that group's frames), and it sends the unsolicited advertisements for new VIPs."""

    def __init__(self, ifname: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(self.sock, ND_FILTER)
            self.sock.bind((ifname, ETH_P_IPV6))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.ifindex = socket.if_nametoindex(ifname)
        self.rx_meta = 0
        self.joined: set[bytes] = set()

    def receive(self, on_frame: Callable[[RxFrame], None]) -> int:
        n = 0
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError:
                return n
            if addr[2] <= PACKET_MULTICAST:  # not our own frames going out
                on_frame(bytearray(data))
                n += 1

    def join(self, macs: set[bytes]) -> None:
        """Have the interface pass exactly these multicast MACs (solicited-node groups)."""
        for mac, op in [(m, PACKET_DROP_MEMBERSHIP) for m in self.joined - macs] + [
                (m, PACKET_ADD_MEMBERSHIP) for m in macs - self.joined]:
            try:
                self.sock.setsockopt(SOL_PACKET, op, struct.pack(
                    "=iHH8s", self.ifindex, PACKET_MR_MULTICAST, 6, mac))
            except OSError:
                continue
            if op == PACKET_ADD_MEMBERSHIP:
                self.joined.add(mac)
            else:
                self.joined.discard(mac)

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        try:
            self.sock.send(frame)
        except OSError:
            return False
        return True
