"""The text ipvsadm prints for ``-L`` (all its variants), ``-S`` and ``-Lc``, byte for byte.

What this is for: monitoring scripts and people parse these columns; the widths, the
truncations (a service name is cut at 33 characters, an IPv4 real server at 28), the trailing
blanks of ``%-10u`` columns and the K/M/G rounding of big counters are kept exactly. The default
order is ipvsadm's own sort, reproduced with its comparison (differences of unsigned 32-bit
words stored in a C ``int``) and glibc's merge sort, so even its odd order (192.168.x before
10.x) comes out the same.

What this is not for: fetching the data (the caller passes ``ServiceStatus`` rows in) or
deciding which listing to print.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from pylvs.core.api import DestStatus, ServiceStatus, SyncDaemonStatus
from pylvs.core.model import (
    AF_INET,
    AF_INET6,
    ConnEntry,
    ForwardingMethod,
    IPAddress,
    ServiceFlags,
    ServiceInfo,
    ServiceSpec,
    Timeouts,
    TunnelType,
)
from pylvs.core.stats import StatsSnapshot
from pylvs.ipvsadm.cparse import c_int32
from pylvs.ipvsadm.names import Resolver, ntop

FMT_NONE = 0x0000
FMT_NUMERIC = 0x0001
FMT_RULE = 0x0002
FMT_STATS = 0x0004
FMT_RATE = 0x0008
FMT_THRESHOLDS = 0x0010
FMT_PERSISTENTCONN = 0x0020
FMT_NOSORT = 0x0040
FMT_EXACT = 0x0080
FMT_TUN_INFO = 0x0100

_SCHED_FLAGS = ServiceFlags.SCHED1 | ServiceFlags.SCHED2 | ServiceFlags.SCHED3
_TUN_NAMES = {TunnelType.IPIP: "ipip", TunnelType.GUE: "gue", TunnelType.GRE: "gre"}
_TUN_FLAG_TEXT = ("-c", "+c", "r+c")
_TUN_FLAG_OPTS = ("--tun-nocsum", "--tun-csum", "--tun-remcsum")
_FWD_NAME = {
    ForwardingMethod.MASQ: "Masq",
    ForwardingMethod.LOCALNODE: "Local",
    ForwardingMethod.TUNNEL: "Tunnel",
    ForwardingMethod.DROUTE: "Route",
}
_FWD_SWITCH = {
    ForwardingMethod.MASQ: "-m",
    ForwardingMethod.TUNNEL: "-i",
    ForwardingMethod.LOCALNODE: "-g",
    ForwardingMethod.DROUTE: "-g",
}
_PROTO_LABEL = {6: "TCP", 17: "UDP", 132: "SCTP"}
_PROTO_OPTION = {6: "-t", 17: "-u", 132: "--sctp-service"}
# What /proc/net/ip_vs_conn calls a protocol (the kernel's ip_vs_proto_name).
_CONN_PROTO = {0: "IP", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}

T = TypeVar("T")


# ---- ordering ------------------------------------------------------------------------------


def glibc_msort(items: Sequence[T], cmp: Callable[[T, T], int]) -> list[T]:
    """glibc's ``qsort`` (a top-down merge sort), so a non-transitive comparison orders the same."""
    n = len(items)
    if n <= 1:
        return list(items)
    n1 = n // 2
    left = glibc_msort(items[:n1], cmp)
    right = glibc_msort(items[n1:], cmp)
    out: list[T] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if cmp(left[i], right[j]) <= 0:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


def _words(addr: IPAddress | None, af: int) -> list[int]:
    """The address as the kernel's ``union nf_inet_addr`` in host-order 32-bit words."""
    raw = addr.packed if addr is not None else b""
    raw = (raw + bytes(16))[:16]
    if af == AF_INET6:
        return [int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4)]
    return [int.from_bytes(raw[:4], "big")]


def _cmp_addr(a: IPAddress | None, b: IPAddress | None, af: int) -> int:
    r = 0
    for x, y in zip(_words(a, af), _words(b, af), strict=True):
        r = c_int32(x - y)
        if r:
            break
    return r


