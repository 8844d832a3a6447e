"""Which table ``pylvsadm`` talks to when the caller names none.

What this is for: one place that chooses, as ipvsadm's users expect: the director daemon over
its control socket when one runs, else the kernel's own IPVS over netlink (exactly what ipvsadm
itself would change). A socket named explicitly is never silently replaced by the kernel.

What this is not for: the table's operations (``pylvs.core.api.IPVSBackend``).
"""

from __future__ import annotations

from pylvs.core.api import BackendUnavailable, IPVSBackend


def select_backend(control_socket: str | None = None) -> IPVSBackend:
    """The table pylvsadm talks to when none is given: the director's control socket, or,
    when no director runs (and no socket was named), the kernel's IPVS over netlink."""
    from pylvs.control.client import ControlClient

    client = ControlClient(control_socket)
    try:
        client.connect()
    except BackendUnavailable as no_daemon:
        if control_socket is not None:
            raise
        # No director: talk to the kernel's IPVS directly, exactly like ipvsadm.
        from pylvs.netlink.ipvs import KernelIPVS

        try:
            return KernelIPVS()
        except BackendUnavailable as no_ipvs:
            raise BackendUnavailable(f"{no_daemon}, and {no_ipvs}") from None
    return client
