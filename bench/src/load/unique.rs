//! `--unique`: every query asks a name never asked before in the run, so a caching server
//! misses every time.
//!
//! The names are `<n>.<prefix>.<zone>` (`17.k3x9q0ab.miss.test`): `<prefix>` is a random
//! label drawn once per run (a cache that outlives the run misses in the next run too), and
//! `n` counts up, thread `i` of `T` taking `i`, `i + T`, `i + 2T`, ... Each query is written
//! straight into the send buffer: the decimal digits of `n` (on the stack) in front of a tail
//! built once (prefix and zone labels, root, type, class, OPT): no allocation per query. A
//! reply's question is checked against the name rebuilt from `n`, which the in-flight table
//! keeps instead of a query-file index.

use rand::Rng as _;

use super::queries::{self, HEADER_LEN, MAX_QUERY_LEN, Query, QueryOptions};

/// The zone `--unique` names go under unless `--unique-zone` says otherwise.
pub const DEFAULT_ZONE: &str = "miss.test";
/// Characters of the random per-run label.
const PREFIX_LEN: usize = 8;
/// Digits of the largest `u64`: the longest first label.
const MAX_DIGITS: usize = 20;

/// The parts of every `--unique` query that do not change, shared by all load threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueNames {
    /// Header of every query (ID 0).
    header: [u8; HEADER_LEN],
    /// Everything after the first label: `<prefix>.<zone>.` in wire form, type, class and the
    /// OPT record when there is one.
    tail: Vec<u8>,
    /// How many bytes of `tail` belong to the question (the rest is the OPT record).
    question_tail: usize,
    /// `<prefix>.<zone>` (no trailing dot), for the report.
    suffix: String,
}

impl UniqueNames {
    /// Names under `<random prefix>.<zone>` of type `qtype`.
    pub(crate) fn new(zone: &str, qtype: u16, options: QueryOptions) -> Result<Self, String> {
        let mut rng = rand::rng();
        let prefix: String = (0..PREFIX_LEN)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        Self::with_prefix(&prefix, zone, qtype, options)
    }

    /// Names under `<prefix>.<zone>` (tests choose the prefix).
    pub(crate) fn with_prefix(
        prefix: &str,
        zone: &str,
        qtype: u16,
        options: QueryOptions,
    ) -> Result<Self, String> {
        let zone = zone.strip_suffix('.').unwrap_or(zone);
        let suffix = if zone.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{zone}")
        };
        // The longest name this run can ask must be a valid name.
        let longest = format!("{}.{suffix}", "9".repeat(MAX_DIGITS));
        let template = queries::build(&longest, qtype, options)?;
        let first_label = 1 + MAX_DIGITS;
        Ok(UniqueNames {
            header: template.wire[..HEADER_LEN]
                .try_into()
                .expect("a query has a header"),
            tail: template.wire[HEADER_LEN + first_label..].to_vec(),
            question_tail: template.question_len - first_label,
            suffix,
        })
    }

    /// `<prefix>.<zone>`, the part every name shares.
    pub(crate) fn suffix(&self) -> &str {
        &self.suffix
    }

    /// The query for name number `n` (for tests and as the stand-in query list).
    pub(crate) fn query(&self, n: u64) -> Query {
        let mut wire = vec![0; MAX_QUERY_LEN];
        let len = self.write(n, &mut wire);
        wire.truncate(len);
        let question_len = len - HEADER_LEN - (self.tail.len() - self.question_tail);
        Query { wire, question_len }
    }

    /// Writes the query for name number `n` (ID 0) into `out`; returns its length.
    pub(crate) fn write(&self, n: u64, out: &mut [u8]) -> usize {
        let mut digits = [0u8; MAX_DIGITS];
        let label = decimal(n, &mut digits);
        out[..HEADER_LEN].copy_from_slice(&self.header);
        out[HEADER_LEN] = label.len() as u8;
        let mut at = HEADER_LEN + 1;
        out[at..at + label.len()].copy_from_slice(label);
        at += label.len();
        out[at..at + self.tail.len()].copy_from_slice(&self.tail);
        at + self.tail.len()
    }

    /// Whether `reply` carries the question of name number `n` (name without ASCII case,
    /// type and class exactly), as [`Query::question_matches`].
    pub(crate) fn question_matches(&self, n: u64, reply: &[u8]) -> bool {
        let mut digits = [0u8; MAX_DIGITS];
        let label = decimal(n, &mut digits);
        let mut question = [0u8; MAX_QUERY_LEN];
        question[0] = label.len() as u8;
        question[1..1 + label.len()].copy_from_slice(label);
        let len = 1 + label.len() + self.question_tail;
        question[1 + label.len()..len].copy_from_slice(&self.tail[..self.question_tail]);
        queries::question_equal(&question[..len], reply)
    }
}

