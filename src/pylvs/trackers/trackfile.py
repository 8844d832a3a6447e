"""keepalived's ``track_file``: a number in a file that moves VRRP priorities.

What this is for: the operator's switch of choice for taking a director out of service without
touching the daemon (``echo 1 > /etc/keepalived/maintenance``): an instance tracking the file with
weight 0 goes to FAULT while the file holds anything but 0; with a weight W the value times W is
added to its priority. The rules are keepalived 2.2's: the file is read as C's ``strtol(s, 0)``
would (``0x`` hex and leading-zero octal included, trailing text ignored); a missing or empty file
counts as 0; a number outside 32 bits is ignored (the last good value stays); ``reverse`` turns
the weight's sign (and, with weight 0, makes 0 the failing value); a result below -253 is FAULT and
above 253 is cut to 253.

What this is not for: applying priorities or faults to a router (the driver's ``_update_tracking``)
or watching the file (``TrackFileWatcher.poll`` is called from the driver's tracking loop and
reads each file every half second: a read of a few bytes costs less than an inotify watch with
its own descriptor and reader, and unlike a stat it cannot miss two writes of the same size
within one tick of the file system's clock).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field

from pylvs.config.keepalived import TrackFile, TrackFileRef

FAULT = None  # what ``status`` returns when the tracking puts the instance in FAULT
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_NUMBER = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")


def parse_value(text: bytes) -> int | None:
    """The number C's ``strtol(text, NULL, 0)`` reads, or None when it does not fit 32 bits."""
    m = _NUMBER.match(text.decode("latin-1"))
    if m is None:
        return 0
    sign, digits = m.groups()
    if digits[:2] in ("0x", "0X"):
        value = int(digits[2:], 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    if sign == "-":
        value = -value
    # keepalived accepts INT32_MAX + 1 as well (its range check is ``> INT32_MAX + 1``)
    if value < _INT32_MIN or value > _INT32_MAX + 1:
        return None
    return value


def read_value(path: str) -> int | None:
    """The value keepalived would take from ``path`` (0 when unreadable or empty)."""
    try:
        with open(path, "rb") as f:
            data = f.read(127)
    except OSError:
        return 0
    return parse_value(data) if data else 0


def weighted(value: int, weight: int, reverse: bool) -> int | None:
    """keepalived's rule for a tracked value, for VRRP instances and real servers alike: with
    weight 0 a non-zero value (with reverse, 0) is a failure (None), else 0; otherwise the value
    times the weight, its sign turned by reverse."""
    if weight == 0:
        return None if (value != 0) != reverse else 0
    return value * weight * (-1 if reverse else 1)


def status(value: int, weight: int, reverse: bool) -> int | None:
    """What a tracked value does to an instance: a priority offset, or ``FAULT`` (None); below
    -253 is FAULT too and above 253 is cut to 253."""
    result = weighted(value, weight, reverse)
    if result is None or result < -253:
        return FAULT
    return min(result, 253)


def init_file(tf: TrackFile) -> None:
    """``init_file [VALUE] [overwrite]``: write the value at start when the file is missing
    (always, with overwrite)."""
    if tf.init_value is None:
        return
    if not tf.init_overwrite and os.path.exists(tf.path):
        return
    with contextlib.suppress(OSError), open(tf.path, "w") as f:
        f.write(f"{tf.init_value}\n")


@dataclass(slots=True)
class _Watched:
    spec: TrackFile
    value: int = 0


@dataclass(slots=True)
class TrackFileWatcher:
    """The current value of every track_file something tracks."""

    files: dict[str, _Watched] = field(default_factory=dict)

    @classmethod
    def start(cls, specs: tuple[TrackFile, ...], used: set[str]) -> TrackFileWatcher:
        w = cls()
        for tf in specs:
            if tf.name in used:
                init_file(tf)
                w.files[tf.name] = _Watched(tf)
        w.poll()
        return w

    def poll(self) -> list[str]:
        """Re-read every file; the names whose value moved."""
        moved = []
        for name, wf in self.files.items():
            value = read_value(wf.spec.path)
            if value is not None and value != wf.value:
                wf.value = value
                moved.append(name)
        return moved

    def status(self, ref: TrackFileRef) -> int | None:
        """The ref's effect: a priority offset or ``FAULT`` (None); a track_file the
        configuration does not define has none (keepalived ignores it, with a warning)."""
        wf = self.files.get(ref.name)
        if wf is None:
            return 0
        if ref.weight is None:
            return status(wf.value, wf.spec.weight, wf.spec.reverse)
        return status(wf.value, ref.weight, ref.reverse)

    def values(self) -> dict[str, int]:
        return {n: wf.value for n, wf in self.files.items()}
