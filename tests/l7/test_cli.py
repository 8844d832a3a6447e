"""``pylvs http -c FILE`` as a process: serves, stops on SIGTERM with status 0, and refuses a
busy port with nginx's bind() message."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.l7.conftest import Client, free_port, get

CONF = """
pid {pid};
events {{}}
http {{
    server {{
        listen 127.0.0.1:{port};
        location = /hello {{ return 200 "hello from pylvs\\n"; }}
    }}
}}
"""


def _start(conf: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pylvs.cli.main", "http", "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_pylvs_http_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.format(port=port, pid=tmp_path / "pylvs.pid"))
    proc = _start(conf)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = Client(port)
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        r = c.one(get("/hello"))
        c.close()
        assert r.status == 200 and r.body == b"hello from pylvs\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_busy_port_is_refused_like_nginx(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        conf = tmp_path / "nginx.conf"
        conf.write_text(CONF.format(port=port, pid=tmp_path / "pylvs.pid"))
        proc = _start(conf)
        try:
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 1
    assert err.strip() == (f"pylvs http: [emerg] bind() to 127.0.0.1:{port} failed "
                           "(98: Address already in use)")


def test_worker_processes_share_the_port_and_stop_together(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text("worker_processes 2;\n" + CONF.format(port=port, pid=tmp_path / "pylvs.pid").replace(
        '"hello from pylvs\\n"', '"pid $pid\\n"'))
    proc = _start(conf)
    try:
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            try:
                c = Client(port)
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
                continue
            r = c.one(get("/hello"))
            c.close()
            assert r.status == 200
            pids.add(r.body)
        assert len(pids) == 2  # both workers answer on the one port
        workers = [int(b.split()[1]) for b in pids]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        for w in workers:
            assert not Path(f"/proc/{w}").exists() or "Z" in Path(f"/proc/{w}/stat").read_text().split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
