//! A cached response: the upstream's message in wire form (OPT removed, question
//! lowercased) plus the offsets of its TTL fields, shared between shards by reference count,
//! and the rendering that turns it into one client's reply without allocating. Also the
//! rules (after CoreDNS's `response.Typify`) for whether and how long a response is cached.

use std::sync::Arc;

use shardns_wire::build::{EDNS_PAYLOAD, append_opt, client_udp_limit, truncate};
use shardns_wire::{HEADER_LEN, Header, KeyFlags, Message, Rcode, opcode};

use crate::Protocol;
use crate::config::{CacheConfig, CacheSection};
use crate::names::in_zone;

use super::Kind;
use super::transfer::TransferEntry;

/// What a reply is rendered for: one client's query.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientView<'a> {
    pub(crate) id: u16,
    /// The query's flags word (RD, CD, AD are honoured).
    pub(crate) flags: u16,
    /// The client's qname bytes, in the client's case.
    pub(crate) qname: &'a [u8],
    /// `Some((udp payload size, DO))` when the query had an OPT record.
    pub(crate) edns: Option<(u16, bool)>,
    pub(crate) protocol: Protocol,
}

/// TTL of an answer served stale (RFC 8767 §5 recommends 30 s). CoreDNS sends 0, which makes
/// every stub ask again at once while the upstream is still down.
pub(crate) const STALE_TTL: u32 = 30;

/// A response ready to be rendered for any client asking the same question. Cloning shares
/// the bytes (one reference count), so shards can hold the same response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    /// The message (header, question with lowercased name, records; no OPT record), then the
    /// offsets of its TTL fields, 2 bytes each (native endian).
    data: Arc<[u8]>,
    msg_len: u16,
    question_end: u16,
    /// Upper bits of the upstream's extended RCODE (0 in practice).
    ext_rcode: u8,
    /// `keepttl`: fresh hits relay the stored TTLs instead of the remaining lifetime.
    keep_ttl: bool,
    /// Lifetime in seconds (0 when the response is not cached).
    ttl: u32,
    /// When it was stored, in the engine clock (nanoseconds since the group's epoch).
    stored_at: u64,
}

impl StoredResponse {
    /// Prepares an upstream response for relaying and caching. `ttl_offsets` are the TTL
    /// offsets reported while parsing `message`. With `policy`, decides whether and where the
    /// response is cached and its lifetime; unless `keepttl`, the TTLs of a cacheable response
    /// are rendered as that lifetime (on this first reply too).
    pub(crate) fn from_upstream(
        message: &Message<'_>,
        ttl_offsets: &[usize],
        policy: Option<&CacheConfig>,
        now: u64,
    ) -> (StoredResponse, Option<Kind>) {
        let raw = &message.buf[..message.records.end];
        let opt = message.edns.as_ref().map(|e| e.record.clone());
        let mut bytes = Vec::with_capacity(raw.len() + 2 * ttl_offsets.len());
        let mut offsets: Vec<u16> = Vec::with_capacity(ttl_offsets.len());
        match &opt {
            Some(range) => {
                bytes.extend_from_slice(&raw[..range.start]);
                bytes.extend_from_slice(&raw[range.end..]);
                let removed = range.len();
                offsets.extend(ttl_offsets.iter().map(|&o| {
                    if o > range.start {
                        (o - removed) as u16
                    } else {
                        o as u16
                    }
                }));
                let arcount = message.header.arcount - 1;
                bytes[10..12].copy_from_slice(&arcount.to_be_bytes());
            }
            None => {
                bytes.extend_from_slice(raw);
                offsets.extend(ttl_offsets.iter().map(|&o| o as u16));
            }
        }
        let name = HEADER_LEN..HEADER_LEN + message.question.name.len();
        bytes[name.clone()].make_ascii_lowercase();

        let decision = policy.and_then(|p| classify(message, &bytes[name], p));
        let (kind, ttl) = match decision {
            Some((kind, ttl)) if ttl > 0 => (Some(kind), ttl),
            _ => (None, 0),
        };
        let msg_len = bytes.len() as u16;
        if kind.is_some() {
            for offset in offsets {
                bytes.extend_from_slice(&offset.to_ne_bytes());
            }
        }
        let stored = StoredResponse {
            data: bytes.into(),
            msg_len,
            question_end: message.question_end as u16,
            ext_rcode: message.edns.as_ref().map_or(0, |e| e.ext_rcode),
            keep_ttl: policy.is_some_and(|p| p.keepttl),
            ttl,
            stored_at: now,
        };
        (stored, kind)
    }

    fn message(&self) -> &[u8] {
        &self.data[..self.msg_len as usize]
    }

