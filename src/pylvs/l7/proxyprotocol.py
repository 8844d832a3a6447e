"""The PROXY protocol header a load balancer (pylvs' proxy plane, HAProxy, an LVS front end
with a PROXY-speaking relay) sends before the client's bytes, as nginx's ``listen ...
proxy_protocol`` reads it: versions 1 (text) and 2 (binary).

Why by hand, sans-IO: it is a few dozen bytes of fixed format, read once per connection before
HTTP, and nginx's exact acceptance matters (a header it refuses closes the connection with
"broken header" in the error log, no answer). ``parse`` takes the bytes read so far and says
what they are: complete (the addresses and how many bytes the header took), incomplete, or
broken. nginx 1.22 reads the header from the connection's first read only, so the connection
treats incomplete as broken (``listen.ProxiedConnection``).

- v1: ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` (at most 107 bytes) or ``PROXY UNKNOWN
  ...\\r\\n`` (no addresses); the addresses may be of either family whatever the protocol
  word says (nginx does not compare them), the ports 0-65535 in decimal.
- v2: the 12-byte signature, version 2 with command LOCAL (no addresses) or PROXY; TCP or UDP
  over IPv4 or IPv6 gives the addresses, other families none; the TLVs after them are skipped.

Not for: the connection that waits for it (``connection.ProxiedConnection``), the variables
(``$proxy_protocol_addr`` and the rest: ``request``) or ``real_ip_header proxy_protocol``
(``realip``).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 16 + 65535


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the header said: empty strings and zero ports where it gave no addresses."""

    src_addr: str = ""
    src_port: int = 0
    dst_addr: str = ""
    dst_port: int = 0


class Broken(ValueError):
    """Not a PROXY protocol header: the text nginx logs after "broken header: "."""


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """(the header, its length) if ``data`` starts with a whole one; None if it may be one
    not yet complete; ``Broken`` if it cannot be one."""
    if data[:len(V2_SIGNATURE)] == V2_SIGNATURE[:len(data)]:
        return _v2(data) if len(data) >= 16 else None
    if not data.startswith(b"PROXY "[:len(data)]):
        raise Broken(first_line(data))
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise Broken(first_line(data))
        return None
    return _v1(data[:end]), end + 2


def first_line(data: bytes) -> str:
    """What nginx logs of a broken header: up to its first CR or LF."""
    cut = len(data)
    for stop in (b"\r", b"\n"):
        i = data.find(stop)
        if 0 <= i < cut:
            cut = i
    return data[:cut].decode("latin-1")


def _v1(line: bytes) -> ProxyHeader:
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader()
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise Broken(line.decode("latin-1"))
    try:
        src = ipaddress.ip_address(parts[2].decode("ascii"))
        dst = ipaddress.ip_address(parts[3].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise Broken(line.decode("latin-1")) from None
    ports = parts[4:6]
    if not all(p.isdigit() and len(p) <= 5 and int(p) <= 65535 for p in ports):
        raise Broken(line.decode("latin-1"))
    return ProxyHeader(str(src), int(ports[0]), str(dst), int(ports[1]))


def _v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    ver_cmd, family = data[12], data[13]
    length = 16 + int.from_bytes(data[14:16], "big")
    if ver_cmd >> 4 != 2 or ver_cmd & 0x0F > 1:
        raise Broken(first_line(data))
    if len(data) < length:
        return None
    if ver_cmd & 0x0F == 0:  # LOCAL: the balancer's own connection, no addresses
        return ProxyHeader(), length
    body = data[16:length]
    if family in (0x11, 0x12) and len(body) >= 12:
        return ProxyHeader(socket.inet_ntop(socket.AF_INET, body[0:4]),
                           int.from_bytes(body[8:10], "big"),
                           socket.inet_ntop(socket.AF_INET, body[4:8]),
                           int.from_bytes(body[10:12], "big")), length
    if family in (0x21, 0x22) and len(body) >= 36:
        return ProxyHeader(socket.inet_ntop(socket.AF_INET6, body[0:16]),
                           int.from_bytes(body[32:34], "big"),
                           socket.inet_ntop(socket.AF_INET6, body[16:32]),
                           int.from_bytes(body[34:36], "big")), length
    if family in (0x11, 0x12, 0x21, 0x22):  # too short for its family's addresses
        raise Broken(first_line(data))
    return ProxyHeader(), length
