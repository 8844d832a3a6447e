"""The seed's cluster built from network namespaces, veth pairs and bridges.

What this is for: one call (``Lab(...).up()`` or ``pylvs lab up``) gives every test and demo the
hosts of SPEC.md §1 as real Linux network stacks: a client, two directors, two real servers
running nginx (or the built-in server), two app servers, and for NAT a private network behind the
directors with two more real servers whose gateway is the director. Every name carries the lab id,
so two labs coexist, and ``down`` removes everything a lab made, also after a crash (it finds the
lab's namespaces by name and the processes inside them by their network namespace).

What this is not for: configuring LVS. The lab gives plain hosts; the director data plane,
``pylvs rs-setup``/``director-setup`` and VRRP are run inside it by whoever uses it.

Layout (all addresses exist only inside the lab's namespaces)::

    LAN 192.168.168.0/24, a bridge in namespace pl<id>-lan
      client .60   director .50   backup .51   rs1 .10   rs2 .20   app1 .40   app2 .90
    back network 10.168.0.0/24 (NAT), a second bridge in the same namespace
      director eth1 .50   backup eth1 .51   nat1 .10   nat2 .20 (default gateway .50)

IPv6 beside IPv4, with the same host numbers: the LAN is 2001:db8:168::/64 (client
2001:db8:168::60, rs1 2001:db8:168::10, the IPv6 VIP 2001:db8:168::100, ...), the back network
2001:db8:10:168::/64 (nat1 2001:db8:10:168::10, default route via the director's ::50).
Addresses skip duplicate address detection (nothing else can hold them) and the bridges flood
multicast (no MLD snooping), so neighbour solicitations for a VIP reach every host at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pyroute2 import NetNS, netns

STATE_ROOT = Path("/run/pylvs/lab")
NETNS_DIR = Path("/run/netns")
LAN_PREFIX = 24
VIP = "192.168.168.100"
LAN_NET = "192.168.168.0/24"
BACK_NET = "10.168.0.0/24"
LAN6_PREFIX = 64
VIP6 = "2001:db8:168::100"
LAN6_NET = "2001:db8:168::/64"
BACK6_NET = "2001:db8:10:168::/64"
IFA_F_NODAD = 0x02
_ID_RE = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True, slots=True)
class Link:
    """One interface of a host: its name in the host, the bridge it plugs into, its address."""

    ifname: str
    bridge: str  # "lan" or "back"
    address: str
    address6: str = ""  # the IPv6 address on the same link, same host number

    def __post_init__(self) -> None:
        if not self.address6:
            host = self.address.rsplit(".", 1)[1]
            net = LAN6_NET if self.bridge == "lan" else BACK6_NET
            object.__setattr__(self, "address6", net.split("/")[0] + host)


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A host of the seed's cluster and what it serves."""

    name: str
    links: tuple[Link, ...]
    gateway: str | None = None
    gateway6: str | None = None
    serve_port: int = 0
    serve_text: str = ""
    nginx: bool = False  # serve with real nginx when it is installed

    @property
    def address(self) -> str:
        return self.links[0].address


def _lan(addr: str) -> Link:
    return Link("eth0", "lan", addr)


HOSTS: tuple[HostSpec, ...] = (
    HostSpec("client", (_lan("192.168.168.60"),)),
    HostSpec("director", (_lan("192.168.168.50"), Link("eth1", "back", "10.168.0.50"))),
    HostSpec("backup", (_lan("192.168.168.51"), Link("eth1", "back", "10.168.0.51"))),
    HostSpec("rs1", (_lan("192.168.168.10"),), serve_port=80, serve_text="this is nginx1", nginx=True),
    HostSpec("rs2", (_lan("192.168.168.20"),), serve_port=80, serve_text="this is nginx2", nginx=True),
    HostSpec("app1", (_lan("192.168.168.40"),), serve_port=8080, serve_text="dynamic page 1"),
    HostSpec("app2", (_lan("192.168.168.90"),), serve_port=8080, serve_text="dynamic page 2"),
    HostSpec(
        "nat1", (Link("eth0", "back", "10.168.0.10"),), gateway="10.168.0.50",
        gateway6="2001:db8:10:168::50", serve_port=80, serve_text="this is nginx1", nginx=True,
    ),
    HostSpec(
        "nat2", (Link("eth0", "back", "10.168.0.20"),), gateway="10.168.0.50",
        gateway6="2001:db8:10:168::50", serve_port=80, serve_text="this is nginx2", nginx=True,
    ),
)
HOSTS_BY_NAME = {h.name: h for h in HOSTS}
BRIDGES = ("lan", "back")


