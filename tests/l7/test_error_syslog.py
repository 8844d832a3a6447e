"""``error_log syslog:...`` in ``pylvs http``: nginx's parameters and ``-t`` messages (compared
with Debian's nginx 1.22 where it is installed), and real datagrams on a UDP socket on
127.0.0.1 and on a unix datagram socket in a temporary directory, compared field by field with
the ones real nginx sends for the same request (times and pids masked)."""

from __future__ import annotations

import contextlib
import http.client as httpc
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.l7.syslogsink import SEVERITIES, header, parse_syslog
from tests.l7.conftest import free_port
from tests.l7.proc import Http, open_dir, running

# <PRI>Mmm dd HH:MM:SS [HOST ]TAG: YYYY/MM/DD HH:MM:SS [level] PID#TID: text
DATAGRAM = re.compile(r"<(\d+)>([A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d) (?:(\S+) )?(\w*): "
                      r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\w+)\] (\d+)#(\d+): (.*)")

CONF = """
pid {pid};
worker_processes 1;
error_log {target};
events {{}}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""


# -- the parameters -----------------------------------------------------------------------------

BAD = {
    "syslog:": 'unknown syslog parameter ""',
    "syslog:server=": 'no host in syslog server ""',
    "syslog:facility=local1": "no syslog server specified",
    "syslog:server=127.0.0.1,facility=bogus": 'unknown syslog facility "bogus"',
    "syslog:server=127.0.0.1,facility=LOCAL1": 'unknown syslog facility "LOCAL1"',
    "syslog:server=127.0.0.1,severity=err": 'unknown syslog severity "err"',
    "syslog:server=127.0.0.1,tag=a-b":
        'syslog "tag" only allows alphanumeric characters and underscore',
    "syslog:server=127.0.0.1,tag=" + "a" * 33: "syslog tag length exceeds 32",
    "syslog:server=127.0.0.1,bogus=1": 'unknown syslog parameter "bogus=1"',
    "syslog:server=127.0.0.1,nohostname=1": 'unknown syslog parameter "nohostname=1"',
    "syslog:server=127.0.0.1,": 'unknown syslog parameter ""',
    "syslog:server=127.0.0.1,server=": 'duplicate syslog "server"',
    "syslog:server=127.0.0.1,tag=a,tag=b": 'duplicate syslog "tag"',
    "syslog:server=127.0.0.1:99999": 'invalid port in syslog server "127.0.0.1:99999"',
    "syslog:server=127.0.0.1:0": 'invalid port in syslog server "127.0.0.1:0"',
    "syslog:server=127.0.0.1:": 'invalid port in syslog server "127.0.0.1:"',
    "syslog:server=::1": 'invalid port in syslog server "::1"',
    "syslog:server=:514": 'no host in syslog server ":514"',
    "syslog:server=127.0.0.1/x": 'invalid host in syslog server "127.0.0.1/x"',
    "syslog:server=[::1": 'invalid host in syslog server "[::1"',
    "syslog:server=[::1]x": 'invalid host in syslog server "[::1]x"',
    "syslog:server=[zz]:5": 'invalid IPv6 address in syslog server "[zz]:5"',
    "syslog:server=1.2.3.4.5": 'host not found in syslog server "1.2.3.4.5"',
    "syslog:server=unix:": 'no path in the unix domain socket in syslog server "unix:"',
    "syslog:server=unix:/" + "a" * 107:
        'too long path in the unix domain socket in syslog server "unix:/' + "a" * 107 + '"',
    "syslog:server=127.0.0.1 bogus": 'invalid log level "bogus"',
}

GOOD = ["syslog:server=127.0.0.1", "syslog:server=[::1]:515", "syslog:server=localhost",
        "syslog:server=unix:/dev/log", "syslog:server=unix:rel.sock",
        "syslog:nohostname,server=127.0.0.1,tag=", "syslog:server=127.0.0.1:0514,facility=kern",
        "syslog:server=127.0.0.1,tag=" + "a" * 32 + ",severity=debug warn"]


def _t(tmp: Path, directive: str, *extra: str) -> subprocess.CompletedProcess[str]:
    conf = tmp / "t.conf"
    conf.write_text(f"{directive}\nevents {{}}\nhttp {{}}\n")
    return subprocess.run([sys.executable, "-m", "pylvs.cli.main", "http", "-t", "-c", str(conf),
                           *extra], capture_output=True, text=True, timeout=60)


def _emerg(stderr: str) -> str:
    line = next(x for x in stderr.splitlines() if "[emerg]" in x)
    return re.sub(r"^.*\[emerg\] (\d+#\d+: )?", "", line)


@pytest.mark.parametrize("target", sorted(BAD))
def test_bad_parameters_get_nginx_messages(tmp_path: Path, target: str) -> None:
    ours = _t(tmp_path, f"error_log {target};")
    assert ours.returncode == 1 and "Traceback" not in ours.stderr, ours.stderr
    assert _emerg(ours.stderr) == f"{BAD[target]} in {tmp_path}/t.conf:1"
    nginx = shutil.which("nginx")
    if nginx is not None:  # the table is nginx's own words
        theirs = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "t.conf"),
                                 "-e", str(tmp_path / "e.log")],
                                capture_output=True, text=True, timeout=60)
        assert theirs.returncode == 1 and _emerg(theirs.stderr) == _emerg(ours.stderr)


@pytest.mark.parametrize("target", GOOD)
def test_good_parameters_pass_t(tmp_path: Path, target: str) -> None:
    ours = _t(tmp_path, f"error_log {target};")
    assert ours.returncode == 0, ours.stderr


def test_command_line_error_log_to_syslog(tmp_path: Path) -> None:
    bad = _t(tmp_path, "", "-g", "error_log syslog:server=127.0.0.1,tag=x-y;")
    assert bad.returncode == 1
    assert _emerg(bad.stderr) == ('syslog "tag" only allows alphanumeric characters and '
                                  "underscore in command line")
    assert _t(tmp_path, "", "-g", "error_log syslog:server=127.0.0.1 info;").returncode == 0


def test_parsed_defaults_and_header() -> None:
    peer = parse_syslog("syslog:server=127.0.0.1")
    assert (peer.family, peer.address) == (socket.AF_INET, ("127.0.0.1", 514))
    assert (peer.facility, peer.severity, peer.tag, peer.hostname) == (23, 6, "nginx", True)
    peer = parse_syslog("syslog:server=[::1]:5140,facility=local3,tag=abc_1,nohostname")
    assert (peer.family, peer.address) == (socket.AF_INET6, ("::1", 5140))
    # 2026-01-05 09:03:07 local time: a space-padded day, nginx's English month
    t = time.mktime((2026, 1, 5, 9, 3, 7, 0, 0, -1))
    assert header(peer, SEVERITIES.index("error"), "vm", t) == "<155>Jan  5 09:03:07 abc_1: "
    peer = parse_syslog("syslog:server=unix:/dev/log")
    assert (peer.family, peer.address) == (socket.AF_UNIX, "/dev/log")
    assert header(peer, 0, "vm", t) == "<184>Jan  5 09:03:07 vm nginx: "


# -- real datagrams -----------------------------------------------------------------------------

class Listener:
    """A datagram socket standing in for syslogd: UDP on 127.0.0.1, or unix in ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", 0))
            self.server = f"127.0.0.1:{self.sock.getsockname()[1]}"
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(str(path))
            path.chmod(0o666)  # as /dev/log: the workers write to it as nobody
            self.server = f"unix:{path}"
        self.got: list[str] = []

    def wait(self, pattern: str, timeout: float = 15.0) -> str:
        """The first datagram (kept or new) whose text holds ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.got:
                if pattern in m:
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no datagram with {pattern!r}: {self.got}")
            self.sock.settimeout(left)
            with contextlib.suppress(TimeoutError):
                self.got.append(self.sock.recv(65536).decode())

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def listening(path: Path | None = None) -> Iterator[Listener]:
    li = Listener(path)
    try:
        yield li
    finally:
        li.close()


@contextlib.contextmanager
def pylvs(tmp: Path, target: str, *extra: str) -> Iterator[Http]:
    (tmp / "www").mkdir(parents=True, exist_ok=True)
    h = Http(tmp, CONF, *extra, target=target)
    try:
        h.ready()
        yield h
    finally:
        h.close()


@contextlib.contextmanager
def nginx(tmp: Path, target: str) -> Iterator[int]:
    """Real nginx with the same file (master and one worker as root), on its own port."""
    binary = shutil.which("nginx")
    if binary is None:
        pytest.skip("needs nginx (Debian nginx-light) to compare the datagrams")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "www").mkdir(exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text("user root;\n" + CONF.format(pid=tmp / "nginx.pid", target=target, port=port,
                                                 tmp=tmp))
    with running([binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "e.log"),
                  "-g", "daemon off;"], port, stop=signal.SIGQUIT):
        yield port


def _get(port: int, path: str) -> int:
    c = httpc.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def _fields(datagram: str) -> dict[str, str]:
    m = DATAGRAM.fullmatch(datagram)
    assert m is not None, datagram
    keys = ("pri", "stamp", "host", "tag", "time", "level", "pid", "tid", "text")
    return dict(zip(keys, m.groups(default=""), strict=True))


def _masked(f: dict[str, str], port: int, tmp: Path) -> dict[str, str]:
    """The fields that must be equal between nginx and pylvs: all but the times, the pids,
    the port and the directory of each run, and the connection serial (the probe that waits
    for nginx's port is its connection 1)."""
    text = re.sub(r"^\*\d+ ", "*N ", f["text"].replace(str(port), "PORT").replace(str(tmp), "TMP"))
    return {k: v for k, v in f.items() if k not in ("stamp", "time", "pid", "tid")} | {
        "text": text}


def _close_in_time(f: dict[str, str]) -> None:
    """The header's time is local time now, and the line's own time is the same second."""
    now = time.time()
    for t in (now, now - 1, now - 2, now - 3):
        lt = time.localtime(t)
        if f["time"] == time.strftime("%Y/%m/%d %H:%M:%S", lt):
            assert f["stamp"] == header(parse_syslog("syslog:server=127.0.0.1"), 0, "h",
                                        t).split(">")[1].split(" h ")[0]
            return
    raise AssertionError(f"line time {f['time']} is not now")


def test_udp_datagrams_as_nginx_sends_them() -> None:
    with open_dir() as d, listening() as ours_udp, listening() as theirs_udp:
        target = f"syslog:server={ours_udp.server} info"
        with pylvs(d / "pylvs", target) as h:
            assert _get(h.port, "/missing") == 404
            ours = _fields(ours_udp.wait("/missing"))
        assert ours["pri"] == str(23 * 8 + 3)  # local7.err: the line's own level
        assert ours["host"] == socket.gethostname().lower() and ours["tag"] == "nginx"
        assert ours["level"] == "error"
        assert ours["text"].startswith(f'*1 open() "{d}/pylvs/www/missing" failed (2: No such')
        _close_in_time(ours)
        stop = _fields(ours_udp.wait("exit"))  # a notice line of the stopping process
        assert stop["pri"] == str(23 * 8 + 5) and stop["level"] == "notice"

        with nginx(d / "nginx", f"syslog:server={theirs_udp.server} info") as port:
            assert _get(port, "/missing") == 404
            theirs = _fields(theirs_udp.wait("/missing"))
        assert _masked(ours, h.port, d / "pylvs") == _masked(theirs, port, d / "nginx")
        assert len(theirs["stamp"]) == len(ours["stamp"]) == 15


def test_unix_socket_with_facility_tag_nohostname_as_nginx() -> None:
    params = "facility=local3,severity=crit,tag=abc_1,nohostname warn"
    with open_dir() as d:
        with listening(d / "ours.sock") as li, \
                pylvs(d / "pylvs", f"syslog:server={li.server},{params}") as h:
            assert _get(h.port, "/missing") == 404
            got = li.wait("/missing")
            os.kill(h.proc.pid, signal.SIGUSR1)  # nothing to reopen: still sent afterwards
            time.sleep(0.5)
            assert _get(h.port, "/again") == 404
            li.wait("/again")
            ours = _fields(got)
            assert ours["pri"] == str(19 * 8 + 3)  # severity= is the access log's: ignored
            assert ours["host"] == "" and ours["tag"] == "abc_1"
            assert got.startswith(f"<155>{ours['stamp']} abc_1: ")
            assert not [m for m in li.got if "[notice]" in m]  # below warn
            assert not Path(f"syslog:server={li.server},{params.split()[0]}").exists()
        with listening(d / "theirs.sock") as li, \
                nginx(d / "nginx", f"syslog:server={li.server},{params}") as port:
            assert _get(port, "/missing") == 404
            theirs = _fields(li.wait("/missing"))
        assert _masked(ours, h.port, d / "pylvs") == _masked(theirs, port, d / "nginx")


def test_command_line_target_and_an_absent_syslogd() -> None:
    """``-g 'error_log syslog:...'`` replaces the file's; a socket nobody listens on yet only
    drops lines (no error, no stall), and lines arrive once a listener is there."""
    with open_dir() as d:
        path = d / "late.sock"
        with pylvs(d / "p", "stderr", "-g", f"error_log syslog:server=unix:{path} notice;") as h:
            assert _get(h.port, "/lost") == 404
            with listening(path) as li:
                assert _get(h.port, "/found") == 404
                got = _fields(li.wait("/found"))
                assert got["level"] == "error" and got["pri"] == "187"
                assert not [m for m in li.got if "/lost" in m]


ACCESS_CONF = """
pid {pid};
worker_processes 1;
error_log {tmp}/err.log;
events {{}}
http {{
    access_log {target} combined;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""

# the access log's line inside the datagram: combined, its time masked
ACCESS = re.compile(r"<(\d+)>([A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d) (?:(\S+) )?(\w*): "
                    r"(127\.0\.0\.1 - - )\[[^]]+\]( .*)")


def _access_fields(datagram: str) -> tuple[str, ...]:
    m = ACCESS.fullmatch(datagram)
    assert m is not None, datagram
    return (m.group(1), *m.group(3, 4, 5, 6))


def test_access_log_datagrams_as_nginx_sends_them() -> None:
    """Each request's combined line, one datagram at once, with the target's facility,
    severity and tag (not a level of its own), over UDP and a unix socket."""
    params = ",facility=local2,severity=notice,tag=acc"
    with open_dir() as d:
        for kind in ("udp", "unix"):
            got: list[tuple[str, ...]] = []
            for who in ("pylvs", "nginx"):
                home = d / kind / who
                (home / "www").mkdir(parents=True)
                (home / "www" / "f.txt").write_text("file\n")
                sock = d / kind / f"{who}.sock" if kind == "unix" else None
                with listening(sock) as li:
                    target = f"syslog:server={li.server}{params}"
                    if who == "pylvs":
                        h = Http(home, ACCESS_CONF, target=target)
                        try:
                            h.ready()
                            assert _get(h.port, "/f.txt") == 200
                            got.append(_access_fields(li.wait("/f.txt")))
                        finally:
                            h.close()
                    else:
                        binary = shutil.which("nginx")
                        if binary is None:
                            pytest.skip("needs nginx (Debian nginx-light) to compare")
                        port = free_port()
                        conf = home / "nginx.conf"
                        conf.write_text("user root;\n" + ACCESS_CONF.format(
                            pid=home / "nginx.pid", target=target, port=port, tmp=home))
                        with running([binary, "-p", str(home), "-c", str(conf), "-e",
                                      str(home / "e.log"), "-g", "daemon off;"], port,
                                     stop=signal.SIGQUIT):
                            assert _get(port, "/f.txt") == 200
                            got.append(_access_fields(li.wait("/f.txt")))
            ours, theirs = got
            assert ours == theirs
            assert ours[0] == str(18 * 8 + 5)  # local2.notice
            assert ours[3] == "127.0.0.1 - - " and '"GET /f.txt HTTP/1.1" 200 5 ' in ours[4]


@pytest.mark.parametrize("line", [
    "access_log syslog:server=unix:/dev/log buffer=32k;",
    "access_log syslog:server=127.0.0.1,severity=loud;",
    "access_log syslog:tag=x;",
])
def test_bad_access_log_targets_get_nginx_messages(tmp_path: Path, line: str) -> None:
    conf = tmp_path / "t.conf"
    conf.write_text(f"events {{}}\nhttp {{\n  {line}\n}}\n")
    ours = subprocess.run([sys.executable, "-m", "pylvs.cli.main", "http", "-t", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert ours.returncode == 1 and "Traceback" not in ours.stderr, ours.stderr
    assert not list(tmp_path.glob("syslog*"))
    nginx = shutil.which("nginx")
    if nginx is not None:
        theirs = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf),
                                 "-e", str(tmp_path / "e.log")],
                                capture_output=True, text=True, timeout=60)
        assert theirs.returncode == 1 and _emerg(theirs.stderr) == _emerg(ours.stderr)
