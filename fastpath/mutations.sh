#!/bin/bash
# Mutation check of the fast path: breaks one thing at a time (the program or the loader),
# runs the crate's tests (root, --features bpf), restores the file. Every breakage must make at
# least one test fail; the last lines run them intact. The broken file is copied back after
# each try, and on exit or interruption. ~5 min; exits 1 when a breakage is not caught or its pattern is gone.
set -u
keep=$(mktemp)
broken=""
trap '[ -n "$broken" ] && cp "$keep" "$broken"; rm -f "$keep"' EXIT
trap 'exit 130' INT TERM
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
F=fastpath/bpf/fastpath.bpf.c; L=fastpath/src/loader.rs
missed=0
caught=0
try() {
  cp "$2" "$keep"
  broken=$2
  if ! python3 -c "
import sys; p,o,n=sys.argv[1:4]; s=open(p).read(); assert o in s, o; open(p,'w').write(s.replace(o,n,1))" "$2" "$3" "$4"; then
    echo "PATTERN MISSING: $1"
    missed=$((missed + 1))
    broken=""
    return
  fi
  echo "== $1"
  out=$(cargo test -p shardns-fastpath --features bpf --tests 2>&1)
  echo "$out" | grep -E "^test .*FAILED|test result|^error: failed to run custom"
  if echo "$out" | grep -q "^test .*FAILED"; then
    caught=$((caught + 1))
  else
    echo "NOT CAUGHT: $1"
    missed=$((missed + 1))
  fi
  cp "$keep" "$2"
  broken=""
}
try "ID zeroed" $F '	dns[2] = rflags >> 8;' '	dns[0] = 0; dns[1] = 0;
	dns[2] = rflags >> 8;'
try "first letter lower-cased" $F '	dns[2] = rflags >> 8;' '	if ((void *)(dns + 14) > data_end) return TC_ACT_SHOT;
	dns[13] |= 0x20;
	dns[2] = rflags >> 8;'
try "RD forced" $F '	rflags |= qflags & (DNS_RD | DNS_CD);' '	rflags |= DNS_RD | (qflags & DNS_CD);'
try "CD not copied" $F '	rflags |= qflags & (DNS_RD | DNS_CD);' '	rflags |= qflags & DNS_RD;'
try "CD not in key" $F '		key.flags |= KEY_CD;' '		;'
try "AD not in key" $F '		key.flags |= KEY_AD;' '		;'
try "EDNS not in key" $F '		key.flags |= KEY_EDNS;' '		;'
try "DO not in key" $F '			key.flags |= KEY_DO;' '			;'
try "no expiry check" $F '	if (now >= value->expires_ns || now < value->stored_ns) {' '	if (0) {'
try "no UDP limit check" $F '	if (reply_dns_len > limit) {' '	if (reply_dns_len > limit + 4096) {'
try "no address check" $F '	if (!block)
		return TC_ACT_OK;' '	__u8 zero = 7;
	if (!block)
		block = &zero;'
try "port ignored" $F '	served.port = udp->dest;' '	served.port = bpf_htons(53) + 0 * udp->dest;'
try "block not in key" $F '	key.block = *block;' '	key.block = 7;'
try "no decay" $F '	__u32 ttl_be = bpf_htonl(remaining);' '	__u32 ttl_be = bpf_htonl(value->ttl + 0 * remaining);'
try "hits not counted" $F '	count(STAT_HIT);' ''
try "no redirect" $F '	return bpf_redirect(skb->ifindex, 0);' '	return TC_ACT_OK;'
try "detach does nothing" $L '                    program.detach(attachment.link)?;' '                    let _ = (&program, attachment.link);'
try "occupied check skipped" $L '        if !others.is_empty() {' '        if !others.is_empty() && others.is_empty() {'
try "tc filters and XDP not looked for" $L '                .filter(|name| name != PROGRAM),' '                .filter(|_| false),'
try "another shardns counted as a CNI" $L '        others.retain(|name| name != ours);' '        others.retain(|_| true);'
try "Z bit accepted" $F '(DNS_QR | DNS_OPCODE | DNS_AA | DNS_TC | DNS_Z | DNS_RCODE)' '(DNS_QR | DNS_OPCODE | DNS_AA | DNS_TC | DNS_RCODE)'
try "ANCOUNT ignored" $F '	if (dns[4] || dns[5] != 1 || dns[6] || dns[7] ||' '	if (dns[4] || dns[5] != 1 ||'
try "ARCOUNT 2 accepted" $F '	    dns[11] > 1)' '	    dns[11] > 2)'
try "opcode accepted" $F '(DNS_QR | DNS_OPCODE | DNS_AA' '(DNS_QR | DNS_AA'
try "OPT version ignored" $F 'opt[5] != 0 || opt[6] != 0 ||' 'opt[5] != 0 ||'
try "entry hits not counted" $F '		*hits += 1;' '		*hits += 0;'
try "slot baseline ignored" $L '.wrapping_sub(slot.baseline)' '.wrapping_sub(0 * slot.baseline)'
try "leftovers kept" $L '        match tc::qdisc_detach_program(interface, TcAttachType::Ingress, PROGRAM) {' '        match Err::<(), _>(tc::TcError::IoError(std::io::ErrorKind::NotFound.into())) {'
try "cookie refused" $F '			opt_len = OPT_LEN + COOKIE_OPTION_LEN;' '			opt_len = OPT_LEN + 0 * COOKIE_OPTION_LEN;'
try "cookie length unchecked" $F 'probe[13] == 0 && probe[14] == COOKIE_OPTION_LEN - 4)' 'probe[13] == 0)'
try "drop leaves netlink filters" $L '        for attachment in std::mem::take(&mut self.attached) {' '        for attachment in Vec::<Attachment>::new() {'
try "detach outside the namespace" $L '                    setns(&attachment.netns, CloneFlags::CLONE_NEWNET)' '                    Ok::<(), nix::Error>(())'
try "IPv6 not answered" $F '	return handle(skb, 1);' '	return TC_ACT_OK;'
try "IPv6 UDP checksum left stale" $F '		if (udp_checksum6(skb, UDP_OFF,' '		if (0 && udp_checksum6(skb, UDP_OFF,'
try "IPv6 checksum's odd end not padded" $F '	scratch->bytes[end] = 0;' '	scratch->bytes[end] = 0x5a;'
echo "== intact"
git status --short fastpath
cargo test -p shardns-fastpath --features bpf --tests 2>&1 | grep -E "test result|FAILED"
echo "$caught breakages caught, $missed missed or stale"
[ "$missed" -eq 0 ]
