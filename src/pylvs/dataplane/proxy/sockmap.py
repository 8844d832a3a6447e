"""In-kernel relay of established proxy connections: a BPF socket map and a stream verdict.

What this is for: once a proxied TCP connection is established and has shown it is long-lived,
the relay asks the kernel to move its bytes. Both sockets go into a ``SOCKHASH`` map keyed by
their socket cookie; a ``SK_SKB`` verdict program attached to the map redirects every segment a
socket receives to the send side of its peer, found through a second map (cookie -> peer's
cookie). The proxy process is then not woken per request at all: its only remaining work for the
connection is the FIN, an error and the once-a-second counters. This is the same step the packet
plane takes with its C fast path, here done by the kernel's own socket-map machinery.

What this is not for: choosing a real server, accounting to the core or propagating half-closes
(``_proxy_tcp`` keeps all of that), and it is optional: without CAP_BPF/CAP_NET_ADMIN, on a kernel
without socket maps, or with ``PYLVS_PROXY_SOCKMAP=0``, relays stay in user space.

Why hand-assembled: the program is 40 instructions, so carrying it as bytecode built here avoids a
compiler and a BPF loader library at install time; the encoding is the kernel's stable ABI.

Ordering, the one subtle part. While the proxy still reads a socket itself (bytes that came before
the hand-over), the kernel must not redirect newer bytes past them. So the program redirects only
when every byte it ever handed to user space ("passed", counted by the program) has been read and
forwarded by the proxy ("taken", written by the proxy into the peer map); otherwise it passes the
segment up and counts it. The proxy reads, forwards, publishes its new "taken", and the program
takes over as soon as the two agree. Bytes queued before the socket entered the map are pushed
through the program at once (``SO_RCVLOWAT`` makes the kernel run its data-ready hook), so the
proxy never reads the queue directly after the hand-over.

The other subtle part is the FIN: the kernel queues redirected segments to a worker, so a FIN can be
seen by the proxy before the bytes redirected just ahead of it were written to the peer. Before
passing a FIN on, the proxy checks with ``TCP_INFO`` that the peer's socket has been given every
byte redirected to it (``bytes_written``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from _socket import socket as RawSocket

__all__ = ["SockmapRelay", "bytes_written", "socket_cookie"]

_NR_BPF = 321  # x86_64
_BPF_MAP_CREATE = 0
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_UPDATE_ELEM = 2
_BPF_MAP_DELETE_ELEM = 3
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8

_MAP_HASH = 1
_MAP_SOCKHASH = 18
_PROG_SK_SKB = 14
_ATTACH_SK_SKB_VERDICT = 38

_HELPER_MAP_LOOKUP = 1
_HELPER_SOCKET_COOKIE = 46
_HELPER_SK_REDIRECT_HASH = 72
_SK_PASS = 1

_SO_COOKIE = 57
_SO_RCVLOWAT = socket.SO_RCVLOWAT
_ATTR_SIZE = 144

# struct tcp_info offsets (include/uapi/linux/tcp.h; the layout only ever grows at the end).
_TI_NOTSENT = 144
_TI_BYTES_SENT = 200
_TI_BYTES_RETRANS = 208
_TI_SIZE = 216


def _insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def _ld_map(dst: int, fd: int) -> bytes:
    # BPF_LD | BPF_IMM | BPF_DW with src = BPF_PSEUDO_MAP_FD: a two-slot instruction.
    return _insn(0x18, dst, 1, 0, fd) + _insn(0, 0, 0, 0, 0)


_MOV64_REG, _MOV64_IMM, _ADD64_IMM = 0xBF, 0xB7, 0x07
_LDX_DW, _LDX_W, _STX_DW, _ATOMIC_DW = 0x79, 0x61, 0x7B, 0xDB
_JEQ_IMM, _JNE_IMM, _JNE_REG, _JGE_REG = 0x15, 0x55, 0x5D, 0x3D
_CALL, _EXIT = 0x85, 0x95


def _program(link_fd: int, count_fd: int, sock_fd: int) -> bytes:
    """The verdict: redirect to the peer when user space has caught up and the side is within its
    credit, else pass and count.

    Registers: r6 the context, r7 the peer-map value (peer cookie, taken, credit), r8 the
    counter-map value (passed, redirected bytes, redirected segments), r9 the segment's length.
    """
    out: list[bytes] = []

    def emit(b: bytes) -> int:
        out.append(b)
        return len(out) - 1

    jumps: list[tuple[int, str]] = []
    labels: dict[str, int] = {}

    def jump(op: int, dst: int, src: int, imm: int, label: str) -> None:
        jumps.append((emit(_insn(op, dst, src, 0, imm)), label))

    def label(name: str) -> None:
        labels[name] = sum(len(b) // 8 for b in out)

    emit(_insn(_MOV64_REG, 6, 1))
    emit(_insn(_LDX_W, 9, 6, 0))  # skb->len
    # A FIN with no data: redirected, it would reach the peer's send side as an empty write,
    # which the kernel takes as a broken pipe. Passed up, the proxy reads it as end of stream.
    jump(_JEQ_IMM, 9, 0, 0, "pass")
    emit(_insn(_CALL, imm=_HELPER_SOCKET_COOKIE))
    emit(_insn(_STX_DW, 10, 0, -8))
    emit(_insn(_MOV64_REG, 2, 10))
    emit(_insn(_ADD64_IMM, 2, imm=-8))
    emit(_ld_map(1, link_fd))
    emit(_insn(_CALL, imm=_HELPER_MAP_LOOKUP))
    jump(_JEQ_IMM, 0, 0, 0, "pass")
    emit(_insn(_MOV64_REG, 7, 0))
    emit(_insn(_MOV64_REG, 2, 10))
    emit(_insn(_ADD64_IMM, 2, imm=-8))
    emit(_ld_map(1, count_fd))
    emit(_insn(_CALL, imm=_HELPER_MAP_LOOKUP))
    jump(_JEQ_IMM, 0, 0, 0, "pass")
    emit(_insn(_MOV64_REG, 8, 0))
    emit(_insn(_LDX_DW, 3, 8, 0))  # passed
    emit(_insn(_LDX_DW, 4, 7, 8))  # taken
    jump(_JNE_REG, 3, 4, 0, "count")
    emit(_insn(_LDX_DW, 3, 8, 8))  # redirected bytes
    emit(_insn(_LDX_DW, 4, 7, 16))  # credit
    jump(_JGE_REG, 3, 4, 0, "count")
    emit(_insn(_MOV64_REG, 1, 6))
    emit(_ld_map(2, sock_fd))
    emit(_insn(_MOV64_REG, 3, 7))  # the peer's cookie is the value's first field
    emit(_insn(_MOV64_IMM, 4, imm=0))  # to the peer's send side
    emit(_insn(_CALL, imm=_HELPER_SK_REDIRECT_HASH))
    jump(_JNE_IMM, 0, 0, _SK_PASS, "count")  # the peer has left the map: hand it up instead
    emit(_insn(_ATOMIC_DW, 8, 9, 8, 0))  # redirected bytes += len
    emit(_insn(_MOV64_IMM, 1, imm=1))
    emit(_insn(_ATOMIC_DW, 8, 1, 16, 0))  # redirected segments += 1
    emit(_insn(_MOV64_IMM, 0, imm=_SK_PASS))
    emit(_insn(_EXIT))
    label("count")
    emit(_insn(_ATOMIC_DW, 8, 9, 0, 0))  # passed += len
    label("pass")
    emit(_insn(_MOV64_IMM, 0, imm=_SK_PASS))
    emit(_insn(_EXIT))

    # Resolve jumps: offsets count 8-byte slots from the instruction after the jump.
    slots: list[int] = []
    n = 0
    for b in out:
        slots.append(n)
        n += len(b) // 8
    for index, name in jumps:
        op, regs, _off, imm = struct.unpack("<BBhi", out[index])
        out[index] = struct.pack("<BBhi", op, regs, labels[name] - slots[index] - 1, imm)
    return b"".join(out)


class _Bpf:
    """The bpf(2) system call through libc: nothing in the standard library makes it."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._attr = ctypes.create_string_buffer(_ATTR_SIZE)
        self._key = ctypes.create_string_buffer(8)
        self._value = ctypes.create_string_buffer(24)

    def call(self, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
        r = self._syscall(_NR_BPF, cmd, attr, _ATTR_SIZE)
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return int(r)

    def map_create(self, kind: int, key: int, value: int, entries: int) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIII", attr, 0, kind, key, value, entries)
        return self.call(_BPF_MAP_CREATE, attr)

    def _elem(self, cmd: int, fd: int, key: bytes, value: bytes | None, flags: int = 0) -> None:
        attr = self._attr
        self._key.raw = key
        kp = ctypes.addressof(self._key)
        vp = 0
        if value is not None:
            ctypes.memmove(self._value, value, len(value))
            vp = ctypes.addressof(self._value)
        struct.pack_into("<IIQQQ", attr, 0, fd, 0, kp, vp, flags)
        self.call(cmd, attr)

    def update(self, fd: int, key: bytes, value: bytes) -> None:
        self._elem(_BPF_MAP_UPDATE_ELEM, fd, key, value)

    def delete(self, fd: int, key: bytes) -> None:
        self._elem(_BPF_MAP_DELETE_ELEM, fd, key, None)

    def lookup(self, fd: int, key: bytes, size: int) -> bytes:
        self._elem(_BPF_MAP_LOOKUP_ELEM, fd, key, b"")
        return self._value.raw[:size]

    def prog_load(self, insns: bytes) -> int:
        code = ctypes.create_string_buffer(insns, len(insns))
        lic = ctypes.create_string_buffer(b"GPL")
        log = ctypes.create_string_buffer(65536)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into(
            "<IIQQIIQ", attr, 0, _PROG_SK_SKB, len(insns) // 8, ctypes.addressof(code),
            ctypes.addressof(lic), 1, len(log), ctypes.addressof(log),
        )
        try:
            return self.call(_BPF_PROG_LOAD, attr)
        except OSError as e:
            text = log.value.decode(errors="replace").strip().splitlines()
            raise OSError(e.errno, f"verdict program refused: {text[-1] if text else e}") from None

    def prog_attach(self, prog_fd: int, target_fd: int, kind: int) -> None:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<III", attr, 0, target_fd, prog_fd, kind)
        self.call(_BPF_PROG_ATTACH, attr)


def socket_cookie(sock: RawSocket) -> int:
    """The kernel's 64-bit identity of a socket, which the verdict program sees too."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, _SO_COOKIE, 8), "little")


def bytes_written(sock: RawSocket) -> int:
    """Bytes handed to a TCP socket for sending so far (retransmissions not counted twice)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TI_SIZE)
    if len(info) < _TI_SIZE:
        raise OSError(errno.ENOTSUP, "TCP_INFO too old to count sent bytes")
    notsent = struct.unpack_from("<I", info, _TI_NOTSENT)[0]
    sent, retrans = struct.unpack_from("<QQ", info, _TI_BYTES_SENT)
    return int(sent - retrans + notsent)


