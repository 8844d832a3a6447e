"""``ControlClient``: an ``IPVSBackend`` that is a running director daemon, reached over its socket.

What this is for: ``pylvsadm`` and other short-lived tools. It is synchronous and blocking on
purpose (a command-line tool does one thing and exits), with a timeout on every step so a stuck
or absent daemon gives a clear error at once rather than a hang.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Any

from pylvs.control import protocol as P
from pylvs.core.api import BackendUnavailable, IPVSError, ServiceStatus, SyncDaemonStatus
from pylvs.core.model import (
    ConnEntry,
    DestSpec,
    IPAddress,
    ServiceInfo,
    ServiceKey,
    ServiceSpec,
    Timeouts,
)

# Half the daemon's idle timeout (``pylvs.control.server.IDLE_TIMEOUT``).
IDLE_RECONNECT = 30.0


def default_socket_path(explicit: str | None = None) -> str:
    """The control socket: an explicit path, else ``$PYLVS_CONTROL_SOCKET``, else the default."""
    return explicit or os.environ.get(P.ENV_SOCKET) or P.DEFAULT_SOCKET


class ControlClient:
    """One connection to the daemon; each call is one request line and one reply line."""

    def __init__(self, path: str | None = None, timeout: float = 10.0) -> None:
        self.path = default_socket_path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._used = 0.0  # monotonic time of the last exchange

    def connect(self) -> None:
        if self._sock is not None:
            return
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except FileNotFoundError:
            s.close()
            raise BackendUnavailable(
                f"no pylvs director is running: control socket {self.path} does not exist"
            ) from None
        except ConnectionRefusedError:
            s.close()
            raise BackendUnavailable(
                f"no pylvs director is running: nothing listens on {self.path}"
            ) from None
        except PermissionError:
            s.close()
            raise BackendUnavailable(
                f"permission denied on control socket {self.path} (you must be root)"
            ) from None
        except OSError as exc:
            s.close()
            raise BackendUnavailable(f"cannot reach the director at {self.path}: {exc.strerror}") from None
        self._sock = s

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its result; raise ``IPVSError`` for a refused one."""
        if self._sock is not None and time.monotonic() - self._used > IDLE_RECONNECT:
            self.close()  # the daemon closes connections idle for IDLE_TIMEOUT: start afresh
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(P.encode({"op": op, "args": args}))
            while b"\n" not in self._buf:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise BackendUnavailable(f"the director closed the control connection ({self.path})")
                self._buf += chunk
        except TimeoutError:
            self.close()
            raise BackendUnavailable(f"the director at {self.path} did not answer in {self.timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise BackendUnavailable(f"control connection to {self.path} failed: {exc.strerror}") from None
        self._used = time.monotonic()
        line, _, self._buf = self._buf.partition(b"\n")
        reply = P.decode(line)
        if not reply.get("ok"):
            raise IPVSError(int(reply.get("errno", errno.EIO)), str(reply.get("error", "")))
        return reply.get("result")

    # ---- IPVSBackend --------------------------------------------------------------------

    def get_info(self) -> ServiceInfo:
        return P.info_from_wire(self.call("get_info"))

    def get_services(self) -> list[ServiceStatus]:
        return P.services_from_wire(self.call("get_services"))

    def get_service(self, key: ServiceKey) -> ServiceStatus:
        return ServiceStatus.from_wire(self.call("get_service", key=key.to_wire()))

    def add_service(self, spec: ServiceSpec) -> None:
        self.call("add_service", spec=spec.to_wire())

    def edit_service(self, spec: ServiceSpec) -> None:
        self.call("edit_service", spec=spec.to_wire())

    def del_service(self, key: ServiceKey) -> None:
        self.call("del_service", key=key.to_wire())

    def flush(self) -> None:
        self.call("flush")

    def add_dest(self, key: ServiceKey, dest: DestSpec) -> None:
        self.call("add_dest", key=key.to_wire(), dest=dest.to_wire())

    def edit_dest(self, key: ServiceKey, dest: DestSpec) -> None:
        self.call("edit_dest", key=key.to_wire(), dest=dest.to_wire())

    def del_dest(self, key: ServiceKey, addr: IPAddress, port: int) -> None:
        self.call("del_dest", key=key.to_wire(), addr=str(addr), port=port)

    def zero(self, key: ServiceKey | None = None) -> None:
        self.call("zero", key=key.to_wire() if key is not None else None)

    def get_timeouts(self) -> Timeouts:
        tcp, fin, udp = self.call("get_timeouts")
        return Timeouts(int(tcp), int(fin), int(udp))

    def set_timeouts(self, timeouts: Timeouts) -> None:
        self.call("set_timeouts", timeouts=[timeouts.tcp, timeouts.tcp_fin, timeouts.udp])

    def get_connections(self) -> list[ConnEntry]:
        return P.connections_from_wire(self.call("get_connections"))

    def get_daemons(self) -> list[SyncDaemonStatus]:
        return P.daemons_from_wire(self.call("get_daemons"))

    def start_daemon(self, d: SyncDaemonStatus) -> None:
        self.call("start_daemon", daemon=P.daemon_to_wire(d))

    def stop_daemon(self, state: str) -> None:
        self.call("stop_daemon", state=state)

    # ---- beyond ipvsadm -----------------------------------------------------------------

    def get_sysctl(self) -> dict[str, int | list[int]]:
        """The director's settings by kernel name (net.ipv4.vs.drop_entry, ...;
        ``pylvs.core.defense``); a vector setting's as a list (sync_threshold: [3, 50])."""
        result: dict[str, int | list[int]] = self.call("get_sysctl")
        return result

    def set_sysctl(self, values: dict[str, object]) -> None:
        self.call("set_sysctl", values=values)

    def status(self) -> dict[str, Any]:
        """The daemon's own state: data plane, uptime, listeners, counters."""
        result: dict[str, Any] = self.call("status")
        return result
