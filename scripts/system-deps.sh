#!/usr/bin/env bash
# Installs the Debian packages a purpose needs (build, test, demo, bench), once: packages already
# present are not fetched again, so the step is idempotent and offline when nothing is missing.
# Services shipped by these packages are kept from starting on install (policy-rc.d): the tests
# start their own nginx/keepalived/haproxy processes with their own configs.
set -euo pipefail
purpose=${1:-test}
# build: what the venv's `pip install -e .` needs first, so the packet data plane's C hot path
# gets compiled, and clang/bpftool/libbpf for the XDP plane's BPF object (without them it installs
# anyway, with those planes unavailable)
build_pkgs="gcc python3-dev python3-venv clang llvm libbpf-dev bpftool"
test_pkgs="iproute2 curl openssl nginx-light keepalived tcpdump ethtool procps psmisc ipvsadm qemu-system-x86 busybox-static nftables netbase tomcat10 tmux chromium prometheus bird2"
bench_pkgs="haproxy nginx-light libnginx-mod-stream wrk util-linux bpftrace"
case "$purpose" in
  build) pkgs="$build_pkgs" ;;
  test)  pkgs="$test_pkgs" ;;
  demo)  pkgs="iproute2 curl nftables ethtool procps nginx-light bird2" ;;
  bench) pkgs="$test_pkgs $bench_pkgs" ;;
  *) echo "system-deps.sh: unknown purpose '$purpose' (build, test, demo, bench)" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "system-deps.sh: not root, skipping apt packages ($pkgs); tests that need them will skip" >&2
  exit 0
fi
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
cleanup_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  cleanup_policy=1
fi
trap '[ $cleanup_policy = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
