"""keepalived's words for what the checkers and the virtual servers do, so that a log reads the same.

What this is for: operators grep keepalived's log (and alert on it) for lines such as
``TCP_CHECK on service [10.0.1.1]:tcp:80 failed after 3 retries.``, ``Removing service
[10.0.1.1]:tcp:80 from VS [10.0.0.1]:tcp:80`` or ``Lost quorum 1-0=1 > 0 for VS ...``. Replacing
keepalived with pylvs must not break those greps, so every line here follows keepalived 2.2.7's
format strings (``keepalived/check/ipwrapper.c``, ``check_api.c`` and the ``check_*.c`` of each
checker) with the same names for services: ``[addr]:proto:port`` (FMT_RS/FMT_VS), ``FWM n`` for a
firewall-mark service and ``[group]:port`` for a virtual_server_group.

The functions are pure (text in, text out); the state (``pylvs.health.state``) decides *when* a
line is due, the checker kinds (``pylvs.health.checkers``) give their own lines through
:func:`retries_text` and the names below, and the driver writes them to the log.

What this is not for: deciding anything, or VRRP's lines (``pylvs.vrrp``).
"""

from __future__ import annotations

from pylvs.config.keepalived import VirtualServerConfig
from pylvs.core.model import DestSpec

__all__ = [
    "activating", "pool", "proto_name", "quorum_gained", "quorum_lost", "retries_text",
    "rs_text", "server_changed", "shutting_down", "sorry_server", "vs_text", "weight_changed",
]

_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 0: "none"}


def proto_name(vs: VirtualServerConfig) -> str:
    """keepalived's protocol word for a virtual server: a firewall-mark service has none
    (keepalived clears ``protocol`` there, with a warning)."""
    key = vs.services[0].key if vs.services else None
    if key is None or key.fwmark:
        return "none"
    return _PROTOCOLS.get(int(key.protocol), "?")


def vs_text(vs: VirtualServerConfig) -> str:
    """FMT_VS: ``[10.0.0.1]:tcp:80``, ``FWM 5``, or ``[GROUP]:0`` for a virtual_server_group
    (keepalived prints the group's name with the virtual server's own port, which a group
    server does not have)."""
    words = vs.name.split()
    if len(words) >= 2 and words[0] == "group":
        return f"[{words[1]}]:0"
    key = vs.services[0].key if vs.services else None
    if key is None:
        return f"[{vs.name}]"
    if key.fwmark:
        return f"FWM {key.fwmark}"
    return f"[{key.addr}]:{proto_name(vs)}:{key.port}"


def rs_text(dest: DestSpec, vs: VirtualServerConfig) -> str:
    """FMT_RS: a real server with its virtual server's protocol, ``[10.0.1.1]:tcp:80``."""
    return f"[{dest.addr}]:{proto_name(vs)}:{dest.port}"


def retries_text(retries: int) -> str:
    """The " after N retries" keepalived adds once a checker has used its retries."""
    return f" after {retries} retries" if retries else ""


def activating(dest: DestSpec, vs: VirtualServerConfig, active: bool, change: bool = False) -> str:
    """A checker starting (``Activating``/``Deactivating``, at start) or, with ``change``, an
    ha_suspend checker resuming or suspending as the VIP comes and goes."""
    if change:
        verb = "Activating" if active else "Suspending"
    else:
        verb = "Activating" if active else "Deactivating"
    return f"{verb} healthchecker for service {rs_text(dest, vs)} for VS {vs_text(vs)}"


def server_changed(dest: DestSpec, vs: VirtualServerConfig, alive: bool, inhibit: bool) -> str:
    """A real server entering or leaving the pool (with inhibit_on_failure it stays, at weight 0)."""
    if inhibit:
        verb = "Enabling" if alive else "Disabling"
        link = "of"
    else:
        verb = "Adding" if alive else "Removing"
        link = "to" if alive else "from"
    return f"{verb} service {rs_text(dest, vs)} {link} VS {vs_text(vs)}"


def shutting_down(dest: DestSpec, vs: VirtualServerConfig) -> str:
    return f"Shutting down service {rs_text(dest, vs)} from VS {vs_text(vs)}"


def quorum_lost(vs: VirtualServerConfig, weight_sum: int, starting: bool = False) -> str:
    """keepalived prints quorum-hysteresis=threshold > live weight; at start (quorum down with a
    sorry server) the threshold it prints is quorum+hysteresis, as its code computes it."""
    q, h = vs.quorum, vs.hysteresis
    threshold = q + h if starting else q - h
    what = "Starting with quorum down" if starting else "Lost quorum"
    return f"{what} {q}-{h}={threshold} > {weight_sum} for VS {vs_text(vs)}"


def quorum_gained(vs: VirtualServerConfig, weight_sum: int) -> str:
    q, h = vs.quorum, vs.hysteresis
    return f"Gained quorum {q}+{h}={q + h} <= {weight_sum} for VS {vs_text(vs)}"


def sorry_server(dest: DestSpec, vs: VirtualServerConfig, adding: bool, inhibit: bool) -> str:
    if adding:
        verb, link = ("Enabling" if inhibit else "Adding"), "to"
    else:
        verb, link = ("Disabling" if inhibit else "Removing"), "from"
    return f"{verb} sorry server {rs_text(dest, vs)} {link} VS {vs_text(vs)}"


def pool(vs: VirtualServerConfig, adding: bool) -> str:
    what = "Adding alive servers to" if adding else "Removing alive servers from"
    return f"{what} the pool for VS {vs_text(vs)}"


def weight_changed(dest: DestSpec, vs: VirtualServerConfig, old: int, new: int, alive: bool) -> str:
    return (f"Changing weight from {old} to {new} for {'' if alive else 'in'}active service "
            f"{rs_text(dest, vs)} of VS {vs_text(vs)}")
