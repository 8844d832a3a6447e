/* The packet data plane's hot path in C: the RX ring walk, a flow table of established
 * connections, their DR/NAT/TUN rewrites and the TX ring.
 *
 * Why C: in Python each forwarded frame costs 6-9 us of CPU (ring walk, header checks, the
 * connection lookup and the counters), which caps one core at 110-150 k frames/s. Frames of
 * a connection the Python path has already accepted need none of the Director's decisions:
 * the rewrite is fixed for the connection's life. So Python installs a flow for it, and this
 * module forwards its frames without entering the interpreter; the Director gets the
 * counters once a tick (FlowTable.sync).
 *
 * What this is for: Ring (one interface's TPACKET_V3 mmap: it owns the RX reader position and
 * every TX slot, so the Python queue() and the fast path never race for a slot) and FlowTable
 * (open addressing, a hard size limit; DR = the 12 MAC bytes, NAT = destination (client ->
 * real server) or source (real server -> client) address and port with RFC 1624 incremental
 * checksums; TUN = the IP packet inside an outer IPv4 header to the real server, written straight
 * into the TX slot, as codec.ipip_encapsulate builds it; a packet that would exceed the out MTU
 * goes to Python, which answers "fragmentation needed"). A frame is taken only if it is IPv4 without options, TCP or UDP, not a
 * fragment, has a valid IP header checksum, whole L4 header, and (TCP) ACK without SYN/FIN/RST:
 * everything else goes to the Python callback unchanged, so the core's state machine sees
 * every state change.
 *
 * What this is not for: deciding anything (scheduling, states, persistence, ARP, ICMP, TUN):
 * that is forward.py's, which stays the reference this module must match byte for byte.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define TPACKET3_HDRLEN 48
#define TP_STATUS_KERNEL 0u
#define TP_STATUS_USER 1u
#define TP_STATUS_AVAILABLE 0u
#define TP_STATUS_SEND_REQUEST 1u
#define TP_STATUS_WRONG_FORMAT 4u
#define TP_STATUS_CSUMNOTREADY (1u << 3)
#define TP_STATUS_CSUM_VALID (1u << 7)
#define VNET_NEEDS_CSUM 1u
#define VNET_DATA_VALID 2u
/* a frame's rx meta, as offload.py numbers it */
#define META_CSUM_OK 1u
#define TX_BATCH 64
#define MAX_RINGS 64

#define KIND_DR 0
#define KIND_NAT_DST 1
#define KIND_NAT_SRC 2
#define KIND_TUN 3

static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline void st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

/* 16-bit one's-complement sum of n bytes (odd length padded with a zero byte), not folded */
static uint64_t ones_add(const uint8_t *p, size_t n, uint64_t sum)
{
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        sum += (uint64_t)__builtin_bswap32(a) + __builtin_bswap32(b);
        p += 8;
        n -= 8;
    }
    while (n >= 2) {
        sum += be16(p);
        p += 2;
        n -= 2;
    }
    if (n)
        sum += (unsigned)p[0] << 8;
    return sum;
}

static inline uint16_t fold64(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)s;
}

/* Where the IP packet of an Ethernet frame ends (padding excluded); n when not IP. */
static size_t l3_end(const uint8_t *p, size_t n)
{
    size_t e = n;
    if (n >= 34 && p[12] == 8 && p[13] == 0 && (p[14] >> 4) == 4)
        e = 14 + (size_t)be16(p + 16);
    else if (n >= 54 && p[12] == 0x86 && p[13] == 0xDD)
        e = 54 + (size_t)be16(p + 18);
    return e < n ? e : n;
}

/* A partial checksum finished in place, as skb_checksum_help stores it: the field at
 * start+offset holds the pseudo-header sum; 0 when the offsets lie outside the packet. */
static int complete_csum(uint8_t *p, size_t n, unsigned start, unsigned offset)
{
    size_t end = l3_end(p, n);
    size_t field = (size_t)start + offset;
    if (start < 14 || field + 2 > end)
        return 0;
    uint16_t c = (uint16_t)~fold64(ones_add(p + start, end - start, 0));
    if (c == 0)
        c = 0xFFFF;  /* UDP: 0 would mean "no checksum"; TCP: the same number */
    p[field] = (uint8_t)(c >> 8);
    p[field + 1] = (uint8_t)c;
    return 1;
}

/* The rx meta of a frame (offload.py's rx_meta / rx_meta_plain), completing a partial
 * checksum of an ordinary frame in place. vnet: the header before the frame, or NULL. */
static unsigned long frame_meta(const uint8_t *vnet, uint8_t *p, size_t n, uint32_t tp_status)
{
    if (vnet != NULL) {
        uint8_t flags = vnet[0], gso_type = vnet[1];
        if (gso_type)
            return (unsigned long)(gso_type & 0x7F) << 8 | (unsigned long)(vnet[4] | vnet[5] << 8) << 16;
        if (flags & VNET_NEEDS_CSUM)
            return complete_csum(p, n, vnet[6] | vnet[7] << 8, vnet[8] | vnet[9] << 8)
                ? META_CSUM_OK : 0;
        return (flags & VNET_DATA_VALID) || (tp_status & TP_STATUS_CSUM_VALID) ? META_CSUM_OK : 0;
    }
    if (tp_status & TP_STATUS_CSUM_VALID)
        return META_CSUM_OK;
    if (!(tp_status & TP_STATUS_CSUMNOTREADY) || n < 34 || p[12] != 8 || p[13] != 0
            || (p[14] >> 4) != 4)
        return 0;
    unsigned l4 = 14 + ((unsigned)(p[14] & 0x0F) << 2);
    unsigned off = p[23] == 6 ? 16 : p[23] == 17 ? 6 : 0;
    return off && complete_csum(p, n, l4, off) ? META_CSUM_OK : 0;
}

/* Where the TCP header of a segment opening a connection starts (SYN, none of ACK, RST,
 * FIN: what tcp_conn_schedule looks at), 0 for anything else. IPv4 (the first fragment
 * or a whole packet) and IPv6 without extension headers. */
static size_t syn_l4(const uint8_t *p, size_t n)
{
    size_t l4;
    if (n >= 34 && p[12] == 8 && p[13] == 0 && (p[14] >> 4) == 4) {
        if (p[23] != 6 || (be16(p + 20) & 0x1FFF))
            return 0;
        l4 = 14 + ((size_t)(p[14] & 0x0F) << 2);
    } else if (n >= 54 && p[12] == 0x86 && p[13] == 0xDD && p[20] == 6) {
        l4 = 54;
    } else {
        return 0;
    }
    return l4 + 20 <= n && (p[l4 + 13] & 0x17) == 0x02 ? l4 : 0;
}

/* Whether the IPv4 TCP segment at l4 (a whole, unfragmented packet) has a good checksum:
 * the check forward.py's new-connection path makes (codec.l4_checksum_ok), done here so a
 * flood's SYNs cost the interpreter nothing for it. */
static int tcp4_csum_ok(const uint8_t *p, size_t n, size_t l4)
{
    size_t end = 14 + (size_t)be16(p + 16);
    if (be16(p + 20) & 0x3FFF || end > n || end < l4 + 20)
        return 0;
    uint64_t sum = ones_add(p + 26, 8, 0) + 6 + (end - l4);
    return fold64(ones_add(p + l4, end - l4, sum)) == 0xFFFF;
}

