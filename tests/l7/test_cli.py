"""``pylvs http -c FILE`` as a process: serves, stops on SIGTERM with status 0, and refuses a
busy port with nginx's bind() message."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.l7.conftest import Client, free_port, get, wait_for

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


def _http(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylvs.cli.main", "http", *args],
                          capture_output=True, text=True, timeout=60)


def test_version_and_help_as_nginx_prints_them() -> None:
    from pylvs import __version__

    version = f"pylvs http version: pylvs/{__version__} (nginx/1.22.1 compatible)\n"
    assert (_http("-v").returncode, _http("-v").stdout, _http("-v").stderr) == (0, "", version)
    v = _http("-V")
    assert v.stderr.startswith(version) and "--pid-path=/run/nginx.pid" in v.stderr
    for flag in ("-h", "-?"):
        h = _http(flag)
        assert h.returncode == 0 and h.stdout == ""
        assert h.stderr.startswith(version + "Usage: pylvs http [-?hvVtTq] [-s signal] [-p prefix]")
        assert "  -g directives : set global directives out of configuration file\n" in h.stderr


def test_bad_options_get_nginx_words() -> None:
    assert (_http("-x").returncode, _http("-x").stderr) == (1, 'pylvs http: invalid option: "x"\n')
    r = _http("-c")
    assert (r.returncode, r.stderr) == (1, 'pylvs http: option "-c" requires parameter\n')


def test_dump_prints_every_file(tmp_path: Path) -> None:
    inc = tmp_path / "extra.conf"
    inc.write_text("server { listen 127.0.0.1:1; }\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"events {{}}\nhttp {{ include {inc}; }}\n")
    r = _http("-T", "-c", str(conf))
    assert r.returncode == 0
    assert r.stdout == (f"# configuration file {conf}:\n{conf.read_text()}\n"
                        f"# configuration file {inc}:\n{inc.read_text()}\n")
    assert r.stderr.endswith(f"configuration file {conf} test is successful\n")


def test_global_directives(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(CONF.format(port=free_port(), pid=tmp_path / "a.pid"))
    assert _http("-t", "-q", "-c", str(conf), "-g", "daemon off; pid /run/x.pid;").returncode == 0
    for directives, err in [
        ("daemon off", 'unexpected end of parameter, expecting ";" in command line'),
        ("bogus 1;", 'unknown directive "bogus" in command line'),
        ("daemon maybe;", 'invalid value "maybe" in "daemon" directive, it must be "on" or "off" in command line'),
        ("daemon off; daemon on;", '"daemon" directive is duplicate in command line'),
    ]:
        r = _http("-t", "-c", str(conf), "-g", directives)
        assert r.returncode == 1
        assert r.stderr.splitlines()[0] == f"pylvs http: [emerg] {err}"


def test_daemon_on_forks_and_the_pid_file_names_the_master(tmp_path: Path) -> None:
    port = free_port()
    pid = tmp_path / "d.pid"
    conf = tmp_path / "nginx.conf"
    conf.write_text("user root;\n" + CONF.format(port=port, pid=pid))
    master = 0
    try:
        # the daemon keeps stderr when the error log is stderr, as nginx's does: not a pipe
        with open(tmp_path / "stderr", "w") as err:
            r = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "http", "-c", str(conf),
                                "-g", "daemon on;"], stdout=subprocess.DEVNULL, stderr=err,
                               timeout=60)
        assert r.returncode == 0, (tmp_path / "stderr").read_text()
        assert wait_for(pid.exists)
        master = int(pid.read_text())
        assert Path(f"/proc/{master}").exists()
        c = Client(port)
        assert c.one(get("/hello")).status == 200
        c.close()
        assert _http("-c", str(conf), "-s", "quit").returncode == 0
        assert wait_for(lambda: not Path(f"/proc/{master}").exists())
        assert not pid.exists()
    finally:
        if not master and pid.exists():
            master = int(pid.read_text())
        if master and Path(f"/proc/{master}").exists():
            os.kill(master, signal.SIGTERM)
