//! What [`TestUpstream`] does with each query ([`Behaviour`], [`WrongId`]), and the
//! handle's methods that change it.

use std::collections::HashMap;
use std::time::Duration;

use hickory_proto::op::ResponseCode;

use super::{TestUpstream, lock, normalize_name};

/// How [`TestUpstream`] answers with a wrong message ID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WrongId {
    /// The right ID (default).
    #[default]
    Off,
    /// Only a reply with a wrong ID (the query's ID + 1, wrapping).
    Only,
    /// A reply with a wrong ID, then the same reply with the right ID (a proxy must skip the
    /// first and keep waiting).
    ThenRight,
}

/// What [`TestUpstream`] sends instead of a DNS reply ([`Behaviour::garbage`]): bytes that
/// are not a DNS message (pseudo-random, 40 to 100 of them, made from the query's ID and a
/// counter, never starting with the query's ID).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Garbage {
    /// A DNS reply (default).
    #[default]
    Off,
    /// Over UDP a datagram of garbage; over TCP garbage in a proper frame (its length first).
    Framed,
    /// Over UDP as [`Garbage::Framed`]; over TCP the bytes with no length prefix, so that
    /// their first two bytes read as one.
    Unframed,
}

/// How [`TestUpstream`] cuts its TCP replies short ([`Behaviour::truncate_tcp`]). No effect on
/// UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TruncateTcp {
    /// Whole frames (default).
    #[default]
    Off,
    /// The reply's length prefix and half its bytes, then FIN: the prefix promises more than
    /// ever comes.
    ThenClose,
    /// The reply's length prefix and half its bytes, then nothing more on that connection
    /// (later queries on it are read and discarded, not counted), as a server whose write
    /// blocked mid-frame. The connection stays open until the client closes it.
    ThenSilence,
}

/// What [`TestUpstream`] does with each query. Read once per query, when it is received.
/// `Default` is a well-behaved server: answers at once, concurrently, right ID and question.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// TCP: answer the queries of one connection one at a time, in the order received, each
    /// after its delay counted from when the previous answer was sent (or from when it was
    /// received, if later), like CoreDNS (miekg/dns). Off: each query on a connection is
    /// answered on its own after its own delay, out of order if delays differ. No effect on
    /// UDP.
    pub serialize_tcp: bool,
    /// Delay before every answer (from receipt of the query, or see `serialize_tcp`).
    pub delay: Duration,
    /// Per-name delays (keys lowercased, absolute, with the trailing dot), replacing `delay`
    /// for queries of any type for that name.
    pub name_delays: HashMap<String, Duration>,
    /// Read queries (UDP and TCP), count them, never answer.
    pub drop_queries: bool,
    /// On a TCP query: count it, then close the connection with RST (SO_LINGER 0) without
    /// answering. No effect on UDP.
    pub reset_connections: bool,
    /// Close each TCP connection with FIN once N queries have been answered on it. Queries
    /// received on it after the Nth are read and discarded (not counted). `Some(0)`: FIN
    /// right after accepting.
    pub close_after: Option<usize>,
    /// Close a TCP connection with FIN when it has had no query in flight and no traffic for
    /// this long (a server's idle timeout). `None` (default): never.
    pub idle_timeout: Option<Duration>,
    /// Answer with a wrong ID.
    pub wrong_id: WrongId,
    /// Answer with the right ID but question name
    /// [`zone::WRONG_QUESTION`](super::zone::WRONG_QUESTION) (same type and class); the
    /// records are those for the real question.
    pub wrong_question: bool,
    /// Answer every query with this RCODE and no records (extended RCODEs need a query with
    /// EDNS, else the reply is not encodable and counts as malformed).
    pub rcode: Option<ResponseCode>,
    /// Over UDP, answer with TC=1 and no records (to exercise a retry over TCP).
    pub truncate_udp: bool,
    /// Send garbage instead of the reply (after the query's delay). Counted in
    /// [`UpstreamStats::garbled`](super::UpstreamStats::garbled), not as answered.
    pub garbage: Garbage,
    /// Over TCP, cut the reply short (after the query's delay). Counted in
    /// [`UpstreamStats::garbled`](super::UpstreamStats::garbled), not as answered.
    pub truncate_tcp: TruncateTcp,
}

