"""A minimal generic-netlink client: attributes in and out, pipelined requests, dumps.

What this is for: the IPVS client (``pylvs.netlink.ipvs``) needs three things from netlink:
resolving a family id, sending a request and getting its errno back, and pipelining thousands
of requests with one ``send`` per batch (a 1,000-service x 10-server table is 11,000 requests;
waiting for each acknowledgement in turn costs a round trip per request). The codec is ours
because it sits on that hot path: a request is a few ``struct.pack`` calls, not an object tree.

What this is not for: rtnetlink (addresses, links, routes, namespaces), for which pylvs uses
pyroute2, nor asynchronous event subscription.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator

NETLINK_GENERIC = 16
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10

_HDR = struct.Struct("=IHHII")  # nlmsghdr
_GENL = struct.Struct("=BBH")  # genlmsghdr
_NLA = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_BE16 = struct.Struct(">H")

Attrs = dict[int, bytes]


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` is the positive error number."""


# ---- attribute codec -----------------------------------------------------------------------

def nla(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return _NLA.pack(n, kind) + data + b"\0" * (-n % 4)


def nla_u8(kind: int, v: int) -> bytes:
    return nla(kind, bytes((v,)))


def nla_u16(kind: int, v: int) -> bytes:
    return nla(kind, _U16.pack(v))


def nla_be16(kind: int, v: int) -> bytes:
    return nla(kind, _BE16.pack(v))


def nla_u32(kind: int, v: int) -> bytes:
    return nla(kind, _U32.pack(v & 0xFFFFFFFF))


def nla_str(kind: int, v: str) -> bytes:
    return nla(kind, v.encode() + b"\0")


def parse_attrs(data: bytes | memoryview, offset: int = 0, end: int | None = None) -> Attrs:
    """Attributes by type (the nested flag and byte-order flag masked off); later ones win."""
    out: Attrs = {}
    if end is None:
        end = len(data)
    unpack = _NLA.unpack_from
    while offset + 4 <= end:
        n, kind = unpack(data, offset)
        if n < 4:
            break
        out[kind & 0x3FFF] = bytes(data[offset + 4 : offset + n])
        offset += (n + 3) & ~3
    return out


def get_u8(a: Attrs, k: int, default: int = 0) -> int:
    v = a.get(k)
    return v[0] if v else default


def get_u16(a: Attrs, k: int, default: int = 0) -> int:
    v = a.get(k)
    return int(_U16.unpack_from(v)[0]) if v and len(v) >= _U16.size else default


def get_be16(a: Attrs, k: int, default: int = 0) -> int:
    v = a.get(k)
    return int(_BE16.unpack_from(v)[0]) if v and len(v) >= _BE16.size else default


def get_u32(a: Attrs, k: int, default: int = 0) -> int:
    v = a.get(k)
    return int(_U32.unpack_from(v)[0]) if v and len(v) >= _U32.size else default


def get_u64(a: Attrs, k: int, default: int = 0) -> int:
    v = a.get(k)
    if not v:
        return default
    if len(v) >= 8:
        return int(_U64.unpack_from(v)[0])
    return int(_U32.unpack_from(v)[0]) if len(v) >= 4 else default


def get_str(a: Attrs, k: int, default: str = "") -> str:
    v = a.get(k)
    return v.split(b"\0", 1)[0].decode(errors="replace") if v is not None else default


# ---- socket --------------------------------------------------------------------------------

class GenlSocket:
    """One NETLINK_GENERIC socket bound to one family. Blocking; one user at a time."""

    def __init__(self, family_name: str, rcvbuf: int = 4 << 20) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock.bind((0, 0))
            self._seq = 1
            self.family_id = self._resolve(family_name)
        except BaseException:
            self._sock.close()
            raise

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> GenlSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    @staticmethod
    def _msg(family: int, flags: int, seq: int, cmd: int, version: int, payload: bytes) -> bytes:
        return _HDR.pack(20 + len(payload), family, flags, seq, 0) + _GENL.pack(cmd, version, 0) + payload

    def _resolve(self, name: str) -> int:
        seq = self._next_seq()
        msg = self._msg(GENL_ID_CTRL, NLM_F_REQUEST | NLM_F_ACK, seq, CTRL_CMD_GETFAMILY, 1,
                        nla_str(CTRL_ATTR_FAMILY_NAME, name))
        self._sock.send(msg)
        replies = list(self._replies({seq}))
        for attrs in replies:
            if CTRL_ATTR_FAMILY_ID in attrs:
                return get_u16(attrs, CTRL_ATTR_FAMILY_ID)
        raise NetlinkError(errno.ENOENT, f"generic netlink family {name} not found")

    def _replies(self, pending: set[int]) -> Iterator[Attrs]:
        """Yield payload attributes of data replies until every seq in ``pending`` is answered."""
        recv = self._sock.recv
        while pending:
            data = recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                n, kind, _flags, seq, _pid = _HDR.unpack_from(data, off)
                if n < 16:
                    break
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + 16)
                    pending.discard(seq)
                    if err:
                        raise NetlinkError(-err, os.strerror(-err))
                elif kind == NLMSG_DONE:
                    pending.discard(seq)
                    if n >= 20:
                        (err,) = struct.unpack_from("=i", data, off + 16)
                        if err < 0:
                            raise NetlinkError(-err, os.strerror(-err))
                elif seq in pending:
                    # A plain reply is followed by its ack; a dump's parts by NLMSG_DONE.
                    yield parse_attrs(data, off + 20, off + n)
                off += (n + 3) & ~3

    def request(self, cmd: int, payload: bytes = b"", version: int = 1) -> list[Attrs]:
        """One request, acknowledged; the data replies it produced (usually none)."""
        seq = self._next_seq()
        self._sock.send(self._msg(self.family_id, NLM_F_REQUEST | NLM_F_ACK, seq, cmd, version,
                                  payload))
        return list(self._replies({seq}))

    def dump(self, cmd: int, payload: bytes = b"", version: int = 1) -> list[Attrs]:
        seq = self._next_seq()
        self._sock.send(self._msg(self.family_id, NLM_F_REQUEST | NLM_F_DUMP, seq, cmd, version,
                                  payload))
        return list(self._replies({seq}))

    def pipeline(
        self, requests: Iterable[tuple[int, bytes]], version: int = 1, batch: int = 256,
    ) -> list[int]:
        """Send many requests, ``batch`` per ``send``; the errno of each (0 = done), in order.

        A failed request does not stop the ones after it, as with ``ipvsadm -R``: the caller
        decides what a failure means.
        """
        results: list[int] = []
        reqs = list(requests)
        fam = self.family_id
        flags = NLM_F_REQUEST | NLM_F_ACK
        for start in range(0, len(reqs), batch):
            chunk = reqs[start : start + batch]
            seqs = []
            parts = []
            for cmd, payload in chunk:
                seq = self._next_seq()
                seqs.append(seq)
                parts.append(self._msg(fam, flags, seq, cmd, version, payload))
            self._sock.send(b"".join(parts))
            status = dict.fromkeys(seqs, 0)
            pending = set(seqs)
            recv = self._sock.recv
            while pending:
                data = recv(1 << 20)
                off = 0
                while off + 16 <= len(data):
                    n, kind, _flags, seq, _pid = _HDR.unpack_from(data, off)
                    if n < 16:
                        break
                    if kind == NLMSG_ERROR and seq in pending:
                        (err,) = struct.unpack_from("=i", data, off + 16)
                        status[seq] = -err
                        pending.discard(seq)
                    off += (n + 3) & ~3
            results.extend(status[s] for s in seqs)
        return results
