"""``pylvs lab up|down|status|exec``: the namespace lab from the command line.

What this is for: an operator or a demo script builds, inspects and removes the lab and runs
commands on its hosts (``pylvs lab exec client -- curl http://192.168.168.100/``). What this is
not for: the lab's logic, which lives in ``pylvs.lab.topology`` so tests use it without a shell.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pylvs.core.schedulers import SCHEDULER_NAMES
from pylvs.lab import router
from pylvs.lab.topology import Lab, LabError, all_lab_ids


def _lab(args: argparse.Namespace) -> Lab:
    nginx: bool | None = False if getattr(args, "no_nginx", False) else None
    lab = Lab(args.id, use_nginx=nginx, servers=not getattr(args, "no_servers", False),
              use_tomcat=getattr(args, "tomcat", False))
    n = getattr(args, "directors", None) if getattr(args, "ecmp", False) else \
        router.ecmp_directors(args.id)
    if n:  # the ECMP lab: the seed's hosts plus the router and the directors (lab.router)
        lab.hosts = router.ecmp_hosts(n)
    return lab


def _need_root() -> str | None:
    if os.geteuid() != 0:
        return "pylvs lab: needs root (network namespaces)"
    return None


def cmd_up(args: argparse.Namespace) -> int:
    if (msg := _need_root()) is not None:
        print(msg, file=sys.stderr)
        return 1
    if args.ecmp and (args.lvs or not 2 <= args.directors <= router.MAX_DIRECTORS):
        print("pylvs lab up: --ecmp takes --directors 2 to 4 and no --lvs", file=sys.stderr)
        return 2
    if args.scheduler is not None and args.scheduler not in SCHEDULER_NAMES:
        print(f"pylvs lab up: --scheduler {args.scheduler}: no such scheduler (one of "
              f"{', '.join(SCHEDULER_NAMES)})", file=sys.stderr)
        return 2
    if args.sync and not args.ecmp:
        print("pylvs lab up: --sync goes with --ecmp (the ECMP directors share connections)",
              file=sys.stderr)
        return 2
    if args.sync_refresh is not None and (not args.sync or args.sync_refresh < 0):
        print("pylvs lab up: --sync-refresh takes seconds (0 or more) and goes with --sync",
              file=sys.stderr)
        return 2
    lab = _lab(args)
    was_up = lab.is_up()
    try:
        lab.up()
        if args.ecmp and not was_up:
            scheduler = args.scheduler or "mh"
            # sloppy_tcp is what mh needs; with another scheduler it would pick anew
            ecmp = router.ECMPCluster(lab, args.directors, scheduler=scheduler,
                                      sloppy=scheduler == "mh", sync=args.sync,
                                      sync_refresh=router.SYNC_REFRESH if args.sync_refresh is None
                                      else args.sync_refresh)
            try:
                ecmp.start()
                ecmp.wait_next_hops({router.director_addr(k)
                                     for k in range(1, args.directors + 1)}, timeout=30)
            except BaseException:
                ecmp.stop()
                raise
            ecmp.detach()
        if args.lvs:
            from pylvs.lab.lvs import LVSCluster

            cluster = LVSCluster(lab, args.lvs, dataplane=args.dataplane)
            if was_up and cluster.running():
                _print_status(lab)
                print(f"a director is already running ({cluster.control_socket})")
                return 0
            try:
                cluster.start()
                cluster.seed_service(args.scheduler or "rr")
            except BaseException:
                cluster.stop()
                raise
            cluster.detach()
    except LabError as exc:
        print(f"pylvs lab up: {exc}", file=sys.stderr)
        if not was_up:  # never tear down a lab that was working before this command
            lab.down()
        return 1
    _print_status(lab)
    if args.lvs:
        print(f"LVS-{args.lvs.upper()}: {args.dataplane} director on 'director', the seed's service "
              f"{lab.vip}:80 ({args.scheduler or 'rr'}); try:\n"
              f"  pylvs lab --id {lab.lab_id} exec client -- curl -s http://{lab.vip}/\n"
              f"  PYLVS_CONTROL_SOCKET={cluster.control_socket} pylvsadm -Ln")
    if args.ecmp:
        how = f"{args.scheduler or 'mh'}" + (", connections synced" if args.sync else "")
        print(f"ECMP: {args.directors} directors ({how}) behind 'router' announce "
              f"{router.ECMP_VIP} over BGP; try:\n"
              f"  pylvs lab --id {lab.lab_id} exec client -- curl -s http://{router.ECMP_VIP}/\n"
              f"  pylvs lab --id {lab.lab_id} exec router -- ip route show {router.ECMP_VIP}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if (msg := _need_root()) is not None:
        print(msg, file=sys.stderr)
        return 1
    ids = list(all_lab_ids()) if args.all else [args.id]
    for lab_id in ids:
        Lab(lab_id, use_nginx=False).down()
        print(f"lab {lab_id}: down")
    return 0


def _print_status(lab: Lab) -> None:
    rows: list[dict[str, Any]] = lab.status()
    state = "up" if lab.is_up() else ("partial" if lab.namespaces() else "down")
    print(f"lab {lab.lab_id}: {state}  (VIP {lab.vip})")
    for r in rows:
        mark = "+" if r["present"] else "-"
        print(f"  {mark} {r['host']:<9} {r['netns']:<16} {', '.join(r['addresses']):<40} {r['server']}")
    if "router" in lab.hosts and lab.ns("router") in lab.namespaces():
        for line in router.router_status(lab):
            print(line)


def cmd_status(args: argparse.Namespace) -> int:
    lab = _lab(args)
    _print_status(lab)
    return 0 if lab.is_up() else 3


def cmd_exec(args: argparse.Namespace) -> int:
    lab = _lab(args)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("pylvs lab exec: no command given (pylvs lab exec HOST -- CMD ...)", file=sys.stderr)
        return 2
    try:
        ns = lab.ns(args.host)
    except LabError as exc:
        print(f"pylvs lab exec: {exc}", file=sys.stderr)
        return 2
    if ns not in lab.namespaces():
        print(f"pylvs lab exec: lab {args.id} is not up (no namespace {ns})", file=sys.stderr)
        return 1
    os.execvp("ip", lab.argv(args.host, cmd))
    return 1  # not reached


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("lab", help="the seed's cluster in network namespaces")
    p.add_argument("--id", default="0", help="lab id, part of every name (default 0)")
    sub = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="build the lab (idempotent)")
    up.add_argument("--no-nginx", action="store_true", help="use the built-in HTTP server")
    up.add_argument("--tomcat", action="store_true",
                    help="real Tomcat (Debian tomcat10) with the seed's JSP on the app servers")
    up.add_argument("--no-servers", action="store_true", help="start no HTTP servers")
    up.add_argument("--lvs", choices=("dr", "nat", "tun"),
                    help="also run a packet-forwarding director with the seed's service")
    up.add_argument("--scheduler", default=None,
                    help="scheduler of that service (default rr; mh with --ecmp)")
    up.add_argument("--dataplane", choices=("packet", "xdp"), default="packet",
                    help="the director's data plane with --lvs (xdp: an XDP program in front)")
    up.add_argument("--ecmp", action="store_true",
                    help="add a router (BIRD, BGP multipath) spreading flows over --directors "
                         "active directors, each announcing the VIP 10.171.0.100 while healthy")
    up.add_argument("--directors", type=int, default=3, metavar="N",
                    help="directors behind the router with --ecmp, 2 to 4 (default 3)")
    up.add_argument("--sync", action="store_true",
                    help="with --ecmp: every director runs the connection sync daemons as master "
                         "and backup on one group, so a flow moved to another director finds its "
                         "entry there (for schedulers other than mh: --scheduler rr --sync)")
    up.add_argument("--sync-refresh", type=int, default=None, metavar="SECONDS",
                    help="with --sync: the directors' sync_refresh_period (default "
                         f"{router.SYNC_REFRESH}: each live entry re-sent every second it has "
                         "traffic, so a director that joins learns it; 0: the kernel's rule, "
                         "again every 50 packets in)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="remove everything the lab made")
    down.add_argument("--all", action="store_true", help="every lab on this machine")
    down.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="show hosts, addresses and servers")
    st.set_defaults(func=cmd_status)
    ex = sub.add_parser("exec", help="run a command on a lab host")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)


def main(argv: list[str] | None = None) -> int:
    """``python -m pylvs.lab.cli ...``: the same as ``pylvs lab ...``."""
    parser = argparse.ArgumentParser(prog="pylvs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
