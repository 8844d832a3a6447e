"""``pylvs keepalived`` logs its checkers and virtual servers in keepalived 2.2.7's words.

A real process with a keepalived.conf, a TCP_CHECK against a real TCP server on loopback that the
test stops and starts again, and a MISC_CHECK whose script fails; the console log (-l) must carry
keepalived's lines, in keepalived's order. The expected lines are keepalived 2.2.7's format
strings (keepalived/check/ipwrapper.c, check_api.c, check_tcp.c, check_misc.c); a run of the
Debian keepalived 2.2.7 on this configuration printed the same "Initializing ipvs" and
"Shutting down service [127.x.y.10]:tcp:P from VS [127.x.y.100]:tcp:P" lines before it stopped
for want of the kernel's IPVS (which these hosts do not have), so the checker lines are checked
against the format strings only.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONF = """
global_defs {{
    router_id log_lines
}}
virtual_server {net}.100 {port} {{
    delay_loop 0.3
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server {net}.10 {port} {{
        weight 1
        TCP_CHECK {{
            connect_timeout 0.5
            retry 1
            delay_before_retry 0.2
        }}
    }}
}}
virtual_server {net}.101 {port} {{
    delay_loop 0.3
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server {net}.11 {port} {{
        weight 1
        MISC_CHECK {{
            misc_path "/bin/false"
        }}
    }}
}}
"""


def wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def listen(addr: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    return s


@pytest.fixture
def net() -> str:
    return f"127.{random.randint(1, 250)}.{random.randint(1, 250)}"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[str], tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(conf: str) -> tuple[subprocess.Popen[bytes], Path]:
        cfg = tmp_path / "keepalived.conf"
        cfg.write_text(conf)
        log = tmp_path / "console.log"
        with log.open("wb") as fh:
            p = subprocess.Popen(
                [sys.executable, "-m", "pylvs.cli.main", "keepalived", "-n", "-l", "-G", "-f", str(cfg),
                 "--dataplane", "proxy", "--control-socket", str(tmp_path / "ctl.sock"),
                 "-p", str(tmp_path / "k.pid"), "-r", str(tmp_path / "v.pid"),
                 "-c", str(tmp_path / "c.pid")],
                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            )
        procs.append(p)
        return p, log

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_checker_and_virtual_server_lines(net: str, daemon: Callable[[str], tuple[subprocess.Popen[bytes], Path]]) -> None:
    probe = listen(f"{net}.10", 0)
    port = probe.getsockname()[1]
    server: socket.socket | None = probe
    proc, log = daemon(CONF.format(net=net, port=port))
    rs, vs = f"[{net}.10]:tcp:{port}", f"[{net}.100]:tcp:{port}"
    misc_rs, misc_vs = f"[{net}.11]:tcp:{port}", f"[{net}.101]:tcp:{port}"

    def text() -> str:
        return log.read_text(errors="replace")

    try:
        assert wait_for(lambda: f"TCP connection to {rs} success." in text(), 20), text()
        lines = text()
        assert "Initializing ipvs" in lines
        assert f"Activating healthchecker for service {rs} for VS {vs}" in lines
        assert f"Activating healthchecker for service {misc_rs} for VS {misc_vs}" in lines
        assert lines.index("Initializing ipvs") < lines.index("Activating healthchecker")
        # retry 0 (MISC_CHECK's default) and a first run: keepalived says so, and the server goes
        misc_failed = (f"Misc check for [{misc_rs} VS {misc_vs}] by [/bin/false] failed with retry "
                       "disabled (exited with status 1).")
        assert wait_for(lambda: misc_failed in text(), 10), text()
        assert wait_for(lambda: f"Removing service {misc_rs} from VS {misc_vs}" in text(), 5), text()
        assert wait_for(lambda: f"Lost quorum 1-0=1 > 0 for VS {misc_vs}" in text(), 5), text()

        # the real server stops: one retry, then down, out of the pool, quorum lost
        server.close()
        server = None
        failed = f"TCP_CHECK on service {rs} failed after 1 retries."
        assert wait_for(lambda: f"Lost quorum 1-0=1 > 0 for VS {vs}" in text(), 10), text()
        lines = text()
        assert lines.index(failed) < lines.index(f"Removing service {rs} from VS {vs}") < lines.index(
            f"Lost quorum 1-0=1 > 0 for VS {vs}")

        # and comes back: up at the first success, in the pool, quorum gained
        mark = len(lines)
        server = listen(f"{net}.10", port)
        assert wait_for(lambda: f"Gained quorum 1+0=1 <= 1 for VS {vs}" in text()[mark:], 10), text()
        back = text()[mark:]
        assert back.index(f"TCP connection to {rs} success.") < back.index(
            f"Adding service {rs} to VS {vs}") < back.index(f"Gained quorum 1+0=1 <= 1 for VS {vs}")
        assert "TCP_CHECK" not in back  # no failure line while it was coming back

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, text()
        assert f"Shutting down service {rs} from VS {vs}" in text()
        assert f"Shutting down service {misc_rs} from VS {misc_vs}" in text()
    finally:
        if server is not None:
            server.close()
