"""The systemd units shipped with pylvs, and ``pylvs install-units`` which puts them in place.

Why a command and not a package post-install step: pylvs is installed with pip (into a venv or
the system), which has no hooks; the units must name the absolute path of the installed
commands, which only the installed package knows. The command renders the templates in
``units/`` (``@BINDIR@`` becomes the directory of the running ``pylvs`` command) and writes them
to ``/etc/systemd/system`` (``--dir`` for another place, ``--dry-run`` to print them).

Each unit follows the one it replaces on Debian 12: ``pylvs-keepalived.service`` is
keepalived.service (``Type=notify``, ``EnvironmentFile=-/etc/default/...``, ``ExecReload``
with HUP), ``pylvs-http.service`` is nginx.service (pid file, the QUIT-then-TERM stop), and
``pylvsd.service`` restores ``/etc/ipvsadm.rules`` as Debian's ipvsadm init script does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any

UNITS = ("pylvsd.service", "pylvs-keepalived.service", "pylvs-http.service")
DEFAULT_DIR = "/etc/systemd/system"
# What pylvsd.service passes to restore Debian's rules file; kept beside the template so the
# unit and the daemon's option stay in one place.
PYLVSD_RESTORE = "--restore-if-exists /etc/ipvsadm.rules"


class InstallError(Exception):
    """A reason the units cannot be installed, said in one line."""


def template(name: str) -> str:
    return resources.files("pylvs.service").joinpath("units", name).read_text()


def default_bindir() -> Path:
    """Where the installed ``pylvs`` command lives: next to the running interpreter in a venv,
    else on ``$PATH``."""
    beside = Path(sys.executable).parent
    if (beside / "pylvs").exists():
        return beside
    found = shutil.which("pylvs")
    if found:
        return Path(found).resolve().parent
    raise InstallError("cannot find the installed 'pylvs' command (pip install pylvs first, or pass --bindir)")


def render(name: str, bindir: Path) -> str:
    return (template(name)
            .replace("@BINDIR@", str(bindir))
            .replace("@PYLVSD_RESTORE@", PYLVSD_RESTORE))


def install(directory: Path, bindir: Path) -> list[Path]:
    """Write every unit into ``directory``; all are rendered first, so a failure writes none."""
    if not directory.is_dir():
        raise InstallError(f"{directory}: not a directory")
    if not os.access(directory, os.W_OK):
        raise InstallError(f"{directory}: permission denied (installing units needs root)")
    rendered = {name: render(name, bindir) for name in UNITS}
    written = []
    for name, text in rendered.items():
        path = directory / name
        tmp = path.with_name(f".{name}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InstallError(f"{path}: {exc.strerror or exc}") from None
        written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    try:
        bindir = Path(args.bindir) if args.bindir else default_bindir()
        if args.dry_run:
            for name in UNITS:
                print(f"# {Path(args.dir) / name}")
                print(render(name, bindir))
            return 0
        written = install(Path(args.dir), bindir)
    except InstallError as exc:
        print(f"pylvs install-units: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"installed {path}")
    print("now: systemctl daemon-reload; systemctl enable --now pylvs-keepalived (or pylvsd, pylvs-http)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("install-units", help="install the systemd units for pylvsd, pylvs keepalived and pylvs http")
    p.add_argument("--dir", default=DEFAULT_DIR, help="where to write the units (default %(default)s)")
    p.add_argument("--bindir", help="directory of the installed pylvs commands (default: found)")
    p.add_argument("--dry-run", action="store_true", help="print the units instead of writing them")
    p.set_defaults(func=run)
