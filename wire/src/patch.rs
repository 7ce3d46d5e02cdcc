//! Whether a response's names stay the same when the cache rewrites it in place.
//!
//! A cached response is served by patching bytes: the header (ID, flags, counts), every TTL
//! field, and the EDNS OPT record, which is cut out when stored and written anew for each
//! client. A compression pointer may target any earlier byte, so a damaged or hostile reply
//! can make a name read through bytes that are later rewritten: a TTL whose last byte is 0
//! reads as the root until the TTL changes, then as a label running into the next record. The
//! reply relayed would then no longer parse, or name something else. [`check_patchable`]
//! refuses such a reply before it is relayed or cached.

use std::ops::Range;

use crate::{HEADER_LEN, Message, ParseError, RecordWalk, rtype, skip_name};

/// Checks that no name of `message` reads a byte the cache rewrites: every owner name, and
/// the names in the RDATA of the types whose names may be compressed (RFC 1035's and those
/// RFC 3597 §4 asks receivers to decompress). `ttl_offsets` are the TTL fields
/// [`Message::parse_with`] reported, in ascending order. Names in RDATA must also be well
/// formed and end inside it. No allocation.
pub fn check_patchable(message: &Message<'_>, ttl_offsets: &[usize]) -> Result<(), ParseError> {
    let buf = message.buf;
    let patched = Patched {
        opt_start: message.edns.as_ref().map(|e| e.record.start),
        ttl_offsets,
    };
    for record in RecordWalk::new(buf, message.question_end, &message.header) {
        let record = record?;
        if record.rtype == rtype::OPT {
            // Cut out when stored: nothing in it is relayed as received.
            continue;
        }
        patched.check_name(buf, record.name_start)?;
        let Some((skip, names)) = rdata_names(record.rtype) else {
            continue;
        };
        let mut at = record.rdata.start + skip;
        for _ in 0..names {
            if at >= record.rdata.end {
                return Err(ParseError::Truncated);
            }
            let end = skip_name(buf, at)?;
            if end > record.rdata.end {
                return Err(ParseError::Truncated);
            }
            patched.check_name(buf, at)?;
            at = end;
        }
    }
    Ok(())
}

/// The names in a record's RDATA: bytes before the first, and how many follow one another.
fn rdata_names(rtype: u16) -> Option<(usize, usize)> {
    Some(match rtype {
        // NS, MD, MF, CNAME, MB, MG, MR, PTR, DNAME
        2..=5 | 7..=9 | 12 | 39 => (0, 1),
        // SOA (MNAME, RNAME), MINFO, RP
        6 | 14 | 17 => (0, 2),
        // MX, AFSDB, RT, KX: a 16-bit preference first
        15 | 18 | 21 | 36 => (2, 1),
        // PX: preference, MAP822, MAPX400
        26 => (2, 2),
        // SRV: priority, weight, port
        33 => (6, 1),
        _ => return None,
    })
}

/// The bytes rewritten when a cached copy is served.
struct Patched<'a> {
    opt_start: Option<usize>,
    ttl_offsets: &'a [usize],
}

