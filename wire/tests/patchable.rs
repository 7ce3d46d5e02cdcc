//! `check_patchable` as a property: for compressed responses damaged at random (pointer
//! targets rewritten, bytes overwritten), whenever the message parses and the check passes,
//! rewriting what the cache rewrites — the ID and flags, every TTL, the OPT record cut out —
//! leaves every name the same: each owner name and each name in CNAME, NS, MX and SOA RDATA
//! reads the same labels before and after. Without the check, pointers into TTLs or the
//! header break that (the test finds such messages within its cases).

use proptest::prelude::*;
use shardns_wire::{HEADER_LEN, Message, RecordWalk, check_patchable, rtype};

/// `www.example.` asked; answer: CNAME to `b.example.` (compressed), A for it; authority:
/// SOA with two compressed names, MX; additional: OPT. Offsets of interest are computed by
/// the test from the walk, so the layout can change freely.
fn seed() -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 2, 0, 1];
    m.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
    let rr = |m: &mut Vec<u8>, owner: &[u8], t: u16, ttl: u32, rdata: &[u8]| {
        m.extend_from_slice(owner);
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(rdata);
    };
    let cname_rdata_at = m.len() + 2 + 10;
    rr(&mut m, &[0xc0, 12], rtype::CNAME, 300, &[1, b'b', 0xc0, 16]);
    rr(
        &mut m,
        &[0xc0, cname_rdata_at as u8],
        rtype::A,
        0x0100,
        &[0, 0, 0, 0],
    );
    rr(
        &mut m,
        &[0xc0, 16],
        rtype::SOA,
        60,
        &[
            2, b'n', b's', 0xc0, 16, 1, b'h', 0xc0, 16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0,
            0, 4, 0, 0, 0, 5,
        ],
    );
    rr(
        &mut m,
        &[0xc0, 16],
        15,
        0,
        &[0, 10, 0xc0, cname_rdata_at as u8],
    );
    m.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    m
}

/// The labels of the name at `pos`, lowercased, following pointers (bounded); `None` when it
/// does not read as a name.
fn labels(buf: &[u8], pos: usize) -> Option<Vec<Vec<u8>>> {
    let (mut cursor, mut hops, mut out) = (pos, 0, Vec::new());
    loop {
        let len = *buf.get(cursor)? as usize;
        match len & 0xc0 {
            0xc0 => {
                hops += 1;
                if hops > 64 {
                    return None;
                }
                cursor = ((len & 0x3f) << 8) | *buf.get(cursor + 1)? as usize;
            }
            0 if len == 0 => return Some(out),
            0 => {
                out.push(buf.get(cursor + 1..cursor + 1 + len)?.to_ascii_lowercase());
                cursor += 1 + len;
            }
            _ => return None,
        }
    }
}

/// Every name of the message: owners, and those in CNAME, NS, MX and SOA RDATA.
fn names(buf: &[u8]) -> Option<Vec<Vec<Vec<u8>>>> {
    let message = Message::parse(buf).ok()?;
    let mut out = Vec::new();
    for record in RecordWalk::new(buf, message.question_end, &message.header) {
        let record = record.ok()?;
        if record.rtype == rtype::OPT {
            continue;
        }
        out.push(labels(buf, record.name_start)?);
        let at = record.rdata.start;
        match record.rtype {
            rtype::CNAME | rtype::NS => out.push(labels(buf, at)?),
            15 => out.push(labels(buf, at + 2)?),
            rtype::SOA => {
                out.push(labels(buf, at)?);
                let second = shardns_wire::skip_name(buf, at).ok()?;
                out.push(labels(buf, second)?);
            }
            _ => {}
        }
    }
    Some(out)
}

/// What the cache does to a stored copy and when serving it: a new ID and flags, the OPT
/// record cut out (ARCOUNT lowered), every TTL rewritten.
fn patched(buf: &[u8], ttl_offsets: &[usize], ttl: u32, id: u16) -> Vec<u8> {
    let message = Message::parse(buf).unwrap();
    let mut out = buf[..message.records.end].to_vec();
    for &at in ttl_offsets {
        out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
    }
    out[..2].copy_from_slice(&id.to_be_bytes());
    out[2] ^= 0x11; // RD and AA flipped, as a client's RD/CD are written back
    if let Some(opt) = message.edns.as_ref().map(|e| e.record.clone()) {
        out.drain(opt);
        let arcount = message.header.arcount - 1;
        out[10..12].copy_from_slice(&arcount.to_be_bytes());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn what_passes_keeps_its_names_when_patched(
        pointers in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ttl in any::<u32>(),
        id in any::<u16>(),
    ) {
        let mut buf = seed();
        // Point an existing pointer somewhere else, mostly backwards into the message.
        let at: Vec<usize> = (HEADER_LEN..buf.len() - 1)
            .filter(|&i| buf[i] == 0xc0)
            .collect();
        for (which, target) in &pointers {
            let i = at[which.index(at.len())];
            buf[i + 1] = *target;
        }
        for (which, value) in &edits {
            let i = HEADER_LEN + which.index(buf.len() - HEADER_LEN);
            buf[i] = *value;
        }
        let mut offsets = Vec::new();
        let Ok(message) = Message::parse_with(&buf, |o| offsets.push(o)) else {
            return Ok(());
        };
        if check_patchable(&message, &offsets).is_err() {
            return Ok(());
        }
        let before = names(&buf);
        prop_assume!(before.is_some());
        let after = names(&patched(&buf, &offsets, ttl, id));
        prop_assert_eq!(before, after, "{:?}", buf);
    }
}

#[test]
fn the_seed_passes_and_keeps_its_names() {
    let buf = seed();
    let mut offsets = Vec::new();
    let message = Message::parse_with(&buf, |o| offsets.push(o)).unwrap();
    assert_eq!(check_patchable(&message, &offsets), Ok(()));
    let before = names(&buf).unwrap();
    assert_eq!(before.len(), 8, "4 owners, CNAME, 2 in SOA, MX: {before:?}");
    assert_eq!(before[1], vec![b"b".to_vec(), b"example".to_vec()]);
    assert_eq!(names(&patched(&buf, &offsets, 7, 9)).unwrap(), before);
}
