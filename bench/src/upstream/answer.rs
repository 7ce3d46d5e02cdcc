//! The synthetic answer: NOERROR with one record for the asked name, no zone data.

/// TTL of the synthetic records.
pub const TTL: u32 = 300;
/// Address of every synthetic A record (TEST-NET-1).
pub const A_ADDRESS: [u8; 4] = [192, 0, 2, 1];
/// Address of every synthetic AAAA record (the documentation prefix, `2001:db8::1`).
pub const AAAA_ADDRESS: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The longest reply [`answer`] writes: header, a 255-byte name with type and class, an
/// AAAA record and an OPT record.
pub const MAX_REPLY: usize = 12 + 255 + 4 + (2 + 10 + 16) + 11;
/// The EDNS UDP payload size the replies advertise.
const EDNS_PAYLOAD: u16 = 1232;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_NOTIMP: u8 = 4;

/// Writes the reply to `query` into `out` (at least [`MAX_REPLY`] bytes) and returns its
/// length; `None` when nothing should be sent back (shorter than a header, or a response).
///
/// A standard query with one question gets NOERROR with the question echoed (its case
/// kept), RA set, RD and CD copied, and for class IN one answer: an A record (192.0.2.1) for
/// type A, an AAAA record (2001:db8::1) for AAAA, nothing for other types (NODATA). A query
/// with an OPT record gets an OPT record back (payload 1232, DO copied). Other opcodes get
/// NOTIMP and malformed queries FORMERR, both header only.
pub fn answer(query: &[u8], out: &mut [u8]) -> Option<usize> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    // ID; QR, opcode and RD copied; RA; CD copied; RCODE 0 for now.
    out[..2].copy_from_slice(&query[..2]);
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = 0x80 | (query[3] & 0x10);
    out[4..12].fill(0);
    if query[2] & 0x78 != 0 {
        out[3] |= RCODE_NOTIMP;
        return Some(12);
    }
    let Some(question) = question(query) else {
        out[3] |= RCODE_FORMERR;
        return Some(12);
    };
    let mut at = 12;
    out[5] = 1;
    out[at..at + question.len()].copy_from_slice(question);
    at += question.len();
    let qtype = u16::from_be_bytes([question[question.len() - 4], question[question.len() - 3]]);
    let qclass = u16::from_be_bytes([question[question.len() - 2], question[question.len() - 1]]);
    let rdata: &[u8] = match (qtype, qclass) {
        (TYPE_A, CLASS_IN) => &A_ADDRESS,
        (TYPE_AAAA, CLASS_IN) => &AAAA_ADDRESS,
        _ => &[],
    };
    if !rdata.is_empty() {
        out[7] = 1;
        // Owner: a pointer to the question's name at offset 12.
        out[at..at + 2].copy_from_slice(&[0xc0, 12]);
        out[at + 2..at + 4].copy_from_slice(&qtype.to_be_bytes());
        out[at + 4..at + 6].copy_from_slice(&CLASS_IN.to_be_bytes());
        out[at + 6..at + 10].copy_from_slice(&TTL.to_be_bytes());
        out[at + 10..at + 12].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
        out[at + 12..at + 12 + rdata.len()].copy_from_slice(rdata);
        at += 12 + rdata.len();
    }
    if let Some(dnssec_ok) = edns(query, 12 + question.len()) {
        out[11] = 1;
        out[at] = 0;
        out[at + 1..at + 3].copy_from_slice(&TYPE_OPT.to_be_bytes());
        out[at + 3..at + 5].copy_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        // Extended RCODE 0, version 0, DO copied, Z 0, RDLENGTH 0.
        out[at + 5..at + 11].copy_from_slice(&[0, 0, u8::from(dnssec_ok) << 7, 0, 0, 0]);
        at += 11;
    }
    Some(at)
}

/// The question section of `query` (name, type, class), when it has exactly one question
/// with an uncompressed name of at most 255 bytes.
fn question(query: &[u8]) -> Option<&[u8]> {
    if query[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
        if at - 12 > 255 {
            return None;
        }
    }
    if at - 12 > 255 {
        return None;
    }
    query.get(12..at + 4)
}

