"""The pylvs side of ``bench_proxy.py``: a Director table served by the proxy data plane on uvloop.

What this is for: running pylvs as its own process (pinned to a CPU by the caller) the way the
daemon would, with TCP virtual services VIP:port scheduled rr over the given real servers (NAT).
What it is not for: configuration beyond that; the daemon and pylvsadm do the real thing.

    python bench/_proxy_pylvs.py [--no-splice] [--no-sockmap] [--metrics-address HOST:PORT]
                                 VIP:PORT=RS:PORT[,RS:PORT...] [VIP:PORT=...]

``--metrics-address``: serve ``/metrics`` as pylvsd does (``pylvs.metrics``, its HTTP threads
reading the live table and data plane), so ``bench_proxy.py --scrape`` can measure what being
scraped costs. Prints ``READY`` once listening; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from pylvs.core.director import Director
from pylvs.core.model import DestSpec, ForwardingMethod, ServiceKey, ServiceSpec, parse_address
from pylvs.dataplane.proxy import ProxyDataPlane
from pylvs.metrics.server import MetricsError, ObservabilityServer, parse_listen
from pylvs.metrics.sources import Sources


def _addr_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def run(specs: list[str], splice: bool, sockmap: bool, metrics: str | None) -> None:
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
    observe = None
    if metrics is not None:  # pylvsd's wiring (pylvs.metrics.wiring.director_sources)
        sources = Sources("pylvsd", table=lambda: director.table, dataplane=lambda: plane)
        try:
            observe = ObservabilityServer(sources, parse_listen(metrics))
        except MetricsError as e:
            print(f"metrics: {e}", file=sys.stderr, flush=True)
            await plane.stop()
            raise SystemExit(1) from None
        observe.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("READY", flush=True)
    await stop.wait()
    if observe is not None:
        observe.close()
    await plane.stop()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("--no-splice", action="store_true")
    ap.add_argument("--no-sockmap", action="store_true")
    ap.add_argument("--metrics-address", metavar="HOST:PORT")
    ap.add_argument("specs", nargs="+", metavar="VIP:PORT=RS:PORT[,RS:PORT...]")
    args = ap.parse_args(argv[1:])
    uvloop.run(run(args.specs, not args.no_splice, not args.no_sockmap, args.metrics_address))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
