// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * pylvs XDP data plane: forwards packets of flows the Python core has already scheduled.
 *
 * Division of labour (why the program is this small): the core (every IPVS scheduler,
 * persistence, thresholds, the TCP state machine) decides each new connection and installs the
 * decision in `flows`; this program only carries out decisions at the driver's earliest hook.
 * Anything it is not sure of goes up with XDP_PASS: a packet with no flow entry, a TCP packet
 * with SYN, FIN or RST (so the core's state machine sees every transition and `-Lnc` stays
 * true), IP options, fragments, IPv6 extension headers, anything truncated. Those reach the
 * AF_PACKET plane behind it, which handles them as it always has.
 *
 * Forwarding methods, as kernel IPVS does them:
 *   DR   rewrite the Ethernet header only (the real server owns the VIP on lo);
 *   NAT  rewrite the destination (in) or source (out) address and port, with incremental
 *        IP and L4 checksums, then the Ethernet header;
 *   TUN  prepend an outer IPv4 header (IPIP, protocol 4) or IPv6 header (protocol 41) with
 *        the inner TTL/hop limit and TOS/traffic class, DF copied from the inner header.
 * The packet leaves with XDP_TX when the egress interface is the ingress one, else with
 * bpf_redirect() to the interface the core chose.
 *
 * Built with clang -target bpf against vmlinux.h from the running kernel's BTF; loaded by
 * pylvs.dataplane.xdp.loader through libbpf.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_IPIP_ 4
#define IPPROTO_IPV6_ 41
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3fff

#define FWD_DR 1
#define FWD_NAT_IN 2
#define FWD_NAT_OUT 3
#define FWD_TUN 4

/* Counter slots of `stats`, read back by the core (pylvs.dataplane.xdp.maps.STAT_NAMES). */
enum {
    ST_RX = 0,
    ST_TX,
    ST_REDIRECT,
    ST_PASS_NO_FLOW,
    ST_PASS_CONTROL,  /* SYN/FIN/RST: the core's state machine */
    ST_PASS_OTHER,    /* not IP, options, fragments, extension headers */
    ST_DROP_TRUNCATED,
    ST_ABORTED,
    ST_MAX,
};

struct lvs_flow_key {
    __u8 family;       /* 4 or 6 */
    __u8 proto;
    __u16 pad;
    __be16 sport;
    __be16 dport;
    __be32 saddr[4];   /* IPv4 uses word 0 */
    __be32 daddr[4];
};

struct lvs_action {
    __u8 method;       /* FWD_* */
    __u8 tun_family;   /* TUN: 4 (IPIP) or 6 (IPv6-in-IPv6) */
    __u16 pad;
    __u32 ifindex;     /* egress interface */
    __u8 dmac[6];
    __u8 smac[6];
    __be32 addr[4];    /* NAT: new destination (in) or source (out); TUN: outer destination */
    __be32 tun_src[4]; /* TUN: outer source */
    __be16 port;       /* NAT: new destination (in) or source (out) port */
    __u16 mtu;         /* TUN: the egress MTU; a packet that would not fit goes up (ICMP) */
    __u32 pad3;
    __u32 pad4;
    /* Updated here, read by the core for -Lnc expiry and --stats. */
    __u64 last_seen_ns;
    __u64 packets;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1 << 20);
    __type(key, struct lvs_flow_key);
    __type(value, struct lvs_action);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, ST_MAX);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

static __always_inline int count(__u32 slot, int verdict)
{
    __u64 *c = bpf_map_lookup_elem(&stats, &slot);
    if (c)
        *c += 1;
    return verdict;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (__u16)~sum;
}

/* RFC 1624 incremental update: HC' = ~(~HC + ~m + m'), for a 32-bit field. */
static __always_inline void csum_replace4(__u16 *sum, __be32 from, __be32 to)
{
    __u32 s = (__u16)~*sum;
    s += (__u16)~(from & 0xffff) + (__u16)~(from >> 16);
    s += (to & 0xffff) + (to >> 16);
    *sum = csum_fold(s) ;
}

