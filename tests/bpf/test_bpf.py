"""``pylvs.bpf`` against the running kernel: maps hold what is written and deleted, the system
call's number is the kernel's per machine, socket cookies name sockets. (Programs are C loaded
with libbpf: tests/dataplane/xdp and tests/dataplane/proxy/test_proxy_sockmap run them.)

Maps need CAP_BPF (root here); without it the kernel tests skip and say so.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from pylvs.bpf import Bpf, MapType, socket_cookie, syscall_number


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


def test_socket_cookies_identify_sockets() -> None:
    with socket.socket() as s1, socket.socket() as s2:
        c1 = socket_cookie(s1)
        assert c1 and c1 == socket_cookie(s1)
        assert socket_cookie(s2) not in (0, c1)
