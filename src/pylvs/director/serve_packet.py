"""``python -m pylvs.director.serve_packet``: the director daemon with the ``packet`` data plane.

What this is for: running a director that forwards real packets (DR/NAT/TUN) on a host or in a
lab namespace, administered with ``pylvsadm`` over the daemon's control socket, while the daemon's
own ``--dataplane`` choice does not list ``packet``: it registers the plane by name, then runs the
ordinary ``DirectorDaemon``. ``--interfaces eth0,eth1`` limits the interfaces (default: every
interface that is up and has an IPv4 address). It is observed as pylvsd is: ``pylvs top`` on
its control socket (the ``observe`` operation), ``--metrics-address`` and ``--status-address``.

With ``--state-file PATH`` the table is kept as pylvsd keeps it, and a clean stop (SIGTERM)
writes the connection table beside it for the next start (``pylvs.director.conntable``): a
restart of this director does not break the connections going through it.

What this is not for: anything the daemon does itself (table, control socket, save/restore).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from pylvs.control.client import default_socket_path
from pylvs.dataplane import registry
from pylvs.director.main import DirectorDaemon, StartupError
from pylvs.metrics import wiring as metrics
from pylvs.metrics.server import MetricsError
from pylvs.metrics.server import add_arguments as add_metrics_arguments

ENTRY = "pylvs.dataplane.packet.dataplane:PacketDataPlane"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pylvs.director.serve_packet")
    p.add_argument("--control-socket", metavar="PATH")
    p.add_argument("--interfaces", default="", help="comma-separated interface names")
    p.add_argument("--no-firewall", action="store_true", help="install no nftables rules")
    p.add_argument("--no-arp", action="store_true",
                   help="do not answer ARP for the VIPs (VRRP owns them, as on a director pair)")
    p.add_argument("--no-fastpath", action="store_true",
                   help="forward every frame in Python (no C flow table; also PYLVS_PACKET_FASTPATH=0)")
    p.add_argument("--dataplane", default="packet", choices=["packet", "xdp"],
                   help="xdp: an XDP program forwards established flows in the kernel, the packet "
                        "plane behind it does the rest")
    p.add_argument("--xdp-mode", default="auto", choices=["auto", "native", "generic"],
                   help="how the XDP program is attached (auto: native, generic on veth)")
    p.add_argument("--xdp-flows", default="auto", choices=["auto", "dr", "all"],
                   help="flows the XDP program forwards (auto: DR, and NAT/TUN in native mode on "
                        "a real NIC; all: also elsewhere, if every sender computes full checksums)")
    p.add_argument("--restore", metavar="FILE")
    p.add_argument("--state-file", metavar="PATH",
                   help="keep the table here (as pylvsd's --state-file); a clean stop also "
                        "writes the connection table beside it (PATH.connections), which the "
                        "next start takes back so live connections survive a planned restart")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_metrics_arguments(p)  # --metrics-address, --status-address, as pylvsd (pylvs.metrics)
    args = p.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    registry.DATAPLANES.setdefault("packet", ENTRY)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    options = {"interfaces": args.interfaces or None, "firewall": not args.no_firewall,
               "answer_arp": not args.no_arp}
    if args.no_fastpath:
        options["fastpath"] = False
    if args.dataplane == "xdp":
        options["xdp_mode"] = args.xdp_mode
        options["xdp_flows"] = args.xdp_flows
    daemon = DirectorDaemon(default_socket_path(args.control_socket), dataplane=args.dataplane,
                            restore=args.restore, dataplane_options=options,
                            state_file=args.state_file)
    try:  # the observe operation (pylvs top), metrics and status page, as pylvsd has them
        observe = metrics.observe_director(daemon, args)
    except MetricsError as exc:
        print(f"pylvs packet director: {exc}", file=sys.stderr)
        return 1
    try:
        with observe if observe is not None else contextlib.nullcontext():
            asyncio.run(daemon.run())
    except (StartupError, OSError) as exc:
        print(f"pylvs packet director: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
