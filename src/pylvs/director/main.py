"""``pylvsd`` / ``pylvs run``: the director daemon.

What this is for: one long-lived process that owns the IPVS table and the connection table
(``Director``), serves ``pylvsadm`` on the control socket, drives the chosen data plane, and
ticks the clock-driven parts of the core (connection expiry, rate estimator). Table changes made
through the socket act on the same objects the data plane reads: live, with no restart.

It can restore a table at start (``--restore FILE``, ipvsadm-save format, checked whole before
anything is applied, errors as ``FILE:LINE: ...``) and save it on exit (``--save-on-exit FILE``),
so a restart keeps the operator's configuration.

What this is not for: VRRP and health checks (``pylvs keepalived``), layer 7 (``pylvs http``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from pylvs.control import protocol as P
from pylvs.control.client import default_socket_path
from pylvs.control.server import ControlServer, ControlSocketBusy
from pylvs.core.director import Director
from pylvs.core.table import IPVSTable
from pylvs.dataplane import registry
from pylvs.dataplane.base import DataPlane
from pylvs.director.sync import SyncDaemons
from pylvs.ipvsadm.rules import RestoreError, apply_commands, parse_restore, save_rules
from pylvs.metrics import wiring as metrics
from pylvs.metrics.server import MetricsError
from pylvs.metrics.server import add_arguments as add_metrics_arguments

log = logging.getLogger("pylvs.director")

TICK_INTERVAL = 1.0  # seconds between Director.tick() calls (expiry and the 2 s estimator)


class StartupError(Exception):
    """The daemon cannot start: bad restore file, busy socket, unknown data plane."""


class DirectorDaemon:
    """Wires a Director, a data plane and the control socket together on one event loop."""

    def __init__(
        self,
        control_socket: str,
        dataplane: str = "proxy",
        restore: str | None = None,
        save_on_exit: str | None = None,
        dataplane_options: dict[str, Any] | None = None,
    ) -> None:
        self.control_socket = control_socket
        self.dataplane_name = registry.resolve(dataplane)
        self.restore_path = restore
        self.save_path = save_on_exit
        self.dataplane_options = dataplane_options or {}
        self.director = Director(IPVSTable())
        self.dataplane: DataPlane | None = None
        self.sync = SyncDaemons(self.director)
        self.server = ControlServer(
            self.director.table, control_socket,
            extra={
                "status": self._status,
                "get_daemons": self._get_daemons,
                "start_daemon": self._start_daemon,
                "stop_daemon": self._stop_daemon,
            },
        )
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._ticker_task: asyncio.Task[None] | None = None

    # ipvsadm --start-daemon / --stop-daemon: this process's sync daemons, or the kernel's when
    # the kernel forwards (its connections are in the kernel's table, not in the Director's).
    def _sync_backend(self) -> Any:
        kernel = getattr(self.dataplane, "kernel", None)
        return kernel if kernel is not None else self.sync

    def _get_daemons(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [P.daemon_to_wire(d) for d in self._sync_backend().get_daemons()]

    def _start_daemon(self, args: dict[str, Any]) -> None:
        self._sync_backend().start_daemon(P.daemons_from_wire([args["daemon"]])[0])

    def _stop_daemon(self, args: dict[str, Any]) -> None:
        self._sync_backend().stop_daemon(str(args["state"]))

    def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        table = self.director.table
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 1),
            "control_socket": self.control_socket,
            "dataplane": self.dataplane.describe() if self.dataplane else {"name": "none"},
            "services": len(list(table.services())),
            "connections": self.director.connection_count,
            "sync": self.sync.counters(),
        }

    def _restore(self) -> None:
        if not self.restore_path or not os.path.exists(self.restore_path):
            return
        with open(self.restore_path, encoding="utf-8") as f:
            text = f.read()
        try:
            commands = parse_restore(text, self.restore_path)
        except RestoreError as exc:
            raise StartupError(str(exc)) from None
        try:
            apply_commands(self.director.table, commands, self.restore_path)
        except RestoreError as exc:
            raise StartupError(str(exc)) from None
        log.info("restored %d rules from %s", len(commands), self.restore_path)

    def _save(self) -> None:
        if not self.save_path:
            return
        text = save_rules(self.director.table, numeric=True)
        tmp = f"{self.save_path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.save_path)
        log.info("saved the table to %s", self.save_path)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            self.director.tick()

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        """Restore, build the data plane, open the control socket, start forwarding."""
        self._restore()
        try:
            options = {**registry.UNDER_DAEMON.get(self.dataplane_name, {}), **self.dataplane_options}
            self.dataplane = registry.create(self.dataplane_name, self.director, **options)
        except KeyError:
            raise StartupError(
                f"unknown data plane {self.dataplane_name!r} (available: {', '.join(registry.available())})"
            ) from None
        try:
            await self.server.start()
        except ControlSocketBusy as exc:
            raise StartupError(str(exc)) from None
        self._ticker_task = asyncio.create_task(self._ticker())
        try:
            if self.dataplane is not None:
                await self.dataplane.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "director ready: data plane %s, control socket %s",
            self.dataplane_name, self.control_socket,
        )

    async def stop(self) -> None:
        """Save the table if asked, stop forwarding, close the socket. Safe to call twice."""
        task, self._ticker_task = self._ticker_task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.sync.close()
        try:
            self._save()
        finally:
            if self.dataplane is not None:
                await self.dataplane.stop()
            await self.server.stop()
        log.info("director stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._stop.wait()
        finally:
            await self.stop()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--control-socket", metavar="PATH",
        help="control socket for pylvsadm (default $PYLVS_CONTROL_SOCKET or /run/pylvs/pylvs.sock)",
    )
    p.add_argument(
        "--dataplane", default="auto", choices=registry.available(),
        help="how traffic is forwarded; auto: kernel IPVS where the kernel has it, else proxy",
    )
    p.add_argument("--restore", metavar="FILE", help="load this ipvsadm-save file at start")
    p.add_argument("--save-on-exit", metavar="FILE", help="write the table here (ipvsadm-save -n format) on exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_metrics_arguments(p)  # --metrics-address, --status-address (pylvs.metrics)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    daemon = DirectorDaemon(
        default_socket_path(args.control_socket),
        dataplane=args.dataplane,
        restore=args.restore,
        save_on_exit=args.save_on_exit,
    )
    try:  # metrics and status page, served from their own threads (pylvs.metrics)
        observe = metrics.observe_director(daemon, args)
    except MetricsError as exc:
        print(f"pylvsd: {exc}", file=sys.stderr)
        return 1
    try:
        with observe if observe is not None else contextlib.nullcontext():
            asyncio.run(daemon.run())
    except StartupError as exc:
        print(f"pylvsd: {exc}", file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the director daemon (same as pylvsd)")
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pylvsd", description="pylvs director daemon")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
