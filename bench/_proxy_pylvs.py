"""The pylvs side of ``bench_proxy.py``: a Director table served by the proxy data plane on uvloop.

What this is for: running pylvs as its own process (pinned to a CPU by the caller) the way the
daemon would, with TCP virtual services VIP:port scheduled rr over the given real servers (NAT).
What it is not for: configuration beyond that; the daemon and pylvsadm do the real thing.

    python bench/_proxy_pylvs.py [--no-splice] [--no-sockmap] VIP:PORT=RS:PORT[,RS:PORT...] [VIP:PORT=...]

Prints ``READY`` once listening; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop

from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, ServiceKey, ServiceSpec, parse_address
from pylvs.dataplane.proxy import ProxyDataPlane


def _addr_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def run(specs: list[str], splice: bool, sockmap: bool) -> None:
    director = Director()
    for spec in specs:
        vip, _, servers = spec.partition("=")
        vhost, vport = _addr_port(vip)
        key = ServiceKey.inet(6, vhost, vport)
        director.table.add_service(ServiceSpec(key, "rr"))
        for rs in servers.split(","):
            host, port = _addr_port(rs)
            director.table.add_dest(
                key, DestSpec(parse_address(host), port, ForwardingMethod.MASQ, 1)
            )
    plane = ProxyDataPlane(director, splice=splice, sockmap=sockmap)
    await plane.start()
    await asyncio.sleep(0.05)
    for lst in plane.describe()["listeners"]:
        if lst["state"] != "listening":
            print(f"listener failed: {lst}", file=sys.stderr, flush=True)
            await plane.stop()
            raise SystemExit(1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    await plane.stop()


def main(argv: list[str]) -> int:
    args = argv[1:]
    splice = "--no-splice" not in args
    sockmap = "--no-sockmap" not in args
    specs = [a for a in args if a not in ("--no-splice", "--no-sockmap")]
    if not specs:
        print(__doc__, file=sys.stderr)
        return 2
    uvloop.run(run(specs, splice, sockmap))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
