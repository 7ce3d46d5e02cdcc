//! The cache key: lowercased qname + qtype + qclass + DO + CD, hashed without allocating.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::{Message, name_eq_ignore_case};

/// A borrowed cache key. Not in the key, as in CoreDNS: EDNS buffer size, UDP/TCP, ECS,
/// cookies, RD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    /// Uncompressed wire name, any case.
    pub qname: &'a [u8],
    pub qtype: u16,
    pub qclass: u16,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

impl<'a> Key<'a> {
    /// The key of a parsed message.
    pub fn of(message: &Message<'a>) -> Key<'a> {
        Key {
            qname: message.question.name,
            qtype: message.question.qtype,
            qclass: message.question.qclass,
            dnssec_ok: message.dnssec_ok(),
            checking_disabled: message.header.cd(),
        }
    }

    /// DO and CD packed into two bits.
    pub fn flag_bits(&self) -> u8 {
        self.dnssec_ok as u8 | (self.checking_disabled as u8) << 1
    }

    /// The key's hash under `state`; equal (case-insensitively) keys hash equally.
    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        state.hash_one(self)
    }

    /// Whether this key equals a stored one (whose name may be in any case).
    pub fn matches(&self, qname: &[u8], qtype: u16, qclass: u16, flag_bits: u8) -> bool {
        self.qtype == qtype
            && self.qclass == qclass
            && self.flag_bits() == flag_bits
            && name_eq_ignore_case(self.qname, qname)
    }
}

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Eight lowercased bytes at a time; the tail is zero-padded and the length mixed in
        // through the final word, so "a" and "a\0" differ.
        let mut chunks = self.qname.chunks_exact(8);
        for chunk in chunks.by_ref() {
            let mut word = [0u8; 8];
            for (out, byte) in word.iter_mut().zip(chunk) {
                *out = byte.to_ascii_lowercase();
            }
            state.write_u64(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        for (out, byte) in tail.iter_mut().zip(chunks.remainder()) {
            *out = byte.to_ascii_lowercase();
        }
        state.write_u64(u64::from_le_bytes(tail));
        let fields = (self.qtype as u64) << 32
            | (self.qclass as u64) << 16
            | (self.flag_bits() as u64) << 8
            | self.qname.len() as u64;
        state.write_u64(fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;

    fn key(name: &'static [u8], dnssec_ok: bool) -> Key<'static> {
        Key {
            qname: name,
            qtype: 1,
            qclass: 1,
            dnssec_ok,
            checking_disabled: false,
        }
    }

    #[test]
    fn case_insensitive_hash_and_match() {
        let state = RandomState::new();
        let lower = key(b"\x07example\x03com\x00", false);
        let mixed = key(b"\x07ExAmPlE\x03COM\x00", false);
        assert_eq!(lower.hash_with(&state), mixed.hash_with(&state));
        assert!(mixed.matches(lower.qname, 1, 1, 0));
    }

    #[test]
    fn do_bit_and_type_separate_keys() {
        let state = RandomState::new();
        let plain = key(b"\x01a\x00", false);
        let dnssec = key(b"\x01a\x00", true);
        assert_ne!(plain.hash_with(&state), dnssec.hash_with(&state));
        assert!(!dnssec.matches(plain.qname, 1, 1, plain.flag_bits()));
        assert!(!plain.matches(plain.qname, 28, 1, 0));
    }
}