static long long real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* How long a connection-opening SYN waited in the ring (ns), from the kernel's timestamp
 * (CLOCK_REALTIME when the frame was queued); -1 for a lag beyond 10 s, which is a clock
 * step, not a backlog. */
static inline long long ring_lag(const uint8_t *hdr, long long now)
{
    long long lag = now - ((long long)ld32(hdr + 4) * 1000000000LL + ld32(hdr + 8));
    return lag < 10000000000LL ? lag : -1;
}

/* A SYN's identity for "seen and shed before": addresses, ports and sequence number, which
 * a client's retransmission repeats and a spoofed flood's random SYNs do not. */
static inline uint64_t syn_hash(const uint8_t *p, size_t l4)
{
    int v6 = p[12] == 0x86;
    const uint8_t *a = v6 ? p + 22 : p + 26;  /* source + destination addresses */
    size_t alen = v6 ? 32 : 8;
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < alen; i += 4)
        h = (h ^ ld32(a + i)) * 0xC2B2AE3D27D4EB4Full;
    h = (h ^ ld32(p + l4)) * 0xC2B2AE3D27D4EB4Full;      /* ports */
    h = (h ^ ld32(p + l4 + 4)) * 0x9E3779B97F4A7C15ull;  /* sequence number */
    return h ^ h >> 31;
}

/* ---------------------------------------------------------------------------------------- */
/* Ring                                                                                     */

typedef struct {
    PyObject_HEAD
    PyObject *view;          /* memoryview of the mmap: frames for Python are slices of it */
    Py_buffer buf;           /* held while open: the mmap cannot be closed under us */
    int held;
    int fd;
    int ifindex;
    uint8_t *base;
    Py_ssize_t rx_size;
    Py_ssize_t block_size;
    uint32_t block_nr, frame_size, tx_nr, tx_max;
    uint32_t rx_cur, tx_cur, tx_pending;
    uint32_t vnet_len;       /* 10 with PACKET_VNET_HDR: a virtio_net_hdr precedes each frame */
    int tx_linear;           /* 1 (the default): the kernel copies each TX frame whole */
    unsigned long rx_meta;   /* the verdict on the frame the callback is looking at */
    long long syn_max_lag;   /* ns; 0: never shed (see ring_shed) */
    uint16_t *shed_seen;     /* SHED_SLOTS fingerprints of shed SYNs, allocated at the first */
    unsigned long long rx_frames, fast_frames, tx_sent, tx_errors, tx_ring_full, rx_truncated;
    unsigned long long syn_shed;     /* SYNs dropped at the ring: the reader was behind */
    unsigned long long syn_retried;  /* late SYNs let through as retransmissions of shed ones */
} RingObject;

/* Shed SYNs remembered: 2^22 16-bit fingerprints (8 MiB per ring, only once one was shed),
 * so a retransmission 1 s later is still recognised at 100 k shed SYNs/s (2.4 % of the slots
 * written over by then; 1 in 65,535 spoofed SYNs passes for a retransmission). */
#define SHED_BITS 22
#define SHED_SLOTS (1u << SHED_BITS)
/* A remembered SYN's retransmission passes while the reader is less than this many times
 * syn_max_lag behind and the ring is less than three quarters full; past either it is shed
 * too, so a flood that repeats its own SYNs (they look like retransmissions) cannot fill the
 * ring, while a reader that was not scheduled for a while (a GC pause) still lets the
 * retransmissions in its backlog through. */
#define RETRY_LAG_FACTOR 4

/* Whether the block n blocks ahead of the reader is handed over already: the ring holds
 * at least n blocks of frames. */
static inline int ring_ahead(const RingObject *r, uint32_t n)
{
    const uint8_t *b = r->base + (size_t)((r->rx_cur + n) % r->block_nr) * r->block_size;
    return __atomic_load_n((const uint32_t *)(b + 8), __ATOMIC_ACQUIRE) & TP_STATUS_USER;
}

/* Frames a block must hold for its late SYNs to be shed: the kernel hands a block over
 * 2 ms after its first frame, so 8 means 4,000 frames/s or more arriving. A trickle read
 * late (a reader woken late, as after a link flap: one frame a block) sheds nothing. */
#define SHED_MIN_FRAMES 8

/* Shed this connection-opening SYN? Only when it waited in the ring longer than
 * syn_max_lag among a flood's frames (SHED_MIN_FRAMES): the reader is behind (a flood arrives faster than the interpreter schedules
 * new connections). Dropping it here costs nanoseconds, so the reader catches up and every
 * other frame (the packets of connections already made) is read without that wait, instead
 * of the kernel dropping whatever arrives once the ring is full. A client sends its SYN again
 * (after 1 s, 3 s...), and that retransmission (same addresses, ports and sequence number as
 * a SYN shed here) is let through while the reader is less than RETRY_LAG_FACTOR x
 * syn_max_lag behind and the ring less than three quarters full: spoofed SYNs are never sent twice,
 * so real clients get in on their first retry while the flood's share is what the
 * interpreter can take. */
static int ring_shed(RingObject *r, const uint8_t *hdr, const uint8_t *frame, size_t l4,
                     long long now, uint32_t block_frames)
{
    long long lag = ring_lag(hdr, now);
    if (lag <= r->syn_max_lag || block_frames < SHED_MIN_FRAMES)
        return 0;  /* fresh, or late without a flood around it (a reader woken late): kept */
    if (r->shed_seen == NULL) {
        r->shed_seen = PyMem_Calloc(SHED_SLOTS, sizeof(uint16_t));
        if (r->shed_seen == NULL)
            return 1;  /* no memory for the fingerprints: shed without them */
    }
    uint64_t h = syn_hash(frame, l4);
    uint16_t *slot = &r->shed_seen[h & (SHED_SLOTS - 1)];
    uint16_t fp = (uint16_t)(h >> 48) | 1;
    if (*slot == fp && lag <= RETRY_LAG_FACTOR * r->syn_max_lag
            && !ring_ahead(r, r->block_nr * 3 / 4)) {
        *slot = 0;  /* one pass per shed SYN */
        r->syn_retried++;
        return 0;
    }
    *slot = fp;
    r->syn_shed++;
    return 1;
}

static PyTypeObject RingType;

