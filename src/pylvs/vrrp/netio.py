"""The kernel side of VRRP: raw protocol-112 sockets (multicast or unicast, TTL 255), the VIPs
via netlink (pyroute2), gratuitous ARP and unsolicited neighbour advertisements, and ARP frames
seen on the wire (split-brain evidence).

Thin wrappers with no protocol decisions. Not for: the VRRP state machine (:mod:`router`).
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pylvs.vrrp import packet as pkt

if TYPE_CHECKING:
    from pylvs.config.keepalived import VirtualRoute, VirtualRule

ETH_P_ARP = 0x0806
ETH_P_ALL = 0x0003
SO_BINDTODEVICE = 25
SIOCGIFADDR = 0x8915
IP_MULTICAST_ALL = 49
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
BROADCAST_MAC = b"\xff" * 6


def ifindex(name: str) -> int:
    return socket.if_nametoindex(name)


def mac_address(name: str) -> bytes:
    text = Path(f"/sys/class/net/{name}/address").read_text().strip()
    return bytes.fromhex(text.replace(":", ""))


def oper_up(name: str) -> bool:
    """An interface counts as up when it exists and is administratively and operationally up."""
    try:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text(), 16)
        state = Path(f"/sys/class/net/{name}/operstate").read_text().strip()
    except OSError:
        return False
    return bool(flags & 1) and state in ("up", "unknown")


# pyroute2's synchronous IPRoute runs its own event loop, which cannot nest in the daemon's:
# every netlink call goes through this one worker thread (calls are short and rare).
_NETLINK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pylvs-netlink")
R = TypeVar("R")


def in_netlink_thread(fn: Callable[[], R]) -> R:
    return _NETLINK.submit(fn).result()


def interface_addresses(name: str, family: int) -> list[str]:
    """Addresses on ``name`` in kernel order (the first is the primary)."""

    def get() -> list[str]:
        from pyroute2 import IPRoute

        fam = socket.AF_INET if family == 4 else socket.AF_INET6
        with IPRoute() as ipr:
            out = []
            for msg in ipr.get_addr(family=fam, index=ifindex(name)):
                addr = msg.get_attr("IFA_ADDRESS")
                if addr:
                    out.append(str(addr))
            return out

    return in_netlink_thread(get)


def primary_address(name: str, family: int) -> str | None:
    """The address adverts are sent from: the interface's primary IPv4 address, or its IPv6
    link-local one. Read without netlink (ioctl, /proc) so start-up never waits for it."""
    if family == 4:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
        finally:
            s.close()
        return socket.inet_ntoa(res[20:24])
    found: list[str] = []
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) >= 6 and f[5] == name:
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(f[0]))))
    ll = [a for a in found if ipaddress.IPv6Address(a).is_link_local]
    return ll[0] if ll else (found[0] if found else None)


@dataclass(frozen=True, slots=True)
class VIPSpec:
    """One VIP as netlink needs it."""

    address: str
    prefixlen: int
    dev: str
    label: str | None = None
    broadcast: str | None = None
    scope: str | None = None


_SCOPES = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}


def _new_iproute() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


_ROUTE_TYPES = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}
_ROUTE_SCOPES = {"global": 0, "universe": 0, "site": 200, "link": 253, "host": 254}


def route_args(route: VirtualRoute) -> dict[str, object]:
    """pyroute2 arguments for a ``VirtualRoute`` (keepalived's virtual_routes line)."""
    dst = route.dst
    family = socket.AF_INET6 if ":" in dst or (route.via and ":" in route.via) else socket.AF_INET
    kw: dict[str, object] = {"family": family, "type": _ROUTE_TYPES[route.kind]}
    if dst == "default":
        kw["dst"] = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
    else:
        net = ipaddress.ip_network(dst, strict=False)
        kw["dst"] = f"{net.network_address}/{net.prefixlen}"
    if route.alt_via and route.via:
        hop: dict[str, object] = {"oif": ifindex(route.dev)} if route.dev else {}
        kw["multipath"] = [{"gateway": g, **hop} for g in (route.via, *route.alt_via)]
    else:
        if route.via:
            kw["gateway"] = route.via
        if route.dev:
            kw["oif"] = ifindex(route.dev)
    if route.src:
        kw["prefsrc"] = route.src
    if route.metric is not None:
        kw["priority"] = route.metric
    if route.table is not None:
        kw["table"] = route.table
    if route.scope is not None:
        kw["scope"] = _ROUTE_SCOPES.get(route.scope, 0)
    return kw


def rule_args(rule: VirtualRule) -> dict[str, object]:
    """pyroute2 arguments for a ``VirtualRule`` (keepalived's virtual_rules line)."""
    v6 = any(a and ":" in a for a in (rule.src, rule.dst))
    kw: dict[str, object] = {"family": socket.AF_INET6 if v6 else socket.AF_INET,
                             "table": rule.table, "action": "FR_ACT_TO_TBL"}
    for name, prefix in (("src", rule.src), ("dst", rule.dst)):
        if prefix:
            addr, _, length = prefix.partition("/")
            kw[name] = addr
            kw[f"{name}_len"] = int(length)
    if rule.priority is not None:
        kw["priority"] = rule.priority
    if rule.iif:
        kw["iifname"] = rule.iif
    if rule.oif:
        kw["oifname"] = rule.oif
    if rule.fwmark is not None:
        kw["fwmark"] = rule.fwmark
        if rule.fwmask is not None:
            kw["fwmask"] = rule.fwmask
    return kw


class AddressManager:
    """Adds and removes VIPs; idempotent, so a restart or a double transition never fails."""

    def __init__(self) -> None:
        # pyroute2 takes a while to import: warm it up in the netlink thread while the routers
        # start (a backup needs no netlink call before its first Master_Down_Interval ends)
        self._ipr_future = _NETLINK.submit(_new_iproute)

    @property
    def _ipr(self) -> Any:
        return self._ipr_future.result()

    def close(self) -> None:
        in_netlink_thread(self._ipr.close)

    def _kw(self, vip: VIPSpec) -> dict[str, object]:
        kw: dict[str, object] = {"index": ifindex(vip.dev), "address": vip.address, "prefixlen": vip.prefixlen}
        if vip.label:
            kw["label"] = vip.label
        if vip.broadcast:
            kw["broadcast"] = vip.broadcast
        if vip.scope in _SCOPES:
            kw["scope"] = _SCOPES[vip.scope]
        if ":" in vip.address:
            kw["family"] = socket.AF_INET6
            kw["flags"] = 0x02  # IFA_F_NODAD: a VIP moving between routers must answer at once
            kw.pop("label", None)
        return kw

    def add(self, vip: VIPSpec) -> None:
        from pyroute2 import NetlinkError

        kw = self._kw(vip)
        try:
            in_netlink_thread(lambda: self._ipr.addr("add", **kw))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def add_route(self, route: VirtualRoute) -> None:
        """Install a virtual route; one that is already there is fine."""
        from pyroute2 import NetlinkError

        kw = route_args(route)
        try:
            in_netlink_thread(lambda: self._ipr.route("add", **kw))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def add_rule(self, rule: VirtualRule) -> None:
        from pyroute2 import NetlinkError

        kw = rule_args(rule)
        try:
            in_netlink_thread(lambda: self._ipr.rule("add", **kw))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def remove_rule(self, rule: VirtualRule) -> None:
        from pyroute2 import NetlinkError

        kw = rule_args(rule)
        try:
            in_netlink_thread(lambda: self._ipr.rule("del", **kw))
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.ESRCH):
                raise

    def remove_route(self, route: VirtualRoute) -> None:
        """Take a virtual route out; one that is not there is fine."""
        from pyroute2 import NetlinkError

        kw = route_args(route)
        try:
            in_netlink_thread(lambda: self._ipr.route("del", **kw))
        except NetlinkError as exc:
            if exc.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
                raise

    def remove(self, vip: VIPSpec) -> None:
        from pyroute2 import NetlinkError

        kw = self._kw(vip)
        for k in ("label", "broadcast", "scope", "flags"):
            kw.pop(k, None)
        try:
            in_netlink_thread(lambda: self._ipr.addr("del", **kw))
        except NetlinkError as exc:
            if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ENOENT):
                raise

    def present(self, vip: VIPSpec) -> bool:
        return vip.address in interface_addresses(vip.dev, 6 if ":" in vip.address else 4)


