"""``pylvs sysctl``: read and write a running director's settings (flood defences, sloppy_*,
sync_*), with sysctl(8)'s words.

The kernel's are files under /proc/sys/net/ipv4/vs/ (``sysctl -w net.ipv4.vs.drop_entry=1``);
ipvsadm has no option for them, so neither has ``pylvsadm``. This sends the control socket's
``get_sysctl`` / ``set_sysctl`` requests instead::

    pylvs sysctl -a                                   # every setting
    pylvs sysctl net.ipv4.vs.secure_tcp               # one
    pylvs sysctl -w net.ipv4.vs.drop_entry=3 amemthresh=5000 max_connections=200000
    pylvs sysctl -w net.ipv4.vs.sync_threshold="0 0" sync_refresh_period=1

Names may drop the ``net.ipv4.vs.`` prefix; ``max_connections`` (the table's size) is pylvs's
own. A value is the kernel's text: integers separated by blanks, so a vector setting
(``sync_threshold``, threshold and period) is written "3 50" and printed as sysctl prints the
kernel's file, its integers tab-separated (``net.ipv4.vs.sync_threshold = 3<TAB>50``). A bad
name or value is one line and exit status 1, and nothing is changed (every value is checked by
the director before any is set).
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


def value_of(text: str) -> int | list[int]:
    """A written value as the kernel's ``proc_dointvec`` reads it: integers separated by blanks
    (one: an integer; several: a vector's, for ``sync_threshold``); ValueError if a word is not
    an integer or there is none. Which settings take several is the director's to say."""
    values = [int(word) for word in text.split()]
    if not values:
        raise ValueError("no value")
    return values[0] if len(values) == 1 else values


def text_of(value: object) -> str:
    """A value as sysctl(8) prints the kernel's file: a vector's integers tab-separated."""
    if isinstance(value, list):
        return "\t".join(str(v) for v in value)
    return str(value)


def setting(word: str) -> tuple[str, int | list[int]]:
    """``NAME=VALUE`` (``net.ipv4.vs.`` optional) as a name and ``value_of`` VALUE; ValueError
    with the words of the one-line message. ``pylvsd --sysctl`` reads its words with this too."""
    name, eq, value = word.partition("=")
    name = _name(name.strip())
    if not eq:
        raise ValueError("expected NAME=VALUE")
    try:
        return name, value_of(value)
    except ValueError:
        raise ValueError(f"{name}: an integer is required (a vector's separated by blanks: "
                         "\"3 50\")") from None


def run(args: argparse.Namespace) -> int:
    try:
        with ControlClient(args.control_socket) as c:
            writes: dict[str, object] = {}
            reads: list[str] = []
            for word in args.names:
                if "=" in word:
                    try:
                        name, value = setting(word)
                    except ValueError as exc:
                        print(f"pylvs sysctl: {exc}", file=sys.stderr)
                        return 1
                    writes[name] = value
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
        print(f"{_label(name)} = {text_of(current[name])}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("sysctl", help="read or set a director's settings (net.ipv4.vs.drop_entry, "
                       "secure_tcp, amemthresh, sloppy_tcp, sync_threshold=\"3 50\", ...)")
    p.add_argument("-a", "--all", action="store_true", help="show every setting")
    p.add_argument("-w", "--write", action="store_true", help="accepted, as sysctl's -w")
    p.add_argument("--control-socket", metavar="PATH",
                   help="the director's control socket (default $PYLVS_CONTROL_SOCKET)")
    p.add_argument("names", nargs="*", metavar="NAME[=VALUE]")
    p.set_defaults(func=run)
