use thiserror::Error;

/// Why a message could not be parsed. Small and `Copy`, so the hot path can return it freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer than 12 bytes: there is no header to answer.
    #[error("message shorter than the 12-byte header")]
    ShortHeader,
    /// A name, record or field runs past the end of the message.
    #[error("message truncated")]
    Truncated,
    /// A label length byte uses the reserved 0b01/0b10 prefixes (label > 63 octets).
    #[error("label longer than 63 octets or reserved label type")]
    BadLabel,
    /// A name is longer than 255 octets in wire form.
    #[error("name longer than 255 octets")]
    NameTooLong,
    /// A compression pointer points forwards, at itself, or hops too often.
    #[error("invalid compression pointer")]
    BadPointer,
    /// A compression pointer leads into bytes a cached copy rewrites (the header, a TTL, the
    /// OPT record): the names would change when served ([`crate::check_patchable`]).
    #[error("compression pointer into the header, a TTL or the OPT record")]
    PatchedPointer,
    /// The question name uses compression (the question is the first name; it cannot).
    #[error("compressed question name")]
    CompressedQuestion,
    /// QDCOUNT is not 1.
    #[error("question count is not 1")]
    QuestionCount,
    /// More than one OPT record, or an OPT record whose owner is not the root.
    #[error("malformed EDNS OPT record")]
    BadOpt,
}
