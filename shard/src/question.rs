//! The question of a miss as the engine keeps it, owned: one type for the in-flight table,
//! the messages between shards and the cache lookups made on the miss path (the hit path
//! borrows the client's bytes instead, as a [`Key`]).

use shardns_wire::{Key, KeyFlags, Question};

use crate::Protocol;

/// An owned question with its name in lower case (as hickory-proto's `LowerName`), the DO
/// and CD bits of its cache key, and the key's hash under the shard group's seed (which also
/// picks the key's owner shard). Two equal questions are the same cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LowerQuestion {
    /// Uncompressed wire form, lower case.
    qname: Box<[u8]>,
    qtype: u16,
    qclass: u16,
    flags: KeyFlags,
    hash: u64,
}

impl LowerQuestion {
    /// The question of `key` (its name in any case), whose hash is `hash`.
    pub(crate) fn of_key(key: &Key<'_>, hash: u64) -> LowerQuestion {
        let mut qname: Box<[u8]> = key.qname.into();
        qname.make_ascii_lowercase();
        LowerQuestion {
            qname,
            qtype: key.qtype,
            qclass: key.qclass,
            flags: key.flags(),
            hash,
        }
    }

    /// The cache key, borrowed.
    pub(crate) fn key(&self) -> Key<'_> {
        Key::from_parts(&self.qname, self.qtype, self.qclass, self.flags)
    }

    /// The question as it goes upstream (name in lower case).
    pub(crate) fn wire(&self) -> Question<'_> {
        Question {
            name: &self.qname,
            qtype: self.qtype,
            qclass: self.qclass,
        }
    }

    /// The lowercased name, uncompressed wire form.
    pub(crate) fn qname(&self) -> &[u8] {
        &self.qname
    }

    pub(crate) fn qtype(&self) -> u16 {
        self.qtype
    }

    pub(crate) fn qclass(&self) -> u16 {
        self.qclass
    }

    /// The DO and CD bits.
    pub(crate) fn flags(&self) -> KeyFlags {
        self.flags
    }

    /// The cache key's hash under the group's seed.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }
}

/// What identifies one resolution: the question, the server block it was routed to, and the
/// transport to the upstreams. Clients and shards share a resolution only when all three
/// match (a TCP client must not get the truncated reply of a query that went over UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingKey {
    /// Index into [`crate::Config::servers`].
    pub(crate) server: u16,
    pub(crate) question: LowerQuestion,
    pub(crate) protocol: Protocol,
}

impl PendingKey {
    /// The server block as an index.
    pub(crate) fn server(&self) -> usize {
        usize::from(self.server)
    }

    /// The key's hash (the question's).
    pub(crate) fn hash(&self) -> u64 {
        self.question.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_lowercased_and_the_key_survives() {
        let key = Key::from_parts(b"\x03WwW\x07Example\x00", 28, 1, KeyFlags::new(true, false));
        let question = LowerQuestion::of_key(&key, 42);
        assert_eq!(question.qname(), b"\x03www\x07example\x00");
        assert_eq!(question.key().hash_seeded(7), key.hash_seeded(7));
        assert!(
            question
                .key()
                .matches(key.qname, key.qtype, key.qclass, key.flags())
        );
        assert_eq!(question.flags(), KeyFlags::new(true, false));
        assert_eq!(
            (question.qtype(), question.qclass(), question.hash()),
            (28, 1, 42)
        );
        assert_eq!(
            question,
            LowerQuestion::of_key(
                &Key {
                    qname: b"\x03www\x07EXAMPLE\x00",
                    ..key
                },
                42
            )
        );
        assert_eq!(question.wire().name, question.qname());
    }
}