/// When the record right after the question is an OPT record: its DO bit.
fn edns(query: &[u8], after_question: usize) -> Option<bool> {
    let arcount = u16::from_be_bytes([query[10], query[11]]);
    let no_answers = query[6..10] == [0, 0, 0, 0];
    let opt = query.get(after_question..after_question + 11)?;
    (arcount >= 1 && no_answers && opt[0] == 0 && opt[1..3] == TYPE_OPT.to_be_bytes())
        .then_some(opt[7] & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/`qtype` with ID 0xbeef, RD, and an OPT record when `edns` says
    /// (`Some(do_bit)`).
    fn query(name: &str, qtype: u16, edns: Option<bool>) -> Vec<u8> {
        let mut q = vec![
            0xbe,
            0xef,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some(dnssec_ok) = edns {
            q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, u8::from(dnssec_ok) << 7, 0, 0, 0]);
        }
        q
    }

    fn reply(query: &[u8]) -> Vec<u8> {
        let mut out = [0u8; MAX_REPLY];
        let len = answer(query, &mut out).expect("a reply");
        out[..len].to_vec()
    }

    #[test]
    fn a_query_gets_one_a_record_for_its_name() {
        let q = query("7.AbC.miss.test", TYPE_A, None);
        let r = reply(&q);
        assert_eq!(&r[..2], &[0xbe, 0xef], "ID");
        assert_eq!(r[2], 0x81, "QR and RD");
        assert_eq!(r[3], 0x80, "RA, NOERROR");
        assert_eq!(&r[4..12], &[0, 1, 0, 1, 0, 0, 0, 0]);
        let question_end = q.len();
        assert_eq!(
            &r[12..question_end],
            &q[12..],
            "question echoed with its case"
        );
        let rr = &r[question_end..];
        assert_eq!(&rr[..6], &[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(u32::from_be_bytes(rr[6..10].try_into().unwrap()), 300);
        assert_eq!(&rr[10..], &[0, 4, 192, 0, 2, 1]);
        // What the load generator checks.
        let sent = crate::load::build_query("7.abc.miss.test", 1, Default::default()).unwrap();
        assert!(sent.question_matches(&r));
    }

    #[test]
    fn aaaa_and_other_types() {
        let r = reply(&query("x.miss.test", TYPE_AAAA, None));
        assert_eq!(r[7], 1);
        assert_eq!(
            &r[r.len() - 18..],
            &[[0, 16].as_slice(), &AAAA_ADDRESS].concat()[..]
        );
        let mx = query("x.miss.test", 15, None);
        let r = reply(&mx);
        assert_eq!((r[3], r[7], r.len()), (0x80, 0, mx.len()), "NODATA");
    }

    #[test]
    fn edns_is_answered_with_edns_and_do_copied() {
        for dnssec_ok in [false, true] {
            let q = query("e.miss.test", TYPE_A, Some(dnssec_ok));
            let r = reply(&q);
            assert_eq!(r[11], 1, "ARCOUNT");
            let opt = &r[r.len() - 11..];
            assert_eq!(&opt[..5], &[0, 0, 41, 0x04, 0xd0]);
            assert_eq!(opt[7] & 0x80 != 0, dnssec_ok);
            assert_eq!(r.len(), q.len() + 16);
        }
    }

    #[test]
    fn responses_and_runts_get_nothing_malformed_get_formerr() {
        let mut out = [0u8; MAX_REPLY];
        let mut response = query("a.test", TYPE_A, None);
        response[2] |= 0x80;
        assert_eq!(answer(&response, &mut out), None);
        assert_eq!(answer(&[0; 11], &mut out), None);
        // Truncated question, compression pointer, two questions: FORMERR, header only.
        let q = query("a.test", TYPE_A, None);
        let mut pointer = q[..12].to_vec();
        pointer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let mut two = q.clone();
        two[5] = 2;
        for bad in [&q[..q.len() - 1], &pointer[..], &two[..]] {
            let len = answer(bad, &mut out).unwrap();
            assert_eq!((len, out[3] & 0x0f, out[5]), (12, RCODE_FORMERR, 0));
        }
        let mut notify = q.clone();
        notify[2] = 4 << 3;
        assert_eq!(answer(&notify, &mut out), Some(12));
        assert_eq!(out[3] & 0x0f, RCODE_NOTIMP);
    }

    #[test]
    fn the_longest_name_fits() {
        let long = "a".repeat(63);
        let name = [long.as_str(), &long, &long, &"a".repeat(61)].join(".");
        assert_eq!(name.len() + 2, 255, "wire length");
        let q = query(&name, TYPE_AAAA, Some(true));
        let mut out = [0u8; MAX_REPLY];
        assert_eq!(answer(&q, &mut out), Some(MAX_REPLY));
        let too_long = [name.as_str(), "b"].join(".");
        let q = query(&too_long, TYPE_A, None);
        assert_eq!(answer(&q, &mut out), Some(12));
        assert_eq!(out[3] & 0x0f, RCODE_FORMERR);
    }
}
