"""MISC_CHECK: a script decides. ``misc_path`` runs through the shell and is killed (with its
process group) at ``misc_timeout`` (default: delay_loop); exit 0 passes, 1 fails, and with
``misc_dynamic`` an exit status of 2 or more passes and sets the real server's weight to
status - 2. Connects to no port; default retry 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

from pylvs.config.grammar import Statement
from pylvs.config.keepalived.checkers import WEIGHT_SET, CheckerConfig, Endpoint, Inherit
from pylvs.config.values import Invalid, Report, number, words
from pylvs.health.checkers.base import CheckResult, HealthChecker


@dataclass(frozen=True, slots=True)
class MiscOptions:
    path: str = ""
    timeout: float | None = None  # None: the checker's delay_loop
    dynamic: bool = False


def options(cfg: CheckerConfig) -> MiscOptions:
    return cfg.options if isinstance(cfg.options, MiscOptions) else MiscOptions()


class MiscCheck(HealthChecker):
    keyword = "MISC_CHECK"
    needs_port = False
    default_retry = 0

    def option(self, st: Statement, opts: dict[str, object], endpoint: Endpoint,
               report: Report) -> bool:
        k = st.keyword
        if k == "misc_path":
            opts["path"] = words(st)
        elif k == "misc_timeout":
            opts["timeout"] = number(st, 0.000001, 4294.967295)
        elif k == "misc_dynamic":
            opts["dynamic"] = True
        else:
            return False
        return True

    def finish(self, st: Statement, opts: dict[str, object], inh: Inherit) -> object:
        if not opts.get("path"):
            raise Invalid(st, "MISC_CHECK needs misc_path")
        return MiscOptions(**opts)  # type: ignore[arg-type]

    def weight_mode(self, options: object) -> str:
        return WEIGHT_SET if isinstance(options, MiscOptions) and options.dynamic else ""

    async def probe(self, cfg: CheckerConfig) -> CheckResult:
        return await misc_check(cfg)

    def success_line(self, cfg: CheckerConfig, rs: str, vs: str, result: CheckResult) -> str:
        return f"Misc check for [{rs} VS {vs}] by [{_script_name(cfg)}] succeeded."

    def failure_line(self, cfg: CheckerConfig, rs: str, vs: str, retries: int,
                     result: CheckResult) -> str:
        """keepalived's: "... failed after 2 retries (exited with status 1)." or, with retry 0,
        "... failed with retry disabled (...)."; a script killed at its timeout "timed out"."""
        if retries:
            tail = f" after {retries} {'retry' if retries == 1 else 'retries'}"
        else:
            tail = " with retry disabled"
        if result.reason == "timed out":
            return f"Misc check for [{rs} VS {vs}] by [{_script_name(cfg)}] timed out{tail}."
        why = f" ({result.reason})" if result.reason else ""
        return f"Misc check for [{rs} VS {vs}] by [{_script_name(cfg)}] failed{tail}{why}."


def _script_name(cfg: CheckerConfig) -> str:
    """The program keepalived names in its lines: misc_path's first word."""
    words = options(cfg).path.split()
    return words[0] if words else ""


async def misc_check(cfg: CheckerConfig) -> CheckResult:
    """Run misc_path through the shell; killed (with its process group) at misc_timeout."""
    opts = options(cfg)
    timeout = opts.timeout if opts.timeout is not None else cfg.delay_loop
    proc = await asyncio.create_subprocess_shell(
        opts.path, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            rc = await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return CheckResult(False, f"MISC_CHECK {opts.path!r}: killed after {timeout:g} s",
                           reason="timed out")
    if rc == 0:
        return CheckResult(True, "MISC_CHECK exit 0")
    if rc < 0:
        return CheckResult(False, f"MISC_CHECK exit {rc}", reason=f"due to signal {-rc}")
    if rc == 1 or not opts.dynamic:
        return CheckResult(False, f"MISC_CHECK exit {rc}", reason=f"exited with status {rc}")
    return CheckResult(True, f"MISC_CHECK exit {rc}: weight {rc - 2}", weight=rc - 2)


KINDS = (MiscCheck(),)
