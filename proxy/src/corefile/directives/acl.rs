//! The `acl` directive, with CoreDNS's syntax (plugin/acl `setup.go`):
//!
//! ```text
//! acl [ZONES...] {
//!     ACTION [type QTYPE...] [net SOURCE...]
//! }
//! ```
//!
//! ACTION is `allow`, `block`, `filter` or `drop`; QTYPE a type name (`A`, `AAAA`, ...,
//! `TYPE65`) or `*`; SOURCE an address prefix, an address (a /32 or /128) or `*`. Without
//! `type` or `net` a line matches every type or address. Keywords and type names are
//! case-insensitive (CoreDNS wants type names in capitals). As in CoreDNS, `*` ends its
//! section: what follows it up to the next `type` or `net` is not read. A block may hold
//! several `acl` directives; without ZONES one applies to the server block's zones.

use shardns_shard::config::{AclAction, AclPolicy, Cidr};

use super::options::{Failure, fail};
use crate::corefile::address::{self, CIDR_EXPECTED, Zone};
use crate::corefile::parser::Directive;
use crate::corefile::tokenizer::Token;

/// One `acl` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AclSettings {
    /// ZONES as written; empty: the server block's zones.
    pub zones: Vec<Zone>,
    /// The lines of its block, in order.
    pub policies: Vec<AclPolicy>,
    /// The directive's line, for errors found when the block is built.
    pub line: usize,
}

/// `acl [ZONES...] { ... }`.
pub(super) fn parse(directive: &Directive) -> Result<AclSettings, Failure> {
    let mut zones = Vec::new();
    for token in &directive.args {
        let zone = address::parse_zone(&token.text).map_err(|m| fail(token, m))?;
        if !zones.contains(&zone) {
            zones.push(zone);
        }
    }
    let mut policies = Vec::new();
    for line in directive.block.iter().flatten() {
        policies.push(policy(line)?);
    }
    Ok(AclSettings {
        zones,
        policies,
        line: directive.line,
    })
}

/// One line of an `acl` block: `ACTION [type QTYPE...] [net SOURCE...]`.
fn policy(line: &Directive) -> Result<AclPolicy, Failure> {
    let action = match line.name.to_ascii_lowercase().as_str() {
        "allow" => AclAction::Allow,
        "block" => AclAction::Block,
        "filter" => AclAction::Filter,
        "drop" => AclAction::Drop,
        _ => {
            return Err((
                line.line,
                format!(
                    "unknown acl action {:?} (expected allow, block, filter or drop)",
                    line.name
                ),
            ));
        }
    };
    if line.block.is_some() {
        return Err((
            line.line,
            format!("acl action {:?} takes no options block", line.name),
        ));
    }
    let mut qtypes: Option<Vec<u16>> = None;
    let mut sources: Option<Vec<Cidr>> = None;
    // Whether a section said `*` (everything): CoreDNS then matches every type or address.
    let (mut any_type, mut any_source) = (false, false);
    let mut rest = line.args.as_slice();
    while let Some((keyword, after)) = rest.split_first() {
        let section = keyword.text.to_ascii_lowercase();
        if !is_keyword(keyword) {
            return Err(fail(
                keyword,
                format!(
                    "unexpected acl token {:?} (expected type or net)",
                    keyword.text
                ),
            ));
        }
        let end = after.iter().position(is_keyword).unwrap_or(after.len());
        let (values, next) = after.split_at(end);
        rest = next;
        if section == "type" {
            if values.is_empty() {
                return Err(fail(
                    keyword,
                    "acl type needs a QTYPE (a type name such as A or AAAA, or *)".to_string(),
                ));
            }
            let list = qtypes.get_or_insert_with(Vec::new);
            for value in values {
                if value.text == "*" {
                    any_type = true;
                    break;
                }
                let qtype = qtype(&value.text).ok_or_else(|| {
                    fail(
                        value,
                        format!(
                            "unknown query type {:?} (expected a type name such as A, AAAA or \
                             MX, TYPE and a number, or *)",
                            value.text
                        ),
                    )
                })?;
                if !list.contains(&qtype) {
                    list.push(qtype);
                }
            }
        } else {
            if values.is_empty() {
                return Err(fail(
                    keyword,
                    format!("acl net needs a SOURCE ({CIDR_EXPECTED}, or *)"),
                ));
            }
            let list = sources.get_or_insert_with(Vec::new);
            for value in values {
                if value.text == "*" {
                    any_source = true;
                    break;
                }
                let net = address::parse_cidr(&value.text).map_err(|message| {
                    fail(
                        value,
                        format!("bad acl source: {message} (expected {CIDR_EXPECTED}, or *)"),
                    )
                })?;
                if !list.contains(&net) {
                    list.push(net);
                }
            }
        }
    }
    Ok(AclPolicy {
        action,
        qtypes: qtypes.filter(|_| !any_type),
        sources: sources.filter(|_| !any_source),
    })
}

