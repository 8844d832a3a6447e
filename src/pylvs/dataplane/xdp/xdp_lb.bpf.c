// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * pylvs XDP data plane: forwards packets of flows the Python core has already scheduled, and
 * schedules new connections of `mh` services itself from the Maglev table the core fills.
 *
 * Division of labour (why the program is this small): the core (every IPVS scheduler,
 * persistence, thresholds, the TCP state machine) decides each new connection and installs the
 * decision in `flows`; this program only carries out decisions at the driver's earliest hook.
 * Anything it is not sure of goes up with XDP_PASS: a packet with no flow entry, a TCP packet
 * with SYN, FIN or RST (so the core's state machine sees every transition and `-Lnc` stays
 * true), IP options, fragments, IPv6 extension headers, anything truncated. Those reach the
 * AF_PACKET plane behind it, which handles them as it always has.
 *
 * The one decision made here (Katran's design): a service the core lists in `mh_services` is
 * one whose every decision is the `mh` scheduler's table lookup and nothing else (no
 * persistence, no thresholds, methods this program forwards; the core checks that). For a TCP
 * SYN (without ACK, FIN or RST) or a UDP datagram of such a service with no flow entry, the
 * client is hashed exactly as ip_vs_mh.c hashes it (hsiphash of the address fold, plus the
 * source port with mh-port, with the kernel's fixed key), the slot names the real server's
 * action (the core fills each slot from the very table its scheduler computed), and the flow
 * is installed marked FLOW_F_KERNEL and forwarded like any installed flow. A record of it goes
 * to the `new_flows` ring so that the core enters the connection in its table (`-Lnc`, counts,
 * rates). A
 * slot whose server cannot take connections (weight 0) holds FWD_NONE: the packet goes up and
 * the core applies mh-fallback or refuses, exactly as it does without this program. A NAT
 * server's slot is the way in (FWD_NAT_IN to the server's address and port); the way back is
 * installed with it, as the flow the core would install once the connection is established
 * (FWD_NAT_OUT, source back to the VIP), marked FLOW_F_REPLY, when `reply_hops` (the core's
 * routes: its on-link networks and its default route's next hop) names where the client is:
 * an on-link client's MAC is the one its SYN came from, on that interface; an off-link
 * client's is the gateway's the core resolved. The server's SYN-ACK then goes back from here
 * (the one packet with SYN this program forwards: it changes nothing in the core's state, a
 * SYN_RECV entry stays SYN_RECV), and the rest of the handshake too. With no hop the reply
 * flow is not made and the SYN-ACK goes up, as for a flow the core scheduled.
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
#define TCP_FLAG_ACK 0x10
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3fff

#define FWD_NONE 0    /* a Maglev slot whose server takes no new connections: the core's */
#define FWD_DR 1
#define FWD_NAT_IN 2
#define FWD_NAT_OUT 3
#define FWD_TUN 4

#define FLOW_F_KERNEL 1   /* lvs_action.flags: this program scheduled the flow */
#define FLOW_F_REPLY 2    /* ... and this is the NAT reply's (server -> client) direction */
#define FLOW_F_OPENING 4  /* the core installed it at the connection's SYN (the handshake's
                           * ACK and the rest stay here; the ACK is reported as NEW_ACKED) */

