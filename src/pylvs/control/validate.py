"""Checking a control request's arguments before anything is changed, as ipvsadm's command line
checks its options.

What this is for: the control socket is a second way into the table besides ``pylvsadm``, and it
must refuse what ipvsadm refuses. ipvsadm never lets a port above 65535, a negative timeout or a
weight above INT_MAX reach the kernel, and the kernel itself refuses unknown protocols, mixed
address families and unknown schedulers with an errno; a JSON request bypasses ipvsadm's parser,
so the same limits are applied here, with ipvsadm's own words ("illegal weight specified",
"invalid timeout value `-1' specified", ...), before the operation runs. Every function returns
the model object or raises ``IPVSError(EINVAL, text)``; nothing here touches the table, so a
refused request changes nothing. The table then applies the kernel's own rules (ESRCH, EEXIST,
ENOENT for an unknown scheduler), also before it changes anything.

Limits (ipvsadm 1.31's ``string_to_number`` bounds): ports 0-65535 (a tunnel port 0-65535,
0 meaning unset), weights and thresholds 0-INT_MAX, the persistence timeout 1-2678400 (31
days) when persistent (0 otherwise), ``--set`` timeouts 0-2678400, fwmark 1-UINT_MAX, an IPv6
persistence prefix 1-128, an IPv4 netmask any 32-bit mask, syncid 0-255.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from pylvs.core.api import IPVSError, SyncDaemonStatus
from pylvs.core.model import (
    AF_INET,
    AF_INET6,
    DestSpec,
    ForwardingMethod,
    IPAddress,
    Protocol,
    ServiceFlags,
    ServiceKey,
    ServiceSpec,
    Timeouts,
    TunnelFlags,
    TunnelType,
)

INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1
MAX_TIMEOUT = 86400 * 31  # ipvsadm's MAX_TIMEOUT
SCHEDNAME_MAXLEN = 16  # IP_VS_SCHEDNAME_MAXLEN, the terminating NUL included
PENAME_MAXLEN = 16
IFNAME_MAXLEN = 16
_SERVICE_FLAGS = int(
    ServiceFlags.PERSISTENT | ServiceFlags.HASHED | ServiceFlags.ONEPACKET
    | ServiceFlags.SCHED1 | ServiceFlags.SCHED2 | ServiceFlags.SCHED3
)
_TUN_FLAGS = int(TunnelFlags.CSUM | TunnelFlags.REMCSUM)


def _bad(text: str) -> IPVSError:
    return IPVSError(errno.EINVAL, text)


def obj(d: Any, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _bad(f"{what} must be an object")
    return d


def integer(d: dict[str, Any], name: str, lo: int, hi: int, text: str,
            default: int | None = None) -> int:
    """``d[name]``, an integer in [lo, hi] (JSON true/false are not numbers), or ``text``."""
    v = d.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(text)
    return v


def string(d: dict[str, Any], name: str, maxlen: int, text: str, default: str | None = None) -> str:
    v = d.get(name, default)
    if not isinstance(v, str) or len(v) >= maxlen or "\0" in v:
        raise _bad(text)
    return v


def address(v: Any, text: str) -> IPAddress:
    if not isinstance(v, str):
        raise _bad(text)
    try:
        return ipaddress.ip_address(v)
    except ValueError:
        raise _bad(text) from None


def service_key(d: Any) -> ServiceKey:
    """A virtual service: protocol + address + port of the address's family, or a fwmark."""
    d = obj(d, "the service key")
    af = d.get("af")
    if af not in (AF_INET, AF_INET6) or isinstance(af, bool):
        raise _bad("illegal address family: use 2 (AF_INET) or 10 (AF_INET6)")
    fwmark = integer(d, "fwmark", 0, UINT_MAX,
                     f"invalid fwmark value `{d.get('fwmark')}' specified", default=0)
    if fwmark:
        if d.get("addr") is not None or d.get("port", 0) != 0 or d.get("protocol", 0) != 0:
            raise _bad("a fwmark service has no address, port or protocol")
        return ServiceKey.mark(fwmark, af)
    text = "illegal virtual server address[:port] specified"
    addr = address(d.get("addr"), text)
    if (addr.version == 4) != (af == AF_INET):
        raise _bad(f"address family {af} does not match the address {addr}")
    port = integer(d, "port", 0, 65535, text)
    proto = d.get("protocol")
    if isinstance(proto, bool) or proto not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
        raise _bad("invalid protocol: use 6 (TCP), 17 (UDP) or 132 (SCTP)")
    return ServiceKey(af, int(proto), addr, port, 0)


