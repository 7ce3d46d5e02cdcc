// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
// shardns fast path: a TC ingress classifier that answers DNS cache hits in the kernel.
//
// A query arriving on the interface (Ethernet, IPv4 without options or IPv6 without extension
// headers, UDP to an address and port in FP_ADDRS) with one plain question is looked up in FP_ANSWERS by its key (the
// lower-cased wire qname, the qtype, the query's EDNS/DO/CD/AD bits, and the server block
// FP_ADDRS gives for the address and port). On a hit the
// packet becomes the answer in place: the client's header ID, RD/CD and question bytes (in
// the client's case) stay, the stored flags, counts and the bytes after the question are
// written, MACs, addresses and ports are swapped, the IPv4 checksum is recomputed and the
// UDP checksum set to 0 (allowed for IPv4), or over IPv6 the UDP checksum computed in full
// (mandatory there), and the packet is redirected out of the same
// interface. Everything else returns TC_ACT_OK untouched, to the socket path.
//
// The layouts of struct fp_key and struct fp_value are mirrored in fastpath/src/layout.rs.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define DNS_HEADER_LEN 12
#define QNAME_MAX 255
#define KEY_QNAME_LEN 256
#define FP_MAX_DATA 1024
#define FP_MAX_TTLS 32
#define FP_MAX_ENTRIES 8192
#define OPT_LEN 11
// A COOKIE option (code 10) holding a client cookie alone (8 bytes, RFC 7873), as dig and
// BIND send it: the socket path ignores EDNS options, so its answer is the same.
#define COOKIE_OPTION 10
#define COOKIE_OPTION_LEN 12
#define OPT_TYPE 41
#define CLASS_IN 1
#define UDP_LIMIT_PLAIN 512

// DNS header flag bits (host order of the 16-bit flags word).
#define DNS_QR 0x8000
#define DNS_OPCODE 0x7800
#define DNS_AA 0x0400
#define DNS_TC 0x0200
#define DNS_RD 0x0100
#define DNS_Z 0x0040
#define DNS_AD 0x0020
#define DNS_CD 0x0010
#define DNS_RCODE 0x000f

// Key flag bits.
#define KEY_EDNS 0x01
#define KEY_DO 0x02
#define KEY_CD 0x04
#define KEY_AD 0x08

// Offsets: fixed because IPv4 options and IPv6 extension headers are refused. IP_HLEN is
// 20 (IPv4) or 40 (IPv6): a constant in each of handle_ipv4 and handle_ipv6.
#define IP_OFF ETH_HLEN
#define UDP_OFF (IP_OFF + IP_HLEN)
#define DNS_OFF (UDP_OFF + 8)
#define QNAME_OFF (DNS_OFF + DNS_HEADER_LEN)
// The longest UDP segment answered: header, DNS header, name, qtype, qclass, data.
#define SEGMENT_MAX (8 + DNS_HEADER_LEN + QNAME_MAX + 4 + FP_MAX_DATA)

struct fp_key {
	__u8 qname[KEY_QNAME_LEN]; // lower-cased wire name, zero-padded
	__u8 qtype[2];             // network order
	__u8 flags;                // KEY_*
	__u8 block;                // the server block, from FP_ADDRS
};

struct fp_value {
	__u64 expires_ns; // CLOCK_BOOTTIME; the entry passes from then on
	__u64 stored_ns;  // CLOCK_BOOTTIME when the answer was stored, for the TTLs' decay
	__u32 ttl;        // its lifetime in seconds, written at every TTL offset less elapsed
	__u32 slot;       // its counter in FP_HITS (the loader gives each entry one)
	__u16 len;        // bytes of data[] used
	__u8 flags[2];    // the reply's flags word, network order, without RD/CD
	__u8 counts[6];   // ANCOUNT, NSCOUNT, ARCOUNT, network order
	__u8 ttl_count;   // TTL fields to rewrite (0: send the TTLs as stored)
	__u8 pad[5];
	__u16 ttl_offsets[FP_MAX_TTLS]; // each TTL field's offset in data[]
	__u8 data[FP_MAX_DATA]; // the reply's bytes after the question (OPT included for EDNS)
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_MAX_ENTRIES);
	// Not preallocated: an element replaced or deleted is freed after an RCU grace period,
	// so a program still reading it never sees another answer's bytes.
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_key);
	__type(value, struct fp_value);
} FP_ANSWERS SEC(".maps");