/* The kernel's Maglev table size (CONFIG_IP_VS_MH_TAB_INDEX 12) and how many tables fit. */
#define MH_TAB_SIZE 4093
#define MH_TABLES 128
#define MH_DESTS_PER_TABLE 256
#define SVC_F_MH_PORT 1
/* ip_vs_mh's generate_hash_secret(): hash1 keys the client's hash */
#define MH_KEY 2654435761ULL

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
    ST_MH_SCHEDULED,  /* new connections scheduled here from the Maglev table */
    ST_PASS_MH_UNAVAILABLE,  /* their slot's server takes none: the core's (mh-fallback) */
    ST_MH_QUEUE_FULL, /* a record for the core the full ring refused (repaired later) */
    ST_MH_REPLY,      /* NAT reply flows made with a connection scheduled here */
    ST_MH_NO_REPLY_HOP, /* ... not made: reply_hops does not say where the client is */
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
    __u16 flags;       /* FLOW_F_* */
    __u32 ifindex;     /* egress interface */
    __u8 dmac[6];
    __u8 smac[6];
    __be32 addr[4];    /* NAT: new destination (in) or source (out); TUN: outer destination;
                        * a Maglev slot's: the real server's address (all methods) */
    __be32 tun_src[4]; /* TUN: outer source */
    __be16 port;       /* NAT: new destination (in) or source (out) port; a slot's: the
                        * real server's port */
    __u16 mtu;         /* TUN: the egress MTU; a packet that would not fit goes up (ICMP) */
    __u32 first_len;   /* FLOW_F_KERNEL: the IP length of the packet that made the flow */
    __u32 pad4;
    /* Updated here, read by the core for -Lnc expiry and --stats. */
    __u64 last_seen_ns;
    __u64 packets;
    __u64 bytes;
};

/* A service this program may schedule, by what a packet says: (family, proto, VIP, vport). */
struct lvs_svc_key {
    __u8 family;
    __u8 proto;
    __be16 vport;
    __be32 vaddr[4];
};

struct lvs_svc {
    __u32 table;       /* its Maglev table: slots [table * MH_TAB_SIZE, + MH_TAB_SIZE) */
    __u32 flags;       /* SVC_F_MH_PORT */
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

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, MH_TABLES);
    __type(key, struct lvs_svc_key);
    __type(value, struct lvs_svc);
} mh_services SEC(".maps");

/* Each slot: the index in mh_dests of the real server the slot names. A table is written
 * whole by the core into a free one and then switched to in one mh_services update, so a
 * packet never sees half of an old table and half of a new one. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, MH_TABLES * MH_TAB_SIZE);
    __type(key, __u32);
    __type(value, __u32);
} mh_slots SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, MH_TABLES * MH_DESTS_PER_TABLE);
    __type(key, __u32);
    __type(value, struct lvs_action);
} mh_dests SEC(".maps");

/* Where a NAT connection's replies go, by the client's address (the core's routes, written
 * by the core): key data is the family (4 or 6) then the address, so one trie holds both and a
 * family's default route is the prefix of length 8. */
struct lvs_hop_key {
    __u32 prefixlen;
    __u8 family;
    __u8 addr[16];
};

struct lvs_hop {
    __u32 ifindex;
    __u8 dmac[6];      /* the gateway's (off-link); unused on-link */
    __u8 smac[6];      /* the interface's */
    __u8 onlink;       /* the client's MAC is its SYN's source, if it came in on ifindex */
    __u8 pad[3];
};

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 1024);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct lvs_hop_key);
    __type(value, struct lvs_hop);
} reply_hops SEC(".maps");

/* What the core must learn of the flows scheduled here, as complete records in a ring buffer
 * the core maps and reads in bulk (one parse over many records, no system call per flow; a
 * queue map cost the core a pop and a flow map read per connection): the flow key, the
 * server's address and port, the first packet's length and time (NEW_SCHEDULED), and, when
 * such a TCP flow's first packet without SYN (the handshake's ACK) passes, a second record
 * (NEW_ACKED) so that the core's entry leaves SYN_RECV as it would have seen that ACK. A
 * record the full ring refuses is counted (mh_queue_full); the core repairs what it missed
 * from the flow map (FLOW_F_KERNEL flows it does not know). No wakeup: the core polls. */
#define NEW_SCHEDULED 0
#define NEW_ACKED 1
struct lvs_new_flow {
    struct lvs_flow_key key;
    __be32 addr[4];    /* NEW_SCHEDULED: the server's address */
    __be16 port;       /* and port */
    __u8 kind;         /* NEW_* */
    __u8 reply;        /* NEW_SCHEDULED: a NAT reply flow was installed with it */
    __u32 first_len;   /* NEW_SCHEDULED: the IP length of the packet that made the flow */
    __u32 hash_in;     /* NEW_SCHEDULED: the client's value ip_vs_mh hashes (address fold, */
    __u32 hash;        /* plus the port with mh-port) and its hsiphash: the core's mh need */
    __u64 ts;          /* not hash it again; bpf_ktime_get_ns() of the packet */
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 23);  /* the loader may size it (a power of 2 of pages) */
} new_flows SEC(".maps");

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

