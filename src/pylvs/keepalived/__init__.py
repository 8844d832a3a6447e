"""``pylvs keepalived``: the daemon that runs a keepalived.conf (VRRP instances, virtual servers
and their checkers, notify scripts and FIFOs, SMTP alerts, the sync daemon's role).

It only orchestrates: the VRRP state machine lives in ``pylvs.vrrp``, checkers in
``pylvs.health``, the table and data planes in ``pylvs.core``, ``pylvs.dataplane`` and
``pylvs.director``.
"""
