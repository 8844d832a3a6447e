"""Loads the XDP program with libbpf, attaches it, and reads and writes its maps.

The object file ``xdp_lb.bpf.o`` is compiled from ``xdp_lb.bpf.c`` by the package's build step
(``setup.py``: clang -target bpf against vmlinux.h dumped from the running kernel's BTF with
bpftool) and loaded through ``pylvs.libbpf``. A host without the object, without libbpf, or
without the right to load BPF programs gets :class:`XdpUnavailable` with one line saying which;
a program the verifier rejects gets :class:`XdpLoadError` carrying the last lines of the
verifier's log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import struct
from pathlib import Path
from typing import Any

from pylvs.dataplane.xdp.maps import STAT_NAMES, sum_percpu
from pylvs.libbpf import (
    BPF_ANY,
    BpfLoadError,
    BpfObject,
    BpfUnavailable,
    object_file,
    oserror,
)

OBJECT_NAME = "xdp_lb.bpf.o"
PROGRAM_NAME = "xdp_lb"
RING_BYTES = 1 << 23  # the new_flows ring: ≈ 100 k records (80 bytes each with the header)
# struct bpf_ringbuf_hdr's length word: the record is being written / was discarded
_RB_BUSY = 1 << 31
_RB_DISCARD = 1 << 30
_RB_HDR = 8
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICTS = {XDP_ABORTED: "ABORTED", XDP_DROP: "DROP", XDP_PASS: "PASS", XDP_TX: "TX",
            XDP_REDIRECT: "REDIRECT"}

# bpf_xdp_attach flags (include/uapi/linux/if_link.h)
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2


class XdpUnavailable(BpfUnavailable):
    """The XDP plane cannot run on this host; the message says why in one line.

    An ``OSError``, as every other "this host cannot do it" failure of a data plane, so the
    daemons report it the same way (one line, non-zero exit)."""


class XdpLoadError(XdpUnavailable, BpfLoadError):
    """The kernel refused the program; ``log_tail`` holds the verifier's last lines."""


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


def object_path() -> Path:
    try:
        return object_file(__file__, OBJECT_NAME, "XDP")
    except BpfUnavailable as e:
        raise XdpUnavailable(str(e)) from None