// A served address and port: the server block answering there. IPv4 addresses are held
// IPv4-mapped (::ffff:a.b.c.d), IPv6 addresses as they are.
struct fp_addr {
	__u8 addr[16]; // network order
	__u16 port;    // network order
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct fp_addr);
	__type(value, __u8);
} FP_ADDRS SEC(".maps");

// Per-CPU counters, indexed by STAT_*.
#define STAT_HIT 0     // answered
#define STAT_MISS 1    // a query it could answer, no entry for its key
#define STAT_EXPIRED 2 // an entry past its expiry
#define STAT_TOO_BIG 3 // an answer over the client's UDP limit (the socket path truncates)
#define STAT_ERROR 4   // a helper failed while rewriting (dropped when half rewritten)
#define STAT_COUNT 5

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} FP_STATS SEC(".maps");

// Hits per entry, per CPU, indexed by the entry's slot: no atomics, no shared cache line.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FP_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} FP_HITS SEC(".maps");

// Scratch space for the IPv6 UDP checksum: the reply's UDP segment is copied here (one
// bpf_skb_load_bytes, whatever the skb's layout) and summed in 512-byte chunks.
struct fp_scratch {
	__u8 bytes[4096];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fp_scratch);
} FP_SCRATCH SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *counter = bpf_map_lookup_elem(&FP_STATS, &stat);
	if (counter)
		*counter += 1;
}

