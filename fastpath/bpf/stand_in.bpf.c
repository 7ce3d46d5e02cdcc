// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
// Programs that pass every packet: the tests attach them to stand for another program (a
// CNI's) on an interface, as a TC classifier (tcx or a legacy tc filter) or as XDP. Not part
// of what shardns loads.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int cni_stand_in(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("xdp")
int xdp_stand_in(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
