"""The kernel's hash functions, bit for bit, for the hashing schedulers (sh, dh, mh, lblc, lblcr).

What this is for: which real server a client lands on under sh/dh/mh depends on the exact hash the
kernel computes, so these reproduce the address fold of ``ip_vs_*_hashkey``, ``hash_32`` (sh, dh,
lblc, lblcr) and the 64-bit ``hsiphash`` (mh; on 64-bit kernels it is SipHash-1-3 truncated to 32
bits, not HalfSipHash) with Python ints. sh, dh and mh decisions made with them were compared with
Debian 12's 6.1 kernel for the same tables and clients, and agree.

What this is not for: hashing connections or anything the kernel does not hash the same way.
"""

from __future__ import annotations

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF

# include/linux/hash.h GOLDEN_RATIO_32 (hash_32 since Linux 4.7).
GOLDEN_RATIO_32 = 0x61C88647


def fold_addr(addr: bytes) -> int:
    """``ntohl(addr_fold)``: an IPv4 address as an int, or the XOR of an IPv6 address's 4 words.

    A 4-byte address inside an IPv6 service reads as the kernel's zero-padded
    ``union nf_inet_addr``, whose XOR fold is the address itself, so both cases agree.
    """
    if len(addr) == 4:
        return int.from_bytes(addr, "big")
    v = int.from_bytes(addr, "big")
    return (v ^ (v >> 32) ^ (v >> 64) ^ (v >> 96)) & _M32


def hash_32(val: int, bits: int) -> int:
    """``hash_32(val, bits)`` of include/linux/hash.h."""
    return ((val * GOLDEN_RATIO_32) & _M32) >> (32 - bits)


def _rol(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def hsiphash_u32(value: int, key0: int, key1: int) -> int:
    """``hsiphash(&v, sizeof(u32), key)`` on a 64-bit little-endian kernel.

    lib/siphash.c makes hsiphash SipHash-1-3 on 64-bit: a 4-byte message is all tail, so
    there is no compression round, then 1 + 3 rounds, and the u64 result is truncated to u32.
    """
    v0 = 0x736F6D6570736575 ^ key0
    v1 = 0x646F72616E646F6D ^ key1
    v2 = 0x6C7967656E657261 ^ key0
    v3 = 0x7465646279746573 ^ key1
    b = (4 << 56) | (value & _M32)
    v3 ^= b
    for r in range(4):
        if r == 1:
            v0 ^= b
            v2 ^= 0xFF
        v0 = (v0 + v1) & _M64
        v1 = ((v1 << 13) | (v1 >> 51)) & _M64
        v1 ^= v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M64
        v2 = (v2 + v3) & _M64
        v3 = ((v3 << 16) | (v3 >> 48)) & _M64
        v3 ^= v2
        v0 = (v0 + v3) & _M64
        v3 = ((v3 << 21) | (v3 >> 43)) & _M64
        v3 ^= v0
        v2 = (v2 + v1) & _M64
        v1 = ((v1 << 17) | (v1 >> 47)) & _M64
        v1 ^= v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M64
    return (v0 ^ v1 ^ v2 ^ v3) & _M32


def siphash(data: bytes, key0: int, key1: int, c_rounds: int = 1, d_rounds: int = 3) -> int:
    """Generic SipHash-c-d over ``data`` (u64 result): the reference ``hsiphash_u32`` is checked
    against (and this against the published SipHash-2-4 vectors)."""
    v = [
        0x736F6D6570736575 ^ key0,
        0x646F72616E646F6D ^ key1,
        0x6C7967656E657261 ^ key0,
        0x7465646279746573 ^ key1,
    ]

    def rounds(k: int) -> None:
        v0, v1, v2, v3 = v
        for _ in range(k):
            v0 = (v0 + v1) & _M64
            v1 = _rol(v1, 13) ^ v0
            v0 = _rol(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rol(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rol(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rol(v1, 17) ^ v2
            v2 = _rol(v2, 32)
        v[:] = [v0, v1, v2, v3]

    full = len(data) - len(data) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v[3] ^= m
        rounds(c_rounds)
        v[0] ^= m
    b = (len(data) & 0xFF) << 56 | int.from_bytes(data[full:], "little")
    v[3] ^= b
    rounds(c_rounds)
    v[0] ^= b
    v[2] ^= 0xFF
    rounds(d_rounds)
    return v[0] ^ v[1] ^ v[2] ^ v[3]
