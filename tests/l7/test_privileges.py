"""Workers serve as the ``user`` directive's user, side by side with real nginx on the same
file: a file only root may read is 403 under both, ``user root`` serves it under both; the
default user is Debian's build's ``nobody:nogroup``; a master not started as root warns about
``user`` as nginx does; unknown users and groups are nginx's ``[emerg]``."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.l7.conftest import Client, free_port, get
from tests.l7.proc import PYLVS, Http, open_dir, pylvs_http
from tests.nobody import need_nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (workers switch user)")

CONF = """
pid {pid};
error_log {err} notice;
events {{}}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""


@pytest.fixture
def www() -> Iterator[Path]:
    with open_dir() as d:
        (d / "www").mkdir()
        (d / "www").chmod(0o755)
        (d / "www" / "open.html").write_text("anyone\n")
        (d / "www" / "open.html").chmod(0o644)
        (d / "www" / "secret.html").write_text("root only\n")
        (d / "www" / "secret.html").chmod(0o600)
        yield d


def _status(port: int, path: str) -> int:
    c = Client(port)
    try:
        return c.one(get(path)).status
    finally:
        c.close()


def _nginx_statuses(tmp: Path, directives: str) -> tuple[int, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        pytest.skip("nginx is not installed")
    d = tmp / "nginx"
    d.mkdir()
    port = free_port()
    conf = d / "nginx.conf"
    conf.write_text(CONF.format(pid=d / "nginx.pid", err=d / "error.log", port=port, tmp=tmp))
    proc = subprocess.Popen([nginx, "-g", f"daemon off; {directives}", "-p", str(d), "-c",
                             str(conf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        import time

        deadline = time.monotonic() + 10
        while True:
            try:
                return _status(port, "/open.html"), _status(port, "/secret.html")
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


def _uids(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    gid = next(int(line.split()[1]) for line in status if line.startswith("Gid:"))
    return uid, gid


@pytest.mark.parametrize("directives", ["", "user root;", "user www-data;"])
def test_file_permissions_give_nginx_statuses(www: Path, directives: str) -> None:
    if directives != "user root;":
        need_nobody()  # the workers run as nobody/www-data and import lazily from the venv
    expected = _nginx_statuses(www, directives)
    h = Http(www / "pylvs", CONF.replace("{tmp}/www", str(www / "www")), "-g",
             f"daemon off; {directives}")
    try:
        h.ready()
        got = (_status(h.port, "/open.html"), _status(h.port, "/secret.html"))
        uid, gid = _uids(h.workers()[0])
    finally:
        h.close()
    assert got == expected
    want = {"": (65534, 65534), "user root;": (0, 0), "user www-data;": (33, 33)}[directives]
    assert (uid, gid) == want
    assert got == ((200, 200) if directives == "user root;" else (200, 403))


def test_unknown_user_and_group_are_refused(www: Path) -> None:
    conf = www / "nginx.conf"
    conf.write_text(CONF.format(pid=www / "x.pid", err=www / "e.log", port=free_port(), tmp=www))
    rc = pylvs_http("-t", "-c", str(conf), "-g", "user nosuch;")
    assert rc.returncode == 1
    assert rc.stderr.splitlines()[0] == 'pylvs http: [emerg] getpwnam("nosuch") failed in command line'
    rc = pylvs_http("-t", "-c", str(conf), "-g", "user nobody;")  # group "nobody": none here
    assert rc.stderr.splitlines()[0] == 'pylvs http: [emerg] getgrnam("nobody") failed in command line'
    conf.write_text("user www-data nosuch;\n" + conf.read_text())
    rc = pylvs_http("-t", "-c", str(conf))
    assert rc.stderr.splitlines()[0] == f'pylvs http: [emerg] getgrnam("nosuch") failed in {conf}:1'


def test_user_is_ignored_with_nginx_warning_when_not_root(www: Path) -> None:
    need_nobody()
    conf = www / "nginx.conf"
    conf.write_text("user www-data;\n" + CONF.format(pid=www / "x.pid", err=www / "e.log",
                                                     port=free_port(), tmp=www))
    conf.chmod(0o644)
    rc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                         *PYLVS, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert rc.returncode == 0, rc.stderr
    assert rc.stderr.splitlines() == [
        'pylvs http: [warn] the "user" directive makes sense only if the master process runs '
        f"with super-user privileges, ignored in {conf}:1",
        f"pylvs http: the configuration file {conf} syntax is ok",
        f"pylvs http: configuration file {conf} test is successful",
    ]
