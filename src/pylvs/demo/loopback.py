"""The seed's cluster on loopback, with no privileges: two web servers, a director, real traffic.

What this shows: the seed's ipvsadm commands, typed through ``pylvsadm`` against a running
``pylvsd`` with the proxy data plane; 100 requests to the VIP alternating "this is nginx1" /
"this is nginx2" under rr; the counters; then ``-E ... -s wrr`` and ``-e ... -w 3`` and the new 1:3
distribution. Addresses mirror the seed's (.100 VIP, .10/.20 real servers) inside 127.0.0.0/8.

What this is not: direct routing. On loopback the proxy data plane forwards every method as
full NAT at the socket level; the namespace lab demo shows DR, NAT and TUN with real packets.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

VIP = "127.0.0.100"
RS = (("127.0.0.10", "this is nginx1"), ("127.0.0.20", "this is nginx2"))
REQUESTS = 100

console = Console(highlight=False)


def _free_port(addrs: list[str], preferred: int) -> int:
    """``preferred`` if every address can bind it, else a port that all of them can."""
    candidates = [preferred] + [0] * 20
    for cand in candidates:
        port = cand
        socks: list[socket.socket] = []
        try:
            for a in addrs:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                socks.append(s)
                s.bind((a, port))
                port = s.getsockname()[1]
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port on loopback")


class _Backend(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    body = b""


class _Handler(BaseHTTPRequestHandler):
    server: _Backend

    def do_GET(self) -> None:
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def backends(port: int) -> Iterator[None]:
    servers = []
    try:
        for addr, text in RS:
            srv = _Backend((addr, port), _Handler)
            srv.body = (text + "\n").encode()
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            servers.append(srv)
        yield
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


@contextlib.contextmanager
def director(sock: str) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYLVS_CONTROL_SOCKET=sock)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylvs.director.main", "--control-socket", sock,
         "--dataplane", "proxy", "--log-level", "warning"],
        env=env,
    )
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the director did not start")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def pylvsadm(sock: str, cmdline: str) -> str:
    """Run one pylvsadm command line as an operator would, echoing it and its output."""
    console.print(f"[bold green]$[/] [bold]{cmdline}[/]")
    argv = shlex.split(cmdline)
    assert argv[0] == "pylvsadm"
    res = subprocess.run(
        [sys.executable, "-m", "pylvs.cli.ipvsadm", *argv[1:]],
        env=dict(os.environ, PYLVS_CONTROL_SOCKET=sock),
        capture_output=True, text=True, timeout=30,
    )
    if res.stdout:
        console.print(res.stdout, end="", markup=False)
    if res.stderr:
        console.print(res.stderr, end="", style="red", markup=False)
    if res.returncode:
        raise RuntimeError(f"{cmdline!r} failed with exit code {res.returncode}")
    return res.stdout


def traffic(port: int, n: int = REQUESTS) -> Counter[str]:
    """``n`` requests to the VIP, each on a new connection (as ``curl`` would make them)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        conn = http.client.HTTPConnection(VIP, port, timeout=5)
        try:
            conn.request("GET", "/")
            seen[conn.getresponse().read().decode().strip()] += 1
        except OSError as exc:
            seen[f"error: {exc.__class__.__name__}"] += 1
        finally:
            conn.close()
    return seen


def show_distribution(title: str, seen: Counter[str]) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("answer")
    table.add_column("requests", justify="right")
    table.add_column("")
    total = sum(seen.values()) or 1
    for answer, count in sorted(seen.items()):
        table.add_row(answer, str(count), "[cyan]" + "█" * round(40 * count / total) + "[/]")
    console.print(table)


def main() -> int:
    port = _free_port([VIP, *(a for a, _ in RS)], 8080)
    vip = f"{VIP}:{port}"
    rs1, rs2 = (f"{a}:{port}" for a, _ in RS)
    console.print(Panel.fit(
        "[bold]pylvs loopback demo[/]: the seed's LVS cluster on 127.0.0.0/8\n"
        f"client -> VIP {vip} (pylvsd, proxy data plane) -> RS1 {rs1} / RS2 {rs2}",
        border_style="blue",
    ))
    with tempfile.TemporaryDirectory(prefix="pylvs-demo-") as tmp, backends(port):
        sock = os.path.join(tmp, "pylvs.sock")
        with director(sock):
            console.rule("the seed's ipvsadm commands")
            pylvsadm(sock, f"pylvsadm -A -t {vip} -s rr")
            pylvsadm(sock, f"pylvsadm -a -t {vip} -r {rs1} -g")
            pylvsadm(sock, f"pylvsadm -a -t {vip} -r {rs2} -g")
            pylvsadm(sock, "pylvsadm -ln")
            console.rule(f"{REQUESTS} requests to http://{vip}/ (rr)")
            rr = traffic(port)
            show_distribution("rr: one new connection per request", rr)
            pylvsadm(sock, "pylvsadm -Ln --stats")
            console.rule("change the scheduler and a weight, live")
            pylvsadm(sock, f"pylvsadm -E -t {vip} -s wrr")
            pylvsadm(sock, f"pylvsadm -e -t {vip} -r {rs2} -w 3")
            pylvsadm(sock, "pylvsadm -Ln")
            wrr = traffic(port)
            show_distribution("wrr, RS2 weight 3", wrr)
            pylvsadm(sock, "pylvsadm -Sn")
    ok = rr.get("this is nginx1") == rr.get("this is nginx2") == REQUESTS // 2 and \
        wrr.get("this is nginx2") == 3 * REQUESTS // 4
    console.print(
        "[bold green]demo complete[/]: rr split 50/50, wrr 1:3" if ok
        else "[bold red]unexpected distribution[/]"
    )
    return 0 if ok else 1
