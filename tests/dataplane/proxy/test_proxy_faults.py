"""Faults the proxy plane must survive, with real processes: ``pylvsd`` (proxy data plane, timeouts
from ``PYLVS_PROXY_TIMEOUTS``), ``pylvsadm`` and real servers that are separate processes, one of
which is stopped with SIGSTOP (it still completes handshakes into its accept queue, and never
answers).

- a hung server: under a bounded client load, once the timeouts have acted every request is
  served by the healthy server (connect-level redispatch) and the hung server holds no more than
  its accept queue;
- idle clients: they are closed after the client timeout, so they cannot keep the relay limit
  exhausted; a client that arrives at the limit waits in the queue and is served;
- ``pylvsadm -Lnc`` lists every open relay with its state and an expiry within the timeout.

Every process started here is stopped here, by PID, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pylvs.control.client import ControlClient

BIN = Path(sys.executable).parent
SERVER = r"""
import socket, sys, threading
name, host, backlog = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, 0))
s.listen(backlog)
print(s.getsockname()[1], flush=True)
def handle(c):
    with c:
        buf = b""
        while True:
            data = c.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                _, buf = buf.split(b"\n", 1)
                c.sendall(name + b"\n")
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def vip_for(test: str) -> str:
    """A VIP of its own per test (and per run), so parallel runs do not meet."""
    n = (os.getpid() + sum(map(ord, test))) % 200
    return f"127.0.{150 + n % 50}.{10 + n // 50}"