/// The decimal digits of `n`, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; MAX_DIGITS]) -> &[u8] {
    let mut at = MAX_DIGITS;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: QueryOptions = QueryOptions {
        edns: false,
        dnssec: false,
    };

    #[test]
    fn writes_the_same_bytes_as_a_query_file_line() {
        let names = UniqueNames::with_prefix("run1", "miss.test.", 1, PLAIN).unwrap();
        assert_eq!(names.suffix(), "run1.miss.test");
        let mut out = [0u8; MAX_QUERY_LEN];
        for n in [0, 7, 10, 12_345, u64::MAX] {
            let len = names.write(n, &mut out);
            let want = queries::build(&format!("{n}.run1.miss.test"), 1, PLAIN).unwrap();
            assert_eq!(&out[..len], &want.wire[..], "name {n}");
            assert_eq!(names.query(n), want);
        }
    }

    #[test]
    fn edns_tail_is_kept_out_of_the_question() {
        let options = QueryOptions {
            edns: true,
            dnssec: true,
        };
        let names = UniqueNames::with_prefix("p", "miss.test", 28, options).unwrap();
        let query = names.query(42);
        let want = queries::build("42.p.miss.test", 28, options).unwrap();
        assert_eq!(query, want);
        assert_eq!(query.question(), want.question());
        let mut reply = query.wire.clone();
        reply[2] |= 0x80;
        assert!(names.question_matches(42, &reply));
    }

    #[test]
    fn replies_match_only_their_own_name() {
        let names = UniqueNames::with_prefix("abc", "miss.test", 1, PLAIN).unwrap();
        let mut reply = names.query(1234).wire;
        reply[2] |= 0x80;
        assert!(names.question_matches(1234, &reply));
        assert!(!names.question_matches(1235, &reply));
        assert!(!names.question_matches(123, &reply));
        assert!(!names.question_matches(12345, &reply));
        // The case of the name may change (0x20); the type may not.
        reply[HEADER_LEN + 6] = b'A';
        assert!(names.question_matches(1234, &reply));
        let type_at = names.query(1234).wire.len() - 3;
        reply[type_at] = 28;
        assert!(!names.question_matches(1234, &reply));
        assert!(!names.question_matches(1234, &reply[..HEADER_LEN + 3]));
    }

    #[test]
    fn random_prefixes_differ_and_names_stay_valid() {
        let a = UniqueNames::new(DEFAULT_ZONE, 1, PLAIN).unwrap();
        let b = UniqueNames::new(DEFAULT_ZONE, 1, PLAIN).unwrap();
        assert_ne!(a.suffix(), b.suffix());
        assert!(a.suffix().ends_with(".miss.test"));
        assert_eq!(a.suffix().len(), PREFIX_LEN + ".miss.test".len());
        assert!(UniqueNames::new(&"x.".repeat(120), 1, PLAIN).is_err());
        let root = UniqueNames::with_prefix("p", ".", 1, PLAIN).unwrap();
        assert_eq!(root.suffix(), "p");
    }

    #[test]
    fn decimal_digits() {
        let mut buf = [0u8; MAX_DIGITS];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(9, &mut buf), b"9");
        assert_eq!(decimal(1_000_000, &mut buf), b"1000000");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