static __always_inline void csum_replace2(__u16 *sum, __be16 from, __be16 to)
{
    __u32 s = (__u16)~*sum;
    s += (__u16)~from;
    s += to;
    *sum = csum_fold(s);
}

static __always_inline void set_macs(struct ethhdr *eth, const struct lvs_action *a)
{
    __builtin_memcpy(eth->h_dest, a->dmac, 6);
    __builtin_memcpy(eth->h_source, a->smac, 6);
}

static __always_inline int transmit(struct xdp_md *ctx, const struct lvs_action *a)
{
    if (a->ifindex == ctx->ingress_ifindex)
        return count(ST_TX, XDP_TX);
    count(ST_REDIRECT, 0);
    return bpf_redirect(a->ifindex, 0);
}

static __always_inline void touch(struct lvs_action *a, __u64 len)
{
    a->last_seen_ns = bpf_ktime_get_ns();
    __sync_fetch_and_add(&a->packets, 1);
    __sync_fetch_and_add(&a->bytes, len);
}

/* L4 header check and key ports; returns 0 to go on, 1 to pass up, -1 truncated. */
static __always_inline int l4_ports(void *l4, void *end, __u8 proto, struct lvs_flow_key *key,
                                    __u16 **l4csum)
{
    if (proto == IPPROTO_TCP_) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end)
            return -1;
        __u8 flags = ((__u8 *)th)[13];
        if (flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST))
            return 2;
        key->sport = th->source;
        key->dport = th->dest;
        *l4csum = &th->check;
        return 0;
    }
    if (proto == IPPROTO_UDP_) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end)
            return -1;
        key->sport = uh->source;
        key->dport = uh->dest;
        *l4csum = &uh->check;
        return 0;
    }
    return 1;
}

static __always_inline int encap_ipip(struct xdp_md *ctx, const struct lvs_action *a,
                                      __u16 inner_len, __u8 ttl, __u8 tos, __be16 frag)
{
    if (bpf_xdp_adjust_head(ctx, 0 - (int)sizeof(struct iphdr)))
        return count(ST_ABORTED, XDP_ABORTED);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *outer = data + sizeof(*eth);
    if ((void *)(outer + 1) > end)
        return count(ST_ABORTED, XDP_ABORTED);
    eth->h_proto = bpf_htons(ETH_P_IP);
    set_macs(eth, a);
    outer->version = 4;
    outer->ihl = 5;
    outer->tos = tos;
    outer->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
    /* DF set: the ID is not used (RFC 6864); else a random one so that fragments of
     * different packets never share it (the kernel's ip_select_ident does a hashed counter). */
    outer->id = (frag & bpf_htons(IP_DF)) ? 0 : (__u16)bpf_get_prandom_u32();
    outer->frag_off = frag & bpf_htons(IP_DF);
    outer->ttl = ttl;
    outer->protocol = IPPROTO_IPIP_;
    outer->check = 0;
    outer->saddr = a->tun_src[0];
    outer->daddr = a->addr[0];
    __u32 sum = 0;
    __u16 *w = (__u16 *)outer;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += w[i];
    outer->check = csum_fold(sum);
    return transmit(ctx, a);
}

static __always_inline int encap_ip6ip6(struct xdp_md *ctx, const struct lvs_action *a,
                                        __u16 inner_len, __u8 hlim, __u32 flow_tc)
{
    if (bpf_xdp_adjust_head(ctx, 0 - (int)sizeof(struct ipv6hdr)))
        return count(ST_ABORTED, XDP_ABORTED);
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct ipv6hdr *outer = data + sizeof(*eth);
    if ((void *)(outer + 1) > end)
        return count(ST_ABORTED, XDP_ABORTED);
    eth->h_proto = bpf_htons(ETH_P_IPV6);
    set_macs(eth, a);
    /* version 6, the inner traffic class, flow label 0 */
    *(__be32 *)outer = bpf_htonl(0x60000000 | (flow_tc & 0x0ff00000));
    outer->payload_len = bpf_htons(inner_len);
    outer->nexthdr = IPPROTO_IPV6_;
    outer->hop_limit = hlim;
    __builtin_memcpy(&outer->saddr, a->tun_src, 16);
    __builtin_memcpy(&outer->daddr, a->addr, 16);
    return transmit(ctx, a);
}