impl Patched<'_> {
    /// Follows the (already validated) name at `pos`: every byte read after a compression
    /// pointer must lie outside the header and the TTL fields, and before the OPT record
    /// (which is removed, moving what follows it).
    fn check_name(&self, buf: &[u8], pos: usize) -> Result<(), ParseError> {
        let mut cursor = pos;
        let mut jumped = false;
        loop {
            let len = *buf.get(cursor).ok_or(ParseError::Truncated)? as usize;
            let read = if len & 0xc0 == 0xc0 {
                cursor..cursor + 2
            } else {
                cursor..cursor + 1 + len
            };
            if jumped && self.overlaps(&read) {
                return Err(ParseError::PatchedPointer);
            }
            match len & 0xc0 {
                0xc0 => {
                    let low = *buf.get(cursor + 1).ok_or(ParseError::Truncated)? as usize;
                    cursor = ((len & 0x3f) << 8) | low;
                    jumped = true;
                }
                _ if len == 0 => return Ok(()),
                _ => cursor = read.end,
            }
        }
    }

    fn overlaps(&self, read: &Range<usize>) -> bool {
        if read.start < HEADER_LEN || self.opt_start.is_some_and(|opt| read.end > opt) {
            return true;
        }
        // The first TTL field ending after the read starts; sorted, so one search.
        let first = self.ttl_offsets.partition_point(|&o| o + 4 <= read.start);
        self.ttl_offsets.get(first).is_some_and(|&o| o < read.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record: owner, type, TTL bytes, RDATA.
    type Rr<'a> = (&'a [u8], u16, [u8; 4], &'a [u8]);

    /// A response to `a.example. A` with `records` in the answer section.
    fn response(records: &[Rr<'_>]) -> Vec<u8> {
        let mut buf = vec![0, 1, 0x81, 0x80, 0, 1, 0, records.len() as u8, 0, 0, 0, 0];
        buf.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
        for (owner, rtype, ttl, rdata) in records {
            buf.extend_from_slice(owner);
            buf.extend_from_slice(&rtype.to_be_bytes());
            buf.extend_from_slice(&[0, 1]);
            buf.extend_from_slice(ttl);
            buf.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            buf.extend_from_slice(rdata);
        }
        buf
    }

    fn check(buf: &[u8]) -> Result<(), ParseError> {
        let mut offsets = Vec::new();
        let message = Message::parse_with(buf, |o| offsets.push(o))?;
        check_patchable(&message, &offsets)
    }

    /// Offset of the question name, and of the first record (just past the question).
    const QNAME: u8 = 12;
    const FIRST: usize = 12 + 11 + 4;

    #[test]
    fn pointers_to_names_pass() {
        // Owner → question; CNAME target in RDATA, the next owner pointing at it.
        let cname_rdata = [1, b'b', 0xc0, QNAME + 2];
        let second_owner = [0xc0, (FIRST + 2 + 10) as u8];
        let buf = response(&[
            (&[0xc0, QNAME], rtype::CNAME, [0, 0, 0, 60], &cname_rdata),
            (&second_owner, rtype::A, [0, 0, 0, 60], &[192, 0, 2, 1]),
        ]);
        assert_eq!(check(&buf), Ok(()));
    }

    #[test]
    fn a_pointer_into_a_ttl_is_refused() {
        // The last byte of the first record's TTL is 0: the root, until the TTL is rewritten.
        let ttl_last = (FIRST + 2 + 2 + 2 + 3) as u8;
        let buf = response(&[
            (&[0xc0, QNAME], rtype::A, [0, 0, 0x65, 0], &[0; 4]),
            (&[0xc0, ttl_last], rtype::A, [0, 0, 0, 30], &[0; 4]),
        ]);
        assert!(Message::parse(&buf).is_ok(), "the walk alone accepts it");
        assert_eq!(check(&buf), Err(ParseError::PatchedPointer));
    }

    #[test]
    fn a_label_read_into_a_ttl_is_refused() {
        // The pointer lands on the A record's RDATA, whose label runs on into nothing patched;
        // one byte earlier its length byte covers the next TTL.
        let rdata_start = FIRST + 2 + 10;
        let fine = response(&[
            (&[0xc0, QNAME], rtype::A, [0, 0, 0, 60], &[1, b'x', 0, 0]),
            (&[0xc0, rdata_start as u8], rtype::A, [0, 0, 0, 60], &[0; 4]),
        ]);
        assert_eq!(check(&fine), Ok(()));
        let into_ttl = response(&[
            (&[0xc0, QNAME], rtype::A, [0, 0, 0, 60], &[9, b'x', 0, 0]),
            (&[0xc0, rdata_start as u8], rtype::A, [0, 0, 0, 60], &[0; 4]),
        ]);
        // The label (9 octets) reads through the second owner, type and class; the name
        // ends at the first byte of its TTL.
        assert_eq!(check(&into_ttl), Err(ParseError::PatchedPointer));
    }

    #[test]
    fn pointers_into_the_header_are_refused() {
        // ID 0x0001: byte 1 read as a 1-octet label, byte 2 (0x81) is a bad label type; use a
        // zero byte of the header (QDCOUNT's high byte): the root.
        let buf = response(&[(&[0xc0, 4], rtype::A, [0, 0, 0, 60], &[0; 4])]);
        assert_eq!(check(&buf), Err(ParseError::PatchedPointer));
    }

    #[test]
    fn rdata_names_are_checked_too() {
        let ttl_last = (FIRST + 2 + 2 + 2 + 3) as u8;
        let buf = response(&[
            (&[0xc0, QNAME], rtype::A, [0, 0, 0x65, 0], &[0; 4]),
            (
                &[0xc0, QNAME],
                rtype::CNAME,
                [0, 0, 0, 30],
                &[0xc0, ttl_last],
            ),
        ]);
        assert_eq!(check(&buf), Err(ParseError::PatchedPointer));
        // MX: the name after the preference; a name running past the RDATA is refused.
        let mx = response(&[(&[0xc0, QNAME], 15, [0, 0, 0, 30], &[0, 10, 0xc0, QNAME])]);
        assert_eq!(check(&mx), Ok(()));
        let long = response(&[(&[0xc0, QNAME], rtype::CNAME, [0, 0, 0, 30], &[3, b'a', 0])]);
        assert_eq!(check(&long), Err(ParseError::Truncated));
        let empty = response(&[(&[0xc0, QNAME], rtype::NS, [0, 0, 0, 30], &[])]);
        assert_eq!(check(&empty), Err(ParseError::Truncated));
    }

    #[test]
    fn pointers_into_or_past_the_opt_record_are_refused() {
        // Additional: OPT, then an A record whose owner points into the OPT's RDATA.
        let mut buf = response(&[(&[0xc0, QNAME], rtype::A, [0, 0, 0, 60], &[0; 4])]);
        buf[11] = 2;
        let opt_at = buf.len();
        buf.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 2, 0, 0]);
        let fine = buf.clone();
        buf.extend_from_slice(&[0xc0, (opt_at + 11) as u8, 0, 1, 0, 1, 0, 0, 0, 9, 0, 0]);
        assert_eq!(check(&buf), Err(ParseError::PatchedPointer));
        let mut fine = fine;
        fine.extend_from_slice(&[0xc0, QNAME, 0, 1, 0, 1, 0, 0, 0, 9, 0, 0]);
        assert_eq!(check(&fine), Ok(()));
    }
}
