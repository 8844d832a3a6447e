"""A whole keepalived.conf: its top-level blocks dispatched to the part that reads each, the
cross-references between them checked (sync groups, track_* names, the sync daemon's
instance), and the entry points ``load``, ``load_full`` and ``parse_text``.

Unknown keywords are warnings (keepalived logs them and runs), malformed values and braces are
errors (nothing starts). Top-level blocks the VRRP part does not interpret (virtual_server,
virtual_server_group, static_ipaddress, ...) are kept as :class:`Statement` trees in ``other``;
the LVS part (:mod:`pylvs.config.keepalived.lvs`) reads the virtual servers from them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from pylvs.config.grammar import ConfigError, Diagnostic, Reader, Statement, parse_tree
from pylvs.config.keepalived.checkers import CheckerKind
from pylvs.config.keepalived.globals import GlobalDefs, LVSSyncDaemon, global_defs
from pylvs.config.keepalived.lvs import LVSConfig, interpret
from pylvs.config.keepalived.tracks import (
    TrackFile,
    TrackProcess,
    VRRPScript,
    track_file,
    track_process,
    vrrp_script,
)
from pylvs.config.keepalived.vrrp import VRRPInstance, VRRPSyncGroup, sync_group, vrrp_instance
from pylvs.config.values import Report

__all__ = ["KeepalivedConfig", "load", "load_full", "parse_text"]

# Top-level blocks owned by other parts of pylvs (or not implemented): parsed, kept, reported.
_OTHER_TOPLEVEL = frozenset((
    "virtual_server", "virtual_server_group", "static_ipaddress", "static_routes", "static_rules",
    "linkbeat_interfaces", "garp_group", "bfd_instance", "net_namespace",
))

# Interpreted by the LVS part from ``other``.
_LVS_TOPLEVEL = frozenset({"virtual_server", "virtual_server_group"})


@dataclass(frozen=True, slots=True)
class KeepalivedConfig:
    global_defs: GlobalDefs
    vrrp_scripts: tuple[VRRPScript, ...]
    vrrp_instances: tuple[VRRPInstance, ...]
    vrrp_sync_groups: tuple[VRRPSyncGroup, ...]
    other: tuple[Statement, ...]  # virtual_server & co, for the checker part
    diagnostics: tuple[Diagnostic, ...]
    files: tuple[str, ...]
    track_files: tuple[TrackFile, ...] = ()
    track_processes: tuple[TrackProcess, ...] = ()

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")

    def instance(self, name: str) -> VRRPInstance:
        for i in self.vrrp_instances:
            if i.name == name:
                return i
        raise KeyError(name)

    def script(self, name: str) -> VRRPScript | None:
        for s in self.vrrp_scripts:
            if s.name == name:
                return s
        return None



def _interpret(tree: tuple[Statement, ...], reader: Reader) -> KeepalivedConfig:
    report = Report(reader.diagnostics)
    g = GlobalDefs()
    scripts: list[VRRPScript] = []
    track_files: list[TrackFile] = []
    track_processes: list[TrackProcess] = []
    instances: list[VRRPInstance] = []
    groups: list[VRRPSyncGroup] = []
    other: list[Statement] = []
    seen_vrid: dict[tuple[str | None, int, int], str] = {}
    for st in tree:
        k = st.keyword
        if k == "global_defs":
            g = global_defs(st, report)
        elif k == "vrrp_script":
            sc = vrrp_script(st, report)
            if sc:
                scripts.append(sc)
        elif k == "vrrp_track_process":
            tp = track_process(st, report)
            if tp:
                track_processes.append(tp)
        elif k in ("track_file", "vrrp_track_file"):
            tf = track_file(st, report)
            if tf:
                track_files.append(tf)
        elif k == "vrrp_instance":
            inst = vrrp_instance(st, report)
            if inst:
                key = (inst.interface, inst.family, inst.virtual_router_id)
                if key in seen_vrid:
                    report.error(st, f"({inst.name}) VRID {inst.virtual_router_id} on {inst.interface} already used by {seen_vrid[key]}")
                seen_vrid[key] = inst.name
                instances.append(inst)
        elif k == "vrrp_sync_group":
            sg = sync_group(st, report)
            if sg:
                groups.append(sg)
        elif k in _OTHER_TOPLEVEL:
            other.append(st)
        else:
            report.warn(st, f"Unknown keyword '{k}'")
            if st.block is not None:
                other.append(st)
    names = {i.name for i in instances}
    scripts_by = {s.name for s in scripts}
    for sg in groups:
        for n in sg.group:
            if n not in names:
                reader.warn(reader.files[0] if reader.files else "", sg.line, f"vrrp_sync_group {sg.name}: unknown vrrp_instance {n}")
    for inst in instances:
        for ts in inst.track_script:
            if ts.name not in scripts_by:
                reader.warn(inst.file, inst.line, f"({inst.name}) track_script {ts.name} not found, ignoring")
    for inst in instances:
        for st in inst.other:
            if st.keyword != "lvs_sync_daemon_interface" or not st.args:
                continue
            if g.lvs_sync_daemon is None:
                report.warn(st, f"({inst.name}) lvs_sync_daemon_interface is deprecated: "
                            f"use 'lvs_sync_daemon {st.args[0]} {inst.name}' in global_defs")
                g = dataclasses.replace(g, lvs_sync_daemon=LVSSyncDaemon(st.args[0], inst.name))
            else:
                report.warn(st, f"({inst.name}) lvs_sync_daemon_interface ignored: the sync daemon "
                            f"already follows {g.lvs_sync_daemon.instance}")
    sd = g.lvs_sync_daemon
    if sd is not None and sd.instance not in names:
        reader.warn(reader.files[0] if reader.files else "", 0,
                    f"lvs_sync_daemon: unknown vrrp_instance {sd.instance}; no sync daemon runs")
    files_by = {f.name for f in track_files}
    for name, line, where, refs in (
        *((i.name, i.line, i.file, i.track_file) for i in instances),
        *((g.name, g.line, reader.files[0] if reader.files else "", g.track_file) for g in groups),
    ):
        for ref in refs:
            if ref.name not in files_by:
                reader.warn(where, line, f"({name}) track_file {ref.name} not found, ignoring")
    procs_by = {p.name for p in track_processes}
    for inst in instances:
        for ref in inst.track_process:
            if ref.name not in procs_by:
                reader.warn(inst.file, inst.line, f"({inst.name}) track_process {ref.name} not found, ignoring")
    # pylvs_bgp is read by ``pylvs scaleout`` (keepalived itself warns it is unknown, as here)
    unhandled = [s for s in other if s.keyword not in _LVS_TOPLEVEL and s.keyword != "pylvs_bgp"]
    if unhandled:
        kinds = sorted({s.keyword for s in unhandled})
        first = unhandled[0]
        reader.warn(first.file, first.line, f"{', '.join(kinds)}: parsed and kept, not handled by pylvs yet")
    return KeepalivedConfig(g, tuple(scripts), tuple(instances), tuple(groups), tuple(other),
                            tuple(reader.diagnostics), tuple(reader.files), tuple(track_files),
                            tuple(track_processes))


def load(path: str, config_id: str | None = None, strict: bool = True) -> KeepalivedConfig:
    """Parse ``path`` (and its includes). Raises :class:`ConfigError` when any error was found
    (``strict``), so a bad file never replaces a running configuration."""
    reader = Reader(config_id=config_id)
    lines = reader.read(path)
    tree = parse_tree(lines, reader)
    cfg = _interpret(tree, reader)
    if strict and any(d.severity == "error" for d in reader.diagnostics):
        raise ConfigError(list(reader.diagnostics))
    return cfg


def load_full(path: str, config_id: str | None = None,
              kinds: Mapping[str, CheckerKind] | None = None) -> tuple[KeepalivedConfig, LVSConfig]:
    """The whole file as ``pylvs keepalived`` runs it: the VRRP part (this module) and the
    virtual_server part (:mod:`pylvs.config.keepalived.lvs`, with the checker ``kinds``; None:
    the installed default, ``pylvs.health.checkers.KINDS``). Raises :class:`ConfigError` with
    the diagnostics of both when either has an error."""
    cfg = load(path, config_id, strict=False)
    lvs = interpret(cfg.other, cfg.track_files, kinds)
    diags = [*cfg.diagnostics, *lvs.diagnostics]
    if any(d.severity == "error" for d in diags):
        raise ConfigError(diags)
    return cfg, lvs


def parse_text(text: str, name: str = "<string>", config_id: str | None = None, strict: bool = True) -> KeepalivedConfig:
    """Parse configuration text (tests, fuzzing); includes resolve against the current directory."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, os.path.basename(name) or "keepalived.conf")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
        reader = Reader(config_id=config_id)
        lines = reader.read(path)
        tree = parse_tree(lines, reader)
        # report the caller's name, not the temporary path
        reader.diagnostics = [Diagnostic(x.severity, name if x.file == path else x.file, x.line, x.message)
                              for x in reader.diagnostics]
        tree = _rename(tree, path, name)
        reader.files = [name]
        cfg = _interpret(tree, reader)
    if strict and any(d.severity == "error" for d in cfg.diagnostics):
        raise ConfigError(list(cfg.diagnostics))
    return cfg


def _rename(tree: tuple[Statement, ...], old: str, new: str) -> tuple[Statement, ...]:
    return tuple(
        Statement(s.keyword, s.args, new if s.file == old else s.file, s.line,
                  None if s.block is None else _rename(s.block, old, new))
        for s in tree
    )