class LabError(RuntimeError):
    """A lab could not be built or used; the message says which step and why."""


def nginx_available() -> bool:
    return shutil.which("nginx") is not None


def _nginx_conf(d: Path, port: int, text: str) -> str:
    return f"""daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 65;
    server {{
        listen {port} default_server;
        listen [::]:{port} default_server;
        location / {{
            default_type text/plain;
            return 200 "{text}\\n";
        }}
    }}
}}
"""


def _netns_inode(name: str) -> int | None:
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


def _pids_in_netns(inodes: set[int]) -> list[int]:
    """Processes whose network namespace is one of ``inodes`` (found through /proc)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if st.st_ino in inodes:
            found.append(int(entry))
    return found


_WARM_UP = (
    "import sys, time, urllib.request\n"
    "end = time.monotonic() + 120\n"
    "while True:\n"
    "    try:\n"
    "        urllib.request.urlopen(sys.argv[1], timeout=60).read()\n"
    "        break\n"
    "    except OSError:\n"
    "        if time.monotonic() > end:\n"
    "            raise\n"
    "        time.sleep(0.5)\n"
)


def _listening(pid: int, port: int) -> bool:
    """Whether the network namespace of ``pid`` has a TCP socket listening on ``port``."""
    want = f":{port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except OSError:
            continue
    return False


def _end_processes(pids: Sequence[int], timeout: float = 3.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                return False
    except OSError:
        return False
    return True


@dataclass
class Lab:
    """The seed's cluster in namespaces. Use as a context manager (up on enter, down on exit).

    ``lab_id``: 1-8 lower-case letters/digits, part of every name (``pl<id>-client``).
    ``servers``: start the HTTP servers on the real and app servers.
    ``use_nginx``: real nginx where the host wants it (None = when installed).
    ``use_tomcat``: real Tomcat (Debian tomcat10) on the app servers instead of the built-in app.
    Every host's veths keep the kernel's offload defaults (TX checksum offload, TSO/GSO), as
    containers and VMs have them: the lab never switches them, and the packet data plane copes
    with partial checksums and super-frames itself.
    """

    lab_id: str = "0"
    servers: bool = True
    use_nginx: bool | None = None
    use_tomcat: bool = False
    hosts: dict[str, HostSpec] = field(default_factory=lambda: dict(HOSTS_BY_NAME))
    vip: str = VIP
    vip6: str = VIP6

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.lab_id):
            raise LabError(f"lab id {self.lab_id!r}: use 1-8 lower-case letters or digits")
        if self.use_nginx is None:
            self.use_nginx = nginx_available()

    # -- names ---------------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"pl{self.lab_id}-"

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.lab_id

    def ns(self, host: str) -> str:
        """The network namespace name of ``host`` (``pl<id>-<host>``)."""
        if host != "lan" and host not in self.hosts:
            raise LabError(f"unknown lab host {host!r} (hosts: {', '.join(self.hosts)})")
        return self.prefix + host

    def addr(self, host: str, ifname: str = "eth0") -> str:
        for link in self.hosts[host].links:
            if link.ifname == ifname:
                return link.address
        raise LabError(f"host {host} has no interface {ifname}")

    def addr6(self, host: str, ifname: str = "eth0") -> str:
        """The IPv6 address of ``host`` on ``ifname`` (same host number as its IPv4 one)."""
        for link in self.hosts[host].links:
            if link.ifname == ifname:
                return link.address6
        raise LabError(f"host {host} has no interface {ifname}")

    def namespaces(self) -> list[str]:
        """The lab's namespaces that exist now (also leftovers of a crashed run)."""
        try:
            names = os.listdir(NETNS_DIR)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith(self.prefix))

    # -- life cycle ----------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def is_up(self) -> bool:
        """Whether every namespace exists and every server the state file names is alive."""
        state = self.read_state()
        if state is None:
            return False
        want = {self.ns(h) for h in self.hosts} | {self.ns("lan")}
        if not want <= set(self.namespaces()):
            return False
        return all(_alive(int(pid)) for pid in state.get("servers", {}).values())

    def up(self) -> Lab:
        """Build the lab; a no-op when it is already up, a rebuild when a previous run left debris."""
        if self.is_up():
            return self
        self.down()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_state({"id": self.lab_id, "servers": {}, "created": time.time()})
        self._build_network()
        if self.servers:
            self._start_servers()
        return self

    def down(self) -> None:
        """Remove every namespace, process and file of this lab. Safe to call at any time."""
        names = self.namespaces()
        inodes = {i for i in (_netns_inode(n) for n in names) if i is not None}
        if inodes:
            _end_processes(_pids_in_netns(inodes))
        for name in names:
            with contextlib.suppress(OSError):
                netns.remove(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- building ------------------------------------------------------------------------------
    def _build_network(self) -> None:
        for name in [self.ns("lan"), *(self.ns(h) for h in self.hosts)]:
            try:
                netns.create(name)
            except OSError as exc:
                raise LabError(f"cannot create network namespace {name}: {exc}") from exc
        with NetNS(self.ns("lan")) as lan:
            lo = lan.link_lookup(ifname="lo")[0]
            lan.link("set", index=lo, state="up")
            bridges: dict[str, int] = {}
            extra = {lk.bridge for h in self.hosts.values() for lk in h.links} - set(BRIDGES)
            for br in (*BRIDGES, *sorted(extra)):  # extra: the ECMP lab's segments (lab.router)
                lan.link("add", ifname=br, kind="bridge", br_stp_state=0, br_forward_delay=0,
                         br_mcast_snooping=0)
                bridges[br] = lan.link_lookup(ifname=br)[0]
            for spec in self.hosts.values():
                for link in spec.links:
                    port = f"{spec.name[:10]}{link.ifname[-1]}"
                    lan.link(
                        "add", ifname=port, kind="veth",
                        peer={"ifname": link.ifname, "net_ns_fd": self.ns(spec.name)},
                    )
                    idx = lan.link_lookup(ifname=port)[0]
                    lan.link("set", index=idx, master=bridges[link.bridge], state="up")
            for idx in bridges.values():
                lan.link("set", index=idx, state="up")
        for spec in self.hosts.values():
            with NetNS(self.ns(spec.name)) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                for link in spec.links:
                    idx = ns.link_lookup(ifname=link.ifname)[0]
                    ns.addr("add", index=idx, address=link.address, prefixlen=LAN_PREFIX)
                    ns.addr("add", index=idx, address=link.address6, prefixlen=LAN6_PREFIX,
                            flags=IFA_F_NODAD)
                    ns.link("set", index=idx, state="up")
                if spec.gateway:
                    ns.route("add", dst="0.0.0.0/0", gateway=spec.gateway)
                if spec.gateway6:
                    ns.route("add", dst="::/0", gateway=spec.gateway6, family=10)

    def _start_servers(self) -> None:
        pids: dict[str, int] = {}
        for spec in self.hosts.values():
            if not spec.serve_port:
                continue
            d = self.state_dir / spec.name
            d.mkdir(parents=True, exist_ok=True)
            log = open(d / "server.log", "wb")  # noqa: SIM115 - handed to the child
            if self.use_tomcat and spec.serve_port == 8080:
                from pylvs.lab.tomcat import start_tomcat  # it builds on this module

                with log:
                    proc = start_tomcat(self, spec.name, int(spec.serve_text.split()[-1]),
                                        spec.serve_port, stdout=log, stderr=log,
                                        start_new_session=True)
                pids[spec.name] = proc.pid
                continue
            if spec.nginx and self.use_nginx:
                (d / "nginx.conf").write_text(_nginx_conf(d, spec.serve_port, spec.serve_text))
                argv = ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d), "-e", str(d / "error.log")]
            else:
                argv = [  # --host "": every address of both families
                    sys.executable, "-m", "pylvs.lab.httpd", "--host", "",
                    "--port", str(spec.serve_port), "--text", spec.serve_text,
                ]
            with log:
                proc = self.popen(spec.name, argv, stdout=log, stderr=log, start_new_session=True)
            pids[spec.name] = proc.pid
        state = self.read_state() or {}
        state["servers"] = pids
        self._write_state(state)
        # a JVM on a busy machine takes a while: Tomcat gets longer than the small servers
        deadline = time.monotonic() + (120 if self.use_tomcat else 30)
        for name, pid in pids.items():
            port = self.hosts[name].serve_port
            while not _listening(pid, port):
                if not _alive(pid) or time.monotonic() > deadline:
                    log_text = (self.state_dir / name / "server.log").read_text(errors="replace")
                    raise LabError(f"server on {name} did not start listening on :{port}: {log_text[-500:]}")
                time.sleep(0.02)
            if self.use_tomcat and port == 8080:
                # the first request compiles the JSP (seconds, more under load): done here, so
                # that the lab's first user does not wait for it
                self.run(name, [sys.executable, "-c", _WARM_UP, f"http://127.0.0.1:{port}/index.jsp"],
                         timeout=150)

    # -- state ---------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_dir / "state.json")

    # -- using the lab -------------------------------------------------------------------------
    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped so that it runs inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def run(
        self, host: str, argv: Sequence[str], *, check: bool = False, timeout: float = 60,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in ``host`` and collect its output as text."""
        kw.setdefault("capture_output", True)
        return subprocess.run(
            self.argv(host, argv), check=check, timeout=timeout, text=True, **kw
        )

    def popen(self, host: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a long-running command in ``host``; the caller ends it (``down`` does too)."""
        return subprocess.Popen(self.argv(host, argv), **kw)

    def netns(self, host: str) -> NetNS:
        """A pyroute2 handle on ``host``'s namespace (close it, or use ``with``)."""
        return NetNS(self.ns(host))

    def mac(self, host: str, ifname: str = "eth0") -> str:
        with self.netns(host) as ns:
            link = ns.get_links(ns.link_lookup(ifname=ifname)[0])[0]
            mac: str = link.get("address")
            return mac

    def curl(self, url: str, host: str = "client", timeout: float = 5) -> str:
        """Fetch ``url`` from ``host`` with curl; the body, or raise LabError."""
        # -g: brackets are an IPv6 literal, not a curl glob
        res = self.run(host, ["curl", "-gsS", "--max-time", str(timeout), url],
                       timeout=timeout + 10)
        if res.returncode != 0:
            raise LabError(f"curl {url} from {host} failed: {res.stderr.strip()}")
        return res.stdout

    def server_pids(self) -> dict[str, int]:
        state = self.read_state() or {}
        return {k: int(v) for k, v in state.get("servers", {}).items()}

    def status(self) -> list[dict[str, Any]]:
        """One row per host: namespace present, addresses, server pid and whether it runs."""
        present = set(self.namespaces())
        pids = self.server_pids()
        rows = []
        for spec in self.hosts.values():
            pid = pids.get(spec.name)
            rows.append({
                "host": spec.name,
                "netns": self.ns(spec.name),
                "present": self.ns(spec.name) in present,
                "addresses": [f"{lk.ifname} {lk.address}/{LAN_PREFIX} {lk.address6}/{LAN6_PREFIX}"
                              for lk in spec.links],
                "server": (f":{spec.serve_port} pid {pid} " + ("up" if _alive(pid) else "down"))
                if pid else "",
            })
        return rows


def all_lab_ids() -> Iterator[str]:
    """Ids of labs with a state directory or namespaces on this machine."""
    seen: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        seen.update(os.listdir(STATE_ROOT))
    with contextlib.suppress(FileNotFoundError):
        for n in os.listdir(NETNS_DIR):
            m = re.match(r"^pl([a-z0-9]{1,8})-", n)
            if m:
                seen.add(m.group(1))
    yield from sorted(seen)
