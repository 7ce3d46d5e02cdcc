//! shardns's in-kernel fast path for cache hits (issue 14, first part): a TC ingress program
//! (`bpf/fastpath.bpf.c`) that answers a query from a map of prebuilt answers and sends the
//! answer back out of the interface it came in on, and its loader.
//!
//! [`Fastpath::load`] loads the program (embedded with the `bpf` feature, which compiles it
//! with clang) and its maps; [`Fastpath::attach`] puts it on an interface's ingress (tcx on
//! kernels ≥ 6.6, a `clsact` qdisc before); [`Fastpath::serve`] names the addresses it
//! answers for; [`Fastpath::insert`] and [`Fastpath::remove`] fill the answers map with
//! [`AnswerKey`] and [`Answer`]; [`Fastpath::stats`] sums its per-CPU counters and
//! [`Fastpath::hits`] an entry's. Dropping a [`Fastpath`] detaches it from every interface.
//! Design, limits and what is left: docs/FASTPATH.md.

#![forbid(unsafe_code)]

mod layout;
mod loader;
mod netlink;

pub use layout::{
    Answer, AnswerKey, KEY_LEN, KEY_QNAME_LEN, Lifetime, MAX_ANSWER_DATA, MAX_ENTRIES, MAX_TTLS,
    QueryBits, VALUE_HEADER_LEN, VALUE_LEN, boot_time_ns,
};
pub use loader::{Fastpath, OBJECT, STAND_IN_OBJECT, Stats};
pub use netlink::LinkEvents;

/// What can go wrong loading, attaching or filling the fast path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The crate was built without the `bpf` feature, so it holds no object to load.
    #[error("shardns-fastpath was built without the bpf feature: no BPF object to load")]
    NoObject,
    /// The object does not parse or a map cannot be made.
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// The verifier refused the program, or attaching or detaching failed.
    #[error("BPF program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// A map operation failed.
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// The object lacks something the loader expects (a stale object).
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    /// Other programs are attached to the interface (a CNI's): the fast path would answer
    /// hits before them. Attach with [`Fastpath::attach_anyway`] to proceed.
    #[error(
        "{interface} already has eBPF programs attached ({}); the fast path would answer hits \
         before them: refusing to attach",
        programs.join(", ")
    )]
    Occupied {
        interface: String,
        programs: Vec<String>,
    },
    /// The interface is not one the fast path is attached to.
    #[error("the fast path is not attached to {0}")]
    NotAttached(String),
    /// A key or answer cannot be laid out (a malformed name or response, an answer too long).
    #[error("{0}")]
    Layout(String),
    /// The answers map holds [`MAX_ENTRIES`] entries already.
    #[error("the fast path's answers map is full ({MAX_ENTRIES} entries)")]
    Full,
    /// The network namespace of an attachment cannot be opened or joined.
    #[error("network namespace: {0}")]
    Namespace(std::io::Error),
    /// The boot clock cannot be read.
    #[error("reading CLOCK_BOOTTIME: {0}")]
    Clock(std::io::Error),
}
