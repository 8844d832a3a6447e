"""The bpf(2) system call for what runs per connection: a map's elements read, written and
deleted, a program attached to a map, and the socket cookie that keys socket maps.

What this is for: the proxy's in-kernel relay updates its maps on every hand-over, where one
system call with preallocated argument buffers (no allocation, no library call per element) is
the whole cost. Every encoding here is the kernel's stable user-space ABI
(``include/uapi/linux/bpf.h``), so it does not change with the kernel version.

What this is not for: programs. They are C compiled with clang by the package's build step and
loaded with libbpf (``pylvs.libbpf``), which creates their maps; the descriptors it hands out
are the ones used here. ``map_create`` remains for maps no program of ours owns (the tests').
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
from typing import Final

__all__ = [
    "ATTR_SIZE",
    "AttachType",
    "Bpf",
    "Cmd",
    "MapType",
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


class AttachType(enum.IntEnum):
    """enum bpf_attach_type (those pylvs uses)."""

    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    SK_SKB_VERDICT = 38


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