/* A record for the core (see new_flows); the ring full: counted, the core repairs it. */
static __always_inline void report(const struct lvs_flow_key *key, __u8 kind,
                                   const struct lvs_action *a, __u64 now, __u32 hash_in,
                                   __u32 hash, __u8 reply)
{
    struct lvs_new_flow rec = {};
    __builtin_memcpy(&rec.key, key, sizeof(rec.key));
    rec.kind = kind;
    rec.ts = now;
    if (kind == NEW_SCHEDULED) {
        __builtin_memcpy(rec.addr, a->addr, sizeof(rec.addr));
        rec.port = a->port;
        rec.first_len = a->first_len;
        rec.hash_in = hash_in;
        rec.hash = hash;
        rec.reply = reply;
    }
    if (bpf_ringbuf_output(&new_flows, &rec, sizeof(rec), BPF_RB_NO_WAKEUP))
        count(ST_MH_QUEUE_FULL, 0);
}

/* The TCP/UDP header: its ports into the key, its checksum and port fields for NAT, and the
 * TCP flags. 0: go on; 1: another protocol (up); -1: truncated. */
struct l4_fields {
    __u16 *check;
    __be16 *sport;
    __be16 *dport;
    __u8 tcp_flags;
};

static __always_inline int l4_parse(void *l4, void *end, __u8 proto, struct lvs_flow_key *key,
                                    struct l4_fields *f)
{
    if (proto == IPPROTO_TCP_) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end)
            return -1;
        f->tcp_flags = ((__u8 *)th)[13];
        f->check = &th->check;
        f->sport = &th->source;
        f->dport = &th->dest;
    } else if (proto == IPPROTO_UDP_) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end)
            return -1;
        f->tcp_flags = 0;
        f->check = &uh->check;
        f->sport = &uh->source;
        f->dport = &uh->dest;
    } else {
        return 1;
    }
    key->sport = *f->sport;
    key->dport = *f->dport;
    return 0;
}

/* NAT both ways, both families: the address (1 word for IPv4, 4 for IPv6) and the port become
 * the action's, with RFC 1624 updates of the L4 checksum (and of IPv4's header checksum,
 * `ip_check`). A zero UDP checksum over IPv4 means "none" and stays so; over IPv6 UDP must
 * carry one, so a result of 0 is sent as 0xffff, as for IPv4 UDP with a checksum. */
static __always_inline void nat_rewrite(const struct lvs_action *a, struct l4_fields *f,
                                        __u8 proto, __be32 *field, int words, __u16 *ip_check)
{
    __be16 *port_field = a->method == FWD_NAT_IN ? f->dport : f->sport;
    int l4sum = !(proto == IPPROTO_UDP_ && words == 1 && !*f->check);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (i < words) {
            __be32 old = field[i];
            field[i] = a->addr[i];
            if (ip_check)
                csum_replace4(ip_check, old, a->addr[i]);
            if (l4sum)
                csum_replace4(f->check, old, a->addr[i]);
        }
    }
    if (l4sum) {
        csum_replace2(f->check, *port_field, a->port);
        if (proto == IPPROTO_UDP_ && !*f->check)
            *f->check = 0xffff;
    }
    *port_field = a->port;
}

/* Room for an outer header of `len` bytes between a new Ethernet header (the action's MACs,
 * `ethertype`) and the packet: where the outer header goes, or NULL. */
static __always_inline void *push_outer(struct xdp_md *ctx, const struct lvs_action *a, int len,
                                        __u16 ethertype)
{
    if (bpf_xdp_adjust_head(ctx, -len))
        return 0;
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if (data + sizeof(*eth) + len > end)
        return 0;
    eth->h_proto = bpf_htons(ethertype);
    set_macs(eth, a);
    return data + sizeof(*eth);
}

