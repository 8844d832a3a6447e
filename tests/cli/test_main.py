"""The ``pylvs`` command: every subcommand is where SUBCOMMANDS says, and only its code loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pylvs.cli.main import SUBCOMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_each_subcommand_is_registered_by_its_module(command: str) -> None:
    parser = build_parser(command)
    args = parser.parse_args([command, *_minimal_args(command)])
    assert callable(args.func)


def _minimal_args(command: str) -> list[str]:
    return {
        "genhash": ["-s", "127.0.0.1", "-u", "/"],
        "lab": ["status"],
        "rs-setup": ["--vip", "192.168.168.100", "--mode", "dr", "--dry-run"],
        "director-setup": ["--vip", "192.168.168.100/24", "--dev", "eth0", "--dry-run"],
        "man": ["pylvsd"],
        "scaleout": ["status"],
    }.get(command, [])


def test_running_one_subcommand_does_not_import_the_others() -> None:
    code = (
        "import sys\n"
        "from pylvs.cli.main import build_parser\n"
        "build_parser('keepalived')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pylvs.lab', 'pylvs.l7', 'pylvs.dataplane.proxy'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out


def test_a_reader_that_goes_away_is_not_a_traceback() -> None:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "pylvs.cli.main", "install-units", "--dry-run"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(10)
    p.stdout.close()
    assert p.wait(30) in (0, 141)
    assert b"Traceback" not in p.stderr.read()