static void ring_kick(RingObject *r)
{
    if (r->fd < 0)
        return;
    /* with a TX ring, send() transmits the ring's ready slots and ignores its own buffer */
    if (send(r->fd, NULL, 0, MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != EWOULDBLOCK
            && errno != EINTR)
        r->tx_errors++;
    r->tx_sent += r->tx_pending;
    r->tx_pending = 0;
}

/* 0: queued; 1: bigger than a slot (the caller sends it another way); 2: ring full, dropped.
 * The frame is data followed by data2 (n2 bytes, may be 0). */
static int ring_tx2(RingObject *r, const uint8_t *data, uint32_t n, const uint8_t *data2,
                    uint32_t n2)
{
    uint8_t *slot = r->base + r->rx_size + (size_t)r->tx_cur * r->frame_size;
    uint32_t *status = (uint32_t *)(slot + 20);
    uint32_t st = __atomic_load_n(status, __ATOMIC_ACQUIRE);
    if (st == TP_STATUS_WRONG_FORMAT) {  /* the kernel refused that slot's frame: reuse it */
        r->tx_errors++;
        __atomic_store_n(status, TP_STATUS_AVAILABLE, __ATOMIC_RELEASE);
        st = TP_STATUS_AVAILABLE;
    }
    if (n + n2 > r->tx_max)
        return 1;
    if (st != TP_STATUS_AVAILABLE) {
        ring_kick(r);
        st = __atomic_load_n(status, __ATOMIC_ACQUIRE);
        if (st != TP_STATUS_AVAILABLE) {
            r->tx_ring_full++;
            return 2;
        }
    }
    uint8_t *dst = slot + TPACKET3_HDRLEN;
    if (r->vnet_len) {  /* a virtio_net_hdr: a whole, checksummed frame, no GSO ... */
        memset(dst, 0, r->vnet_len);
        /* ... whose hdr_len (little-endian) is the whole frame: the kernel then copies it
         * into the skb's linear part instead of attaching the ring's page as a fragment,
         * which veth (and any device that hands the skb on) must copy into a page of its
         * own (skb_copy_ubufs): a page allocated per frame (ring.py: _TX_VNET) */
        if (r->tx_linear) {
            dst[2] = (uint8_t)((n + n2) & 0xFF);
            dst[3] = (uint8_t)((n + n2) >> 8);
        }
        dst += r->vnet_len;
    }
    memcpy(dst, data, n);
    if (n2)
        memcpy(dst + n, data2, n2);
    n += n2 + r->vnet_len;
    st32(slot + 16, n);  /* tp_len */
    __atomic_store_n(status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
    r->tx_cur = r->tx_cur + 1 == r->tx_nr ? 0 : r->tx_cur + 1;
    if (++r->tx_pending >= TX_BATCH)
        ring_kick(r);
    return 0;
}

static inline int ring_tx(RingObject *r, const uint8_t *data, uint32_t n)
{
    return ring_tx2(r, data, n, NULL, 0);
}

static void ring_release(RingObject *r)
{
    if (r->held) {
        if (r->tx_pending)
            ring_kick(r);
        PyBuffer_Release(&r->buf);
        r->held = 0;
    }
    r->base = NULL;
    r->fd = -1;
    Py_CLEAR(r->view);
    PyMem_Free(r->shed_seen);
    r->shed_seen = NULL;
}

static int Ring_init(RingObject *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"mm", "view", "fd", "ifindex", "rx_size", "block_size", "block_nr",
                             "frame_size", "tx_nr", "vnet_len", NULL};
    PyObject *mm, *view;
    int fd, ifindex;
    Py_ssize_t rx_size, block_size;
    unsigned int block_nr, frame_size, tx_nr, vnet_len = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOiinnIII|I", kwlist, &mm, &view, &fd, &ifindex,
                                     &rx_size, &block_size, &block_nr, &frame_size, &tx_nr,
                                     &vnet_len))
        return -1;
    ring_release(r);
    if ((vnet_len != 0 && vnet_len != 10) || frame_size <= TPACKET3_HDRLEN + 64 || block_nr == 0 || tx_nr == 0 || block_size <= 0
            || rx_size != block_size * (Py_ssize_t)block_nr) {
        PyErr_SetString(PyExc_ValueError, "Ring: inconsistent ring geometry");
        return -1;
    }
    if (PyObject_GetBuffer(mm, &r->buf, PyBUF_WRITABLE) < 0)
        return -1;
    if (r->buf.len < rx_size + (Py_ssize_t)tx_nr * frame_size) {
        PyBuffer_Release(&r->buf);
        PyErr_SetString(PyExc_ValueError, "Ring: mapping smaller than its rings");
        return -1;
    }
    r->held = 1;
    Py_INCREF(view);
    r->view = view;
    r->fd = fd;
    r->ifindex = ifindex;
    r->base = r->buf.buf;
    r->rx_size = rx_size;
    r->block_size = block_size;
    r->block_nr = block_nr;
    r->frame_size = frame_size;
    r->tx_nr = tx_nr;
    r->vnet_len = vnet_len;
    r->tx_max = frame_size - TPACKET3_HDRLEN - vnet_len;
    r->tx_linear = 1;
    r->rx_cur = r->tx_cur = r->tx_pending = 0;
    return 0;
}

