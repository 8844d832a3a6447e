"""``make bench-proxy``: the pylvs proxy data plane against HAProxy (mode tcp) and nginx stream.

What this is for: one run, same backends, same client, same CPU pinning for every proxy, so the
ratios mean something. Every proxy and every backend runs on CPU 0; the load (wrk -t1 -c50, the
bulk sink) runs on CPU 1. For each proxy:

- keep-alive requests/s and p50/p99 latency: ``wrk -t1 -c50 -d{D}s --latency``;
- new-connection requests/s: the same with ``-H 'Connection: close'`` (a TCP connection per
  request, to the proxy and from the proxy to the backend);
- bulk MB/s: one stream of ``--bulk-mb`` MiB from a source backend through the proxy, timed at
  the sink.

The HTTP backends are one nginx (one worker) with two ``server`` blocks answering a small body,
scheduled round robin by every proxy: pylvs through a Director table (VIP 127.0.0.100, rr, NAT),
HAProxy ``balance roundrobin``, nginx ``upstream`` (round robin by default). A "direct" row runs
the same load straight at one backend, as the ceiling of this machine.

Each proxy runs in ``--rounds`` interleaved rounds and the best figure of each metric is kept.
A second table gives the CPU time (user + system, from /proc) that each proxy's own processes
spent per request and per GB: a load that other work on the machine slows down also slows the
rates, but changes the CPU spent per unit of work far less.

Metrics while scraped (issue #18's "Speed"): with ``--scrape SECONDS`` every pylvs row gets a
twin, ``pylvs+scrape`` beside ``pylvs``, run in the same interleaved rounds: the same proxy
started with ``--metrics-address 127.0.0.1:PORT`` (pylvsd's metrics module, its HTTP threads
in the proxy's process and so in its CPU figures) while a scraper thread of this script fetches
``/metrics`` every SECONDS through the whole measurement, as Prometheus would. The run prints
each scraped row's scrape count and mean scrape time; the two rows side by side are the cost
of being watched.

What this is not for: pass/fail. Numbers on a shared machine are noisy; the run prints the load
average before and after so a reader can judge. Every run is bounded in time; every process
started here is stopped here, by PID.

    python bench/bench_proxy.py [--duration 5] [--bulk-mb 1024] [--rounds 2] [--only pylvs,...]
                                [--scrape SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
PY = sys.executable
PROXY_CPU = "0"
LOAD_CPU = "1"
BACKEND_HOSTS = ("127.0.0.21", "127.0.0.22")
BULK_HOST = "127.0.0.23"
VIPS = {
    "pylvs": "127.0.0.100", "pylvs-userspace": "127.0.0.103", "haproxy": "127.0.0.101",
    "nginx-stream": "127.0.0.102",
}
SCRAPED = "+scrape"  # suffix of a row run with its metrics served and scraped
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
BODY = "hello from the real server\n"

console = Console(width=150)


@dataclass
class Result:
    name: str
    ka_rps: float = 0.0
    ka_p50_ms: float = 0.0
    ka_p99_ms: float = 0.0
    close_rps: float = 0.0
    close_p50_ms: float = 0.0
    close_p99_ms: float = 0.0
    bulk_mbps: float = 0.0
    # CPU time of the proxy's processes (user + system) per unit of work: far less sensitive to
    # other load on a shared machine than the rates are.
    ka_cpu_us: float = 0.0
    close_cpu_us: float = 0.0
    # The user-space part of the two above: the proxy's own code, the rest being the kernel's
    # TCP work (which every proxy pays alike) and system-call entry.
    ka_user_us: float = 0.0
    close_user_us: float = 0.0
    bulk_cpu_ms_per_gb: float = 0.0
    # CPU time of the whole machine (both CPUs, every process, kernel threads and interrupts) per
    # request: the fair measure once a proxy's work is done by the kernel outside its process,
    # as pylvs's in-kernel relay does. It includes wrk and the backends, the same for every row.
    ka_machine_us: float = 0.0
    close_machine_us: float = 0.0
    # --scrape: /metrics fetches during the measurement and their mean duration
    scrapes: int = 0
    scrape_ms: float = 0.0
    errors: list[str] = field(default_factory=list)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


class Processes:
    """Every child this run starts, stopped by PID (then killed if it lingers)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], cpu: str, log: Path) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        p = subprocess.Popen(
            ["taskset", "-c", cpu, *argv], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.procs.append((name, p))
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def _ms(value: str, unit: str) -> float:
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return float(value) * scale


@dataclass
class WrkRun:
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: list[str] = field(default_factory=list)


def run_wrk(url: str, duration: int, close: bool) -> WrkRun:
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c50", f"-d{duration}s", "--latency",
            "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 30, check=False,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"^\s*(\d+) requests in", out, re.M)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    errors = [line.strip() for line in out.splitlines()
              if "Socket errors" in line or "Non-2xx" in line]
    if rps is None or p50 is None or p99 is None or n is None:
        return WrkRun(errors=[f"wrk output not understood: {out.strip()[:200]}"])
    return WrkRun(float(rps[1]), _ms(p50[1], p50[2]), _ms(p99[1], p99[2]), int(n[1]), errors)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def session_cpu(sid: int) -> tuple[float, float]:
    """User and system seconds of every live process of session ``sid`` (a proxy and its
    workers)."""
    user = system = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:  # field 6 of stat: session id
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
    return user / CLK_TCK, system / CLK_TCK


