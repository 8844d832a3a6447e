# Stage 2 of the pylvs test VM's init, run by busybox sh as PID 1 on the overlay root.
# Runs $scratch/cmd.sh as root with the host's tools at their host paths; stdout, stderr and the
# exit status go to files in the scratch directory, which the host reads after power-off.
scratch=$1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYLVS_IN_VM=1
/bin/busybox hostname pylvs-vm
/bin/busybox ip link set lo up
/bin/busybox modprobe ip_vs || echo "pylvs-vm: modprobe ip_vs failed" >&2
echo "pylvs-vm: ready $(/bin/busybox cut -d' ' -f1 /proc/uptime)" > /dev/console
cd "$scratch" || /bin/busybox poweroff -f
/bin/sh ./cmd.sh > ./stdout 2> ./stderr < /dev/null
echo $? > ./rc
/bin/busybox sync
/bin/busybox poweroff -f
