"""The proxy data plane's timeouts as pylvsd's files carry them: ``# pylvs-proxy:`` lines.

What this is for: ipvsadm has no words for HAProxy-style timeouts (the kernel never holds a
connection itself), so per-service ones live in pylvsd's restore file and state file as comments
that ``ipvsadm -R`` skips: ``# pylvs-proxy: -t 10.0.0.1:80 server=5 client=30``
(``pylvs.dataplane.proxy.settings``). This module reads them out of a rule file's text (each bad
one is ``FILE:LINE: ...``, like a bad rule), writes the live ones back after the rules when the
table is saved, and applies a file's set to the running plane (a service the new file no longer
names goes back to the defaults). The defaults for every service and the limits come from
``--proxy-timeouts`` (``ProxySettings.parse``).

A data plane other than the proxy has no such timeouts: the lines are kept in the files (they
are the operator's) but change nothing.

What this is not for: the timeouts' meaning or their enforcement (the proxy plane).
"""

from __future__ import annotations

from typing import Any

from pylvs.core.model import ServiceKey
from pylvs.dataplane.proxy.settings import (
    SettingsError,
    Timeouts,
    format_directive,
    parse_directive,
)

Directives = dict[ServiceKey, Timeouts]


class DirectiveError(ValueError):
    """A ``# pylvs-proxy:`` line that cannot be used: ``FILE:LINE: what is wrong``."""


def parse_directives(text: str, source: str) -> Directives:
    """Every ``# pylvs-proxy:`` line of a rule file's text (a later line for the same service
    replaces an earlier one), or ``DirectiveError`` naming the first bad one."""
    out: Directives = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            found = parse_directive(line)
        except SettingsError as exc:
            raise DirectiveError(f"{source}:{number}: {exc}") from None
        if found is not None:
            out[found[0]] = found[1]
    return out


def _order(key: ServiceKey) -> tuple[int, int, str, int]:
    return (int(key.af), int(key.protocol), str(key.addr), key.port)


def format_lines(directives: Directives) -> list[str]:
    """The file lines for ``directives``, in a stable order (``parse_directives`` reads them)."""
    return [format_directive(k, directives[k]) for k in sorted(directives, key=_order)]


def live_directives(plane: Any) -> Directives | None:
    """The per-service timeouts ``plane`` runs with; None for a plane that has none."""
    if plane is None or not hasattr(plane, "set_service_timeouts"):
        return None
    return dict(plane.settings.services)


def after_reload(live: Directives, previous: Directives, wanted: Directives) -> Directives:
    """What ``live`` becomes when a file's ``wanted`` replaces the last file's ``previous``
    (per-service timeouts from elsewhere, the environment, are kept)."""
    out = {k: t for k, t in live.items() if k not in previous}
    out.update(wanted)
    return out


def apply_directives(plane: Any, wanted: Directives, previous: Directives) -> int:
    """Make ``plane``'s per-service timeouts the file's: ``wanted`` set, services only in
    ``previous`` (the last file's) back to the defaults. The number of changes; 0 for a plane
    without per-service timeouts."""
    setter = getattr(plane, "set_service_timeouts", None)
    if setter is None:
        return 0
    changes = 0
    for key in previous.keys() - wanted.keys():
        setter(key, None)
        changes += 1
    for key, timeouts in wanted.items():
        if plane.settings.services.get(key) != timeouts:
            setter(key, timeouts)
            changes += 1
    return changes