static void Ring_dealloc(RingObject *r)
{
    ring_release(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *closed_error(void)
{
    PyErr_SetString(PyExc_ValueError, "ring is closed");
    return NULL;
}

static PyObject *Ring_queue(RingObject *r, PyObject *arg)
{
    Py_buffer b;
    if (r->base == NULL)
        return closed_error();
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    int rc = b.len > UINT32_MAX ? 1 : ring_tx(r, b.buf, (uint32_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromLong(rc);
}

static PyObject *Ring_flush(RingObject *r, PyObject *Py_UNUSED(ignored))
{
    if (r->tx_pending)
        ring_kick(r);
    Py_RETURN_NONE;
}

static PyObject *Ring_kick(RingObject *r, PyObject *Py_UNUSED(ignored))
{
    ring_kick(r);
    Py_RETURN_NONE;
}

static PyObject *Ring_ready(RingObject *r, PyObject *Py_UNUSED(ignored))
{
    if (r->base == NULL)
        return closed_error();
    uint32_t st = __atomic_load_n((uint32_t *)(r->base + (size_t)r->rx_cur * r->block_size + 8),
                                  __ATOMIC_ACQUIRE);
    return PyBool_FromLong(st & TP_STATUS_USER);
}

static PyObject *Ring_close(RingObject *r, PyObject *Py_UNUSED(ignored))
{
    ring_release(r);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------- */
/* FlowTable                                                                                */

typedef struct {
    /* key: the packet's addresses and ports as they are on the wire */
    uint32_t saddr, daddr;
    uint16_t sport, dport;
    uint8_t proto, used, kind, out;
    uint8_t touched, direction;
    uint8_t opening;           /* installed at the connection's SYN; its first packet (the
                                * handshake's ACK) is reported in `acked` */
    uint8_t macs[12];          /* destination MAC + source MAC of the out interface */
    uint32_t new_ip;           /* NAT: the address written (wire order) */
    uint16_t new_port;         /* NAT: the port written (wire order) */
    uint16_t mtu;              /* TUN: the out interface's MTU */
    uint32_t tun_src;          /* TUN: the outer source address (wire order) */
    uint32_t d_ip, d_l4;       /* RFC 1624 sums ~m + m' for the IP and L4 checksums */
    uint64_t pkts, bytes;
    double last_seen;
    PyObject *conn;            /* the Director's Connection, owned */
} flow_t;

typedef struct {
    PyObject_HEAD
    flow_t *slots;
    uint32_t mask;
    uint32_t count;
    uint32_t limit;
    int ifindex[MAX_RINGS];   /* the interfaces flows may send on */
    RingObject *rings[MAX_RINGS];  /* their C rings (NULL: decisions only, as in tests) */
    int nrings;
    double now;
    uint16_t ident;            /* TUN: the outer headers' IP ID, shared with forward.py */
    unsigned long long forwarded, full_refused;
    PyObject *acked;           /* a list: the connections whose opening flow forwarded its
                                * first packet, in order, until the Python side takes them */
} FlowTableObject;

static PyTypeObject FlowTableType;
static PyObject *str_bucket;

static inline uint32_t flow_hash(uint32_t s, uint32_t d, uint16_t sp, uint16_t dp, uint8_t pr)
{
    uint64_t h = ((uint64_t)s << 32 | d) * 0x9E3779B97F4A7C15ull;
    h ^= ((uint64_t)sp << 24 | (uint64_t)dp << 8 | pr) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 29;
    return (uint32_t)(h ^ h >> 32);
}

static inline flow_t *flow_find(FlowTableObject *t, uint32_t s, uint32_t d, uint16_t sp,
                                uint16_t dp, uint8_t pr)
{
    uint32_t i = flow_hash(s, d, sp, dp, pr) & t->mask;
    for (;;) {
        flow_t *f = &t->slots[i];
        if (!f->used)
            return NULL;
        if (f->saddr == s && f->daddr == d && f->sport == sp && f->dport == dp && f->proto == pr)
            return f;
        i = (i + 1) & t->mask;
    }
}

/* linear probing deletion by backward shift: no tombstones, lookups stay short */
static void flow_delete(FlowTableObject *t, flow_t *f)
{
    uint32_t i = (uint32_t)(f - t->slots);
    Py_CLEAR(t->slots[i].conn);
    t->slots[i].used = 0;
    t->count--;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        flow_t *g = &t->slots[j];
        if (!g->used)
            return;
        uint32_t home = flow_hash(g->saddr, g->daddr, g->sport, g->dport, g->proto) & t->mask;
        /* g may move to the hole at i when its home is not cyclically within (i, j] */
        int move = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
        if (move) {
            t->slots[i] = *g;
            g->used = 0;
            g->conn = NULL;
            i = j;
        }
    }
}

static void flows_clear(FlowTableObject *t)
{
    for (uint32_t i = 0; i <= t->mask; i++) {
        flow_t *f = &t->slots[i];
        if (f->used) {
            f->used = 0;
            Py_CLEAR(f->conn);
        }
    }
    t->count = 0;
}

static int FlowTable_init(FlowTableObject *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"limit", NULL};
    unsigned int limit = 65536;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|I", kwlist, &limit))
        return -1;
    if (limit < 1 || limit > (1u << 24)) {
        PyErr_SetString(PyExc_ValueError, "FlowTable: limit must be 1..16777216");
        return -1;
    }
    if (t->slots != NULL) {
        flows_clear(t);
        PyMem_Free(t->slots);
        t->slots = NULL;
    }
    uint32_t cap = 16;
    while (cap < limit * 2u)
        cap <<= 1;
    t->slots = PyMem_Calloc(cap, sizeof(flow_t));
    if (t->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    t->mask = cap - 1;
    t->limit = limit;
    t->count = 0;
    if (t->acked == NULL && (t->acked = PyList_New(0)) == NULL)
        return -1;
    return 0;
}

static void FlowTable_dealloc(FlowTableObject *t)
{
    if (t->slots != NULL) {
        flows_clear(t);
        PyMem_Free(t->slots);
    }
    for (int i = 0; i < t->nrings; i++)
        Py_CLEAR(t->rings[i]);
    Py_CLEAR(t->acked);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static inline uint16_t fold_update(uint16_t csum_wire, uint32_t delta)
{
    /* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), exactly as forward.py's _nat does it */
    uint32_t s = (~(uint32_t)be16((const uint8_t *)&csum_wire) & 0xFFFF) + delta;
    s = (s & 0xFFFF) + (s >> 16);
    s = ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF;
    return (uint16_t)s;
}

/* The flow of a frame, or NULL (Python's). Applies exactly the checks of forward.py's hot
 * path; n is the captured length; the frame is not touched. IPv4 only, as the flow keys are:
 * IPv6 frames (the ring takes them too) always go to Python (forward6.py). */
static flow_t *fast_match(FlowTableObject *t, const uint8_t *p, Py_ssize_t n, uint32_t *ip_len)
{
    if (n < 42 || n > 1514 || p[12] != 8 || p[13] != 0 || p[14] != 0x45)
        return NULL;
    const uint8_t *ip = p + 14;
    unsigned tot = be16(ip + 2);
    if (tot < 28 || 14 + (Py_ssize_t)tot > n || (be16(ip + 6) & 0x3FFF))
        return NULL;
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2)
        sum += be16(ip + i);
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    if (sum != 0xFFFF && sum != 0)
        return NULL;
    uint8_t proto = ip[9];
    const uint8_t *l4 = ip + 20;
    if (proto == 6) {
        if (tot < 40)  /* not even a 20-byte TCP header inside the packet */
            return NULL;
        unsigned doff = (unsigned)(l4[12] >> 4) << 2;
        if (doff < 20 || 34 + doff > 14 + tot)
            return NULL;
        /* ACK and none of FIN, SYN, RST: anything else moves the state machine (a segment
         * with none of the four even closes the entry, as set_tcp_state does) */
        if ((l4[13] & 0x17) != 0x10)
            return NULL;
    } else if (proto == 17) {
        unsigned ulen = be16(l4 + 4);
        if (ulen < 8 || 34 + ulen > 14 + tot)
            return NULL;
    } else {
        return NULL;
    }
    *ip_len = tot;
    return flow_find(t, ld32(ip + 12), ld32(ip + 16), ld16(l4), ld16(l4 + 2), proto);
}

/* TUN: the Ethernet and outer IPv4 headers (34 bytes) for an inner packet of ip_len bytes. */
static void tun_headers(FlowTableObject *t, const flow_t *f, const uint8_t *p, uint32_t ip_len,
                        uint8_t *h)
{
    memcpy(h, f->macs, 12);
    h[12] = 0x08;
    h[13] = 0x00;
    uint8_t *ip = h + 14;
    uint32_t tot = ip_len + 20;
    t->ident = (uint16_t)(t->ident + 1);
    ip[0] = 0x45;
    ip[1] = p[15];  /* the inner TOS */
    ip[2] = (uint8_t)(tot >> 8);
    ip[3] = (uint8_t)tot;
    ip[4] = (uint8_t)(t->ident >> 8);
    ip[5] = (uint8_t)t->ident;
    ip[6] = p[20] & 0x40;  /* the inner DF */
    ip[7] = 0;
    ip[8] = 64;
    ip[9] = 4;  /* IPPROTO_IPIP */
    ip[10] = ip[11] = 0;
    st32(ip + 12, f->tun_src);
    st32(ip + 16, f->new_ip);
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2)
        sum += be16(ip + i);
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    sum = ~sum & 0xFFFF;
    ip[10] = (uint8_t)(sum >> 8);
    ip[11] = (uint8_t)sum;
}

/* The flow's rewrite, on a frame fast_match accepted for it (not TUN: that one grows). */
static void fast_rewrite(const flow_t *f, uint8_t *p)
{
    if (f->kind == KIND_NAT_DST || f->kind == KIND_NAT_SRC) {
        uint8_t *ipw = p + 14;
        uint8_t *l4w = ipw + 20;
        int ip_off = f->kind == KIND_NAT_DST ? 16 : 12;
        int port_off = f->kind == KIND_NAT_DST ? 2 : 0;
        st32(ipw + ip_off, f->new_ip);
        memcpy(l4w + port_off, &f->new_port, 2);
        uint16_t c;
        memcpy(&c, ipw + 10, 2);
        uint16_t s = fold_update(c, f->d_ip);
        ipw[10] = (uint8_t)(s >> 8);
        ipw[11] = (uint8_t)s;
        int co = f->proto == 6 ? 16 : 6;
        memcpy(&c, l4w + co, 2);
        if (!(c == 0 && f->proto == 17)) {  /* UDP without a checksum stays without */
            s = fold_update(c, f->d_l4);
            if (s == 0 && f->proto == 17)
                s = 0xFFFF;
            l4w[co] = (uint8_t)(s >> 8);
            l4w[co + 1] = (uint8_t)s;
        }
    }
    memcpy(p, f->macs, 12);
}

static inline void flow_count(FlowTableObject *t, flow_t *f, uint32_t ip_len)
{
    if (f->opening) {  /* the handshake's ACK: the core's entry moves on (forward.py) */
        f->opening = 0;
        if (t->acked == NULL || PyList_Append(t->acked, f->conn) < 0)
            PyErr_Clear();  /* the next sync's ACK moves it on all the same */
    }
    f->pkts++;
    f->bytes += ip_len;
    f->touched = 1;
    f->last_seen = t->now;
    t->forwarded++;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int addr4(PyObject *o, uint32_t *out, const char *what)
{
    Py_buffer b;
    if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE) < 0)
        return -1;
    if (b.len != 4) {
        PyBuffer_Release(&b);
        PyErr_Format(PyExc_ValueError, "%s: an IPv4 address is 4 bytes", what);
        return -1;
    }
    memcpy(out, b.buf, 4);
    PyBuffer_Release(&b);
    return 0;
}

static int port16(int port, uint16_t *out, const char *what)
{
    if (port < 0 || port > 0xFFFF) {
        PyErr_Format(PyExc_ValueError, "%s: port %d out of range", what, port);
        return -1;
    }
    uint8_t b[2] = {(uint8_t)(port >> 8), (uint8_t)port};
    memcpy(out, b, 2);
    return 0;
}

static PyObject *FlowTable_attach(FlowTableObject *t, PyObject *arg)
{
    /* a Ring, or a bare interface index (decisions without sending: tests, fuzzing) */
    RingObject *r = NULL;
    int ifindex;
    if (PyObject_TypeCheck(arg, &RingType)) {
        r = (RingObject *)arg;
        ifindex = r->ifindex;
    } else if (PyLong_Check(arg)) {
        ifindex = (int)PyLong_AsLong(arg);
        if (PyErr_Occurred())
            return NULL;
    } else {
        PyErr_SetString(PyExc_TypeError, "attach: a Ring or an interface index is needed");
        return NULL;
    }
    int i = 0;
    while (i < t->nrings && t->ifindex[i] != ifindex)
        i++;
    if (i == MAX_RINGS) {
        PyErr_SetString(PyExc_ValueError, "attach: too many interfaces");
        return NULL;
    }
    if (i == t->nrings) {
        t->nrings++;
        t->rings[i] = NULL;
    } else {
        flows_clear(t);  /* a new ring for the interface: nothing may point at the old one */
    }
    t->ifindex[i] = ifindex;
    Py_XINCREF(r);
    Py_XSETREF(t->rings[i], r);
    Py_RETURN_NONE;
}

static PyObject *FlowTable_install(FlowTableObject *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"proto", "saddr", "sport", "daddr", "dport", "kind", "new_ip",
                             "new_port", "out_ifindex", "macs", "conn", "direction", "tun_src",
                             "mtu", "opening", NULL};
    int proto, sport, dport, kind, new_port, out_ifindex, direction, mtu = 0, opening = 0;
    PyObject *saddr, *daddr, *new_ip, *macs, *conn, *tun_src = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iOiOiiOiiOOi|Oip", kwlist, &proto, &saddr,
                                     &sport, &daddr, &dport, &kind, &new_ip, &new_port,
                                     &out_ifindex, &macs, &conn, &direction, &tun_src, &mtu,
                                     &opening))
        return NULL;
    if (proto != 6 && proto != 17) {
        PyErr_SetString(PyExc_ValueError, "install: TCP or UDP only");
        return NULL;
    }
    if (kind < KIND_DR || kind > KIND_TUN || direction < 0 || direction > 255) {
        PyErr_SetString(PyExc_ValueError, "install: unknown kind or direction");
        return NULL;
    }
    uint32_t s, d, nip = 0;
    uint16_t sp, dp, np = 0;
    if (addr4(saddr, &s, "install saddr") < 0 || addr4(daddr, &d, "install daddr") < 0
            || port16(sport, &sp, "install sport") < 0 || port16(dport, &dp, "install dport") < 0)
        return NULL;
    uint32_t tsrc = 0;
    if (kind == KIND_TUN) {
        if (addr4(new_ip, &nip, "install new_ip") < 0 || addr4(tun_src, &tsrc, "install tun_src") < 0)
            return NULL;
        if (mtu < 68 || mtu > 0xFFFF) {
            PyErr_SetString(PyExc_ValueError, "install: a TUN flow needs the out MTU (68..65535)");
            return NULL;
        }
    } else if (kind != KIND_DR && (addr4(new_ip, &nip, "install new_ip") < 0
                                   || port16(new_port, &np, "install new_port") < 0)) {
        return NULL;
    }
    Py_buffer mb;
    if (PyObject_GetBuffer(macs, &mb, PyBUF_SIMPLE) < 0)
        return NULL;
    if (mb.len != 12) {
        PyBuffer_Release(&mb);
        PyErr_SetString(PyExc_ValueError, "install: macs is destination + source MAC, 12 bytes");
        return NULL;
    }
    int out = -1;
    for (int i = 0; i < t->nrings; i++)
        if (t->ifindex[i] == out_ifindex)
            out = i;
    if (out < 0) {
        PyBuffer_Release(&mb);
        Py_RETURN_FALSE;  /* no ring to send on: the Python path keeps these frames */
    }
    flow_t *f = flow_find(t, s, d, sp, dp, (uint8_t)proto);
    if (f == NULL) {
        if (t->count >= t->limit) {
            PyBuffer_Release(&mb);
            t->full_refused++;
            Py_RETURN_FALSE;
        }
        uint32_t i = flow_hash(s, d, sp, dp, (uint8_t)proto) & t->mask;
        while (t->slots[i].used)
            i = (i + 1) & t->mask;
        f = &t->slots[i];
        memset(f, 0, sizeof(*f));
        f->saddr = s;
        f->daddr = d;
        f->sport = sp;
        f->dport = dp;
        f->proto = (uint8_t)proto;
        f->used = 1;
        t->count++;
    }
    memcpy(f->macs, mb.buf, 12);
    PyBuffer_Release(&mb);
    f->kind = (uint8_t)kind;
    f->out = (uint8_t)out;
    f->direction = (uint8_t)direction;
    f->new_ip = nip;
    f->new_port = np;
    f->tun_src = tsrc;
    f->mtu = (uint16_t)mtu;
    f->opening = (uint8_t)opening;
    if (kind == KIND_NAT_DST || kind == KIND_NAT_SRC) {
        const uint8_t *o4 = (const uint8_t *)(kind == KIND_NAT_DST ? &d : &s);
        const uint8_t *n4 = (const uint8_t *)&nip;
        unsigned oport = be16((const uint8_t *)(kind == KIND_NAT_DST ? &dp : &sp));
        unsigned nport = be16((const uint8_t *)&np);
        uint32_t o = (uint32_t)o4[0] << 24 | (uint32_t)o4[1] << 16 | (uint32_t)o4[2] << 8 | o4[3];
        uint32_t nw = (uint32_t)n4[0] << 24 | (uint32_t)n4[1] << 16 | (uint32_t)n4[2] << 8 | n4[3];
        f->d_ip = ((~o >> 16) & 0xFFFF) + (~o & 0xFFFF) + (nw >> 16) + (nw & 0xFFFF);
        f->d_l4 = f->d_ip + (~oport & 0xFFFF) + nport;
    }
    Py_INCREF(conn);
    Py_XSETREF(f->conn, conn);
    Py_RETURN_TRUE;
}

