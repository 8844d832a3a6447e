"""The VRRP router state machine (RFC 3768 / RFC 5798 as keepalived runs them), sans-IO.

``receive(packet, now)`` and ``tick(now)`` return actions (send an advertisement, add/remove the
VIPs, send gratuitous ARPs, run notify scripts, report a split brain); the caller does the I/O and
calls ``tick`` again at ``next_deadline()``. Times are seconds on any monotonic clock.

Not for: sockets, netlink, scripts or config files (see :mod:`pylvs.keepalived.daemon`).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from pylvs.vrrp import packet as pkt

PRIO_OWNER = 255
PRIO_STOP = 0


class State(enum.Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"
    STOP = "STOP"


# ---- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendAdvert:
    """Send one advertisement per destination: ``frames`` are (dst address, VRRP payload)."""

    priority: int
    frames: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class AddVIPs:
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveVIPs:
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SendGARP:
    """Gratuitous ARP (IPv4) / unsolicited NA (IPv6) for each VIP, ``repeat`` times."""

    addresses: tuple[str, ...]
    repeat: int


@dataclass(frozen=True, slots=True)
class Notify:
    """A state change to tell notify scripts about (keepalived: INSTANCE name state priority)."""

    state: State
    priority: int


@dataclass(frozen=True, slots=True)
class SplitBrain:
    """Another router is (or is no longer) master of our VRID while we are master."""

    active: bool
    peer: bytes
    peer_priority: int
    reason: str


@dataclass(frozen=True, slots=True)
class RxLowerPriority:
    """As master, an advert with a lower priority than ours arrived (keepalived's
    notify_master_rx_lower_pri event)."""

    peer: bytes
    peer_priority: int
    priority: int


@dataclass(frozen=True, slots=True)
class Log:
    message: str


Action = SendAdvert | AddVIPs | RemoveVIPs | SendGARP | Notify | SplitBrain | RxLowerPriority | Log


# ---- configuration and counters ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """What one vrrp_instance needs at run time (built from keepalived.conf by the driver)."""

    name: str
    vrid: int
    priority: int
    primary_address: bytes  # our source address: tie-break and v3 pseudo-header
    vips: tuple[str, ...]  # "192.0.2.1/24" style, as configured
    version: int = 2
    adver_int: float = 1.0
    initial_state: State = State.BACKUP
    preempt: bool = True
    preempt_delay: float = 0.0
    auth_type: int = pkt.AUTH_NONE
    auth_pass: bytes = b""
    unicast_peers: tuple[bytes, ...] = ()
    garp_master_delay: float = 5.0
    garp_master_repeat: int = 5
    garp_master_refresh: float = 0.0
    garp_master_refresh_repeat: int = 1
    garp_lower_prio_repeat: int = 0
    lower_prio_no_advert: bool = False
    higher_prio_send_advert: bool = False
    check_vips: bool = True  # keepalived's default; vrrp_skip_check_adv_addr turns it off
    mcast_group: bytes = b""  # empty: 224.0.0.18 / ff02::12 (global_defs vrrp_mcast_group4/6)

    @property
    def family(self) -> int:
        return 4 if len(self.primary_address) == 4 else 6

    @property
    def adver_int_cs(self) -> int:
        return round(self.adver_int * 100)


@dataclass(slots=True)
class Stats:
    """The per-instance counters keepalived keeps (``keepalived --signum=STATS`` names)."""

    advert_rcvd: int = 0
    advert_sent: int = 0
    become_master: int = 0
    release_master: int = 0
    packet_len_err: int = 0
    advert_interval_err: int = 0
    ip_ttl_err: int = 0
    invalid_type_rcvd: int = 0
    addr_list_err: int = 0
    invalid_authtype: int = 0
    authtype_mismatch: int = 0
    auth_failure: int = 0
    pri_zero_rcvd: int = 0
    pri_zero_sent: int = 0
    vers_err: int = 0
    chk_err: int = 0
    vrid_err: int = 0
    split_brain: int = 0

    def count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)


@dataclass(frozen=True, slots=True)
class Received:
    """A packet as the socket delivered it: the VRRP payload and its IP envelope."""

    payload: bytes
    src: bytes
    dst: bytes
    ttl: int  # TTL / hop limit, -1 when unknown


def vip_packed(vip: str) -> bytes:
    return ipaddress.ip_interface(vip.split()[0]).ip.packed


# ---- the router ------------------------------------------------------------------------------


@dataclass(slots=True)
class VRRPRouter:
    config: RouterConfig
    state: State = State.INIT
    stats: Stats = field(default_factory=Stats)
    base_priority: int = 0
    priority_offset: int = 0
    master_adver_int: float = 0.0
    master_address: bytes = b""
    previous_master: bytes = b""  # the master we took over from (whose adverts stopped)
    master_priority: int = 0
    faults: set[str] = field(default_factory=set)
    split_brain_peer: bytes | None = None
    _down_at: float | None = None
    _advert_at: float | None = None
    _garp_at: float | None = None
    _refresh_at: float | None = None
    _preempt_at: float | None = None
    _split_seen_at: float = 0.0
    _vip_packed: frozenset[bytes] = frozenset()
    _evidence: dict[bytes, float] = field(default_factory=dict)
    # vrrp_sync_group: may this router become master now? (None: not in a group)
    sync_gate: Callable[[VRRPRouter], bool] | None = None
    wants_master: bool = False

    def __post_init__(self) -> None:
        self.base_priority = self.config.priority
        self.master_adver_int = self.config.adver_int
        self._vip_packed = frozenset(vip_packed(v) for v in self.config.vips)

    # -- derived values --

    @property
    def effective_priority(self) -> int:
        if self.base_priority == PRIO_OWNER:
            return PRIO_OWNER
        return max(1, min(254, self.base_priority + self.priority_offset))

    def skew_time(self) -> float:
        """v2: (256 - priority) / 256 s; v3: (256 - priority) * Master_Adver_Interval / 256."""
        prio = self.effective_priority
        if self.config.version == 2:
            return (256 - prio) / 256
        return (256 - prio) * round(self.master_adver_int * 100) / 256 / 100

    def owns_vip(self, address: bytes) -> bool:
        """Is ``address`` (packed) one of this router's VIPs?"""
        return address in self._vip_packed

    def master_down_interval(self) -> float:
        return 3 * self.master_adver_int + self.skew_time()

    def next_deadline(self) -> float | None:
        times = [t for t in (self._down_at, self._advert_at, self._garp_at, self._refresh_at, self._preempt_at) if t is not None]
        return min(times) if times else None

    # -- packet building --

    def advert(self, priority: int) -> SendAdvert:
        cfg = self.config
        adv = pkt.Advertisement(
            cfg.version, cfg.vrid, priority, tuple(vip_packed(v) for v in cfg.vips), cfg.adver_int_cs,
            auth_type=cfg.auth_type if cfg.version == 2 else pkt.AUTH_NONE,
            auth_data=pkt.password_field(cfg.auth_pass) if cfg.auth_type == pkt.AUTH_PASS else b"\0" * 8,
        )
        dsts = cfg.unicast_peers or (cfg.mcast_group or (pkt.VRRP_MCAST_V4 if cfg.family == 4 else pkt.VRRP_MCAST_V6),)
        frames = tuple((d, pkt.encode(adv, cfg.primary_address, d)) for d in dsts)
        self.stats.advert_sent += 1
        if priority == PRIO_STOP:
            self.stats.pri_zero_sent += 1
        return SendAdvert(priority, frames)

    # -- lifecycle --

    def start(self, now: float) -> list[Action]:
        """Initialize (RFC 3768 6.4.1): the address owner or `state MASTER` goes master at once,
        everyone else waits Master_Down_Interval as backup."""
        if self.faults:
            self.state = State.FAULT
            return [RemoveVIPs(self.config.vips), Log(f"({self.config.name}) Entering FAULT STATE (init)"),
                    Notify(State.FAULT, self.effective_priority)]
        if self.config.initial_state is State.MASTER or self.base_priority == PRIO_OWNER:
            return self._become_master(now)
        return self._become_backup(now, "(init)", was_master=False)

    def stop(self, now: float) -> list[Action]:
        """Shut down (SIGTERM): a master resigns with priority 0 so backups take over after skew."""
        acts: list[Action] = []
        if self.state is State.MASTER:
            acts.append(self.advert(PRIO_STOP))
            acts.append(RemoveVIPs(self.config.vips))
            self.stats.release_master += 1
        self.state = State.STOP
        self._clear_timers()
        acts.append(Log(f"({self.config.name}) Stopped"))
        acts.append(Notify(State.STOP, self.effective_priority))
        return acts

    def _clear_timers(self) -> None:
        self._down_at = self._advert_at = self._garp_at = self._refresh_at = self._preempt_at = None

    def _become_master(self, now: float) -> list[Action]:
        cfg = self.config
        was = self.state
        self.state = State.MASTER
        self.wants_master = False
        self._clear_timers()
        self.master_adver_int = cfg.adver_int
        if self.master_address and self.master_address != cfg.primary_address:
            self.previous_master = self.master_address
        self.master_address = cfg.primary_address
        self._evidence.clear()
        self.stats.become_master += 1
        # keepalived's order: the advert first (so the old master drops the VIPs before our
        # gratuitous ARPs), then the VIPs and the ARPs; logging comes after the time-critical part
        acts: list[Action] = [
            self.advert(self.effective_priority),
            AddVIPs(cfg.vips),
            SendGARP(cfg.vips, cfg.garp_master_repeat),
            Log(f"({cfg.name}) Entering MASTER STATE" + (" (from FAULT)" if was is State.FAULT else "")),
            Notify(State.MASTER, self.effective_priority),
        ]
        self._advert_at = now + cfg.adver_int
        if cfg.garp_master_delay > 0:
            self._garp_at = now + cfg.garp_master_delay
        if cfg.garp_master_refresh > 0:
            self._refresh_at = now + cfg.garp_master_refresh
        return acts

    def _become_backup(self, now: float, why: str, was_master: bool) -> list[Action]:
        cfg = self.config
        self.state = State.BACKUP
        self._clear_timers()
        acts: list[Action] = []
        if was_master:
            acts.append(RemoveVIPs(cfg.vips))
            self.stats.release_master += 1
        else:
            # make sure a VIP left behind by a previous run does not answer from a backup
            acts.append(RemoveVIPs(cfg.vips))
        acts.append(Log(f"({cfg.name}) Entering BACKUP STATE{(' ' + why) if why else ''}"))
        acts.append(Notify(State.BACKUP, self.effective_priority))
        self._down_at = now + self.master_down_interval()
        acts += self._end_split_brain()
        return acts

    # -- reload --

    def same_group(self, new: RouterConfig) -> bool:
        """Whether ``new`` can replace our configuration in place (same VRRP group on the wire)."""
        old = self.config
        return (old.vrid, old.version, old.primary_address, old.unicast_peers, old.mcast_group) == (
            new.vrid, new.version, new.primary_address, new.unicast_peers, new.mcast_group)

    def reconfigure(self, new: RouterConfig, now: float) -> list[Action]:
        """SIGHUP with this instance still present: keep the state, as keepalived does, and
        apply what changed (priority, VIPs, timers); a master re-advertises at once."""
        old = self.config
        self.config = new
        self.base_priority = new.priority
        self._vip_packed = frozenset(vip_packed(v) for v in new.vips)
        acts: list[Action] = [Log(f"({new.name}) configuration reloaded")]
        if self.state is State.MASTER:
            gone = tuple(v for v in old.vips if v not in new.vips)
            added = tuple(v for v in new.vips if v not in old.vips)
            self.master_adver_int = new.adver_int
            if gone:
                acts.append(RemoveVIPs(gone))
            if added:
                acts += [AddVIPs(added), SendGARP(added, new.garp_master_repeat)]
            acts.append(self.advert(self.effective_priority))
            self._advert_at = now + new.adver_int
        elif self.state is State.BACKUP and self._down_at is not None and new.version == 2:
            self.master_adver_int = new.adver_int
        return acts

    # -- vrrp_sync_group: members follow each other --

    def follow(self, state: State, now: float) -> list[Action]:
        """Another member of our sync group changed state: keepalived moves the whole group, so
        the VIPs of every member (say the public VIP and the NAT gateway) stay on one node."""
        if state is self.state or self.state in (State.INIT, State.STOP):
            return []
        acts: list[Action] = []
        sync_fault = "sync group member in FAULT"
        if state in (State.MASTER, State.BACKUP) and self.state is State.FAULT and self.faults == {sync_fault}:
            # the group recovered: leave FAULT as keepalived does; the driver propagates the result
            return self.clear_fault(sync_fault, now)
        if state is State.MASTER and self.state is State.BACKUP:
            return [*acts, Log(f"({self.config.name}) sync group member became MASTER"), *self._become_master(now)]
        if state is State.BACKUP and self.state is State.MASTER:
            return [*acts, Log(f"({self.config.name}) sync group member left MASTER"), *self._become_backup(now, "", was_master=True)]
        if state is State.FAULT:
            return [*acts, *self.set_fault(sync_fault, now)]
        return acts

    # -- faults (track_interface, track_script weight 0, arbitrator) --

    def set_fault(self, reason: str, now: float) -> list[Action]:
        new = reason not in self.faults
        self.faults.add(reason)
        if not new or self.state in (State.FAULT, State.STOP):
            return []
        acts: list[Action] = []
        if self.state is State.MASTER:
            acts.append(self.advert(PRIO_STOP))
            acts.append(RemoveVIPs(self.config.vips))
            self.stats.release_master += 1
        self.state = State.FAULT
        self._clear_timers()
        acts.append(Log(f"({self.config.name}) Entering FAULT STATE ({reason})"))
        acts.append(Notify(State.FAULT, self.effective_priority))
        acts += self._end_split_brain()
        return acts

    def clear_fault(self, reason: str, now: float) -> list[Action]:
        self.faults.discard(reason)
        if self.faults or self.state is not State.FAULT:
            return []
        self.master_adver_int = self.config.adver_int
        if self.config.initial_state is State.MASTER or self.base_priority == PRIO_OWNER:
            return self._become_master(now)
        return self._become_backup(now, "", was_master=False)

    def set_priority_offset(self, offset: int, now: float) -> list[Action]:
        """track_script/track_interface weights: a master advertises the new priority at once."""
        if offset == self.priority_offset:
            return []
        old = self.effective_priority
        self.priority_offset = offset
        acts: list[Action] = [Log(f"({self.config.name}) Changing effective priority from {old} to {self.effective_priority}")]
        if self.state is State.MASTER:
            acts.append(self.advert(self.effective_priority))
            self._advert_at = now + self.config.adver_int
        return acts

    # -- timers --

    def tick(self, now: float) -> list[Action]:
        acts: list[Action] = []
        cfg = self.config
        if self.state is State.BACKUP:
            if self._preempt_at is not None and now >= self._preempt_at:
                self._preempt_at = None
                if self._down_at is not None:
                    self._down_at = min(self._down_at, now)
            if self._down_at is not None and now >= self._down_at:
                if self.sync_gate is not None and not self.sync_gate(self):
                    # keepalived: a sync group goes master together or not at all
                    self.wants_master = True
                    self._down_at = None
                    acts.append(Log(f"({cfg.name}) held in BACKUP by its sync group"))
                else:
                    acts += self._become_master(now)
        elif self.state is State.MASTER:
            if self._advert_at is not None and now >= self._advert_at:
                acts.append(self.advert(self.effective_priority))
                self._advert_at = now + cfg.adver_int
                while self._advert_at <= now:
                    self._advert_at += cfg.adver_int
            if self._garp_at is not None and now >= self._garp_at:
                self._garp_at = None
                acts.append(SendGARP(cfg.vips, cfg.garp_master_repeat))
            if self._refresh_at is not None and now >= self._refresh_at:
                self._refresh_at = now + cfg.garp_master_refresh
                acts.append(SendGARP(cfg.vips, cfg.garp_master_refresh_repeat))
            if self.split_brain_peer is not None and now - self._split_seen_at > 3 * self.master_adver_int:
                acts += self._end_split_brain()
        return acts

    # -- packets --

    def check(self, rx: Received) -> pkt.Advertisement | None:
        """Validate as keepalived's vrrp_check_packet does, counting each failure; None = drop."""
        cfg = self.config
        try:
            adv = pkt.decode(rx.payload, rx.src, rx.dst)
        except pkt.DecodeError as exc:
            self.stats.count(exc.counter)
            return None
        if adv.vrid != cfg.vrid:
            self.stats.vrid_err += 1
            return None
        if not cfg.unicast_peers and rx.ttl not in (-1, pkt.VRRP_TTL):
            self.stats.ip_ttl_err += 1
            return None
        if adv.version != cfg.version:
            self.stats.vers_err += 1
            return None
        if adv.version == 2:
            if adv.auth_type not in (pkt.AUTH_NONE, pkt.AUTH_PASS, pkt.AUTH_AH):
                self.stats.invalid_authtype += 1
                return None
            if adv.auth_type != cfg.auth_type:
                self.stats.authtype_mismatch += 1
                return None
            if cfg.auth_type == pkt.AUTH_PASS and adv.auth_data != pkt.password_field(cfg.auth_pass):
                self.stats.auth_failure += 1
                return None
            if adv.adver_int_cs != cfg.adver_int_cs:
                # RFC 3768 7.1: MUST discard; keepalived drops it to avoid two masters in one VRID
                self.stats.advert_interval_err += 1
                return None
        if cfg.check_vips and self._vip_packed and (
            len(adv.addresses) != len(self._vip_packed) or set(adv.addresses) != self._vip_packed
        ):
            self.stats.addr_list_err += 1
            return None
        self.stats.advert_rcvd += 1
        if adv.priority == PRIO_STOP:
            self.stats.pri_zero_rcvd += 1
        return adv

    def receive(self, rx: Received, now: float) -> list[Action]:
        if self.state in (State.INIT, State.STOP):
            return []
        adv = self.check(rx)
        if adv is None:
            return []
        if rx.src == self.config.primary_address:
            return []  # our own multicast looped back
        if self.state is State.BACKUP:
            return self._backup_rx(adv, rx.src, now)
        if self.state is State.MASTER:
            return self._master_rx(adv, rx.src, now)
        return []

    def _backup_rx(self, adv: pkt.Advertisement, src: bytes, now: float) -> list[Action]:
        cfg = self.config
        prio = self.effective_priority
        if adv.priority == PRIO_STOP:
            self._down_at = now + self.skew_time()
            return [Log(f"({cfg.name}) Backup received priority 0 advertisement")]
        preempt_pending = cfg.preempt_delay > 0 and (self._preempt_at is None or self._preempt_at > now)
        if not cfg.preempt or adv.priority >= prio or preempt_pending:
            if cfg.version == 3:
                self.master_adver_int = adv.adver_int_cs / 100
            self.master_address = src
            self.master_priority = adv.priority
            self.wants_master = False
            self._down_at = now + self.master_down_interval()
            if cfg.preempt_delay > 0 and cfg.preempt:
                if adv.priority >= prio:
                    self._preempt_at = None
                elif self._preempt_at is None:
                    self._preempt_at = now + cfg.preempt_delay
            return []
        # lower priority and we may preempt: ignore it, the down timer runs out and we take over
        return [Log(f"({cfg.name}) received lower priority ({adv.priority}) advert from {_fmt(src)} - discarding")]

    def _master_rx(self, adv: pkt.Advertisement, src: bytes, now: float) -> list[Action]:
        cfg = self.config
        acts: list[Action] = []
        prio = self.effective_priority
        cmp = (src > cfg.primary_address) - (src < cfg.primary_address)
        higher = adv.priority > prio or (adv.priority == prio and cmp > 0)
        if adv.priority == PRIO_STOP or (cfg.higher_prio_send_advert and higher):
            acts.append(self.advert(prio))
            self._advert_at = now + cfg.adver_int
            if adv.priority == PRIO_STOP:
                return acts
        if adv.priority == prio and prio == PRIO_OWNER and cmp != 0:
            acts.append(Log(f"({cfg.name}) CONFIGURATION ERROR: local instance and a remote instance are both configured as address owner, please fix - reducing local priority"))
            self.base_priority = PRIO_OWNER - 1
            prio = self.effective_priority
            higher = adv.priority > prio
        if not higher:
            # Only a master sends adverts: another master of our VRID exists -> split brain.
            acts.append(Log(f"({cfg.name}) Received advert from {_fmt(src)} with lower priority {adv.priority}, ours {prio}"
                            + ("" if cfg.lower_prio_no_advert else ", forcing new election")))
            acts.append(RxLowerPriority(src, adv.priority, prio))
            acts += self._see_split_brain(src, adv.priority, now, "another master advertises our VRID")
            if not cfg.lower_prio_no_advert:
                acts.append(self.advert(prio))
                self._advert_at = now + cfg.adver_int
            if cfg.garp_lower_prio_repeat:
                acts.append(SendGARP(cfg.vips, cfg.garp_lower_prio_repeat))
            return acts
        acts.append(Log(f"({cfg.name}) Master received advert from {_fmt(src)} with higher priority {adv.priority}, ours {prio}"))
        if cfg.version == 3:
            self.master_adver_int = adv.adver_int_cs / 100
        self.master_address = src
        self.master_priority = adv.priority
        acts += self._become_backup(now, "", was_master=True)
        return acts

    # -- split brain --

    def _see_split_brain(self, peer: bytes, prio: int, now: float, reason: str) -> list[Action]:
        self._split_seen_at = now
        if self.split_brain_peer == peer:
            return []
        self.split_brain_peer = peer
        self.stats.split_brain += 1
        return [Log(f"({self.config.name}) SPLIT BRAIN: {reason} ({_fmt(peer)}, priority {prio})"),
                SplitBrain(True, peer, prio, reason)]

    def report_split_brain(self, peer: bytes, reason: str, now: float) -> list[Action]:
        """Evidence found outside VRRP (another host answering ARP for a VIP) while we are master.

        A backup that has just been preempted may answer once before it drops the VIP, so the
        evidence must still be there at least one advertisement interval after it was first
        seen: a yielding peer never qualifies, a real second master does within 2 intervals."""
        if self.state is not State.MASTER:
            return []
        if self.split_brain_peer == peer:
            self._split_seen_at = now
            return []
        first = self._evidence.get(peer)
        if first is None or now - first > 4 * self.master_adver_int:
            self._evidence[peer] = now
            return []
        if now - first < 0.9 * self.master_adver_int:
            return []
        return self._see_split_brain(peer, 0, now, reason)

    def _end_split_brain(self) -> list[Action]:
        peer = self.split_brain_peer
        if peer is None:
            return []
        self.split_brain_peer = None
        return [Log(f"({self.config.name}) split brain with {_fmt(peer)} resolved"), SplitBrain(False, peer, 0, "resolved")]


def _fmt(addr: bytes) -> str:
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr.hex()


@dataclass(slots=True)
class Dispatcher:
    """Routes received packets to the router of their VRID and counts packets for none."""

    routers: dict[int, VRRPRouter] = field(default_factory=dict)
    unknown_vrid: int = 0
    malformed: int = 0

    def receive(self, rx: Received, now: float) -> list[tuple[VRRPRouter, list[Action]]]:
        if len(rx.payload) < 2:
            self.malformed += 1
            return []
        router = self.routers.get(rx.payload[1])
        if router is None:
            self.unknown_vrid += 1
            return []
        return [(router, router.receive(rx, now))]
