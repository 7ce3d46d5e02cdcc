//! The query file (dnsperf's format: one `name TYPE` per line, `#` comments) and the
//! wire-format queries built from it once, before the run.

use std::path::Path;

use anyhow::Context as _;

/// Bytes of a DNS header.
pub(crate) const HEADER_LEN: usize = 12;
/// The EDNS0 UDP payload size advertised with `-e` (the DNS Flag Day 2020 value).
pub(crate) const EDNS_PAYLOAD: u16 = 1232;
/// The largest query this tool builds: header, a 255-byte name, type, class and an OPT record.
pub(crate) const MAX_QUERY_LEN: usize = HEADER_LEN + 255 + 4 + 11;

/// How queries are built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueryOptions {
    /// Append an OPT record (EDNS0, payload [`EDNS_PAYLOAD`]).
    pub edns: bool,
    /// Set the DO bit in the OPT record (implies `edns`).
    pub dnssec: bool,
}

/// One query, ready to send once its ID (bytes 0..2) is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    /// The whole message; ID 0.
    pub wire: Vec<u8>,
    /// Bytes of the question section (name, type, class) starting at offset 12.
    pub question_len: usize,
}

impl Query {
    /// The question section: what a reply must carry back.
    pub(crate) fn question(&self) -> &[u8] {
        &self.wire[HEADER_LEN..HEADER_LEN + self.question_len]
    }

    /// Whether `reply` carries this query's question (name compared without ASCII case, as
    /// servers may echo 0x20-randomised names; type and class exactly).
    pub(crate) fn question_matches(&self, reply: &[u8]) -> bool {
        question_equal(self.question(), reply)
    }
}

/// Whether `reply` has one question and it is `question` (wire form: name, type, class; the
/// name compared without ASCII case, type and class exactly).
pub(crate) fn question_equal(question: &[u8], reply: &[u8]) -> bool {
    let Some(theirs) = reply.get(HEADER_LEN..HEADER_LEN + question.len()) else {
        return false;
    };
    let name_len = question.len() - 4;
    reply.get(4..6) == Some(&[0, 1][..])
        && theirs[..name_len].eq_ignore_ascii_case(&question[..name_len])
        && theirs[name_len..] == question[name_len..]
}

/// Reads the query file at `path` (standard input when `None`, as dnsperf) and builds its
/// queries.
pub(crate) fn load(path: Option<&Path>, options: QueryOptions) -> anyhow::Result<Vec<Query>> {
    let (text, origin) = match path {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("reading query file {}", path.display()))?,
            path.display().to_string(),
        ),
        None => {
            use std::io::{IsTerminal as _, Read as _};
            let mut text = String::new();
            let mut stdin = std::io::stdin();
            anyhow::ensure!(
                !stdin.is_terminal(),
                "no query file: give -d FILE (or pipe one into standard input)"
            );
            stdin
                .read_to_string(&mut text)
                .context("reading queries from standard input")?;
            (text, "<stdin>".to_owned())
        }
    };
    parse(&text, &origin, options)
}

/// Parses query-file text; an error names `origin` and the 1-based line.
pub(crate) fn parse(text: &str, origin: &str, options: QueryOptions) -> anyhow::Result<Vec<Query>> {
    let mut queries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let query = parse_line(line, options)
            .map_err(|why| anyhow::anyhow!("{origin}:{}: {why}: {line:?}", index + 1))?;
        queries.push(query);
    }
    anyhow::ensure!(
        !queries.is_empty(),
        "{origin}: no queries (expected `name TYPE` lines)"
    );
    Ok(queries)
}

/// Parses one non-comment line.
fn parse_line(line: &str, options: QueryOptions) -> Result<Query, String> {
    let mut fields = line.split_whitespace();
    let name = fields.next().ok_or("empty line")?;
    let qtype = fields
        .next()
        .ok_or("missing query type (expected `name TYPE`)")?;
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the type"));
    }
    let qtype = qtype_code(qtype).ok_or_else(|| format!("unknown query type {qtype:?}"))?;
    build(name, qtype, options)
}

/// The code of a type mnemonic (case-insensitive) or of `TYPEnnn` (RFC 3597).
pub(crate) fn qtype_code(name: &str) -> Option<u16> {
    const TYPES: &[(&str, u16)] = &[
        ("A", 1),
        ("NS", 2),
        ("CNAME", 5),
        ("SOA", 6),
        ("PTR", 12),
        ("MX", 15),
        ("TXT", 16),
        ("AAAA", 28),
        ("SRV", 33),
        ("NAPTR", 35),
        ("DS", 43),
        ("DNSKEY", 48),
        ("SVCB", 64),
        ("HTTPS", 65),
        ("ANY", 255),
        ("CAA", 257),
    ];
    if let Some(&(_, code)) = TYPES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Some(code);
    }
    let digits = name
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("TYPE"))
        .map(|_| &name[4..])?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Builds a recursive (RD) query for `name`/`qtype`, class IN, ID 0.
