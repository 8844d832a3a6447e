"""Address and port names as ipvsadm shows and accepts them, from local files only.

What this is for: ``pylvsadm -L`` without ``-n`` prints ``vip.example.org:http`` where the C tool
would, and ``-t vip:http`` is accepted. Names come from a hosts file and a services file read
the way glibc's ``files`` NSS module reads them (first matching line wins; host names compare
case-insensitively, service names exactly).

What this is not for: DNS. A command-line tool that lists a load balancer must never hang on a
resolver, so an address missing from the hosts file simply stays numeric (what ipvsadm prints
when its resolver cannot answer).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field

from pylvs.core.model import IPAddress

_PROTO_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


@dataclass
class Resolver:
    """Looks names up in ``hosts_path`` and ``services_path`` (re-read on each instance)."""

    hosts_path: str = "/etc/hosts"
    services_path: str = "/etc/services"
    _hosts: list[tuple[IPAddress, list[str]]] | None = field(default=None, repr=False)
    _services: list[tuple[str, int, str, list[str]]] | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls) -> Resolver:
        """The system files, unless ``PYLVS_HOSTS_FILE`` / ``PYLVS_SERVICES_FILE`` point elsewhere."""
        return cls(
            os.environ.get("PYLVS_HOSTS_FILE", "/etc/hosts"),
            os.environ.get("PYLVS_SERVICES_FILE", "/etc/services"),
        )

    # ---- files -----------------------------------------------------------------------------

    def _host_entries(self) -> list[tuple[IPAddress, list[str]]]:
        if self._hosts is None:
            entries: list[tuple[IPAddress, list[str]]] = []
            for line in _read_lines(self.hosts_path):
                words = line.split("#", 1)[0].split()
                if len(words) < 2:
                    continue
                try:
                    addr = ipaddress.ip_address(words[0].split("%", 1)[0])
                except ValueError:
                    continue
                entries.append((addr, words[1:]))
            self._hosts = entries
        return self._hosts

    def _service_entries(self) -> list[tuple[str, int, str, list[str]]]:
        if self._services is None:
            entries: list[tuple[str, int, str, list[str]]] = []
            for line in _read_lines(self.services_path):
                words = line.split("#", 1)[0].split()
                if len(words) < 2 or "/" not in words[1]:
                    continue
                port_text, proto = words[1].split("/", 1)
                if not port_text.isdigit():
                    continue
                entries.append((words[0], int(port_text), proto, words[2:]))
            self._services = entries
        return self._services

    # ---- lookups ---------------------------------------------------------------------------

    def host_to_ipv4(self, name: str) -> ipaddress.IPv4Address | None:
        """``gethostbyname``: the first IPv4 line naming ``name`` (canonical name or alias)."""
        wanted = name.lower()
        for addr, names in self._host_entries():
            if addr.version == 4 and any(n.lower() == wanted for n in names):
                assert isinstance(addr, ipaddress.IPv4Address)
                return addr
        return None

    def addr_to_host(self, addr: IPAddress) -> str | None:
        """``gethostbyaddr``: the canonical name of the first line with this address."""
        for a, names in self._host_entries():
            if a == addr:
                return names[0]
        return None

    def service_to_port(self, name: str, protocol: int) -> int | None:
        proto = _PROTO_NAMES.get(protocol)
        if proto is None:
            return None
        for sname, port, p, aliases in self._service_entries():
            if p == proto and (sname == name or name in aliases):
                return port
        return None

    def port_to_service(self, port: int, protocol: int) -> str | None:
        proto = _PROTO_NAMES.get(protocol)
        if proto is None:
            return None
        for sname, p_port, p, _aliases in self._service_entries():
            if p == proto and p_port == port:
                return sname
        return None


def ntop(addr: IPAddress) -> str:
    """The text ``inet_ntop`` gives (it differs from Python's for IPv4-mapped IPv6 addresses)."""
    if addr.version == 4:
        return str(addr)
    return socket.inet_ntop(socket.AF_INET6, addr.packed)