def _service_key(s: ServiceStatus) -> tuple[int, ...]:
    k = s.spec.key
    words = _words(k.addr, k.af)
    return (k.fwmark, int(k.af), k.protocol, *words, *([0] * (4 - len(words))), k.port)


def _dest_key(d: DestStatus) -> tuple[int, ...]:
    words = _words(d.spec.addr, d.spec.family)
    return (*words, *([0] * (4 - len(words))), d.spec.port)


def _ordered(items: Sequence[T], keys: list[tuple[int, ...]], cmp: Callable[[T, T], int]) -> list[T]:
    """ipvsadm's order. When no two values are 2**31 or more apart in any compared field, its
    wrapping comparison agrees with plain integer order and a keyed sort gives the same (stable)
    result much faster; otherwise run glibc's merge sort with the comparison itself."""
    if all(max(col) - min(col) < 2**31 for col in zip(*keys, strict=True)):
        order = sorted(range(len(items)), key=keys.__getitem__)
        return [items[i] for i in order]
    return glibc_msort(items, cmp)


def sort_dests(dests: Sequence[DestStatus]) -> list[DestStatus]:
    families = {d.spec.family for d in dests}
    if len(families) > 1:  # the comparison reads both by the first one's family: not symmetric
        return glibc_msort(dests, cmp_dests)
    return _ordered(dests, [_dest_key(d) for d in dests], cmp_dests)


def cmp_services(s1: ServiceStatus, s2: ServiceStatus) -> int:
    k1, k2 = s1.spec.key, s2.spec.key
    r = c_int32(k1.fwmark - k2.fwmark)
    if r:
        return r
    r = k1.af - k2.af
    if r:
        return r
    r = k1.protocol - k2.protocol
    if r:
        return r
    r = _cmp_addr(k1.addr, k2.addr, k1.af)
    if r:
        return r
    return k1.port - k2.port


def cmp_dests(d1: DestStatus, d2: DestStatus) -> int:
    r = _cmp_addr(d1.spec.addr, d2.spec.addr, d1.spec.family)
    if r:
        return r
    return d1.spec.port - d2.spec.port


# ---- pieces --------------------------------------------------------------------------------


def addrport_to_anyname(
    af: int, addr: IPAddress | None, port: int, protocol: int, fmt: int, resolver: Resolver
) -> str:
    """ipvsadm's ``addrport_to_anyname`` (its 60-byte buffer included)."""
    if addr is None:
        text = "::" if af == AF_INET6 else "0.0.0.0"
    elif fmt & FMT_NUMERIC:
        text = ntop(addr)
    else:
        text = resolver.addr_to_host(addr) or ntop(addr)
    if fmt & FMT_NUMERIC:
        port_text = str(port)
    else:
        port_text = resolver.port_to_service(port, protocol) or str(port)
    out = f"{text}:{port_text}" if af == AF_INET else f"[{text}]:{port_text}"
    return out[:59]


def print_largenum(value: int, fmt: int) -> str:
    if fmt & FMT_EXACT:
        digits = str(value)
        width = 9 if len(digits) <= 8 else len(digits) + 1
        return digits.rjust(width)
    if value < 100_000_000:
        return f"{value:9d}"
    if value < 1_000_000_000:
        return f"{value // 1000:8d}K"
    if value < 100_000_000_000:
        return f"{value // 1_000_000:8d}M"
    if value < 100_000_000_000_000:
        return f"{value // 1_000_000_000:8d}G"
    return f"{value // 1_000_000_000_000:8d}T"


