// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
// A TC classifier that passes every packet: the tests attach it to stand for another
// program (a CNI's) on an interface. Not part of what shardns loads.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int cni_stand_in(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
