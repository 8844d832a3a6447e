"""The interface every data plane implements, whatever forwards the packets.

What this is for: the director daemon runs exactly one data plane and talks to it only through
this interface (start, stop, follow the table, report what it is). How traffic moves (sockets,
AF_PACKET rings, kernel IPVS) is the data plane's own business.

A data plane follows the table by registering a ``TableListener`` on ``director.table`` in
``start``: services appear and disappear while traffic flows, with no restart.
"""

from __future__ import annotations

from typing import Any, Protocol


class DataPlane(Protocol):
    """A running forwarder bound to one ``pylvs.core.director.Director``."""

    name: str

    async def start(self) -> None:
        """Begin forwarding for every service now in the table, and follow later changes."""
        ...

    async def stop(self) -> None:
        """Stop forwarding and release every socket, ring and kernel object it created."""
        ...

    def describe(self) -> dict[str, Any]:
        """A small JSON-able summary for the control API (name, listeners, counters)."""
        ...