_Q = struct.Struct("<Q")
_LINK = struct.Struct("<QQQ")
_COUNT = struct.Struct("<QQQ")
_ZERO_COUNT = _COUNT.pack(0, 0, 0)
# A "taken" that no count of passed bytes reaches: the program passes everything up.
HOLD = (1 << 64) - 1


class SockmapRelay:
    """The maps and the attached verdict program of one data plane.

    Each side of an offloaded relay is known by its socket cookie: ``link[cookie]`` holds the
    peer's cookie, what the proxy has taken of that side and its credit; ``count[cookie]`` what
    the program passed up and what it redirected (bytes and segments).

    The credit bounds the kernel's memory: a redirected segment is queued for the peer's socket
    and no longer charged to the receiving one, whose TCP window therefore stays open even when
    the peer cannot send. So a side may have at most ``window`` bytes redirected beyond what the
    proxy last saw delivered (it raises the credit as the bytes go out, each second); past that
    the program passes segments up, where they are charged to the socket and close its window,
    until the proxy takes the side back (``_proxy_tcp``).
    """

    def __init__(self, capacity: int, window: int = 4 << 20) -> None:
        self.window = window
        self.bpf = _Bpf()
        self.fds: list[int] = []
        try:
            self.sock_map = self._map(_MAP_SOCKHASH, 8, 4, capacity)
            self.link_map = self._map(_MAP_HASH, 8, 24, capacity)
            self.count_map = self._map(_MAP_HASH, 8, 24, capacity)
            prog = self.bpf.prog_load(_program(self.link_map, self.count_map, self.sock_map))
            self.fds.append(prog)
            self.bpf.prog_attach(prog, self.sock_map, _ATTACH_SK_SKB_VERDICT)
        except OSError:
            self.close()
            raise

    def _map(self, kind: int, key: int, value: int, entries: int) -> int:
        fd = self.bpf.map_create(kind, key, value, entries)
        self.fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    # ---- one relay -----------------------------------------------------------------------------

    def attach(self, a: RawSocket, ca: int, b: RawSocket, cb: int) -> None:
        """Hand both sockets to the kernel; raises OSError (nothing left behind) if it cannot."""
        bpf = self.bpf
        ka, kb = _Q.pack(ca), _Q.pack(cb)
        try:
            bpf.update(self.count_map, ka, _ZERO_COUNT)
            bpf.update(self.count_map, kb, _ZERO_COUNT)
            bpf.update(self.link_map, ka, _LINK.pack(cb, 0, self.window))
            bpf.update(self.link_map, kb, _LINK.pack(ca, 0, self.window))
            bpf.update(self.sock_map, kb, struct.pack("<I", b.fileno()))
            bpf.update(self.sock_map, ka, struct.pack("<I", a.fileno()))
        except OSError:
            self.detach(ca, cb)
            raise
        # Bytes that reached either socket before it entered the map go through the program now,
        # in order, rather than waiting for the next segment to push them.
        for s in (b, a):
            s.setsockopt(socket.SOL_SOCKET, _SO_RCVLOWAT, 1)

    def taken(self, cookie: int, peer: int, nbytes: int, credit: int) -> None:
        """The proxy has read and forwarded ``nbytes`` passed-up bytes of this side in all, and
        the kernel may redirect up to ``credit`` bytes of it in all."""
        self.bpf.update(self.link_map, _Q.pack(cookie), _LINK.pack(peer, nbytes, credit))

    def hold(self, cookie: int, peer: int) -> None:
        """Redirect nothing more from this side: every segment is passed up from now on."""
        self.bpf.update(self.link_map, _Q.pack(cookie), _LINK.pack(peer, HOLD, 0))

    def counters(self, cookie: int) -> tuple[int, int, int]:
        """(passed bytes, redirected bytes, redirected segments) of one side."""
        passed, rbytes, rsegs = _COUNT.unpack(self.bpf.lookup(self.count_map, _Q.pack(cookie), 24))
        return passed, rbytes, rsegs

    def detach(self, *cookies: int) -> None:
        """Forget a relay's entries (its sockets leave the socket map when they are closed)."""
        bpf = self.bpf
        for c in cookies:
            k = _Q.pack(c)
            for fd in (self.link_map, self.count_map, self.sock_map):
                try:
                    bpf.delete(fd, k)
                except OSError:
                    pass
