"""pylvsd.service's ExecStart, started for real without systemd: the command line the rendered
unit holds is run as systemd would run it (``$DAEMON_ARGS`` split on white space) with a
temporary control socket and state file, and a notify listener as ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pylvs.director.main import load_rules
from pylvs.ipvsadm.rules import save_rules
from pylvs.service import units

PY = sys.executable
DEBIAN_RULES = "/etc/ipvsadm.rules"


def exec_start(rules: str | None = None) -> str:
    bindir = Path(PY).parent
    if not (bindir / "pylvsd").exists():
        pytest.skip("the pylvsd command is not installed beside this interpreter")
    text = units.render("pylvsd.service", bindir)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    line = line.removeprefix("ExecStart=")
    assert f"--restore-if-exists {DEBIAN_RULES}" in line
    return line if rules is None else line.replace(DEBIAN_RULES, rules)


def adm(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pylvs.cli.ipvsadm", "--control-socket", sock, *args],
                          capture_output=True, text=True, timeout=30)


class Unit:
    """The unit's command, run with DAEMON_ARGS as its EnvironmentFile would give them."""

    def __init__(self, tmp: Path, line: str) -> None:
        self.sock = str(tmp / "ctl.sock")
        self.state = tmp / "state.rules"
        self.notify_path = str(tmp / "notify.sock")
        daemon_args = f"--control-socket {self.sock} --state-file {self.state} --dataplane none"
        self.argv = shlex.split(line.replace("$DAEMON_ARGS", daemon_args))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start; the first notify message (READY=1...) once it came."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            listener.bind(self.notify_path)
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env={**os.environ, "NOTIFY_SOCKET": self.notify_path},
            )
            listener.settimeout(30)
            return listener.recv(4096).decode()
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.notify_path)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def unit_factory(tmp_path: Path) -> Iterator[list[Unit]]:
    made: list[Unit] = []
    try:
        yield made
    finally:
        for u in made:
            u.stop()


def test_the_rendered_exec_start_runs_as_written(tmp_path: Path, unit_factory: list[Unit]) -> None:
    u = Unit(tmp_path, exec_start())
    unit_factory.append(u)
    assert u.start().startswith("READY=1")
    if os.path.exists(DEBIAN_RULES):  # Debian's ipvsadm package ships one (comments only)
        table = load_rules(DEBIAN_RULES)
        assert table is not None
        want = save_rules(table, numeric=True)
    else:
        want = ""
    assert adm(u.sock, "-Sn").stdout == want
    assert u.stop() == 0


def test_restore_if_exists_reads_the_file_and_the_state_file_wins_after(
    tmp_path: Path, unit_factory: list[Unit]
) -> None:
    rules = tmp_path / "ipvsadm.rules"
    rules.write_text("# as Debian's\n-A -t 10.79.0.1:80 -s rr\n-a -t 10.79.0.1:80 -r 10.79.0.2:80 -m -w 1\n")
    first = Unit(tmp_path, exec_start(str(rules)))
    unit_factory.append(first)
    assert first.start().startswith("READY=1")
    assert adm(first.sock, "-Sn").stdout == (
        "-A -t 10.79.0.1:80 -s rr\n-a -t 10.79.0.1:80 -r 10.79.0.2:80 -m -w 1\n")
    assert adm(first.sock, "-A", "-u", "10.79.0.1:53").returncode == 0
    live = adm(first.sock, "-Sn").stdout
    assert first.stop() == 0

    # the state file (the last acknowledged table) wins over the rules file at the next start
    second = Unit(tmp_path, exec_start(str(rules)))
    unit_factory.append(second)
    assert second.start().startswith("READY=1")
    assert adm(second.sock, "-Sn").stdout == live
    assert second.stop() == 0

    # no rules file and no state: an empty table, no error
    rules.unlink()
    (tmp_path / "state.rules").unlink()
    third = Unit(tmp_path, exec_start(str(rules)))
    unit_factory.append(third)
    started = time.monotonic()
    assert third.start().startswith("READY=1")
    assert time.monotonic() - started < 30
    assert adm(third.sock, "-Sn").stdout == ""
    assert third.stop() == 0
