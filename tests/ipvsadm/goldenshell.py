"""Replays the golden ipvsadm recordings' command lines in-process against an ``IPVSTable``.

The recordings were made with a shell; the few shell forms they use (``;``, ``&&``, ``|``,
``<``/``>``/``>>`` files, ``printf``, ``cat``, ``diff``, ``echo``, ``mv`` of /etc/services) are
interpreted here so each ``ipvsadm`` step runs through ``pylvs.ipvsadm.runner.run`` (and the
``ipvsadm-save``/``-restore`` scripts through their ``pylvs.cli.ipvsadm`` entry points) with no
subprocess. Paths under /etc and /tmp map into a per-test directory: the machine's own files are never written.
"""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from pylvs.cli import ipvsadm
from pylvs.core.table import IPVSTable
from pylvs.ipvsadm.names import Resolver
from pylvs.ipvsadm.runner import run as run_ipvsadm

# /etc/hosts of the recording VM, as its own `cat /etc/hosts` step shows it.
GOLDEN_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass
class Shell:
    tmp: Path
    table: IPVSTable = field(default_factory=IPVSTable)
    services_path: str = "/etc/services"

    def __post_init__(self) -> None:
        self.hosts = self.tmp / "hosts"
        self.hosts.write_text(GOLDEN_HOSTS)

    # -- files --

    def _path(self, name: str) -> Path | None:
        if name == "/dev/null":
            return None
        if name == "/etc/hosts":
            return self.hosts
        return self.tmp / name.strip("/").replace("/", "_")

    def _read(self, name: str) -> str:
        p = self._path(name)
        return p.read_text() if p is not None and p.exists() else ""

    # -- commands --

    def resolver(self) -> Resolver:
        return Resolver(str(self.hosts), self.services_path)

    def ipvsadm(self, args: list[str], stdin: str) -> tuple[str, str, int]:
        out, err = io.StringIO(), io.StringIO()
        rc = run_ipvsadm(
            args, lambda: self.table, out, err, lambda: io.StringIO(stdin), self.resolver()
        )
        return out.getvalue(), err.getvalue(), rc

    def _simple(self, words: list[str], stdin: str) -> tuple[str, str, int]:
        prog, args = words[0], words[1:]
        if prog == "ipvsadm":
            return self.ipvsadm(args, stdin)
        if prog == "ipvsadm-save":
            out, err = io.StringIO(), io.StringIO()
            rc = ipvsadm.save_main(
                args, backend=self.table, stdout=out, stderr=err, resolver=self.resolver()
            )
            return out.getvalue(), err.getvalue(), rc
        if prog == "ipvsadm-restore":
            out, err = io.StringIO(), io.StringIO()
            rc = ipvsadm.restore_main(
                args, backend=self.table, stdout=out, stderr=err, stdin=io.StringIO(stdin),
                resolver=self.resolver(),
            )
            return out.getvalue(), err.getvalue(), rc
        if prog == "printf":
            if args and args[0] == "--":
                args = args[1:]
            text = args[0].replace("\\n", "\n").replace("\\t", "\t")
            return text, "", 0
        if prog == "cat":
            return "".join(self._read(a) for a in args) if args else stdin, "", 0
        if prog == "echo":
            return " ".join(args) + "\n", "", 0
        if prog == "diff":
            a = self._read(args[0]) if args[0] != "-" else stdin
            b = self._read(args[1]) if args[1] != "-" else stdin
            return ("", "", 0) if a == b else ("differ\n", "", 1)
        if prog == "mv" and args == ["/etc/services", "/etc/services.off"]:
            self.services_path = str(self.tmp / "no-services")
            return "", "", 0
        if prog == "mv" and args == ["/etc/services.off", "/etc/services"]:
            self.services_path = "/etc/services"
            return "", "", 0
        raise NotImplementedError(f"shell command {prog!r}")

    def run(self, cmd: str) -> tuple[str, str, int]:
        """Run one recorded command line; returns its stdout, stderr and exit status."""
        lex = shlex.shlex(cmd, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        tokens = list(lex)
        out_all, err_all, rc = "", "", 0
        i = 0
        skip_next = False
        while i < len(tokens):
            # one pipeline, up to ';' or '&&'
            j = i
            while j < len(tokens) and tokens[j] not in (";", "&&"):
                j += 1
            pipeline = tokens[i:j]
            sep = tokens[j] if j < len(tokens) else None
            i = j + 1
            if skip_next:
                skip_next = sep == "&&"
                continue
            data = ""
            for k, part in enumerate(_split(pipeline, "|")):
                words, stdin_file, stdout_file, append = _redirections(part)
                stdin = self._read(stdin_file) if stdin_file else (data if k else "")
                o, e, rc = self._simple(words, stdin)
                err_all += e
                if stdout_file:
                    p = self._path(stdout_file)
                    if p is not None:
                        prev = p.read_text() if append and p.exists() else ""
                        p.write_text(prev + o)
                    o = ""
                data = o
            out_all += data
            if sep == "&&" and rc != 0:
                skip_next = True
        return out_all, err_all, rc


def _split(tokens: list[str], sep: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for t in tokens:
        if t == sep:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def _redirections(tokens: list[str]) -> tuple[list[str], str | None, str | None, bool]:
    words: list[str] = []
    stdin_file = stdout_file = None
    append = False
    it = iter(tokens)
    for t in it:
        if t == "<":
            stdin_file = next(it)
        elif t in (">", ">>"):
            stdout_file = next(it)
            append = t == ">>"
        else:
            words.append(t)
    return words, stdin_file, stdout_file, append