def possible_cpus() -> int:
    """Per-CPU map values hold one slot per *possible* CPU (not online)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


class XdpProgram:
    """One loaded instance of the program with its maps (fresh maps per instance)."""

    def __init__(self, path: Path | None = None, ring_bytes: int = RING_BYTES) -> None:
        self.attached: dict[int, int] = {}
        self._rings: list[mmap.mmap] = []
        self._obj: BpfObject | None = None
        page = mmap.PAGESIZE
        if ring_bytes < page or ring_bytes & (ring_bytes - 1):
            raise ValueError(f"ring_bytes must be a power of 2 of at least a page, not {ring_bytes}")
        try:
            obj = BpfObject(path or object_file(__file__, OBJECT_NAME, "XDP"),
                            {"new_flows": ring_bytes}, kind="XDP")
        except BpfLoadError as e:
            raise XdpLoadError(e.message, e.log_tail) from None
        except BpfUnavailable as e:
            raise XdpUnavailable(str(e)) from None
        self._obj = obj
        self._lib = obj.lib
        self.prog_fd = obj.prog_fd(PROGRAM_NAME)
        self.flows_fd = obj.map_fd("flows")
        self.stats_fd = obj.map_fd("stats")
        self.services_fd = obj.map_fd("mh_services")
        self.slots_fd = obj.map_fd("mh_slots")
        self.dests_fd = obj.map_fd("mh_dests")
        self.new_flows_fd = obj.map_fd("new_flows")
        self.hops_fd = obj.map_fd("reply_hops")
        self._ncpus = possible_cpus()
        self._get_buf: ctypes.Array[ctypes.c_char] | None = None  # reused: .raw copies out
        self._batch_keys: ctypes.Array[ctypes.c_char] | None = None
        self._batch_values: ctypes.Array[ctypes.c_char] | None = None
        # the ring as libbpf's ring_buffer maps it: the consumer page read-write, then the
        # producer page and the data area twice over (a record across the end reads whole)
        self.ring_bytes = ring_bytes
        self._cons = mmap.mmap(self.new_flows_fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._rings.append(self._cons)
        self._prod = mmap.mmap(self.new_flows_fd, page + 2 * ring_bytes, mmap.MAP_SHARED,
                               mmap.PROT_READ, offset=page)
        self._rings.append(self._prod)
        self._data = page

    # -- attach -------------------------------------------------------------------------------

    def attach(self, ifindex: int, mode: str = "auto") -> str:
        """Attach to ``ifindex``: ``native`` (driver), ``generic`` (skb) or ``auto`` (native,
        else generic). Returns the mode used."""
        modes = {"native": [XDP_FLAGS_DRV_MODE], "generic": [XDP_FLAGS_SKB_MODE],
                 "auto": [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]}[mode]
        last = 0
        for flags in modes:
            rc = self._lib.bpf_xdp_attach(ifindex, self.prog_fd, flags, None)
            if rc == 0:
                self.attached[ifindex] = flags
                return "native" if flags == XDP_FLAGS_DRV_MODE else "generic"
            last = -rc
        raise OSError(last, f"cannot attach XDP to ifindex {ifindex}: {os.strerror(last)}")

    def detach(self, ifindex: int) -> None:
        flags = self.attached.pop(ifindex, 0)
        self._lib.bpf_xdp_detach(ifindex, flags, None)

    # -- maps ---------------------------------------------------------------------------------

    def _update(self, fd: int, key: Any, value: bytes, what: str) -> None:
        if self._lib.bpf_map_update_elem(fd, key, value, BPF_ANY):
            raise oserror(f"{what} map update")

    def _delete(self, fd: int, key: bytes) -> bool:
        rc: int = self._lib.bpf_map_delete_elem(fd, key)
        return rc == 0

    def flow_put(self, key: bytes, value: bytes) -> None:
        self._update(self.flows_fd, key, value, "flow")

    def flows_put(self, keys: bytes, values: bytes, count: int) -> int:
        """``count`` flows (keys and values each packed end to end) in one BPF_MAP_UPDATE_BATCH
        call; how many went in (all of them unless the kernel refused one: the rest are not
        written)."""
        n = ctypes.c_uint32(count)
        self._lib.bpf_map_update_batch(self.flows_fd, keys, values, ctypes.byref(n), None)
        return n.value

    def flow_get(self, key: bytes, size: int) -> bytes | None:
        buf = self._get_buf
        if buf is None or len(buf) != size:
            buf = self._get_buf = ctypes.create_string_buffer(size)
        if self._lib.bpf_map_lookup_elem(self.flows_fd, key, buf):
            return None
        return buf.raw

    def flow_delete(self, key: bytes) -> bool:
        return self._delete(self.flows_fd, key)

    def flow_keys(self, key_size: int) -> list[bytes]:
        keys: list[bytes] = []
        cur: bytes | None = None
        nxt = ctypes.create_string_buffer(key_size)
        while self._lib.bpf_map_get_next_key(self.flows_fd, cur, nxt) == 0:
            cur = nxt.raw
            keys.append(cur)
        return keys

    # -- Maglev tables (kernel-scheduled mh services) -------------------------------------------

    def service_put(self, key: bytes, value: bytes) -> None:
        self._update(self.services_fd, key, value, "mh service")

    def service_delete(self, key: bytes) -> bool:
        return self._delete(self.services_fd, key)

    def hop_put(self, key: bytes, value: bytes) -> None:
        self._update(self.hops_fd, key, value, "reply hop")

    def hop_delete(self, key: bytes) -> bool:
        return self._delete(self.hops_fd, key)

    def dest_put(self, index: int, value: bytes) -> None:
        self._update(self.dests_fd, ctypes.byref(ctypes.c_uint32(index)), value, "mh dest")

    def slots_put(self, first: int, dests: list[int]) -> None:
        """Slots ``first``.. of ``mh_slots`` <- ``dests`` (indexes into ``mh_dests``), in one
        batch call: a table of 4093 slots is one system call, not 4093."""
        n = len(dests)
        keys = (ctypes.c_uint32 * n)(*range(first, first + n))
        values = (ctypes.c_uint32 * n)(*dests)
        count = ctypes.c_uint32(n)
        if self._lib.bpf_map_update_batch(self.slots_fd, keys, values, ctypes.byref(count), None):
            raise oserror("mh slot map update")

    def read_new_flows(self, record_size: int, limit: int) -> list[bytes]:
        """Up to ``limit`` records the program wrote to the ``new_flows`` ring since the last
        call, in the ring's order, each as one ``bytes`` (``record_size``, without the header),
        then handed back to the producer. Records here are all one size: a run of them is one
        slice of the mapped ring.

        Why by hand and not libbpf's ``ring_buffer__consume``: that calls back per record, and
        a ctypes callback (plus copying the record out of its pointer) costs more than the
        whole record's parse here; this is the path every kernel-made connection takes. The
        protocol is libbpf's (ringbuf.c): read the producer position, walk records from the
        consumer position, stop at one still being written (BUSY), skip discarded ones, then
        store the new consumer position (a plain store: x86's ordering; the reads of a record
        follow the producer position's read)."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        if cons == prod:
            return []
        mask = self.ring_bytes - 1
        data, ring = self._data, self._prod
        stride = (record_size + _RB_HDR + 7) & ~7
        out: list[bytes] = []
        while cons < prod and len(out) < limit:
            # a run of whole records up to the producer, the ring's end (read through the
            # double mapping) or the limit, then their headers checked in one pass
            n = min((prod - cons) // stride, limit - len(out))
            start = data + (cons & mask)
            chunk = ring[start:start + n * stride] if n else b""
            good = 0
            for (hdr,) in struct.iter_unpack(f"=I{stride - 4}x", chunk):
                if hdr & (_RB_BUSY | _RB_DISCARD) or hdr != record_size:
                    break
                good += 1
            out.extend(chunk[i * stride + _RB_HDR:i * stride + _RB_HDR + record_size]
                       for i in range(good))
            cons += good * stride
            if good == n and n:
                continue
            # one record the run did not take: busy (stop), discarded or of another size (skip)
            hdr = _U32.unpack_from(ring, data + (cons & mask))[0]
            if hdr & _RB_BUSY:
                break
            cons += ((hdr & ~(_RB_BUSY | _RB_DISCARD)) + _RB_HDR + 7) & ~7
        _U64.pack_into(self._cons, 0, cons)
        return out

    def flows_batch(self, token: bytes | None, key_size: int, value_size: int,
                    count: int) -> tuple[bytes, bytes, int, bytes | None]:
        """Up to ``count`` entries of the flow map from ``token`` (None: the start) in one
        BPF_MAP_LOOKUP_BATCH call: their keys and values (each packed end to end), how many,
        and the token to go on from (None: the map's end). Reading a large map this way costs
        one system call per ``count`` entries instead of one per entry."""
        keys = self._batch_keys
        if keys is None or len(keys) != key_size * count:
            keys = self._batch_keys = ctypes.create_string_buffer(key_size * count)
        values = self._batch_values
        if values is None or len(values) != value_size * count:
            values = self._batch_values = ctypes.create_string_buffer(value_size * count)
        n = ctypes.c_uint32(count)
        out_token = ctypes.create_string_buffer(4)  # the hash map's batch token: a bucket
        in_token = ctypes.create_string_buffer(token, 4) if token is not None else None
        rc = self._lib.bpf_map_lookup_batch(self.flows_fd, in_token, out_token, keys, values,
                                            ctypes.byref(n), None)
        if rc and ctypes.get_errno() != errno.ENOENT:
            raise oserror("flow map batch lookup")
        got = n.value
        return (keys.raw[:got * key_size], values.raw[:got * value_size], got,
                None if rc else out_token.raw)

    def stats(self) -> dict[str, int]:
        out = {}
        buf = ctypes.create_string_buffer(8 * self._ncpus)
        for slot, name in enumerate(STAT_NAMES):
            key = ctypes.c_uint32(slot)
            if self._lib.bpf_map_lookup_elem(self.stats_fd, ctypes.byref(key), buf) == 0:
                out[name] = sum_percpu(buf.raw)
        return out

    # -- testing ------------------------------------------------------------------------------

    def test_run(self, frame: bytes, headroom_out: int = 256) -> tuple[int, bytes]:
        """Run the program once on ``frame`` in the kernel (BPF_PROG_TEST_RUN): the verdict and
        the frame as the program left it. The ingress interface is the netns's loopback."""
        data_in = ctypes.create_string_buffer(frame, len(frame))
        out = ctypes.create_string_buffer(len(frame) + headroom_out)
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts),
                            data_in=ctypes.cast(data_in, ctypes.c_void_p),
                            data_out=ctypes.cast(out, ctypes.c_void_p),
                            data_size_in=len(frame), data_size_out=len(out), repeat=1)
        rc = self._lib.bpf_prog_test_run_opts(self.prog_fd, ctypes.byref(opts))
        if rc:
            raise OSError(-rc, f"BPF_PROG_TEST_RUN: {os.strerror(-rc)}")
        return opts.retval, out.raw[: opts.data_size_out]

    def close(self) -> None:
        for ifindex in list(self.attached):
            self.detach(ifindex)
        for ring in getattr(self, "_rings", ()):
            ring.close()
        self._rings = []
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
