//! Small helpers over uncompressed wire names.

use shardns_wire::name_eq_ignore_case;

/// Whether `name` is `zone` or below it (both uncompressed wire names; ASCII case ignored).
pub(crate) fn in_zone(name: &[u8], zone: &[u8]) -> bool {
    if zone == b"\0" {
        return true; // the root contains every name
    }
    let mut pos = 0;
    while pos < name.len() {
        if name.len() - pos == zone.len() && name_eq_ignore_case(&name[pos..], zone) {
            return true;
        }
        let len = name[pos] as usize;
        if len == 0 {
            return false;
        }
        pos += len + 1;
    }
    false
}

/// Presentation form of an uncompressed wire name (for logs), e.g. `www.example.`.
pub(crate) fn to_text(name: &[u8]) -> String {
    let mut text = String::new();
    let mut pos = 0;
    while let Some(&len) = name.get(pos) {
        if len == 0 {
            break;
        }
        let label = name
            .get(pos + 1..pos + 1 + len as usize)
            .unwrap_or_default();
        for &byte in label {
            match byte {
                b'.' | b'\\' => {
                    text.push('\\');
                    text.push(byte as char);
                }
                0x21..=0x7e => text.push(byte as char),
                _ => text.push_str(&format!("\\{byte:03}")),
            }
        }
        text.push('.');
        pos += 1 + len as usize;
    }
    if text.is_empty() {
        text.push('.');
    }
    text
}

/// A record type's mnemonic as miekg/dns writes it (`A`, `AAAA`, `HTTPS`), or `TYPE` and the
/// number for the rest (RFC 3597).
pub(crate) fn type_name(qtype: u16) -> std::borrow::Cow<'static, str> {
    let name = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        other => return format!("TYPE{other}").into(),
    };
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_containment_is_label_aligned_and_case_insensitive() {
        let name = b"\x03www\x07Example\x03com\x00";
        assert!(in_zone(name, b"\x07example\x03com\x00"));
        assert!(in_zone(name, b"\x03com\x00"));
        assert!(in_zone(name, b"\x00"));
        assert!(!in_zone(name, b"\x04mple\x03com\x00"));
        assert!(!in_zone(b"\x03com\x00", b"\x07example\x03com\x00"));
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name(1), "A");
        assert_eq!(type_name(28), "AAAA");
        assert_eq!(type_name(65), "HTTPS");
        assert_eq!(type_name(65280), "TYPE65280");
    }

    #[test]
    fn text_form() {
        assert_eq!(to_text(b"\x03www\x07example\x00"), "www.example.");
        assert_eq!(to_text(b"\x00"), ".");
        assert_eq!(to_text(b"\x03a.b\x00"), "a\\.b.");
    }
}
