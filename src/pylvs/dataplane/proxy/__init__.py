"""The ``proxy`` data plane: socket-level full NAT for TCP and UDP, no privileges needed.

``plane`` follows the table and owns the listeners; ``tcp`` and ``udp`` relay connections and
datagrams; ``splice`` moves bulk bytes in the kernel; ``sockmap`` hands long-lived TCP relays to
an in-kernel relay (a BPF socket map); ``common`` holds what they share.
"""

from pylvs.dataplane.proxy.plane import ProxyDataPlane

__all__ = ["ProxyDataPlane"]