    /// This response as a hand-off carries it ([`super::transfer`]), when it is cached and
    /// still fresh at `now`.
    pub(crate) fn exported<'a>(
        &'a self,
        now: u64,
        zone: &'a [u8],
        kind: Kind,
        flags: KeyFlags,
    ) -> Option<TransferEntry<'a>> {
        let left = self.expires_at().checked_sub(now)?;
        let remaining_ms = u32::try_from(left / 1_000_000).unwrap_or(u32::MAX);
        (self.ttl > 0 && remaining_ms > 0).then(|| TransferEntry {
            zone,
            kind,
            flags,
            remaining_ms,
            keep_ttl: self.keep_ttl,
            ext_rcode: self.ext_rcode,
            message: self.message(),
        })
    }

    /// A response carried by a hand-off, stored at `now` with the lifetime it had left
    /// (rounded up to whole seconds, the fraction taken off the start so that it expires when
    /// it would have), and the question its message holds. `None` when the message does not
    /// parse as a stored response (a question, records, no OPT).
    pub(crate) fn imported(entry: &TransferEntry<'_>, now: u64) -> Option<StoredResponse> {
        let mut offsets: Vec<u16> = Vec::new();
        let message = Message::parse_with(entry.message, |offset| {
            offsets.push(u16::try_from(offset).unwrap_or(u16::MAX));
        })
        .ok()?;
        // Served as it is (but for ID, RD/CD/AD/AA/TC and TTLs): it must be a reply to a
        // standard query, as every stored response is.
        if !message.header.qr()
            || message.header.opcode() != opcode::QUERY
            || message.edns.is_some()
            || message.records.end != entry.message.len()
            || entry.message.len() > usize::from(u16::MAX)
            || offsets
                .iter()
                .any(|&o| usize::from(o) + 4 > entry.message.len())
        {
            return None;
        }
        let name = HEADER_LEN..HEADER_LEN + message.question.name.len();
        if entry.message[name].iter().any(u8::is_ascii_uppercase) {
            return None;
        }
        let ttl = entry.remaining_ms.div_ceil(1000);
        let early = (u64::from(ttl) * 1000 - u64::from(entry.remaining_ms)) * 1_000_000;
        let mut data = Vec::with_capacity(entry.message.len() + 2 * offsets.len());
        data.extend_from_slice(entry.message);
        for offset in offsets {
            data.extend_from_slice(&offset.to_ne_bytes());
        }
        Some(StoredResponse {
            data: data.into(),
            msg_len: entry.message.len() as u16,
            question_end: message.question_end as u16,
            ext_rcode: entry.ext_rcode,
            keep_ttl: entry.keep_ttl,
            ttl,
            stored_at: now.saturating_sub(early),
        })
    }

    fn ttl_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        self.data[self.msg_len as usize..]
            .chunks_exact(2)
            .map(|pair| u16::from_ne_bytes([pair[0], pair[1]]) as usize)
    }

    /// The lowercased question name.
    pub(crate) fn qname(&self) -> &[u8] {
        &self.data[HEADER_LEN..self.question_end as usize - 4]
    }

    /// The question's type and class.
    pub(crate) fn qtype_qclass(&self) -> (u16, u16) {
        let end = self.question_end as usize;
        let at = |i: usize| u16::from_be_bytes([self.data[i], self.data[i + 1]]);
        (at(end - 4), at(end - 2))
    }

    /// The lifetime given to every TTL (0 when the response is not cached).
    pub(crate) fn ttl(&self) -> u32 {
        self.ttl
    }

    /// When the response was stored (engine clock, nanoseconds).
    pub(crate) fn stored_at(&self) -> u64 {
        self.stored_at
    }

    /// When it stops being fresh (engine clock, nanoseconds).
    pub(crate) fn expires_at(&self) -> u64 {
        self.stored_at
            .saturating_add(u64::from(self.ttl) * 1_000_000_000)
    }

    /// Seconds of life left at `now` (engine clock, nanoseconds); 0 once expired. Whole
    /// seconds elapsed are subtracted, so a fresh entry is served with TTL N..1, never 0.
    pub(crate) fn remaining(&self, now: u64) -> u32 {
        let elapsed = now.saturating_sub(self.stored_at) / 1_000_000_000;
        (self.ttl as u64).saturating_sub(elapsed) as u32
    }

    /// The response code (the upper extended bits included).
    pub(crate) fn rcode(&self) -> Rcode {
        Rcode::from_parts(self.data[3] & 0x0f, self.ext_rcode)
    }

    /// Whether the upstream set TC.
    pub(crate) fn truncated(&self) -> bool {
        u16::from_be_bytes([self.data[2], self.data[3]]) & Header::TC != 0
    }

    /// Whether this is a real answer (not truncated, NOERROR or NXDOMAIN): what may replace or
    /// be preferred to a stale entry (RFC 8767; CoreDNS `verify`).
    pub(crate) fn is_answer(&self) -> bool {
        !self.truncated() && matches!(self.rcode(), Rcode::NOERROR | Rcode::NXDOMAIN)
    }

    /// The TTL a fresh reply carries at `now`: the remaining lifetime, or `None` to relay the
    /// stored TTLs (uncached responses and `keepttl`).
    pub(crate) fn fresh_ttl(&self, now: u64) -> Option<u32> {
        self.fresh_ttl_of(self.remaining(now))
    }

    /// [`StoredResponse::fresh_ttl`] given the remaining lifetime already computed.
    pub(crate) fn fresh_ttl_of(&self, remaining: u32) -> Option<u32> {
        (self.ttl > 0 && !self.keep_ttl).then_some(remaining)
    }

    /// The TTL a stale reply carries.
    pub(crate) fn stale_ttl(&self) -> Option<u32> {
        (self.ttl > 0).then_some(STALE_TTL)
    }

    /// Writes the reply for `client` into `out` (at least [`crate::MAX_MESSAGE`] bytes) with
    /// every TTL set to `ttl` (`None`: as stored) and returns its length. No allocation.
    pub(crate) fn render(
        &self,
        ttl: Option<u32>,
        client: &ClientView<'_>,
        authoritative: bool,
        out: &mut [u8],
    ) -> usize {
        let message = self.message();
        let mut len = message.len();
        out[..len].copy_from_slice(message);
        out[0..2].copy_from_slice(&client.id.to_be_bytes());
        let stored_flags = u16::from_be_bytes([message[2], message[3]]);
        let mut flags = stored_flags & !(Header::RD | Header::CD | Header::AD | Header::TC);
        flags |= client.flags & (Header::RD | Header::CD);
        let wants_ad =
            client.flags & Header::AD != 0 || client.edns.is_some_and(|(_, dnssec_ok)| dnssec_ok);
        if wants_ad {
            flags |= stored_flags & Header::AD;
        }
        if authoritative {
            flags |= Header::AA;
        }
        flags |= stored_flags & Header::TC;
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + client.qname.len()].copy_from_slice(client.qname);
        if let Some(ttl) = ttl {
            let ttl = ttl.to_be_bytes();
            for at in self.ttl_offsets() {
                out[at..at + 4].copy_from_slice(&ttl);
            }
        }
        let opt_len = if client.edns.is_some() {
            shardns_wire::build::OPT_LEN
        } else {
            0
        };
        if client.protocol == Protocol::Udp {
            let limit = client_udp_limit(client.edns.map(|(payload, _)| payload)) - opt_len;
            len = truncate(out, len, self.question_end as usize, limit);
        }
        if let Some((_, dnssec_ok)) = client.edns {
            len = append_opt(out, len, EDNS_PAYLOAD, self.ext_rcode, dnssec_ok);
        }
        len
    }
}

