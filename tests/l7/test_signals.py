"""``pylvs http``'s master under nginx's signals, with a client load running: HUP replaces the
workers without a failed request (and a bad file keeps the old configuration), QUIT lets a slow
response finish, USR1 reopens the access log after a rename, TERM stops fast, USR2/WINCH are
logged and ignored, a SIGKILLed master takes its workers with it; ``-s`` through the pid file;
sd_notify's READY/RELOADING/STOPPING on a real datagram socket."""

from __future__ import annotations

import http.client as httpc
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.l7.proc import Http, alive, open_dir, pylvs_http

CONF = """
pid {pid};
worker_processes 2;
error_log {err} notice;
events {{}}
http {{
    access_log {tmp}/access.log;
    server {{
        listen 127.0.0.1:{port};
        location = /v {{ return 200 "{version} $pid\\n"; }}
        location /slow {{ proxy_pass http://127.0.0.1:{slow}; proxy_read_timeout 30s; }}
    }}
}}
"""


def _get(port: int, path: str = "/v", timeout: float = 10) -> tuple[int, bytes]:
    c = httpc.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Load:
    """A client loop (a new connection per request) counting answers and failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: set[bytes] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = _get(self.port)
                if status != 200:
                    self.failures.append(f"status {status}")
                else:
                    self.ok += 1
                    self.bodies.add(body.split()[0])
            except OSError as e:
                self.failures.append(repr(e))

    def stop(self) -> None:
        self._stop.set()
        self._t.join(15)


@pytest.fixture
def slow_upstream() -> Iterator[int]:
    """An upstream that answers after 1.5 s."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                c, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with c:
                c.recv(65536)
                time.sleep(1.5)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nslow\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    done.set()
    t.join(5)
    srv.close()


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    with open_dir() as d:
        yield d


@pytest.fixture
def http(open_tmp: Path, slow_upstream: int) -> Iterator[Http]:
    h = Http(open_tmp, CONF, "-g", "daemon off;", version="v1", slow=slow_upstream)
    try:
        h.ready()
        yield h
    finally:
        h.close()


def test_ready_and_pid_file(http: Http) -> None:
    assert int(http.pid_file.read_text()) == http.proc.pid
    assert len(http.workers()) == 2
    assert _get(http.port)[0] == 200


def test_hup_reloads_without_a_failed_request(http: Http) -> None:
    old = set(http.workers())
    load = Load(http.port)
    try:
        time.sleep(0.5)
        http.write(CONF.replace("{version}", "v2"))
        http.kill(signal.SIGHUP)
        assert http.notify.wait("RELOADING=1")
        deadline = time.monotonic() + 15
        while b"v2" not in load.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
        http.kill(signal.SIGHUP)  # a second reload under the same load
        time.sleep(1.0)
    finally:
        load.stop()
    assert load.failures == [] and load.ok > 20, (load.failures[:5], load.ok)
    assert b"v2" in load.bodies
    assert http.proc.poll() is None
    assert not set(http.workers()) & old
    assert all(not alive(p) for p in old)
    assert http.notify.wait("READY=1", n=3)  # start, then once after each reload
    msgs = [m.split("\n")[0] for m in http.notify.messages]
    assert msgs == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1"], msgs
    log = http.log()
    assert "signal 1 (SIGHUP) received from" in log and "reconfiguring" in log


def test_hup_with_a_bad_file_keeps_the_old_configuration(http: Http) -> None:
    workers = http.workers()
    http.conf.write_text(http.conf.read_text().replace("events {}", "events {}\nbogus 1;"))
    http.kill(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "[emerg]" not in http.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f'unknown directive "bogus" in {http.conf}:' in http.log()
    assert http.workers() == workers
    status, body = _get(http.port)
    assert status == 200 and body.startswith(b"v1")


def test_quit_lets_an_in_flight_response_finish(http: Http) -> None:
    result: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: result.append(_get(http.port, "/slow")))
    t.start()
    time.sleep(0.4)
    http.kill(signal.SIGQUIT)
    t.join(15)
    assert result == [(200, b"slow\n")]
    assert http.proc.wait(15) == 0
    assert http.notify.wait("STOPPING=1")
    assert not http.pid_file.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", http.port), timeout=2).close()
    assert "signal 3 (SIGQUIT) received from" in http.log()