static PyObject *flow_row(const flow_t *f)
{
    return Py_BuildValue("(OiKKd)", f->conn, (int)f->direction, (unsigned long long)f->pkts,
                         (unsigned long long)f->bytes, f->last_seen);
}

/* remove(...) -> the flow's unsynced (conn, direction, packets, bytes, last_seen), or None */
static PyObject *FlowTable_remove(FlowTableObject *t, PyObject *args)
{
    int proto, sport, dport;
    PyObject *saddr, *daddr;
    if (!PyArg_ParseTuple(args, "iOiOi", &proto, &saddr, &sport, &daddr, &dport))
        return NULL;
    uint32_t s, d;
    uint16_t sp, dp;
    if (addr4(saddr, &s, "remove saddr") < 0 || addr4(daddr, &d, "remove daddr") < 0
            || port16(sport, &sp, "remove sport") < 0 || port16(dport, &dp, "remove dport") < 0)
        return NULL;
    if (proto < 0 || proto > 255)
        Py_RETURN_NONE;
    flow_t *f = flow_find(t, s, d, sp, dp, (uint8_t)proto);
    if (f == NULL)
        Py_RETURN_NONE;
    PyObject *row = flow_row(f);
    if (row == NULL)
        return NULL;
    flow_delete(t, f);
    return row;
}

