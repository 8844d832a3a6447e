"""How ``pylvs keepalived`` tells the outside world about state changes: notify scripts with
keepalived's arguments, the notify FIFOs and smtp_alert e-mails, for instances, sync groups,
split brains and the checkers' up/down events.

Why a module of its own: every such message follows keepalived's conventions (argument order,
FIFO line format, mail subject and once-per-state rule), and none of them may block or fail the
daemon, so scripts run as tracked child processes that the daemon waits for on stop.
"""

from __future__ import annotations

import asyncio
import logging
import shlex

from pylvs.config import keepalived as K
from pylvs.config.keepalived import RealServerConfig, VirtualServerConfig
from pylvs.keepalived.notify_fifo import Fifos, NotifyFifo, dest_text, service_text
from pylvs.keepalived.smtp_alert import SmtpAlerter
from pylvs.vrrp.plan import InstancePlan
from pylvs.vrrp.router import State

log = logging.getLogger("pylvs.vrrp")

_VRRP_MAIL = {
    State.MASTER: ("Entering MASTER state", "=> VRRP Instance is now owning VRRP VIPs <="),
    State.BACKUP: ("Entering BACKUP state", "=> VRRP Instance is no longer owning VRRP VIPs <="),
    State.FAULT: ("Entering FAULT state", "=> VRRP Instance is no longer owning VRRP VIPs <="),
    State.STOP: ("Stopping", "=> VRRP Instance stopping <="),
}


class Notifier:
    """Scripts, FIFOs and mail for one configuration's global_defs (replaced by :meth:`configure`
    on a reload; FIFOs are opened by :meth:`open`)."""

    def __init__(self, notify_split_brain: str | None = None) -> None:
        self.notify_split_brain = notify_split_brain
        self.globals = K.GlobalDefs()
        self.fifos = Fifos()
        self.mailer: SmtpAlerter | None = None
        self.children: set[asyncio.Task[None]] = set()
        self._mailed: dict[str, State] = {}  # the last state each instance/group was mailed about

    def open(self, g: K.GlobalDefs) -> None:
        self.globals = g
        self.fifos = fifos_for(g)
        self.fifos.open()
        self.mailer = SmtpAlerter.from_config(g)

    def configure(self, g: K.GlobalDefs) -> None:
        """A reload's global_defs (the FIFOs and the mailer stay those of the start, as before)."""
        self.globals = g

    def close(self) -> None:
        self.fifos.close()

    async def wait_children(self, timeout: float) -> None:
        """notify_stop scripts run to completion before the daemon exits."""
        if self.children:
            await asyncio.wait(set(self.children), timeout=timeout)

    def spawn(self, argv: list[str]) -> None:
        async def run() -> None:
            try:
                proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
                await proc.wait()
            except OSError as exc:
                log.warning("notify %s failed: %s", argv[0], exc)

        task = asyncio.ensure_future(run())
        self.children.add(task)
        task.add_done_callback(self.children.discard)

    def instance(self, plan: InstancePlan, state: State, priority: int) -> None:
        """keepalived's conventions: notify_<state> runs as written; ``notify`` gets
        INSTANCE <name> <STATE> <priority> appended (GROUP <name> <STATE> for sync groups)."""
        generic, master, backup, fault, stop = plan.notify
        name = plan.instance.name
        specific = {State.MASTER: master, State.BACKUP: backup, State.FAULT: fault, State.STOP: stop}.get(state)
        if specific:
            self.spawn(shlex.split(specific))
        if generic:
            self.spawn([*shlex.split(generic), "INSTANCE", name, state.value, str(priority)])
        self.fifos.vrrp(f'INSTANCE "{name}" {state.value} {priority}')
        self.mail_vrrp("Instance", name, plan.instance.smtp_alert, state)

    def group(self, plan: InstancePlan, state: State, smtp_alert: bool | None) -> None:
        """A sync group's transition (called once, when every member has made it)."""
        assert plan.group_notify is not None
        gname, g_generic, g_master, g_backup, g_fault, g_stop = plan.group_notify
        g_specific = {State.MASTER: g_master, State.BACKUP: g_backup, State.FAULT: g_fault, State.STOP: g_stop}.get(state)
        if g_specific:
            self.spawn(shlex.split(g_specific))
        if g_generic:
            self.spawn([*shlex.split(g_generic), "GROUP", gname, state.value])
        self.fifos.vrrp(f'GROUP "{gname}" {state.value} 0')
        self.mail_vrrp("Group", gname, smtp_alert, state)

    def split_brain(self, name: str, active: bool, peer: str, reason: str) -> None:
        if self.notify_split_brain:
            self.spawn([*shlex.split(self.notify_split_brain), name,
                        "SPLIT_BRAIN" if active else "SPLIT_BRAIN_RESOLVED", peer, reason])

    def rx_lower_priority(self, plan: InstancePlan, priority: int) -> None:
        script = plan.instance.notify_master_rx_lower_pri
        if script:
            self.spawn(shlex.split(script))
        self.fifos.vrrp(f'INSTANCE "{plan.instance.name}" MASTER_RX_LOWER_PRI {priority}')

    def mail_vrrp(self, kind: str, name: str, wanted: bool | None, state: State) -> None:
        """keepalived's smtp_alert for an instance or sync group: once per state reached."""
        if self.mailer is None:
            return
        g = self.globals
        on = wanted if wanted is not None else (
            g.smtp_alert_vrrp if g.smtp_alert_vrrp is not None else bool(g.smtp_alert))
        what = _VRRP_MAIL.get(state)
        key = f"{kind}:{name}"
        if not on or what is None or self._mailed.get(key) is state or (
                state is State.FAULT and g.no_email_faults):
            return
        self._mailed[key] = state
        subject, body = what
        if kind == "Group":
            body = f"=> All VRRP group instances are now in {state.value} state <="
        self.mailer.alert(f"VRRP {kind} {name} - {subject}", body)

    def lvs_event(self, vs: VirtualServerConfig, rs: RealServerConfig | None, up: bool) -> None:
        """A checker's verdict on a real server (or a service's quorum): FIFO line and mail."""
        key = vs.services[0].key
        self.fifos.lvs_event(key, rs.dest if rs is not None else None, up)
        if self.mailer is None:
            return
        g = self.globals
        wanted = rs.smtp_alert if rs is not None and rs.smtp_alert is not None else vs.smtp_alert
        on = wanted if wanted is not None else (
            g.smtp_alert_checker if g.smtp_alert_checker is not None else bool(g.smtp_alert))
        if not on:
            return
        word = "UP" if up else "DOWN"
        if rs is None:
            self.mailer.alert(f"Virtualserver {service_text(key)} - {word}",
                              f"=> {'Gained' if up else 'Lost'} quorum <=")
        else:
            self.mailer.alert(
                f"Realserver {dest_text(rs.dest, key)} of virtual server {service_text(key)} - {word}",
                "=> CHECK succeed on service <=" if up else "=> CHECK failed on service <=")


def fifos_for(g: K.GlobalDefs) -> Fifos:
    """The notify_fifo, vrrp_notify_fifo and lvs_notify_fifo of global_defs (unopened)."""
    def make(path: str | None, script: str | None) -> NotifyFifo | None:
        return NotifyFifo(path, script) if path else None

    return Fifos(make(g.notify_fifo, g.notify_fifo_script),
                 make(g.vrrp_notify_fifo, g.vrrp_notify_fifo_script),
                 make(g.lvs_notify_fifo, g.lvs_notify_fifo_script))