def machine_cpu() -> float:
    """Busy seconds of all CPUs together since boot (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def run_bulk(host: str, port: int, size: int) -> tuple[float, list[str]]:
    argv = ["taskset", "-c", LOAD_CPU, PY, str(HERE / "_proxy_bulk.py"), "sink", host,
            str(port), str(size)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    try:
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0.0, [f"bulk sink failed: {proc.stderr.strip()[-200:]}"]
    errs = [] if r["bytes"] == size else [f"bulk got {r['bytes']} of {size} bytes"]
    return r["bytes"] / r["seconds"] / 1e6, errs


class Scraper:
    """Fetches ``url`` every ``every`` seconds from a thread of this script (not the proxy's
    process), as Prometheus would, until stopped; counts the fetches and times them."""

    def __init__(self, url: str, every: float) -> None:
        self.url, self.every = url, every
        self.times: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    body = r.read()
                if b"node_ipvs_connections_total" not in body:
                    self.errors.append("scrape: no node_ipvs_connections_total in /metrics")
            except OSError as e:
                self.errors.append(f"scrape: {e}")
            else:
                self.times.append(time.perf_counter() - t0)
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def mean_ms(self) -> float:
        return sum(self.times) / len(self.times) * 1e3 if self.times else 0.0


# ---- configurations ---------------------------------------------------------------------------


def nginx_backend_conf(tmp: Path, ports: list[int]) -> str:
    servers = "\n".join(
        f"  server {{ listen {h}:{p} backlog=4096 reuseport; "
        f"location / {{ return 200 \"{BODY[:-1]}\\n\"; }} }}"
        for h, p in zip(BACKEND_HOSTS, ports, strict=True)
    )
    return f"""worker_processes 1;
pid {tmp}/backend.pid;
error_log {tmp}/backend-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 10000000;
  keepalive_timeout 65;
{servers}
}}
"""


def nginx_stream_conf(tmp: Path, vip: str, web_port: int, bulk_port: int,
                      backends: list[tuple[str, int]], bulk: tuple[str, int]) -> str:
    ups = "\n".join(f"    server {h}:{p};" for h, p in backends)
    return f"""load_module {STREAM_MODULE};
