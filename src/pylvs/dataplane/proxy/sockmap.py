"""In-kernel relay of established proxy connections: a BPF socket map and a stream verdict.

What this is for: once a proxied TCP connection is established and has shown it is long-lived,
the relay asks the kernel to move its bytes. Both sockets go into a ``SOCKHASH`` map keyed by
their socket cookie; a ``SK_SKB`` verdict program attached to the map redirects every segment a
socket receives to the send side of its peer, found through a second map (cookie -> peer's
cookie). The proxy process is then not woken per request at all: its only remaining work for the
connection is the FIN, an error and the once-a-second counters. This is the same step the packet
plane takes with its C fast path, here done by the kernel's own socket-map machinery.

What this is not for: choosing a real server, accounting to the core or propagating half-closes
(``relay`` and ``flow`` keep all of that), and it is optional: without CAP_BPF/CAP_NET_ADMIN, on a kernel
without socket maps, or with ``PYLVS_PROXY_SOCKMAP=0``, relays stay in user space.

The program is C (``relay_verdict.bpf.c``, compiled with clang by the package's build step),
loaded through ``pylvs.libbpf`` with its maps sized to the relay limit; the per-relay map updates
are ``pylvs.bpf``'s system calls (one each, no allocation: they run for every hand-over).

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

import errno
import socket
import struct
from _socket import socket as RawSocket

from pylvs.bpf import AttachType, Bpf, socket_cookie
from pylvs.libbpf import BpfObject, object_file

__all__ = ["SockmapRelay", "bytes_written", "socket_cookie"]

OBJECT_NAME = "relay_verdict.bpf.o"
_SO_RCVLOWAT = socket.SO_RCVLOWAT

# struct tcp_info offsets (include/uapi/linux/tcp.h; the layout only ever grows at the end).
_TI_NOTSENT = 144
_TI_BYTES_SENT = 200
_TI_BYTES_RETRANS = 208
_TI_SIZE = 216


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
    until the proxy takes the side back (``relay.Relay.take_back``).
    """

    def __init__(self, capacity: int, window: int = 4 << 20) -> None:
        self.window = window
        self.bpf = Bpf()
        # BpfUnavailable (an OSError): not built, no libbpf, no privilege; the caller relays
        # in user space
        self.obj: BpfObject | None = BpfObject(
            object_file(__file__, OBJECT_NAME, "in-kernel relay"),
            {"sock_map": capacity, "link_map": capacity, "count_map": capacity},
            kind="in-kernel relay")
        try:
            self.sock_map = self.obj.map_fd("sock_map")
            self.link_map = self.obj.map_fd("link_map")
            self.count_map = self.obj.map_fd("count_map")
            self.bpf.prog_attach(self.obj.prog_fd("relay_verdict"), self.sock_map,
                                 AttachType.SK_SKB_VERDICT)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()  # the maps and the program go with the object's descriptors
            self.obj = None

    # ---- one relay -----------------------------------------------------------------------------

    def attach(self, a: RawSocket, ca: int, b: RawSocket, cb: int) -> None:
        """Hand both sockets to the kernel; raises OSError (nothing left behind) if it cannot."""
        bpf = self.bpf
        ka, kb = _Q.pack(ca), _Q.pack(cb)
        try:
            bpf.map_update(self.count_map, ka, _ZERO_COUNT)
            bpf.map_update(self.count_map, kb, _ZERO_COUNT)
            bpf.map_update(self.link_map, ka, _LINK.pack(cb, 0, self.window))
            bpf.map_update(self.link_map, kb, _LINK.pack(ca, 0, self.window))
            bpf.map_update(self.sock_map, kb, struct.pack("<I", b.fileno()))
            bpf.map_update(self.sock_map, ka, struct.pack("<I", a.fileno()))
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
        self.bpf.map_update(self.link_map, _Q.pack(cookie), _LINK.pack(peer, nbytes, credit))

    def hold(self, cookie: int, peer: int) -> None:
        """Redirect nothing more from this side: every segment is passed up from now on."""
        self.bpf.map_update(self.link_map, _Q.pack(cookie), _LINK.pack(peer, HOLD, 0))

    def counters(self, cookie: int) -> tuple[int, int, int]:
        """(passed bytes, redirected bytes, redirected segments) of one side."""
        passed, rbytes, rsegs = _COUNT.unpack(self.bpf.map_lookup(self.count_map, _Q.pack(cookie), 24))
        return passed, rbytes, rsegs

    def detach(self, *cookies: int) -> None:
        """Forget a relay's entries (its sockets leave the socket map when they are closed)."""
        bpf = self.bpf
        for c in cookies:
            k = _Q.pack(c)
            for fd in (self.link_map, self.count_map, self.sock_map):
                try:
                    bpf.map_delete(fd, k)
                except OSError:
                    pass
