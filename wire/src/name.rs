//! Domain names in wire form: skipping (with safe compression-pointer following), measuring
//! the uncompressed question name, and case-insensitive comparison.

use crate::ParseError;

/// Longest name in wire form, root label included (RFC 1035 §3.1).
pub const MAX_NAME_LEN: usize = 255;

/// At most this many compression pointers are followed in one name. Pointers must also point
/// backwards from the pointer itself, but that alone does not prevent loops (`\x01a\xc0<start>`
/// loops through its own label): this bound and the 255-octet limit end every loop.
const MAX_POINTER_HOPS: usize = 64;

/// Skips the (possibly compressed) name starting at `pos` and returns the offset just past it
/// in the original byte stream. The whole name is validated: label types, the 255-octet limit,
/// and every pointer (backwards only, bounded hops, inside the message).
pub fn skip_name(buf: &[u8], pos: usize) -> Result<usize, ParseError> {
    let mut cursor = pos;
    let mut end: Option<usize> = None;
    let mut wire_len = 0usize;
    let mut hops = 0usize;
    loop {
        let len = *buf.get(cursor).ok_or(ParseError::Truncated)? as usize;
        match len & 0xc0 {
            0x00 => {
                wire_len += len + 1;
                if wire_len > MAX_NAME_LEN {
                    return Err(ParseError::NameTooLong);
                }
                if len == 0 {
                    return Ok(end.unwrap_or(cursor + 1));
                }
                if cursor + 1 + len > buf.len() {
                    return Err(ParseError::Truncated);
                }
                cursor += 1 + len;
            }
            0xc0 => {
                let low = *buf.get(cursor + 1).ok_or(ParseError::Truncated)? as usize;
                let target = ((len & 0x3f) << 8) | low;
                if target >= cursor || hops == MAX_POINTER_HOPS {
                    return Err(ParseError::BadPointer);
                }
                hops += 1;
                end.get_or_insert(cursor + 2);
                cursor = target;
            }
            _ => return Err(ParseError::BadLabel),
        }
    }
}

/// Length in bytes of the uncompressed name at `pos` (the question name). A compression
/// pointer is rejected: the question is the first name of a message, so nothing precedes it
/// that it could point to except the header.
pub fn question_name_len(buf: &[u8], pos: usize) -> Result<usize, ParseError> {
    let mut cursor = pos;
    loop {
        let len = *buf.get(cursor).ok_or(ParseError::Truncated)? as usize;
        match len & 0xc0 {
            0x00 => {
                let next = cursor + 1 + len;
                if next - pos > MAX_NAME_LEN {
                    return Err(ParseError::NameTooLong);
                }
                if len == 0 {
                    return Ok(next - pos);
                }
                if next > buf.len() {
                    return Err(ParseError::Truncated);
                }
                cursor = next;
            }
            0xc0 => return Err(ParseError::CompressedQuestion),
            _ => return Err(ParseError::BadLabel),
        }
    }
}

/// Compares two uncompressed wire names ASCII-case-insensitively, eight bytes at a time.
/// Length octets are at most 63, below `b'A'`, so lowercasing every byte never changes a
/// length.
pub fn name_eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let whole = a.len() & !7;
    for at in (0..whole).step_by(8) {
        if lowercase_word(word(&a[at..at + 8])) != lowercase_word(word(&b[at..at + 8])) {
            return false;
        }
    }
    lowercase_word(tail_word(a, whole)) == lowercase_word(tail_word(b, whole))
}

/// Whether `name` (any case) equals `lower`, a name already in lowercase: only `name` is
/// lowercased, eight bytes at a time.
pub fn name_eq_lowercase(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    let whole = name.len() & !7;
    for at in (0..whole).step_by(8) {
        if lowercase_word(word(&name[at..at + 8])) != word(&lower[at..at + 8]) {
            return false;
        }
    }
    lowercase_word(tail_word(name, whole)) == tail_word(lower, whole)
}

/// Eight bytes, little-endian (`bytes` must hold exactly 8).
pub(crate) fn word(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes);
    u64::from_le_bytes(buf)
}

/// The bytes of `name` from `start` (at most seven), zero-padded, little-endian. For names of
/// eight bytes or more it reads the last eight as one word and shifts out the ones before
/// `start`: one load instead of a variable-length copy.
pub(crate) fn tail_word(name: &[u8], start: usize) -> u64 {
    let len = name.len() - start;
    if len == 0 {
        0
    } else if name.len() >= 8 {
        word(&name[name.len() - 8..]) >> (8 * (8 - len))
    } else {
        name[start..]
            .iter()
            .rev()
            .fold(0, |acc, &byte| acc << 8 | byte as u64)
    }
}

