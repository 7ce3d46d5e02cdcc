//! Builders: error replies, EDNS OPT records, truncation, upstream queries. All write into a
//! caller-provided buffer and return the number of bytes written; callers size buffers with
//! [`MAX_REPLY_OVERHEAD`] in mind.

use crate::{HEADER_LEN, Header, Message, Question, Rcode, opcode, rtype};

/// The UDP payload size shardns advertises (the DNS Flag Day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Bytes of an OPT record with no options.
pub const OPT_LEN: usize = 11;
/// Largest error reply: header, a 255-octet name, type/class, an OPT record.
pub const MAX_REPLY_OVERHEAD: usize = HEADER_LEN + 255 + 4 + OPT_LEN;
/// Bytes an Extended DNS Error option without EXTRA-TEXT adds to an OPT record (RFC 8914).
pub const EDE_LEN: usize = 6;
/// The EDNS option code of an Extended DNS Error (RFC 8914 §2).
pub const EDE_OPTION: u16 = 15;

/// Extended DNS Error INFO-CODEs (RFC 8914 §4) shardns sends.
pub mod ede {
    /// "Blocked": the server's policy blocks the name (CoreDNS's `acl` `block`).
    pub const BLOCKED: u16 = 15;
    /// "Filtered": the answer was removed by request of the client's operator (CoreDNS's
    /// `acl` `filter`).
    pub const FILTERED: u16 = 17;
}

/// Flags of a reply to a query with `query_flags`: QR and RA set; opcode, RD and CD copied.
fn reply_flags(query_flags: u16, rcode: Rcode) -> u16 {
    let kept = query_flags & (0x7800 | Header::RD | Header::CD);
    kept | Header::QR | Header::RA | rcode.header_bits()
}

