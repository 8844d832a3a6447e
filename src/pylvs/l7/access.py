"""nginx's ``allow`` / ``deny`` (ngx_http_access_module): which client addresses a location
answers.

Why apart: the rules are read once (ADDRESS, CIDR, ``unix:`` or ``all``) and checked per
request with nginx's semantics, which are not "most specific wins": a level's rules are tried
in file order and the first that matches the client decides (deny: 403 and "access forbidden
by rule" in the error log); none matching allows. A client is compared with the rules of its
own address family only (an IPv4-mapped IPv6 client with the IPv4 ones), and a level without
rules of its own inherits its parent's list as a whole (``directives``). The check runs in
nginx's access phase, after the rewrite phase (``routing.dispatch``): a ``return`` in the
location answers before a ``deny all``.

Not for: where the check is made on the fast paths (``connection._try_fast`` calls
``allowed`` before answering a known head from a cache).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rule:
    """One ``allow``/``deny`` line: ``net`` None for ``unix:`` (no TCP client matches it)."""

    deny: bool
    net: Network | None


def cidr(value: str) -> Network | None:
    """ngx_ptocidr: an address or a CIDR as nginx reads it (each IPv4 octet in decimal, "010"
    is 10; low bits set, "10.1.1.1/8", dropped as nginx does after a warning), None when it
    is neither (``allow``/``deny``: "invalid parameter"; ``set_real_ip_from``: a host name)."""
    addr, slash, bits = value.partition("/")
    if (slash and not bits.isdigit()) or "%" in addr:
        return None
    if ":" not in addr:
        octets = addr.split(".")
        if len(octets) != 4 or not all(o.isdigit() and int(o) <= 255 for o in octets):
            return None
        addr = ".".join(str(int(o)) for o in octets)
    try:
        return ipaddress.ip_network(f"{addr}/{int(bits)}" if slash else addr, strict=False)
    except ValueError:
        return None


def parse(value: str, deny: bool) -> tuple[Rule, ...] | None:
    """The rules of one ``allow``/``deny`` argument (``all``: one per family), None where
    nginx says "invalid parameter" (not an address, a CIDR or one of the two words)."""
    if value == "all":
        return (Rule(deny, ipaddress.ip_network("0.0.0.0/0")),
                Rule(deny, ipaddress.ip_network("::/0")), Rule(deny, None))
    if value == "unix:":
        return (Rule(deny, None),)
    net = cidr(value)
    return None if net is None else (Rule(deny, net),)


def low_bits(value: str) -> bool:
    """A CIDR with address bits past its prefix ("10.1.1.1/8"), which nginx warns about: "low
    address bits of ... are meaningless"."""
    rules = parse(value, False)
    if not rules or rules[0].net is None or "/" not in value:
        return False
    net = rules[0].net
    addr = value.partition("/")[0]
    if net.version == 4:
        addr = ".".join(str(int(o)) for o in addr.split("."))
    return ipaddress.ip_address(addr) != net.network_address


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_ADDRS: dict[str, Address | None] = {}


def _address(text: str) -> Address | None:
    """A client's address as the rules compare it (parsed once per distinct address)."""
    if text in _ADDRS:
        return _ADDRS[text]
    ip: Address | None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if len(_ADDRS) >= 4096:
        _ADDRS.clear()
    _ADDRS[text] = ip
    return ip


def allowed(rules: tuple[Rule, ...], remote_addr: str) -> bool:
    """Whether the first rule of the client's family that matches it allows it (no match:
    allowed)."""
    ip = _address(remote_addr)
    if ip is None:
        return True
    for r in rules:
        net = r.net
        if net is not None and net.version == ip.version and ip in net:
            return not r.deny
    return True
