"""``pylvs.bpf`` against the running kernel: maps hold what is written, programs the verifier
accepts really run (a socket filter attached to a real UDP socket decides what it receives), a
program it refuses says why, and the assembler resolves jumps as the kernel counts them.

Maps and programs need CAP_BPF (root here); without it the kernel tests skip and say so.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from pylvs.bpf import (
    Assembler,
    Bpf,
    Helper,
    MapType,
    Op,
    ProgType,
    VerifierError,
    insn,
    ld_map_fd,
    socket_cookie,
    syscall_number,
)

SO_ATTACH_BPF = 50


@pytest.fixture
def bpf() -> Iterator[Bpf]:
    b = Bpf()
    try:
        fd = b.map_create(MapType.HASH, 4, 8, 4)
    except OSError as e:
        pytest.skip(f"bpf maps not available here: {e.strerror}")


    os.close(fd)
    yield b


def test_syscall_number_is_the_kernels_per_machine() -> None:
    assert syscall_number("x86_64") == 321
    assert syscall_number("aarch64") == 280
    with pytest.raises(OSError) as info:
        syscall_number("pdp11")
    assert info.value.errno == errno.ENOSYS


def test_instruction_encoding_is_the_kernels() -> None:
    # mov64 r1, r6: opcode 0xbf, dst in the low nibble, src in the high one.
    assert insn(Op.MOV64_REG, 1, 6) == bytes([0xBF, 0x61, 0, 0, 0, 0, 0, 0])
    assert insn(Op.MOV64_IMM, 0, imm=-1) == bytes([0xB7, 0, 0, 0]) + struct.pack("<i", -1)
    load = ld_map_fd(2, 7)
    assert len(load) == 16 and load[1] == 0x12 and struct.unpack_from("<i", load, 4)[0] == 7


def test_assembler_counts_jump_offsets_in_slots_after_the_jump() -> None:
    a = Assembler()
    a.label("top")
    a.jump(Op.JEQ_IMM, 1, 0, 0, "out")  # slot 0
    a.emit(ld_map_fd(1, 3))  # slots 1-2: two slots
    a.jump(Op.JA, 0, 0, 0, "top")  # slot 3
    a.label("out")
    a.op(Op.EXIT)  # slot 4
    code = a.program()
    offs = [struct.unpack_from("<h", code, i)[0] for i in range(2, len(code), 8)]
    assert len(code) == 5 * 8
    assert offs[0] == 3  # 0 + 1 + 3 = 4
    assert offs[3] == -4  # 3 + 1 - 4 = 0


def test_assembler_refuses_what_it_cannot_resolve() -> None:
    a = Assembler()
    a.jump(Op.JNE_IMM, 0, 0, 1, "nowhere")
    with pytest.raises(KeyError, match="nowhere"):
        a.program()
    with pytest.raises(ValueError, match="not a jump"):
        a.jump(Op.MOV64_IMM, 0, 0, 0, "x")
    a.label("x")
    with pytest.raises(ValueError, match="twice"):
        a.label("x")


def test_a_hash_map_holds_updates_and_deletes(bpf: Bpf) -> None:


    fd = bpf.map_create(MapType.HASH, 8, 24, 16)
    try:
        key = struct.pack("<Q", 0xDEADBEEF)
        with pytest.raises(OSError) as info:
            bpf.map_lookup(fd, key, 24)
        assert info.value.errno == errno.ENOENT
        bpf.map_update(fd, key, struct.pack("<QQQ", 1, 2, 3))
        assert struct.unpack("<QQQ", bpf.map_lookup(fd, key, 24)) == (1, 2, 3)
        bpf.map_update(fd, key, struct.pack("<QQQ", 4, 5, 6))
        assert struct.unpack("<QQQ", bpf.map_lookup(fd, key, 24)) == (4, 5, 6)
        with pytest.raises(OSError) as info:  # flags 1: only a new element
            bpf.map_update(fd, key, struct.pack("<QQQ", 7, 8, 9), flags=1)
        assert info.value.errno == errno.EEXIST
        bpf.map_delete(fd, key)
        with pytest.raises(OSError) as info:
            bpf.map_delete(fd, key)
        assert info.value.errno == errno.ENOENT
        with pytest.raises(ValueError):
            bpf.map_update(fd, key, bytes(100))
    finally:
        os.close(fd)


def test_a_loaded_socket_filter_really_runs(bpf: Bpf) -> None:
    """A filter that counts datagrams in an array map and drops those of one length: the map
    shows what the kernel ran, the socket shows what it decided."""


    counts = bpf.map_create(MapType.ARRAY, 4, 8, 1)
    a = Assembler()
    a.op(Op.MOV64_REG, 6, 1)  # r6 = skb
    a.op(Op.MOV64_IMM, 1, imm=0)
    a.op(Op.STX_DW, 10, 1, -8)  # key 0 on the stack (a u32; the upper half is unused)
    a.op(Op.MOV64_REG, 2, 10)
    a.op(Op.ADD64_IMM, 2, imm=-8)
    a.emit(ld_map_fd(1, counts))
    a.op(Op.CALL, imm=Helper.MAP_LOOKUP_ELEM)
    a.jump(Op.JEQ_IMM, 0, 0, 0, "len")
    a.op(Op.MOV64_IMM, 1, imm=1)
    a.op(Op.ATOMIC_DW, 0, 1, 0, 0)  # *count += 1
    a.label("len")
    a.op(Op.LDX_W, 2, 6, 0)  # skb->len (UDP header + payload)
    a.op(Op.MOV64_IMM, 0, imm=0xFFFF)  # keep the whole packet
    a.jump(Op.JNE_IMM, 2, 0, 8 + 4, "keep")
    a.op(Op.MOV64_IMM, 0, imm=0)  # 4-byte payloads are dropped
    a.label("keep")
    a.op(Op.EXIT)
    prog = bpf.prog_load(ProgType.SOCKET_FILTER, a.program())
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog)
        rx.settimeout(2)
        for payload in (b"drop", b"keep me", b"DROP", b"also kept"):
            tx.sendto(payload, rx.getsockname())
        assert rx.recv(100) == b"keep me"
        assert rx.recv(100) == b"also kept"
        rx.settimeout(0.2)
        with pytest.raises(TimeoutError):
            rx.recv(100)
        assert struct.unpack("<Q", bpf.map_lookup(counts, struct.pack("<I", 0), 8)) == (4,)
    finally:
        rx.close()
        tx.close()
        os.close(prog)
        os.close(counts)


def test_a_refused_program_says_why(bpf: Bpf) -> None:
    a = Assembler()
    a.op(Op.MOV64_REG, 0, 5)  # r5 was never written: the verifier refuses to read it
    a.op(Op.EXIT)
    with pytest.raises(VerifierError) as info:
        bpf.prog_load(ProgType.SOCKET_FILTER, a.program())
    assert info.value.errno == errno.EACCES
    assert "R5" in str(info.value) and "R5" in info.value.log
    with pytest.raises(ValueError):
        bpf.prog_load(ProgType.SOCKET_FILTER, b"\x95" * 7)


def test_socket_cookies_identify_sockets() -> None:
    with socket.socket() as s1, socket.socket() as s2:
        c1 = socket_cookie(s1)
        assert c1 and c1 == socket_cookie(s1)
        assert socket_cookie(s2) not in (0, c1)
