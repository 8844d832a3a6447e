"""Host settings for LVS as a list of steps: computed first, then printed or applied.

What this is for: ``pylvs rs-setup`` and ``pylvs director-setup`` (SPEC.md §1.1). A plan is a list
of ``Step`` values (an address, a host route, a sysctl), built from the options without touching
the host, so ``--dry-run`` prints exactly what ``apply`` would do as the equivalent ``ip``/``sysctl``
commands, and ``--undo`` is the same plan reversed. Applying uses pyroute2 for addresses and
routes and ``/proc/sys`` for sysctls, in the caller's network namespace; it is idempotent (an
address or route already present is not an error). The sysctl values found before ``apply`` are
saved per network namespace under ``/run/pylvs/hostsetup`` so that ``--undo`` restores them.

What this is not for: the IPIP decapsulator (``pylvs.hostsetup.decap``), VRRP-managed VIPs.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

STATE_DIR = Path("/run/pylvs/hostsetup")
PROC_SYS = Path("/proc/sys")


class SetupError(RuntimeError):
    """A step could not be applied; the message names the step."""


@dataclass(frozen=True, slots=True)
class AddrStep:
    """An address on an interface (``ip addr add CIDR dev DEV label LABEL``)."""

    dev: str
    cidr: str
    label: str = ""

    def command(self, undo: bool = False) -> str:
        lbl = f" label {self.label}" if self.label and not undo else ""
        return f"ip addr {'del' if undo else 'add'} {self.cidr} dev {self.dev}{lbl}"


@dataclass(frozen=True, slots=True)
class RouteStep:
    """A host route through an interface (``route add -host VIP dev lo:0``)."""

    dst: str
    dev: str

    def command(self, undo: bool = False) -> str:
        return f"ip route {'del' if undo else 'add'} {self.dst} dev {self.dev}"


@dataclass(frozen=True, slots=True)
class SysctlStep:
    """A sysctl value; undoing restores the value saved when it was applied."""

    key: str
    value: str

    def command(self, undo: bool = False, previous: str | None = None) -> str:
        return f"sysctl -w {self.key}={previous if undo and previous is not None else self.value}"

    @property
    def path(self) -> Path:
        return PROC_SYS / self.key.replace(".", "/")


Step = AddrStep | RouteStep | SysctlStep


def _vip(text: str, default_prefix: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """The VIP of ``--vip``: IPv4 (default prefix ``default_prefix``) or IPv6 (``/128`` by
    default for a real server, ``/64`` for a director)."""
    if ":" in text:
        try:
            plen6 = 128 if default_prefix == 32 else 64
            return ipaddress.IPv6Interface(text if "/" in text else f"{text}/{plen6}")
        except ValueError as exc:
            raise SetupError(f"--vip {text!r}: not an IPv6 address[/prefix] ({exc})") from None
    try:
        iface = ipaddress.IPv4Interface(text if "/" in text else f"{text}/{default_prefix}")
    except ValueError as exc:
        raise SetupError(f"--vip {text!r}: not an IPv4 address[/prefix] ({exc})") from None
    return iface


def rs_plan(vip: str, mode: str, tun_dev: str | None = None) -> list[Step]:
    """What a real server needs for DR or TUN (SPEC.md §1.1). An IPv6 VIP only goes on ``lo``
    as /128: IPv6 answers neighbour solicitations only for addresses of the interface they
    arrive on, so it needs no arp_ignore, and it has no rp_filter to relax for TUN."""
    if mode not in ("dr", "tun"):
        raise SetupError(f"--mode {mode!r}: use dr or tun")
    addr = _vip(vip, 32)
    if addr.version == 6:
        if addr.network.prefixlen != 128:
            raise SetupError(f"--vip {vip}: a real server holds an IPv6 VIP as /128 on lo")
        return [AddrStep("lo", f"{addr.ip}/128")]
    if addr.network.prefixlen != 32:
        raise SetupError(f"--vip {vip}: a real server holds the VIP as /32 (lo:0, 255.255.255.255)")
    ip = str(addr.ip)
    steps: list[Step] = [
        AddrStep("lo", f"{ip}/32", "lo:0"),
        RouteStep(f"{ip}/32", "lo"),
        SysctlStep("net.ipv4.conf.lo.arp_ignore", "1"),
        SysctlStep("net.ipv4.conf.lo.arp_announce", "2"),
        SysctlStep("net.ipv4.conf.all.arp_ignore", "1"),
        SysctlStep("net.ipv4.conf.all.arp_announce", "2"),
    ]
    if mode == "tun":
        # decapsulated packets arrive on the tunnel device but their source is reached via the
        # LAN interface: strict reverse-path filtering would drop them.
        steps.append(SysctlStep("net.ipv4.conf.all.rp_filter", "0"))
        steps.append(SysctlStep("net.ipv4.conf.default.rp_filter", "0"))
        if tun_dev:
            steps.append(SysctlStep(f"net.ipv4.conf.{tun_dev}.rp_filter", "0"))
    return steps


def director_plan(vip: str, dev: str) -> list[Step]:
    """What a DR director needs: no forwarding, no redirects, the VIP as an alias of ``dev``."""
    if not dev or "/" in dev or len(dev) > 15:
        raise SetupError(f"--dev {dev!r}: not an interface name")
    addr = _vip(vip, 24)
    if addr.version == 6:  # no alias labels for IPv6; redirects off as for IPv4
        return [
            SysctlStep("net.ipv6.conf.all.forwarding", "0"),
            AddrStep(dev, f"{addr.ip}/{addr.network.prefixlen}"),
        ]
    return [
        SysctlStep("net.ipv4.ip_forward", "0"),
        SysctlStep("net.ipv4.conf.all.send_redirects", "0"),
        SysctlStep("net.ipv4.conf.default.send_redirects", "0"),
        SysctlStep(f"net.ipv4.conf.{dev}.send_redirects", "0"),
        AddrStep(dev, f"{addr.ip}/{addr.network.prefixlen}", f"{dev}:0"),
    ]


def render(steps: list[Step], undo: bool = False, saved: dict[str, str] | None = None) -> str:
    """The equivalent shell commands, one a line (what ``--dry-run`` prints)."""
    saved = saved or {}
    seq = list(reversed(steps)) if undo else steps
    lines = []
    for s in seq:
        if isinstance(s, SysctlStep):
            lines.append(s.command(undo, saved.get(s.key, _default(s.key))))
        else:
            lines.append(s.command(undo))
    return "\n".join(lines) + "\n"


def _default(key: str) -> str:
    """The kernel's value of a sysctl these plans touch, for undo without saved state."""
    return "1" if key.endswith(".send_redirects") else "0"


