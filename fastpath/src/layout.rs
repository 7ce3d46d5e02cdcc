//! The two maps' entries as bytes, laid out as `struct fp_key` and `struct fp_value` in
//! `bpf/fastpath.bpf.c`: the key (lower-cased wire qname, qtype, the query's bits) and the
//! prebuilt answer (expiry, lifetime, flags, counts, TTL offsets, the bytes after the
//! question).

use shardns_wire::Message;

use crate::Error;

/// Bytes of the qname field of a key: the longest wire name (255) and one byte of padding.
pub const KEY_QNAME_LEN: usize = 256;
/// Bytes of a key: qname, qtype (2), flags (1), server block (1).
pub const KEY_LEN: usize = KEY_QNAME_LEN + 4;
/// Most bytes after the question an answer may have (the data field of a value).
pub const MAX_ANSWER_DATA: usize = 1024;
/// Most TTL fields an answer may have (its records, OPT aside).
pub const MAX_TTLS: usize = 32;
/// Bytes before the data in a value: expiry (8), stored at (8), lifetime (4), hit counter
/// slot (4), length (2), flags (2), counts (6), TTL count (1), padding (5), TTL offsets (2
/// each).
pub const VALUE_HEADER_LEN: usize = 40 + 2 * MAX_TTLS;
/// Where a value holds its hit counter slot (native endian), which the loader writes.
pub(crate) const VALUE_SLOT: std::ops::Range<usize> = 20..24;
/// Entries the answers map holds (`FP_MAX_ENTRIES` in the C source).
pub const MAX_ENTRIES: u32 = 8192;
/// Bytes of a value.
pub const VALUE_LEN: usize = VALUE_HEADER_LEN + MAX_ANSWER_DATA;

const FLAG_RD: u16 = 0x0100;
const FLAG_CD: u16 = 0x0010;

/// The bits of a query beside its question that choose the answer, as the BPF program reads
/// them: whether it has an OPT record, its DO bit, and the header's CD and AD bits. The
/// socket path's answer differs along each (an OPT record mirrored, RRSIGs, AD), so each
/// combination is an entry of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct QueryBits {
    /// The query has an OPT record (EDNS): the answer ends with shardns's OPT record.
    pub edns: bool,
    /// The OPT record's DO bit.
    pub dnssec_ok: bool,
    /// The header's CD bit.
    pub checking_disabled: bool,
    /// The header's AD bit.
    pub authentic_data: bool,
}

impl QueryBits {
    fn byte(self) -> u8 {
        u8::from(self.edns)
            | (u8::from(self.dnssec_ok) << 1)
            | (u8::from(self.checking_disabled) << 2)
            | (u8::from(self.authentic_data) << 3)
    }
}

/// A key of the answers map: a server block, a question and the query's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnswerKey([u8; KEY_LEN]);

impl AnswerKey {
    /// The key of `qname` (uncompressed wire form, any case), `qtype` and `bits` in server
    /// block `block` (the number [`crate::Fastpath::serve`] gave its addresses). Errors on a
    /// name that is not a well-formed uncompressed wire name of at most 255 bytes.
    pub fn new(block: u8, qname: &[u8], qtype: u16, bits: QueryBits) -> Result<AnswerKey, Error> {
        let len = wire_name_len(qname)?;
        if len != qname.len() {
            return Err(Error::Layout(format!(
                "{} bytes after the name's root label",
                qname.len() - len
            )));
        }
        let mut key = [0u8; KEY_LEN];
        for (slot, byte) in key.iter_mut().zip(qname) {
            *slot = byte.to_ascii_lowercase();
        }
        key[KEY_QNAME_LEN..KEY_QNAME_LEN + 2].copy_from_slice(&qtype.to_be_bytes());
        key[KEY_QNAME_LEN + 2] = bits.byte();
        key[KEY_QNAME_LEN + 3] = block;
        Ok(AnswerKey(key))
    }

    /// The bytes the map holds.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The question name, lowercase, uncompressed wire form.
    pub fn qname(&self) -> &[u8] {
        // Well formed by construction ([`AnswerKey::new`]).
        let len = wire_name_len(&self.0[..KEY_QNAME_LEN]).unwrap_or(KEY_QNAME_LEN);
        &self.0[..len]
    }

    /// The question type.
    pub fn qtype(&self) -> u16 {
        u16::from_be_bytes([self.0[KEY_QNAME_LEN], self.0[KEY_QNAME_LEN + 1]])
    }

    /// The query bits.
    pub fn bits(&self) -> QueryBits {
        let byte = self.0[KEY_QNAME_LEN + 2];
        QueryBits {
            edns: byte & 1 != 0,
            dnssec_ok: byte & 2 != 0,
            checking_disabled: byte & 4 != 0,
            authentic_data: byte & 8 != 0,
        }
    }
}