@dataclass
class Cluster:
    vip: str
    port: int
    sock: str
    procs: dict[str, subprocess.Popen[bytes]]

    def adm(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN / "pylvsadm"), *args], capture_output=True, timeout=20,
            env={**os.environ, "PYLVS_CONTROL_SOCKET": self.sock}, check=True,
        )
        return out.stdout.decode()

    def status(self) -> dict[str, object]:
        with ControlClient(self.sock) as c:
            counters: dict[str, object] = c.status()["dataplane"]["counters"]
            return counters

    def entries(self) -> list[tuple[str, int, str]]:
        """``-Lnc`` rows as (state, expiry in seconds, destination)."""
        rows = []
        for line in self.adm("-Lnc").splitlines()[2:]:
            m = re.match(r"TCP (\d\d):(\d\d)\s+(\S+)\s+\S+\s+\S+\s+(\S+)", line)
            assert m, line
            rows.append((m[3], int(m[1]) * 60 + int(m[2]), m[4]))
        return rows


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@contextlib.contextmanager
def cluster(test: str, timeouts: str, backlogs: dict[str, int]) -> Iterator[Cluster]:
    """pylvsd with the proxy plane and one rr service over real servers named by ``backlogs``."""
    vip = vip_for(test)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with tempfile.TemporaryDirectory(prefix="pylvs-faults-") as tmp:
        sock = f"{tmp}/ctl.sock"
        try:
            ports = {}
            for i, (name, backlog) in enumerate(backlogs.items()):
                host = f"127.0.{150 + i}.250"
                p = subprocess.Popen(
                    [sys.executable, "-c", SERVER, name, host, str(backlog)],
                    stdout=subprocess.PIPE,
                )
                procs[name] = p
                assert p.stdout is not None
                ports[name] = (host, int(p.stdout.readline()))
            env = {**os.environ, "PYLVS_PROXY_TIMEOUTS": timeouts}
            procs["pylvsd"] = subprocess.Popen(
                [str(BIN / "pylvsd"), "--control-socket", sock, "--dataplane", "proxy",
                 "--log-level", "warning"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 20
            while not os.path.exists(sock):
                assert procs["pylvsd"].poll() is None, procs["pylvsd"].stderr
                assert time.monotonic() < deadline, "pylvsd did not start"
                time.sleep(0.05)
            c = Cluster(vip, free_port(vip), sock, procs)
            c.adm("-A", "-t", f"{vip}:{c.port}", "-s", "rr")
            for host, port in ports.values():
                c.adm("-a", "-t", f"{vip}:{c.port}", "-r", f"{host}:{port}", "-m")
            deadline = time.monotonic() + 10
            while True:  # the listener follows the table at once; wait until it answers
                with contextlib.suppress(OSError), socket.create_connection((vip, c.port), 1):
                    break
                assert time.monotonic() < deadline, "the VIP never listened"
                time.sleep(0.05)
            yield c
        finally:
            for p in procs.values():
                _stop(p)


def request(vip: str, port: int, timeout: float) -> str | None:
    """One request on its own connection: the answering server's name, or None."""
    try:
        with socket.create_connection((vip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"hello\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(100)
                if not chunk:
                    return None
                data += chunk
            return data.decode().strip()
    except OSError:
        return None


def test_a_hung_server_does_not_take_the_service_down() -> None:
    """B's accept queue is small (4): once full, connects to B time out and go to A."""
    with cluster("hung", "connect=0.5 server=1 client=5 maxconn=64", {"A": 128, "B": 4}) as c:
        os.kill(c.procs["B"].pid, signal.SIGSTOP)
        results: list[tuple[float, str | None]] = []
        lock = threading.Lock()
        start = time.monotonic()
        stop_at = start + 6.0
        seen_entries: list[list[tuple[str, int, str]]] = []

        def worker() -> None:
            while time.monotonic() < stop_at:
                t = time.monotonic() - start
                got = request(c.vip, c.port, 4.0)
                with lock:
                    results.append((t, got))

        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.8)  # B's accept queue is full by now, its relays wait for the server timeout
        seen_entries.append(c.entries())
        for t in threads:
            t.join(20)
        counters = c.status()

        early = [got for t, got in results if t < 2.0]
        late = [got for t, got in results if t >= 2.0]
        served = sum(1 for _, got in results if got == "A")
        print(f"\nhung server: {served} requests served by A in 6 s, {len(results) - served} "
              f"failed (all started before 2 s: {len(early)} requests then); counters {counters}")
        assert late and all(got == "A" for got in late), late
        assert served >= 50
        assert not any(got == "B" for _, got in results)
        # What failed is what landed in B's accept queue before the server timeout closed it.
        assert len(results) - served <= 4 + 2 + 16
        assert counters["timed_out_server"] >= 1
        assert counters["retried"] >= 1
        # -Lnc listed B's relays while they waited, with an expiry within the server timeout.
        (rows,) = seen_entries
        b_rows = [r for r in rows if r[0] == "ESTABLISHED" and r[2].startswith("127.0.151.")]
        assert b_rows and all(exp <= 3 for _, exp, _ in b_rows), rows


def test_idle_clients_are_closed_and_cannot_exhaust_the_relay_limit() -> None:
    with cluster("idle", "client=1.5 maxconn=20 queue=4", {"A": 128, "B": 128}) as c:
        idle = [socket.create_connection((c.vip, c.port), timeout=5) for _ in range(20)]
        try:
            deadline = time.monotonic() + 5
            while c.status()["tcp_relays"] != 20:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            # Every open relay is listed, expiring with the relay: housekeeping (once a second)
            # sets each entry's timer, so a busy machine may need a tick before it shows.
            while True:
                rows = c.entries()
                established = [r for r in rows if r[0] == "ESTABLISHED"]
                assert len(established) == 20, rows
                if all(exp <= 3 for _, exp, _ in established):
                    break
                assert time.monotonic() < deadline + 2, rows
                time.sleep(0.1)
            # The limit is reached: this client waits in the queue until the idle ones are gone.
            t0 = time.monotonic()
            assert request(c.vip, c.port, 10.0) in ("A", "B")
            waited = time.monotonic() - t0
            assert 0.3 < waited < 4.5, waited
            for s in idle:  # closed by the proxy: end of stream, no data
                s.settimeout(5)
                assert s.recv(10) == b""
            counters = c.status()
            assert counters["timed_out_client"] >= 20
            assert counters["limit_reached"] >= 1
            assert counters["refused_limit"] == 0
            states = {state for state, _, _ in c.entries()}
            assert "ESTABLISHED" not in states
        finally:
            for s in idle:
                s.close()


def test_at_the_limit_a_client_that_waited_past_the_queue_is_refused_and_counted() -> None:
    with cluster("queue", "client=30 maxconn=4 queue=0.5", {"A": 128, "B": 128}) as c:
        held = [socket.create_connection((c.vip, c.port), timeout=5) for _ in range(4)]
        try:
            deadline = time.monotonic() + 5
            while c.status()["tcp_relays"] != 4:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            t0 = time.monotonic()
            with socket.create_connection((c.vip, c.port), timeout=5) as s:
                s.sendall(b"hello\n")
                with pytest.raises(ConnectionResetError):
                    s.recv(10)
            assert time.monotonic() - t0 < 3
            counters = c.status()
            assert counters["refused_limit"] == 1 and counters["tcp_relays"] == 4
            held.pop().close()
            assert request(c.vip, c.port, 5.0) in ("A", "B")  # room again: served at once
        finally:
            for s in held:
                s.close()


def test_a_hung_server_with_a_deep_accept_queue_holds_no_more_than_its_share() -> None:
    """B's accept queue takes every connection (1024): rr keeps sending B half the clients until
    B holds its share of the relay limit (32 of 64); the rest go to A, and the server timeout
    frees B's relays each second. A serves all along, from the first second; nothing piles up."""
    with cluster("deep", "connect=0.5 server=1 client=5 maxconn=64", {"A": 128, "B": 1024}) as c:
        os.kill(c.procs["B"].pid, signal.SIGSTOP)
        results: list[tuple[float, str | None]] = []
        lock = threading.Lock()
        start = time.monotonic()
        stop_at = start + 6.0
        peak = 0

        def worker() -> None:
            while time.monotonic() < stop_at:
                t = time.monotonic() - start
                got = request(c.vip, c.port, 4.0)
                with lock:
                    results.append((t, got))

        threads = [threading.Thread(target=worker) for _ in range(48)]
        for t in threads:
            t.start()
        while time.monotonic() < stop_at:
            peak = max(peak, int(c.status()["tcp_relays"]))  # type: ignore[call-overload]
            time.sleep(0.2)
        for t in threads:
            t.join(20)
        counters = c.status()
        served = sum(1 for _, got in results if got == "A")
        print(f"\nhung server, deep queue: {served} requests served by A in 6 s, "
              f"{len(results) - served} failed, peak relays {peak}; counters {counters}")
        per_second = [
            sum(1 for t, got in results if s <= t < s + 1 and got == "A") for s in range(6)
        ]
        print(f"served by A per second: {per_second}")
        # A answered in every second of the run, the first too: B's share holds from the start,
        # not from the first housekeeping tick (a loaded machine once saw all 48 clients on B
        # until then and nothing served for a second).
        assert all(per_second), per_second
        assert not any(got == "B" for _, got in results)
        assert served >= 100
        assert peak <= 64
        assert counters["timed_out_server"] >= 1
