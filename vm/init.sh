#!/bin/busybox sh
# PID 1 of the pylvs test VM (runs from the initramfs that vm/vmrun.py builds).
#
# Stage 1 (here): load the virtio/9p/overlay modules shipped in the initramfs, mount the host's
# root read-only over virtio-9p, lay a RAM overlay on it so the guest can write anywhere without
# touching the host, mount the writable scratch directory at the same path it has on the host, and
# switch_root into it. Stage 2 (/run/pylvs-stage2): load ip_vs, run the command, record its
# output and status in the scratch directory, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m.ko" || echo "pylvs-vm: insmod $m failed"; done

arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
scratch=$(arg pylvs.scratch)
kver=$(uname -r)
kmods=$(arg pylvs.kmods)

mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower \
  || { echo "pylvs-vm: cannot mount the host root over 9p"; poweroff -f; }
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot \
  || { echo "pylvs-vm: overlay over 9p failed"; poweroff -f; }

# Fresh /tmp and /run: the host's own (netns names, pid files) must not leak into the guest.
# A checkout that itself lives under /tmp or /run (a CI clone, say), and the reference data beside
# it, stay visible at their paths, writable through the overlay like everything else.
# pylvs.keep=VISIBLE=REAL,... (REAL is the host path with symlinks resolved).
kept=""
n=0
for pair in $(arg pylvs.keep | tr ',' ' '); do
  vis=${pair%%=*}
  real=${pair#*=}
  case "$vis" in /tmp/?*|/run/?*) ;; *) continue ;; esac
  [ -d "/newroot$real" ] || continue
  n=$((n + 1))
  mkdir -p "/keep/$n" && mount --bind "/newroot$real" "/keep/$n" && kept="$kept $n=$vis"
done
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
for k in $kept; do
  vis=${k#*=}
  mkdir -p "/newroot$vis"
  mount --move "/keep/${k%%=*}" "/newroot$vis" || { echo "pylvs-vm: cannot keep $vis"; poweroff -f; }
done
mkdir -p "/newroot$scratch"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 scratch "/newroot$scratch" \
  || { echo "pylvs-vm: cannot mount scratch"; poweroff -f; }
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev

# The guest kernel's modules, from the unpacked linux-image package in the host's cache.
mkdir -p /newroot/lib/modules
rm -rf "/newroot/lib/modules/$kver"
ln -s "$kmods/lib/modules/$kver" "/newroot/lib/modules/$kver"
# The kernel runs /sbin/modprobe to autoload schedulers; the host may have no kmod.
mkdir -p /newroot/usr/local/sbin
for t in modprobe insmod rmmod lsmod modinfo depmod; do
  [ -x "/newroot/sbin/$t" ] || ln -sf /bin/busybox "/newroot/usr/local/sbin/$t"
done
[ -x /newroot/sbin/modprobe ] || { rm -f /newroot/sbin/modprobe; ln -s /bin/busybox /newroot/sbin/modprobe; }
cp /stage2 /newroot/run/pylvs-stage2
exec switch_root /newroot /bin/busybox sh /run/pylvs-stage2 "$scratch"
