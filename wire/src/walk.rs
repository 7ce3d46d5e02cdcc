//! A walk over the resource records after the question: answer, authority, additional.

use std::ops::Range;

use crate::{Header, ParseError, rtype, skip_name};

/// The message section a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// One resource record, as offsets into the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub section: Section,
    /// Offset of the owner name (possibly a compression pointer).
    pub name_start: usize,
    pub rtype: u16,
    pub rclass: u16,
    pub ttl: u32,
    /// Offset of the 4-byte TTL field, for rewriting it in place.
    pub ttl_offset: usize,
    pub rdata: Range<usize>,
}

impl Record {
    /// The whole record, owner name through RDATA.
    pub fn span(&self) -> Range<usize> {
        self.name_start..self.rdata.end
    }
}

/// Iterates the records of a message, validating every owner name and length. After the
/// first error it yields nothing more.
#[derive(Debug, Clone)]
pub struct RecordWalk<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: [u16; 3],
    section: usize,
    failed: bool,
}

impl<'a> RecordWalk<'a> {
    /// Starts a walk at `pos` (just past the question) with the counts from `header`.
    pub fn new(buf: &'a [u8], pos: usize, header: &Header) -> Self {
        RecordWalk {
            buf,
            pos,
            remaining: [header.ancount, header.nscount, header.arcount],
            section: 0,
            failed: false,
        }
    }

    /// Offset just past the last record read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn read(&mut self) -> Result<Record, ParseError> {
        let section = match self.section {
            0 => Section::Answer,
            1 => Section::Authority,
            _ => Section::Additional,
        };
        let buf = self.buf;
        let name_start = self.pos;
        let fixed = skip_name(buf, name_start)?;
        let field = buf.get(fixed..fixed + 10).ok_or(ParseError::Truncated)?;
        let rdlength = u16::from_be_bytes([field[8], field[9]]) as usize;
        let rdata = fixed + 10..fixed + 10 + rdlength;
        if rdata.end > buf.len() {
            return Err(ParseError::Truncated);
        }
        self.pos = rdata.end;
        Ok(Record {
            section,
            name_start,
            rtype: u16::from_be_bytes([field[0], field[1]]),
            rclass: u16::from_be_bytes([field[2], field[3]]),
            ttl: u32::from_be_bytes([field[4], field[5], field[6], field[7]]),
            ttl_offset: fixed + 4,
            rdata,
        })
    }
}

impl Iterator for RecordWalk<'_> {
    type Item = Result<Record, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        while self.section < 3 && self.remaining[self.section] == 0 {
            self.section += 1;
        }
        if self.section == 3 {
            return None;
        }
        self.remaining[self.section] -= 1;
        let record = self.read();
        self.failed = record.is_err();
        Some(record)
    }
}

/// What a cache needs to know about a response, gathered in one walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkSummary {
    /// Minimum TTL over all records except OPT; `None` when there are none.
    pub min_ttl: Option<u32>,
    /// Number of records whose TTL was reported (all but OPT).
    pub ttl_count: usize,
    /// Whether the authority section holds an SOA record (negative answers).
    pub soa_in_authority: bool,
    /// The OPT record's byte range, if any.
    pub opt: Option<Range<usize>>,
    /// Offset just past the last record.
    pub end: usize,
}

impl WalkSummary {
    /// Walks every record after the question, calling `on_ttl` with the offset of each TTL
    /// field (OPT excluded), and summarises. No allocation.
    pub fn collect(
        buf: &[u8],
        start: usize,
        header: &Header,
        mut on_ttl: impl FnMut(usize),
    ) -> Result<WalkSummary, ParseError> {
        let mut summary = WalkSummary::default();
        let mut walk = RecordWalk::new(buf, start, header);
        for record in walk.by_ref() {
            let record = record?;
            if record.rtype == rtype::OPT {
                if summary.opt.is_some()
                    || record.section != Section::Additional
                    || buf[record.name_start] != 0
                {
                    return Err(ParseError::BadOpt);
                }
                summary.opt = Some(record.span());
                continue;
            }
            if record.section == Section::Authority && record.rtype == rtype::SOA {
                summary.soa_in_authority = true;
            }
            summary.min_ttl = Some(summary.min_ttl.map_or(record.ttl, |m| m.min(record.ttl)));
            summary.ttl_count += 1;
            on_ttl(record.ttl_offset);
        }
        summary.end = walk.position();
        Ok(summary)
    }
}