static __always_inline int encap_ipip(struct xdp_md *ctx, const struct lvs_action *a,
                                      __u16 inner_len, __u8 ttl, __u8 tos, __be16 frag)
{
    struct iphdr *outer = push_outer(ctx, a, sizeof(*outer), ETH_P_IP);
    if (!outer)
        return count(ST_ABORTED, XDP_ABORTED);
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
    struct ipv6hdr *outer = push_outer(ctx, a, sizeof(*outer), ETH_P_IPV6);
    if (!outer)
        return count(ST_ABORTED, XDP_ABORTED);
    /* version 6, the inner traffic class, flow label 0 */
    *(__be32 *)outer = bpf_htonl(0x60000000 | (flow_tc & 0x0ff00000));
    outer->payload_len = bpf_htons(inner_len);
    outer->nexthdr = IPPROTO_IPV6_;
    outer->hop_limit = hlim;
    __builtin_memcpy(&outer->saddr, a->tun_src, 16);
    __builtin_memcpy(&outer->daddr, a->addr, 16);
    return transmit(ctx, a);
}

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { \
    v0 += v1; v1 = ROTL64(v1, 13); v1 ^= v0; v0 = ROTL64(v0, 32); \
    v2 += v3; v3 = ROTL64(v3, 16); v3 ^= v2; \
    v0 += v3; v3 = ROTL64(v3, 21); v3 ^= v0; \
    v2 += v1; v1 = ROTL64(v1, 17); v1 ^= v2; v2 = ROTL64(v2, 32); \
} while (0)

/* hsiphash(&value, 4, key) on a 64-bit kernel: SipHash-1-3 of one 4-byte tail, truncated. */
static __always_inline __u32 hsiphash_u32(__u32 value, __u64 k0, __u64 k1)
{
    __u64 v0 = 0x736f6d6570736575ULL ^ k0;
    __u64 v1 = 0x646f72616e646f6dULL ^ k1;
    __u64 v2 = 0x6c7967656e657261ULL ^ k0;
    __u64 v3 = 0x7465646279746573ULL ^ k1;
    __u64 b = (4ULL << 56) | value;
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return (__u32)(v0 ^ v1 ^ v2 ^ v3);
}

/* ip_vs_mh_schedule without fallback: the action of the server the client's slot names in a
 * service the core lists, or NULL (then *listed says whether the service was one). */
static __always_inline struct lvs_action *mh_pick(const struct lvs_flow_key *key, int *listed,
                                                  __u32 *hv, __u32 *hh)
{
    struct lvs_svc_key sk = {};
    sk.family = key->family;
    sk.proto = key->proto;
    sk.vport = key->dport;
    __builtin_memcpy(sk.vaddr, key->daddr, 16);
    struct lvs_svc *svc = bpf_map_lookup_elem(&mh_services, &sk);
    *listed = svc != 0;
    if (!svc)
        return 0;
    /* ntohl(addr_fold): IPv4's words 1-3 are zero, so one XOR serves both families */
    __u32 v = bpf_ntohl(key->saddr[0] ^ key->saddr[1] ^ key->saddr[2] ^ key->saddr[3]);
    if (svc->flags & SVC_F_MH_PORT)
        v += bpf_ntohs(key->sport);
    __u32 h = hsiphash_u32(v, MH_KEY, MH_KEY);
    *hv = v;
    *hh = h;
    __u32 slot = svc->table * MH_TAB_SIZE + h % MH_TAB_SIZE;
    __u32 *dest = bpf_map_lookup_elem(&mh_slots, &slot);
    if (!dest)
        return 0;
    return bpf_map_lookup_elem(&mh_dests, dest);
}

/* A NAT connection scheduled here (`fwd`, the way in, just installed): its reply flow, if
 * `reply_hops` says where the client is. 1 if installed. */
