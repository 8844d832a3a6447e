"""The ``proxy`` data plane: socket-level full NAT for TCP and UDP, no privileges needed.

Modules, each importing only those listed after it (no cycles, type-only imports included):
``plane`` follows the table and owns the listeners; ``listener`` accepts TCP connections and
starts a ``relay`` each; a relay's two directions are ``flow``s; ``engine`` is the one epoll and
timer they all run on; ``udp`` relays datagrams; ``splice`` moves bulk bytes in the kernel;
``sockmap`` hands long-lived TCP relays to an in-kernel relay (a BPF socket map, through
``pylvs.bpf``); ``common`` holds the counters and live objects they share; ``settings`` the
timeouts and limits (HAProxy's connect, server, client and tunnel timeouts, the relay limit and
its queue, a server's share of it), read from the environment or given as ``ProxySettings``.
"""

from pylvs.dataplane.proxy.plane import ProxyDataPlane
from pylvs.dataplane.proxy.settings import ProxySettings, SettingsError, Timeouts

__all__ = ["ProxyDataPlane", "ProxySettings", "SettingsError", "Timeouts"]
