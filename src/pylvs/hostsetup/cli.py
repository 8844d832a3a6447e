"""``pylvs rs-setup`` and ``pylvs director-setup``: SPEC.md §1.1 as two commands.

What this is for: preparing a real server (VIP on ``lo`` as /32, host route, arp_ignore=1 and
arp_announce=2; for TUN also the IPIP receive side) or a DR director (ip_forward=0,
send_redirects=0, VIP alias), with ``--undo`` and ``--dry-run``.

TUN on a real server: when the kernel has an IPIP tunnel (``tunl0`` exists or the ``ipip`` module
loads) the VIP also goes on ``tunl0`` and the kernel decapsulates. Otherwise ``rs-setup --mode tun``
stays in the foreground running the user-space decapsulator (``pylvs.hostsetup.decap``)
until SIGTERM/SIGINT; the host settings stay until ``--undo``.

What this is not for: the plan and its application (``pylvs.hostsetup.plan``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from pylvs.hostsetup.plan import (
    AddrStep,
    SetupError,
    Step,
    apply,
    director_plan,
    load_saved,
    render,
    rs_plan,
)

DECAP_DEV = "pltun0"
DECAP_DEV6 = "pltun6"  # IPv6-in-IPv6: a device of its own, so both decapsulators can run


def kernel_ipip() -> bool:
    """Whether this kernel can decapsulate IPIP itself (tunl0 present or ipip loadable)."""
    if os.path.exists("/sys/class/net/tunl0"):
        return True
    if os.path.isdir("/sys/module/ipip"):
        return True
    try:
        res = subprocess.run(["modprobe", "-q", "ipip"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and os.path.exists("/sys/class/net/tunl0")


def kernel_ip6ip6() -> bool:
    """Whether this kernel can decapsulate IPv6-in-IPv6 itself (ip6tnl0, from ip6_tunnel)."""
    if os.path.exists("/sys/class/net/ip6tnl0"):
        return True
    try:
        res = subprocess.run(["modprobe", "-q", "ip6_tunnel"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and os.path.exists("/sys/class/net/ip6tnl0")


def _run(steps: list[Step], kind: str, args: argparse.Namespace) -> int:
    if args.dry_run:
        sys.stdout.write(render(steps, undo=args.undo, saved=load_saved(kind)))
        return 0
    if os.geteuid() != 0:
        print(f"pylvs {kind}: needs root (or use --dry-run)", file=sys.stderr)
        return 1
    apply(steps, kind, undo=args.undo)
    return 0


def cmd_rs_setup(args: argparse.Namespace) -> int:
    try:
        v6 = ":" in args.vip
        kernel_tun = kernel_ip6ip6 if v6 else kernel_ipip
        use_kernel = args.mode == "tun" and not args.dry_run and kernel_tun()
        # the decapsulator's TUN device does not exist yet: it sets its own rp_filter
        tun_dev = "tunl0" if use_kernel and not v6 else None
        steps = rs_plan(args.vip, args.mode, tun_dev)
        if use_kernel and not v6:
            steps.append(AddrStep("tunl0", f"{args.vip.split('/')[0]}/32"))
        if args.mode == "tun" and not use_kernel and not args.undo and not args.no_decap:
            dev, what = ((DECAP_DEV6, "IPv6-in-IPv6 decapsulator on TUN device {} (raw IPv6 "
                          "socket, next header 41)") if v6 else
                         (DECAP_DEV, "IPIP decapsulator on TUN device {} (raw socket, protocol 4)"))
            if args.dry_run:
                rc = _run(steps, "rs-setup", args)
                print("# then: " + what.format(dev))
                return rc
            rc = _run(steps, "rs-setup", args)
            if rc:
                return rc
            from pylvs.hostsetup.decap import run_decapsulator

            return run_decapsulator(dev, args.vip.split("/")[0])
        rc = _run(steps, "rs-setup", args)
        if use_kernel and not args.undo:
            subprocess.run(["ip", "link", "set", "ip6tnl0" if v6 else "tunl0", "up"],
                           check=False, timeout=10)
        return rc
    except SetupError as exc:
        print(f"pylvs rs-setup: {exc}", file=sys.stderr)
        return 1


def cmd_director_setup(args: argparse.Namespace) -> int:
    try:
        return _run(director_plan(args.vip, args.dev), "director-setup", args)
    except SetupError as exc:
        print(f"pylvs director-setup: {exc}", file=sys.stderr)
        return 1


def register(subparsers: Any) -> None:
    rs = subparsers.add_parser(
        "rs-setup", help="prepare a real server for DR or TUN (VIP on lo, arp_ignore/announce)"
    )
    rs.add_argument("--vip", required=True, help="virtual IP, e.g. 192.168.168.100")
    rs.add_argument("--mode", choices=("dr", "tun"), default="dr")
    rs.add_argument("--undo", action="store_true", help="remove the settings, restore sysctls")
    rs.add_argument("--dry-run", action="store_true", help="print the equivalent ip/sysctl commands")
    rs.add_argument(
        "--no-decap", action="store_true", help="TUN: only the settings, no decapsulator"
    )
    rs.set_defaults(func=cmd_rs_setup)
    d = subparsers.add_parser(
        "director-setup", help="prepare a DR director (ip_forward, send_redirects, VIP alias)"
    )
    d.add_argument("--vip", required=True, help="virtual IP with prefix, e.g. 192.168.168.100/24")
    d.add_argument("--dev", required=True, help="LAN interface that carries the VIP alias")
    d.add_argument("--undo", action="store_true", help="remove the settings, restore sysctls")
    d.add_argument("--dry-run", action="store_true", help="print the equivalent ip/sysctl commands")
    d.set_defaults(func=cmd_director_setup)


def main(argv: list[str] | None = None) -> int:
    """``python -m pylvs.hostsetup.cli rs-setup ...``: the same as ``pylvs rs-setup ...``."""
    parser = argparse.ArgumentParser(prog="pylvs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