static __always_inline int install_reply(const struct lvs_flow_key *key,
                                         const struct lvs_action *fwd, __u32 ingress,
                                         const __u8 *src_mac)
{
    struct lvs_hop_key hk = {};
    hk.prefixlen = 8 + (key->family == 4 ? 32 : 128);
    hk.family = key->family;
    __builtin_memcpy(hk.addr, key->saddr, 16);
    struct lvs_hop *hop = bpf_map_lookup_elem(&reply_hops, &hk);
    if (!hop || (hop->onlink && hop->ifindex != ingress))
        return count(ST_MH_NO_REPLY_HOP, 0);
    struct lvs_flow_key rk = {};
    rk.family = key->family;
    rk.proto = key->proto;
    rk.sport = fwd->port;
    rk.dport = key->sport;
    __builtin_memcpy(rk.saddr, fwd->addr, 16);
    __builtin_memcpy(rk.daddr, key->saddr, 16);
    struct lvs_action r = {};
    r.method = FWD_NAT_OUT;
    r.flags = FLOW_F_KERNEL | FLOW_F_REPLY;
    r.ifindex = hop->ifindex;
    __builtin_memcpy(r.dmac, hop->onlink ? src_mac : hop->dmac, 6);
    __builtin_memcpy(r.smac, hop->smac, 6);
    __builtin_memcpy(r.addr, key->daddr, 16);
    r.port = key->dport;
    if (bpf_map_update_elem(&flows, &rk, &r, BPF_ANY))
        return 0;
    return count(ST_MH_REPLY, 1);
}

/* What to do with the packet of `key`: its flow's action (counted), a new flow's (scheduled
 * here into `fresh`), or NULL with the verdict in *verdict. `ingress` and `src_mac`: where the
 * packet came from (a NAT reply flow's way back to an on-link client). */
static __always_inline struct lvs_action *decide(struct lvs_flow_key *key, __u8 tcp_flags,
                                                 __u32 len, struct lvs_action *fresh,
                                                 int *verdict, __u32 ingress,
                                                 const __u8 *src_mac)
{
    int opens = 1;
    int synack = 0;
    if (key->proto == IPPROTO_TCP_) {
        if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_ACK) || !(tcp_flags & TCP_FLAG_SYN))
            opens = 0;
        if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) {
            *verdict = count(ST_PASS_CONTROL, XDP_PASS);
            return 0;
        }
        synack = !opens && tcp_flags & TCP_FLAG_SYN;
    }
    struct lvs_action *a = bpf_map_lookup_elem(&flows, key);
    if (a) {
        /* a SYN of a known flow is the core's; so is a SYN-ACK, but on a NAT reply flow made
         * here (the server answering a connection scheduled here: no state changes) */
        if ((key->proto == IPPROTO_TCP_ && opens) || (synack && !(a->flags & FLOW_F_REPLY))) {
            *verdict = count(ST_PASS_CONTROL, XDP_PASS);
            return 0;
        }
        /* the first packet after the SYN of a TCP flow made here or installed by the core
         * at that SYN: the core's entry moves on */
        if (((a->flags & (FLOW_F_KERNEL | FLOW_F_REPLY)) == FLOW_F_KERNEL
             || a->flags & FLOW_F_OPENING)
            && key->proto == IPPROTO_TCP_ && a->packets == 1)
            report(key, NEW_ACKED, a, bpf_ktime_get_ns(), 0, 0, 0);
        touch(a, len);
        return a;
    }
    if (synack) {
        *verdict = count(ST_PASS_CONTROL, XDP_PASS);
        return 0;
    }
    int listed = 0;
    __u32 hv = 0, hh = 0;
    struct lvs_action *d = opens ? mh_pick(key, &listed, &hv, &hh) : 0;
    if (!d || d->method == FWD_NONE) {
        if (listed)
            *verdict = count(ST_PASS_MH_UNAVAILABLE, XDP_PASS);
        else if (key->proto == IPPROTO_TCP_ && opens)  /* a SYN: the core's, as before */
            *verdict = count(ST_PASS_CONTROL, XDP_PASS);
        else
            *verdict = count(ST_PASS_NO_FLOW, XDP_PASS);
        return 0;
    }
    __builtin_memcpy(fresh, d, sizeof(*fresh));
    fresh->flags = FLOW_F_KERNEL;
    fresh->first_len = len;
    fresh->last_seen_ns = bpf_ktime_get_ns();
    fresh->packets = 1;
    fresh->bytes = len;
    /* NOEXIST: another CPU that scheduled the same tuple first keeps its entry (the same) */
    if (bpf_map_update_elem(&flows, key, fresh, BPF_NOEXIST) == 0) {
        __u8 reply = fresh->method == FWD_NAT_IN && install_reply(key, fresh, ingress, src_mac);
        report(key, NEW_SCHEDULED, fresh, fresh->last_seen_ns, hv, hh, reply);
    }
    count(ST_MH_SCHEDULED, 0);
    return fresh;
}

