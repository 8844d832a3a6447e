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
# Direct routing: the real servers hold the VIP themselves (on lo, not answering ARP for it)
# and answer from it straight to the client over the server LAN (the client has a leg on br0,
# 192.168.168.200), never through the director: a policy route for replies from the VIP.
ip link add cbr0 type veth peer name eth1 netns client
ip link set cbr0 master br0 up
ip -n client addr add 192.168.168.200/24 dev eth1
ip -n client link set eth1 up
ip netns exec client sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth1.rp_filter=0
for i in 1 2; do
  ip netns exec rs$i sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  ip -n rs$i addr add 10.0.0.110/32 dev lo
  ip -n rs$i rule add from 10.0.0.110 table 110
  ip -n rs$i route add default via 192.168.168.200 table 110
done
ipvsadm -A -t 10.0.0.110:80 -s rr
ipvsadm -a -t 10.0.0.110:80 -r 192.168.168.11:80 -g
ipvsadm -a -t 10.0.0.110:80 -r 192.168.168.12:80 -g
rec 'conns 10.0.0.100 6'
hold 10.0.0.100
hold 10.0.0.100
rec 'conns 10.0.0.101 3'
rec 'conns 10.0.0.110 4'
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