def service_spec(d: Any) -> ServiceSpec:
    d = obj(d, "the service")
    key = service_key(d.get("key"))
    sched = string(d, "scheduler", SCHEDNAME_MAXLEN, "illegal scheduler name")
    flags = integer(d, "flags", 0, _SERVICE_FLAGS, "illegal service flags", default=0)
    if flags & ~_SERVICE_FLAGS:
        raise _bad("illegal service flags")
    timeout_v = d.get("timeout", 0)
    persistent = bool(flags & ServiceFlags.PERSISTENT)
    timeout = integer(d, "timeout", 1 if persistent else 0, MAX_TIMEOUT,
                      f"invalid timeout value `{timeout_v}' specified", default=0)
    if key.af == AF_INET6:
        netmask = integer(d, "netmask", 1, 128, "illegal ipv6 netmask specified", default=128)
    else:
        netmask = integer(d, "netmask", 0, UINT_MAX,
                          "illegal virtual server persistent mask specified", default=UINT_MAX)
    pe = string(d, "pe_name", PENAME_MAXLEN, "illegal persistence engine name", default="")
    return ServiceSpec(key, sched, ServiceFlags(flags), timeout, netmask, pe)


def dest_spec(d: Any) -> DestSpec:
    d = obj(d, "the real server")
    text = "illegal real server address[:port] specified"
    addr = address(d.get("addr"), text)
    port = integer(d, "port", 0, 65535, text)
    fwd = integer(d, "fwd", 0, max(ForwardingMethod), "illegal forwarding method",
                  default=int(ForwardingMethod.DROUTE))
    weight = integer(d, "weight", 0, INT_MAX, "illegal weight specified", default=1)
    u = integer(d, "u_threshold", 0, INT_MAX, "illegal u_threshold specified", default=0)
    lo = integer(d, "l_threshold", 0, INT_MAX, "illegal l_threshold specified", default=0)
    tun_type = integer(d, "tun_type", 0, max(TunnelType), "illegal tunnel type specified",
                       default=0)
    tun_port = integer(d, "tun_port", 0, 65535, "illegal tunnel port specified", default=0)
    tun_flags = integer(d, "tun_flags", 0, _TUN_FLAGS, "illegal tunnel flags", default=0)
    af = d.get("af", 0)
    if af not in (0, AF_INET, AF_INET6) or isinstance(af, bool):
        raise _bad("illegal address family: use 0, 2 (AF_INET) or 10 (AF_INET6)")
    if af and (addr.version == 4) != (af == AF_INET):
        raise _bad(f"address family {af} does not match the address {addr}")
    return DestSpec(addr, port, ForwardingMethod(fwd), weight, u, lo, TunnelType(tun_type),
                    tun_port, TunnelFlags(tun_flags), af)


def dest_address(d: dict[str, Any]) -> tuple[IPAddress, int]:
    text = "illegal real server address[:port] specified"
    return address(d.get("addr"), text), integer(d, "port", 0, 65535, text)


def timeouts(v: Any) -> Timeouts:
    """``--set tcp tcpfin udp``: three numbers in [0, MAX_TIMEOUT] (0 keeps the current)."""
    if not isinstance(v, list) or len(v) != 3:
        raise _bad("--set option requires 3 timeout values")
    vals = {str(i): x for i, x in enumerate(v)}
    t = [integer(vals, str(i), 0, MAX_TIMEOUT, f"invalid timeout value `{vals[str(i)]}' specified")
         for i in range(3)]
    return Timeouts(t[0], t[1], t[2])


def daemon_state(v: Any) -> str:
    if v not in ("master", "backup"):
        raise _bad("illegal start-daemon parameter specified")
    return str(v)


def daemon(d: Any) -> SyncDaemonStatus:
    d = obj(d, "the sync daemon")
    state = daemon_state(d.get("state"))
    ifn = string(d, "mcast_ifn", IFNAME_MAXLEN, "illegal mcast-interface specified", default="")
    syncid = integer(d, "syncid", 0, 255, "illegal syncid specified", default=0)
    maxlen = integer(d, "sync_maxlen", 0, 65535 - 20 - 8, "illegal sync-maxlen specified",
                     default=0)
    group = d.get("mcast_group") or ""
    if group:
        fam = "IPv6" if isinstance(group, str) and ":" in group else "IPv4"
        if not address(group, f"invalid {fam} mcast-group `{group}'").is_multicast:
            raise _bad(f"invalid {fam} mcast-group `{group}'")
    port = integer(d, "mcast_port", 0, 65535, "illegal mcast-port specified", default=0)
    ttl = integer(d, "mcast_ttl", 0, 255, "illegal mcast-ttl specified", default=0)
    return SyncDaemonStatus(state=state, mcast_ifn=ifn, syncid=syncid, sync_maxlen=maxlen,
                            mcast_group=group, mcast_port=port, mcast_ttl=ttl)


def sysctl_values(v: Any) -> dict[str, object]:
    """The ``set_sysctl`` object: names to integers, or lists of integers for a vector setting
    (each checked by the setting's owner, which knows its kind)."""
    d = obj(v, "the settings")
    if not d:
        raise _bad("no setting given")
    return dict(d)
