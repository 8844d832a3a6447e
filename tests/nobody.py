"""Running a command as ``nobody`` (to show what a daemon says without root): only possible
when nobody can reach this checkout's interpreter, which a clone under a private home does not
allow; such tests skip with that reason rather than fail for it."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import pytest

DROP = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@functools.cache
def _nobody_runs_python() -> bool:
    return subprocess.run([*DROP, sys.executable, "-c", "import pylvs"], capture_output=True,
                          cwd="/").returncode == 0


def need_nobody() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop to nobody")
    if not _nobody_runs_python():
        pytest.skip("nobody cannot run this checkout's interpreter (its directories are private)")
