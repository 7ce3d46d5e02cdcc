//! Carrying cache entries to another process (a hand-off), so that an upgrade does not turn
//! into a miss storm against the upstream: each entry is written as its response bytes with
//! the remaining lifetime, and read back into the new process's cache with the same lifetime
//! left.
//!
//! Format, one entry after another, every integer big-endian:
//!
//! | field | bytes |
//! |---|---|
//! | server block zone length, zone (lowercase wire form) | 2 + n |
//! | kind (0 success, 1 denial), key flags (DO bit 0, CD bit 1) | 1 + 1 |
//! | remaining lifetime, milliseconds | 4 |
//! | keepttl (0 or 1), extended RCODE upper bits | 1 + 1 |
//! | message length, message (no OPT record, question lowercased) | 2 + n |
//!
//! The bytes come from another process, possibly of another version: never trusted, never a
//! panic. A chunk is read up to its first malformed entry; each message is parsed again on
//! import (its question and TTL fields found anew), and one that does not parse is skipped.

use shardns_wire::KeyFlags;

use super::Kind;

/// One exported entry, borrowed from a chunk (or from the cache it is exported from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransferEntry<'a> {
    /// The zone of the server block whose cache held it.
    pub(crate) zone: &'a [u8],
    pub(crate) kind: Kind,
    pub(crate) flags: KeyFlags,
    pub(crate) remaining_ms: u32,
    pub(crate) keep_ttl: bool,
    pub(crate) ext_rcode: u8,
    /// The stored message: no OPT record, question lowercased.
    pub(crate) message: &'a [u8],
}

impl TransferEntry<'_> {
    /// Appends this entry to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        put16(out, self.zone.len() as u16);
        out.extend_from_slice(self.zone);
        out.push(match self.kind {
            Kind::Success => 0,
            Kind::Denial => 1,
        });
        out.push(self.flags.bits());
        out.extend_from_slice(&self.remaining_ms.to_be_bytes());
        out.push(u8::from(self.keep_ttl));
        out.push(self.ext_rcode);
        put16(out, self.message.len() as u16);
        out.extend_from_slice(self.message);
    }
}

fn put16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Reads the entries of a chunk, stopping at the first that does not parse.
pub(crate) fn entries(chunk: &[u8]) -> Entries<'_> {
    Entries { rest: chunk }
}

/// Iterator over the entries of a chunk ([`entries`]).
#[derive(Debug)]
pub(crate) struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn entry(&mut self) -> Option<TransferEntry<'a>> {
        let zone_len = self.u16()?;
        let zone = self.take(usize::from(zone_len))?;
        let kind = match self.u8()? {
            0 => Kind::Success,
            1 => Kind::Denial,
            _ => return None,
        };
        let bits = self.u8()?;
        let flags = KeyFlags::new(bits & 1 != 0, bits & 2 != 0);
        let remaining_ms = self.u32()?;
        let keep_ttl = self.u8()? != 0;
        let ext_rcode = self.u8()?;
        let message_len = self.u16()?;
        let message = self.take(usize::from(message_len))?;
        Some(TransferEntry {
            zone,
            kind,
            flags,
            remaining_ms,
            keep_ttl,
            ext_rcode,
            message,
        })
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = TransferEntry<'a>;

    fn next(&mut self) -> Option<TransferEntry<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = self.entry();
        if entry.is_none() {
            self.rest = &[];
        }
        entry
    }
}

/// Gathers exported entries into chunks of about [`Chunks::TARGET`] bytes.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    current: Vec<u8>,
    done: Vec<Vec<u8>>,
    /// Entries written so far.
    pub(crate) entries: usize,
}

impl Chunks {
    /// A chunk is closed once it reaches this size.
    pub(crate) const TARGET: usize = 64 * 1024;

    pub(crate) fn push(&mut self, entry: &TransferEntry<'_>) {
        entry.write(&mut self.current);
        self.entries += 1;
        if self.current.len() >= Chunks::TARGET {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    /// Every chunk, the last one possibly short.
    pub(crate) fn finish(mut self) -> Vec<Vec<u8>> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}