static __always_inline int handle_ipv4(struct xdp_md *ctx, void *data, void *end)
{
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    if ((void *)(ip + 1) > end)
        return count(ST_DROP_TRUNCATED, XDP_DROP);
    if (ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF_OFFSET)))
        return count(ST_PASS_OTHER, XDP_PASS);  /* options or fragments: the core's */
    __u16 tot = bpf_ntohs(ip->tot_len);
    if (tot < sizeof(*ip) || (void *)ip + tot > end)
        return count(ST_DROP_TRUNCATED, XDP_DROP);

    struct lvs_flow_key key = {};
    key.family = 4;
    key.proto = ip->protocol;
    key.saddr[0] = ip->saddr;
    key.daddr[0] = ip->daddr;
    __u16 *l4csum = 0;
    int r = l4_ports((void *)(ip + 1), end, ip->protocol, &key, &l4csum);
    if (r < 0)
        return count(ST_DROP_TRUNCATED, XDP_DROP);
    if (r == 2)
        return count(ST_PASS_CONTROL, XDP_PASS);
    if (r)
        return count(ST_PASS_OTHER, XDP_PASS);

    struct lvs_action *a = bpf_map_lookup_elem(&flows, &key);
    if (!a)
        return count(ST_PASS_NO_FLOW, XDP_PASS);
    touch(a, tot);

    switch (a->method) {
    case FWD_DR:
        set_macs(eth, a);
        return transmit(ctx, a);
    case FWD_NAT_IN:
    case FWD_NAT_OUT: {
        __be32 old_addr, new_addr = a->addr[0];
        __be16 old_port, new_port = a->port;
        __be16 *port_field;
        if (a->method == FWD_NAT_IN) {
            old_addr = ip->daddr;
            ip->daddr = new_addr;
        } else {
            old_addr = ip->saddr;
            ip->saddr = new_addr;
        }
        csum_replace4(&ip->check, old_addr, new_addr);
        void *l4 = (void *)(ip + 1);
        if (ip->protocol == IPPROTO_TCP_) {
            struct tcphdr *th = l4;
            if ((void *)(th + 1) > end)
                return count(ST_DROP_TRUNCATED, XDP_DROP);
            port_field = a->method == FWD_NAT_IN ? &th->dest : &th->source;
            old_port = *port_field;
            *port_field = new_port;
            csum_replace4(&th->check, old_addr, new_addr);
            csum_replace2(&th->check, old_port, new_port);
        } else {
            struct udphdr *uh = l4;
            if ((void *)(uh + 1) > end)
                return count(ST_DROP_TRUNCATED, XDP_DROP);
            port_field = a->method == FWD_NAT_IN ? &uh->dest : &uh->source;
            old_port = *port_field;
            *port_field = new_port;
            if (uh->check) {  /* a zero UDP checksum over IPv4 means "none" and stays so */
                csum_replace4(&uh->check, old_addr, new_addr);
                csum_replace2(&uh->check, old_port, new_port);
                if (!uh->check)
                    uh->check = 0xffff;
            }
        }
        set_macs(eth, a);
        return transmit(ctx, a);
    }
    case FWD_TUN:
        if (a->mtu && tot + sizeof(struct iphdr) > a->mtu)
            return count(ST_PASS_OTHER, XDP_PASS);  /* the core sends ICMP frag needed */
        if (a->tun_family == 4)
            return encap_ipip(ctx, a, tot, ip->ttl, ip->tos, ip->frag_off);
        return count(ST_PASS_OTHER, XDP_PASS);
    }
    return count(ST_PASS_OTHER, XDP_PASS);
}

