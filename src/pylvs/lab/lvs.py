"""The seed's LVS set up inside a lab: real servers prepared, a packet-forwarding director running,
administered with the seed's ``ipvsadm`` commands.

What this is for: demos and tests that want "the cluster, in DR (or NAT, or TUN) mode, working"
in a few lines::

    with Lab("demo") as lab, LVSCluster(lab, "dr") as lvs:
        lvs.ipvsadm("-A", "-t", "192.168.168.100:80", "-s", "rr")
        lvs.ipvsadm("-a", "-t", "192.168.168.100:80", "-r", "192.168.168.10:80", "-g")
        print(lvs.curl())

Per mode: DR runs ``pylvs rs-setup --mode dr`` on rs1/rs2 and ``pylvs director-setup`` on the
director; TUN runs ``pylvs rs-setup --mode tun`` (which keeps the IPIP decapsulator running) on
rs1/rs2 and ``director-setup``; NAT uses nat1/nat2 on the back network, whose gateway is the
director, and leaves the VIP off the director's stack (the data plane answers ARP for it). The
director runs the daemon with the ``packet`` data plane (``pylvs.director.serve_packet``) and
its control socket in the lab's state directory; ``ipvsadm`` runs ``pylvsadm`` against it.

What this is not for: building the lab (``topology``) or anything VRRP does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

from pylvs.lab.topology import Lab, LabError

SETUP = [sys.executable, "-m", "pylvs.hostsetup.cli"]
ADM = [sys.executable, "-m", "pylvs.cli.ipvsadm"]
MODES = ("dr", "nat", "tun")
REAL_SERVERS = {"dr": ("rs1", "rs2"), "tun": ("rs1", "rs2"), "nat": ("nat1", "nat2")}
FORWARD_FLAG = {"dr": "-g", "tun": "-i", "nat": "-m"}


class LVSCluster:
    """A director forwarding real packets to the lab's real servers in one mode."""

    def __init__(self, lab: Lab, mode: str = "dr", director: str = "director",
                 dataplane: str = "packet") -> None:
        if mode not in MODES:
            raise LabError(f"mode {mode!r}: use dr, nat or tun")
        self.lab = lab
        self.mode = mode
        self.director_host = director
        self.dataplane = dataplane  # packet, or xdp (an XDP program in front of it)
        self.real_servers = REAL_SERVERS[mode]
        self.rips = tuple(lab.addr(h) for h in self.real_servers)
        self.flag = FORWARD_FLAG[mode]
        self.control_socket = str(lab.state_dir / f"{director}-ctl.sock")
        self.procs: list[subprocess.Popen[Any]] = []
        self._rs_done: list[str] = []
        self._director_setup = False

    def __enter__(self) -> LVSCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _log(self, name: str) -> Any:
        return open(self.lab.state_dir / name, "w")

    def log_text(self, name: str) -> str:
        try:
            return (self.lab.state_dir / name).read_text(errors="replace")
        except OSError:
            return ""

    def _wait(self, name: str, marker: str, proc: subprocess.Popen[Any], what: str) -> None:
        deadline = time.monotonic() + 30
        while marker not in self.log_text(name):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"{what} did not start: {self.log_text(name)[-800:]}")
            time.sleep(0.05)

    def start(self) -> None:
        lab, vip = self.lab, self.lab.vip
        if self.mode in ("dr", "tun"):
            for rs in self.real_servers:
                argv = [*SETUP, "rs-setup", "--vip", vip, "--mode", self.mode]
                if self.mode == "dr":
                    r = lab.run(rs, argv)
                    if r.returncode != 0:
                        raise LabError(f"rs-setup on {rs}: {r.stderr.strip()}")
                else:
                    name = f"decap-{rs}.log"
                    with self._log(name) as log:
                        p = lab.popen(rs, argv, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
                    self.procs.append(p)
                    self._wait(name, "ready", p, f"IPIP decapsulator on {rs}")
                self._rs_done.append(rs)
            r = lab.run(self.director_host, [*SETUP, "director-setup", "--vip", f"{vip}/24",
                                             "--dev", "eth0"])
            if r.returncode != 0:
                raise LabError(f"director-setup: {r.stderr.strip()}")
            self._director_setup = True
        name = f"{self.director_host}.log"
        with self._log(name) as log:
            p = lab.popen(self.director_host,
                          [sys.executable, "-m", "pylvs.director.serve_packet", "--control-socket",
                           self.control_socket, "--interfaces", "eth0,eth1",
                           "--dataplane", self.dataplane],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        self._wait(name, "director ready", p, "the packet director")

    def running(self) -> bool:
        """Whether a director answers on this cluster's control socket."""
        from pylvs.control.client import ControlClient

        try:
            with ControlClient(self.control_socket, timeout=3) as client:
                client.call("status")
        except Exception:
            return False
        return True

    def detach(self) -> None:
        """Leave everything running for good (``pylvs lab up --lvs``): ``Lab.down`` ends it."""
        self.procs.clear()
        self._rs_done.clear()
        self._director_setup = False

    def stop(self) -> None:
        """End the processes this cluster started and undo the host settings it made."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        self.procs.clear()
        vip = self.lab.vip
        for rs in self._rs_done:
            self.lab.run(rs, [*SETUP, "rs-setup", "--vip", vip, "--mode", self.mode, "--undo"])
        self._rs_done.clear()
        if self._director_setup:
            self.lab.run(self.director_host, [*SETUP, "director-setup", "--vip", f"{vip}/24",
                                              "--dev", "eth0", "--undo"])
            self._director_setup = False

    # -- using it ------------------------------------------------------------------------------
    def ipvsadm(self, *args: str, check: bool = True) -> str:
        """Run ``pylvsadm ARGS`` against this director; its standard output."""
        env = dict(os.environ, PYLVS_CONTROL_SOCKET=self.control_socket)
        r = subprocess.run([*ADM, *args], env=env, capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise LabError(f"pylvsadm {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def seed_service(self, scheduler: str = "rr", port: int = 80, *extra: str,
                     weights: tuple[int, ...] = (1, 1)) -> None:
        """The seed's virtual service: VIP:port over both real servers, replacing the table."""
        vip = self.lab.vip
        self.ipvsadm("-C")
        self.ipvsadm("-A", "-t", f"{vip}:{port}", "-s", scheduler, *extra)
        for rip, w in zip(self.rips, weights, strict=True):
            self.ipvsadm("-a", "-t", f"{vip}:{port}", "-r", f"{rip}:80", self.flag, "-w", str(w))

    def curl(self, path: str = "/", port: int = 80, host: str = "client") -> str:
        """One request to the VIP from ``host`` on a new connection; the body, stripped."""
        return self.lab.curl(f"http://{self.lab.vip}:{port}{path}", host=host).strip()

    def status(self) -> dict[str, Any]:
        """The director daemon's status (data plane counters included), from pylvsadm's socket."""
        from pylvs.control.client import ControlClient

        with ControlClient(self.control_socket) as client:
            result: dict[str, Any] = client.call("status")
        return result
