"""Builds the optional compiled parts; everything else is in pyproject.toml.

- The packet data plane's C hot path (``pylvs.dataplane.packet._fastpath``): without a compiler
  or Python headers the install still succeeds and the plane runs its pure-Python path.
- The XDP data plane's BPF object (``pylvs/dataplane/xdp/xdp_lb.bpf.o``): compiled with
  ``clang -target bpf`` against ``vmlinux.h`` dumped by ``bpftool`` from the build host's kernel
  BTF (``/sys/kernel/btf/vmlinux``). Without clang, bpftool or BTF the install still succeeds
  and ``--dataplane xdp`` says in one line what is missing.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

XDP_SOURCE = Path("src/pylvs/dataplane/xdp/xdp_lb.bpf.c")
XDP_OBJECT = "xdp_lb.bpf.o"
BTF = Path("/sys/kernel/btf/vmlinux")


class BuildWithBpf(build_ext):
    def run(self) -> None:
        super().run()
        target_dir = (Path("src") if self.inplace else Path(self.build_lib)) / "pylvs/dataplane/xdp"
        try:
            build_xdp_object(Path(self.build_temp), target_dir / XDP_OBJECT)
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            print(f"note: the XDP program was not built ({exc}); the other data planes work",
                  file=sys.stderr)


def build_xdp_object(tmp: Path, out: Path) -> None:
    clang, bpftool = shutil.which("clang"), shutil.which("bpftool") or "/usr/sbin/bpftool"
    if clang is None or not Path(bpftool).exists() or not BTF.exists():
        raise RuntimeError("needs clang, bpftool and kernel BTF")
    tmp.mkdir(parents=True, exist_ok=True)
    header = tmp / "vmlinux.h"
    with header.open("w") as fh:
        subprocess.run([bpftool, "btf", "dump", "file", str(BTF), "format", "c"], stdout=fh, check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([clang, "-O2", "-g", "-Wall", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    f"-I{tmp}", "-c", str(XDP_SOURCE), "-o", str(out)], check=True)


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