static __always_inline __u16 ipv4_checksum(const struct iphdr *ip)
{
	const __u16 *word = (const __u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += word[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// 'A'..'Z' to 'a'..'z' without a branch: a branch per byte multiplies the verifier's paths.
static __always_inline __u8 to_lower(__u8 c)
{
	__u32 x = c;
	__u32 at_least_a = (x + (256 - 'A')) >> 8;     // 1 when c >= 'A'
	__u32 past_z = (x + (256 - 'Z' - 1)) >> 8;     // 1 when c > 'Z'
	return c + (((at_least_a & ~past_z) & 1) << 5);
}

// Writes the UDP checksum of the segment at udp_off (seg_len bytes, its checksum field 0)
// with the pseudo-header `pseudo`: the segment is copied to FP_SCRATCH and summed with
// bpf_csum_diff in 512-byte chunks (a multiple of 4 each, the odd end padded with zeros).
// 0 on success.
static __always_inline int udp_checksum6(struct __sk_buff *skb, __u32 udp_off, __u32 seg_len,
					 void *pseudo, __u32 pseudo_len)
{
	__u32 zero = 0;
	struct fp_scratch *scratch = bpf_map_lookup_elem(&FP_SCRATCH, &zero);
	if (!scratch || seg_len < 8 || seg_len > SEGMENT_MAX)
		return -1;
	__u32 copy_len = seg_len - 1;
	asm volatile("%0 &= 0x7ff" : "+r"(copy_len));
	copy_len += 1;
	if (bpf_skb_load_bytes(skb, udp_off, scratch->bytes, copy_len))
		return -1;
	__u32 end = copy_len;
	asm volatile("%0 &= 0x7ff" : "+r"(end));
	scratch->bytes[end] = 0;
	scratch->bytes[end + 1] = 0;
	scratch->bytes[end + 2] = 0;
	__u32 padded = (copy_len + 3) & ~3U;
	__s64 sum = bpf_csum_diff(0, 0, pseudo, pseudo_len, 0);
	if (sum < 0)
		return -1;
#pragma unroll
	for (__u32 i = 0; i < 3; i++) {
		__u32 off = i * 512;
		if (off >= padded)
			break;
		__u32 size = padded - off;
		if (size > 512)
			size = 512;
		asm volatile("%0 &= 0x3fc" : "+r"(size));
		sum = bpf_csum_diff(0, 0, (__be32 *)(scratch->bytes + off), size, (__wsum)sum);
		if (sum < 0)
			return -1;
	}
	__u32 folded = (__u32)sum;
	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	__u16 check = ~folded & 0xffff;
	if (check == 0)
		check = 0xffff;
	return bpf_skb_store_bytes(skb, udp_off + 6, &check, 2, 0) ? -1 : 0;
}

// The whole program for one IP version: IP_HLEN is a constant in each caller.
static __always_inline int handle(struct __sk_buff *skb, const int v6)
{
	const __u32 IP_HLEN = v6 ? 40 : 20;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + QNAME_OFF > data_end)
		return TC_ACT_OK;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	struct ipv6hdr *ip6 = data + IP_OFF;
	struct udphdr *udp = data + UDP_OFF;
	struct fp_addr served;
	__builtin_memset(&served, 0, sizeof(served));
	served.port = udp->dest;
	__u32 ip_len; // the IP packet's length (IPv6: header included, as IPv4's total length)
	if (v6) {
		// Version 6, no extension header (next header UDP), not a jumbogram.
		if ((ip6->version) != 6 || ip6->nexthdr != IPPROTO_UDP)
			return TC_ACT_OK;
		__builtin_memcpy(served.addr, &ip6->daddr, 16);
		ip_len = bpf_ntohs(ip6->payload_len) + 40;
	} else {
		if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return TC_ACT_OK;
		if (ip->frag_off & bpf_htons(0x3fff)) // MF or a fragment offset
			return TC_ACT_OK;
		served.addr[10] = 0xff;
		served.addr[11] = 0xff;
		__builtin_memcpy(served.addr + 12, &ip->daddr, 4);
		ip_len = bpf_ntohs(ip->tot_len);
	}
	__u8 *block = bpf_map_lookup_elem(&FP_ADDRS, &served);
	if (!block)
		return TC_ACT_OK;
	__u32 udp_len = bpf_ntohs(udp->len);
	if (ip_len != skb->len - ETH_HLEN || udp_len != ip_len - IP_HLEN)
		return TC_ACT_OK;
	__u32 dns_len = udp_len - 8;
	if (dns_len > DNS_HEADER_LEN + QNAME_MAX + 4 + OPT_LEN + COOKIE_OPTION_LEN)
		return TC_ACT_OK;

	__u8 *dns = data + DNS_OFF;
	__u16 qflags = ((__u16)dns[2] << 8) | dns[3];
	if (qflags & (DNS_QR | DNS_OPCODE | DNS_AA | DNS_TC | DNS_Z | DNS_RCODE))
		return TC_ACT_OK;
	// QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1.
	if (dns[4] || dns[5] != 1 || dns[6] || dns[7] || dns[8] || dns[9] || dns[10] ||
	    dns[11] > 1)
		return TC_ACT_OK;
	__u32 opt_len = dns[11] ? OPT_LEN : 0;
	if (opt_len && dns_len >= DNS_HEADER_LEN + 1 + 4 + OPT_LEN + COOKIE_OPTION_LEN) {
		// An OPT record ending the message with one client cookie option? (If not, the OPT
		// record must be 11 bytes with no option: checked below.)
		__u8 probe[OPT_LEN + 4];
		if (bpf_skb_load_bytes(skb, DNS_OFF + dns_len - OPT_LEN - COOKIE_OPTION_LEN, probe,
				       sizeof(probe)))
			return TC_ACT_OK;
		if (probe[0] == 0 && probe[1] == 0 && probe[2] == OPT_TYPE && probe[9] == 0 &&
		    probe[10] == COOKIE_OPTION_LEN && probe[11] == 0 && probe[12] == COOKIE_OPTION &&
		    probe[13] == 0 && probe[14] == COOKIE_OPTION_LEN - 4)
			opt_len = OPT_LEN + COOKIE_OPTION_LEN;
	}

	// The question is all that follows the header but the OPT record, so its name is the
	// message's length less the header, qtype, qclass and OPT: no walk over the labels. (With
	// a cookie the same holds: were the name longer, its first bytes would not end a name.) A
	// malformed name cannot hit: a stored name is well-formed, and lower-casing leaves length
	// bytes (at most 63, below 'A') as they are, so a query whose lower-cased bytes equal a
	// stored name has that name's labels.
	if (dns_len < DNS_HEADER_LEN + 1 + 4 + opt_len)
		return TC_ACT_OK;
	__u32 qlen = dns_len - DNS_HEADER_LEN - 4 - opt_len;
	if (qlen < 1 || qlen > QNAME_MAX)
		return TC_ACT_OK;

	struct fp_key key;
	__builtin_memset(&key, 0, sizeof(key));
	key.block = *block;
	// 1..256 in the verifier's eyes too (clang would otherwise test a copy of qlen).
	__u32 copy_len = qlen - 1;
	asm volatile("%0 &= 0xff" : "+r"(copy_len));
	copy_len += 1;
	if (bpf_skb_load_bytes(skb, QNAME_OFF, key.qname, copy_len))
		return TC_ACT_OK;
	// Lower-case the whole buffer, padding included (zeros stay zeros): a fixed count and no
	// branch per byte keep the verifier's walk short.
	for (__u32 i = 0; i < KEY_QNAME_LEN; i++)
		key.qname[i] = to_lower(key.qname[i]);

	__u8 tail[4 + OPT_LEN + COOKIE_OPTION_LEN]; // qtype, qclass, the OPT record if any
	__builtin_memset(tail, 0, sizeof(tail));
	if (bpf_skb_load_bytes(skb, QNAME_OFF + qlen, tail, 4 + opt_len))
		return TC_ACT_OK;
	if (tail[2] != 0 || tail[3] != CLASS_IN)
		return TC_ACT_OK;
	key.qtype[0] = tail[0];
	key.qtype[1] = tail[1];
	__u32 limit = UDP_LIMIT_PLAIN;
	if (opt_len) {
		__u8 *opt = tail + 4;
		// Root owner, type OPT, extended RCODE 0, version 0, no option or the cookie.
		__u32 rdlength = opt_len - OPT_LEN;
		if (opt[0] != 0 || opt[1] != 0 || opt[2] != OPT_TYPE || opt[5] != 0 || opt[6] != 0 ||
		    opt[9] != 0 || opt[10] != rdlength)
			return TC_ACT_OK;
		__u32 payload = ((__u32)opt[3] << 8) | opt[4];
		if (payload > limit)
			limit = payload;
		key.flags |= KEY_EDNS;
		if (opt[7] & 0x80)
			key.flags |= KEY_DO;
	}
	if (qflags & DNS_CD)
		key.flags |= KEY_CD;
	if (qflags & DNS_AD)
		key.flags |= KEY_AD;

	struct fp_value *value = bpf_map_lookup_elem(&FP_ANSWERS, &key);
	if (!value) {
		count(STAT_MISS);
		return TC_ACT_OK;
	}
	__u64 now = bpf_ktime_get_boot_ns();
	if (now >= value->expires_ns || now < value->stored_ns) {
		count(STAT_EXPIRED);
		return TC_ACT_OK;
	}
	__u32 answer_len = value->len;
	if (answer_len > FP_MAX_DATA)
		return TC_ACT_OK;
	__u32 reply_dns_len = DNS_HEADER_LEN + qlen + 4 + answer_len;
	if (reply_dns_len > limit) {
		count(STAT_TOO_BIG); // the socket path truncates
		return TC_ACT_OK;
	}
	// As the socket path: whole seconds elapsed off the lifetime, so N..1, never 0.
	__u64 elapsed = (now - value->stored_ns) / 1000000000ULL;
	__u32 remaining = elapsed < value->ttl ? value->ttl - (__u32)elapsed : 0;
	__u32 ttl_be = bpf_htonl(remaining);
	__u32 ttl_count = value->ttl_count;

	// Everything read from the query that the reply needs, before the packet changes.
	__u16 rflags = (((__u16)value->flags[0] << 8) | value->flags[1]) & ~(DNS_RD | DNS_CD);
	rflags |= qflags & (DNS_RD | DNS_CD);
	__u32 answer_off = QNAME_OFF + qlen + 4;
	__u32 new_len = answer_off + answer_len;

	if (bpf_skb_change_tail(skb, new_len, 0)) {
		count(STAT_ERROR);
		return TC_ACT_OK;
	}
	// From here the query is half rewritten: on a failure it cannot pass any more.
	if (answer_len > 0 &&
	    bpf_skb_store_bytes(skb, answer_off, value->data, answer_len, 0)) {
		count(STAT_ERROR);
		return TC_ACT_SHOT;
	}
	for (__u32 i = 0; i < FP_MAX_TTLS; i++) {
		if (i >= ttl_count)
			break;
		__u32 at = answer_off + value->ttl_offsets[i];
		if (bpf_skb_store_bytes(skb, at, &ttl_be, 4, 0)) {
			count(STAT_ERROR);
			return TC_ACT_SHOT;
		}
	}

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + DNS_OFF + DNS_HEADER_LEN > data_end) {
		count(STAT_ERROR);
		return TC_ACT_SHOT;
	}
	eth = data;
	ip = data + IP_OFF;
	ip6 = data + IP_OFF;
	udp = data + UDP_OFF;
	dns = data + DNS_OFF;

	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	if (v6) {
		struct in6_addr addr6 = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = addr6;
		ip6->payload_len = bpf_htons(new_len - ETH_HLEN - 40);
		ip6->hop_limit = 64;
	} else {
		__u32 addr = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = addr;
		ip->tot_len = bpf_htons(new_len - ETH_HLEN);
		ip->ttl = 64;
		ip->check = 0;
		ip->check = ipv4_checksum(ip);
	}

	__u16 port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	udp->len = bpf_htons(new_len - UDP_OFF);
	udp->check = 0;

	dns[2] = rflags >> 8;
	dns[3] = rflags & 0xff;
	__builtin_memcpy(dns + 6, value->counts, 6);

	// IPv6: the UDP checksum is mandatory (IPv4 keeps 0, "none").
	if (v6) {
		struct {
			struct in6_addr saddr;
			struct in6_addr daddr;
			__u32 len;
			__u32 next;
		} pseudo;
		pseudo.saddr = ip6->saddr;
		pseudo.daddr = ip6->daddr;
		pseudo.len = bpf_htonl(new_len - UDP_OFF);
		pseudo.next = bpf_htonl(IPPROTO_UDP);
		if (udp_checksum6(skb, UDP_OFF, new_len - UDP_OFF, &pseudo, sizeof(pseudo))) {
			count(STAT_ERROR);
			return TC_ACT_SHOT;
		}
	}

	count(STAT_HIT);
	__u32 slot = value->slot;
	__u64 *hits = bpf_map_lookup_elem(&FP_HITS, &slot);
	if (hits)
		*hits += 1;
	return bpf_redirect(skb->ifindex, 0);
}

static __attribute__((noinline)) int handle_ipv4(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

static __attribute__((noinline)) int handle_ipv6(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("classifier")
int shardns_fastpath(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN > data_end)
		return TC_ACT_OK;
	struct ethhdr *eth = data;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return handle_ipv4(skb);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return handle_ipv6(skb);
	return TC_ACT_OK;
}

// The GPL option of the dual licence, as the kernel reads it.
char LICENSE[] SEC("license") = "GPL";