class VRRPSocket:
    """Receives every protocol-112 packet on one interface and family; sends from one address."""

    def __init__(self, ifname: str, family: int, multicast_group: bytes | None) -> None:
        self.ifname = ifname
        self.family = family
        self.ifindex = ifindex(ifname)
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        self.rx = socket.socket(af, socket.SOCK_RAW, pkt.IPPROTO_VRRP)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        self.rx.setblocking(False)
        if family == 4:
            try:
                self.rx.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            except OSError:
                pass
            if multicast_group:
                mreqn = multicast_group + b"\0\0\0\0" + struct.pack("@i", self.ifindex)
                self.rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        else:
            self.rx.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            self.rx.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            if multicast_group:
                mreq = multicast_group + struct.pack("@I", self.ifindex)
                self.rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self._tx: dict[tuple[bytes, str], socket.socket] = {}

    def fileno(self) -> int:
        return self.rx.fileno()

    def sender(self, src: bytes, via: str | None = None) -> socket.socket:
        """A socket sending from ``src`` out of this interface, or out of ``via`` (a VMAC on
        it, so that adverts carry the virtual MAC as their source)."""
        dev = via or self.ifname
        s = self._tx.get((src, dev))
        if s is not None:
            return s
        out_index = ifindex(dev)
        if self.family == 4:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, pkt.IPPROTO_VRRP)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, pkt.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, pkt.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, b"\0" * 8 + struct.pack("@i", out_index))
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, dev.encode())
            s.bind((socket.inet_ntop(socket.AF_INET, src), 0))
        else:
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, pkt.IPPROTO_VRRP)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, pkt.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, pkt.VRRP_TTL)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, out_index)
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, dev.encode())
            s.bind((socket.inet_ntop(socket.AF_INET6, src), 0, 0, self.ifindex))
        s.setblocking(False)
        self._tx[(src, dev)] = s
        return s

    def send(self, src: bytes, dst: bytes, payload: bytes, via: str | None = None) -> None:
        s = self.sender(src, via)
        if self.family == 4:
            s.sendto(payload, (socket.inet_ntop(socket.AF_INET, dst), 0))
        else:
            s.sendto(payload, (socket.inet_ntop(socket.AF_INET6, dst), 0, 0, self.ifindex))

    def recv(self) -> tuple[bytes, bytes, bytes, int] | None:
        """One packet as (VRRP payload, src, dst, ttl); raises DecodeError for a bad IPv4 envelope."""
        try:
            if self.family == 4:
                data = self.rx.recv(65535)
                ip = pkt.parse_ipv4(data)
                if ip.protocol != pkt.IPPROTO_VRRP:
                    return None
                return ip.payload, ip.src, ip.dst, ip.ttl
            data, anc, _flags, addr = self.rx.recvmsg(65535, 256)
        except BlockingIOError:
            return None
        src = socket.inet_pton(socket.AF_INET6, addr[0].split("%")[0])
        dst, hop = b"", -1
        for level, typ, val in anc:
            if level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO:
                dst = val[:16]
            elif level == socket.IPPROTO_IPV6 and typ == IPV6_HOPLIMIT:
                hop = struct.unpack("@i", val[:4])[0]
        return data, src, dst or pkt.VRRP_MCAST_V6, hop

    def close(self) -> None:
        self.rx.close()
        for s in self._tx.values():
            s.close()


