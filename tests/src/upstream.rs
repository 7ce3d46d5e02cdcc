//! [`TestUpstream`]: a small, controllable DNS server for tests, standing in for CoreDNS (or
//! any upstream) behind the proxy.
//!
//! It is a real server on `127.0.0.1`, UDP and TCP on the same ephemeral port, running on its
//! own std threads (no async runtime): one UDP thread, one TCP accept thread, one reader
//! thread per TCP connection and one scheduler thread that sends delayed answers. Everything
//! is stopped and joined when the handle is dropped.
//!
//! It answers from a small built-in zone (see [`zone`]) and its misbehaviour can be switched
//! at run time through the handle (see [`Behaviour`]); the behaviour is read once per query,
//! when the query is received. It counts what it sees (see [`UpstreamStats`]).
//!
//! Order of decisions for each received message:
//! 1. unparseable, a response (QR=1), or not exactly one question: counted as malformed and
//!    dropped;
//! 2. counted (total, per protocol, per name and type, health probe) and logged (protocol,
//!    source address, ID, name: [`TestUpstream::seen`]);
//! 3. TCP and [`Behaviour::reset_connections`]: the connection is reset (RST), no answer;
//! 4. [`Behaviour::drop_queries`]: no answer;
//! 5. the answer: [`Behaviour::rcode`] if set, else the zone's; over UDP, TC=1 without
//!    records if [`Behaviour::truncate_udp`] or if it does not fit the client's size (512, or
//!    the EDNS size); [`Behaviour::wrong_question`] swaps the question name;
//! 6. [`Behaviour::garbage`]: garbage instead of the answer; over TCP,
//!    [`Behaviour::truncate_tcp`]: the answer's frame cut short, then FIN or silence;
//! 7. sent after the query's delay ([`Behaviour::name_delays`], else [`Behaviour::delay`]),
//!    with the wrong ID first or only as [`Behaviour::wrong_id`] says.
//!
//! Every blocking call has a bounded timeout: threads poll for shutdown every 50 ms; TCP
//! writes give up after 2 s.

mod behaviour;
mod handle;
mod reply;
mod scheduler;
mod stats;
mod tcp;
mod udp;
/// The data [`TestUpstream`] serves. Answers use the query's name as written (case kept).
pub mod zone;

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};

pub use behaviour::{Behaviour, Garbage, TruncateTcp, WrongId};
pub use handle::TestUpstream;
pub use stats::{SeenQuery, UpstreamStats};

use scheduler::Scheduler;
use tcp::Conn;

/// How often threads look at their stop flags (the read/accept timeout of every socket).
const POLL: Duration = Duration::from_millis(50);

struct Inner {
    shutdown: AtomicBool,
    behaviour: Mutex<Behaviour>,
    counters: Counters,
    sched: Scheduler,
    conns: Mutex<Vec<Weak<Conn>>>,
    conn_threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    udp: AtomicU64,
    tcp: AtomicU64,
    malformed: AtomicU64,
    health_probes: AtomicU64,
    answered: AtomicU64,
    garbled: AtomicU64,
    tcp_accepted: AtomicU64,
    tcp_open: AtomicU64,
    max_outstanding: AtomicU64,
    per_name: Mutex<HashMap<(String, RecordType), u64>>,
    /// The last [`stats::SEEN_MAX`] well-formed queries, oldest first.
    seen: Mutex<VecDeque<SeenQuery>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_lock<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_lock<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// Subtracts one, not below zero (a counter may have been reset in between).
fn decrement(a: &AtomicU64) {
    let _ = a.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some(v.saturating_sub(1))
    });
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// `name` lowercased, with a trailing dot (the key of per-name delays and counters).
pub fn normalize_name(name: &str) -> String {
    let mut s = name.to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn name_key(name: &Name) -> String {
    normalize_name(&name.to_ascii())
}
