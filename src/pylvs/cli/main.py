"""``pylvs``: the one command for everything that is not ipvsadm's job.

Each subsystem contributes its own subcommands through a ``register(subparsers)`` function in its
own module, listed in ``SUBCOMMAND_MODULES``; this file only assembles them, so adding a
subsystem is one line here and never a change to another subsystem's code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that provide ``register(subparsers: argparse._SubParsersAction) -> None``.
# Each registered subparser sets ``func`` (args -> exit code) with ``set_defaults``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "pylvs.daemon.main",
    "pylvs.health.cli",
    "pylvs.lab.cli",
    "pylvs.hostsetup.cli",
    "pylvs.l7.cli",
    "pylvs.vrrp.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pylvs",
        description="Linux Virtual Server cluster in Python: director, lab, VRRP, checks, L7 proxy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    rc: int = func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
