//! Parse benchmarks: `Message::parse` plus the cache-key hash (foldhash, fixed seed) for
//! (i) an A query without EDNS, (ii) the same query with EDNS, and (iii) a ~100-byte A
//! response with two answers and an OPT record, parsed with `parse_with` (the record walk that
//! yields the `WalkSummary` and every TTL offset).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use foldhash::fast::FixedState;
use shardns_wire::{Header, Key, Message, rtype};

const QNAME: &[u8] = b"\x03www\x07example\x03com\x00";

fn header(flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut buf = vec![0; 12];
    let [qdcount, ancount, nscount, arcount] = counts;
    Header {
        id: 0x1234,
        flags,
        qdcount,
        ancount,
        nscount,
        arcount,
    }
    .write(&mut buf);
    buf
}

fn question(buf: &mut Vec<u8>) {
    buf.extend_from_slice(QNAME);
    buf.extend_from_slice(&rtype::A.to_be_bytes());
    buf.extend_from_slice(&1u16.to_be_bytes());
}

fn opt(buf: &mut Vec<u8>) {
    buf.push(0);
    buf.extend_from_slice(&rtype::OPT.to_be_bytes());
    buf.extend_from_slice(&1232u16.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
}

fn query(edns: bool) -> Vec<u8> {
    let mut buf = header(Header::RD, [1, 0, 0, u16::from(edns)]);
    question(&mut buf);
    if edns {
        opt(&mut buf);
    }
    buf
}

fn response() -> Vec<u8> {
    let mut buf = header(Header::QR | Header::RD | Header::RA, [1, 2, 0, 1]);
    question(&mut buf);
    for (ttl, last) in [(300u32, 1u8), (120, 2)] {
        buf.extend_from_slice(&[0xc0, 12]);
        buf.extend_from_slice(&rtype::A.to_be_bytes());
        buf.extend_from_slice(&1u16.to_be_bytes());
        buf.extend_from_slice(&ttl.to_be_bytes());
        buf.extend_from_slice(&4u16.to_be_bytes());
        buf.extend_from_slice(&[192, 0, 2, last]);
    }
    opt(&mut buf);
    // Pad the OPT record with an EDNS padding option to a typical ~100-byte response.
    let pad = 100 - buf.len() - 4;
    let len = buf.len();
    buf[len - 2..].copy_from_slice(&(4 + pad as u16).to_be_bytes());
    buf.extend_from_slice(&12u16.to_be_bytes());
    buf.extend_from_slice(&(pad as u16).to_be_bytes());
    buf.resize(100, 0);
    buf
}

fn parse_and_hash(buf: &[u8], state: &FixedState) -> u64 {
    let msg = Message::parse(buf).expect("benchmark message parses");
    Key::of(&msg).hash_with(state)
}

fn bench(c: &mut Criterion) {
    let state = FixedState::with_seed(0x5eed_d0e5);
    let mut group = c.benchmark_group("parse");
    for (name, buf) in [("query_a", query(false)), ("query_a_edns", query(true))] {
        assert_eq!(
            Message::parse(&buf).unwrap().edns.is_some(),
            name.ends_with("edns")
        );
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse_and_hash(black_box(&buf), &state)));
    }

    let buf = response();
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(
        (buf.len(), msg.records.ttl_count, msg.records.min_ttl),
        (100, 2, Some(120))
    );
    assert!(msg.edns.is_some());
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("response_a2_opt_walk", |b| {
        b.iter(|| {
            let mut offsets = [0usize; 8];
            let mut n = 0;
            let msg = Message::parse_with(black_box(&buf), |at| {
                offsets[n % 8] = at;
                n += 1;
            })
            .expect("benchmark response parses");
            let hash = Key::of(&msg).hash_with(&state);
            (hash, msg.records.min_ttl, offsets, n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