def arp_frame(op: int, src_mac: bytes, sender_ip: bytes, target_ip: bytes, dst_mac: bytes = BROADCAST_MAC,
              target_mac: bytes = b"\0" * 6) -> bytes:
    eth = dst_mac + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + src_mac + sender_ip + target_mac + target_ip
    return eth + arp + b"\0" * 18


@dataclass(frozen=True, slots=True)
class ARPSeen:
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_ip: bytes


def parse_arp(frame: bytes) -> ARPSeen | None:
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return None
    return ARPSeen(op, frame[22:28], frame[28:32], frame[38:42])


def vmac_address(vrid: int, family: int = 4) -> bytes:
    """The VRRP virtual MAC of RFC 3768 / 5798: 00:00:5e:00:01:VRID (00:00:5e:00:02:VRID for
    IPv6)."""
    return bytes((0, 0, 0x5E, 0, 1 if family == 4 else 2, vrid))


def _sysctl(path: str, value: str | None = None) -> str | None:
    """Read (and with ``value`` write) /proc/sys/net/...; None when it is not there."""
    try:
        p = Path("/proc/sys/net") / path
        old = p.read_text().strip()
        if value is not None:
            p.write_text(value)
        return old
    except OSError:
        return None


_VMAC_BASES: dict[str, list[VMAC]] = {}  # base interface -> its VMACs (the first saved its sysctls)


