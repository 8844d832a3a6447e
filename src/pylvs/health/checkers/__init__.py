"""keepalived's checkers, one module each: its keywords (how each is read, its defaults), its
options dataclass and its probe. This file is the registry.

Adding a checker is a module here that defines a :class:`~pylvs.health.checkers.base.HealthChecker`
subclass and ``KINDS = (MyCheck(),)``, plus its name in :data:`MODULES`; nothing else changes:
the keepalived.conf interpreter reads its block through the kind (``pylvs.config`` does not
import ``health``, it is given :data:`KINDS`), and :func:`run_check` runs its probe.

The modules are imported by name so that the registry is that one line; importing this package
also installs :data:`KINDS` as the interpreter's default, so ``pylvs.config.keepalived.load_full``
(which the daemon calls) reads every checker.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping, Sequence

from pylvs.config.grammar import Statement
from pylvs.config.keepalived import KeepalivedConfig, LVSConfig, TrackFile
from pylvs.config.keepalived import interpret as _interpret
from pylvs.config.keepalived import load_full as _load_full
from pylvs.config.keepalived.checkers import CheckerConfig, set_default_kinds
from pylvs.health.checkers.base import CheckResult, HealthChecker

__all__ = ["KINDS", "MODULES", "CheckResult", "HealthChecker", "interpret", "load_full", "run_check"]

# The registry: one module name per checker module (a module may serve several keywords).
MODULES = ("tcp", "http", "misc", "dns", "smtp", "udp", "ping", "file")


def _registry(names: Sequence[str]) -> dict[str, HealthChecker]:
    kinds: dict[str, HealthChecker] = {}
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        for kind in module.KINDS:
            kinds[kind.keyword] = kind
    return kinds


KINDS: Mapping[str, HealthChecker] = _registry(MODULES)
set_default_kinds(KINDS)


def interpret(statements: tuple[Statement, ...] | list[Statement],
              track_files: Sequence[TrackFile] = ()) -> LVSConfig:
    """The virtual_server part of a file, read with every checker of this registry."""
    return _interpret(statements, track_files, KINDS)


def load_full(path: str, config_id: str | None = None) -> tuple[KeepalivedConfig, LVSConfig]:
    """The whole file with every checker of this registry (``pylvs.config.keepalived.load_full``)."""
    return _load_full(path, config_id, KINDS)


async def run_check(cfg: CheckerConfig) -> CheckResult:
    """One attempt of any checker kind; never raises for what a real server does."""
    probe = KINDS[cfg.kind].probe
    try:
        return await probe(cfg)
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return CheckResult(False, f"{cfg.kind}: {exc.__class__.__name__}: {exc}")
