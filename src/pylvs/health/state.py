"""Health-check state, sans-IO: what keepalived decides from check results, without doing any I/O.

What this is for: turning a stream of check results (success/failure, with a clock) into the
decisions keepalived makes: when a checker goes down (after ``retry`` failed retries spaced by
``delay_before_retry``, only while it is up), when it comes back (the first success), whether a real
server is alive (all its checkers up), its weight (MISC_CHECK ``misc_dynamic``), the quorum of a
virtual server with its hysteresis, the sorry server, and finally the set of real servers that the
IPVS table should hold. The driver (``pylvs.health.manager``) runs probes and reconciles a table
with ``desired_dests``; tests drive this module with plain calls and a fake clock.

What this is not for: probing (``pylvs.health.checkers``) or talking to a table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pylvs.config.keepalived import CheckerConfig, RealServerConfig, VirtualServerConfig
from pylvs.config.keepalived.checkers import WEIGHT_ADD, WEIGHT_SET
from pylvs.core.model import DestSpec
from pylvs.health import wording


@dataclass(frozen=True, slots=True)
class Notify:
    """A script to run because something changed (notify_up/down, quorum_up/down)."""

    command: str
    reason: str


@dataclass(slots=True)
class CheckerState:
    """One checker's view: up/down, retries in progress, when it is due next."""

    config: CheckerConfig
    up: bool
    next_due: float
    retries_left: int = 0
    last_result: str = "not run yet"
    last_run: float | None = None
    dynamic_weight: int | None = None
    failures: int = 0
    successes: int = 0
    suspended: bool = False  # ha_suspend: not checking while the VIP is elsewhere

    @classmethod
    def start(cls, config: CheckerConfig, now: float, alpha: bool, warmup_fraction: float = 0.0) -> CheckerState:
        """``warmup_fraction`` in [0, 1) picks the first check within ``warmup`` (the driver
        passes a random value, tests a fixed one)."""
        up = not (alpha or config.alpha)
        return cls(config, up, now + config.warmup * warmup_fraction, config.retry)

    def result(self, ok: bool, now: float, detail: str = "", weight: int | None = None) -> bool:
        """Record one check result; return True when the checker changed between up and down.

        keepalived's rule: a failure of an *up* checker is retried ``retry`` times,
        ``delay_before_retry`` apart, before the checker goes down; a failure of a down checker
        just waits ``delay_loop``; one success brings a checker up at once.
        """
        c = self.config
        self.last_run = now
        self.last_result = detail or ("success" if ok else "failure")
        if ok:
            self.successes += 1
            self.retries_left = c.retry
            self.next_due = now + c.delay_loop
            if weight is not None:
                self.dynamic_weight = weight
            if not self.up:
                self.up = True
                return True
            return False
        self.failures += 1
        if self.up and self.retries_left > 0:
            self.retries_left -= 1
            self.next_due = now + c.delay_before_retry
            return False
        self.next_due = now + c.delay_loop
        self.retries_left = c.retry
        if self.up:
            self.up = False
            return True
        return False


@dataclass(slots=True)
class RealServerState:
    config: RealServerConfig
    checkers: list[CheckerState]
    alive: bool = True

    def recompute(self) -> bool:
        """Alive when every checker is up (no checker: always alive). True if it changed."""
        alive = all(c.up for c in self.checkers)
        changed = alive != self.alive
        self.alive = alive
        return changed

    @property
    def weight(self) -> int:
        """Configured weight, or the MISC_CHECK dynamic one (exit status - 2) when reported;
        FILE_CHECKs with ``dynamic`` add value x weight of their file to it (never below 0)."""
        for c in self.checkers:
            if c.config.weight_mode == WEIGHT_SET and c.dynamic_weight is not None:
                return c.dynamic_weight
        offset = sum(c.dynamic_weight or 0 for c in self.checkers
                     if c.config.weight_mode == WEIGHT_ADD and c.up)
        return max(0, self.config.dest.weight + offset)

    def dest(self, weight: int | None = None) -> DestSpec:
        return dataclasses.replace(self.config.dest, weight=self.weight if weight is None else weight)