def sched_flags_text(spec: ServiceSpec) -> str:
    names: list[str] = []
    f = spec.flags
    if spec.scheduler == "sh":
        pairs = [(ServiceFlags.SCHED1, "sh-fallback"), (ServiceFlags.SCHED2, "sh-port")]
    elif spec.scheduler == "mh":
        pairs = [(ServiceFlags.SCHED1, "mh-fallback"), (ServiceFlags.SCHED2, "mh-port")]
    else:
        pairs = [
            (ServiceFlags.SCHED1, "flag-1"),
            (ServiceFlags.SCHED2, "flag-2"),
            (ServiceFlags.SCHED3, "flag-3"),
        ]
    for bit, name in pairs:
        if f & bit:
            names.append(name)
    return ",".join(names)


def _mask_text(spec: ServiceSpec) -> str | None:
    af = spec.key.af
    if af == AF_INET and spec.netmask != 0xFFFFFFFF:
        m = spec.netmask & 0xFFFFFFFF
        return ".".join(str((m >> s) & 0xFF) for s in (24, 16, 8, 0))
    if af == AF_INET6 and spec.netmask != 128:
        return str(c_int32(spec.netmask))
    return None


def title(fmt: int) -> str:
    if fmt & FMT_STATS:
        return (
            f"{'Prot LocalAddress:Port':<33s} {'Conns':>8s} {'InPkts':>8s} {'OutPkts':>8s} "
            f"{'InBytes':>8s} {'OutBytes':>8s}\n  -> RemoteAddress:Port\n"
        )
    if fmt & FMT_RATE:
        return (
            f"{'Prot LocalAddress:Port':<33s} {'CPS':>8s} {'InPPS':>8s} {'OutPPS':>8s} "
            f"{'InBPS':>8s} {'OutBPS':>8s}\n  -> RemoteAddress:Port\n"
        )
    if fmt & FMT_THRESHOLDS:
        return (
            f"{'Prot LocalAddress:Port':<33s} {'Uthreshold':<10s} {'Lthreshold':<10s} "
            f"{'ActiveConn':<10s} {'InActConn':<10s}\n  -> RemoteAddress:Port\n"
        )
    if fmt & FMT_PERSISTENTCONN:
        return (
            f"{'Prot LocalAddress:Port':<33s} {'Weight':<9s} {'PersistConn':<11s} "
            f"{'ActiveConn':<10s} {'InActConn':<10s}\n  -> RemoteAddress:Port\n"
        )
    if fmt & FMT_TUN_INFO:
        return (
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        )
    if not fmt & FMT_RULE:
        return (
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        )
    return ""


def header(info: ServiceInfo) -> str:
    return f"IP Virtual Server version {info.version} (size={info.conn_tab_size})\n"


def _stats_cols(st: StatsSnapshot, fmt: int) -> str:
    return "".join(
        print_largenum(v, fmt) for v in (st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes)
    )


def _rate_cols(st: StatsSnapshot, fmt: int) -> str:
    return "".join(
        print_largenum(v, fmt) for v in (st.cps, st.inpps, st.outpps, st.inbps, st.outbps)
    )


def _tun_info(d: DestStatus) -> str | None:
    spec = d.spec
    if spec.fwd != ForwardingMethod.TUNNEL:
        return None
    flags = int(spec.tun_flags)
    flag_text = _TUN_FLAG_TEXT[flags] if 0 <= flags < len(_TUN_FLAG_TEXT) else "?"
    if spec.tun_type == TunnelType.IPIP:
        info = "ipip"
    elif spec.tun_type == TunnelType.GUE:
        info = f"gue:{spec.tun_port}:{flag_text}"
    elif spec.tun_type == TunnelType.GRE:
        info = f"gre:{flag_text}"
    else:
        return None
    return info[:15]


def _tunnel_rule(svc_name: str, dname: str, d: DestStatus) -> str:
    spec = d.spec
    sw = _FWD_SWITCH.get(spec.fwd, "(null)")
    flags = int(spec.tun_flags)
    flag_opt = _TUN_FLAG_OPTS[flags] if 0 <= flags < len(_TUN_FLAG_OPTS) else "(null)"
    base = f"-a {svc_name} -r {dname} {sw} -w {spec.weight}"
    if spec.tun_type == TunnelType.GRE:
        return f"{base} --tun-type gre {flag_opt}\n"
    if spec.tun_type == TunnelType.GUE:
        return f"{base} --tun-type gue --tun-port {spec.tun_port} {flag_opt}\n"
    if spec.tun_type == TunnelType.IPIP:
        return f"{base} --tun-type ipip\n"
    return f"{base}\n"