static __always_inline int handle_ipv6(struct xdp_md *ctx, void *data, void *end)
{
    struct ethhdr *eth = data;
    struct ipv6hdr *ip6 = data + sizeof(*eth);
    if ((void *)(ip6 + 1) > end)
        return count(ST_DROP_TRUNCATED, XDP_DROP);
    __u16 plen = bpf_ntohs(ip6->payload_len);
    if ((void *)(ip6 + 1) + plen > end)
        return count(ST_DROP_TRUNCATED, XDP_DROP);
    if (ip6->nexthdr != IPPROTO_TCP_ && ip6->nexthdr != IPPROTO_UDP_)
        return count(ST_PASS_OTHER, XDP_PASS);  /* extension headers, ICMPv6/ND: the core's */

    struct lvs_flow_key key = {};
    key.family = 6;
    key.proto = ip6->nexthdr;
    __builtin_memcpy(key.saddr, &ip6->saddr, 16);
    __builtin_memcpy(key.daddr, &ip6->daddr, 16);
    __u16 *l4csum = 0;
    int r = l4_ports((void *)(ip6 + 1), end, ip6->nexthdr, &key, &l4csum);
    if (r < 0)
        return count(ST_DROP_TRUNCATED, XDP_DROP);
    if (r == 2)
        return count(ST_PASS_CONTROL, XDP_PASS);
    if (r)
        return count(ST_PASS_OTHER, XDP_PASS);

    struct lvs_action *a = bpf_map_lookup_elem(&flows, &key);
    if (!a)
        return count(ST_PASS_NO_FLOW, XDP_PASS);
    touch(a, plen + sizeof(*ip6));

    switch (a->method) {
    case FWD_DR:
        set_macs(eth, a);
        return transmit(ctx, a);
    case FWD_NAT_IN:
    case FWD_NAT_OUT: {
        __be32 *field = a->method == FWD_NAT_IN ? ip6->daddr.in6_u.u6_addr32
                                                 : ip6->saddr.in6_u.u6_addr32;
        __be32 old[4];
        __builtin_memcpy(old, field, 16);
        __builtin_memcpy(field, a->addr, 16);
        __u16 *check;
        __be16 *port_field;
        void *l4 = (void *)(ip6 + 1);
        if (ip6->nexthdr == IPPROTO_TCP_) {
            struct tcphdr *th = l4;
            if ((void *)(th + 1) > end)
                return count(ST_DROP_TRUNCATED, XDP_DROP);
            check = &th->check;
            port_field = a->method == FWD_NAT_IN ? &th->dest : &th->source;
        } else {
            struct udphdr *uh = l4;
            if ((void *)(uh + 1) > end)
                return count(ST_DROP_TRUNCATED, XDP_DROP);
            check = &uh->check;
            port_field = a->method == FWD_NAT_IN ? &uh->dest : &uh->source;
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
            csum_replace4(check, old[i], a->addr[i]);
        csum_replace2(check, *port_field, a->port);
        *port_field = a->port;
        if (ip6->nexthdr == IPPROTO_UDP_ && !*check)
            *check = 0xffff;  /* UDP over IPv6 must carry a checksum */
        set_macs(eth, a);
        return transmit(ctx, a);
    }
    case FWD_TUN:
        if (a->mtu && plen + 2 * sizeof(*ip6) > a->mtu)
            return count(ST_PASS_OTHER, XDP_PASS);  /* the core sends ICMPv6 packet too big */
        if (a->tun_family == 6)
            return encap_ip6ip6(ctx, a, plen + sizeof(*ip6), ip6->hop_limit,
                                bpf_ntohl(*(__be32 *)ip6));
        return count(ST_PASS_OTHER, XDP_PASS);
    }
    return count(ST_PASS_OTHER, XDP_PASS);
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    count(ST_RX, 0);
    if ((void *)(eth + 1) > end)
        return count(ST_DROP_TRUNCATED, XDP_DROP);
    if (eth->h_proto == bpf_htons(ETH_P_IP))
        return handle_ipv4(ctx, data, end);
    if (eth->h_proto == bpf_htons(ETH_P_IPV6))
        return handle_ipv6(ctx, data, end);
    return count(ST_PASS_OTHER, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
