"""``pylvs keepalived``: keepalived 2.2.7's command line, running a keepalived.conf (VRRP from
``pylvs.keepalived.daemon``, virtual servers and their checks from ``pylvs.keepalived.lvs_runtime``).

Why every option of ``keepalived --help`` is declared here: an operator's unit file or script
passes keepalived's flags, and each one either does what keepalived does or is refused with one
line saying it is not supported; none is silently ignored. pylvs is one process (keepalived runs a
parent and VRRP/checker children), so options about children (-R, --all, -n) hold trivially and
the child pid files name this process. Not for: any protocol or checking logic.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import resource
import signal
import socket
import sys
from typing import TextIO

from pylvs.config.grammar import ConfigError
from pylvs.health import checkers as _checkers  # noqa: F401  (the checker kinds K.load_full reads)

KEEPALIVED_VERSION = "2.2.7"
EXIT_CONFIG_TEST = 5  # keepalived -t: the file has errors (or cannot run on this host)

# keepalived options pylvs refuses, with the reason given
UNSUPPORTED = {
    "genhash": ("-T/--genhash", "use genhash itself"),
    "address_monitoring": ("-a/--address-monitoring", "no netlink address report"),
    "bfd_pid": ("-b/--bfd_pid", "pylvs runs no BFD process"),
    "snmp": ("-x/--snmp", "no SNMP subsystem"),
    "snmp_agent_socket": ("-A/--snmp-agent-socket", "no SNMP subsystem"),
    "release_vips": ("-X/--release-vips", "no VIP release on signalled transitions"),
    "namespace": ("-s/--namespace", "run it under 'ip netns exec NAME' instead"),
    "core_dump_pattern": ("-M/--core-dump-pattern", "the kernel's core_pattern is left alone"),
}
FACILITIES = {"user": logging.handlers.SysLogHandler.LOG_USER, "daemon": logging.handlers.SysLogHandler.LOG_DAEMON,
              **{f"local{i}": logging.handlers.SysLogHandler.LOG_LOCAL0 + i for i in range(8)}}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("keepalived", help="run a keepalived.conf: VRRP and virtual servers (keepalived 2.2.7 command line)",
                              description="Run the VRRP instances and virtual servers of a keepalived.conf, "
                                          "with keepalived 2.2.7's options.")
    p.add_argument("-f", "--use-file", dest="file", default="/etc/keepalived/keepalived.conf",
                   help="configuration file (default /etc/keepalived/keepalived.conf)")
    p.add_argument("-P", "--vrrp", action="store_true", help="only run VRRP (no virtual servers or checkers)")
    p.add_argument("-C", "--check", action="store_true", help="only run the virtual servers and checkers (no VRRP)")
    p.add_argument("-B", "--no_bfd", action="store_true", help="don't run BFD (pylvs never runs BFD)")
    p.add_argument("--all", action="store_true",
                   help="run every part even without configuration for it (pylvs always does: a reload adds parts)")
    p.add_argument("-l", "--log-console", action="store_true", help="log to the console")
    p.add_argument("-D", "--log-detail", action="store_true", help="detailed log messages")
    p.add_argument("-S", "--log-facility", default="daemon", metavar="FACILITY",
                   help="syslog facility: 0-7 (local0-7), local0-7, user or daemon (default)")
    p.add_argument("-G", "--no-syslog", action="store_true", help="don't log via syslog")
    p.add_argument("-u", "--umask", default=None, metavar="MASK", help="umask for file creation (numeric)")
    p.add_argument("-X", "--release-vips", action="store_true", help="not supported")
    p.add_argument("-V", "--dont-release-vrrp", action="store_true",
                   help="don't remove VIPs and virtual routes on stop")
    p.add_argument("-I", "--dont-release-ipvs", action="store_true",
                   help="don't remove the virtual servers from the kernel's table on stop")
    p.add_argument("-R", "--dont-respawn", action="store_true", help="don't respawn children (pylvs has none)")
    p.add_argument("-n", "--dont-fork", action="store_true", help="don't fork (pylvs never forks)")
    p.add_argument("-d", "--dump-conf", action="store_true", help="log the configuration data at start")
    p.add_argument("-p", "--pid", dest="pidfile", default=None, metavar="FILE", help="pid file of the daemon")
    p.add_argument("-r", "--vrrp_pid", dest="vrrp_pidfile", default=None, metavar="FILE",
                   help="pid file for VRRP (this process, when VRRP runs)")
    p.add_argument("-T", "--genhash", action="store_true", help="not supported")
    p.add_argument("-c", "--checkers_pid", dest="checkers_pidfile", default=None, metavar="FILE",
                   help="pid file for the checkers (this process, when they run)")
    p.add_argument("-a", "--address-monitoring", action="store_true", help="not supported")
    p.add_argument("-b", "--bfd_pid", default=None, metavar="FILE", help="not supported")
    p.add_argument("-x", "--snmp", action="store_true", help="not supported")
    p.add_argument("-A", "--snmp-agent-socket", default=None, metavar="FILE", help="not supported")
    p.add_argument("-s", "--namespace", default=None, metavar="NAME", help="not supported")
    p.add_argument("-m", "--core-dump", action="store_true", help="allow a core dump on abnormal end")
    p.add_argument("-M", "--core-dump-pattern", nargs="?", const="core", default=None, metavar="PATN",
                   help="not supported")
    p.add_argument("-e", "--all-config", action="store_true", help="error if any configuration file is missing")
    p.add_argument("-i", "--config-id", default=None, metavar="ID",
                   help="use @ID conditional lines (default: this host's node name)")
    p.add_argument("--signum", default=None, metavar="SIGFUNC",
                   help="print the signal number for STOP, RELOAD, DATA, STATS, STATS_CLEAR or JSON")
    p.add_argument("-t", "--config-test", nargs="?", const="-", default=None, metavar="LOG_FILE",
                   help="check the configuration and exit (5 on errors); output to stderr or LOG_FILE")
    p.add_argument("-v", "--version", action="store_true", help="display the version")
    # pylvs' own options
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
    p.add_argument("--proxy-timeouts", default=None, metavar="WORDS",
                   help="the proxy data plane's timeouts and limits (HAProxy's meanings), e.g. "
                        "'server=30 client=60 tunnel=0 connect=3 maxconn=100000 queue=1'")
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"pylvs keepalived: {msg}", file=sys.stderr)
    return 1


def facility(text: str) -> int | None:
    """keepalived's -S: 0-7 (LOG_LOCAL0-7), local0-7, user or daemon."""
    if text.isdigit() and 0 <= int(text) <= 7:
        return FACILITIES[f"local{text}"]
    return FACILITIES.get(text)


