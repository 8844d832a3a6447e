"""The entry points of ``pylvsadm``: the ipvsadm-save/-restore scripts and pylvsadm's own
``main`` (the stdin it reads, a reader that goes away), against an in-memory table."""

from __future__ import annotations

import io

from pylvs.cli.ipvsadm import main, restore_main, save_main
from pylvs.core.table import IPVSTable

TABLE = [
    "-A -t 192.168.168.100:80 -s wrr",
    "-a -t 192.168.168.100:80 -r 192.168.168.10:80 -g -w 4",
    "-a -t 192.168.168.100:80 -r 192.168.168.20:8080 -m -w 3",
    "-A -u 192.168.168.100:53 -s rr -o",
    "-a -u 192.168.168.100:53 -r 192.168.168.10:53 -m",
    "-A -f 2 -6 -s wlc -p 30 -M 64",
    "-A -t 192.168.168.113:80 -s mh -b mh-port",
]


def run(table: IPVSTable, *args: str, stdin: str = "") -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(args), backend=table, stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return out.getvalue(), err.getvalue(), rc


def build(lines: list[str]) -> IPVSTable:
    table = IPVSTable()
    for line in lines:
        _out, err, rc = run(table, *line.split())
        assert (err, rc) == ("", 0), line
    return table


def test_pylvsadm_save_and_restore_scripts_behave_like_ipvsadms() -> None:
    table = build(TABLE)
    out, err = io.StringIO(), io.StringIO()
    assert save_main(["-n"], backend=table, stdout=out, stderr=err) == 0
    saved = out.getvalue()
    assert saved.count("\n") == len(TABLE)
    other = build(["-A -t 10.9.9.9:80 -s rr"])
    rc = restore_main([], backend=other, stdout=io.StringIO(), stderr=err,
                      stdin=io.StringIO("# saved by hand\n" + saved))
    assert rc == 0 and err.getvalue() == ""
    assert run(other, "-Sn")[0] == saved  # restore clears what was there first
    err = io.StringIO()
    assert save_main(["-x"], backend=table, stdout=io.StringIO(), stderr=err) == 1
    assert err.getvalue().startswith("ipvsadm-save: Script to save the IPVS table to stdout.\n")


def test_main_strips_the_control_socket_argument_and_reads_restore_from_its_stdin() -> None:
    table = IPVSTable()
    out, err, rc = run(
        table, "--control-socket", "/nonexistent/sock", "-R",
        stdin="-A -t 10.1.1.1:80 -s rr\n-a -t 10.1.1.1:80 -r 10.2.2.2 -m\n",
    )
    assert (out, err, rc) == ("", "", 0)
    assert run(table, "-Sn")[0] == "-A -t 10.1.1.1:80 -s rr\n-a -t 10.1.1.1:80 -r 10.2.2.2:80 -m -w 1\n"


def test_a_reader_that_goes_away_ends_quietly_with_sigpipes_status() -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError

    table = build(TABLE)
    assert main(["-Ln"], backend=table, stdout=Gone(), stderr=io.StringIO()) == 141
