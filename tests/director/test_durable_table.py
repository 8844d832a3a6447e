"""pylvsd's table outlives the process: real pylvsd processes, real pylvsadm, SIGKILL and restart,
writes that fail, rule files that cannot be read, and every signal sent while it serves or
starts."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PY = sys.executable

TABLE = [
    "-A -t 10.77.0.1:80 -s rr",
    "-a -t 10.77.0.1:80 -r 10.77.1.1:8080 -m -w 3 -x 100 -y 40",
    "-a -t 10.77.0.1:80 -r 10.77.1.2 -g -w 0",
    "-A -u 10.77.0.1:53 -s wrr -o",
    "-a -u 10.77.0.1:53 -r 10.77.1.1:53 -m",
    "-A -f 7 -s sh -b sh-port -p 60 -M 255.255.255.0",
    "-a -f 7 -r 10.77.1.3:80 -i --tun-type gue --tun-port 6080",
    "-A -t [2001:db8:77::1]:443 -s mh -b mh-port",
    "-a -t [2001:db8:77::1]:443 -r [2001:db8:77::10]:8443 -m -w 2",
    "-E -t 10.77.0.1:80 -s wlc",
    "-d -u 10.77.0.1:53 -r 10.77.1.1:53",
    "--set 600 90 120",
]


class Pylvsd:
    """One pylvsd process on its own control socket. Its log is read from a pipe (a log file
    would itself hit a file size limit the test sets)."""

    def __init__(
        self, tmp: Path, *extra: str, limit_fsize: int | None = None, name: str = "ctl"
    ) -> None:
        self.sock = str(tmp / f"{name}.sock")
        self.log: list[bytes] = []
        self.args = [PY, "-m", "pylvs.director.main", "--control-socket", self.sock,
                     "--dataplane", "none", *extra]
        self.limit_fsize = limit_fsize
        self.proc: subprocess.Popen[bytes] | None = None

    def _limits(self) -> None:
        if self.limit_fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit_fsize, self.limit_fsize))

    def start(self) -> int | None:
        """Start and wait for the control socket; the exit code if it ended instead."""
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=self._limits)
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + 20
        while not self.answers():
            if self.proc.poll() is not None:
                return self.proc.returncode
            assert time.monotonic() < deadline, "pylvsd did not open its control socket"
            time.sleep(0.05)
        return None

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line)

    def answers(self) -> bool:
        return os.path.exists(self.sock) and adm(self.sock, "-L", "--timeout").returncode == 0

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

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
        return self.proc.returncode

    def log_text(self) -> str:
        return b"".join(self.log).decode(errors="replace")


def adm(sock: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "pylvs.cli.ipvsadm", "--control-socket", sock, *args],
                          input=stdin, capture_output=True, text=True, timeout=30)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Pylvsd]]:
    started: list[Pylvsd] = []

    def make(*extra: str, limit_fsize: int | None = None, name: str = "ctl") -> Pylvsd:
        d = Pylvsd(tmp_path, *extra, limit_fsize=limit_fsize, name=name)
        started.append(d)
        return d

    try:
        yield make
    finally:
        for d in started:
            d.stop()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_table_survives_kill_9_and_comes_back_byte_for_byte(
    tmp_path: Path, daemons: Callable[..., Pylvsd]
) -> None:
    state = tmp_path / "state" / "ipvsadm.rules"
    first = daemons("--state-file", str(state))
    assert first.start() is None
    for line in TABLE:
        r = adm(first.sock, *line.split())
        assert (r.returncode, r.stderr) == (0, ""), line
    saved = adm(first.sock, "-Sn").stdout
    thresholds = adm(first.sock, "-Ln", "--thresholds").stdout
    timeouts = adm(first.sock, "-L", "--timeout").stdout
    assert saved.count("\n") == 8 and "Timeout (tcp tcpfin udp): 600 90 120" in timeouts
    # Every acknowledged change is already on disk: no clean exit needed.
    first.kill9()
    assert first.proc is not None and first.proc.returncode == -signal.SIGKILL
    assert leftovers(state.parent) == []

    second = daemons("--state-file", str(state))
    assert second.start() is None
    assert adm(second.sock, "-Sn").stdout == saved
    assert adm(second.sock, "-Ln", "--thresholds").stdout == thresholds
    assert adm(second.sock, "-L", "--timeout").stdout == timeouts
    # The state file is still a plain rule file: ipvsadm -R reads it (here: pylvsadm -R).
    other = daemons("--no-state-file", name="other")
    assert other.start() is None
    r = adm(other.sock, "-R", stdin=state.read_text())
    assert (r.returncode, r.stderr) == (0, "")
    assert adm(other.sock, "-Sn").stdout == saved


def test_the_state_file_wins_over_restore_and_hup_goes_back_to_restore(
    tmp_path: Path, daemons: Callable[..., Pylvsd]
) -> None:
    rules = tmp_path / "ipvsadm.rules"
    rules.write_text("-A -t 10.77.9.1:80 -s rr\n-a -t 10.77.9.1:80 -r 10.77.9.2:80 -m -w 1\n")
    state = tmp_path / "state.rules"
    d = daemons("--state-file", str(state), "--restore", str(rules))
    assert d.start() is None
    from_rules = adm(d.sock, "-Sn").stdout
    assert from_rules == rules.read_text()
    assert adm(d.sock, "-A", "-t", "10.77.9.5:25", "-s", "lc").returncode == 0
    live = adm(d.sock, "-Sn").stdout
    d.kill9()
    again = daemons("--state-file", str(state), "--restore", str(rules))
    assert again.start() is None
    assert adm(again.sock, "-Sn").stdout == live  # the last acknowledged table, not --restore
    again.signal(signal.SIGHUP)
    wait_for(lambda: adm(again.sock, "-Sn").stdout == from_rules, "HUP did not re-read --restore")
    assert state.read_text() == from_rules  # and the reloaded table is the durable one


def test_a_write_that_fails_refuses_the_change_and_keeps_the_old_file(
    tmp_path: Path, daemons: Callable[..., Pylvsd]
) -> None:
    state = tmp_path / "state.rules"
    # A file size limit of 200 bytes: the state grows past it after a few services.
    d = daemons("--state-file", str(state), limit_fsize=200)
    assert d.start() is None
    refused = None
    for i in range(1, 20):
        before_file = state.read_text()
        before_table = adm(d.sock, "-Sn").stdout
        r = adm(d.sock, "-A", "-t", f"10.77.5.{i}:80", "-s", "wrr")
        if r.returncode != 0:
            refused = r
            break
        assert state.read_text() == adm(d.sock, "-Sn").stdout
    assert refused is not None, "the size limit never refused a change"
    assert refused.stderr == "File too large\n"  # the write's errno, in libipvs's wording
    assert refused.returncode == 255
    assert state.read_text() == before_file  # the previous file, intact
    assert adm(d.sock, "-Sn").stdout == before_table  # and the change was not applied
    assert leftovers(tmp_path) == []
    assert "cannot save the table" in d.log_text()
    # Still serving: a change that shrinks the table is accepted and written.
    assert adm(d.sock, "-D", "-t", "10.77.5.1:80").returncode == 0
    assert state.read_text() == adm(d.sock, "-Sn").stdout
    assert d.proc is not None and d.proc.poll() is None


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,nr_inodes=64", "pylvs-test", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_refuses_the_change_and_leaves_no_temporary_file(
    tiny_tmpfs: Path, daemons: Callable[..., Pylvsd]
) -> None:
    state = tiny_tmpfs / "ipvsadm.rules"
    d = daemons("--state-file", str(state))
    assert d.start() is None
    # Fill the file system but for the last page: the next rewrite cannot fit beside the old file.
    line = "-A -t 10.77.6.{}:80 -s rr"
    assert adm(d.sock, *line.format(1).split()).returncode == 0
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    before = state.read_text()
    r = adm(d.sock, *line.format(2).split())
    assert (r.returncode, r.stderr) == (255, "No space left on device\n")
    assert state.read_text() == before
    assert adm(d.sock, "-Sn").stdout == before
    assert leftovers(tiny_tmpfs) == []
    filler.unlink()
    assert adm(d.sock, *line.format(2).split()).returncode == 0
    assert state.read_text() == adm(d.sock, "-Sn").stdout


@pytest.mark.parametrize("kind", ["directory", "not-utf8", "symlink-loop", "truncated", "bad-state"])
def test_an_unusable_rule_file_is_one_clear_line_and_no_start(
    tmp_path: Path, daemons: Callable[..., Pylvsd], kind: str
) -> None:
    path = tmp_path / "rules"
    option = "--restore"
    if kind == "directory":
        path.mkdir()
        want = f"pylvsd: {path}: is a directory, not a rule file\n"
    elif kind == "not-utf8":
        path.write_bytes(b"-A -t 10.77.0.1:80 -s rr\n-A -t 10.77.0.2:80 -s \xff\xfe\n")
        want = f"pylvsd: {path}:2: not UTF-8 text (byte 0xff), not a rule file\n"
    elif kind == "symlink-loop":
        os.symlink(path, path)
        want = f"pylvsd: {path}: cannot read: Too many levels of symbolic links\n"
    elif kind == "truncated":
        path.write_text("-A -t 10.77.0.1:80 -s rr\n-a -t 10.77.0.1:80 -r")
        want = f"pylvsd: {path}:2: -r: missing argument\n"
    else:
        option = "--state-file"
        path.write_text("-A -t 10.77.0.1:80 -s rr\n-A -t 10.77.0.1:80 -s rr\n")
        want = f"pylvsd: {path}:2: Service already exists\n"
    extra = ["--no-state-file"] if option == "--restore" else []
    d = daemons(option, str(path), *extra, "--log-level=error")
    assert d.start() == 1
    wait_for(lambda: d.log_text() != "", "no error line")
    time.sleep(0.2)
    assert d.log_text() == want
    assert not os.path.exists(d.sock)


def test_every_signal_while_serving_keeps_the_table(
    tmp_path: Path, daemons: Callable[..., Pylvsd]
) -> None:
    rules = tmp_path / "ipvsadm.rules"
    rules.write_text("-A -t 10.77.8.1:80 -s rr\n-a -t 10.77.8.1:80 -r 10.77.8.2:80 -m -w 1\n")
    state = tmp_path / "state.rules"
    d = daemons("--state-file", str(state), "--restore", str(rules))
    assert d.start() is None
    assert adm(d.sock, "-a", "-t", "10.77.8.1:80", "-r", "10.77.8.3:80", "-m").returncode == 0
    table = adm(d.sock, "-Sn").stdout

    def logged(text: str) -> Callable[[], bool]:
        return lambda: text in d.log_text()

    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE, signal.SIGALRM, signal.SIGVTALRM,
                signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGXFSZ, signal.SIGRTMIN + 2):
        d.signal(sig)
        if sig not in (signal.SIGPIPE, signal.SIGXFSZ):
            name = "SIGRTMIN+2" if sig == signal.SIGRTMIN + 2 else signal.Signals(sig).name
            wait_for(logged(f"received {name}"), f"{name} was not logged")
        assert adm(d.sock, "-Sn").stdout == table, sig
        assert d.proc is not None and d.proc.poll() is None, sig
    log = d.log_text()
    assert "-a -t 10.77.8.1:80 -r 10.77.8.3:80 -m -w 1" in log  # USR1: the table, in -S form
    assert "(0 connections)" in log
    assert '"state_file"' in log and '"writes"' in log  # USR2: the counters

    # HUP with a bad restore file: the running table stays, the error is logged with file:line.
    rules.write_text("-A -t 10.77.8.1:80 -s rr\n-a -t 10.77.8.1:80 -r nonsense..\n")
    d.signal(signal.SIGHUP)
    wait_for(logged(f"SIGHUP: {rules}:2: illegal real server address[:port] specified; "
                    "the running table is kept"), "bad HUP file not reported")
    assert adm(d.sock, "-Sn").stdout == table
    # HUP with a good file: the table becomes the file.
    rules.write_text("-A -t 10.77.8.1:80 -s wrr\n-a -t 10.77.8.1:80 -r 10.77.8.2:80 -m -w 5\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: adm(d.sock, "-Sn").stdout == rules.read_text(), "good HUP file not applied")
    assert state.read_text() == rules.read_text()
    assert d.proc is not None and d.proc.poll() is None
    d.signal(signal.SIGQUIT)
    assert d.proc.wait(15) == 0
    assert "received SIGQUIT" in d.log_text() and "director stopped" in d.log_text()


def test_hups_are_counted_in_the_metrics(tmp_path: Path, daemons: Callable[..., Pylvsd]) -> None:
    """pylvs_config_reloads_total counts SIGHUP re-reads of the rule file, applied or refused;
    pylvs_config_reload_failures_total the refused ones; the last success is a timestamp (the
    load at start counts as one)."""
    import re
    import socket
    import urllib.request

    rules = tmp_path / "ipvsadm.rules"
    rules.write_text("-A -t 10.77.9.1:80 -s rr\n")
    with socket.socket() as s:  # a free port for the metrics listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = daemons("--no-state-file", "--restore", str(rules), "--metrics-address",
                f"127.0.0.1:{port}")
    assert d.start() is None

    def scrape() -> dict[str, float]:
        body = ""
        for _ in range(50):  # the listener's thread may still be starting
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        return {m[1]: float(m[2]) for m in re.finditer(
            r"^(pylvs_config_\w+?)(?:_total)? ([0-9.e+]+)$", body, re.M)}

    def series(name: str) -> float | None:
        return scrape().get(name)

    first = scrape()
    assert first["pylvs_config_reloads"] == 0 and first["pylvs_config_reload_failures"] == 0
    started = first["pylvs_config_last_reload_success_timestamp_seconds"]
    assert abs(started - time.time()) < 60
    rules.write_text("-A -t 10.77.9.1:80 -s rr\n-a -t 10.77.9.1:80 -r nonsense..\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: series("pylvs_config_reloads") == 1, "a refused HUP not counted")
    after_bad = scrape()
    assert after_bad["pylvs_config_reload_failures"] == 1
    assert after_bad["pylvs_config_last_reload_success_timestamp_seconds"] == started
    time.sleep(0.05)
    rules.write_text("-A -t 10.77.9.1:80 -s wrr\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: series("pylvs_config_reloads") == 2, "an applied HUP not counted")
    after_good = scrape()
    assert after_good["pylvs_config_reload_failures"] == 1
    assert after_good["pylvs_config_last_reload_success_timestamp_seconds"] > started
    assert adm(d.sock, "-Sn").stdout == "-A -t 10.77.9.1:80 -s wrr\n"
    d.signal(signal.SIGTERM)
    assert d.proc is not None and d.proc.wait(15) == 0


def test_hup_without_a_restore_file_is_logged_and_changes_nothing(
    tmp_path: Path, daemons: Callable[..., Pylvsd]
) -> None:
    d = daemons("--no-state-file")
    assert d.start() is None
    assert adm(d.sock, "-A", "-t", "10.77.7.1:80", "-s", "rr").returncode == 0
    d.signal(signal.SIGHUP)
    wait_for(lambda: "nothing to re-read, still running" in d.log_text(), "HUP not logged")
    assert adm(d.sock, "-Sn").stdout == "-A -t 10.77.7.1:80 -s rr\n"
    d.signal(signal.SIGINT)
    assert d.proc is not None and d.proc.wait(15) == 0


def test_restore_must_exist_and_restore_if_exists_may_be_missing(
    tmp_path: Path, daemons: Callable[..., Pylvsd]
) -> None:
    missing = tmp_path / "no-such.rules"
    state = tmp_path / "state.rules"
    state.write_text("-A -t 10.77.8.1:80 -s rr\n")
    # even when the state file would win, a mistyped --restore path is said at start
    d = daemons("--state-file", str(state), "--restore", str(missing), "--log-level=error")
    assert d.start() == 1
    wait_for(lambda: d.log_text() != "", "no error line")
    time.sleep(0.2)
    assert d.log_text() == f"pylvsd: {missing}: No such file or directory\n"
    assert state.read_text() == "-A -t 10.77.8.1:80 -s rr\n"  # nothing changed
    ok = daemons("--state-file", str(state), "--restore-if-exists", str(missing), name="ok")
    assert ok.start() is None
    assert adm(ok.sock, "-Sn").stdout == "-A -t 10.77.8.1:80 -s rr\n"
    both = subprocess.run([PY, "-m", "pylvs.director.main", "--restore", "a", "--restore-if-exists",
                           "b"], capture_output=True, text=True, timeout=30)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_signals_while_starting_are_acted_on_once_started(
    tmp_path: Path, daemons: Callable[..., Pylvsd]
) -> None:
    """A stop (a supervisor's restart) or a HUP sent while pylvsd is still starting (a large
    table to restore) is not the default action's death: the HUP is done once started, the
    stop is a clean one (exit 0, table saved)."""
    rules = tmp_path / "big.rules"
    lines = []
    for i in range(5000):
        vip = f"10.78.{i // 250}.{i % 250 + 1}"
        lines += [f"-A -t {vip}:80 -s rr", f"-a -t {vip}:80 -r 10.79.0.1:80 -m -w 1"]
    rules.write_text("\n".join(lines) + "\n")
    state = tmp_path / "state.rules"
    d = daemons("--state-file", str(state), "--restore", str(rules))
    d.proc = subprocess.Popen(d.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    threading.Thread(target=d._drain, args=(d.proc,), daemon=True).start()
    term = 1 << (signal.SIGTERM - 1)

    def catches_term() -> bool:
        assert d.proc is not None
        with (contextlib.suppress(FileNotFoundError, ProcessLookupError),
              open(f"/proc/{d.proc.pid}/status") as f):
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & term)
        return False

    wait_for(catches_term, "pylvsd never caught SIGTERM", timeout=30)
    # caught before the control socket exists: the handlers are in while the table is restored
    assert not os.path.exists(d.sock)
    d.signal(signal.SIGHUP)
    d.signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0, d.log_text()
    log = d.log_text()
    # the HUP's re-read came after the start (the file unchanged: nothing to change; the loop
    # runs the handlers at the start's end here, or while a data plane's start awaits, when
    # they are held until it is done)
    assert log.index("director ready") < log.index(f"SIGHUP: re-read {rules}: 0 changes")
    assert "director stopped" in log
    assert state.read_text().count("-A -t") == 5000
