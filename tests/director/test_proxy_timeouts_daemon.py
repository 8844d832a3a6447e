"""The proxy plane's timeouts from pylvsd's and pylvs keepalived's command lines and from
pylvsd's restore and state files (``# pylvs-proxy:`` lines): real daemons, real idle clients
whose relays are closed when their timeout runs out, and bad values refused in one line."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.director.conftest import Daemon, connect_when_listening, wait_for

PY = sys.executable


def adm(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pylvs.cli.ipvsadm", "--control-socket", sock, *args],
                          capture_output=True, text=True, timeout=30)


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the relay closed the idle client (EOF or reset), None if it stayed open."""
    start = time.monotonic()
    s.settimeout(seconds)
    try:
        s.recv(1)
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


@pytest.mark.parametrize("argv, want", [
    (["--proxy-timeouts", "server=abc"], "pylvsd: --proxy-timeouts: 'server=abc': 'abc' is not a number\n"),
    (["--proxy-timeouts", "bogus=1"], "pylvsd: --proxy-timeouts: 'bogus=1': expected one of connect, "
                                      "server, client, tunnel, maxconn, queue, retries as NAME=SECONDS\n"),
    (["--proxy-timeouts", "maxconn=0"], "pylvsd: --proxy-timeouts: maxconn: 0 is not at least 1\n"),
    (["--proxy-timeouts", "server=1", "--dataplane", "none"],
     "pylvsd: --proxy-timeouts: only the proxy data plane has them (here: none)\n"),
])
def test_a_bad_proxy_timeouts_value_is_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], want: str
) -> None:
    sock = tmp_path / "c.sock"
    out = subprocess.run([PY, "-m", "pylvs.director.main", "--control-socket", str(sock), *argv],
                         capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stderr) == (2, want)
    assert not sock.exists()


def test_bad_directive_in_the_restore_file_is_its_line_and_no_start(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.write_text("-A -t 10.80.0.1:80 -s rr\n# pylvs-proxy: -t 10.80.0.1:80 server=-1\n")
    out = subprocess.run([PY, "-m", "pylvs.director.main", "--control-socket", str(tmp_path / "c.sock"),
                          "--dataplane", "proxy", "--no-state-file", "--restore", str(rules)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr == f"pylvsd: {rules}:2: timeout server: -1.0 is not 0-2073600 seconds\n"


def test_option_and_restore_file_timeouts_close_idle_relays_and_last_in_the_state_file(
    tmp_path: Path, silent_server: tuple[str, int], daemons: list[Daemon]
) -> None:
    rs, rport = silent_server
    vip = rs.rsplit(".", 1)[0] + ".1"
    short, long_ = random.randint(20000, 30000), random.randint(30001, 40000)
    directive = f"# pylvs-proxy: -t {vip}:{long_} connect=3 server=30 client=4 tunnel=0"
    rules = tmp_path / "ipvsadm.rules"
    rules.write_text(
        f"-A -t {vip}:{short} -s rr\n-a -t {vip}:{short} -r {rs}:{rport} -m -w 1\n"
        f"-A -t {vip}:{long_} -s rr\n-a -t {vip}:{long_} -r {rs}:{rport} -m -w 1\n"
        f"{directive}\n"
    )
    state = tmp_path / "state.rules"
    ctl = str(tmp_path / "ctl.sock")
    argv = [PY, "-m", "pylvs.director.main", "--control-socket", ctl, "--dataplane", "proxy",
            "--state-file", str(state), "--restore", str(rules), "--proxy-timeouts", "client=1 server=2"]
    d = Daemon(argv)
    daemons.append(d)
    wait_for(lambda: os.path.exists(ctl) and adm(ctl, "-Ln").returncode == 0, "pylvsd did not start")
    assert state.read_text().endswith(f"{directive}\n")  # kept with the table it belongs to

    a = connect_when_listening(vip, short)  # --proxy-timeouts client=1
    b = connect_when_listening(vip, long_)  # the file's client=4
    took_a = closed_within(a, 4)
    assert took_a is not None and took_a < 3.5, took_a
    took_b = closed_within(b, 8)
    assert took_b is not None and 1.5 < took_b < 7, took_b
    a.close()
    b.close()

    # SIGHUP: the file's new timeouts replace the old ones (and the state file follows)
    new = f"# pylvs-proxy: -t {vip}:{short} connect=3 server=30 client=5 tunnel=0"
    rules.write_text(rules.read_text().replace(directive, new))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: state.read_text().endswith(f"{new}\n"), "HUP did not save the new timeouts")
    a = connect_when_listening(vip, short)
    b = connect_when_listening(vip, long_)
    took_b = closed_within(b, 4)  # back to the option's client=1
    assert took_b is not None and took_b < 3.5, took_b
    took_a = closed_within(a, 9)
    assert took_a is not None and 2.5 < took_a < 8, took_a
    a.close()
    b.close()

    # kill -9 and a start without the restore file: the state file brings them back
    d.stop(signal.SIGKILL)
    argv = [a_ for a_ in argv if a_ not in ("--restore", str(rules))]
    again = Daemon(argv)
    daemons.append(again)
    wait_for(lambda: adm(ctl, "-Ln").returncode == 0, "pylvsd did not start again")
    assert state.read_text().endswith(f"{new}\n")
    a = connect_when_listening(vip, short)
    took_a = closed_within(a, 9)
    assert took_a is not None and 2.5 < took_a < 8, took_a
    a.close()
    assert again.stop() == 0


def test_pylvs_keepalived_takes_proxy_timeouts(
    tmp_path: Path, silent_server: tuple[str, int], daemons: list[Daemon]
) -> None:
    rs, rport = silent_server
    vip = rs.rsplit(".", 1)[0] + ".1"
    port = random.randint(20000, 40000)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(f"""virtual_server {vip} {port} {{
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server {rs} {rport} {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
""")
    base = [PY, "-m", "pylvs.cli.main", "keepalived", "-n", "-l", "-G", "-C", "-f", str(conf),
            "--dataplane", "proxy", "--control-socket", str(tmp_path / "ka.sock")]
    bad = subprocess.run([*base, "--proxy-timeouts", "client=soon"], capture_output=True, text=True,
                         timeout=30)
    assert (bad.returncode, bad.stderr) == (
        2, "pylvs keepalived: --proxy-timeouts: 'client=soon': 'soon' is not a number\n")
    d = Daemon([*base, "--proxy-timeouts", "client=1"])
    daemons.append(d)
    s = connect_when_listening(vip, port)
    took = closed_within(s, 5)
    assert took is not None and took < 3.5, (took, b"".join(d.log)[-2000:])
    s.close()
    assert d.stop() == 0
