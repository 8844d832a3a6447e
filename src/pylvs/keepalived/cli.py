"""``pylvs keepalived -f FILE``: run a keepalived.conf, VRRP (``pylvs.keepalived.daemon``) and virtual
servers with their checks (``pylvs.keepalived.lvs_runtime``), with keepalived's command-line habits
(-n -l -D accepted, -t tests the configuration, -i picks @conditional lines).

Not for: any protocol or checking logic; this only turns the command line into a daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from pylvs.config import keepalived as K
from pylvs.config.grammar import ConfigError
from pylvs.health import checkers as _checkers  # noqa: F401  (the checker kinds K.load_full reads)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("keepalived", help="run VRRP from a keepalived.conf (keepalived-compatible)",
                              description="Run the VRRP instances of a keepalived.conf.")
    p.add_argument("-f", "--use-file", dest="file", default="/etc/keepalived/keepalived.conf",
                   help="configuration file (default /etc/keepalived/keepalived.conf)")
    p.add_argument("-t", "--config-test", action="store_true", help="check the configuration and exit")
    p.add_argument("-i", "--config-id", default=None, help="use @ID conditional lines")
    p.add_argument("-p", "--pid", "--vrrp_pid", dest="pidfile", default=None, help="write the PID here")
    p.add_argument("-n", "--dont-fork", action="store_true", help="accepted for keepalived compatibility (never forks)")
    p.add_argument("-l", "--log-console", action="store_true", help="log to the console (always)")
    p.add_argument("-D", "--log-detail", action="store_true", help="more detailed logging")
    p.add_argument("-P", "--vrrp", action="store_true", help="accepted: only the VRRP part runs")
    p.add_argument("--state-file", default=None, help="JSON state, rewritten on every change and on SIGUSR1")
    p.add_argument("--arbitrator", default=None, metavar="IP",
                   help="address (gateway) this node must reach to stay MASTER/BACKUP; else FAULT")
    p.add_argument("--arbitrator-interval", type=float, default=1.0, metavar="S")
    p.add_argument("--arbitrator-fall", type=int, default=3, metavar="N")
    p.add_argument("--arbitrator-rise", type=int, default=2, metavar="N")
    p.add_argument("--notify-split-brain", default=None, metavar="SCRIPT",
                   help="run as SCRIPT INSTANCE SPLIT_BRAIN|SPLIT_BRAIN_RESOLVED PEER REASON")
    p.add_argument("--no-split-brain-probe", action="store_true",
                   help="do not ARP for the VIP while MASTER (duplicate-answer detection)")
    p.add_argument("--metrics-port", type=int, default=None, help="same as --metrics-address PORT")
    from pylvs.metrics.server import add_arguments as add_metrics_arguments

    add_metrics_arguments(p)  # --metrics-address, --status-address (pylvs.metrics)
    p.add_argument("--control-socket", default=None, metavar="PATH",
                   help="serve the pylvs control API here (pylvsadm, checkers, vrrp_status); with "
                        "virtual servers the default is pylvs' usual control socket")
    p.add_argument("--dataplane", default="auto", metavar="NAME",
                   help="how the virtual servers forward: auto (kernel IPVS where the kernel has it, "
                        "else proxy), proxy, packet or kernel")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s: %(message)s", stream=sys.stderr)
    if args.log_detail:
        logging.getLogger("pylvs").setLevel(logging.DEBUG)
    if args.config_test:
        try:
            cfg, lvs = K.load_full(args.file, args.config_id)
        except ConfigError as exc:
            for d in exc.diagnostics:
                print(d, file=sys.stderr)
            return 1
        for d in [*cfg.diagnostics, *lvs.diagnostics]:
            print(d, file=sys.stderr)
        return 0
    from pylvs.keepalived.arbitrator import ArbitratorSettings
    from pylvs.keepalived.daemon import DaemonSettings, KeepalivedDaemon

    arbitrator = None
    if args.arbitrator:
        arbitrator = ArbitratorSettings(args.arbitrator, args.arbitrator_interval, args.arbitrator_fall,
                                        args.arbitrator_rise)
    settings = DaemonSettings(
        args.file, config_id=args.config_id, state_file=args.state_file, arbitrator=arbitrator,
        notify_split_brain=args.notify_split_brain, split_brain_probe=not args.no_split_brain_probe,
        metrics_port=args.metrics_port, control_socket=args.control_socket, dataplane=args.dataplane,
        metrics_address=args.metrics_address, status_address=args.status_address,
        status_admin_secret_file=args.status_admin_secret_file,
    )
    from pylvs.metrics.server import MetricsError

    try:
        daemon = KeepalivedDaemon(settings)
    except MetricsError as exc:  # a bad --metrics-address/--status-address, a busy port
        print(f"pylvs keepalived: {exc}", file=sys.stderr)
        return 1
    if args.pidfile:
        with open(args.pidfile, "w", encoding="ascii") as fh:
            fh.write(f"{os.getpid()}\n")
    try:
        return asyncio.run(daemon.run())
    finally:
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