/* clear() -> the unsynced rows of the flows that were touched; every flow goes */
static PyObject *FlowTable_clear(FlowTableObject *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (uint32_t i = 0; i <= t->mask; i++) {
        flow_t *f = &t->slots[i];
        if (f->used && f->touched) {
            PyObject *row = flow_row(f);
            if (row == NULL || PyList_Append(out, row) < 0) {
                Py_XDECREF(row);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(row);
        }
    }
    flows_clear(t);
    return out;
}

/* Hand the counters of every flow touched since the last call to the caller, and drop the
 * flows whose connection has left the table (``conn.bucket is None``). */
static PyObject *FlowTable_sync(FlowTableObject *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    uint32_t i = 0;
    while (i <= t->mask) {
        flow_t *f = &t->slots[i];
        if (!f->used) {
            i++;
            continue;
        }
        if (f->touched) {
            PyObject *row = flow_row(f);
            if (row == NULL || PyList_Append(out, row) < 0) {
                Py_XDECREF(row);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(row);
            f->pkts = f->bytes = 0;
            f->touched = 0;
        }
        PyObject *bucket = PyObject_GetAttr(f->conn, str_bucket);
        if (bucket == NULL) {
            PyErr_Clear();
            bucket = Py_None;
            Py_INCREF(bucket);
        }
        int dead = bucket == Py_None;
        Py_DECREF(bucket);
        if (dead) {
            /* a backward shift may move a later entry into slot i: look at it again. An
             * entry shifted from beyond the end of the array to before i is missed until
             * the next sync, which is harmless. */
            flow_delete(t, f);
            continue;
        }
        i++;
    }
    return out;
}

static PyObject *FlowTable_forward(FlowTableObject *t, PyObject *arg)
{
    /* The decision on one frame outside any ring (tests and fuzzing): rewrites a writable
     * buffer in place (a TUN flow replaces a bytearray's contents with the encapsulated
     * frame); the out interface's index, or -1 when Python must handle it. */
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_WRITABLE) < 0)
        return NULL;
    uint32_t ip_len;
    t->now = mono_now();
    flow_t *f = fast_match(t, b.buf, b.len, &ip_len);
    long res = -1;
    if (f != NULL && f->kind == KIND_TUN) {
        if (ip_len + 20 > f->mtu || !PyByteArray_Check(arg)) {
            PyBuffer_Release(&b);
            return PyLong_FromLong(-1);
        }
        uint8_t *out = PyMem_Malloc(ip_len + 34);
        if (out == NULL) {
            PyBuffer_Release(&b);
            return PyErr_NoMemory();
        }
        tun_headers(t, f, b.buf, ip_len, out);
        memcpy(out + 34, (uint8_t *)b.buf + 14, ip_len);
        PyBuffer_Release(&b);
        flow_count(t, f, ip_len);
        res = t->ifindex[f->out];
        int rc = PyByteArray_Resize(arg, ip_len + 34);
        if (rc == 0)
            memcpy(PyByteArray_AS_STRING(arg), out, ip_len + 34);
        PyMem_Free(out);
        return rc == 0 ? PyLong_FromLong(res) : NULL;
    }
    if (f != NULL) {
        fast_rewrite(f, b.buf);
        flow_count(t, f, ip_len);
        res = t->ifindex[f->out];
    }
    PyBuffer_Release(&b);
    return PyLong_FromLong(res);
}

static PyObject *FlowTable_len_get(FlowTableObject *t, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(t->count);
}

static Py_ssize_t FlowTable_len(FlowTableObject *t) { return t->count; }

/* ---------------------------------------------------------------------------------------- */
/* the ring walk                                                                            */

