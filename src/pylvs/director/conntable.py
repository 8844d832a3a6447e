"""pylvsd's connection table across a planned restart (packet and xdp data planes).

What this is for: on kernel IPVS the connection table lives in the kernel, so restarting
``ipvsadm``'s user space touches no live flow. pylvsd keeps its connection table in its own
memory; a packet-plane director that is stopped and started again (an upgrade, a changed
option) would come back knowing none of its flows, and the next mid-stream segment of each one
would find no entry and not be scheduled (only a SYN opens one, unless ``sloppy_tcp``), so every
established connection through it would die. So on a clean stop (SIGTERM, SIGINT, SIGQUIT) the
daemon writes its entries next to its state file (``<state file>.connections``), and at the next
start, after the table is restored and before the data plane starts, it takes back those whose
real server is still in the table, bound to it (``ConnectionTable.adopt``: counts, template
links), with what was left of their expiry less the time the director was down; the file is
then deleted.

Why only a planned restart: the file is written on a clean stop and removed as soon as it is
read, so a daemon that crashes, is killed or OOM-killed has no file at its next start and begins
with an empty connection table. A table from an earlier clean stop must never be read after a
crash: it would put back flows that closed long ago, bind clients to servers they have left and
count connections nobody holds. A stale table is worse than none (new SYNs schedule afresh; the
flows that were live when a crash hit are lost, as they are on a kernel director that reboots).

Which planes: ``packet`` and ``xdp`` (the xdp plane is the packet plane with an XDP program in
front; its kernel flow map goes with the process and the forwarder offers each flow again at its
next packet). The ``proxy`` plane's connections are sockets, which end with the process: nothing
is written and a file found at start is removed unread. The ``kernel`` plane's connections are in
the kernel's table, which outlives pylvsd by itself.

Format: JSON lines, written atomically (temporary file, fsync, rename, directory fsync): a
header ``{"pylvs_connections": 1, "saved_at": <wall-clock seconds>, "entries": N}``, then one
object per entry, persistence templates first (``id``), each connection naming its template in
``control``. The whole file is checked before anything is taken in; one that is not right is
refused in one logged line and the daemon starts without it.

What this is not for: the IPVS table (``pylvs.director.state``) or the sync daemons, which hand
connections to another director (``pylvs.director.sync``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from pylvs.core.conntrack import (
    CONN_F_FWD_MASK,
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    CONN_F_TEMPLATE,
    TCP_STATE_ACTIVE,
    Connection,
    make_ckey,
)
from pylvs.core.director import Director
from pylvs.core.model import IPAddress, ServiceKey
from pylvs.director.state import StateError, read_rules_file, write_atomically

log = logging.getLogger("pylvs.director")

SUFFIX = ".connections"
FORMAT_VERSION = 1
# The planes whose connections are entries of the Director's table and nothing else.
KEEPS_CONNECTIONS = frozenset({"packet", "xdp"})
SAVED_FLAGS = CONN_F_FWD_MASK | CONN_F_NOOUTPUT | CONN_F_INACTIVE | CONN_F_TEMPLATE
_TCP, _UDP = 6, 17
MAX_TIMEOUT = 2**31 - 1


class ConnTableError(ValueError):
    """A connection table file that is not one: ``PATH:LINE: what is wrong``."""


def connections_path(state_path: str) -> str:
    """Where the connection table of the director keeping ``state_path`` goes."""
    return state_path + SUFFIX


def _addr(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def dump(director: Director, saved_at: float) -> tuple[str, int]:
    """The text of the file for ``director``'s entries now, and how many it holds.

    Entries of a real server that was deleted are left out (there is nothing to bind them to);
    so is a connection whose template is no longer hashed (it is written without its link)."""
    now = director.clock()
    entries = [c for c in director.conns.entries() if c.dest.service is not None]
    entries.sort(key=lambda c: not c.is_template)  # templates first: connections name them
    ids: dict[int, int] = {}
    lines = []
    for n, c in enumerate(entries):
        svc = c.dest.service
        assert svc is not None
        ct = c.control
        record: dict[str, Any] = {
            "id": n,
            "protocol": c.protocol,
            "caddr": _addr(c.caddr), "cport": c.cport,
            "vaddr": _addr(c.vaddr), "vport": c.vport,
            "service": svc.key.to_wire(),
            "daddr": str(c.dest.addr), "dest_port": c.dest.port, "dport": c.dport,
            "flags": c.flags & SAVED_FLAGS,
            "state": c.state, "state_name": c.state_name,
            "timeout": c.timeout,
            "expires": round(max(0.0, c.deadline - now), 3),
            "control": ids.get(id(ct)) if ct is not None else None,
        }
        if c.is_template:
            ids[id(c)] = n
        lines.append(json.dumps(record, separators=(",", ":")))
    head = {"pylvs_connections": FORMAT_VERSION, "saved_at": round(saved_at, 3),
            "entries": len(lines)}
    return "".join(f"{line}\n" for line in [json.dumps(head), *lines]), len(lines)


def save(director: Director, path: str, saved_at: float) -> int:
    """Write the table to ``path`` durably (``OSError``, no file left behind, if it fails);
    returns the number of entries written."""
    text, count = dump(director, saved_at)
    write_atomically(path, text)
    return count


@dataclass(frozen=True, slots=True)
class Entry:
    """One saved entry, checked."""

    id: int
    protocol: int
    caddr: bytes
    cport: int
    vaddr: bytes
    vport: int
    service: ServiceKey
    daddr: IPAddress
    dest_port: int
    dport: int
    flags: int
    state: int
    timeout: int
    expires: float
    control: int | None


def _int(d: dict[str, Any], name: str, low: int, high: int) -> int:
    v = d.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ValueError(f"{name}: an integer in [{low}, {high}] is required")
    return v


def _packed(d: dict[str, Any], name: str) -> bytes:
    v = d.get(name)
    if not isinstance(v, str):
        raise ValueError(f"{name}: an address is required")
    return ipaddress.ip_address(v).packed


def _entry(d: Any) -> Entry:
    if not isinstance(d, dict):
        raise ValueError("not an object")
    protocol = _int(d, "protocol", 0, 255)
    flags = _int(d, "flags", 0, SAVED_FLAGS)
    if flags & ~SAVED_FLAGS:
        raise ValueError(f"flags: unknown bits 0x{flags & ~SAVED_FLAGS:x}")
    state = _int(d, "state", 0, 10)
    if flags & CONN_F_TEMPLATE:
        if state > 1:
            raise ValueError("state: a template's is 0 or 1")
    elif protocol == _UDP:
        if state:
            raise ValueError("state: a UDP entry's is 0")
    elif protocol != _TCP:
        raise ValueError(f"protocol {protocol}: only TCP and UDP connections are kept")
    caddr, vaddr = _packed(d, "caddr"), _packed(d, "vaddr")
    if len(caddr) != len(vaddr):
        raise ValueError("caddr and vaddr: not of one family")
    expires = d.get("expires")
    if isinstance(expires, bool) or not isinstance(expires, int | float) \
            or not math.isfinite(expires) or expires < 0:
        raise ValueError("expires: a number of seconds is required")
    control = d.get("control")
    if control is not None:
        control = _int(d, "control", 0, 2**62)
    service = d.get("service")
    if not isinstance(service, dict):
        raise ValueError("service: an object is required")
    try:
        key = ServiceKey.from_wire(service)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"service: {exc}") from None
    daddr = d.get("daddr")
    if not isinstance(daddr, str):
        raise ValueError("daddr: an address is required")
    return Entry(
        _int(d, "id", 0, 2**62), protocol, caddr, _int(d, "cport", 0, 65535), vaddr,
        _int(d, "vport", 0, 65535), key, ipaddress.ip_address(daddr),
        _int(d, "dest_port", 0, 65535), _int(d, "dport", 0, 65535), flags, state,
        _int(d, "timeout", 1, MAX_TIMEOUT), float(expires), control,
    )


def parse(text: str, path: str) -> tuple[float, list[Entry]]:
    """When the file was saved and its entries, every line checked (``ConnTableError``)."""
    lines = text.splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("pylvs_connections") != FORMAT_VERSION:
        raise ConnTableError(f"{path}:1: not a pylvs connection table (version {FORMAT_VERSION})")
    saved_at = head.get("saved_at")
    if isinstance(saved_at, bool) or not isinstance(saved_at, int | float) \
            or not math.isfinite(saved_at):
        raise ConnTableError(f"{path}:1: saved_at: a time is required")
    entries: list[Entry] = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entries.append(_entry(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError too
            raise ConnTableError(f"{path}:{n}: {exc}") from None
    if head.get("entries") != len(entries):
        raise ConnTableError(f"{path}: says {head.get('entries')} entries, holds {len(entries)}")
    return float(saved_at), entries


@dataclass(slots=True)
class Restored:
    """What a restore did with the saved entries."""

    saved: int = 0
    restored: int = 0
    expired: int = 0  # its time ran out while the director was down
    no_dest: int = 0  # its service or real server is not in the table (or forwards otherwise)
    duplicate: int = 0
    full: int = 0  # the table was at max_connections
    downtime: float = 0.0

    def summary(self) -> str:
        return (f"{self.restored} of {self.saved} connection entries taken back after "
                f"{self.downtime:.1f} s down ({self.expired} expired, {self.no_dest} without "
                f"their real server, {self.duplicate} already there, {self.full} past "
                f"max_connections)")


def adopt(director: Director, entries: list[Entry], downtime: float) -> Restored:
    """Put ``entries`` back in ``director``'s table, each bound to its real server, expiring
    ``downtime`` seconds sooner than it would have. A template whose time ran out is kept while
    a connection it controls comes back (the kernel re-arms such a template too)."""
    out = Restored(saved=len(entries), downtime=downtime)
    live = {e.control for e in entries if not e.flags & CONN_F_TEMPLATE
            and e.control is not None and e.expires - downtime > 0}
    table = director.conns
    now = director.clock()
    templates: dict[int, Connection] = {}
    for e in entries:
        template = bool(e.flags & CONN_F_TEMPLATE)
        left = min(e.expires, e.timeout) - downtime
        if left <= 0 and not (template and e.id in live):
            out.expired += 1
            continue
        svc = director.table.lookup(e.service)
        dest = svc.find_dest(e.daddr, e.dest_port) if svc is not None else None
        if dest is None or int(dest.fwd) != e.flags & CONN_F_FWD_MASK:
            out.no_dest += 1
            continue
        if director.connection_count >= director.max_connections:
            out.full += 1
            continue
        flags = e.flags
        if not template:  # the counts follow the state, whatever the file says
            active = e.protocol == _TCP and TCP_STATE_ACTIVE[e.state]
            flags = flags & ~CONN_F_INACTIVE if active else flags | CONN_F_INACTIVE
        conn = Connection(make_ckey(e.protocol, e.caddr, e.cport), e.vaddr, e.vport, dest,
                          e.dport, flags, e.state, e.timeout)
        control = templates.get(e.control) if e.control is not None else None
        if not table.adopt(conn, now, max(0.0, left), control):
            out.duplicate += 1
            continue
        director.defense.half_open.note(conn)  # drop_entry's, as before the restart
        if template:
            templates[e.id] = conn
        out.restored += 1
    return out


def restore(director: Director, path: str, now_wall: float) -> Restored | None:
    """Take back the table saved at ``path`` and delete the file (read once, never again);
    None when there is none. ``ConnTableError`` when it cannot be read, is not right, or
    cannot be deleted (it would be read again after a later crash): nothing is taken in then,
    and the file is removed where it can be."""
    try:
        text = read_rules_file(path)
    except StateError as exc:
        with contextlib.suppress(OSError):
            _remove(path)
        raise ConnTableError(str(exc)) from None
    if text is None:
        return None
    try:
        _remove(path)
    except OSError as exc:
        raise ConnTableError(f"{path}: cannot delete it, so it is not used (a later start "
                             f"would read it again): {exc.strerror or exc}") from None
    saved_at, entries = parse(text, path)
    return adopt(director, entries, max(0.0, now_wall - saved_at))


def discard(path: str) -> bool:
    """Remove a connection table a plane without one left (True if there was one)."""
    if not os.path.lexists(path):
        return False
    with contextlib.suppress(OSError):
        _remove(path)
    return True


def _remove(path: str) -> None:
    """Unlink ``path`` and make that durable (a crash just after must not bring it back)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    directory = os.path.dirname(path) or "."
    with contextlib.suppress(OSError):
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