worker_processes 1;
pid {tmp}/stream.pid;
error_log {tmp}/stream-error.log warn;
events {{ worker_connections 16384; }}
stream {{
  upstream web {{
{ups}
  }}
  server {{ listen {vip}:{web_port} backlog=4096; proxy_pass web; }}
  server {{ listen {vip}:{bulk_port}; proxy_pass {bulk[0]}:{bulk[1]}; }}
}}
"""


def haproxy_conf(vip: str, web_port: int, bulk_port: int,
                 backends: list[tuple[str, int]], bulk: tuple[str, int]) -> str:
    servers = "\n".join(f"  server s{i} {h}:{p}" for i, (h, p) in enumerate(backends))
    return f"""global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 3s
  timeout client 30s
  timeout server 30s
frontend web
  bind {vip}:{web_port}
  default_backend web
backend web
  balance roundrobin
{servers}
frontend bulk
  bind {vip}:{bulk_port}
  default_backend bulk
backend bulk
  server b0 {bulk[0]}:{bulk[1]}
"""


# ---- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def backends(procs: Processes, tmp: Path, bulk_size: int) -> Iterator[
    tuple[list[tuple[str, int]], tuple[str, int]]
]:
    ports = [free_port(h) for h in BACKEND_HOSTS]
    conf = tmp / "backend.conf"
    conf.write_text(nginx_backend_conf(tmp, ports))
    procs.start("nginx backend", ["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                PROXY_CPU, tmp / "backend.out")
    bulk_port = free_port(BULK_HOST)
    procs.start("bulk source", [PY, str(HERE / "_proxy_bulk.py"), "source", BULK_HOST,
                                str(bulk_port), str(bulk_size)], PROXY_CPU, tmp / "bulk.out")
    web = list(zip(BACKEND_HOSTS, ports, strict=True))
    for h, p in [*web, (BULK_HOST, bulk_port)]:
        wait_port(h, p)
    yield web, (BULK_HOST, bulk_port)


def start_proxy(procs: Processes, tmp: Path, name: str, web: list[tuple[str, int]],
                bulk: tuple[str, int], metrics_port: int = 0,
                ) -> tuple[subprocess.Popen[bytes], str, int, int]:
    """``metrics_port``: a pylvs proxy also serves ``/metrics`` on 127.0.0.1:PORT."""
    vip = VIPS[name]
    web_port, bulk_port = free_port(vip), free_port(vip)
    if name.startswith("pylvs"):
        env_src = str(HERE.parent / "src")
        argv = [PY, str(HERE / "_proxy_pylvs.py"),
                f"{vip}:{web_port}=" + ",".join(f"{h}:{p}" for h, p in web),
                f"{vip}:{bulk_port}={bulk[0]}:{bulk[1]}"]
        os.environ["PYTHONPATH"] = env_src + os.pathsep + os.environ.get("PYTHONPATH", "")
        if name == "pylvs-userspace":
            argv.append("--no-sockmap")
        if metrics_port:
            argv += ["--metrics-address", f"127.0.0.1:{metrics_port}"]
    elif name == "haproxy":
        conf = tmp / "haproxy.cfg"
        conf.write_text(haproxy_conf(vip, web_port, bulk_port, web, bulk))
        argv = ["haproxy", "-db", "-f", str(conf)]
    else:
        conf = tmp / "stream.conf"
        conf.write_text(nginx_stream_conf(tmp, vip, web_port, bulk_port, web, bulk))
        argv = ["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"]
    p = procs.start(name, argv, PROXY_CPU, tmp / f"{name}{'-scraped' if metrics_port else ''}.out")
    wait_port(vip, web_port)
    wait_port(vip, bulk_port)
    if metrics_port:
        wait_port("127.0.0.1", metrics_port)
    return p, vip, web_port, bulk_port


def measure(name: str, host: str, web_port: int, bulk: tuple[str, int], duration: int,
            bulk_size: int, sid: int | None) -> Result:
    """One round for one proxy; ``sid`` is its session, for CPU accounting (None: direct)."""
    r = Result(name)
    url = f"http://{host}:{web_port}/"
    run_wrk(url, 1, close=False)  # warm-up: caches, first connections

    def cpu() -> tuple[float, float]:
        return session_cpu(sid) if sid is not None else (0.0, 0.0)

    (u0, s0), m0 = cpu(), machine_cpu()
    ka = run_wrk(url, duration, close=False)
    (u1, s1), m1 = cpu(), machine_cpu()
    close = run_wrk(url, duration, close=True)
    (u2, s2), m2 = cpu(), machine_cpu()
    r.ka_machine_us = (m1 - m0) * 1e6 / ka.requests if ka.requests else 0.0
    r.close_machine_us = (m2 - m1) * 1e6 / close.requests if close.requests else 0.0
    r.bulk_mbps, errs = run_bulk(bulk[0], bulk[1], bulk_size)
    (u3, s3) = cpu()
    c0, c1, c2, c3 = u0 + s0, u1 + s1, u2 + s2, u3 + s3
    r.ka_rps, r.ka_p50_ms, r.ka_p99_ms = ka.rps, ka.p50_ms, ka.p99_ms
    r.close_rps, r.close_p50_ms, r.close_p99_ms = close.rps, close.p50_ms, close.p99_ms
    if sid is not None:
        r.ka_cpu_us = (c1 - c0) * 1e6 / ka.requests if ka.requests else 0.0
        r.close_cpu_us = (c2 - c1) * 1e6 / close.requests if close.requests else 0.0
        r.ka_user_us = (u1 - u0) * 1e6 / ka.requests if ka.requests else 0.0
        r.close_user_us = (u2 - u1) * 1e6 / close.requests if close.requests else 0.0
        r.bulk_cpu_ms_per_gb = (c3 - c2) * 1e3 / (bulk_size / (1 << 30)) if r.bulk_mbps else 0.0
    r.errors += [f"keep-alive: {e}" for e in ka.errors]
    r.errors += [f"close: {e}" for e in close.errors]
    r.errors += errs
    return r


def best(rounds: list[Result]) -> Result:
    """The best of several rounds, metric by metric: interleaved rounds on a busy machine each
    get disturbed at different moments, so the best figure is the least disturbed one."""
    ka = max(rounds, key=lambda r: r.ka_rps)
    cl = max(rounds, key=lambda r: r.close_rps)

    def low(values: list[float]) -> float:
        return min((v for v in values if v > 0), default=0.0)

    # The user part is taken from the same round as the lowest total, so the two add up.
    ka_cpu = min(rounds, key=lambda r: r.ka_cpu_us if r.ka_cpu_us > 0 else float("inf"))
    cl_cpu = min(rounds, key=lambda r: r.close_cpu_us if r.close_cpu_us > 0 else float("inf"))
    return Result(
        rounds[0].name,
        ka.ka_rps, ka.ka_p50_ms, ka.ka_p99_ms,
        cl.close_rps, cl.close_p50_ms, cl.close_p99_ms,
        max(r.bulk_mbps for r in rounds),
        ka_cpu_us=ka_cpu.ka_cpu_us,
        close_cpu_us=cl_cpu.close_cpu_us,
        ka_user_us=ka_cpu.ka_user_us,
        close_user_us=cl_cpu.close_user_us,
        bulk_cpu_ms_per_gb=low([r.bulk_cpu_ms_per_gb for r in rounds]),
        ka_machine_us=low([r.ka_machine_us for r in rounds]),
        close_machine_us=low([r.close_machine_us for r in rounds]),
        scrapes=sum(r.scrapes for r in rounds),
        scrape_ms=(sum(r.scrape_ms * r.scrapes for r in rounds)
                   / max(1, sum(r.scrapes for r in rounds))),
        errors=[e for r in rounds for e in r.errors],
    )


def ratio(x: float, ref: float) -> str:
    return f"{x / ref:.2f}x" if ref else "-"


def render(results: list[Result], loads: tuple[str, str], args: argparse.Namespace) -> None:
    ref = next((r for r in results if r.name == "haproxy"), None)
    t = Table(title=f"TCP proxies on loopback: wrk -t1 -c50 -d{args.duration}s, "
                    f"bulk {args.bulk_mb} MiB, best of {args.rounds} interleaved rounds; "
                    f"proxies+backends on CPU {PROXY_CPU}, load on CPU {LOAD_CPU}")
    for col in ("proxy", "keep-alive req/s", "vs HAProxy", "p50 ms", "p99 ms",
                "new-conn req/s", "vs HAProxy", "p50 ms", "p99 ms", "bulk MB/s", "vs HAProxy"):
        t.add_column(col, justify="left" if col == "proxy" else "right")
    for r in results:
        t.add_row(
            r.name,
            f"{r.ka_rps:,.0f}", ratio(r.ka_rps, ref.ka_rps) if ref else "-",
            f"{r.ka_p50_ms:.2f}", f"{r.ka_p99_ms:.2f}",
            f"{r.close_rps:,.0f}", ratio(r.close_rps, ref.close_rps) if ref else "-",
            f"{r.close_p50_ms:.2f}", f"{r.close_p99_ms:.2f}",
            f"{r.bulk_mbps:,.0f}" if r.bulk_mbps else "-",
            ratio(r.bulk_mbps, ref.bulk_mbps) if ref and r.bulk_mbps else "-",
        )
    console.print(t)
    c = Table(title="CPU time of each proxy's own processes per unit of work (lower is better; "
                    "steadier than the rates on a shared machine)")
    for col in ("proxy", "µs/req keep-alive", "of it user", "vs HAProxy", "µs/req new-conn",
                "of it user", "vs HAProxy", "ms/GB bulk", "vs HAProxy", "machine µs/req ka",
                "vs HAProxy", "machine µs/req new-conn", "vs HAProxy"):
        c.add_column(col, justify="left" if col == "proxy" else "right",
                     min_width=max(len(r.name) for r in results) if col == "proxy" else None)

    def inv(x: float, ref_x: float) -> str:
        # HAProxy's cost over ours: above 1 means we spend less CPU than HAProxy.
        return f"{ref_x / x:.2f}x" if x and ref_x else "-"

    for r in results:
        if not r.ka_machine_us:
            continue
        c.add_row(
            r.name,
            f"{r.ka_cpu_us:.1f}", f"{r.ka_user_us:.1f}",
            inv(r.ka_cpu_us, ref.ka_cpu_us) if ref else "-",
            f"{r.close_cpu_us:.1f}", f"{r.close_user_us:.1f}",
            inv(r.close_cpu_us, ref.close_cpu_us) if ref else "-",
            f"{r.bulk_cpu_ms_per_gb:.0f}",
            inv(r.bulk_cpu_ms_per_gb, ref.bulk_cpu_ms_per_gb) if ref else "-",
            f"{r.ka_machine_us:.1f}", inv(r.ka_machine_us, ref.ka_machine_us) if ref else "-",
            f"{r.close_machine_us:.1f}",
            inv(r.close_machine_us, ref.close_machine_us) if ref else "-",
        )
    console.print(c)
    console.print("vs HAProxy in the CPU table is HAProxy's cost divided by ours (higher is "
                  "better); \"of it user\" is the user-space part, the rest is kernel time. "
                  "\"machine\" columns: both CPUs, every process and kernel thread, per request "
                  "(wrk and backends included, alike for all rows). pylvs hands long-lived "
                  "connections to an in-kernel relay, whose work runs in kernel threads and "
                  "softirq, not in its process: compare it on the machine columns. "
                  "pylvs-userspace is the same proxy with that relay off (PYLVS_PROXY_SOCKMAP=0).")
    for r in results:
        if r.name.endswith(SCRAPED):
            console.print(f"{r.name}: /metrics scraped {r.scrapes} times every {args.scrape:g} s "
                          f"over {args.rounds} round(s), mean scrape {r.scrape_ms:.2f} ms "
                          f"(compare with the {r.name.removesuffix(SCRAPED)} row)")
    console.print(f"load average before: {loads[0]}   after: {loads[1]}  "
                  "(a shared machine: other work on these CPUs skews every row)")
    for r in results:
        for e in r.errors:
            console.print(f"[yellow]{r.name}: {e}[/yellow]")


def missing_tools() -> list[str]:
    need = ["taskset", "wrk", "nginx", "haproxy"]
    miss = [t for t in need if shutil.which(t) is None]
    if not Path(STREAM_MODULE).exists():
        miss.append("libnginx-mod-stream")
    return miss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (1-60)")
    ap.add_argument("--bulk-mb", type=int, default=1024, help="MiB per bulk stream (1-8192)")
    ap.add_argument("--only", default="direct,pylvs,pylvs-userspace,haproxy,nginx-stream",
                    help="comma-separated subset of direct,pylvs,pylvs-userspace,haproxy,"
                    "nginx-stream")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (1-5)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--scrape", type=float, metavar="SECONDS",
                    help="also run each pylvs row as NAME+scrape: metrics served on 127.0.0.1 "
                    "and /metrics fetched every SECONDS (0.1-60) during the measurement")
    args = ap.parse_args(argv)
    if not 1 <= args.duration <= 60 or not 1 <= args.bulk_mb <= 8192 or not 1 <= args.rounds <= 5:
        ap.error("--duration must be 1-60 s, --bulk-mb 1-8192 and --rounds 1-5")
    if args.scrape is not None and not 0.1 <= args.scrape <= 60:
        ap.error("--scrape must be 0.1-60 s")
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {"direct", *VIPS}
    if unknown:
        ap.error(f"unknown proxy name(s): {', '.join(sorted(unknown))}")
    if args.scrape is not None:
        names = [m for n in names for m in ((n, n + SCRAPED) if n.startswith("pylvs") else (n,))]
        if not any(n.endswith(SCRAPED) for n in names):
            ap.error("--scrape needs a pylvs row in --only")
    miss = missing_tools()
    if miss:
        print(f"bench_proxy: missing {', '.join(miss)} (make sysdeps-bench installs them)",
              file=sys.stderr)
        return 1
    if (os.cpu_count() or 1) < 2:
        print("bench_proxy: needs two CPUs (proxy on 0, load on 1)", file=sys.stderr)
        return 1
    bulk_size = args.bulk_mb << 20
    results: list[Result] = []
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="pylvs-bench-proxy-") as d:
        tmp = Path(d)
        try:
            with backends(procs, tmp, bulk_size) as (web, bulk):
                rounds: dict[str, list[Result]] = {n: [] for n in names}
                for rnd in range(args.rounds):
                    for name in names:
                        console.print(f"round {rnd + 1}: [bold]{name}[/bold] ...")
                        if name == "direct":
                            host, port = web[0]
                            rounds[name].append(measure(name, host, port, bulk, args.duration,
                                                        bulk_size, None))
                            continue
                        base = name.removesuffix(SCRAPED)
                        mport = free_port("127.0.0.1") if base != name else 0
                        p, vip, wp, bp = start_proxy(procs, tmp, base, web, bulk, mport)
                        try:
                            if not mport:
                                rounds[name].append(measure(name, vip, wp, (vip, bp),
                                                            args.duration, bulk_size, p.pid))
                                continue
                            with Scraper(f"http://127.0.0.1:{mport}/metrics",
                                         args.scrape) as sc:
                                r = measure(name, vip, wp, (vip, bp), args.duration, bulk_size,
                                            p.pid)
                            r.scrapes, r.scrape_ms = len(sc.times), sc.mean_ms()
                            r.errors += sc.errors
                            rounds[name].append(r)
                        finally:
                            procs.stop(p)
                results = [best(rounds[n]) for n in names]
        finally:
            procs.stop_all()
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    render(results, (load_before, load_after), args)
    if args.json:
        args.json.write_text(json.dumps(
            {"results": [r.__dict__ for r in results],
             "load_before": load_before, "load_after": load_after}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
