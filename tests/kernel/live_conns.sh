# Live connections through kernel IPVS, listed by pylvsadm and (paired) the real ipvsadm at the
# same moment: run by tests/kernel/guest_golden.py --pair in the style of the golden cases
# (rec.sh sourced first; lvsnet.sh builds the NAT lab inside the VM).
. /usr/lib/lvsnet.sh
net_setup
ipvsadm -A -t 10.0.0.100:80 -s rr
ipvsadm -a -t 10.0.0.100:80 -r 192.168.168.11:80 -m
ipvsadm -a -t 10.0.0.100:80 -r 192.168.168.12:80 -m -w 2
ipvsadm -A -t 10.0.0.101:80 -s wlc -p 120
ipvsadm -a -t 10.0.0.101:80 -r 192.168.168.13:80 -m
ipvsadm -A -u 10.0.0.100:53 -s rr
ipvsadm -a -u 10.0.0.100:53 -r 192.168.168.11:53 -m
ipvsadm -A -t 10.0.0.102:81 -s rr
ipvsadm -a -t 10.0.0.102:81 -r 192.168.168.14:81 -m -x 10 -y 2
rec 'conns 10.0.0.100 6'
hold 10.0.0.100
hold 10.0.0.100
rec 'conns 10.0.0.101 3'
rec 'ip netns exec client timeout 3 nslookup example.org 10.0.0.100 >/dev/null 2>&1; echo nslookup rc=$?'
rec 'ip netns exec client timeout 3 nc 10.0.0.102 81 </dev/null; echo nc rc=$?'
sleep 2.5
rec 'ipvsadm -Ln'
rec 'ipvsadm -Lnc'
rec 'ipvsadm -Lnc --persistent-conn'
rec 'ipvsadm -Lc'
rec 'ipvsadm -Ln --stats'
rec 'ipvsadm -Ln --stats --exact'
rec 'ipvsadm -Ln --thresholds'
rec 'ipvsadm -Ln --persistent-conn'
rec 'ipvsadm -L'
rec 'ipvsadm -Ln -t 10.0.0.100:80 --stats'
rec 'ipvsadm -Sn'
rec 'ipvsadm-save'
rec 'ipvsadm -Z -t 10.0.0.100:80'
rec 'ipvsadm -Ln --stats'
rec 'ipvsadm -d -t 10.0.0.100:80 -r 192.168.168.12:80'
rec 'ipvsadm -Ln -t 10.0.0.100:80'
rec 'ipvsadm -Lnc'
unhold
