"""libbpf through ctypes: open a compiled BPF object, size its maps, load it, and hand out the
descriptors of its programs and maps. Shared by every BPF program pylvs loads (the XDP data
plane's, the proxy's in-kernel relay).

Why libbpf, and through ctypes: libbpf (Debian's ``libbpf1``) is the loader the field uses; it
does the ELF parsing, map creation, BTF and relocation work that must never be redone by hand,
and ctypes reaches it without a second compiled extension. Only stable (versioned) entry points
of libbpf 1.x are used. The programs themselves are C compiled with ``clang -target bpf`` by the
package's build step (``setup.py``), never bytecode written here.

Errors: a host without libbpf, without the object (no clang at build time) or without the right
to load programs gets :class:`BpfUnavailable` with one line saying which; a program the kernel
refuses gets :class:`BpfLoadError` carrying the last lines of the verifier's log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

LOG_SIZE = 1 << 20
BPF_ANY = 0


class BpfUnavailable(OSError):
    """This host cannot load the program; the message says why in one line.

    An ``OSError``, as every other "this host cannot do it" failure of a data plane, so the
    daemons report it the same way (one line, non-zero exit, or a fallback)."""


class BpfLoadError(BpfUnavailable):
    """The kernel refused the program; ``log_tail`` holds the verifier's last lines."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message + (f"; verifier says:\n{log_tail}" if log_tail else ""))
        self.message = message
        self.log_tail = log_tail


class _OpenOpts(ctypes.Structure):
    # struct bpf_object_open_opts of libbpf 1.x, up to kernel_log_level.
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_stub", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_char_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


_lib: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    """The loaded libbpf with the signatures pylvs calls; ``BpfUnavailable`` if absent."""
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            raise BpfUnavailable("libbpf is not installed (Debian: apt-get install libbpf1)") from None
        vp, cp, i, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        for fname, res, args in [
            ("bpf_object__open_file", vp, [cp, vp]),
            ("bpf_object__load", i, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__find_program_by_name", vp, [vp, cp]),
            ("bpf_object__find_map_by_name", vp, [vp, cp]),
            ("bpf_program__fd", i, [vp]),
            ("bpf_map__fd", i, [vp]),
            ("bpf_map__set_max_entries", i, [vp, u32]),
            ("bpf_xdp_attach", i, [i, i, u32, vp]),
            ("bpf_xdp_detach", i, [i, u32, vp]),
            ("bpf_prog_test_run_opts", i, [i, vp]),
            ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
            ("bpf_map_lookup_elem", i, [i, vp, vp]),
            ("bpf_map_delete_elem", i, [i, vp]),
            ("bpf_map_get_next_key", i, [i, vp, vp]),
            ("bpf_map_lookup_and_delete_elem", i, [i, vp, vp]),
            ("bpf_map_update_batch", i, [i, vp, vp, vp, vp]),
            ("bpf_map_lookup_batch", i, [i, vp, vp, vp, vp, vp, vp]),
        ]:
            f = getattr(lib, fname)
            f.restype, f.argtypes = res, args
        # libbpf prints its own warnings on stderr; the loader reports failures itself, in
        # one line with the verifier's words (kernel_log_buf), so libbpf is told to be quiet.
        lib.libbpf_set_print.restype = ctypes.c_void_p
        lib.libbpf_set_print.argtypes = [ctypes.c_void_p]
        lib.libbpf_set_print(None)
        _lib = lib
    return _lib


def object_file(beside: str, name: str, kind: str = "BPF") -> Path:
    """The compiled object ``name`` next to the module file ``beside``; ``BpfUnavailable`` (one
    line naming what to install) when the build step could not make it."""
    path = Path(beside).with_name(name)
    if not path.exists():
        raise BpfUnavailable(
            f"the {kind} program was not built ({path.name} missing): install clang, llvm, "
            "libbpf-dev and bpftool, then reinstall pylvs")
    return path


def oserror(what: str) -> OSError:
    """The ``OSError`` of the libbpf call that just failed (its errno)."""
    err = ctypes.get_errno() or errno.EINVAL
    return OSError(err, f"{what}: {os.strerror(err)}")


class BpfObject:
    """One compiled object opened and loaded: fresh maps, its programs verified.

    ``max_entries`` sizes maps before the load (the object's sizes are defaults); ``kind`` names
    the program in errors ("the kernel refused the XDP program")."""

    def __init__(self, path: Path, max_entries: dict[str, int] | None = None,
                 kind: str = "BPF") -> None:
        lib = self.lib = libbpf()
        self._obj: int | None = None
        self._log = ctypes.create_string_buffer(LOG_SIZE)
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts),
                         kernel_log_buf=ctypes.cast(self._log, ctypes.c_char_p),
                         kernel_log_size=LOG_SIZE, kernel_log_level=0)
        obj = lib.bpf_object__open_file(str(path).encode(), ctypes.byref(opts))
        if not obj:
            raise BpfUnavailable(f"{path}: {os.strerror(ctypes.get_errno() or errno.EINVAL)}")
        self._obj = obj
        for name, entries in (max_entries or {}).items():
            m = lib.bpf_object__find_map_by_name(obj, name.encode())
            # (an object without the map is not the one expected: its load or use fails)
            if m and lib.bpf_map__set_max_entries(m, entries):
                self.close()
                raise ValueError(f"{path.name}: cannot size map {name!r} to {entries}")
        rc = lib.bpf_object__load(obj)
        if rc:
            err = -rc if rc < 0 else (ctypes.get_errno() or errno.EINVAL)
            tail = "\n".join(self._log.value.decode(errors="replace").strip().splitlines()[-8:])
            self.close()
            if err == errno.EPERM:
                raise BpfUnavailable(
                    "not allowed to load BPF programs (needs root or CAP_BPF+CAP_NET_ADMIN)")
            raise BpfLoadError(f"the kernel refused the {kind} program: {os.strerror(err)}", tail)

    def prog_fd(self, name: str) -> int:
        fd: int = self.lib.bpf_program__fd(
            self.lib.bpf_object__find_program_by_name(self._obj, name.encode()))
        return fd

    def map_fd(self, name: str) -> int:
        fd: int = self.lib.bpf_map__fd(self.lib.bpf_object__find_map_by_name(self._obj, name.encode()))
        return fd

    def close(self) -> None:
        """Unload: the object's descriptors are closed (programs attached elsewhere stay
        until their last holder lets go)."""
        if self._obj:
            self.lib.bpf_object__close(self._obj)
            self._obj = None


__all__ = ["BPF_ANY", "BpfLoadError", "BpfObject", "BpfUnavailable", "libbpf", "object_file",
           "oserror"]
