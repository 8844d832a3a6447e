// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * pylvs proxy plane: the in-kernel relay of established connections (a stream verdict on a
 * socket hash). Each side of an offloaded relay is known by its socket cookie; every segment a
 * side receives is redirected to the send side of its peer, once user space has caught up with
 * that side and while the side is within its credit (pylvs.dataplane.proxy.sockmap says why,
 * and owns the maps' contents).
 *
 * Built with clang -target bpf against vmlinux.h from the running kernel's BTF, loaded by
 * pylvs.libbpf; the maps are sized by the loader (the relay limit) before the load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/* link_map[cookie]: the peer's cookie, the bytes of this side the proxy has read and
 * forwarded itself ("taken"), and how many bytes the kernel may have redirected in all */
struct link {
    __u64 peer;
    __u64 taken;
    __u64 credit;
};

/* count_map[cookie]: bytes passed up to the proxy, bytes and segments redirected */
struct count {
    __u64 passed;
    __u64 redirected;
    __u64 segments;
};

/* sizes, not BTF types: the kernel takes no BTF value type for socket maps */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 1024);
    __uint(key_size, sizeof(__u64));
    __uint(value_size, sizeof(__u32));
} sock_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u64);
    __type(value, struct link);
} link_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u64);
    __type(value, struct count);
} count_map SEC(".maps");

/* the plain SK_SKB type: attached as the map's verdict (BPF_SK_SKB_VERDICT) by the loader; Debian's
 * libbpf 1.1 has no section name for that attach type */
SEC("sk_skb")
int relay_verdict(struct __sk_buff *skb)
{
    __u32 len = skb->len;
    /* A FIN with no data: redirected, it would reach the peer's send side as an empty write,
     * which the kernel takes as a broken pipe. Passed up, the proxy reads it as end of stream. */
    if (!len)
        return SK_PASS;
    __u64 cookie = bpf_get_socket_cookie(skb);
    struct link *l = bpf_map_lookup_elem(&link_map, &cookie);
    if (!l)
        return SK_PASS;
    struct count *c = bpf_map_lookup_elem(&count_map, &cookie);
    if (!c)
        return SK_PASS;
    /* redirect only once the proxy has forwarded every byte it was handed (order), and while
     * the side is within its credit (the kernel's memory) */
    if (c->passed == l->taken && c->redirected < l->credit
        && bpf_sk_redirect_hash(skb, &sock_map, &l->peer, 0) == SK_PASS) {
        __sync_fetch_and_add(&c->redirected, len);
        __sync_fetch_and_add(&c->segments, 1);
        return SK_PASS;
    }
    /* passed up (the peer may have left the map too): the proxy reads it */
    __sync_fetch_and_add(&c->passed, len);
    return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
