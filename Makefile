# pylvs: `make demo` and `make test` each set themselves up from a fresh Debian machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all demo test lint typecheck check bench bench-proxy bench-micro bench-health bench-failover bench-kernel vm-run clean sysdeps-test sysdeps-bench vm-run bench-kernel bench-failover

all: test

# The C hot path is compiled by pip install: the compiler and headers come first, and a changed
# C file (or setup.py) reinstalls into the existing venv.
$(STAMP): pyproject.toml setup.py src/pylvs/dataplane/packet/_fastpath.c src/pylvs/dataplane/xdp/xdp_lb.bpf.c \
		src/pylvs/dataplane/proxy/relay_verdict.bpf.c
	bash scripts/system-deps.sh build
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

sysdeps-test:
	bash scripts/system-deps.sh test

sysdeps-bench:
	bash scripts/system-deps.sh bench

demo: $(STAMP)
	bash scripts/system-deps.sh demo
	$(PY) -m pylvs.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck

test: $(STAMP) sysdeps-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: bench-micro bench-proxy

bench-micro: $(STAMP)
	$(PY) bench/bench_sched.py
	$(PY) bench/bench_conntrack.py

bench-proxy: $(STAMP) sysdeps-bench
	$(PY) bench/bench_proxy.py --rounds 3

.PHONY: bench-packet
bench-packet: $(STAMP) sysdeps-bench
	$(PY) bench/bench_packet.py

# What a frame costs the packet plane's sender on a veth: its TX ring (frames copied whole, or
# the slot's page attached as before) against one send() per frame (about 30 s; root)
.PHONY: bench-tx
bench-tx: $(STAMP) sysdeps-bench
	$(PY) bench/bench_tx.py

# XDP plane vs kernel forwarding and the AF_PACKET plane, DR and NAT, generic and native attach
# (about 3 minutes; root, bpftrace)
.PHONY: bench-xdp
bench-xdp: $(STAMP) sysdeps-bench
	$(PY) bench/bench_xdp.py

.PHONY: bench-synflood
bench-synflood: $(STAMP) sysdeps-bench
	$(PY) bench/bench_synflood.py --defence both

# N active directors behind an ECMP router (BIRD): connections kept when one dies or joins,
# time until the router stops using a dead one, packets/s with 1-3 directors (needs root)
.PHONY: bench-scaleout
bench-scaleout: $(STAMP) sysdeps-bench
	$(PY) bench/bench_scaleout.py

.PHONY: bench-l7
bench-l7: $(STAMP) sysdeps-bench
	$(PY) bench/bench_l7.py --duration 6 --rounds 3 --mixed 60 --update BENCHMARKS.md

# Runs CMD as root in a QEMU VM on Debian's kernel (host root read-only over 9p): make vm-run CMD='uname -r; lsmod'
vm-run: sysdeps-test
	$(PYTHON) vm/vmrun.py -- "$$CMD"

bench-kernel: $(STAMP) sysdeps-test
	$(PY) bench/bench_kernel.py

bench-failover: $(STAMP) sysdeps-test
	$(PY) bench/bench_failover.py

bench-health: $(STAMP)
	$(PY) bench/bench_health.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
