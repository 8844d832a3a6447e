"""keepalived.conf as typed, immutable dataclasses, with keepalived's defaults and its file:line
diagnostics: ``load(path)`` (the VRRP part), ``load_full(path)`` (and the virtual servers),
``parse_text(text)``.

One module per part of the file, each reading its own blocks with the value readers of
:mod:`pylvs.config.values`:
- ``globals``: global_defs;
- ``tracks``: vrrp_script, track_file, vrrp_track_process and the track_* lists naming them;
- ``vrrp``: vrrp_instance and vrrp_sync_group;
- ``lvs``: virtual_server, virtual_server_group, real_server;
- ``checkers``: the checker-block framework and the :class:`CheckerKind` seam through which
  ``pylvs.health.checkers`` gives each checker its keywords;
- ``loader``: the top level, cross-references and the entry points.
This package re-exports their public names, so ``from pylvs.config import keepalived as K`` and
``K.load``/``K.VRRPInstance``/``K.LVSConfig`` work as they always have.

Not for: running anything, or checking the host (interfaces, script paths): that is the daemon's.
"""

from __future__ import annotations

from pylvs.config.grammar import ConfigError, Diagnostic, Statement
from pylvs.config.keepalived.checkers import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DELAY_LOOP,
    UNSUPPORTED_CHECKERS,
    CheckerConfig,
    CheckerKind,
)
from pylvs.config.keepalived.globals import GlobalDefs, LVSSyncDaemon
from pylvs.config.keepalived.loader import KeepalivedConfig, load, load_full, parse_text
from pylvs.config.keepalived.lvs import LVSConfig, RealServerConfig, VirtualServerConfig, interpret
from pylvs.config.keepalived.tracks import (
    TrackFile,
    TrackFileRef,
    TrackInterface,
    TrackProcess,
    TrackScript,
    VRRPScript,
)
from pylvs.config.keepalived.vrrp import (
    VirtualIP,
    VirtualRoute,
    VirtualRule,
    VRRPInstance,
    VRRPSyncGroup,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DELAY_LOOP",
    "UNSUPPORTED_CHECKERS",
    "CheckerConfig",
    "CheckerKind",
    "ConfigError",
    "Diagnostic",
    "GlobalDefs",
    "KeepalivedConfig",
    "LVSConfig",
    "LVSSyncDaemon",
    "RealServerConfig",
    "Statement",
    "TrackFile",
    "TrackFileRef",
    "TrackInterface",
    "TrackProcess",
    "TrackScript",
    "VRRPInstance",
    "VRRPScript",
    "VRRPSyncGroup",
    "VirtualIP",
    "VirtualRoute",
    "VirtualRule",
    "VirtualServerConfig",
    "interpret",
    "load",
    "load_full",
    "parse_text",
]