/// An error reply to a query whose header parsed but whose question did not (FORMERR): the
/// header alone, counts zero (RFC 1035 §4.1.1). `out` must hold 12 bytes; returns `None` if
/// `query` has no full header (then there is no one to answer: drop).
pub fn header_only_reply(query: &[u8], rcode: Rcode, out: &mut [u8]) -> Option<usize> {
    let header = Header::parse(query).ok()?;
    Header {
        id: header.id,
        flags: reply_flags(header.flags, rcode),
        qdcount: 0,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
    .write(out);
    Some(HEADER_LEN)
}

/// An error reply carrying the query's question and, when the query had EDNS, an OPT record
/// (RFC 6891 §6.1.1: BADVERS and other extended codes use its upper bits). `rcode` may be an
/// extended code (e.g. BADVERS = 16). `out` needs [`MAX_REPLY_OVERHEAD`] bytes.
pub fn error_reply(query: &Message<'_>, rcode: Rcode, out: &mut [u8]) -> usize {
    let edns = query.edns.as_ref().map(|e| e.dnssec_ok);
    reply_with_question(
        query.header.id,
        query.header.flags,
        &query.question,
        rcode,
        edns,
        out,
    )
}

/// As [`error_reply`], and when the query had EDNS the reply's OPT record carries an Extended
/// DNS Error with `info_code` and no text (RFC 8914; without EDNS there is nowhere to put it).
/// `out` needs [`MAX_REPLY_OVERHEAD`] + [`EDE_LEN`] bytes.
pub fn ede_reply(query: &Message<'_>, rcode: Rcode, info_code: u16, out: &mut [u8]) -> usize {
    let len = error_reply(query, rcode, out);
    if query.edns.is_none() {
        return len;
    }
    // The OPT record is the last one written: its RDLENGTH is the last two bytes.
    out[len - 2..len].copy_from_slice(&(EDE_LEN as u16).to_be_bytes());
    out[len..len + 2].copy_from_slice(&EDE_OPTION.to_be_bytes());
    out[len + 2..len + 4].copy_from_slice(&2u16.to_be_bytes());
    out[len + 4..len + 6].copy_from_slice(&info_code.to_be_bytes());
    len + EDE_LEN
}

/// An error reply built from its parts: the client's ID and flags, the question, and
/// `edns` = Some(DO) when an OPT record must be included (it carries the upper bits of an
/// extended `rcode`).
pub fn reply_with_question(
    id: u16,
    query_flags: u16,
    question: &Question<'_>,
    rcode: Rcode,
    edns: Option<bool>,
    out: &mut [u8],
) -> usize {
    let mut len = write_question_message(id, reply_flags(query_flags, rcode), question, out);
    if let Some(dnssec_ok) = edns {
        len = append_opt(out, len, EDNS_PAYLOAD, rcode.extended_bits(), dnssec_ok);
    }
    len
}

fn write_question_message(id: u16, flags: u16, question: &Question<'_>, out: &mut [u8]) -> usize {
    Header {
        id,
        flags,
        qdcount: 1,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
    .write(out);
    let mut len = HEADER_LEN;
    out[len..len + question.name.len()].copy_from_slice(question.name);
    len += question.name.len();
    out[len..len + 2].copy_from_slice(&question.qtype.to_be_bytes());
    out[len + 2..len + 4].copy_from_slice(&question.qclass.to_be_bytes());
    len + 4
}

/// Appends an OPT record with no options at `out[len..]` and increments ARCOUNT. Returns the
/// new length. `out` must have [`OPT_LEN`] bytes free.
pub fn append_opt(
    out: &mut [u8],
    len: usize,
    payload: u16,
    ext_rcode: u8,
    dnssec_ok: bool,
) -> usize {
    let opt = &mut out[len..len + OPT_LEN];
    opt[0] = 0; // root owner
    opt[1..3].copy_from_slice(&rtype::OPT.to_be_bytes());
    opt[3..5].copy_from_slice(&payload.to_be_bytes());
    opt[5] = ext_rcode;
    opt[6] = 0; // version
    opt[7] = if dnssec_ok { 0x80 } else { 0 };
    opt[8] = 0;
    opt[9..11].copy_from_slice(&[0, 0]); // RDLENGTH
    let arcount = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
    out[10..12].copy_from_slice(&arcount.to_be_bytes());
    len + OPT_LEN
}

/// Cuts a response that exceeds `max` to its header and question, sets TC and zeroes the
/// record counts (RFC 1035 §4.2.1, RFC 7766 §8). Returns the new length (unchanged when it
/// fits). The caller re-appends an OPT record for EDNS clients.
pub fn truncate(out: &mut [u8], len: usize, question_end: usize, max: usize) -> usize {
    if len <= max {
        return len;
    }
    let flags = u16::from_be_bytes([out[2], out[3]]) | Header::TC;
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[6..12].fill(0);
    question_end
}

/// The largest UDP reply a client accepts: 512 without EDNS, else its advertised size
/// (RFC 6891 §6.2.5: values below 512 are treated as 512).
pub fn client_udp_limit(edns_payload: Option<u16>) -> usize {
    edns_payload.map_or(512, |p| p.max(512) as usize)
}

/// A query to an upstream: a fresh `id`, the client's RD/CD/AD bits, the question as the
/// client sent it, and an OPT record advertising [`EDNS_PAYLOAD`] with the client's DO bit.
/// The client's other EDNS options (cookies, ECS, padding) are not forwarded.
pub fn upstream_query(
    id: u16,
    client_flags: u16,
    question: &Question<'_>,
    dnssec_ok: bool,
    out: &mut [u8],
) -> usize {
    let flags =
        (opcode::QUERY as u16) << 11 | client_flags & (Header::RD | Header::CD | Header::AD);
    let len = write_question_message(id, flags, question, out);
    append_opt(out, len, EDNS_PAYLOAD, 0, dnssec_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(with_edns: bool) -> Vec<u8> {
        let q = Question {
            name: b"\x03www\x07example\x00",
            qtype: 1,
            qclass: 1,
        };
        let mut buf = [0u8; 512];
        let mut len = write_question_message(0xbeef, Header::RD, &q, &mut buf);
        if with_edns {
            len = append_opt(&mut buf, len, 4096, 0, true);
        }
        buf[..len].to_vec()
    }

    #[test]
    fn error_reply_mirrors_question_and_opt() {
        let raw = query(true);
        let msg = Message::parse(&raw).unwrap();
        let mut out = [0u8; MAX_REPLY_OVERHEAD];
        let len = error_reply(&msg, Rcode::BADVERS, &mut out);
        let reply = Message::parse(&out[..len]).unwrap();
        assert_eq!(reply.header.id, 0xbeef);
        assert!(reply.header.qr() && reply.header.rd());
        assert_eq!(reply.rcode(), Rcode::BADVERS);
        assert_eq!(reply.question, msg.question);
        assert!(reply.dnssec_ok());
        assert_eq!(reply.edns.unwrap().payload_size, EDNS_PAYLOAD);
    }

    #[test]
    fn error_reply_without_edns_has_no_opt() {
        let raw = query(false);
        let msg = Message::parse(&raw).unwrap();
        let mut out = [0u8; MAX_REPLY_OVERHEAD];
        let len = error_reply(&msg, Rcode::SERVFAIL, &mut out);
        let reply = Message::parse(&out[..len]).unwrap();
        assert_eq!(reply.rcode(), Rcode::SERVFAIL);
        assert!(reply.edns.is_none());
        assert_eq!(reply.header.arcount, 0);
    }

    #[test]
    fn ede_reply_carries_the_info_code_in_the_opt_record() {
        let raw = query(true);
        let msg = Message::parse(&raw).unwrap();
        let mut out = [0u8; MAX_REPLY_OVERHEAD + EDE_LEN];
        let len = ede_reply(&msg, Rcode::REFUSED, ede::BLOCKED, &mut out);
        let reply = Message::parse(&out[..len]).unwrap();
        assert_eq!(reply.rcode(), Rcode::REFUSED);
        assert_eq!(reply.question, msg.question);
        assert!(reply.dnssec_ok(), "DO mirrored");
        assert_eq!(reply.edns.as_ref().unwrap().options.len(), EDE_LEN);
        // OPT: owner, type, payload, ext-rcode, version, flags, RDLENGTH 6, then the option.
        assert_eq!(
            &out[len - EDE_LEN - 2..len],
            &[0, 6, 0, 15, 0, 2, 0, 15],
            "RDLENGTH, option code 15, length 2, INFO-CODE 15"
        );
        let plain = query(false);
        let msg = Message::parse(&plain).unwrap();
        let len = ede_reply(&msg, Rcode::NOERROR, ede::FILTERED, &mut out);
        let reply = Message::parse(&out[..len]).unwrap();
        assert!(reply.edns.is_none(), "no OPT for a client without EDNS");
        assert_eq!((reply.rcode(), reply.header.arcount), (Rcode::NOERROR, 0));
    }

    #[test]
    fn header_only_reply_needs_a_header() {
        let mut out = [0u8; 12];
        assert_eq!(
            header_only_reply(&[1, 2, 3], Rcode::FORMERR, &mut out),
            None
        );
        let raw = query(false);
        assert_eq!(header_only_reply(&raw, Rcode::FORMERR, &mut out), Some(12));
        let h = Header::parse(&out).unwrap();
        assert_eq!(
            (h.id, h.rcode(), h.qdcount, h.qr()),
            (0xbeef, Rcode::FORMERR, 0, true)
        );
    }

    #[test]
    fn truncate_keeps_question_and_sets_tc() {
        let mut raw = query(true);
        let msg = Message::parse(&raw).unwrap();
        let question_end = msg.question_end;
        let len = raw.len();
        assert_eq!(truncate(&mut raw, len, question_end, 4096), len);
        let cut = truncate(&mut raw, len, question_end, 20);
        let reply = Message::parse(&raw[..cut]).unwrap();
        assert!(reply.header.tc());
        assert_eq!(reply.header.arcount, 0);
        assert_eq!(client_udp_limit(None), 512);
        assert_eq!(client_udp_limit(Some(100)), 512);
        assert_eq!(client_udp_limit(Some(1232)), 1232);
    }

    #[test]
    fn upstream_query_has_fresh_id_and_opt() {
        let raw = query(false);
        let msg = Message::parse(&raw).unwrap();
        let mut out = [0u8; MAX_REPLY_OVERHEAD];
        let len = upstream_query(7, msg.header.flags, &msg.question, true, &mut out);
        let up = Message::parse(&out[..len]).unwrap();
        assert_eq!(up.header.id, 7);
        assert!(up.header.rd() && !up.header.qr());
        assert!(up.dnssec_ok());
        assert_eq!(up.question, msg.question);
    }
}
