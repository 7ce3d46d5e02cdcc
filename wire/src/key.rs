//! The cache key: lowercased qname + qtype + qclass + DO + CD, hashed without allocating.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::name::{lowercase_word, name_eq_lowercase, tail_word, word};
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

/// The DO and CD bits of a query: the part of its cache key beside the question. The one
/// place the two bits are packed and unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyFlags(u8);

impl KeyFlags {
    const DNSSEC_OK: u8 = 1;
    const CHECKING_DISABLED: u8 = 2;

    /// The flags of a query with these DO and CD bits.
    pub const fn new(dnssec_ok: bool, checking_disabled: bool) -> KeyFlags {
        KeyFlags(
            (dnssec_ok as u8 * KeyFlags::DNSSEC_OK)
                | (checking_disabled as u8 * KeyFlags::CHECKING_DISABLED),
        )
    }

    /// The DO bit (EDNS "DNSSEC OK").
    pub const fn dnssec_ok(self) -> bool {
        self.0 & KeyFlags::DNSSEC_OK != 0
    }

    /// The CD bit (checking disabled).
    pub const fn checking_disabled(self) -> bool {
        self.0 & KeyFlags::CHECKING_DISABLED != 0
    }

    /// Both bits packed: DO in bit 0, CD in bit 1 (what the hash mixes in).
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl<'a> Key<'a> {
    /// The key of a question with these flags.
    pub fn from_parts(qname: &'a [u8], qtype: u16, qclass: u16, flags: KeyFlags) -> Key<'a> {
        Key {
            qname,
            qtype,
            qclass,
            dnssec_ok: flags.dnssec_ok(),
            checking_disabled: flags.checking_disabled(),
        }
    }

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

    /// The DO and CD bits.
    pub fn flags(&self) -> KeyFlags {
        KeyFlags::new(self.dnssec_ok, self.checking_disabled)
    }

    /// The key's hash under `state`; equal (case-insensitively) keys hash equally.
    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        state.hash_one(self)
    }

    /// The key's 64-bit hash under `seed` (a per-process random value): the qname lowercased
    /// eight bytes at a time, each word mixed in with a folded 64×64→128-bit multiply, then
    /// qtype, qclass, the flag bits and the length. No allocation and no per-byte loop; equal
    /// (case-insensitively) keys hash equally.
    pub fn hash_seeded(&self, seed: u64) -> u64 {
        let name = self.qname;
        let whole = name.len() & !7;
        let mut hash = seed;
        for at in (0..whole).step_by(8) {
            hash = folded_multiply(hash ^ lowercase_word(word(&name[at..at + 8])), MIX);
        }
        hash = folded_multiply(hash ^ lowercase_word(tail_word(name, whole)), MIX);
        let fields = (self.qtype as u64) << 32
            | (self.qclass as u64) << 16
            | (self.flags().bits() as u64) << 8
            | self.qname.len() as u64;
        folded_multiply(hash ^ fields, MIX ^ seed.rotate_left(32))
    }

    /// Whether this key equals a stored one (whose name may be in any case).
    pub fn matches(&self, qname: &[u8], qtype: u16, qclass: u16, flags: KeyFlags) -> bool {
        self.qtype == qtype
            && self.qclass == qclass
            && self.flags() == flags
            && name_eq_ignore_case(self.qname, qname)
    }

    /// As [`Key::matches`], for a stored name known to be lowercase already (a cache entry):
    /// only this key's name is lowercased. A stored name with capitals never matches.
    pub fn matches_lowercase(
        &self,
        lower_qname: &[u8],
        qtype: u16,
        qclass: u16,
        flags: KeyFlags,
    ) -> bool {
        self.qtype == qtype
            && self.qclass == qclass
            && self.flags() == flags
            && name_eq_lowercase(self.qname, lower_qname)
    }
}

/// An odd constant with well-spread bits (2^64 / golden ratio).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// The high and low halves of the 128-bit product, xored (as in foldhash and wyhash).
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = (a as u128) * (b as u128);
    (product as u64) ^ ((product >> 64) as u64)
}

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash_seeded(0));
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
        assert!(mixed.matches(lower.qname, 1, 1, KeyFlags::default()));
    }

    #[test]
    fn seeded_hash_ignores_case_and_separates_fields_and_lengths() {
        let lower = key(b"\x0bkubernetes\x07default\x03svc\x00", false);
        let mixed = key(b"\x0bKUBERNETES\x07Default\x03svc\x00", false);
        assert_eq!(lower.hash_seeded(42), mixed.hash_seeded(42));
        assert_ne!(
            lower.hash_seeded(42),
            lower.hash_seeded(43),
            "the seed matters"
        );
        assert_ne!(
            lower.hash_seeded(42),
            key(lower.qname, true).hash_seeded(42)
        );
        // A trailing zero byte changes the length, so the hash.
        assert_ne!(
            key(b"\x01a\x00", false).hash_seeded(1),
            key(b"\x01a\x00\x00", false).hash_seeded(1)
        );
    }

    #[test]
    fn lowercase_matching_needs_a_lowercase_stored_name() {
        let query = key(b"\x03WwW\x07Example\x00", false);
        let none = KeyFlags::default();
        assert!(query.matches_lowercase(b"\x03www\x07example\x00", 1, 1, none));
        assert!(!query.matches_lowercase(b"\x03WWW\x07example\x00", 1, 1, none));
        assert!(!query.matches_lowercase(b"\x03www\x07example\x00", 28, 1, none));
    }

    #[test]
    fn flags_pack_and_unpack() {
        for (dnssec_ok, checking_disabled) in
            [(false, false), (true, false), (false, true), (true, true)]
        {
            let flags = KeyFlags::new(dnssec_ok, checking_disabled);
            assert_eq!(
                (flags.dnssec_ok(), flags.checking_disabled()),
                (dnssec_ok, checking_disabled)
            );
            let key = Key::from_parts(b"\x01a\x00", 1, 1, flags);
            assert_eq!(key.flags(), flags);
            assert_eq!(
                flags.bits(),
                dnssec_ok as u8 | (checking_disabled as u8) << 1
            );
        }
    }

    #[test]
    fn do_bit_and_type_separate_keys() {
        let state = RandomState::new();
        let plain = key(b"\x01a\x00", false);
        let dnssec = key(b"\x01a\x00", true);
        assert_ne!(plain.hash_with(&state), dnssec.hash_with(&state));
        assert!(!dnssec.matches(plain.qname, 1, 1, plain.flags()));
        assert!(!plain.matches(plain.qname, 28, 1, KeyFlags::default()));
    }
}