/// ASCII-lowercases the eight bytes of `w` at once (SWAR): a byte in `A..=Z` gets bit 5 set;
/// every other byte, non-ASCII ones included, is unchanged.
pub(crate) fn lowercase_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x80 * ONES;
    let low7 = w & (0x7f * ONES);
    // Bit 7 of each byte: set where the byte's low 7 bits are >= 'A', and where they are > 'Z'.
    // No carry crosses a byte: 0x7f + 0x3f < 0x100.
    let at_least_a = low7 + (0x80 - b'A' as u64) * ONES;
    let above_z = low7 + (0x80 - b'Z' as u64 - 1) * ONES;
    let upper = at_least_a & !above_z & !w & HIGH;
    w | (upper >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_plain_and_compressed_names() {
        // 12 bytes of header padding, then "a.example." and a pointer to it.
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(b"\x01a\x07example\x00");
        let pointer_at = buf.len();
        buf.extend_from_slice(&[0x03, b'w', b'w', b'w', 0xc0, 12]);
        assert_eq!(skip_name(&buf, 12), Ok(pointer_at));
        assert_eq!(skip_name(&buf, pointer_at), Ok(buf.len()));
    }

    #[test]
    fn rejects_loops_forward_pointers_and_long_labels() {
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(&[0xc0, 12]); // points at itself
        assert_eq!(skip_name(&buf, 12), Err(ParseError::BadPointer));
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(&[0xc0, 14, 0]); // points forwards
        assert_eq!(skip_name(&buf, 12), Err(ParseError::BadPointer));
        let mut buf = vec![0u8; 12];
        buf.push(64);
        buf.extend_from_slice(&[b'x'; 64]);
        buf.push(0);
        assert_eq!(skip_name(&buf, 12), Err(ParseError::BadLabel));
        assert_eq!(question_name_len(&buf, 12), Err(ParseError::BadLabel));
    }

    #[test]
    fn rejects_names_over_255_octets() {
        let mut buf = Vec::new();
        for _ in 0..4 {
            buf.push(63);
            buf.extend_from_slice(&[b'x'; 63]);
        }
        buf.push(0); // 4 * 64 + 1 = 257 octets
        assert_eq!(skip_name(&buf, 0), Err(ParseError::NameTooLong));
        assert_eq!(question_name_len(&buf, 0), Err(ParseError::NameTooLong));
        // 3 * 64 + 62 + 1 = 255 octets is fine.
        let mut ok = buf[..3 * 64].to_vec();
        ok.push(61);
        ok.extend_from_slice(&[b'y'; 61]);
        ok.push(0);
        assert_eq!(ok.len(), 255);
        assert_eq!(question_name_len(&ok, 0), Ok(255));
        assert_eq!(skip_name(&ok, 0), Ok(255));
    }

    #[test]
    fn case_insensitive_comparison() {
        assert!(name_eq_ignore_case(b"\x03WwW\x00", b"\x03www\x00"));
        assert!(!name_eq_ignore_case(b"\x03www\x00", b"\x03wwx\x00"));
        assert!(name_eq_ignore_case(
            b"\x0bKubernetes\x07DEFAULT\x03svc\x00",
            b"\x0bkubernetes\x07default\x03SVC\x00"
        ));
        assert!(!name_eq_ignore_case(b"\x03www\x00", b"\x03www\x00\x00"));
        // Only A-Z fold: '@' (0x40) and '[' (0x5b) border them, 0xc1 is not ASCII.
        assert!(!name_eq_ignore_case(b"\x01@\x00", b"\x01`\x00"));
        assert!(!name_eq_ignore_case(b"\x01[\x00", b"\x01{\x00"));
        assert!(!name_eq_ignore_case(b"\x01\xc1\x00", b"\x01\xe1\x00"));
    }

    #[test]
    fn tail_words_are_zero_padded_for_short_and_long_names() {
        let long = b"\x07example\x03com\x00"; // 13 bytes: one word, then 5
        assert_eq!(
            tail_word(long, 8),
            u64::from_le_bytes([3, b'c', b'o', b'm', 0, 0, 0, 0])
        );
        assert_eq!(tail_word(long, 13), 0);
        let short = b"\x01a\x00";
        assert_eq!(
            tail_word(short, 0),
            u64::from_le_bytes([1, b'a', 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(tail_word(b"\x00", 0), 0);
        assert_eq!(tail_word(b"\x06abcdef\x00", 8), 0, "exactly one word");
    }

    #[test]
    fn word_lowercasing_matches_the_byte_rule_for_every_byte() {
        for byte in 0..=255u8 {
            let w = u64::from_le_bytes([byte, b'Q', byte, 0, 0xff, byte, b'z', byte]);
            let expect: Vec<u8> = w.to_le_bytes().iter().map(u8::to_ascii_lowercase).collect();
            assert_eq!(
                lowercase_word(w).to_le_bytes().to_vec(),
                expect,
                "byte {byte:#x}"
            );
        }
    }
}
