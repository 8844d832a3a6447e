"""``pylvs keepalived``: a bad file is one clear error line with file:line and nothing starts;
keepalived 2.2.7's options are each accepted with keepalived's meaning or refused in one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pylvs.cli.main import main
from tests.nobody import DROP, need_nobody


def test_malformed_config_exits_nonzero_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance V {\n  interface lo\n  virtual_router_id 300\n}\n")
    assert main(["keepalived", "-t", "-f", str(bad)]) == 5  # keepalived -t's exit code for errors
    err = capsys.readouterr().err
    assert f"{bad}:3: error:" in err and "300" in err


def test_config_test_accepts_good_file_with_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.conf"
    good.write_text("vrrp_instance V {\n  interface lo\n  virtual_router_id 3\n  frobnicate\n"
                    "  virtual_ipaddress {\n    10.1.1.1/24\n  }\n}\n")
    assert main(["keepalived", "-t", "-f", str(good)]) == 0
    assert f"{good}:4: warning: Unknown keyword 'frobnicate'" in capsys.readouterr().err


def test_daemon_refuses_to_start_on_malformed_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance V {\n  interface lo\n  virtual_router_id 3\n")
    state = tmp_path / "state.json"
    assert main(["keepalived", "-f", str(bad), "--state-file", str(state)]) == 1
    assert not state.exists()


def test_module_entry_point_is_the_same_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pylvs.keepalived.__main__ import main as vrrp_main

    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance V {\n  interface lo\n  priority 0\n}\n")
    assert vrrp_main(["-t", "-f", str(bad)]) == 5
    assert f"{bad}:3: error:" in capsys.readouterr().err


SIGFUNCS = {"STOP": 15, "RELOAD": 1, "DATA": 10, "STATS": 12, "STATS_CLEAR": 63, "JSON": 36}


@pytest.mark.parametrize(("name", "number"), sorted(SIGFUNCS.items()))
def test_signum_prints_keepalived_numbers(name: str, number: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keepalived", f"--signum={name}"]) == 0
    assert capsys.readouterr().out.strip() == str(number)


def test_signum_numbers_match_the_real_keepalived() -> None:
    exe = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not Path(exe).exists():
        pytest.skip("keepalived (Debian package) not installed")
    for name, number in SIGFUNCS.items():
        out = subprocess.run([exe, f"--signum={name}"], capture_output=True, text=True, timeout=30).stdout
        assert out.strip() == str(number), name


def test_unknown_signum_is_one_line_and_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keepalived", "--signum=TDATA"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Unknown sigfunc TDATA" in err


@pytest.mark.parametrize("argv", [["-T"], ["--genhash"], ["-a"], ["-b", "/tmp/x.pid"], ["-x"],
                                  ["-A", "/tmp/agentx"], ["-X"], ["-s", "ns1"], ["--namespace=ns1"],
                                  ["-M"], ["--core-dump-pattern=core"]])
def test_unsupported_options_are_refused_in_one_line(argv: list[str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    conf = tmp_path / "k.conf"
    conf.write_text("global_defs {\n  router_id x\n}\n")
    assert main(["keepalived", *argv, "-f", str(conf), "--state-file", str(state)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not supported" in err
    assert not state.exists()


@pytest.mark.parametrize(("argv", "message"), [(["-S", "9"], "Invalid log facility '9'"),
                                               (["--log-facility=kern"], "Invalid log facility 'kern'"),
                                               (["-u", "abc"], "Invalid umask 'abc'")])
def test_bad_option_values_are_one_line(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("global_defs {\n  router_id x\n}\n")
    assert main(["keepalived", *argv, "-t", "-f", str(conf)]) == 1
    assert message in capsys.readouterr().err


def test_accepted_options_with_config_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every option that only shapes logging, processes or files parses alongside -t."""
    conf = tmp_path / "k.conf"
    conf.write_text("global_defs {\n  router_id x\n}\n")
    argv = ["-P", "-C", "-B", "--all", "-l", "-D", "-S", "local3", "-G", "-u", "022", "-V", "-I", "-R", "-n",
            "-d", "-p", str(tmp_path / "p"), "-r", str(tmp_path / "r"), "-c", str(tmp_path / "c"), "-m", "-e",
            "-i", "node1"]
    assert main(["keepalived", *argv, "-t", "-f", str(conf)]) == 0


def test_config_test_writes_to_the_named_log_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("vrrp_instance V {\n  interface lo\n  virtual_router_id 300\n}\n")
    out = tmp_path / "test.log"
    assert main(["keepalived", f"--config-test={out}", "-f", str(bad)]) == 5
    assert f"{bad}:3: error:" in out.read_text()


def test_config_test_checks_the_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("vrrp_instance V {\n  interface nosuchif0\n  virtual_router_id 3\n"
                    "  virtual_ipaddress {\n    10.1.1.1/24\n  }\n}\n")
    assert main(["keepalived", "-t", "-f", str(conf)]) == 5
    assert "interface nosuchif0 doesn't exist" in capsys.readouterr().err
    assert main(["keepalived", "-t", "-C", "-f", str(conf)]) == 0  # -C: no VRRP, nothing to check


def test_all_config_makes_a_missing_include_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text("include missing-*.conf\nglobal_defs {\n  router_id x\n}\n")
    assert main(["keepalived", "-t", "-f", str(conf)]) == 0
    assert "no file matches" in capsys.readouterr().err
    assert main(["keepalived", "-t", "-e", "-f", str(conf)]) == 5
    assert f"{conf}:1: error: include missing-*.conf: no file matches" in capsys.readouterr().err


def test_config_id_defaults_to_the_host_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = socket.gethostname()
    conf = tmp_path / "k.conf"
    conf.write_text(f"global_defs {{\n  @{host} frob_for_this_host\n  @other frob_for_another\n}}\n")
    assert main(["keepalived", "-t", "-f", str(conf)]) == 0
    err = capsys.readouterr().err
    assert "frob_for_this_host" in err and "frob_for_another" not in err
    assert main(["keepalived", "-t", "-i", "other", "-f", str(conf)]) == 0
    err = capsys.readouterr().err
    assert "frob_for_another" in err and "frob_for_this_host" not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keepalived", "-v"]) == 0
    assert "keepalived v2.2.7" in capsys.readouterr().out


def test_without_root_is_one_line_not_a_traceback() -> None:
    import sys
    import tempfile

    need_nobody()
    drop = DROP
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # pytest's tmp dirs are root's only
        os.chmod(d, 0o755)
        conf = Path(d) / "k.conf"
        conf.write_text("vrrp_instance VI_1 {\n state MASTER\n interface lo\n virtual_router_id 51\n"
                        " priority 100\n virtual_ipaddress {\n  10.9.9.9/32\n }\n}\n")
        conf.chmod(0o644)
        out = subprocess.run([*drop, sys.executable, "-m", "pylvs.cli.main", "keepalived", "-n", "-l",
                              "-f", str(conf)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("pylvs keepalived: Operation not permitted")