/* The transport header after a parsed IP header (its fields into `f`), then `decide`; NULL
 * with the verdict in *verdict for what is not forwarded here. */
static __always_inline struct lvs_action *classify(void *l4, void *end, struct lvs_flow_key *key,
                                                   __u32 len, struct l4_fields *f,
                                                   struct lvs_action *fresh, int *verdict,
                                                   struct xdp_md *ctx, const struct ethhdr *eth)
{
    int r = l4_parse(l4, end, key->proto, key, f);
    if (r < 0) {
        *verdict = count(ST_DROP_TRUNCATED, XDP_DROP);
        return 0;
    }
    if (r) {
        *verdict = count(ST_PASS_OTHER, XDP_PASS);
        return 0;
    }
    return decide(key, f->tcp_flags, len, fresh, verdict, ctx->ingress_ifindex, eth->h_source);
}

/* DR and NAT, both families (`words` address words, IPv4's header checksum or NULL): rewrite
 * and send; -1 for another method, which the caller handles. */
static __always_inline int rewrite_send(struct xdp_md *ctx, struct ethhdr *eth,
                                        const struct lvs_action *a, struct l4_fields *f,
                                        __u8 proto, __be32 *saddr, __be32 *daddr, int words,
                                        __u16 *ip_check)
{
    if (a->method == FWD_NAT_IN)
        nat_rewrite(a, f, proto, daddr, words, ip_check);
    else if (a->method == FWD_NAT_OUT)
        nat_rewrite(a, f, proto, saddr, words, ip_check);
    else if (a->method != FWD_DR)
        return -1;
    set_macs(eth, a);
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
    struct l4_fields f = {};
    struct lvs_action fresh;
    int verdict = XDP_PASS;
    struct lvs_action *a = classify((void *)(ip + 1), end, &key, tot, &f, &fresh, &verdict, ctx,
                                    eth);
    if (!a)
        return verdict;
    int sent = rewrite_send(ctx, eth, a, &f, key.proto, &ip->saddr, &ip->daddr, 1, &ip->check);
    if (sent >= 0)
        return sent;
    if (a->method == FWD_TUN) {
        if (a->mtu && tot + sizeof(struct iphdr) > a->mtu)
            return count(ST_PASS_OTHER, XDP_PASS);  /* the core sends ICMP frag needed */
        if (a->tun_family == 4)
            return encap_ipip(ctx, a, tot, ip->ttl, ip->tos, ip->frag_off);
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
    struct l4_fields f = {};
    struct lvs_action fresh;
    int verdict = XDP_PASS;
    struct lvs_action *a = classify((void *)(ip6 + 1), end, &key, plen + sizeof(*ip6), &f,
                                    &fresh, &verdict, ctx, eth);
    if (!a)
        return verdict;
    int sent = rewrite_send(ctx, eth, a, &f, key.proto, ip6->saddr.in6_u.u6_addr32,
                            ip6->daddr.in6_u.u6_addr32, 4, 0);
    if (sent >= 0)
        return sent;
    if (a->method == FWD_TUN) {
        if (a->mtu && plen + 2 * sizeof(*ip6) > a->mtu)
            return count(ST_PASS_OTHER, XDP_PASS);  /* the core sends ICMPv6 packet too big */
        if (a->tun_family == 6)
            return encap_ip6ip6(ctx, a, plen + sizeof(*ip6), ip6->hop_limit,
                                bpf_ntohl(*(__be32 *)ip6));
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
