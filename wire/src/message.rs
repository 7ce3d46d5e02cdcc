//! A zero-copy view over a message with exactly one question: a query from a client or a
//! response from an upstream.

use std::ops::Range;

use crate::{HEADER_LEN, Header, ParseError, Rcode, WalkSummary, question_name_len};

/// The single question, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question<'a> {
    /// The name in uncompressed wire form, as sent (case preserved).
    pub name: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
}

/// The EDNS(0) OPT pseudo-record (RFC 6891).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size (the CLASS field).
    pub payload_size: u16,
    /// Upper 8 bits of the extended RCODE.
    pub ext_rcode: u8,
    pub version: u8,
    /// The DNSSEC OK bit.
    pub dnssec_ok: bool,
    /// Byte range of the options (the RDATA).
    pub options: Range<usize>,
    /// Byte range of the whole OPT record.
    pub record: Range<usize>,
}

/// A parsed message: header, question and OPT, with offsets into the original bytes.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub buf: &'a [u8],
    pub header: Header,
    pub question: Question<'a>,
    /// Offset just past the question: where the record sections start.
    pub question_end: usize,
    pub edns: Option<Edns>,
    /// Summary of the records (minimum TTL, SOA presence, OPT range, end offset).
    pub records: WalkSummary,
}

impl<'a> Message<'a> {
    /// Parses `buf`, which must hold exactly one question. Every record is walked and
    /// validated (names, lengths, compression pointers); bytes after the last counted record
    /// are ignored, as most implementations do.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Self::parse_with(buf, |_| {})
    }

    /// As [`Message::parse`], also reporting the offset of every TTL field (OPT excluded).
    pub fn parse_with(buf: &'a [u8], on_ttl: impl FnMut(usize)) -> Result<Message<'a>, ParseError> {
        let header = Header::parse(buf)?;
        if header.qdcount != 1 {
            return Err(ParseError::QuestionCount);
        }
        let name_len = question_name_len(buf, HEADER_LEN)?;
        let fixed = HEADER_LEN + name_len;
        let field = buf.get(fixed..fixed + 4).ok_or(ParseError::Truncated)?;
        let question = Question {
            name: &buf[HEADER_LEN..fixed],
            qtype: u16::from_be_bytes([field[0], field[1]]),
            qclass: u16::from_be_bytes([field[2], field[3]]),
        };
        let question_end = fixed + 4;
        let records = if header.ancount == 0 && header.nscount == 0 && header.arcount == 0 {
            // A query without EDNS: nothing to walk.
            WalkSummary {
                end: question_end,
                ..WalkSummary::default()
            }
        } else {
            WalkSummary::collect(buf, question_end, &header, on_ttl)?
        };
        let edns = records.opt.clone().map(|record| {
            // The walk checked the record's bounds: owner is the root (1 byte), then
            // TYPE(2) CLASS(2) TTL(4) RDLENGTH(2) RDATA.
            let at = record.start + 1;
            let ttl = &buf[at + 4..at + 8];
            Edns {
                payload_size: u16::from_be_bytes([buf[at + 2], buf[at + 3]]),
                ext_rcode: ttl[0],
                version: ttl[1],
                dnssec_ok: ttl[2] & 0x80 != 0,
                options: at + 10..record.end,
                record,
            }
        });
        Ok(Message {
            buf,
            header,
            question,
            question_end,
            edns,
            records,
        })
    }

    /// The full response code: the header's 4 bits plus the OPT record's upper 8 bits.
    pub fn rcode(&self) -> Rcode {
        let upper = self.edns.as_ref().map_or(0, |e| e.ext_rcode);
        Rcode::from_parts((self.header.flags & 0xf) as u8, upper)
    }

    /// Whether the DO bit is set.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.as_ref().is_some_and(|e| e.dnssec_ok)
    }
}