def _netns_key() -> str:
    return str(os.stat("/proc/self/ns/net").st_ino)


def _state_path(kind: str) -> Path:
    return STATE_DIR / f"{kind}-{_netns_key()}.json"


def load_saved(kind: str) -> dict[str, str]:
    try:
        data: dict[str, str] = json.loads(_state_path(kind).read_text())
    except (OSError, ValueError):
        return {}
    return data


def _ifindex(ipr: IPRoute, dev: str) -> int:
    found = ipr.link_lookup(ifname=dev)
    if not found:
        raise SetupError(f"interface {dev}: no such device")
    idx: int = found[0]
    return idx


def _apply_one(ipr: IPRoute, step: Step, undo: bool, saved: dict[str, str]) -> None:
    try:
        if isinstance(step, SysctlStep):
            if not step.path.exists():
                if undo:  # the device went away with what made it
                    return
                raise SetupError(f"{step.command()}: no such sysctl")
            value = saved.get(step.key, _default(step.key)) if undo else step.value
            step.path.write_text(value + "\n")
        elif isinstance(step, AddrStep):
            idx = _ifindex(ipr, step.dev)
            ip, _, plen = step.cidr.partition("/")
            kw: dict[str, Any] = {"index": idx, "address": ip, "prefixlen": int(plen)}
            if undo:
                ipr.addr("del", **kw)
            else:
                if step.label:
                    kw["label"] = step.label
                ipr.addr("add", **kw)
        else:
            idx = _ifindex(ipr, step.dev)
            ipr.route("del" if undo else "add", dst=step.dst, oif=idx)
    except NetlinkError as exc:
        # idempotent: adding what exists / removing what is gone is not an error
        if (not undo and exc.code == errno.EEXIST) or (
            undo and exc.code in (errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT, errno.ENODEV)
        ):
            return
        what = step.command(undo)
        raise SetupError(f"{what}: {os.strerror(exc.code)}") from None
    except OSError as exc:
        raise SetupError(f"{step.command(undo)}: {exc.strerror}") from None


def apply(steps: list[Step], kind: str, undo: bool = False) -> None:
    """Apply (or undo) ``steps`` in this process's network namespace."""
    saved = load_saved(kind) if undo else {}
    if not undo:
        prior = load_saved(kind)  # a second apply keeps the values found by the first
        for s in steps:
            if isinstance(s, SysctlStep) and s.key not in prior:
                with contextlib.suppress(OSError):
                    prior[s.key] = s.path.read_text().strip()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        _state_path(kind).write_text(json.dumps(prior))
    with IPRoute() as ipr:
        for s in reversed(steps) if undo else steps:
            _apply_one(ipr, s, undo, saved)
    if undo:
        with contextlib.suppress(OSError):
            _state_path(kind).unlink()
