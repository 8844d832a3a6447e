"""``pylvs top``: a live terminal view of a director, refreshed every second.

What this is for: the view an operator otherwise gets from ``watch pylvsadm -Ln --rate``, with
health and VRRP beside it: every virtual service and real server with its weight, health,
active/inactive connections, connections/s, packets/s and bytes/s (the estimator's rates, as
``--rate`` prints them), and the VRRP instances and split-brain state on top. It reads the
daemon's ``observe`` control operation (the status document, ``pylvs.metrics.sources``) over the
control socket, so it works against ``pylvsd`` and ``pylvs keepalived`` alike
(``--control-socket`` or ``$PYLVS_CONTROL_SOCKET``).

Keys: ``n`` name, ``w`` weight, ``a`` active connections, ``c`` connections/s, ``p`` packets/s,
``b`` bytes/s, ``h`` health (sort); ``r`` reverses; ``q`` quits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from pylvs.control.client import ControlClient, default_socket_path
from pylvs.core.api import BackendUnavailable, IPVSError

SORT_KEYS: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "n": ("name", lambda r: r["_order"]),
    "w": ("weight", lambda r: r["weight"]),
    "a": ("active", lambda r: r["active"]),
    "c": ("conn/s", lambda r: r["cps"]),
    "p": ("pkt/s", lambda r: r["pps"]),
    "b": ("bytes/s", lambda r: r["bps"]),
    "h": ("health", lambda r: r["health"]),
}
HEALTH_STYLE = {"up": "green", "down": "bold red", "drained": "yellow", "unchecked": "cyan"}
STATE_STYLE = {"MASTER": "bold green", "BACKUP": "cyan", "FAULT": "bold red"}


def _rate(n: int) -> str:
    for unit, div in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _rows(svc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for i, r in enumerate(svc["real_servers"]):
        s = r["stats"]
        yield {
            "_order": i, "name": r["name"], "kind": r["forward"], "health": r["health"]["state"],
            "weight": r["weight"], "active": r["active"], "inactive": r["inactive"],
            "cps": s["cps"], "pps": s["inpps"] + s["outpps"], "bps": s["inbps"] + s["outbps"],
            "last": r["health"]["last_result"] or "",
        }


def _service_row(i: int, svc: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    s = svc["stats"]
    up = sum(1 for r in rows if r["health"] in ("up", "unchecked"))
    return {
        "_order": i, "name": svc["name"], "kind": svc["scheduler"],
        "health": f"{up}/{len(rows)}", "weight": sum(r["weight"] for r in rows),
        "active": sum(r["active"] for r in rows), "inactive": sum(r["inactive"] for r in rows),
        "cps": s["cps"], "pps": s["inpps"] + s["outpps"], "bps": s["inbps"] + s["outbps"],
        "last": "",
    }


def render(doc: dict[str, Any], sort: str = "n", reverse: bool = False) -> Group:
    """One frame: the header (daemon, VRRP, split brain) and the table, sorted."""
    label, key = SORT_KEYS.get(sort, SORT_KEYS["n"])
    descending = reverse != (sort not in ("n", "h"))  # numbers: biggest first, as top does
    head = Text()
    head.append(f"pylvs top: {doc['daemon']}", style="bold")
    plane = (doc.get("dataplane") or {}).get("name", "none")
    head.append(f"  data plane {plane}  up {doc['uptime']:.0f}s  {time.strftime('%H:%M:%S')}")
    head.append(f"  sort: {label}{' (reversed)' if reverse else ''}\n")
    vrrp = doc.get("vrrp")
    if vrrp:
        for inst in vrrp["instances"]:
            head.append(f"VRRP {inst['name']} ")
            head.append(str(inst["state"]), style=STATE_STYLE.get(str(inst["state"]), ""))
            head.append(f" vrid {inst['vrid']} prio {inst['effective_priority']}"
                        f" master {inst['master'] or '-'}  ")
        head.append("\n")
        if vrrp["split_brain"]:
            peers = ", ".join(str(i["split_brain"]) for i in vrrp["instances"] if i["split_brain"])
            head.append(f"SPLIT BRAIN: another master seen ({peers})", style="bold white on red")
        else:
            head.append("split brain: none", style="green")
        head.append("\n")
    table = Table(box=None, header_style="bold reverse", expand=False, pad_edge=False)
    # addresses are never cut: on a narrow terminal the last check's reason gives way first
    widest = max([len(svc["name"]) for svc in doc["services"]]
                 + [len(r["name"]) + 5 for svc in doc["services"] for r in svc["real_servers"]]
                 + [21])
    table.add_column("Service / real server", min_width=widest, no_wrap=True)
    for col in ("Sched/Fwd", "Health"):
        table.add_column(col, no_wrap=True)
    for col in ("Weight", "ActConn", "InActConn", "Conn/s", "Pkt/s", "Bytes/s"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("Last check", no_wrap=True, overflow="ellipsis", ratio=1)
    services = []
    for i, svc in enumerate(doc["services"]):
        rows = list(_rows(svc))
        services.append((_service_row(i, svc, rows), rows))
    services.sort(key=lambda t: key(t[0]), reverse=descending)
    for srow, rows in services:
        table.add_row(Text(srow["name"], style="bold"), srow["kind"], srow["health"],
                      str(srow["weight"]), str(srow["active"]), str(srow["inactive"]),
                      str(srow["cps"]), _rate(srow["pps"]), _rate(srow["bps"]), "")
        for r in sorted(rows, key=key, reverse=descending):
            table.add_row("  -> " + r["name"], r["kind"],
                          Text(r["health"], style=HEALTH_STYLE.get(r["health"], "")),
                          str(r["weight"]), str(r["active"]), str(r["inactive"]), str(r["cps"]),
                          _rate(r["pps"]), _rate(r["bps"]), r["last"][:40])
    if not services:
        table.add_row("(no virtual services)", "", "", "", "", "", "", "", "", "")
    keys = Text("keys: n name  w weight  a active  c conn/s  p pkt/s  b bytes/s  h health  "
                "r reverse  q quit", style="dim")
    return Group(head, table, keys)


def fetch(client: ControlClient) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = client.call("observe")
    except IPVSError as exc:
        raise BackendUnavailable(
            f"the daemon on {client.path} does not answer 'observe' ({exc})") from None
    return doc


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run(args: argparse.Namespace) -> int:
    if not 0.1 <= args.interval <= 3600:
        print(f"pylvs top: --interval {args.interval:g}: give 0.1 to 3600 seconds", file=sys.stderr)
        return 2
    client = ControlClient(default_socket_path(args.control_socket), timeout=5.0)
    # a pipe gets the whole width a table needs, a terminal its own
    console = Console() if sys.stdout.isatty() else Console(width=160)
    sort, reverse = args.sort, False
    try:
        if args.once or not sys.stdin.isatty():
            console.print(render(fetch(client), sort))
            return 0
        from rich.live import Live

        fd = sys.stdin.fileno()
        with _cbreak(fd), Live(render(fetch(client), sort), console=console, screen=True,
                                auto_refresh=False) as live:
            deadline = time.monotonic() + args.interval
            while True:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if ready:
                    ch = os.read(fd, 1).decode(errors="replace").lower()
                    if ch == "q":
                        return 0
                    if ch == "r":
                        reverse = not reverse
                    elif ch in SORT_KEYS:
                        sort = ch
                    else:
                        continue
                else:
                    deadline = time.monotonic() + args.interval
                live.update(render(fetch(client), sort, reverse), refresh=True)
    except BackendUnavailable as exc:
        print(f"pylvs top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


def register(sub: Any) -> None:
    p = sub.add_parser("top", help="live view of the virtual services, real servers and VRRP")
    p.add_argument("--control-socket", metavar="PATH",
                   help="the daemon's control socket (default $PYLVS_CONTROL_SOCKET or "
                        "/run/pylvs/pylvs.sock)")
    p.add_argument("--sort", default="n", choices=sorted(SORT_KEYS),
                   help="initial sort key (n name, w weight, a active, c conn/s, p pkt/s, "
                        "b bytes/s, h health)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=run)