static PyObject *Ring_receive(RingObject *r, PyObject *args)
{
    PyObject *on_frame, *flows_obj = Py_None;
    int max_blocks = 0;
    if (!PyArg_ParseTuple(args, "O|iO", &on_frame, &max_blocks, &flows_obj))
        return NULL;
    if (r->base == NULL)
        return closed_error();
    FlowTableObject *ft = NULL;
    if (flows_obj != Py_None) {
        if (!PyObject_TypeCheck(flows_obj, &FlowTableType)) {
            PyErr_SetString(PyExc_TypeError, "receive: flows must be a FlowTable or None");
            return NULL;
        }
        ft = (FlowTableObject *)flows_obj;
        if (ft->count == 0)
            ft = NULL;
        else
            ft->now = mono_now();
    }
    /* the callback may close rings (never in the data plane; be safe anyway) */
    Py_INCREF(r);
    Py_INCREF(on_frame);
    long count = 0;
    int blocks = 0;
    PyObject *err = NULL;
    const Py_ssize_t bs = r->block_size;
    while (r->base != NULL) {
        uint8_t *blk = r->base + (size_t)r->rx_cur * bs;
        uint32_t status = __atomic_load_n((uint32_t *)(blk + 8), __ATOMIC_ACQUIRE);
        if (!(status & TP_STATUS_USER))
            break;
        uint32_t num = ld32(blk + 12);
        Py_ssize_t off = ld32(blk + 16);
        const long long max_lag = r->syn_max_lag;
        const long long now = max_lag ? real_ns() : 0;
        for (uint32_t k = 0; k < num && err == NULL && r->base != NULL; k++) {
            if (off < 0 || off + TPACKET3_HDRLEN + 12 > bs)
                break;
            uint8_t *hdr = blk + off;
            uint32_t nxt = ld32(hdr);
            uint32_t snap = ld32(hdr + 12);
            uint32_t flen = ld32(hdr + 16);
            uint32_t tp_status = ld32(hdr + 20);
            uint16_t mac = ld16(hdr + 24);
            if ((Py_ssize_t)mac + snap > bs - off || mac < r->vnet_len)
                break;
            /* struct sockaddr_ll follows the header: sll_pkttype at +10 */
            if (hdr[TPACKET3_HDRLEN + 10] <= 1 && snap < flen) {  /* held only in part */
                r->rx_truncated++;
                count++;
            } else if (hdr[TPACKET3_HDRLEN + 10] <= 1) {  /* PACKET_HOST, PACKET_BROADCAST */
                uint8_t *frame = hdr + mac;
                uint32_t ip_len;
                unsigned long meta = frame_meta(r->vnet_len ? frame - r->vnet_len : NULL, frame,
                                                snap, tp_status);
                r->rx_meta = meta;
                /* super-frames (GSO) are cut by the Python path */
                flow_t *f = ft != NULL && !(meta >> 8) ? fast_match(ft, frame, snap, &ip_len) : NULL;
                RingObject *o = f != NULL ? ft->rings[f->out] : NULL;
                if (o != NULL && o->base != NULL && f->kind == KIND_TUN) {
                    if (ip_len + 20 > f->mtu || ip_len + 34 > o->tx_max) {
                        o = NULL;  /* too big once encapsulated: Python answers the client */
                    } else {
                        uint8_t h[34];
                        tun_headers(ft, f, frame, ip_len, h);
                        ring_tx2(o, h, 34, frame + 14, ip_len);
                        flow_count(ft, f, ip_len);
                        r->fast_frames++;
                    }
                } else if (o != NULL && o->base != NULL && snap <= o->tx_max) {
                    fast_rewrite(f, frame);
                    ring_tx(o, frame, snap);
                    flow_count(ft, f, ip_len);
                    r->fast_frames++;
                } else {
                    o = NULL;
                }
                /* a connection-opening SYN: shed when the reader is behind, else its
                 * checksum is checked here (the new-connection path's first question) */
                size_t l4 = o == NULL && !(meta >> 8) ? syn_l4(frame, snap) : 0;
                if (l4 && max_lag && ring_shed(r, hdr, frame, l4, now, num)) {
                    /* shed, counted */
                } else if (o == NULL) {
                    if (l4 && !(meta & META_CSUM_OK) && frame[12] == 8
                            && tcp4_csum_ok(frame, snap, l4))
                        r->rx_meta = meta | META_CSUM_OK;
                    Py_ssize_t start = (Py_ssize_t)r->rx_cur * bs + off + mac;
                    PyObject *slice = PySequence_GetSlice(r->view, start, start + snap);
                    PyObject *res = slice != NULL
                        ? PyObject_CallOneArg(on_frame, slice) : NULL;
                    Py_XDECREF(slice);
                    if (res == NULL)
                        err = on_frame;  /* marker: an exception is set */
                    Py_XDECREF(res);
                }
                count++;
            }
            if (nxt == 0)
                break;
            off += nxt;
        }
        if (r->base == NULL)
            break;
        __atomic_store_n((uint32_t *)(blk + 8), TP_STATUS_KERNEL, __ATOMIC_RELEASE);
        r->rx_cur = r->rx_cur + 1 == r->block_nr ? 0 : r->rx_cur + 1;
        blocks++;
        if (err != NULL || (max_blocks > 0 && blocks >= max_blocks))
            break;
    }
    r->rx_frames += (unsigned long long)count;
    Py_DECREF(on_frame);
    Py_DECREF(r);
    if (err != NULL)
        return NULL;
    return PyLong_FromLong(count);
}

/* ---------------------------------------------------------------------------------------- */
/* type boilerplate                                                                         */

static PyObject *Ring_get_rx_cur(RingObject *r, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(r->rx_cur);
}

static int Ring_set_rx_cur(RingObject *r, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "rx_cur cannot be deleted");
        return -1;
    }
    unsigned long x = PyLong_AsUnsignedLong(v);
    if (PyErr_Occurred())
        return -1;
    if (x >= r->block_nr) {
        PyErr_SetString(PyExc_ValueError, "rx_cur beyond the ring");
        return -1;
    }
    r->rx_cur = (uint32_t)x;
    return 0;
}

#define RING_COUNTER(name)                                                         \
    static PyObject *Ring_get_##name(RingObject *r, void *Py_UNUSED(c))          \
    {                                                                              \
        return PyLong_FromUnsignedLongLong(r->name);                               \
    }
RING_COUNTER(rx_frames)
RING_COUNTER(fast_frames)
RING_COUNTER(tx_sent)
RING_COUNTER(tx_errors)
RING_COUNTER(tx_ring_full)
RING_COUNTER(rx_truncated)
RING_COUNTER(syn_shed)
RING_COUNTER(syn_retried)

static PyObject *Ring_get_syn_max_lag(RingObject *r, void *Py_UNUSED(c))
{
    return PyFloat_FromDouble((double)r->syn_max_lag * 1e-9);
}

static int Ring_set_syn_max_lag(RingObject *r, PyObject *v, void *Py_UNUSED(c))
{
    double x = v != NULL ? PyFloat_AsDouble(v) : -1.0;
    if (v == NULL || (x == -1.0 && PyErr_Occurred()))  {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "syn_max_lag cannot be deleted");
        return -1;
    }
    if (!(x >= 0.0 && x <= 10.0)) {
        PyErr_SetString(PyExc_ValueError, "syn_max_lag: 0 (never shed) to 10 seconds");
        return -1;
    }
    r->syn_max_lag = (long long)(x * 1e9);
    return 0;
}

static PyObject *Ring_get_tx_linear(RingObject *r, void *Py_UNUSED(c))
{
    return PyBool_FromLong(r->tx_linear);
}

static int Ring_set_tx_linear(RingObject *r, PyObject *v, void *Py_UNUSED(c))
{
    int x = v != NULL ? PyObject_IsTrue(v) : -1;
    if (x < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "tx_linear cannot be deleted");
        return -1;
    }
    r->tx_linear = x;
    return 0;
}

