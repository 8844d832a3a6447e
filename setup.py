"""Builds the optional compiled parts; everything else is in pyproject.toml.

- The packet data plane's C hot path (``pylvs.dataplane.packet._fastpath``): without a compiler
  or Python headers the install still succeeds and the plane runs its pure-Python path.
- The BPF objects, compiled with ``clang -target bpf`` against ``vmlinux.h`` dumped by
  ``bpftool`` from the build host's kernel BTF (``/sys/kernel/btf/vmlinux``): the XDP data
  plane's program (``pylvs/dataplane/xdp/xdp_lb.bpf.o``) and the proxy plane's in-kernel relay
  (``pylvs/dataplane/proxy/relay_verdict.bpf.o``). Without clang, bpftool or BTF the install
  still succeeds: ``--dataplane xdp`` says in one line what is missing, and the proxy plane
  relays every connection in user space.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# (source, the object beside it, what it serves): each built on its own, so a failure of one
# does not take the other
BPF_OBJECTS = [
    (Path("src/pylvs/dataplane/xdp/xdp_lb.bpf.c"), "the XDP program", "the other data planes work"),
    (Path("src/pylvs/dataplane/proxy/relay_verdict.bpf.c"), "the proxy's in-kernel relay",
     "proxied connections are relayed in user space"),
]
BTF = Path("/sys/kernel/btf/vmlinux")


class BuildWithBpf(build_ext):
    def run(self) -> None:
        super().run()
        root = Path("src") if self.inplace else Path(self.build_lib)
        tmp = Path(self.build_temp)
        for source, what, otherwise in BPF_OBJECTS:
            out = root / source.relative_to("src").with_suffix(".o")
            try:
                build_bpf_object(tmp, source, out)
            except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
                print(f"note: {what} was not built ({exc}); {otherwise}", file=sys.stderr)


def build_bpf_object(tmp: Path, source: Path, out: Path) -> None:
    clang, bpftool = shutil.which("clang"), shutil.which("bpftool") or "/usr/sbin/bpftool"
    if clang is None or not Path(bpftool).exists() or not BTF.exists():
        raise RuntimeError("needs clang, bpftool and kernel BTF")
    tmp.mkdir(parents=True, exist_ok=True)
    header = tmp / "vmlinux.h"
    if not header.exists():
        with header.open("w") as fh:
            subprocess.run([bpftool, "btf", "dump", "file", str(BTF), "format", "c"], stdout=fh,
                           check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([clang, "-O2", "-g", "-Wall", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    f"-I{tmp}", "-c", str(source), "-o", str(out)], check=True)


setup(
    cmdclass={"build_ext": BuildWithBpf},
    ext_modules=[
        Extension(
            "pylvs.dataplane.packet._fastpath",
            sources=["src/pylvs/dataplane/packet/_fastpath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                "-Wno-cast-function-type"],
            optional=True,
        ),
    ],
)
