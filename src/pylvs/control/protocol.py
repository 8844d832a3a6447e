"""The control socket's wire format: one JSON object per line, each way.

What this is for: carrying ``IPVSBackend`` calls from ``pylvsadm`` (and other local tools) to the
director daemon and their results or ``IPVSError`` back, so that pylvsadm behaves the same whether
the table is in this process, in the daemon or in the kernel.

Request:  ``{"op": "add_dest", "args": {...}}``
Reply:    ``{"ok": true, "result": ...}`` or ``{"ok": false, "errno": 17, "error": "..."}``

Encoding and decoding of each operation's arguments live here, on both sides of the socket,
so the two cannot drift apart. Every argument is checked (``pylvs.control.validate``: ipvsadm's
ranges and words) before the operation runs, so a refused request changes nothing. Nothing here
touches a socket.

Beyond ipvsadm: ``get_sysctl`` / ``set_sysctl`` (``{"values": {"drop_entry": 1}}``) read and
write the core's settings under their kernel sysctl names (``pylvs.core.defense``, sloppy_*,
``pylvs.core.sync.SyncSettings``); a vector setting is a list, as its file holds several
integers (``"sync_threshold": [3, 50]``); ipvsadm has no words for them (the kernel's are files
under /proc/sys/net/ipv4/vs/).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from pylvs.control import validate as V
from pylvs.core.api import IPVSBackend, IPVSError, ServiceStatus, SyncDaemonStatus
from pylvs.core.model import ConnEntry, ServiceInfo

log = logging.getLogger("pylvs.control")

DEFAULT_SOCKET = "/run/pylvs/pylvs.sock"
ENV_SOCKET = "PYLVS_CONTROL_SOCKET"
# A request line longer than this is refused and the connection closed: a client cannot make the
# daemon buffer without bound.
MAX_LINE = 1 << 20


class ProtocolError(Exception):
    """A request that is not valid JSON, names no known operation, or has bad arguments."""


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad JSON: {exc}") from None


# ---- server side: op name -> function(backend, args) -> JSON-able result --------------------

def _info(b: IPVSBackend, a: dict[str, Any]) -> Any:
    i = b.get_info()
    return {"version": i.version, "conn_tab_size": i.conn_tab_size, "num_services": i.num_services}


def _services(b: IPVSBackend, a: dict[str, Any]) -> Any:
    return [s.to_wire() for s in b.get_services()]


def _service(b: IPVSBackend, a: dict[str, Any]) -> Any:
    return b.get_service(V.service_key(a.get("key"))).to_wire()


def _add_service(b: IPVSBackend, a: dict[str, Any]) -> Any:
    b.add_service(V.service_spec(a.get("spec")))


def _edit_service(b: IPVSBackend, a: dict[str, Any]) -> Any:
    b.edit_service(V.service_spec(a.get("spec")))


def _del_service(b: IPVSBackend, a: dict[str, Any]) -> Any:
    b.del_service(V.service_key(a.get("key")))


def _flush(b: IPVSBackend, a: dict[str, Any]) -> Any:
    b.flush()


def _add_dest(b: IPVSBackend, a: dict[str, Any]) -> Any:
    key, dest = V.service_key(a.get("key")), V.dest_spec(a.get("dest"))
    b.add_dest(key, dest)


def _edit_dest(b: IPVSBackend, a: dict[str, Any]) -> Any:
    key, dest = V.service_key(a.get("key")), V.dest_spec(a.get("dest"))
    b.edit_dest(key, dest)


def _del_dest(b: IPVSBackend, a: dict[str, Any]) -> Any:
    key = V.service_key(a.get("key"))
    addr, port = V.dest_address(a)
    b.del_dest(key, addr, port)


def _zero(b: IPVSBackend, a: dict[str, Any]) -> Any:
    key = a.get("key")
    b.zero(V.service_key(key) if key is not None else None)


def _timeouts(b: IPVSBackend, a: dict[str, Any]) -> Any:
    t = b.get_timeouts()
    return [t.tcp, t.tcp_fin, t.udp]


def _set_timeouts(b: IPVSBackend, a: dict[str, Any]) -> Any:
    b.set_timeouts(V.timeouts(a.get("timeouts")))


def _connections(b: IPVSBackend, a: dict[str, Any]) -> Any:
    return [c.to_wire() for c in b.get_connections()]


def daemon_to_wire(d: SyncDaemonStatus) -> dict[str, Any]:
    return {
        "state": d.state, "mcast_ifn": d.mcast_ifn, "syncid": d.syncid,
        "sync_maxlen": d.sync_maxlen, "mcast_group": d.mcast_group,
        "mcast_port": d.mcast_port, "mcast_ttl": d.mcast_ttl,
    }


def _daemons(b: IPVSBackend, a: dict[str, Any]) -> Any:
    return [daemon_to_wire(d) for d in b.get_daemons()]


def _start_daemon(b: IPVSBackend, a: dict[str, Any]) -> Any:
    daemon = V.daemon(a.get("daemon"))
    start = getattr(b, "start_daemon", None)
    if start is None:
        raise IPVSError(95, "connection synchronisation daemons are not supported by this table")
    start(daemon)


def _stop_daemon(b: IPVSBackend, a: dict[str, Any]) -> Any:
    state = V.daemon_state(a.get("state"))
    stop = getattr(b, "stop_daemon", None)
    if stop is None:
        raise IPVSError(95, "connection synchronisation daemons are not supported by this table")
    stop(state)


def _get_sysctl(b: IPVSBackend, a: dict[str, Any]) -> Any:
    get = getattr(b, "get_sysctl", None)
    if get is None:
        raise IPVSError(95, "this table has no flood defences")
    return get()


def _get_defense(b: IPVSBackend, a: dict[str, Any]) -> Any:
    get = getattr(b, "get_defense", None)
    if get is None:
        raise IPVSError(95, "this table has no flood defences")
    return get()


def _set_sysctl(b: IPVSBackend, a: dict[str, Any]) -> Any:
    put = getattr(b, "set_sysctl", None)
    if put is None:
        raise IPVSError(95, "this table has no flood defences")
    put(V.sysctl_values(a.get("values")))


OPERATIONS: dict[str, Callable[[IPVSBackend, dict[str, Any]], Any]] = {
    "get_info": _info,
    "get_services": _services,
    "get_service": _service,
    "add_service": _add_service,
    "edit_service": _edit_service,
    "del_service": _del_service,
    "flush": _flush,
    "add_dest": _add_dest,
    "edit_dest": _edit_dest,
    "del_dest": _del_dest,
    "zero": _zero,
    "get_timeouts": _timeouts,
    "set_timeouts": _set_timeouts,
    "get_connections": _connections,
    "get_daemons": _daemons,
    "start_daemon": _start_daemon,
    "stop_daemon": _stop_daemon,
    "get_sysctl": _get_sysctl,
    "set_sysctl": _set_sysctl,
    "get_defense": _get_defense,
}

# Checks run before a daemon's own handler of the same operation (``extra``).
PRECHECKS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "start_daemon": lambda a: V.daemon(a.get("daemon")),
    "stop_daemon": lambda a: V.daemon_state(a.get("state")),
}

# Operations that only read: the daemon may answer them without a write lock or a save.
READ_ONLY = frozenset({
    "get_info", "get_services", "get_service", "get_timeouts", "get_connections", "get_daemons",
    "get_sysctl", "get_defense",
})


def dispatch(backend: IPVSBackend, request: Any, extra: dict[str, Callable[[dict[str, Any]], Any]] | None = None) -> dict[str, Any]:
    """Run one decoded request against ``backend``; never raises for a bad request."""
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        return {"ok": False, "errno": 22, "error": "request must be an object with an 'op' string"}
    op = request["op"]
    args = request.get("args") or {}
    if not isinstance(args, dict):
        return {"ok": False, "errno": 22, "error": "'args' must be an object"}
    try:
        if extra is not None and op in extra:
            check = PRECHECKS.get(op)
            if check is not None:
                check(args)  # the daemon's own handler gets only what ipvsadm would pass
            return {"ok": True, "result": extra[op](args)}
        fn = OPERATIONS.get(op)
        if fn is None:
            return {"ok": False, "errno": 95, "error": f"unknown operation {op!r}"}
        return {"ok": True, "result": fn(backend, args)}
    except IPVSError as exc:
        return {"ok": False, "errno": exc.errno, "error": str(exc)}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return {"ok": False, "errno": 22, "error": f"bad arguments for {op}: {exc!r}"}
    except Exception as exc:  # a bug must not take the daemon down with it
        log.exception("control operation %s failed", op)
        return {"ok": False, "errno": 5, "error": f"internal error in {op}: {exc!r}"}


# ---- client side: results back into model objects ------------------------------------------

def info_from_wire(r: dict[str, Any]) -> ServiceInfo:
    return ServiceInfo(str(r["version"]), int(r["conn_tab_size"]), int(r["num_services"]))


def services_from_wire(r: list[dict[str, Any]]) -> list[ServiceStatus]:
    return [ServiceStatus.from_wire(x) for x in r]


def connections_from_wire(r: list[dict[str, Any]]) -> list[ConnEntry]:
    return [ConnEntry.from_wire(x) for x in r]


def daemons_from_wire(r: list[dict[str, Any]]) -> list[SyncDaemonStatus]:
    return [SyncDaemonStatus(**x) for x in r]