def test_term_stops_fast_under_load(http: Http) -> None:
    workers = http.workers()
    load = Load(http.port)
    time.sleep(0.5)
    start = time.monotonic()
    http.kill(signal.SIGTERM)
    assert http.proc.wait(10) == 0
    load.stop()
    assert time.monotonic() - start < 3
    assert load.ok > 0
    assert all(not alive(p) for p in workers)


def test_usr1_reopens_the_access_log(http: Http) -> None:
    log = http.tmp / "access.log"
    assert _get(http.port)[0] == 200
    log.rename(http.tmp / "access.log.1")  # logrotate's rename, then its postrotate
    rc = pylvs_http("-c", str(http.conf), "-s", "reopen")
    assert rc.returncode == 0, rc.stderr
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # every worker reopens
    for _ in range(6):
        assert _get(http.port, "/v?after")[0] == 200
    time.sleep(0.3)
    assert "GET /v?after" in log.read_text()
    assert "GET /v?after" not in (http.tmp / "access.log.1").read_text()
    assert "reopening logs" in http.log()


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGWINCH, signal.SIGPIPE])
def test_unsupported_signals_are_logged_and_never_fatal(http: Http, signum: int) -> None:
    workers = http.workers()
    http.kill(signum)
    time.sleep(0.5)
    assert http.proc.poll() is None and http.workers() == workers
    assert _get(http.port)[0] == 200
    if signum != signal.SIGPIPE:
        assert f"signal {signum} ({signal.Signals(signum).name}) received from" in http.log()
        assert "binary upgrade (USR2, WINCH) is not supported" in http.log()


def test_workers_end_with_a_killed_master_and_a_restart_binds(
        tmp_path: Path, http: Http, slow_upstream: int) -> None:
    workers = http.workers()
    assert len(workers) == 2
    http.kill(signal.SIGKILL)
    http.proc.wait(5)
    deadline = time.monotonic() + 1.0
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in workers)
    again = Http(tmp_path / "again", CONF, "-g", "daemon off;", port=http.port, version="v3",
                 slow=slow_upstream)
    try:
        again.ready()  # bind() on the same port succeeds: no orphan holds it
        assert _get(http.port)[1].startswith(b"v3")
    finally:
        again.close()


def test_signal_option_uses_the_pid_file(http: Http) -> None:
    rc = pylvs_http("-c", str(http.conf), "-s", "reload")
    assert rc.returncode == 0 and rc.stderr == ""
    assert http.notify.wait("RELOADING=1")
    rc = pylvs_http("-c", str(http.conf), "-s", "stop")
    assert rc.returncode == 0
    assert http.proc.wait(10) == 0
    rc = pylvs_http("-c", str(http.conf), "-s", "stop")
    assert rc.returncode == 1
    assert rc.stderr == (f'pylvs http: [error] open() "{http.pid_file}" failed '
                         "(2: No such file or directory)\n")


def test_signal_option_errors(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    pid = tmp_path / "x.pid"
    conf.write_text(f"pid {pid};\nevents {{}}\nhttp {{ }}\n")
    rc = pylvs_http("-c", str(conf), "-s", "frob")
    assert (rc.returncode, rc.stderr) == (1, 'pylvs http: invalid option: "-s frob"\n')
    pid.write_text("abc\n")
    rc = pylvs_http("-c", str(conf), "-s", "reload")
    assert (rc.returncode, rc.stderr) == (1, f'pylvs http: [error] invalid PID number "abc" in "{pid}"\n')
    # a stale pid file: a pid no process has
    stale = 4194303
    while os.path.exists(f"/proc/{stale}"):
        stale -= 1
    pid.write_text(f"{stale}\n")
    rc = pylvs_http("-c", str(conf), "-s", "quit")
    assert (rc.returncode, rc.stderr) == (
        1, f"pylvs http: [alert] kill({stale}, 3) failed (3: No such process)\n")
    rc = pylvs_http("-c", str(conf), "-s")
    assert (rc.returncode, rc.stderr) == (1, 'pylvs http: option "-s" requires parameter\n')
