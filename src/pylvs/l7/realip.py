"""nginx's realip module: behind a trusted proxy, the client address a request reports in a
header (X-Real-IP, X-Forwarded-For or any other) stands for the connection's.

Why per request, and twice: nginx runs the module in its post-read phase with the server's
settings (before the server's rewrites and the choice of a location) and, if that set nothing,
again in the preaccess phase with the location's (after the location's rewrites: a ``return``
there still sees the connection's address). Once an address is set it stays for the request,
internal redirects included, and it is the request's alone: it lives on the ``Request``
(``real_addr``), never on the connection, so the next request on a keep-alive connection, or a
head the fast paths know, starts from the connection's own address again. $remote_addr,
$remote_port (the header's port, empty without one), $proxy_add_x_forwarded_for, the access
log and the error log's "client:" then use it; $realip_remote_addr/_port keep the original.

The address is taken as ngx_http_get_forwarded_addr takes it: only when the address in hand is
trusted (``set_real_ip_from``), the last element of the value (after trailing commas and
spaces); with ``real_ip_recursive on`` further left while each address found is trusted (an
unparsable element then keeps the last good one), and over several X-Forwarded-For lines from
the last. An element may carry a port ("1.2.3.4:80", "[::1]:80").

``real_ip_header proxy_protocol`` takes the address (and port) of a ``listen ...
proxy_protocol`` connection's header (``proxyprotocol``), trusted by the same rules.

Not for: reading the PROXY header, or where the phases run (``routing``,
``connection._try_fast``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from pylvs.l7.proxyprotocol import ProxyHeader

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RealIp:
    """A level's realip settings: the trusted networks (None: ``unix:``), the header's name
    in lower case ("x-real-ip", "x-forwarded-for", "proxy_protocol" or another) and
    ``real_ip_recursive``."""

    trusted: tuple[Network | None, ...]
    header: bytes = b"x-real-ip"
    recursive: bool = False


class Req(Protocol):
    """What the module reads and sets of a request (``request.Request``; not imported:
    ``request`` is above this module)."""

    headers: list[tuple[bytes, bytes]]
    real_addr: str
    real_port: int


_DECLINED, _OK, _DONE = 0, 1, 2


def _parse_ip(text: bytes) -> Address | None:
    """ngx_parse_addr: a dotted quad (decimal octets, empty ones 0, not 255.255.255.255) or
    an IPv6 address."""
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = s.split(".")
    if len(parts) == 4 and all(p.isdigit() or p == "" for p in parts) \
            and all(int(p or 0) <= 255 for p in parts) and s != "255.255.255.255":
        return ipaddress.IPv4Address(".".join(str(int(p or 0)) for p in parts))
    if ":" not in s or "%" in s:  # (Python takes a zone id, nginx does not)
        return None
    try:
        return ipaddress.IPv6Address(s)
    except ValueError:
        return None


def _parse_addr_port(text: bytes) -> tuple[Address, int] | None:
    """ngx_parse_addr_port: an address, or one with a port (1-65535) after its first colon
    (an IPv6 address with a port in brackets)."""
    ip = _parse_ip(text)
    if ip is not None:
        return ip, 0
    if text[:1] == b"[":
        close = text.find(b"]")
        if close < 0 or close == len(text) - 1 or text[close + 1:close + 2] != b":":
            return None
        host, port = text[1:close], text[close + 2:]
    else:
        host, colon, port = text.partition(b":")
        if not colon:
            return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    ip = _parse_ip(host)
    return (ip, int(port)) if ip is not None else None


def _trusted(ip: Address, nets: tuple[Network | None, ...]) -> bool:
    """ngx_cidr_match: a network of the address's own family holds it."""
    return any(n is not None and n.version == ip.version and ip in n for n in nets)


def _forwarded(addr: tuple[Address, int], value: bytes, nets: tuple[Network | None, ...],
               recursive: bool) -> tuple[int, tuple[Address, int]]:
    """ngx_http_get_forwarded_addr_internal: the status and the address it leaves."""
    if not _trusted(addr[0], nets):
        return _DECLINED, addr
    end = len(value)
    p = end - 1
    while p > 0 and value[p] in b" ,":
        p -= 1
        end -= 1
    while p > 0:
        if value[p] in b" ,":
            p += 1
            break
        p -= 1
    got = _parse_addr_port(value[max(p, 0):end]) if end > 0 else None
    if got is None:
        return _DECLINED, addr
    if recursive and p > 0:
        rc, deeper = _forwarded(got, value[:p - 1], nets, True)
        return (_DONE, got) if rc == _DECLINED else (rc, deeper)
    return _OK, got


def _text(ip: Address) -> str:
    """The address as nginx prints it (ngx_inet6_ntop): IPv6 as Python compresses it, except
    an IPv4-mapped or IPv4-compatible one, whose last 32 bits nginx writes dotted."""
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    b = ip.packed
    lead = next((i for i in range(8) if b[2 * i] or b[2 * i + 1]), 8)  # leading zero groups
    if (lead == 5 and b[10:12] == b"\xff\xff") or lead == 6 \
            or (lead == 7 and b[14] != 0 and b[15] != 1):
        return ("::ffff:" if lead == 5 else "::") + str(ipaddress.IPv4Address(b[12:]))
    return str(ip)


def apply(req: Req, conf: RealIp, remote_addr: str, proxied: ProxyHeader | None = None) -> None:
    """Set ``req.real_addr`` (and ``real_port``) from the configured header when the
    connection's address ``remote_addr`` is trusted; nothing when it is not, or when the
    header is absent or holds no usable address. ``proxied``: the PROXY protocol header's
    source address and port, for ``real_ip_header proxy_protocol``."""
    header = conf.header
    pp_port = -1
    if header == b"proxy_protocol":
        if proxied is None or not proxied.src_addr:
            return  # not a proxy_protocol listener, or a header without addresses
        values = [proxied.src_addr.encode()]
        pp_port = proxied.src_port
    elif header == b"x-forwarded-for":
        values = [v for k, v in req.headers if k.lower() == header]
    else:  # nginx takes the first line of X-Real-IP or of another header
        values = next(([v] for k, v in req.headers if k.lower() == header), [])
    if not values:
        return
    try:
        ip = ipaddress.ip_address(remote_addr)
    except ValueError:  # not a TCP client: only ``unix:`` trusts it, and it has no address
        return
    addr: tuple[Address, int] = (ip, 0)
    rc, found = _DECLINED, False
    for value in reversed(values):
        rc, addr = _forwarded(addr, value, conf.trusted, conf.recursive)
        if not conf.recursive:
            break
        if rc == _DECLINED and found:
            rc = _DONE
            break
        if rc != _OK:
            break
        found = True
    if rc != _DECLINED:
        req.real_addr = _text(addr[0])
        req.real_port = addr[1] if pp_port < 0 else pp_port
