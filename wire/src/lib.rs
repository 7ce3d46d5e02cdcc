//! DNS wire format for shardns: zero-copy views over received messages and the few builders
//! the proxy needs (error replies, truncation, EDNS OPT records, upstream queries).
//!
//! Nothing here allocates or performs I/O. Every read is bounds-checked; malformed input is
//! reported as a [`ParseError`], never a panic.
//!
//! - [`Header`]: the fixed 12-byte header.
//! - [`Message::parse`]: header + the single question + the EDNS OPT record, as a view.
//! - [`RecordWalk`]: a walk over answer/authority/additional records that reports each
//!   TTL's byte offset, following compression pointers safely.
//! - [`check_patchable`]: whether a response's names survive the cache's in-place rewrites.
//! - [`Key`]: the cache key (lowercased qname, qtype, qclass, DO, CD) and its hash.
//! - [`Rcode`]: response codes with their names.
//! - [`build`]: error replies, truncation, OPT append, upstream query construction.
#![forbid(unsafe_code)]

pub mod build;
mod error;
mod header;
mod key;
mod message;
mod name;
mod patch;
mod rcode;
mod walk;

pub use error::ParseError;
pub use header::{HEADER_LEN, Header, opcode, rtype};
pub use key::{Key, KeyFlags};
pub use message::{Edns, Message, Question};
pub use name::{
    MAX_NAME_LEN, name_eq_ignore_case, name_eq_lowercase, question_name_len, skip_name,
};
pub use patch::check_patchable;
pub use rcode::Rcode;
pub use walk::{Record, RecordWalk, Section, WalkSummary};
