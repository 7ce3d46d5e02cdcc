//! Fuzz target: `Message::parse` on arbitrary bytes, then a `RecordWalk` over the records,
//! the cache key hash, and (when the message parsed) an error reply and a truncated copy,
//! which must parse back with the invariants asserted below.
#![no_main]

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use libfuzzer_sys::fuzz_target;
use shardns_wire::build::{self, MAX_REPLY_OVERHEAD};
use shardns_wire::{HEADER_LEN, Header, Key, Message, Rcode, RecordWalk, Section, rtype};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        // Whatever failed, a header-only reply exists exactly when there is a header.
        let mut out = [0u8; HEADER_LEN];
        let reply = build::header_only_reply(data, Rcode::FORMERR, &mut out);
        assert_eq!(reply.is_some(), data.len() >= HEADER_LEN);
        if reply.is_some() {
            let header = Header::parse(&out).unwrap();
            assert!(header.qr());
            assert_eq!((header.qdcount, header.rcode()), (0, Rcode::FORMERR));
            assert_eq!(header.id, Header::parse(data).unwrap().id);
        }
        return;
    };

    // The walk must see exactly what parse summarised.
    let mut ttl_offsets = Vec::new();
    let again = Message::parse_with(data, |at| ttl_offsets.push(at)).unwrap();
    assert_eq!(again.records, msg.records);
    let counts = [msg.header.ancount, msg.header.nscount, msg.header.arcount];
    let mut seen = [0u16; 3];
    let mut position = msg.question_end;
    let mut min_ttl = None;
    let mut walked_ttls = Vec::new();
    let mut opt = None;
    for record in RecordWalk::new(data, msg.question_end, &msg.header) {
        let record = record.expect("parse walked every record successfully");
        assert_eq!(record.name_start, position, "records are contiguous");
        assert!(record.rdata.end <= data.len());
        assert_eq!(record.ttl_offset + 6, record.rdata.start);
        let ttl = u32::from_be_bytes(
            data[record.ttl_offset..record.ttl_offset + 4]
                .try_into()
                .unwrap(),
        );
        assert_eq!(ttl, record.ttl);
        let section = match record.section {
            Section::Answer => 0,
            Section::Authority => 1,
            Section::Additional => 2,
        };
        seen[section] += 1;
        if record.rtype == rtype::OPT {
            assert_eq!(record.section, Section::Additional);
            assert!(opt.replace(record.span()).is_none(), "one OPT at most");
        } else {
            walked_ttls.push(record.ttl_offset);
            min_ttl = Some(min_ttl.map_or(record.ttl, |m: u32| m.min(record.ttl)));
        }
        position = record.rdata.end;
    }
    assert_eq!(seen, counts);
    assert_eq!(position, msg.records.end);
    assert_eq!(walked_ttls, ttl_offsets);
    assert_eq!(min_ttl, msg.records.min_ttl);
    assert_eq!(opt, msg.records.opt);
    assert_eq!(opt.is_some(), msg.edns.is_some());

    // The key: stable, and equal for a case-flipped name.
    let state = BuildHasherDefault::<DefaultHasher>::default();
    let key = Key::of(&msg);
    assert_eq!(key.qname, msg.question.name);
    let flipped: Vec<u8> = key
        .qname
        .iter()
        .map(|b| {
            if b.is_ascii_alphabetic() {
                b ^ 0x20
            } else {
                *b
            }
        })
        .collect();
    let other = Key {
        qname: &flipped,
        ..key
    };
    assert_eq!(key.hash_with(&state), other.hash_with(&state));
    assert!(key.matches(&flipped, key.qtype, key.qclass, key.flags()));
    assert_eq!(state.hash_one(key), state.hash_one(key));

    // An error reply parses back with the same question, ID and DO bit, and the full rcode.
    let mut out = [0u8; MAX_REPLY_OVERHEAD];
    for code in [
        Rcode::SERVFAIL,
        Rcode::FORMERR,
        Rcode::BADVERS,
    ] {
        let len = build::error_reply(&msg, code, &mut out);
        let reply = Message::parse(&out[..len]).expect("error reply parses");
        assert_eq!(reply.header.id, msg.header.id);
        assert_eq!(reply.question, msg.question);
        assert!(reply.header.qr() && reply.header.ra());
        assert_eq!(reply.header.rd(), msg.header.rd());
        assert_eq!(reply.header.cd(), msg.header.cd());
        assert_eq!(reply.header.opcode(), msg.header.opcode());
        assert_eq!(reply.edns.is_some(), msg.edns.is_some());
        assert_eq!(reply.dnssec_ok(), msg.dnssec_ok());
        let expected = if msg.edns.is_some() {
            code
        } else {
            Rcode::new(code.header_bits())
        };
        assert_eq!(reply.rcode(), expected);
        assert_eq!(Key::of(&reply).hash_with(&state), key.hash_with(&state));
        assert!(len <= MAX_REPLY_OVERHEAD);
    }

    // An upstream query parses back with the question, the new ID and an OPT record.
    let len = build::upstream_query(
        0x4242,
        msg.header.flags,
        &msg.question,
        msg.dnssec_ok(),
        &mut out,
    );
    let up = Message::parse(&out[..len]).expect("upstream query parses");
    assert_eq!(
        (up.header.id, up.question, up.header.qr()),
        (0x4242, msg.question, false)
    );
    assert_eq!(
        up.edns.as_ref().map(|e| e.payload_size),
        Some(build::EDNS_PAYLOAD)
    );
    assert_eq!(up.dnssec_ok(), msg.dnssec_ok());

    // A truncated copy: header and question only, TC set, counts zero; and with an OPT again.
    let mut copy = data.to_vec();
    let max = msg.question_end; // anything longer than the question is cut
    let len = build::truncate(&mut copy, data.len(), msg.question_end, max);
    if data.len() > max {
        assert_eq!(len, msg.question_end);
        let cut = Message::parse(&copy[..len]).expect("truncated copy parses");
        assert!(cut.header.tc());
        assert_eq!(
            (cut.header.ancount, cut.header.nscount, cut.header.arcount),
            (0, 0, 0)
        );
        assert_eq!(cut.question, msg.question);
        assert_eq!(cut.header.id, msg.header.id);
        assert_eq!(cut.records.end, msg.question_end);
        copy.truncate(len);
        copy.resize(len + build::OPT_LEN, 0);
        let with_opt = build::append_opt(&mut copy, len, build::EDNS_PAYLOAD, 0, msg.dnssec_ok());
        let cut = Message::parse(&copy[..with_opt]).expect("truncated copy with OPT parses");
        assert_eq!(cut.header.arcount, 1);
        assert_eq!(cut.dnssec_ok(), msg.dnssec_ok());
    } else {
        assert_eq!(len, data.len());
    }
});