/// Whether `token` opens a section (`type` or `net`, any case).
fn is_keyword(token: &Token) -> bool {
    token.text.eq_ignore_ascii_case("type") || token.text.eq_ignore_ascii_case("net")
}

/// The number of a query type's name (miekg/dns's names, any case), or of `TYPEnnn`.
fn qtype(name: &str) -> Option<u16> {
    let upper = name.to_ascii_uppercase();
    if let Some(number) = upper.strip_prefix("TYPE")
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
    {
        return number.parse().ok();
    }
    QTYPES
        .iter()
        .find(|(known, _)| *known == upper)
        .map(|&(_, number)| number)
}

/// Type names as miekg/dns (`dns.StringToType`) knows them.
#[rustfmt::skip]
const QTYPES: &[(&str, u16)] = &[
    ("A", 1), ("NS", 2), ("MD", 3), ("MF", 4), ("CNAME", 5), ("SOA", 6), ("MB", 7), ("MG", 8),
    ("MR", 9), ("NULL", 10), ("PTR", 12), ("HINFO", 13), ("MINFO", 14), ("MX", 15),
    ("TXT", 16), ("RP", 17), ("AFSDB", 18), ("X25", 19), ("ISDN", 20), ("RT", 21),
    ("NSAPPTR", 23), ("SIG", 24), ("KEY", 25), ("PX", 26), ("GPOS", 27), ("AAAA", 28),
    ("LOC", 29), ("NXT", 30), ("EID", 31), ("NIMLOC", 32), ("SRV", 33), ("ATMA", 34),
    ("NAPTR", 35), ("KX", 36), ("CERT", 37), ("DNAME", 39), ("OPT", 41), ("APL", 42),
    ("DS", 43), ("SSHFP", 44), ("IPSECKEY", 45), ("RRSIG", 46), ("NSEC", 47), ("DNSKEY", 48),
    ("DHCID", 49), ("NSEC3", 50), ("NSEC3PARAM", 51), ("TLSA", 52), ("SMIMEA", 53),
    ("HIP", 55), ("NINFO", 56), ("RKEY", 57), ("TALINK", 58), ("CDS", 59), ("CDNSKEY", 60),
    ("OPENPGPKEY", 61), ("CSYNC", 62), ("ZONEMD", 63), ("SVCB", 64), ("HTTPS", 65),
    ("SPF", 99), ("UINFO", 100), ("UID", 101), ("GID", 102), ("UNSPEC", 103), ("NID", 104),
    ("L32", 105), ("L64", 106), ("LP", 107), ("EUI48", 108), ("EUI64", 109),
    ("NXNAME", 128), ("TKEY", 249), ("TSIG", 250), ("IXFR", 251), ("AXFR", 252),
    ("MAILB", 253), ("MAILA", 254), ("ANY", 255), ("URI", 256), ("CAA", 257), ("AVC", 258),
    ("AMTRELAY", 260), ("RESINFO", 261), ("TA", 32768), ("DLV", 32769),
];

#[cfg(test)]
mod tests;