pub(crate) fn build(name: &str, qtype: u16, options: QueryOptions) -> Result<Query, String> {
    let edns = options.edns || options.dnssec;
    let mut wire = Vec::with_capacity(MAX_QUERY_LEN);
    // ID 0, flags RD, QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1.
    wire.extend_from_slice(&[0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    encode_name(name, &mut wire)?;
    wire.extend_from_slice(&qtype.to_be_bytes());
    wire.extend_from_slice(&1u16.to_be_bytes());
    let question_len = wire.len() - HEADER_LEN;
    if edns {
        // Root owner, TYPE OPT, CLASS = payload, TTL = ext-rcode 0, version 0, flags, RDLEN 0.
        let flags: u16 = if options.dnssec { 0x8000 } else { 0 };
        wire.push(0);
        wire.extend_from_slice(&41u16.to_be_bytes());
        wire.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        wire.extend_from_slice(&[0, 0]);
        wire.extend_from_slice(&flags.to_be_bytes());
        wire.extend_from_slice(&[0, 0]);
    }
    Ok(Query { wire, question_len })
}

/// Appends `name` (dotted presentation form, trailing dot optional, `.` for the root) in
/// wire format.
fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(format!("empty label in name {name:?}"));
            }
            if label.contains('\\') {
                return Err(format!("escapes are not supported in name {name:?}"));
            }
            let len = u8::try_from(label.len())
                .ok()
                .filter(|&len| len <= 63)
                .ok_or_else(|| format!("label longer than 63 bytes in name {name:?}"))?;
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > 255 {
        return Err(format!("name longer than 255 bytes: {name:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: QueryOptions = QueryOptions {
        edns: false,
        dnssec: false,
    };

    #[test]
    fn parses_types_comments_and_blank_lines() {
        let text = "# header\n\nwww.example.com A\nexample.com. aaaa\n  # indented comment\n\
                    example.com MX\nexample.com TXT\nexample.com SOA\nexample.com NS\n\
                    www.example.com CNAME\n1.0.0.127.in-addr.arpa PTR\n_sip._tcp.example.com SRV\n\
                    example.com HTTPS\nexample.com SVCB\nexample.com ANY\nexample.com TYPE65534\n";
        let queries = parse(text, "q.txt", PLAIN).expect("parses");
        let types: Vec<u16> = queries
            .iter()
            .map(|q| {
                let at = HEADER_LEN + q.question_len - 4;
                u16::from_be_bytes([q.wire[at], q.wire[at + 1]])
            })
            .collect();
        assert_eq!(types, [1, 28, 15, 16, 6, 2, 5, 12, 33, 65, 64, 255, 65534]);
        assert_eq!(&queries[0].wire[12..29], b"\x03www\x07example\x03com\x00");
        assert_eq!(queries[0].wire.len(), 12 + 17 + 4);
        assert_eq!(
            queries[1].wire[12..25],
            queries[2].wire[12..25],
            "trailing dot ignored"
        );
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, want) in [
            (
                "a.example A\nb.example BOGUS\n",
                "q.txt:2: unknown query type",
            ),
            ("# c\n\nb.example\n", "q.txt:3: missing query type"),
            ("a.example A extra\n", "q.txt:1: unexpected"),
            ("a..example A\n", "q.txt:1: empty label"),
            ("a.example TYPE\n", "q.txt:1: unknown query type"),
            ("a.example TYPE70000\n", "q.txt:1: unknown query type"),
            ("# only comments\n", "q.txt: no queries"),
        ] {
            let error = parse(text, "q.txt", PLAIN).expect_err(text).to_string();
            assert!(error.starts_with(want), "{text:?}: {error}");
        }
        let long = format!("{}.example A", "x".repeat(64));
        assert!(parse(&long, "q", PLAIN).is_err());
    }

    #[test]
    fn edns_and_do_bit() {
        let e = build(
            "example.com",
            1,
            QueryOptions {
                edns: true,
                dnssec: false,
            },
        )
        .unwrap();
        assert_eq!(e.wire[11], 1, "ARCOUNT");
        assert_eq!(
            &e.wire[e.wire.len() - 11..],
            &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        );
        let d = build(
            "example.com",
            1,
            QueryOptions {
                edns: false,
                dnssec: true,
            },
        )
        .unwrap();
        assert_eq!(
            &d.wire[d.wire.len() - 11..],
            &[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]
        );
        assert_eq!(e.question(), d.question());
    }

    #[test]
    fn question_match_ignores_case_only_in_the_name() {
        let q = build("www.example.com", 1, PLAIN).unwrap();
        let mut reply = q.wire.clone();
        reply[2] |= 0x80;
        assert!(q.question_matches(&reply));
        reply[13] = b'W';
        assert!(q.question_matches(&reply));
        reply[13] = b'x';
        assert!(!q.question_matches(&reply));
        let mut other_type = q.wire.clone();
        let last = 12 + q.question_len - 3;
        other_type[last] = 28;
        assert!(!q.question_matches(&other_type));
        assert!(!q.question_matches(&q.wire[..20]));
    }
}
