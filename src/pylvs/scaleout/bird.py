"""BIRD 2 as the director's BGP speaker: its configuration and its control-socket replies,
without I/O (``speaker`` runs the daemon and talks to it).

The announced VIPs are the routes of one static protocol per family (``pylvs_vip4``/``pylvs_vip6``,
blackhole routes that never reach a kernel table: there is no kernel protocol), exported to each
neighbour of that family with ``next hop self``. Announcing or withdrawing is writing the
configuration with the new set and asking BIRD to ``configure``: BIRD reconfigures the static
protocol in place, sends the UPDATE or WITHDRAW, and keeps the BGP sessions up.

BIRD's control socket speaks lines ``DDDD-text`` (more follows), ``DDDD text`` (the last line of a
reply) and `` text`` (continuing the previous code); codes 0xxx are success, 8xxx and 9xxx errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from pylvs.scaleout.config import BGPConfig, IPAddress, Neighbor
from pylvs.scaleout.policy import prefix

STATIC4, STATIC6 = "pylvs_vip4", "pylvs_vip6"


def peer_name(index: int) -> str:
    return f"peer{index + 1}"


def render(cfg: BGPConfig, announced: set[IPAddress], log_path: str) -> str:
    """bird.conf announcing exactly ``announced``."""
    v4 = sorted(a for a in announced if a.version == 4)
    v6 = sorted(a for a in announced if a.version == 6)
    out = [
        "# written by pylvs scaleout; rewritten on every change: do not edit",
        f"router id {cfg.router_id};",
        f'log "{log_path}" all;',
        "protocol device { scan time 10; }",
        f"protocol static {STATIC4} {{ ipv4; "
        + "".join(f"route {prefix(a)} blackhole; " for a in v4) + "}",
        f"protocol static {STATIC6} {{ ipv6; "
        + "".join(f"route {prefix(a)} blackhole; " for a in v6) + "}",
    ]
    if any(n.bfd for n in cfg.neighbors):
        out.append("protocol bfd pylvs_bfd { }")
    for i, n in enumerate(cfg.neighbors):
        out.append(_bgp(cfg, i, n))
    return "\n".join(out) + "\n"


def _bgp(cfg: BGPConfig, index: int, n: Neighbor) -> str:
    fam, static = ("ipv4", STATIC4) if n.address.version == 4 else ("ipv6", STATIC6)
    local = f"local {n.source_address} as {cfg.local_as};" if n.source_address else \
        f"local as {cfg.local_as};"
    lines = [
        f"protocol bgp {peer_name(index)} {{",
        f"  {local}",
        f"  neighbor {n.address} as {n.remote_as};",
        f"  hold time {n.hold_time};",
        f"  connect retry time {n.connect_retry};",
        # after an error (a reset, a refused connection) try again soon, not after BIRD's 60 s
        f"  error wait time {n.connect_retry}, {max(10, 4 * n.connect_retry)};",
    ]
    if n.keepalive_time is not None:
        lines.append(f"  keepalive time {n.keepalive_time};")
    if n.bfd:
        lines.append("  bfd on;")
    lines.append(f'  {fam} {{ import none; export where proto = "{static}"; next hop self; }};')
    lines.append("}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.code < 8000

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class ReplyReader:
    """Feeds control-socket lines; ``feed`` returns the Reply when its last line arrives."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._code = 0

    def feed(self, line: str) -> Reply | None:
        line = line.rstrip("\r\n")
        if len(line) >= 5 and line[:4].isdigit() and line[4] in " -":
            self._code = int(line[:4])
            self._lines.append(line[5:])
            if line[4] == " ":
                reply = Reply(self._code, tuple(self._lines))
                self._lines = []
                return reply
            return None
        self._lines.append(line[1:] if line.startswith(" ") else line)
        return None


@dataclass(frozen=True, slots=True)
class SessionState:
    state: str  # BGP state: Idle, Connect, Active, OpenSent, OpenConfirm, Established, Down
    error: str = ""

    def describe(self) -> str:
        return self.state + (f" (last error: {self.error})" if self.error else "")


def session_state(reply: Reply) -> SessionState:
    """The session of ``show protocols all NAME``: its BGP state and last error."""
    state, error, proto_state = "", "", ""
    for i, line in enumerate(reply.lines):
        s = line.strip()
        if s.startswith("BGP state:"):
            state = s.split(":", 1)[1].strip()
        elif s.startswith("Last error:"):
            error = s.split(":", 1)[1].strip()
        elif i == 1 and s:
            cols = s.split()
            proto_state = cols[3] if len(cols) > 3 else ""
    if not state:
        state = "Down" if proto_state in ("down", "") else proto_state
    return SessionState(state, error)


def routes_exported(reply: Reply) -> list[str]:
    """Prefixes in a ``show route ...`` reply (first column of the lines that start one)."""
    out = []
    for line in reply.lines:
        word = line.split(" ", 1)[0]
        if "/" in word and word[0].isalnum():
            out.append(word)
    return out
