"""``pylvs sysctl``: read and write a running director's flood defences, with sysctl(8)'s words.

The kernel's are files under /proc/sys/net/ipv4/vs/ (``sysctl -w net.ipv4.vs.drop_entry=1``);
ipvsadm has no option for them, so neither has ``pylvsadm``. This sends the control socket's
``get_sysctl`` / ``set_sysctl`` requests instead::

    pylvs sysctl -a                                   # every setting
    pylvs sysctl net.ipv4.vs.secure_tcp               # one
    pylvs sysctl -w net.ipv4.vs.drop_entry=3 amemthresh=5000 max_connections=200000

Names may drop the ``net.ipv4.vs.`` prefix; ``max_connections`` (the table's size) is pylvs's
own. A bad name or value is one line and exit status 1, and nothing is changed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pylvs.control.client import ControlClient
from pylvs.core.api import BackendUnavailable, IPVSError

PREFIX = "net.ipv4.vs."


def _name(word: str) -> str:
    return word[len(PREFIX):] if word.startswith(PREFIX) else word


def _label(name: str) -> str:
    return name if name == "max_connections" else PREFIX + name


def run(args: argparse.Namespace) -> int:
    try:
        with ControlClient(args.control_socket) as c:
            writes: dict[str, object] = {}
            reads: list[str] = []
            for word in args.names:
                name, eq, value = word.partition("=")
                if eq:
                    try:
                        writes[_name(name.strip())] = int(value.strip())
                    except ValueError:
                        print(f"pylvs sysctl: {name.strip()}: an integer is required",
                              file=sys.stderr)
                        return 1
                else:
                    reads.append(_name(word))
            if writes:
                c.set_sysctl(writes)
            current = c.get_sysctl()
    except (BackendUnavailable, IPVSError) as exc:
        print(f"pylvs sysctl: {exc}", file=sys.stderr)
        return 1
    show = reads + list(writes) if (reads or writes) and not args.all else sorted(current)
    for name in show:
        if name not in current:
            print(f"pylvs sysctl: cannot stat {_label(name)}: No such setting", file=sys.stderr)
            return 1
        print(f"{_label(name)} = {current[name]}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("sysctl", help="read or set a director's flood defences "
                       "(net.ipv4.vs.drop_entry, drop_packet, secure_tcp, amemthresh, ...)")
    p.add_argument("-a", "--all", action="store_true", help="show every setting")
    p.add_argument("-w", "--write", action="store_true", help="accepted, as sysctl's -w")
    p.add_argument("--control-socket", metavar="PATH",
                   help="the director's control socket (default $PYLVS_CONTROL_SOCKET)")
    p.add_argument("names", nargs="*", metavar="NAME[=VALUE]")
    p.set_defaults(func=run)
