"""A small VRRP lab: three network namespaces (two routers and a client) on a bridge that lives
in a fourth, with unique names so tests run in parallel, removed even when a test fails. Helpers
start pylvs and the real keepalived inside the router namespaces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUBNET = "10.77.0"
VIP = f"{SUBNET}.100"
REPO = Path(__file__).resolve().parents[2]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and raw sockets")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2")


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    state_file: Path | None = None
    pidfile: Path | None = None

    def state(self) -> dict[str, object]:
        assert self.state_file is not None
        try:
            data: dict[str, object] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def instance(self, name: str = "VI_T") -> dict[str, object]:
        inst = self.state().get("instances", {})
        assert isinstance(inst, dict)
        got = inst.get(name, {})
        assert isinstance(got, dict)
        return got

    def logtext(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_all(self, sig: int) -> None:
        """keepalived forks a VRRP child: signal it as well so SIGKILL really kills VRRP."""
        pids = [self.popen.pid]
        if self.pidfile and self.pidfile.exists():
            child = self.pidfile.with_suffix(".vrrp")
            if child.exists():
                try:
                    pids.insert(0, int(child.read_text().split()[0]))
                except (ValueError, IndexError):
                    pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        self.signal_all(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_all(signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class Lab:
    sfx: str
    tmp: Path
    nodes: dict[str, str] = field(default_factory=dict)  # role -> netns name
    procs: list[Proc] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return f"vh{self.sfx}"

    def ns(self, role: str) -> str:
        return self.nodes[role]

    def addr(self, role: str) -> str:
        return {"a": f"{SUBNET}.1", "b": f"{SUBNET}.2", "c": f"{SUBNET}.10"}[role]

    def build(self) -> None:
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for role in ("a", "b", "c"):
            ns = f"v{role}{self.sfx}"
            sh("ip", "netns", "add", ns)
            self.nodes[role] = ns
            sh("ip", "-n", self.hub, "link", "add", f"p{role}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", f"p{role}", "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
            sh("ip", "-n", ns, "addr", "add", f"{self.addr(role)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def destroy(self) -> None:
        for p in self.procs:
            try:
                p.stop(signal.SIGKILL, 5)
            except Exception:
                pass
        for ns in [*self.nodes.values(), self.hub]:
            sh("ip", "netns", "del", ns, check=False)

    def has_vip(self, role: str, vip: str = VIP) -> bool:
        out = sh("ip", "-n", self.ns(role), "-o", "addr", "show", "dev", "eth0", check=False).stdout
        if ":" in vip:
            out = out.replace(" dadfailed", "")
        return f" {vip}/" in out

    def vip_holders(self, vip: str = VIP) -> list[str]:
        return [r for r in ("a", "b") if self.has_vip(r, vip)]

    def exec(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns(role), *args, check=check)

    # -- daemons --

    def pylvs(self, role: str, conf: str, *extra: str, tag: str = "") -> Proc:
        name = f"pylvs-{role}{tag}-{len(self.procs)}"
        cfg = self.tmp / f"{name}.conf"
        cfg.write_text(conf)
        state = self.tmp / f"{name}.json"
        log = self.tmp / f"{name}.log"
        fh = log.open("wb")
        popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(role), sys.executable, "-m", "pylvs.cli.main", "keepalived",
             "-n", "-l", "-D", "-f", str(cfg), "--state-file", str(state), *extra],
            stdout=fh, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        p = Proc(name, popen, log, state_file=state)
        p.conf = cfg  # type: ignore[attr-defined]
        self.procs.append(p)
        return p

    def keepalived(self, role: str, conf: str, tag: str = "") -> Proc:
        exe = shutil.which("keepalived") or "/usr/sbin/keepalived"
        if not Path(exe).exists():
            pytest.skip("keepalived (Debian package) not installed")
        name = f"ka-{role}{tag}-{len(self.procs)}"
        cfg = self.tmp / f"{name}.conf"
        cfg.write_text(conf)
        log = self.tmp / f"{name}.log"
        pid = self.tmp / f"{name}.pid"
        fh = log.open("wb")
        popen = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(role), exe, "-n", "-l", "-D", "-P", "-f", str(cfg),
             "-p", str(pid), "-r", str(pid.with_suffix(".vrrp")), "-c", str(pid.with_suffix(".chk"))],
            stdout=fh, stderr=subprocess.STDOUT,
        )
        p = Proc(name, popen, log, pidfile=pid)
        self.procs.append(p)
        return p


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    need_root()
    lab = Lab(uuid.uuid4().hex[:6], tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def instance_conf(*, state: str = "BACKUP", prio: int = 100, version: int = 2, advert: float = 1.0, vip: str = f"{VIP}/24",
                  password: str | None = "secret", vrid: int = 42, nopreempt: bool = False,
                  extra: str = "", unicast: tuple[str, str] | None = None, notify: str | None = None) -> str:
    auth = ""
    if password is not None and version == 2:
        auth = f"    authentication {{\n        auth_type PASS\n        auth_pass {password}\n    }}\n"
    uc = ""
    if unicast:
        uc = f"    unicast_src_ip {unicast[0]}\n    unicast_peer {{\n        {unicast[1]}\n    }}\n"
    nt = f"    notify {notify}\n" if notify else ""
    return f"""global_defs {{
    router_id test
    vrrp_garp_master_delay 1
}}
vrrp_instance VI_T {{
    state {state}
    interface eth0
    virtual_router_id {vrid}
    priority {prio}
    advert_int {advert}
    version {version}
{auth}{uc}{nt}{'    nopreempt' + chr(10) if nopreempt else ''}    virtual_ipaddress {{
        {vip} dev eth0{' label eth0:vip' if '.' in vip else ''}
    }}
{extra}}}
"""
