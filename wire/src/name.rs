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

/// Compares two uncompressed wire names ASCII-case-insensitively. Length octets are at most
/// 63, below `b'A'`, so lowercasing every byte never changes a length.
pub fn name_eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
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
    }
}