/// Where a response belongs and for how long (seconds), following CoreDNS's
/// `response.Typify`: positive answers and referrals in the success cache; NXDOMAIN and NODATA
/// with an SOA in the denial cache for their clamped TTL; SERVFAIL and NOTIMP in the denial
/// cache for `servfail`. `None`: not cached (REFUSED, FORMERR, NOTAUTH and other RCODEs,
/// NXDOMAIN without SOA or with answers, truncated replies, extended RCODEs, and whatever
/// `disable` names). `qname` is the lowercased question name.
fn classify(message: &Message<'_>, qname: &[u8], policy: &CacheConfig) -> Option<(Kind, u32)> {
    let header = &message.header;
    if header.tc() || message.edns.as_ref().is_some_and(|e| e.ext_rcode != 0) {
        return None;
    }
    let min_ttl = message.records.min_ttl;
    let (kind, ttl) = match header.rcode() {
        Rcode::NOERROR if header.ancount == 0 && message.records.soa_in_authority => {
            (Kind::Denial, clamp_ttl(min_ttl, policy.denial))
        }
        Rcode::NOERROR => (Kind::Success, clamp_ttl(min_ttl, policy.success)),
        Rcode::NXDOMAIN if header.ancount == 0 && message.records.soa_in_authority => {
            (Kind::Denial, clamp_ttl(min_ttl, policy.denial))
        }
        Rcode::SERVFAIL | Rcode::NOTIMP => (Kind::Denial, policy.servfail_ttl),
        _ => return None,
    };
    let disabled = match kind {
        Kind::Success => &policy.disable_success,
        Kind::Denial => &policy.disable_denial,
    };
    if disabled.iter().any(|zone| in_zone(qname, zone)) {
        return None;
    }
    Some((kind, ttl))
}

/// CoreDNS's clamp: the minimum RR TTL (MINTTL when there are no RRs), raised to MINTTL, then
/// capped at MAXTTL (the cap wins when MINTTL > MAXTTL).
fn clamp_ttl(min_ttl: Option<u32>, section: CacheSection) -> u32 {
    min_ttl
        .unwrap_or(section.min_ttl)
        .max(section.min_ttl)
        .min(section.max_ttl)
}