@dataclass(slots=True)
class VirtualServerState:
    """A virtual server's real servers, quorum and sorry-server decision."""

    config: VirtualServerConfig
    servers: list[RealServerState] = field(default_factory=list)
    quorum_up: bool = True
    # what changed, for notify FIFOs: (real server, alive) and (None, quorum up); the driver
    # takes them out
    events: list[tuple[RealServerState | None, bool]] = field(default_factory=list)
    # keepalived's log lines for what was decided, in its order (``pylvs.health.wording``); the
    # driver takes them out and logs them
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, config: VirtualServerConfig, now: float, fractions: list[float] | None = None) -> VirtualServerState:
        servers = []
        i = 0
        for rs in config.real_servers:
            checkers = []
            for chk in rs.checkers:
                frac = fractions[i % len(fractions)] if fractions else 0.0
                i += 1
                checkers.append(CheckerState.start(chk, now, config.alpha or rs.alpha, frac))
            st = RealServerState(rs, checkers)
            st.alive = all(c.up for c in checkers)
            servers.append(st)
        vs = cls(config, servers)
        vs.quorum_up = vs._weight_sum() >= config.quorum
        return vs

    def startup_lines(self) -> None:
        """What keepalived logs when it programs a virtual server whose quorum is down from the
        start (alpha mode) and that has a sorry server to put in its place."""
        c = self.config
        if not self.quorum_up and c.sorry_server is not None:
            self.lines.append(wording.quorum_lost(c, self._weight_sum(), starting=True))
            self.lines.append(wording.sorry_server(c.sorry_server.dest, c, True, c.sorry_server_inhibit))
            self.lines.append(wording.pool(c, False))

    def _weight_sum(self) -> int:
        return sum(s.weight for s in self.servers if s.alive)

    def update_quorum(self) -> list[Notify]:
        """keepalived's quorum with hysteresis: lost below quorum - hysteresis (or when no live
        weight at all), gained at quorum + hysteresis."""
        c = self.config
        total = self._weight_sum()
        out: list[Notify] = []
        if self.quorum_up and (total == 0 or total < c.quorum - c.hysteresis):
            self.quorum_up = False
            self.events.append((None, False))
            self.lines.append(wording.quorum_lost(c, total))
            if c.sorry_server is not None:
                self.lines.append(wording.sorry_server(c.sorry_server.dest, c, True, c.sorry_server_inhibit))
                self.lines.append(wording.pool(c, False))
            if c.quorum_down:
                out.append(Notify(c.quorum_down, f"quorum lost on {c.name}"))
        elif not self.quorum_up and total > 0 and total >= c.quorum + c.hysteresis:
            self.quorum_up = True
            self.events.append((None, True))
            self.lines.append(wording.quorum_gained(c, total))
            if c.sorry_server is not None:
                self.lines.append(wording.sorry_server(c.sorry_server.dest, c, False, c.sorry_server_inhibit))
                self.lines.append(wording.pool(c, True))
            if c.quorum_up:
                out.append(Notify(c.quorum_up, f"quorum gained on {c.name}"))
        return out

    def on_checker_change(self, server: RealServerState) -> list[Notify]:
        out: list[Notify] = []
        if server.recompute():
            self.events.append((server, server.alive))
            self.lines.append(wording.server_changed(server.config.dest, self.config, server.alive,
                                                     server.config.inhibit_on_failure))
            cmd = server.config.notify_up if server.alive else server.config.notify_down
            if cmd:
                out.append(Notify(cmd, f"{server.config.name} {'up' if server.alive else 'down'}"))
        out.extend(self.update_quorum())
        return out

    def desired_dests(self) -> list[DestSpec]:
        """The real servers the table should hold for this virtual server now.

        Alive servers with their weight; dead ones at weight 0 when ``inhibit_on_failure``, else
        absent. With a sorry server and no quorum, the sorry server replaces them all (kept at
        weight 0 afterwards when ``sorry_server_inhibit``).
        """
        c = self.config
        if c.sorry_server is not None and not self.quorum_up:
            return [c.sorry_server.dest]
        out = []
        for s in self.servers:
            if s.alive:
                out.append(s.dest())
            elif s.config.inhibit_on_failure:
                out.append(s.dest(0))
        if c.sorry_server is not None and c.sorry_server_inhibit:
            out.append(dataclasses.replace(c.sorry_server.dest, weight=0))
        return out

