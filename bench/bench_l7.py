"""``make bench-l7``: ``pylvs http`` against nginx, same configuration file, same backends, same pinning.

What this is for: the layer-7 tier's two targets, measured in one run.

1. Throughput: ``wrk -t1 -c{C} -d{D}s --latency`` through each front end, for the seed's two kinds
   of request: ``/index.jsp`` proxied to the weighted upstream (2:1, keepalive pool) and
   ``/index.html`` served from the root. Each front end runs with one worker, pinned to CPU 0;
   wrk and the backends (one nginx with two ``server`` blocks answering "dynamic page 1"/"2")
   are pinned to CPU 1. Both front ends read the very same nginx.conf file, one after the other
   on the same port, in rounds that alternate who goes first; each keeps its best round.
   Each kind runs twice: as wrk sends it by default (one request head repeated on every
   connection) and with "heads vary" (a Lua script gives every request its own query string).
   ``pylvs http`` answers a head it has seen before on the same socket from what its first parse
   left (``l7.connection``), which nginx does not; the varied rows show the speed without that.
2. Integrity: a mixed load for ``--mixed`` seconds per front end (small and 1 MiB static files,
   sized and chunked downloads, chunked and sized uploads echoed back, keep-alive runs of 1-20
   requests per connection) from an asyncio client that compares every body byte for byte.
   The backends here are two ``pylvs http-app`` processes (nginx's ``return`` cannot echo).
   Target: no request lost or corrupted.

What this is not for: pass/fail in CI. The machine is shared: the load average is printed
before and after, and numbers taken while others work are noisy. Every run is bounded in time
and request count; every process started here is stopped here, by PID.

    python bench/bench_l7.py [--duration 8] [--rounds 3] [--connections 50] [--mixed 10]
                             [--update BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
from rich.console import Console
from rich.table import Table

from pylvs.l7.app import pattern_body

PY = sys.executable
FRONT_CPU = "0"
LOAD_CPU = "1"
console = Console()

FRONT_CONF = """\
# The same file runs under nginx and under pylvs http.
worker_processes 1;
pid {tmp}/front.pid;
error_log {tmp}/error.log error;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_timeout 65;
    keepalive_requests 100000;
    upstream tomcat {{
        server 127.0.0.1:{app1} weight=2;
        server 127.0.0.1:{app2} weight=1;
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {tmp}/html;
        index index.html;
        location ~ .*.jsp$ {{
            proxy_pass http://tomcat;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header HOST $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""

BACKEND_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/backend.pid;
error_log {tmp}/backend-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/bbody;
    proxy_temp_path {tmp}/bproxy;
    fastcgi_temp_path {tmp}/bfastcgi;
    uwsgi_temp_path {tmp}/buwsgi;
    scgi_temp_path {tmp}/bscgi;
    keepalive_requests 100000;
    server {{ listen 127.0.0.1:{app1}; location / {{ default_type text/plain; return 200 "dynamic page 1\\n"; }} }}
    server {{ listen 127.0.0.1:{app2}; location / {{ default_type text/plain; return 200 "dynamic page 2\\n"; }} }}
}}
"""


@dataclass
class WrkResult:
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: str = ""
    requests: int = 0
    cpu_us_per_req: float = 0.0  # CPU time the front end spent per request (all its processes)


def session_cpu_seconds(sid: int) -> float:
    """user+system CPU of every process in session ``sid`` (nginx's master and worker)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class MixedResult:
    requests: int = 0
    bytes: int = 0
    bad: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def wait_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            return
        time.sleep(0.05)


@contextlib.contextmanager
def process(argv: list[str], log: Path, cpu: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as f:
        proc = subprocess.Popen(["taskset", "-c", cpu, *argv], stdout=f, stderr=f,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def front_argv(name: str, conf: Path, tmp: Path) -> list[str]:
    if name == "nginx":
        return ["nginx", "-g", "daemon off;", "-p", str(tmp), "-c", str(conf)]
    return [PY, "-m", "pylvs.cli.main", "http", "-c", str(conf)]


# Every request a new query string, so no two request heads are alike: what a front end gains
# from clients repeating one head (wrk's default, pollers, keep-alive API clients) is not in it.
VARY_LUA = """\
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, wrk.path .. "?v=" .. n)
end
"""

# (label, path, heads vary): the seed's two kinds of request, each as wrk sends it by default
# (one head repeated) and with every head different
REQUESTS = (("proxy *.jsp", "/index.jsp", False), ("static", "/index.html", False),
            ("proxy *.jsp, heads vary", "/index.jsp", True),
            ("static, heads vary", "/index.html", True))


def run_wrk(url: str, duration: int, connections: int, script: Path | None = None) -> WrkResult:
    extra = ["-s", str(script)] if script is not None else []
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "--timeout", "5s", "--latency", *extra, url],
        capture_output=True, text=True, timeout=duration + 60).stdout
    res = WrkResult()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res.rps = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res.requests = int(m.group(1)) if m else 0
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
            setattr(res, attr, float(m.group(1)) * scale)
    errs = []
    m = re.search(r"Socket errors: (.*)", out)
    if m:
        errs.append(m.group(1).strip())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs.append(f"non-2xx {m.group(1)}")
    res.errors = "; ".join(errs)
    return res


# -- the mixed-load integrity client ------------------------------------------------------------


class _Resp:
    def __init__(self) -> None:
        self.status = 0
        self.body = bytearray()
        self.done = False
        self.close = False


class _Reader:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.resp = _Resp()

    def on_body(self, data: bytes) -> None:
        self.resp.body += data

    def on_headers_complete(self) -> None:
        self.resp.status = self.parser.get_status_code()
        self.resp.close = not self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.resp.done = True


def _chunked(body: bytes, rnd: random.Random) -> bytes:
    out = []
    i = 0
    while i < len(body):
        n = rnd.randint(1, 40000)
        piece = body[i:i + n]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        i += n
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def _pick(rnd: random.Random, statics: dict[str, bytes]) -> tuple[bytes, set[bytes]]:
    """A request and the bodies that are a correct answer to it."""
    kind = rnd.randrange(7)
    if kind == 0:
        return b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n", {statics["index.html"]}
    if kind == 1:
        return b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n", {statics["big.bin"]}
    if kind == 2:
        return (b"GET /index.jsp HTTP/1.1\r\nHost: localhost\r\n\r\n",
                {b"dynamic page 1\n", b"dynamic page 2\n"})
    if kind in (3, 4):
        n = rnd.randint(0, 300_000)
        ch = b"&chunked=1" if kind == 4 else b""
        return (b"GET /d.jsp?size=%d%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % (n, ch),
                {pattern_body(n)})
    body = rnd.randbytes(rnd.randint(1, 200_000))
    if kind == 5:
        return (b"POST /e.jsp?echo=body HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n" + _chunked(body, rnd), {body})
    return (b"POST /e.jsp?echo=body HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
            % len(body) + body, {body})


async def _mixed_conn(port: int, deadline: float, rnd: random.Random, statics: dict[str, bytes],
                      res: MixedResult, budget: list[int]) -> None:
    while time.monotonic() < deadline and budget[0] > 0:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError) as e:
            res.lost += 1
            res.notes.append(f"connect: {e!r}")
            await asyncio.sleep(0.1)
            continue
        try:
            for _ in range(rnd.randint(1, 20)):
                if time.monotonic() >= deadline or budget[0] <= 0:
                    break
                budget[0] -= 1
                req, good = _pick(rnd, statics)
                writer.write(req)
                rd = _Reader()
                while not rd.resp.done:
                    data = await asyncio.wait_for(reader.read(262144), 15)
                    if not data:
                        break
                    rd.parser.feed_data(data)
                res.requests += 1
                if not rd.resp.done:
                    res.lost += 1
                    res.notes.append(f"no complete answer to {req[:40]!r}")
                    break
                if rd.resp.status != 200 or bytes(rd.resp.body) not in good:
                    res.bad += 1
                    res.notes.append(f"{req[:40]!r}: status {rd.resp.status}, "
                                     f"{len(rd.resp.body)} bytes, sha256 "
                                     f"{hashlib.sha256(rd.resp.body).hexdigest()[:12]}")
                res.bytes += len(rd.resp.body)
                if rd.resp.close:
                    break
        except (OSError, TimeoutError, httptools.HttpParserError) as e:
            res.lost += 1
            res.notes.append(f"{e!r}")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def mixed_load(port: int, seconds: float, statics: dict[str, bytes], conns: int = 8,
                     max_requests: int = 200_000) -> MixedResult:
    res = MixedResult()
    deadline = time.monotonic() + seconds
    budget = [max_requests]
    await asyncio.gather(*(_mixed_conn(port, deadline, random.Random(i), statics, res, budget)
                           for i in range(conns)))
    return res


# -- the run ------------------------------------------------------------------------------------


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; best of each kept")
    ap.add_argument("--mixed", type=float, default=10.0, help="seconds of mixed load per front end")
    ap.add_argument("--update", metavar="FILE", help="replace this bench's section of FILE (markdown)")
    args = ap.parse_args()
    missing = [t for t in ("nginx", "wrk", "taskset") if shutil.which(t) is None]
    if missing:
        console.print(f"bench-l7 needs {', '.join(missing)}: run `make sysdeps-bench` (Debian "
                      "nginx-light, wrk, util-linux)")
        return 1
    if (os.cpu_count() or 1) < 2:
        console.print("bench-l7 pins front end and load to two CPUs; this machine has one")
        return 1
    load_before = loadavg()
    with tempfile.TemporaryDirectory(prefix="bench-l7-") as d:
        tmp = Path(d)
        tmp.chmod(0o755)  # nginx's workers run as www-data: they must reach the root and files
        html = tmp / "html"
        html.mkdir()
        html.chmod(0o755)
        statics = {"index.html": b"this is nginx1\n", "big.bin": random.Random(7).randbytes(1 << 20)}
        for name, data in statics.items():
            (html / name).write_bytes(data)
            (html / name).chmod(0o644)
        port, app1, app2 = free_port(), free_port(), free_port()
        vary = tmp / "vary.lua"
        vary.write_text(VARY_LUA)
        conf = tmp / "nginx.conf"
        conf.write_text(FRONT_CONF.format(tmp=tmp, port=port, app1=app1, app2=app2))
        (tmp / "backend.conf").write_text(BACKEND_CONF.format(tmp=tmp, app1=app1, app2=app2))
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            for sd in (tmp / sub, tmp / f"b{sub}"):
                sd.mkdir()
                sd.chmod(0o777)
        throughput: dict[str, dict[str, WrkResult]] = {"nginx": {}, "pylvs": {}}
        with process(["nginx", "-p", str(tmp), "-c", str(tmp / "backend.conf")],
                     tmp / "backend.log", LOAD_CPU):
            wait_port(app1)
            wait_port(app2)
            # Rounds alternate which front end goes first; each keeps its best round, the one
            # least disturbed by the rest of the machine.
            for rnd in range(args.rounds):
                order = ("nginx", "pylvs") if rnd % 2 == 0 else ("pylvs", "nginx")
                for name in order:
                    argv = front_argv(name, conf, tmp)
                    with process(argv, tmp / f"{name}.log", FRONT_CPU) as front:
                        wait_port(port)
                        for label, path, varied in REQUESTS:
                            script = vary if varied else None
                            url = f"http://127.0.0.1:{port}{path}"
                            run_wrk(url, 1, args.connections, script)  # warm-up
                            cpu0 = session_cpu_seconds(front.pid)
                            r = run_wrk(url, args.duration, args.connections, script)
                            cpu = session_cpu_seconds(front.pid) - cpu0
                            r.cpu_us_per_req = cpu * 1e6 / r.requests if r.requests else 0.0
                            best = throughput[name].get(label)
                            if best is not None:
                                # CPU per request: the least disturbed round, like req/s
                                least = min(best.cpu_us_per_req, r.cpu_us_per_req)
                                best.cpu_us_per_req = r.cpu_us_per_req = least
                            if best is None or r.rps > best.rps:
                                throughput[name][label] = r
                    wait_closed(port)
        mixed: dict[str, MixedResult] = {}
        apps = [[PY, "-m", "pylvs.cli.main", "http-app", "--listen", f"127.0.0.1:{app1}", "--page", "1"],
                [PY, "-m", "pylvs.cli.main", "http-app", "--listen", f"127.0.0.1:{app2}", "--page", "2"]]
        with process(apps[0], tmp / "app1.log", LOAD_CPU), process(apps[1], tmp / "app2.log", LOAD_CPU):
            wait_port(app1)
            wait_port(app2)
            for name in ("nginx", "pylvs"):
                with process(front_argv(name, conf, tmp), tmp / f"{name}.log", FRONT_CPU):
                    wait_port(port)
                    mixed[name] = asyncio.run(mixed_load(port, args.mixed, statics))
                wait_closed(port)
        pylvs_log = (tmp / "pylvs.log").read_text(errors="replace")
    load_after = loadavg()
    report = render(throughput, mixed, args, load_before, load_after)
    if pylvs_log.strip():
        console.print("[yellow]pylvs http printed:[/yellow]\n" + pylvs_log[-2000:])
    if args.update:
        update_section(Path(args.update), report)
        console.print(f"results written to {args.update}")
    ok = all(m.bad == 0 and m.lost == 0 for m in mixed.values())
    return 0 if ok else 1


def render(throughput: dict[str, dict[str, WrkResult]], mixed: dict[str, MixedResult],
           args: argparse.Namespace, load_before: str, load_after: str) -> str:
    table = Table(title=f"pylvs http vs nginx, one worker each, wrk -t1 -c{args.connections} "
                        f"-d{args.duration}s, best of {args.rounds} alternating rounds "
                        f"(front CPU {FRONT_CPU}, load+backends CPU {LOAD_CPU})")
    for col in ("request", "server", "req/s", "p50 ms", "p99 ms", "CPU us/req", "errors",
                "req/s pylvs/nginx", "CPU/req nginx/pylvs"):
        table.add_column(col)
    md = [f"wrk -t1 -c{args.connections} -d{args.duration}s, best of {args.rounds} alternating "
          f"rounds; front end on CPU {FRONT_CPU}, wrk and backends on CPU {LOAD_CPU}. "
          "CPU us/req is the front end's own user+system time per request (all its processes), "
          "lowest of the rounds: the figure least disturbed by other load on the machine.", "",
          "| request | server | req/s | p50 ms | p99 ms | CPU us/req | errors | req/s pylvs/nginx "
          "| CPU/req nginx/pylvs |",
          "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for label, _path, _varied in REQUESTS:
        base = throughput["nginx"][label]
        for name in ("nginx", "pylvs"):
            r = throughput[name][label]
            ratio = f"{r.rps / base.rps:.2f}x" if name == "pylvs" and base.rps else ""
            eff = (f"{base.cpu_us_per_req / r.cpu_us_per_req:.2f}x"
                   if name == "pylvs" and r.cpu_us_per_req else "")
            row = [label, name, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
                   f"{r.cpu_us_per_req:.0f}", r.errors or "-", ratio, eff]
            table.add_row(*row)
            md.append("| " + " | ".join(row) + " |")
    console.print(table)
    t2 = Table(title=f"mixed load, {args.mixed:.0f} s per front end, every body compared byte for byte")
    for col in ("server", "requests", "MiB", "corrupted", "lost"):
        t2.add_column(col)
    md += ["", "| mixed load | requests | MiB | corrupted | lost |", "|---|---:|---:|---:|---:|"]
    for name, m in mixed.items():
        row = [name, str(m.requests), f"{m.bytes / 2**20:.0f}", str(m.bad), str(m.lost)]
        t2.add_row(*row)
        md.append("| " + " | ".join(row) + " |")
        for note in m.notes[:5]:
            console.print(f"  {name}: {note}")
    console.print(t2)
    console.print(f"load average before {load_before}, after {load_after}")
    md.append("")
    md.append(f"Load average before {load_before}, after {load_after} (shared machine: noisy).")
    return "\n".join(md)


MARK_BEGIN = "<!-- bench-l7:begin -->"
MARK_END = "<!-- bench-l7:end -->"


def update_section(path: Path, body: str) -> None:
    section = (f"{MARK_BEGIN}\n## Layer 7: pylvs http vs nginx (`make bench-l7`)\n\n"
               f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n{body}\n{MARK_END}")
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_BEGIN in text and MARK_END in text:
        pre, rest = text.split(MARK_BEGIN, 1)
        post = rest.split(MARK_END, 1)[1]
        text = pre + section + post
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