static PyObject *Ring_get_rx_meta(RingObject *r, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(r->rx_meta);
}

static PyObject *Ring_get_tx_pending(RingObject *r, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(r->tx_pending);
}

static PyObject *Ring_get_ifindex(RingObject *r, void *Py_UNUSED(c))
{
    return PyLong_FromLong(r->ifindex);
}

static PyGetSetDef Ring_getset[] = {
    {"rx_cur", (getter)Ring_get_rx_cur, (setter)Ring_set_rx_cur, "block the reader waits on", NULL},
    {"rx_frames", (getter)Ring_get_rx_frames, NULL, "frames received for this host", NULL},
    {"fast_frames", (getter)Ring_get_fast_frames, NULL, "frames forwarded by a flow", NULL},
    {"tx_sent", (getter)Ring_get_tx_sent, NULL, "frames handed to the kernel", NULL},
    {"tx_errors", (getter)Ring_get_tx_errors, NULL, "send errors and refused slots", NULL},
    {"tx_ring_full", (getter)Ring_get_tx_ring_full, NULL, "frames dropped: ring full", NULL},
    {"rx_truncated", (getter)Ring_get_rx_truncated, NULL, "frames held only in part", NULL},
    {"syn_shed", (getter)Ring_get_syn_shed, NULL, "SYNs dropped at the ring: reader behind", NULL},
    {"syn_retried", (getter)Ring_get_syn_retried, NULL,
     "late SYNs let through: retransmissions of shed ones", NULL},
    {"tx_linear", (getter)Ring_get_tx_linear, (setter)Ring_set_tx_linear,
     "the kernel copies each TX frame whole into its skb (False: the slot's page attached)",
     NULL},
    {"syn_max_lag", (getter)Ring_get_syn_max_lag, (setter)Ring_set_syn_max_lag,
     "seconds a connection-opening SYN may wait in the ring before it is shed (0: never)", NULL},
    {"rx_meta", (getter)Ring_get_rx_meta, NULL, "the current frame's checksum/GSO verdict", NULL},
    {"tx_pending", (getter)Ring_get_tx_pending, NULL, "frames queued, not yet sent", NULL},
    {"ifindex", (getter)Ring_get_ifindex, NULL, "the interface", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Ring_methods[] = {
    {"receive", (PyCFunction)Ring_receive, METH_VARARGS,
     "receive(on_frame, max_blocks=0, flows=None): walk the ready blocks"},
    {"queue", (PyCFunction)Ring_queue, METH_O,
     "queue(frame) -> 0 queued, 1 bigger than a slot, 2 ring full (dropped)"},
    {"flush", (PyCFunction)Ring_flush, METH_NOARGS, "send what is queued"},
    {"kick", (PyCFunction)Ring_kick, METH_NOARGS, "ask the kernel to send the ring"},
    {"ready", (PyCFunction)Ring_ready, METH_NOARGS, "the awaited block is ready"},
    {"close", (PyCFunction)Ring_close, METH_NOARGS, "send what is queued, release the mapping"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylvs.dataplane.packet._fastpath.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One interface's TPACKET_V3 RX and TX rings (reader position, every TX slot).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ring_init,
    .tp_dealloc = (destructor)Ring_dealloc,
    .tp_methods = Ring_methods,
    .tp_getset = Ring_getset,
};

static PyObject *FlowTable_get_forwarded(FlowTableObject *t, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(t->forwarded);
}

static PyObject *FlowTable_get_refused(FlowTableObject *t, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(t->full_refused);
}

static PyObject *FlowTable_get_limit(FlowTableObject *t, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLong(t->limit);
}

static PyObject *FlowTable_get_acked(FlowTableObject *t, void *Py_UNUSED(c))
{
    if (t->acked == NULL)
        return PyList_New(0);
    Py_INCREF(t->acked);
    return t->acked;
}

static PyObject *FlowTable_get_ident(FlowTableObject *t, void *Py_UNUSED(c))
{
    return PyLong_FromLong(t->ident);
}

static int FlowTable_set_ident(FlowTableObject *t, PyObject *v, void *Py_UNUSED(c))
{
    long x = v != NULL ? PyLong_AsLong(v) : -1;
    if (x == -1 && (v == NULL || PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "ident cannot be deleted");
        return -1;
    }
    t->ident = (uint16_t)(x & 0xFFFF);
    return 0;
}

static PyGetSetDef FlowTable_getset[] = {
    {"ident", (getter)FlowTable_get_ident, (setter)FlowTable_set_ident,
     "IP ID of the last outer IPIP header (shared with the Python path)", NULL},
    {"count", (getter)FlowTable_len_get, NULL, "flows installed", NULL},
    {"acked", (getter)FlowTable_get_acked, NULL,
     "the list the connections of opening flows go to when their first packet is forwarded "
     "(the same list each time: empty it in place)", NULL},
    {"forwarded", (getter)FlowTable_get_forwarded, NULL, "frames forwarded by flows", NULL},
    {"refused_full", (getter)FlowTable_get_refused, NULL, "installs refused: table full", NULL},
    {"limit", (getter)FlowTable_get_limit, NULL, "the most flows held", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef FlowTable_methods[] = {
    {"attach", (PyCFunction)FlowTable_attach, METH_O, "attach(ring): an interface to send on"},
    {"install", (PyCFunction)(void (*)(void))FlowTable_install, METH_VARARGS | METH_KEYWORDS,
     "install(proto, saddr, sport, daddr, dport, kind, new_ip, new_port, out_ifindex, macs, "
     "conn, direction, tun_src=None, mtu=0, opening=False) -> bool"},
    {"remove", (PyCFunction)FlowTable_remove, METH_VARARGS,
     "remove(proto, saddr, sport, daddr, dport) -> the flow's unsynced row, or None"},
    {"clear", (PyCFunction)FlowTable_clear, METH_NOARGS,
     "forget every flow -> the unsynced rows of those touched since the last sync"},
    {"sync", (PyCFunction)FlowTable_sync, METH_NOARGS,
     "[(conn, direction, packets, bytes, last_seen)] of the flows used since the last call"},
    {"forward", (PyCFunction)FlowTable_forward, METH_O,
     "forward(frame) -> out ifindex or -1: the decision on one writable frame"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods FlowTable_as_sequence = {
    .sq_length = (lenfunc)FlowTable_len,
};

static PyTypeObject FlowTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylvs.dataplane.packet._fastpath.FlowTable",
    .tp_basicsize = sizeof(FlowTableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Established DR/NAT/TUN connections forwarded without Python, at most `limit`.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FlowTable_init,
    .tp_dealloc = (destructor)FlowTable_dealloc,
    .tp_methods = FlowTable_methods,
    .tp_getset = FlowTable_getset,
    .tp_as_sequence = &FlowTable_as_sequence,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pylvs.dataplane.packet._fastpath",
    .m_doc = "The packet data plane's hot path: ring walk, flow table, DR/NAT/TUN rewrites, TX ring.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&RingType) < 0 || PyType_Ready(&FlowTableType) < 0)
        return NULL;
    str_bucket = PyUnicode_InternFromString("bucket");
    if (str_bucket == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &RingType) < 0 || PyModule_AddType(m, &FlowTableType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