def parse_umask(text: str) -> int | None:
    """A numeric umask as keepalived reads it (strtoul base 0: 0x.. hex, 0.. octal, else decimal)."""
    try:
        if text.lower().startswith("0x"):
            value = int(text, 16)
        elif text.startswith("0") and len(text) > 1:
            value = int(text, 8)
        else:
            value = int(text, 10)
    except ValueError:
        return None
    return value if 0 <= value <= 0o777 else None


def setup_logging(args: argparse.Namespace, fac: int) -> None:
    """keepalived's log targets: syslog (facility -S) unless -G; the console with -l, and also
    when stderr is a terminal or syslog cannot be reached (a message must never vanish)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        if getattr(h, "pylvs_keepalived", False):  # ours from an earlier run in this process
            root.removeHandler(h)
    added: list[logging.Handler] = []
    syslog_ok = False
    if not args.no_syslog and os.path.exists("/dev/log"):
        try:
            sh = logging.handlers.SysLogHandler("/dev/log", facility=fac)
        except OSError:
            pass
        else:
            sh.setFormatter(logging.Formatter("Keepalived[%(process)d]: %(message)s"))
            added.append(sh)
            syslog_ok = True
    if args.log_console or not syslog_ok or sys.stderr.isatty():
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s: %(message)s"))
        added.append(console)
    for h in added:
        h.pylvs_keepalived = True  # type: ignore[attr-defined]
        root.addHandler(h)
    if args.log_detail:
        logging.getLogger("pylvs").setLevel(logging.DEBUG)


def _show_bgp(path: str, fh: TextIO) -> None:
    """A ``pylvs_bgp`` block is not keepalived's (it is warned about as an unknown keyword, as
    keepalived does, and changes no exit code): say what ``pylvs scaleout run`` would do with
    it, or why it would refuse it."""
    from pylvs.scaleout.config import BGPConfigError, find

    try:
        bgp = find(path)
    except BGPConfigError as exc:
        print(f"pylvs_bgp: pylvs scaleout would refuse it: {exc}", file=fh)
        return
    if bgp is not None:
        print("pylvs_bgp (for pylvs scaleout run --config, not keepalived):", file=fh)
        for line in bgp.describe():
            print(f"  {line}", file=fh)


def config_test(args: argparse.Namespace, config_id: str) -> int:
    """-t: keepalived's exit codes (0 good, 5 errors); the host is checked too (interfaces,
    addresses), as keepalived's -t does."""
    from pylvs.vrrp.plan import HostError, plan_instances

    out = sys.stderr if args.config_test == "-" else None
    try:
        fh = out or open(args.config_test, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        return _fail(f"cannot write {args.config_test}: {exc.strerror}")
    try:
        from pylvs.keepalived.daemon import load

        try:
            cfg, lvs = load(args.file, config_id, args.all_config)
        except ConfigError as exc:
            for d in exc.diagnostics:
                print(d, file=fh)
            return EXIT_CONFIG_TEST
        for d in [*cfg.diagnostics, *lvs.diagnostics]:
            print(d, file=fh)
        _show_bgp(args.file, fh)
        if not args.check:
            try:
                plan_instances(cfg)
            except HostError as exc:
                print(exc, file=fh)
                return EXIT_CONFIG_TEST
        return 0
    finally:
        if out is None:
            fh.close()


def run(args: argparse.Namespace) -> int:
    from pylvs.keepalived import signals

    if args.signum is not None:
        num = signals.signum(args.signum)
        if num is None:
            return _fail(f"Unknown sigfunc {args.signum}")
        print(num)
        return 0
    if args.version:
        from pylvs import __version__

        print(f"pylvs keepalived {__version__} (keepalived v{KEEPALIVED_VERSION} command line)")
        return 0
    for dest, (flag, why) in UNSUPPORTED.items():
        if getattr(args, dest):
            return _fail(f"option {flag} is not supported ({why})")
    fac = facility(args.log_facility)
    if fac is None:
        return _fail(f"Invalid log facility '{args.log_facility}'")
    if args.umask is not None:
        mask = parse_umask(args.umask)
        if mask is None:
            return _fail(f"Invalid umask '{args.umask}'")
        os.umask(mask)
    from pylvs.dataplane.proxy.settings import SettingsError
    from pylvs.director.main import proxy_settings

    try:  # keepalived.conf has no words for them: an option, checked before anything runs
        proxy = proxy_settings(args.proxy_timeouts, args.dataplane)
    except SettingsError as exc:
        print(f"pylvs keepalived: {exc}", file=sys.stderr)
        return 2
    # keepalived: the config-id defaults to the node name
    config_id = args.config_id if args.config_id is not None else socket.gethostname()
    if args.config_test is not None:
        return config_test(args, config_id)
    setup_logging(args, fac)
    if args.core_dump:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    from pylvs.keepalived.arbitrator import ArbitratorSettings
    from pylvs.keepalived.daemon import DaemonSettings, KeepalivedDaemon

    arbitrator = None
    if args.arbitrator:
        arbitrator = ArbitratorSettings(args.arbitrator, args.arbitrator_interval, args.arbitrator_fall,
                                        args.arbitrator_rise)
    # -P and -C each pick one part; both (or neither) run both, as in keepalived
    run_vrrp = args.vrrp or not args.check
    run_checkers = args.check or not args.vrrp
    settings = DaemonSettings(
        args.file, config_id=config_id, state_file=args.state_file, arbitrator=arbitrator,
        notify_split_brain=args.notify_split_brain, split_brain_probe=not args.no_split_brain_probe,
        metrics_port=args.metrics_port, control_socket=args.control_socket, dataplane=args.dataplane,
        metrics_address=args.metrics_address, status_address=args.status_address,
        status_admin_secret_file=args.status_admin_secret_file,
        run_vrrp=run_vrrp, run_checkers=run_checkers, release_vrrp=not args.dont_release_vrrp,
        release_ipvs=not args.dont_release_ipvs, all_config=args.all_config, dump_conf=args.dump_conf,
        proxy_settings=proxy,
    )
    from pylvs.metrics.server import MetricsError

    try:
        daemon = KeepalivedDaemon(settings)
    except MetricsError as exc:  # a bad --metrics-address/--status-address, a busy port
        print(f"pylvs keepalived: {exc}", file=sys.stderr)
        return 1
    pidfiles = [f for f, on in ((args.pidfile, True), (args.vrrp_pidfile, run_vrrp),
                                (args.checkers_pidfile, run_checkers)) if f and on]
    written = []
    # from the first pid file on, a SIGTERM or SIGINT is a clean stop, also before the event
    # loop's own handlers are in place (``KeepalivedDaemon.run`` looks at what came)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: daemon.early_signals.append(signum))
    try:
        for path in pidfiles:
            try:
                with open(path, "w", encoding="ascii") as fh:
                    fh.write(f"{os.getpid()}\n")
            except OSError as exc:
                return _fail(f"cannot write pid file {path}: {exc.strerror}")
            written.append(path)
        try:
            return asyncio.run(daemon.run())
        except PermissionError as exc:
            return _fail(f"{exc.strerror or exc}: VRRP's raw sockets and the VIPs need root "
                         "(or CAP_NET_RAW and CAP_NET_ADMIN)")
        except OSError as exc:
            return _fail(f"cannot run: {exc.strerror or exc}")
    finally:
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass
