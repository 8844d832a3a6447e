"""``pylvs scaleout run``: announce this director's VIPs over BGP while it can serve them.

The BGP implementation is BIRD 2 (Debian's ``bird2``), run as this process's child with its own
configuration, control socket and log in the run directory. Why BIRD rather than ExaBGP or FRR:

- one daemon for both ends: the lab's router runs BIRD too (ECMP with ``merge paths``, BFD built
  in), so one package, one configuration language and one set of failure modes are tested;
- a control socket with a line protocol (``configure``, ``show protocols all``) that pylvs speaks
  directly, with nothing between (Debian's ExaBGP 4.2 takes API commands only from a helper
  process it starts itself, or through named pipes and its CLI);
- a small C daemon (a few MB), up in milliseconds, that keeps its sessions through a
  reconfiguration and withdraws routes when told or when it stops.

pylvs does not speak BGP itself: it decides (``policy``), writes BIRD's configuration with the set
to announce (``bird``) and asks BIRD to apply it. Each ``poll_interval`` it looks at the director
through its control socket (the ``status`` and ``get_services`` requests): a director that does
not answer, a data plane ``none``, a lost quorum or a drain withdraws; neighbour sessions are
read from BIRD and their changes logged (an unreachable or resetting neighbour is a log line;
forwarding is pylvsd's and goes on). A clean stop (SIGTERM, SIGINT) withdraws everything, waits
``withdraw_wait`` seconds for the routers to move the traffic, then stops BIRD. The first
announcement may be held back (``announce_delay``, ``policy.JoinGate``): until it has gone, each
look also asks the director for its sync daemons and settings (``get_daemons``, ``get_sysctl``,
``get_timeouts``).

This process has its own control socket (``--socket``), JSON lines: ``{"op": "drain"}``,
``{"op": "resume"}``, ``{"op": "status"}`` (``pylvs scaleout drain|resume|status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from typing import Any

from pylvs.control.client import ControlClient
from pylvs.core.api import BackendUnavailable, IPVSBackend, IPVSError
from pylvs.metrics.sources import Sources
from pylvs.scaleout import bird as B
from pylvs.scaleout.config import BGPConfig
from pylvs.scaleout.policy import Announcer, JoinGate, Observation, decide, prefix

log = logging.getLogger("pylvs.scaleout")
DEFAULT_SOCKET = "/run/pylvs/scaleout.sock"
DEFAULT_RUN_DIR = "/run/pylvs/scaleout"
BIRD_TIMEOUT = 5.0


class SpeakerError(Exception):
    """Cannot start: no BIRD, a run directory that cannot be made, a socket in use."""


def find_bird() -> str:
    path = shutil.which("bird") or ("/usr/sbin/bird" if os.path.exists("/usr/sbin/bird") else "")
    if not path:
        raise SpeakerError("BIRD 2 is not installed (apt-get install bird2): no 'bird' command")
    return path


def observe(control_socket: str | None, timeout: float, sync: bool = False) -> Observation:
    """One look at the director through its control socket (blocking: run it in a thread);
    ``sync``: also whether a backup sync daemon runs, and the settings that say how soon it
    hears the others' re-sends (a table without sync settings counts as refresh period 0)."""
    backup, refresh, tcp = False, 0, 900
    try:
        with ControlClient(control_socket, timeout=timeout) as c:
            status = c.status()
            services = tuple(c.get_services())
            if sync:
                backup = any(d.state == "backup" for d in c.get_daemons())
                tcp = c.get_timeouts().tcp or tcp
                with contextlib.suppress(IPVSError):
                    value = c.get_sysctl().get("sync_refresh_period", 0)
                    refresh = value if isinstance(value, int) else 0
    except (BackendUnavailable, IPVSError) as exc:
        return Observation(False, error=str(exc))
    plane = status.get("dataplane") or {}
    name = str(plane.get("name", "")) if isinstance(plane, dict) else ""
    return Observation(True, name, services, sync_backup=backup, sync_refresh_period=refresh,
                       tcp_timeout=tcp)


class Bird:
    """The BIRD child: started, reconfigured, asked, stopped."""

    def __init__(self, binary: str, run_dir: str) -> None:
        self.binary = binary
        self.conf = os.path.join(run_dir, "bird.conf")
        self.sock = os.path.join(run_dir, "bird.ctl")
        self.log_path = os.path.join(run_dir, "bird.log")
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock)
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-f", "-c", self.conf, "-s", self.sock,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + BIRD_TIMEOUT
        while not os.path.exists(self.sock):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                err = b""
                if self.proc.stderr is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1):
                            err = await self.proc.stderr.read()
                raise SpeakerError("BIRD did not start: "
                                   + (err.decode(errors="replace").strip() or "no control socket"))
            await asyncio.sleep(0.02)
        log.info("BIRD started (pid %d, control socket %s, log %s)", self.proc.pid, self.sock,
                 self.log_path)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def command(self, cmd: str) -> B.Reply:
        async with asyncio.timeout(BIRD_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(self.sock)
        try:
            parser = B.ReplyReader()

            async def read_reply() -> B.Reply:
                while True:
                    line = await reader.readline()
                    if not line:
                        raise ConnectionError("BIRD closed its control socket")
                    r = parser.feed(line.decode(errors="replace"))
                    if r is not None:
                        return r
            async with asyncio.timeout(BIRD_TIMEOUT):  # the greeting
                await read_reply()
            writer.write(cmd.encode() + b"\n")
            await writer.drain()
            async with asyncio.timeout(BIRD_TIMEOUT):
                return await read_reply()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(5):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Speaker:
    def __init__(self, cfg: BGPConfig, control_socket: str | None, socket_path: str,
                 run_dir: str, bird_binary: str) -> None:
        self.cfg = cfg
        self.control_socket = control_socket
        self.socket_path = socket_path
        self.run_dir = run_dir
        self.bird = Bird(bird_binary, run_dir)
        self.announcer = Announcer()
        self.gate = JoinGate(cfg.announce_delay)
        self.draining = False
        self.sessions: dict[int, B.SessionState] = {}
        self.last: Observation | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._applied: set[Any] | None = None

    # ---- BIRD's configuration -------------------------------------------------------------

    def _write_conf(self) -> None:
        text = B.render(self.cfg, self.announcer.announced, self.bird.log_path)
        tmp = self.bird.conf + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self.bird.conf)

    async def _apply(self) -> None:
        """Make BIRD announce exactly the announcer's set."""
        want = set(self.announcer.announced)
        if want == self._applied:
            return
        self._write_conf()
        if not self.bird.alive:
            return  # written: the restarted BIRD reads it
        try:
            reply = await self.bird.command("configure")
        except (OSError, ConnectionError, TimeoutError) as exc:
            log.error("BIRD did not take the new configuration: %s", exc)
            return
        if not reply.ok:
            log.error("BIRD refused the new configuration: %s", reply.text)
            return
        self._applied = want
        log.info("announcing now: %s", " ".join(prefix(v) for v in sorted(
            want, key=lambda a: (a.version, a))) or "nothing")

    # ---- the loop -------------------------------------------------------------------------

    async def _look(self) -> None:
        obs = await asyncio.to_thread(observe, self.control_socket,
                                      max(1.0, self.cfg.poll_interval * 2), not self.gate.opened)
        if self.last is None or obs.reachable != self.last.reachable:
            if obs.reachable:
                log.info("director answers on its control socket (data plane %s)", obs.dataplane)
            else:
                log.warning("director does not answer: %s", obs.error)
        self.last = obs
        verdicts, lines = self.gate.hold(decide(self.cfg.vips, obs, self.draining), obs,
                                         time.monotonic())
        changed, more = self.announcer.update(verdicts)
        for line in lines + more:
            log.info("%s", line)
        if changed or self._applied is None or self._applied != self.announcer.announced:
            await self._apply()

    async def _sessions(self) -> None:
        for i, n in enumerate(self.cfg.neighbors):
            try:
                reply = await self.bird.command(f"show protocols all {B.peer_name(i)}")
                st = B.session_state(reply)
            except (OSError, ConnectionError, TimeoutError) as exc:
                st = B.SessionState("Unknown", f"BIRD does not answer: {exc}")
            old = self.sessions.get(i)
            if old != st:
                who = f"BGP neighbor {n.address} (AS {n.remote_as})"
                if st.state == "Established":
                    log.info("%s: session established", who)
                elif old is None or old.state == "Established" or old.error != st.error:
                    log.warning("%s: %s", who, st.describe())
                self.sessions[i] = st

    async def _keep_bird(self) -> None:
        if self.bird.alive:
            return
        rc = self.bird.proc.returncode if self.bird.proc is not None else None
        log.error("BIRD exited (status %s): starting it again", rc)
        self._write_conf()
        self._applied = None
        try:
            await self.bird.start()
            self._applied = set(self.announcer.announced)
        except SpeakerError as exc:
            log.error("%s", exc)

    async def run(self) -> int:
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        self._write_conf()
        self._applied = set()
        await self.bird.start()
        server = await self._serve()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        log.info("pylvs scaleout started: %s", "; ".join(self.cfg.describe()))
        try:
            while not self._stop.is_set():
                await self._keep_bird()
                await self._look()
                if self.bird.alive:
                    await self._sessions()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.poll_interval):
                        await self._wake.wait()
            await self._clean_stop()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            await self.bird.stop()
        return 0

    async def _clean_stop(self) -> None:
        changed, lines = self.announcer.withdraw_all("stopping")
        for line in lines:
            log.info("%s", line)
        if changed:
            await self._apply()
            log.info("waiting %g s for the routers to move the traffic", self.cfg.withdraw_wait)
            await asyncio.sleep(self.cfg.withdraw_wait)
        log.info("stopping BIRD")

    # ---- this process's control socket ----------------------------------------------------

    async def _serve(self) -> asyncio.base_events.Server:
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        if os.path.exists(self.socket_path):
            try:
                _, w = await asyncio.open_unix_connection(self.socket_path)
                w.close()
                raise SpeakerError(f"another pylvs scaleout listens on {self.socket_path}")
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(self.socket_path)
        old = os.umask(0o077)
        try:
            return await asyncio.start_unix_server(self._client, self.socket_path)
        finally:
            os.umask(old)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
            try:
                req = json.loads(line)
                op = req.get("op") if isinstance(req, dict) else None
            except ValueError:
                op = None
            reply = await self._request(op)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def _request(self, op: object) -> dict[str, Any]:
        if op == "drain":
            if not self.draining:
                log.info("drain requested: withdrawing every VIP")
            self.draining = True
            await self._look()
            return {"ok": True, "result": self.status()}
        if op == "resume":
            if self.draining:
                log.info("resume requested: announcing again what has quorum")
            self.draining = False
            await self._look()
            return {"ok": True, "result": self.status()}
        if op == "status":
            return {"ok": True, "result": self.status()}
        return {"ok": False, "error": f"unknown request {op!r} (drain, resume, status)"}

    def status(self) -> dict[str, Any]:
        """What is announced and why, the director, the sessions. Also read from the metrics'
        HTTP threads: each dict or set is copied in one C call (``list(...)``) before use, so a
        change made by the event loop meanwhile is never seen half done."""
        sessions = dict(self.sessions)
        last = self.last
        return {
            "draining": self.draining,
            "announced": sorted(prefix(v) for v in list(self.announcer.announced)),
            "vips": {prefix(v): {"announce": r.announce, "reason": r.reason}
                     for v, r in list(self.announcer.reasons.items())},
            "director": None if last is None else {
                "reachable": last.reachable, "dataplane": last.dataplane, "error": last.error},
            "neighbors": [
                {"address": str(n.address), "remote_as": n.remote_as,
                 "state": sessions[i].state if i in sessions else "Unknown",
                 "last_error": sessions[i].error if i in sessions else ""}
                for i, n in enumerate(self.cfg.neighbors)],
            "bird_pid": self.bird.proc.pid if self.bird.alive and self.bird.proc else None,
            "join": self.gate.describe(),
        }

    def sources(self) -> Sources:
        """What this announcer's metrics and status page show: the director's services (asked
        through its control socket at each scrape, nothing when it does not answer), its data
        plane as last seen, and the BGP section (``status``)."""
        local = threading.local()

        def backend() -> IPVSBackend | None:
            client = getattr(local, "client", None)
            if client is None:
                client = local.client = ControlClient(self.control_socket, timeout=2.0)
            try:
                client.get_info()
            except (BackendUnavailable, IPVSError):
                client.close()
                return None
            return client

        speaker = self

        class Plane:
            def describe(self) -> dict[str, Any]:
                last = speaker.last
                return {"name": last.dataplane if last is not None and last.reachable
                        else "unreachable"}

        plane = Plane()
        return Sources("pylvs scaleout", backend=backend, dataplane=lambda: plane,
                       bgp=self.status)
