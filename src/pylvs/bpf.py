"""The bpf(2) system call, its maps and a small assembler for eBPF programs, shared by every BPF
user in pylvs (the proxy's in-kernel relay today, an XDP data plane later).

What this is for: creating maps, reading and writing their elements, loading a program and
attaching it, with nothing but the standard library (``ctypes`` reaches the system call through
libc, which has no wrapper for it). Programs are written with ``Assembler``: instructions, labels
and jumps resolved to the kernel's slot offsets, plus ``ld_map_fd`` for the two-slot "load a
map" instruction. Every encoding here is the kernel's stable user-space ABI
(``include/uapi/linux/bpf.h``), so it does not change with the kernel version.

What this is not for: deciding what a program does (its user owns that: see
``pylvs.dataplane.proxy.sockmap``), BTF, CO-RE relocations or ELF objects.

Why not clang and libbpf: the programs pylvs loads are a few dozen instructions each. Built here
they need no compiler, no kernel headers and no loader library at install time (``pip install``
stays pure Python, and the proxy's relay works on any host where the kernel allows it), and the
exact bytecode is visible in review next to the code that reads its maps. A program that grows
past what is comfortable to write this way (an XDP plane's parser, say) is the point to add an
ELF loader and clang to the build; the map and system-call helpers here stay the same for it.

Errors are ``OSError`` with the kernel's errno; a program the verifier refuses raises
``VerifierError`` (an ``OSError``) whose message is the verifier's reason (the log's last line
before its statistics), and whose
``log`` attribute holds the whole log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import errno
import os
import platform
import socket
import struct
from _socket import socket as RawSocket
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ATTR_SIZE",
    "Assembler",
    "AttachType",
    "Bpf",
    "Cmd",
    "Helper",
    "MapType",
    "Op",
    "ProgType",
    "VerifierError",
    "insn",
    "ld_map_fd",
    "socket_cookie",
    "syscall_number",
]

# Size of ``union bpf_attr`` passed to the kernel: large enough for every command used here; the
# kernel accepts a shorter or longer union as long as the bytes it does not know are zero.
ATTR_SIZE: Final = 144

# The bpf system call's number per machine (arch/*/include/uapi/asm/unistd*.h); the kernel
# never renumbers a system call.
_NR_BPF: Final = {
    "x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "ppc64le": 361, "ppc64": 361, "s390x": 351, "i686": 357, "i386": 357, "armv7l": 386,
    "mips64": 5315,
}

SO_COOKIE: Final = 57  # SOL_SOCKET option: the socket's 64-bit identity, as programs see it


class Cmd(enum.IntEnum):
    """enum bpf_cmd: the system call's first argument (only those pylvs uses)."""

    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    PROG_LOAD = 5
    PROG_ATTACH = 8
    PROG_DETACH = 9


class MapType(enum.IntEnum):
    """enum bpf_map_type (those pylvs uses)."""

    HASH = 1
    ARRAY = 2
    PERCPU_ARRAY = 6
    SOCKMAP = 15
    DEVMAP = 14
    SOCKHASH = 18
    XSKMAP = 17


class ProgType(enum.IntEnum):
    """enum bpf_prog_type (those pylvs uses or plans to)."""

    SOCKET_FILTER = 1
    XDP = 6
    SK_SKB = 14


class AttachType(enum.IntEnum):
    """enum bpf_attach_type (those pylvs uses)."""

    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    SK_SKB_VERDICT = 38


class Helper(enum.IntEnum):
    """Helper function numbers (``BPF_FUNC_*``), the immediate of a ``CALL``."""

    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    KTIME_GET_NS = 5
    GET_SOCKET_COOKIE = 46
    SK_REDIRECT_HASH = 72


class Op(enum.IntEnum):
    """The opcodes (class | size/source | operation) pylvs's programs use, by their usual names."""

    MOV64_REG = 0xBF  # dst = src
    MOV64_IMM = 0xB7  # dst = imm
    ADD64_IMM = 0x07  # dst += imm
    LDX_W = 0x61  # dst = *(u32 *)(src + off)
    LDX_DW = 0x79  # dst = *(u64 *)(src + off)
    STX_DW = 0x7B  # *(u64 *)(dst + off) = src
    ATOMIC_DW = 0xDB  # with imm 0: *(u64 *)(dst + off) += src, atomically
    LD_IMM64 = 0x18  # two slots; with src 1 (BPF_PSEUDO_MAP_FD) imm is a map's descriptor
    JEQ_IMM = 0x15
    JNE_IMM = 0x55
    JEQ_REG = 0x1D
    JNE_REG = 0x5D
    JGE_REG = 0x3D
    JGT_REG = 0x2D
    JA = 0x05
    CALL = 0x85
    EXIT = 0x95


