"""``pylvs scaleout``: run the BGP announcer beside a director, check its configuration, drain.

    pylvs scaleout run --config FILE [--control-socket PATH] [--socket PATH] [--run-dir DIR]
                       [--metrics-address [HOST:]PORT] [--status-address [HOST:]PORT]
    pylvs scaleout check --config FILE        # the block read back in words, exit 1 if bad
    pylvs scaleout drain|resume|status [--socket PATH]

``drain`` withdraws every VIP and keeps them withdrawn (the director goes on forwarding what
still reaches it, so established connections are not cut while the routers move the traffic);
``resume`` announces again what has quorum. Errors are one line on stderr and exit status 1.

With ``--metrics-address`` / ``--status-address`` the announcer serves the director's status page,
``/status.json`` and metrics with a BGP section beside its services (``pylvs_bgp_announced{vip}``,
``pylvs_bgp_session_up{neighbor,remote_as}``...): the director and its announcer are two processes,
and the announcer is the one that knows both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
from typing import Any

from pylvs.control.client import ControlClient
from pylvs.metrics.server import MetricsError, add_arguments, close_quietly, from_args
from pylvs.scaleout.config import BGPConfigError, load
from pylvs.scaleout.speaker import DEFAULT_RUN_DIR, DEFAULT_SOCKET, Speaker, SpeakerError, find_bird


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
        binary = find_bird()
    except (BGPConfigError, SpeakerError) as exc:
        print(f"pylvs scaleout: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s pylvs scaleout: %(message)s")
    speaker = Speaker(cfg, args.control_socket, args.socket, args.run_dir, binary)
    try:
        observe = from_args(args, speaker.sources(), backend=lambda: ControlClient(
            args.control_socket))
    except MetricsError as exc:
        print(f"pylvs scaleout: {exc}", file=sys.stderr)
        return 1
    try:
        if observe is not None:
            observe.start()
        return asyncio.run(speaker.run())
    except SpeakerError as exc:
        print(f"pylvs scaleout: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pylvs scaleout: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1
    finally:
        close_quietly(observe)


def _check(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except BGPConfigError as exc:
        print(f"pylvs scaleout: {exc}", file=sys.stderr)
        return 1
    for line in cfg.describe():
        print(line)
    return 0


def request(path: str, op: str, timeout: float = 10.0) -> dict[str, Any]:
    """One request to a running ``pylvs scaleout run`` (OSError when none answers)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"op": op}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply


def _ask(args: argparse.Namespace) -> int:
    try:
        reply = request(args.socket, args.op)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        print(f"pylvs scaleout: no answer on {args.socket}: {why}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"pylvs scaleout: {reply.get('error')}", file=sys.stderr)
        return 1
    st = reply["result"]
    print(f"draining: {'yes' if st['draining'] else 'no'}")
    print("announced: " + (" ".join(st["announced"]) or "nothing"))
    for p, v in sorted(st["vips"].items()):
        print(f"  {p}: {'announced' if v['announce'] else 'withdrawn'} ({v['reason']})")
    d = st.get("director")
    if d is not None:
        print("director: " + (f"answers, data plane {d['dataplane']}" if d["reachable"]
                              else f"does not answer ({d['error']})"))
    for n in st["neighbors"]:
        err = f" (last error: {n['last_error']})" if n["last_error"] else ""
        print(f"neighbor {n['address']} AS {n['remote_as']}: {n['state']}{err}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("scaleout", help="announce this director's VIPs over BGP (BIRD) while "
                       "it can serve them; drain, resume, status")
    ssub = p.add_subparsers(dest="scaleout_command", metavar="ACTION", required=True)
    r = ssub.add_parser("run", help="run the announcer (BIRD as its child) until SIGTERM")
    r.add_argument("--config", required=True, metavar="FILE",
                   help="a file with a pylvs_bgp block (keepalived.conf itself may hold it)")
    r.add_argument("--control-socket", metavar="PATH",
                   help="the director's control socket (default $PYLVS_CONTROL_SOCKET)")
    r.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"this announcer's control socket (default {DEFAULT_SOCKET})")
    r.add_argument("--run-dir", default=DEFAULT_RUN_DIR, metavar="DIR",
                   help=f"BIRD's configuration, socket and log (default {DEFAULT_RUN_DIR})")
    add_arguments(r)  # --metrics-address, --status-address: BGP state beside the services
    r.set_defaults(func=_run)
    c = ssub.add_parser("check", help="read the pylvs_bgp block and say what would run")
    c.add_argument("--config", required=True, metavar="FILE")
    c.set_defaults(func=_check)
    for op, text in (("drain", "withdraw every VIP and keep them withdrawn"),
                     ("resume", "announce again what has quorum"),
                     ("status", "what is announced and why, the BGP sessions")):
        a = ssub.add_parser(op, help=text)
        a.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH")
        a.set_defaults(func=_ask, op=op)
