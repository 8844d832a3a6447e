"""Comparing a golden ipvsadm step with the same step replayed: byte for byte, except what
varies by nature (the kernel's hash order for ``--nosort``, connection expiry and client ports,
rate figures), which is normalised on both sides first. Every normalisation is named here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "golden" / "ipvsadm"

_EXPIRE = re.compile(r"\b\d\d:\d\d\b")
_CLIENT_PORT = re.compile(r"\b(10\.0\.0\.\d+):\d+\b")
_NUMBER = re.compile(r"\d+[KMG]?")


def golden_steps(case: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = json.loads((GOLDEN / f"{case}.json").read_text())["steps"]
    return steps


def _service_blocks(text: str) -> list[str]:
    """A listing as its header plus service blocks (a service line and its server lines)."""
    lines = text.splitlines(keepends=True)
    head = [x for x in lines[:3]]
    blocks: list[str] = []
    for line in lines[3:]:
        if line.startswith("  ->") and blocks:
            blocks[-1] += line
        else:
            blocks.append(line)
    return ["".join(head), *sorted(blocks)]


def _connections_view(text: str) -> list[str]:
    """Connection rows with expiry and client ports masked, as a sorted list (hash order)."""
    masked = _CLIENT_PORT.sub(r"\1:PORT", _EXPIRE.sub("MM:SS", text))
    return sorted(masked.splitlines())


def _rates_view(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:3] + [_NUMBER.sub("N", x) for x in lines[3:]])


def normalise(cmd: str, field: str, text: str) -> Any:
    """What of ``text`` must match for this command and field."""
    if field != "stdout":
        return text
    words = cmd.split()
    conn_listing = "ipvsadm" in cmd and (
        "-c" in words or "--connection" in words or re.search(r"-L\w*c", cmd) is not None
    )
    if conn_listing or "conntab" in cmd or "estab" in cmd:
        return _connections_view(text)
    if "--rate" in words:
        return _rates_view(text)
    if "--nosort" in words:
        return _service_blocks(text)
    return text


def differences(case: str, replayed: list[dict[str, Any]]) -> list[str]:
    """Every step that differs, as a readable line; empty when the replay matches."""
    out: list[str] = []
    golden = golden_steps(case)
    if len(golden) != len(replayed):
        out.append(f"{case}: {len(golden)} golden steps, {len(replayed)} replayed")
    for i, (g, r) in enumerate(zip(golden, replayed, strict=False)):
        if "note" in g:
            continue
        if g["cmd"] != r.get("cmd"):
            out.append(f"{case}#{i}: step out of order: {g['cmd']!r} vs {r.get('cmd')!r}")
            break
        for field in ("stdout", "stderr", "rc"):
            a = normalise(g["cmd"], field, g[field]) if field != "rc" else g[field]
            b = normalise(g["cmd"], field, r[field]) if field != "rc" else r[field]
            if a != b:
                out.append(f"{case}#{i} $ {g['cmd']}\n  {field} golden:   {g[field]!r}\n"
                           f"  {field} replayed: {r[field]!r}")
    return out


def pair_differences(pairs: list[dict[str, Any]]) -> list[str]:
    """pylvsadm against the real ipvsadm run just before and just after it on the same live
    kernel state: identical but for connection expiry seconds, which tick between the calls."""
    out: list[str] = []

    def view(r: dict[str, Any]) -> tuple[str, str, int]:
        return _EXPIRE.sub("MM:SS", r["stdout"]), r["stderr"], r["rc"]

    for p in pairs:
        ours = view(p["ours"])
        if ours not in (view(p["before"]), view(p["after"])):
            out.append(f"$ {p['prog']} {' '.join(p['argv'])}\n  pylvsadm: {p['ours']!r}\n"
                       f"  ipvsadm:  {p['before']!r}")
    return out


# A number (decimal, or hex as /proc prints it, with ipvsadm's K/M/G) with its padding.
_DIGITS = re.compile(r" *\b(?:[0-9A-F]*[0-9][0-9A-F]*|[A-F]{2,})[KMG]?\b")


def traffic_differences(case: str, replayed: list[dict[str, Any]]) -> tuple[list[str], int]:
    """For the traffic cases, whose counters and surviving connections depend on timing (TCG
    runs many times slower than the recording machine): exit codes and stderr must match; stdout
    must match with every number masked, except for steps that list connections, which are
    skipped (their rows depend on which connections outlived the slower run). Returns the
    differences and the number of skipped steps."""
    out: list[str] = []
    skipped = 0
    for i, (g, r) in enumerate(zip(golden_steps(case), replayed, strict=False)):
        if "note" in g:
            continue
        if g["cmd"] != r.get("cmd"):
            out.append(f"{case}#{i}: step out of order")
            break
        if (g["rc"], g["stderr"]) != (r["rc"], r["stderr"]):
            out.append(f"{case}#{i} $ {g['cmd']}: rc/stderr {g['rc']}/{g['stderr']!r} vs "
                       f"{r['rc']}/{r['stderr']!r}")
            continue
        if "-Lnc" in g["cmd"] or "-Lc" in g["cmd"] or "--connection" in g["cmd"] or \
                "-c" in g["cmd"].split():
            skipped += 1
            continue
        if _DIGITS.sub(" N", g["stdout"]) != _DIGITS.sub(" N", r["stdout"]):
            out.append(f"{case}#{i} $ {g['cmd']}\n  golden:   {g['stdout']!r}\n"
                       f"  replayed: {r['stdout']!r}")
    return out, skipped
