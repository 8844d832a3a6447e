"""The realip module's directive rows (``set_real_ip_from``, ``real_ip_header``,
``real_ip_recursive``) and a level's merged settings, in nginx's words for misuse.

Why apart from ``realip``: that module runs per request and ``model`` names its ``RealIp``;
the rows import ``directives``, which imports ``model`` (one module holding both would be an
import cycle).

Not for: taking the address from a request (``realip.apply``).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pylvs.l7.access import cidr, low_bits
from pylvs.l7.directives import HSL, Level, flag_value, setting
from pylvs.l7.realip import Network, RealIp
from pylvs.l7.syntax import ConfigError, Directive


@setting("set_real_ip_from", HSL, 1, 1)
def _set_real_ip_from(lv: Level, d: Directive) -> None:
    """A level's own lines replace its parent's list as a whole, as nginx merges it."""
    value = d.args[0]
    nets: tuple[Network | None, ...] | None = _cidr(value)
    if nets is not None and low_bits(value):
        lv.reader.warnings.append(f"low address bits of {value} are meaningless in "
                                  f"{d.file}:{d.line}")
    if nets is None:  # nginx resolves a name when reading the file (every address it has)
        try:
            infos = socket.getaddrinfo(value, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            raise ConfigError(f'host not found in set_real_ip_from "{value}"',
                              d.file, d.line) from None
        nets = tuple(dict.fromkeys(ipaddress.ip_network(str(i[4][0]).partition("%")[0])
                                   for i in infos))
    own = lv.s["real_ip_from"] if "real_ip_from" in lv.seen else ()
    lv.seen.add("real_ip_from")
    lv.s["real_ip_from"] = (*own, *nets)


def _cidr(value: str) -> tuple[Network | None] | None:
    """(None,) for ``unix:``, else ``access.cidr``'s network; None for neither (a name)."""
    if value == "unix:":
        return (None,)
    net = cidr(value)
    return None if net is None else (net,)


@setting("real_ip_header", HSL, 1, 1)
def _real_ip_header(lv: Level, d: Directive) -> None:
    lv.s["real_ip_header"] = d.args[0].lower().encode("latin-1")


@setting("real_ip_recursive", HSL, 1, 1, once=True)
def _real_ip_recursive(lv: Level, d: Directive) -> None:
    lv.s["real_ip_recursive"] = flag_value(d.args[0], d)


def realip_of(s: dict[str, Any]) -> RealIp | None:
    """A level's realip settings, None without ``set_real_ip_from`` (nothing is trusted)."""
    trusted = s.get("real_ip_from")
    if not trusted:
        return None
    return RealIp(trusted, s.get("real_ip_header", b"x-real-ip"),
                  s.get("real_ip_recursive", False))
