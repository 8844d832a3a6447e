"""Builds the packet data plane's optional C hot path (``pylvs.dataplane.packet._fastpath``).

Everything else is in pyproject.toml. The extension is optional: without a compiler or Python
headers the install still succeeds and the packet data plane runs its pure-Python path.
"""

from setuptools import Extension, setup

setup(
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