/// How long an answer lives and what its TTLs say, on the boot clock ([`boot_time_ns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// When the answer was stored (CLOCK_BOOTTIME, nanoseconds).
    pub stored_ns: u64,
    /// Its lifetime in seconds: it passes to the socket path from `stored_ns` + `ttl` s on.
    pub ttl: u32,
    /// Send the TTLs as stored (`keepttl`) instead of the remaining lifetime.
    pub keep_ttls: bool,
}

impl Lifetime {
    /// A lifetime of `ttl` seconds from now, TTLs decaying.
    pub fn from_now(ttl: u32) -> Result<Lifetime, Error> {
        Ok(Lifetime {
            stored_ns: boot_time_ns()?,
            ttl,
            keep_ttls: false,
        })
    }

    fn expires_ns(&self) -> u64 {
        self.stored_ns
            .saturating_add(u64::from(self.ttl) * 1_000_000_000)
    }
}

/// A prebuilt answer: what the BPF program writes over a query that hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer(Box<[u8; VALUE_LEN]>);

impl Answer {
    /// The answer to send in place of `response`, the reply the socket path gives to a query
    /// with the same key (any ID; the question as asked, an OPT record at the end for an
    /// EDNS key), for `lifetime`. The BPF program keeps the client's ID, question and RD/CD
    /// bits, writes the response's other flags, its counts and its bytes after the question,
    /// and, unless `keep_ttls`, sets every TTL (OPT aside) to the lifetime left, as the
    /// socket path renders a fresh hit: `ttl` less the whole seconds since `stored_ns`.
    pub fn new(response: &[u8], lifetime: Lifetime) -> Result<Answer, Error> {
        let mut ttl_offsets = Vec::new();
        let message = Message::parse_with(response, |at| ttl_offsets.push(at))
            .map_err(|error| Error::Layout(format!("response: {error}")))?;
        let question_end = message.question_end;
        let data = &response[question_end..message.records.end];
        if data.len() > MAX_ANSWER_DATA {
            return Err(Error::Layout(format!(
                "{} bytes after the question, more than {MAX_ANSWER_DATA}",
                data.len()
            )));
        }
        if ttl_offsets.len() > MAX_TTLS {
            return Err(Error::Layout(format!(
                "{} records, more than {MAX_TTLS}",
                ttl_offsets.len()
            )));
        }
        let flags = u16::from_be_bytes([response[2], response[3]]) & !(FLAG_RD | FLAG_CD);
        let mut value = Box::new([0u8; VALUE_LEN]);
        value[0..8].copy_from_slice(&lifetime.expires_ns().to_ne_bytes());
        value[8..16].copy_from_slice(&lifetime.stored_ns.to_ne_bytes());
        value[16..20].copy_from_slice(&lifetime.ttl.to_ne_bytes());
        value[24..26].copy_from_slice(&(data.len() as u16).to_ne_bytes());
        value[26..28].copy_from_slice(&flags.to_be_bytes());
        value[28..34].copy_from_slice(&response[6..12]);
        if !lifetime.keep_ttls {
            value[34] = ttl_offsets.len() as u8;
            for (slot, at) in value[40..VALUE_HEADER_LEN]
                .chunks_exact_mut(2)
                .zip(&ttl_offsets)
            {
                slot.copy_from_slice(&((at - question_end) as u16).to_ne_bytes());
            }
        }
        value[VALUE_HEADER_LEN..VALUE_HEADER_LEN + data.len()].copy_from_slice(data);
        Ok(Answer(value))
    }

    /// The bytes the map holds.
    pub fn bytes(&self) -> &[u8; VALUE_LEN] {
        &self.0
    }
}

/// Now on the clock the BPF program reads (`bpf_ktime_get_boot_ns`): CLOCK_BOOTTIME.
pub fn boot_time_ns() -> Result<u64, Error> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map_err(|errno| Error::Clock(errno.into()))?;
    let ns = i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec());
    Ok(u64::try_from(ns).unwrap_or(0))
}

/// The length of the uncompressed wire name at the start of `bytes`, root label included.
fn wire_name_len(bytes: &[u8]) -> Result<usize, Error> {
    let mut at = 0;
    loop {
        let Some(&label) = bytes.get(at) else {
            return Err(Error::Layout("name without its root label".into()));
        };
        if label > 63 {
            return Err(Error::Layout(format!(
                "label length byte {label:#04x} (compressed or extended)"
            )));
        }
        at += 1 + usize::from(label);
        if at > 255 {
            return Err(Error::Layout("name longer than 255 bytes".into()));
        }
        if label == 0 {
            return Ok(at);
        }
    }
}

#[cfg(test)]
mod tests;