class VMAC:
    """keepalived's use_vmac: a macvlan interface on the base one with the VRRP virtual MAC.

    The VIPs live on it, so the MAC that clients and switches learn for them is the virtual
    one, the same on every router of the group: after a failover nothing needs re-learning
    (the gratuitous ARPs still go out, and still say the same MAC). ``arp_ignore=1`` on both
    interfaces makes each answer ARP only for its own addresses: the VIPs with the virtual MAC,
    the rest with the base MAC; ``arp_announce=2`` on the base keeps a VIP out of the ARP
    requests the base sends (traffic from a VIP may leave through it, and a neighbour would
    learn the VIP at the base MAC). The base's old settings are put back when the VMAC goes."""

    def __init__(self, name: str, base: str, mac: bytes) -> None:
        self.name, self.base, self.mac = name, base, mac
        self._base_saved: dict[str, str] = {}

    def create(self) -> None:
        from pyroute2 import IPRoute

        def make() -> None:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.name)
                if not found:
                    ipr.link("add", ifname=self.name, kind="macvlan", link=ifindex(self.base),
                             macvlan_mode="private", address=self.mac.hex(":"))
                    found = ipr.link_lookup(ifname=self.name)
                else:
                    ipr.link("set", index=found[0], address=self.mac.hex(":"))
                ipr.link("set", index=found[0], state="up")

        in_netlink_thread(make)
        users = _VMAC_BASES.setdefault(self.base, [])
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            old = _sysctl(f"ipv4/conf/{self.base}/{key}", value)
            if old is not None and not users:
                self._base_saved[key] = old
        users.append(self)
        _sysctl(f"ipv4/conf/{self.name}/arp_ignore", "1")

    def delete(self) -> None:
        from pyroute2 import IPRoute, NetlinkError

        def drop() -> None:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.name)
                if found:
                    try:
                        ipr.link("del", index=found[0])
                    except NetlinkError:
                        pass

        in_netlink_thread(drop)
        users = _VMAC_BASES.get(self.base, [])
        if self in users:
            users.remove(self)
        if users:  # another VMAC still needs the settings: it restores them when it goes
            users[0]._base_saved = self._base_saved or users[0]._base_saved
            return
        _VMAC_BASES.pop(self.base, None)
        for key, old in self._base_saved.items():
            _sysctl(f"ipv4/conf/{self.base}/{key}", old)


class LinkSocket:
    """AF_PACKET on one interface: sends gratuitous ARP and ARP probes, reads ARP traffic."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.mac = mac_address(ifname)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self.sock.bind((ifname, ETH_P_ARP))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def garp(self, ip: bytes) -> None:
        """Gratuitous ARP as keepalived sends it: a broadcast request for the VIP from the VIP."""
        self.sock.send(arp_frame(1, self.mac, ip, ip, target_mac=BROADCAST_MAC))

    def probe(self, sender_ip: bytes, target_ip: bytes) -> None:
        self.sock.send(arp_frame(1, self.mac, sender_ip, target_ip))

    def recv(self) -> ARPSeen | None:
        try:
            frame = self.sock.recv(2048)
        except BlockingIOError:
            return None
        return parse_arp(frame)

    def close(self) -> None:
        self.sock.close()


def unsolicited_na(ifname: str, target: bytes) -> None:
    """RFC 4861 unsolicited neighbour advertisement to all-nodes (override set) for an IPv6 VIP."""
    mac = mac_address(ifname)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex(ifname))
        msg = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + struct.pack("!BB", 2, 1) + mac
        s.sendto(msg, ("ff02::1", 0, 0, ifindex(ifname)))
    finally:
        s.close()
