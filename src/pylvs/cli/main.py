"""``pylvs``: the one command for everything that is not ipvsadm's job.

Each subsystem contributes its own subcommands through a ``register(subparsers)`` function in its
own module, named in ``SUBCOMMANDS``; this file only assembles them, so adding a subsystem is one
line here and never a change to another subsystem's code.

Only the module of the subcommand being run is imported (``--help`` imports them all): start-up
time matters, e.g. a restarted VRRP master preempts sooner when ``pylvs keepalived`` does not
first load the lab's and the proxy's code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence

from pylvs import __version__

# Subcommand -> the module whose ``register(subparsers)`` adds it (and sets ``func`` with
# ``set_defaults``: args -> exit code). A module may register several subcommands.
SUBCOMMANDS: dict[str, str] = {
    "run": "pylvs.director.main",
    "genhash": "pylvs.health.cli",
    "lab": "pylvs.lab.cli",
    "rs-setup": "pylvs.hostsetup.cli",
    "director-setup": "pylvs.hostsetup.cli",
    "http": "pylvs.l7.cli",
    "http-app": "pylvs.l7.cli",
    "keepalived": "pylvs.keepalived.cli",
    "top": "pylvs.metrics.top",
    "install-units": "pylvs.service.units",
    "man": "pylvs.cli.docs",
    "install-docs": "pylvs.cli.docs",
    "sysctl": "pylvs.control.cli",
    "scaleout": "pylvs.scaleout.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s module only, or with every module when it is not known."""
    parser = argparse.ArgumentParser(
        prog="pylvs",
        description="Linux Virtual Server cluster in Python: director, lab, VRRP, checks, L7 proxy.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"pylvs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in SUBCOMMANDS:
        modules = [SUBCOMMANDS[command]]
    else:
        modules = list(dict.fromkeys(SUBCOMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    command = args_in[0] if args_in and not args_in[0].startswith("-") else None
    parser = build_parser(command)
    args = parser.parse_args(args_in)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        rc: int = func(args)
    except BrokenPipeError:
        # the reader went away (``pylvs ... | head``): end quietly, as a shell tool does
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return 141
    return rc


if __name__ == "__main__":
    sys.exit(main())
