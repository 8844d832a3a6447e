"""Loading the program: a verifier rejection is reported with the verifier's own last lines,
a missing object or library is one clear line; nothing is left attached or loaded."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from pylvs.dataplane.xdp.loader import XdpLoadError, XdpProgram, XdpUnavailable

BAD = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
    unsigned char *data = (unsigned char *)(long)ctx->data;
    return data[0];   /* no bounds check: the verifier must refuse this */
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_verifier_rejection_carries_the_verifiers_words(tmp_path: Path) -> None:
    if shutil.which("clang") is None:
        pytest.skip("needs clang")
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD)
    obj = tmp_path / "bad.bpf.o"
    # linux/bpf.h wants asm/types.h from the multiarch include directory
    arch_inc = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run(["clang", "-O2", "-target", "bpf", f"-I{arch_inc}", "-c", str(src), "-o", str(obj)],
                   check=True)
    with pytest.raises(XdpLoadError) as info:
        XdpProgram(obj)
    assert "invalid access to packet" in info.value.log_tail
    assert str(info.value).startswith("the kernel refused the XDP program")


def test_a_missing_object_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(XdpUnavailable) as info:
        XdpProgram(tmp_path / "nothing.bpf.o")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, OSError)  # daemons report it as any host limitation