def service_entry(svc: ServiceStatus, fmt: int, resolver: Resolver) -> str:
    """One service and its real servers (ipvsadm's ``print_service_entry``)."""
    spec = svc.spec
    key = spec.key
    out: list[str] = []
    if key.fwmark:
        mark = c_int32(key.fwmark)
        if fmt & FMT_RULE:
            svc_name = f"-f {mark} -6" if key.af == AF_INET6 else f"-f {mark}"
        else:
            svc_name = f"FWM  {mark} IPv6" if key.af == AF_INET6 else f"FWM  {mark}"
    else:
        vname = addrport_to_anyname(key.af, key.addr, key.port, key.protocol, fmt, resolver)
        if fmt & FMT_RULE:
            svc_name = f"{_PROTO_OPTION.get(key.protocol, '--xxx-service')} {vname}"
        else:
            svc_name = f"{_PROTO_LABEL.get(key.protocol, '?'):<4s} {vname}"
            if key.af != AF_INET6:
                svc_name = svc_name[:33]

    if fmt & FMT_RULE:
        line = f"-A {svc_name} -s {spec.scheduler}"
        if spec.flags & ServiceFlags.PERSISTENT:
            line += f" -p {spec.timeout}"
            mask = _mask_text(spec)
            if mask is not None:
                line += f" -M {mask}"
        if spec.pe_name:
            line += f" --pe {spec.pe_name}"
        if spec.flags & ServiceFlags.ONEPACKET:
            line += " -o"
        if spec.flags & _SCHED_FLAGS:
            line += " -b " + sched_flags_text(spec)
    elif fmt & FMT_STATS:
        line = f"{svc_name:<33s}" + _stats_cols(svc.stats, fmt)
    elif fmt & FMT_RATE:
        line = f"{svc_name:<33s}" + _rate_cols(svc.stats, fmt)
    else:
        line = f"{svc_name} {spec.scheduler}"
        if spec.flags & _SCHED_FLAGS:
            line += f" ({sched_flags_text(spec)})"
        if spec.flags & ServiceFlags.PERSISTENT:
            line += f" persistent {spec.timeout}"
            mask = _mask_text(spec)
            if mask is not None:
                line += f" mask {mask}"
            if spec.pe_name:
                line += f" pe {spec.pe_name}"
        if spec.flags & ServiceFlags.ONEPACKET:
            line += " ops"
    out.append(line + "\n")

    dests = list(svc.dests)
    if not fmt & FMT_NOSORT:
        dests = sort_dests(dests)
    for d in dests:
        ds = d.spec
        af = ds.family
        dname = addrport_to_anyname(af, ds.addr, ds.port, key.protocol, fmt, resolver)
        if not fmt & FMT_RULE and af != AF_INET6:
            dname = dname[:28]
        if fmt & FMT_RULE:
            if ds.fwd == ForwardingMethod.TUNNEL:
                out.append(_tunnel_rule(svc_name, dname, d))
            else:
                sw = _FWD_SWITCH.get(ds.fwd, "(null)")
                out.append(f"-a {svc_name} -r {dname} {sw} -w {ds.weight}\n")
        elif fmt & FMT_STATS:
            out.append(f"  -> {dname:<28s}" + _stats_cols(d.stats, fmt) + "\n")
        elif fmt & FMT_RATE:
            st = d.stats
            out.append(
                f"  -> {dname:<28s} {st.cps:8d} {st.inpps:8d} {st.outpps:8d}"
                + print_largenum(st.inbps, fmt)
                + print_largenum(st.outbps, fmt)
                + "\n"
            )
        elif fmt & FMT_THRESHOLDS:
            out.append(
                f"  -> {dname:<28s} {ds.u_threshold:<10d} {ds.l_threshold:<10d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
        elif fmt & FMT_PERSISTENTCONN:
            out.append(
                f"  -> {dname:<28s} {ds.weight:<9d} {d.persistconns:<11d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
        elif fmt & FMT_TUN_INFO:
            fwd = _FWD_NAME.get(ds.fwd, "(null)")
            out.append(
                f"  -> {dname:<28s} {fwd:<7s} {_tun_info(d) or 'n/a':<13s} {ds.weight:<6d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
        else:
            fwd = _FWD_NAME.get(ds.fwd, "(null)")
            out.append(
                f"  -> {dname:<28s} {fwd:<7s} {ds.weight:<6d} "
                f"{d.activeconns:<10d} {d.inactconns:<10d}\n"
            )
    return "".join(out)


def sort_services(services: Sequence[ServiceStatus], fmt: int) -> list[ServiceStatus]:
    if fmt & FMT_NOSORT:
        return list(services)
    # Families are compared before addresses, so services of both families key consistently.
    return _ordered(services, [_service_key(s) for s in services], cmp_services)


def timeouts_line(t: Timeouts) -> str:
    return f"Timeout (tcp tcpfin udp): {t.tcp} {t.tcp_fin} {t.udp}\n"


def daemons_text(daemons: Sequence[SyncDaemonStatus]) -> str:
    out: list[str] = []
    for d in daemons:
        if d.state not in ("master", "backup"):
            continue
        line = f"{d.state} sync daemon (mcast={d.mcast_ifn}, syncid={d.syncid}"
        if d.sync_maxlen:
            line += f", maxlen={d.sync_maxlen}"
        if d.mcast_group:
            line += f", group={d.mcast_group}"
        if d.mcast_port:
            line += f", port={d.mcast_port}"
        if d.mcast_ttl:
            line += f", ttl={d.mcast_ttl}"
        out.append(line + ")\n")
    return "".join(out)


def conn_title(fmt: int) -> str:
    if fmt & FMT_PERSISTENTCONN:
        return (
            "IPVS connection entries\n"
            f"pro expire {'state':<11s} {'source':<18s} {'virtual':<18s} {'destination':<18s} "
            f"{'pe name':<16s} pe_data\n"
        )
    return (
        "IPVS connection entries\n"
        f"pro expire {'state':<11s} {'source':<18s} {'virtual':<18s} destination\n"
    )


def conn_row(c: ConnEntry, fmt: int, resolver: Resolver) -> str:
    """One ``-Lc`` row: what ipvsadm makes of one line of /proc/net/ip_vs_conn."""
    proto_name = _CONN_PROTO.get(c.protocol, f"IP_{c.protocol}")
    proto = c.protocol if c.protocol in _PROTO_LABEL else 0
    af = AF_INET6 if c.caddr.version == 6 else AF_INET
    daf = AF_INET6 if c.daddr.version == 6 else AF_INET
    cname = addrport_to_anyname(af, c.caddr, c.cport, proto, fmt, resolver)
    vname = addrport_to_anyname(af, c.vaddr, c.vport, proto, fmt, resolver)
    dname = addrport_to_anyname(daf, c.daddr, c.dport, proto, fmt, resolver)
    expires = max(0, int(c.expires)) & 0xFFFFFFFF
    expire = f"{expires // 60:02d}:{expires % 60:02d}"
    state = c.state.split()[0] if c.state.split() else c.state
    pe_name = c.pe_name.split()[0] if c.pe_name.split() else ""
    pe_data = c.pe_data.split()[0] if c.pe_data.split() else ""
    if fmt & FMT_PERSISTENTCONN and pe_name and pe_data:
        return (
            f"{proto_name:<3s} {expire:<6s} {state:<11s} {cname:<18s} {vname:<18s} "
            f"{dname:<16s} {pe_name:<18s} {pe_data}\n"
        )
    return f"{proto_name:<3s} {expire:<6s} {state:<11s} {cname:<18s} {vname:<18s} {dname}\n"