_INSN = struct.Struct("<BBhi")
_PSEUDO_MAP_FD = 1
_JUMPS = frozenset(
    {Op.JEQ_IMM, Op.JNE_IMM, Op.JEQ_REG, Op.JNE_REG, Op.JGE_REG, Op.JGT_REG, Op.JA}
)


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One 8-byte instruction: opcode, registers (dst low nibble, src high), offset, immediate."""
    return _INSN.pack(op, (src << 4) | dst, off, imm)


def ld_map_fd(dst: int, map_fd: int) -> bytes:
    """``dst = &map``: the two-slot 64-bit load whose immediate the kernel turns into a map."""
    return insn(Op.LD_IMM64, dst, _PSEUDO_MAP_FD, 0, map_fd) + insn(0)


@dataclass
class Assembler:
    """Builds a program from instructions, labels and forward or backward jumps.

    Jump offsets count 8-byte slots from the instruction after the jump, and a map load takes two
    slots: ``program()`` resolves both, so a program reads as a list of steps with named targets.
    """

    _out: list[bytes] = field(default_factory=list)
    _jumps: list[tuple[int, str]] = field(default_factory=list)
    _labels: dict[str, int] = field(default_factory=dict)

    def emit(self, code: bytes) -> None:
        """Append one instruction (or a two-slot load)."""
        self._out.append(code)

    def op(self, op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.emit(insn(op, dst, src, off, imm))

    def jump(self, op: int, dst: int, src: int, imm: int, target: str) -> None:
        """A conditional (or ``JA``) jump to ``target``, a label placed before or after it."""
        if op not in _JUMPS:
            raise ValueError(f"opcode {op:#x} is not a jump")
        self._jumps.append((len(self._out), target))
        self.emit(insn(op, dst, src, 0, imm))

    def label(self, name: str) -> None:
        """Name the slot of the next instruction."""
        if name in self._labels:
            raise ValueError(f"label {name!r} placed twice")
        self._labels[name] = self._slots()

    def _slots(self) -> int:
        return sum(len(b) // 8 for b in self._out)

    def program(self) -> bytes:
        """The bytecode, every jump resolved; ``KeyError`` names a label never placed."""
        out = list(self._out)
        slot_of: list[int] = []
        n = 0
        for b in out:
            slot_of.append(n)
            n += len(b) // 8
        for index, name in self._jumps:
            if name not in self._labels:
                raise KeyError(f"jump to label {name!r}, which is never placed")
            op, regs, _off, imm = _INSN.unpack(out[index])
            out[index] = _INSN.pack(op, regs, self._labels[name] - slot_of[index] - 1, imm)
        return b"".join(out)


class VerifierError(OSError):
    """The kernel refused a program; ``log`` is the verifier's whole log."""

    def __init__(self, errno_: int, message: str, log: str) -> None:
        super().__init__(errno_, message)
        self.log = log


def syscall_number(machine: str | None = None) -> int:
    """The bpf system call's number on ``machine`` (default: this one)."""
    m = machine or platform.machine()
    try:
        return _NR_BPF[m]
    except KeyError:
        raise OSError(errno.ENOSYS, f"bpf(2): system call number unknown for machine {m!r}") from None


