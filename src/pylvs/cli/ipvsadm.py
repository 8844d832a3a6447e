"""``pylvsadm``: ipvsadm 1.31, letter for letter, against a pylvs table.

What this is for: an LVS operator's commands, scripts and saved rule files work unchanged. This
module is the three programs' entry points (``pylvsadm``, ``pylvsadm-save``,
``pylvsadm-restore``): the process's arguments and streams, the ``--control-socket PATH``
argument (not an ipvsadm option), standard input read as bytes the way ipvsadm reads it, and a
reader that goes away (``pylvsadm -Ln | head``). The language itself (parsing with ipvsadm's
rules, running commands, listings, rule files) is ``pylvs.ipvsadm``; exit codes are ipvsadm's:
0 done; 2 a bad command line; 255 an error from the table (or an unknown option); 1 ``-L`` of a
missing service.

The table is an ``IPVSBackend``: the director daemon over its control socket by default
(``--control-socket PATH``, ``$PYLVS_CONTROL_SOCKET``, or ``/run/pylvs/pylvs.sock``), the
kernel's IPVS when no director runs, or whatever the caller passes in (tests pass an
``IPVSTable``).

What this is not for: holding the table, or the director's strict reading of its own rule file
(``pylvs.ipvsadm.rules``).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

from pylvs.core.api import IPVSBackend
from pylvs.ipvsadm.backend import select_backend
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.runner import run


def _split_control_socket(argv: list[str]) -> tuple[list[str], str | None]:
    """Take ``--control-socket PATH`` (not an ipvsadm option) out of the arguments."""
    out: list[str] = []
    path: str | None = None
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--control-socket" and i + 1 < len(argv):
            path = argv[i + 1]
            i += 2
            continue
        if word.startswith("--control-socket="):
            path = word.split("=", 1)[1]
            i += 1
            continue
        out.append(word)
        i += 1
    return out, path


def _stdin_as_ipvsadm_reads_it() -> IO[str]:
    """Standard input with lines ending only at ``\\n`` (a lone CR is a blank, as in C) and no
    decoding error possible: rule files are bytes to ipvsadm."""
    global _STDIN
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin
    if _STDIN is None or _STDIN[0] is not buffer:
        # Kept for the life of the process: a collected wrapper would close the real stdin.
        _STDIN = (buffer, io.TextIOWrapper(
            buffer, encoding="utf-8", errors="surrogateescape", newline="\n"
        ))
    return _STDIN[1]


_STDIN: tuple[Any, IO[str]] | None = None


def main(
    argv: Sequence[str] | None = None,
    *,
    backend: IPVSBackend | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    stdin: IO[str] | None = None,
    resolver: Resolver | None = None,
) -> int:
    """Run one ipvsadm command line; returns ipvsadm's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    args, socket_path = _split_control_socket(args)
    chosen: list[IPVSBackend] = [backend] if backend is not None else []

    def get_backend() -> IPVSBackend:
        if not chosen:
            chosen.append(select_backend(socket_path))
        return chosen[0]

    def get_input() -> IO[str]:
        return stdin if stdin is not None else _stdin_as_ipvsadm_reads_it()

    try:
        rc = run(args, get_backend, out, err, get_input, resolver or Resolver.from_environment())
    except BrokenPipeError:
        # `pylvsadm -Ln | head`: the reader went away; end quietly as a C tool killed by SIGPIPE.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        rc = 141
    finally:
        close = getattr(chosen[0], "close", None) if chosen and backend is None else None
        if close is not None:
            close()
    return rc & 0xFF


def save_main(argv: Sequence[str] | None = None, **kwargs: Any) -> int:
    """``pylvsadm-save [-n]``: ipvsadm-save, the table as ``-A``/``-a`` lines on stdout."""
    args, socket_path = _split_control_socket(list(sys.argv[1:] if argv is None else argv))
    err = kwargs.get("stderr") or sys.stderr
    numeric = False
    for a in args:
        if a == "-n":
            numeric = True
        elif a.startswith("-"):
            err.write(
                "ipvsadm-save: Script to save the IPVS table to stdout.\n"
                "   With the -n option, prints out the table in numeric format.\n"
            )
            return 1
    where = ["--control-socket", socket_path] if socket_path else []
    return main([*where, "-S", *(["-n"] if numeric else [])], **kwargs)


def restore_main(argv: Sequence[str] | None = None, **kwargs: Any) -> int:
    """``pylvsadm-restore``: ipvsadm-restore, ``#`` lines dropped, the table cleared, then ``-R``.

    Like the script, the exit status is the restore's; other arguments are ignored.
    """
    args, socket_path = _split_control_socket(list(sys.argv[1:] if argv is None else argv))
    del args  # ipvsadm-restore takes none
    where = ["--control-socket", socket_path] if socket_path else []
    inp = kwargs.pop("stdin", None) or _stdin_as_ipvsadm_reads_it()
    kept = [ln for ln in inp.read().split("\n") if not ln.startswith("#")]
    text = "\n".join(kept).rstrip("\n") + "\n"
    main([*where, "-C"], **kwargs)
    return main([*where, "-R"], stdin=io.StringIO(text), **kwargs)


if __name__ == "__main__":
    sys.exit(main())