impl TestUpstream {
    /// A copy of the current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        lock(&self.inner.behaviour).clone()
    }

    /// Replaces the whole behaviour.
    pub fn set_behaviour(&self, b: Behaviour) -> &Self {
        *lock(&self.inner.behaviour) = b;
        self
    }

    /// Back to [`Behaviour::default`] (a well-behaved server).
    pub fn reset_behaviour(&self) -> &Self {
        self.set_behaviour(Behaviour::default())
    }

    fn with(&self, f: impl FnOnce(&mut Behaviour)) -> &Self {
        f(&mut lock(&self.inner.behaviour));
        self
    }

    /// See [`Behaviour::serialize_tcp`].
    pub fn serialize_tcp(&self, on: bool) -> &Self {
        self.with(|b| b.serialize_tcp = on)
    }

    /// See [`Behaviour::delay`].
    pub fn delay(&self, d: Duration) -> &Self {
        self.with(|b| b.delay = d)
    }

    /// Delay for queries of `name` (any case, with or without the trailing dot), replacing
    /// the global delay. See [`Behaviour::name_delays`].
    pub fn delay_name(&self, name: &str, d: Duration) -> &Self {
        let key = normalize_name(name);
        self.with(|b| {
            b.name_delays.insert(key, d);
        })
    }

    /// Removes every per-name delay.
    pub fn clear_name_delays(&self) -> &Self {
        self.with(|b| b.name_delays.clear())
    }

    /// See [`Behaviour::drop_queries`].
    pub fn drop_queries(&self, on: bool) -> &Self {
        self.with(|b| b.drop_queries = on)
    }

    /// See [`Behaviour::reset_connections`].
    pub fn reset_connections(&self, on: bool) -> &Self {
        self.with(|b| b.reset_connections = on)
    }

    /// See [`Behaviour::close_after`].
    pub fn close_after(&self, n: Option<usize>) -> &Self {
        self.with(|b| b.close_after = n)
    }

    /// See [`Behaviour::idle_timeout`].
    pub fn idle_timeout(&self, d: Option<Duration>) -> &Self {
        self.with(|b| b.idle_timeout = d)
    }

    /// `true`: answer with a wrong ID only ([`WrongId::Only`]); `false`: the right ID.
    pub fn wrong_id(&self, on: bool) -> &Self {
        self.with(|b| b.wrong_id = if on { WrongId::Only } else { WrongId::Off })
    }

    /// `true`: a wrong-ID reply, then the right one ([`WrongId::ThenRight`]); `false`: the
    /// right ID only.
    pub fn wrong_id_then_right(&self, on: bool) -> &Self {
        self.with(|b| b.wrong_id = if on { WrongId::ThenRight } else { WrongId::Off })
    }

    /// See [`Behaviour::wrong_question`].
    pub fn wrong_question(&self, on: bool) -> &Self {
        self.with(|b| b.wrong_question = on)
    }

    /// See [`Behaviour::rcode`].
    pub fn rcode(&self, rcode: Option<ResponseCode>) -> &Self {
        self.with(|b| b.rcode = rcode)
    }

    /// See [`Behaviour::truncate_udp`].
    pub fn truncate_udp(&self, on: bool) -> &Self {
        self.with(|b| b.truncate_udp = on)
    }

    /// See [`Behaviour::garbage`].
    pub fn garbage(&self, garbage: Garbage) -> &Self {
        self.with(|b| b.garbage = garbage)
    }

    /// See [`Behaviour::truncate_tcp`].
    pub fn truncate_tcp(&self, truncate: TruncateTcp) -> &Self {
        self.with(|b| b.truncate_tcp = truncate)
    }
}