class Bpf:
    """The bpf(2) system call and the map and program commands built on it.

    One instance keeps its argument buffers and reuses them: map updates and look-ups from a hot
    path cost one system call and a few ``ctypes`` stores, with no allocation. Not thread-safe
    (an instance belongs to one event loop). Descriptors it returns belong to the caller, who
    closes them with ``os.close``.
    """

    def __init__(self, max_value: int = 64) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._nr = syscall_number()
        self._attr = ctypes.create_string_buffer(ATTR_SIZE)
        self._key = ctypes.create_string_buffer(max_value)
        self._value = ctypes.create_string_buffer(max_value)
        self._max = max_value

    def call(self, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
        """Run one command with a prepared ``bpf_attr``; its result, or ``OSError``."""
        r = self._syscall(self._nr, cmd, attr, ATTR_SIZE)
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return int(r)

    # ---- maps ------------------------------------------------------------------------------

    def map_create(self, kind: int, key_size: int, value_size: int, max_entries: int) -> int:
        """A new map's descriptor."""
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("<IIII", attr, 0, kind, key_size, value_size, max_entries)
        return self.call(Cmd.MAP_CREATE, attr)

    def _elem(self, cmd: int, fd: int, key: bytes, value: bytes | None, flags: int) -> None:
        if len(key) > self._max or (value is not None and len(value) > self._max):
            raise ValueError(f"keys and values up to {self._max} bytes (Bpf(max_value=...))")
        attr = self._attr
        ctypes.memmove(self._key, key, len(key))
        vp = 0
        if value is not None:
            ctypes.memmove(self._value, value, len(value))
            vp = ctypes.addressof(self._value)
        struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(self._key), vp, flags)
        self.call(cmd, attr)

    def map_update(self, fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
        """Create or replace an element (``flags``: 0 any, 1 only new, 2 only existing)."""
        self._elem(Cmd.MAP_UPDATE_ELEM, fd, key, value, flags)

    def map_delete(self, fd: int, key: bytes) -> None:
        """Delete an element; ``OSError`` ENOENT when there is none."""
        self._elem(Cmd.MAP_DELETE_ELEM, fd, key, None, 0)

    def map_lookup(self, fd: int, key: bytes, value_size: int) -> bytes:
        """An element's value (``value_size`` bytes); ``OSError`` ENOENT when there is none."""
        if value_size > self._max:
            raise ValueError(f"values up to {self._max} bytes (Bpf(max_value=...))")
        self._elem(Cmd.MAP_LOOKUP_ELEM, fd, key, b"", 0)
        return self._value.raw[:value_size]

    # ---- programs --------------------------------------------------------------------------

    def prog_load(self, kind: int, code: bytes, license: str = "GPL", log_size: int = 65536) -> int:
        """Load (verify) a program; its descriptor, or ``VerifierError`` with the verifier's log.

        The license matters: helpers such as ``sk_redirect_hash`` are GPL-only."""
        if not code or len(code) % 8:
            raise ValueError("a program is a non-empty sequence of 8-byte instructions")
        buf = ctypes.create_string_buffer(code, len(code))
        lic = ctypes.create_string_buffer(license.encode())
        log = ctypes.create_string_buffer(log_size)
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into(
            "<IIQQIIQ", attr, 0, kind, len(code) // 8, ctypes.addressof(buf),
            ctypes.addressof(lic), 1, log_size, ctypes.addressof(log),
        )
        try:
            return self.call(Cmd.PROG_LOAD, attr)
        except OSError as e:
            text = log.value.decode(errors="replace").strip()
            # The log ends with the verifier's statistics ("processed N insns ..."): the reason
            # is the last line before them.
            lines = [ln for ln in text.splitlines() if not ln.startswith("processed ")]
            raise VerifierError(
                e.errno or 0, f"program refused: {lines[-1] if lines else e.strerror}", text,
            ) from None

    def prog_attach(self, prog_fd: int, target_fd: int, attach_type: int) -> None:
        """Attach a program to a target (a socket map for the SK_SKB kinds)."""
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("<III", attr, 0, target_fd, prog_fd, attach_type)
        self.call(Cmd.PROG_ATTACH, attr)

    def prog_detach(self, prog_fd: int, target_fd: int, attach_type: int) -> None:
        """Undo ``prog_attach`` (closing the target's descriptor does it too)."""
        attr = ctypes.create_string_buffer(ATTR_SIZE)
        struct.pack_into("<III", attr, 0, target_fd, prog_fd, attach_type)
        self.call(Cmd.PROG_DETACH, attr)


def socket_cookie(sock: RawSocket | socket.socket) -> int:
    """The kernel's 64-bit identity of a socket (``SO_COOKIE``), which programs see too
    (``bpf_get_socket_cookie``): the natural key of a socket map."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
