//! The boundary between the drivers (which move bytes) and the engine (which decides).
//! Drivers are generic over [`Handler`], so tests can drive them with a simple handler and the
//! real [`crate::Engine`] is monomorphised into the loop.
//!
//! Input goes in through the `handle_*` methods; output comes out of three polls, each
//! drained by the driver after every batch of input: [`Handler::poll_transmit`] for the
//! network (replies, upstream queries, closes), [`Handler::poll_peer`] for the other shards,
//! and [`Handler::poll_timeout`] for when to call [`Handler::handle_timeout`] next.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::Control;

/// Largest DNS message (TCP framing limit). Reply buffers handed to
/// [`Handler::handle_query`] are at least this long.
pub const MAX_MESSAGE: usize = 65535;

/// Transport of a client query or an upstream link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Udp,
    Tcp,
}

/// Where a client query came from and where its reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    /// Index into [`crate::Config::listeners`] of the socket that received the query.
    pub listener: u16,
    pub protocol: Protocol,
    pub peer: SocketAddr,
    /// The driver's token for the client's TCP connection; 0 for UDP.
    pub conn: u32,
}

/// One way to reach an upstream. Each distinct `conn` is one socket, opened by the driver the
/// first time a [`Transmit::Query`] names it and closed on [`Transmit::Close`]: for TCP a
/// connection (non-blocking connect), for UDP a socket bound to a port the kernel picks at
/// random and connected to the upstream (the engine uses one per exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link {
    /// Index into [`crate::Config::upstreams`].
    pub upstream: u16,
    pub protocol: Protocol,
    pub conn: u32,
}

/// Why an upstream link failed, as the driver saw it: the step that failed and the system's
/// reason, so that logs say it in the words operators grep for (Go's, as CoreDNS prints
/// them: `dial tcp 10.96.0.10:53: connect: connection refused`, `read udp ...: EOF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkError {
    /// `dial`, `read` or `write`.
    pub operation: &'static str,
    /// The system's reason; `UnexpectedEof` when the upstream closed the connection.
    pub kind: io::ErrorKind,
}

impl LinkError {
    /// Connecting (or making the UDP socket) failed.
    pub fn dial(kind: io::ErrorKind) -> LinkError {
        LinkError {
            operation: "dial",
            kind,
        }
    }

    /// Reading failed (`UnexpectedEof`: the upstream closed the connection).
    pub fn read(kind: io::ErrorKind) -> LinkError {
        LinkError {
            operation: "read",
            kind,
        }
    }

    /// Writing failed.
    pub fn write(kind: io::ErrorKind) -> LinkError {
        LinkError {
            operation: "write",
            kind,
        }
    }
}

/// `connect: connection refused`, `EOF`, `broken pipe`: the reason as Go words it after the
/// operation and address.
impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operation == "dial" {
            f.write_str("connect: ")?;
        }
        match self.kind {
            io::ErrorKind::UnexpectedEof => f.write_str("EOF"),
            io::ErrorKind::ConnectionRefused => f.write_str("connection refused"),
            io::ErrorKind::ConnectionReset => f.write_str("connection reset by peer"),
            io::ErrorKind::BrokenPipe => f.write_str("broken pipe"),
            kind => write!(f, "{kind}"),
        }
    }
}

/// What the engine did with a client query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply of this many bytes was written to the start of the output buffer; send it now.
    Reply(usize),
    /// Nothing to send (RFC-mandated silent drop, e.g. a packet with QR=1 or no header).
    Drop,
    /// Forwarded upstream; the reply will come out of [`Handler::poll_transmit`].
    Pending,
}

/// Network output of the engine that is not an immediate reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A reply to a client whose query waited for an upstream (or timed out). If the client's
    /// TCP connection is gone, the driver drops it.
    Reply { client: Client, payload: Vec<u8> },
    /// A query for an upstream. For TCP the driver adds the 2-byte length prefix and, if the
    /// link has no connection yet, connects to `addr` first (queueing the bytes until then).
    Query {
        link: Link,
        addr: SocketAddr,
        payload: Vec<u8>,
    },
    /// The engine is done with a link (a TCP connection idle or broken, a UDP socket whose
    /// exchanges are over); the driver closes it.
    Close { link: Link },
}

/// The protocol logic a driver serves. Every method takes `now`; none does I/O.
pub trait Handler {
    /// What the shards of one group send each other. The drivers carry it from
    /// [`Handler::poll_peer`] of one shard to [`Handler::handle_peer`] of another and never
    /// look inside.
    type Peer: Send + 'static;

    /// A query arrived from `client`. A reply, if immediate, is written into `out`
    /// (at least [`MAX_MESSAGE`] bytes).
    fn handle_query(
        &mut self,
        now: Instant,
        client: Client,
        query: &[u8],
        out: &mut [u8],
    ) -> Outcome;
    /// A complete message arrived on an upstream link (TCP framing already removed).
    fn handle_response(&mut self, now: Instant, link: Link, response: &[u8]);
    /// An upstream link failed or closed (connection refused, reset, EOF, ICMP error on UDP),
    /// for the reason `error`. Queries in flight on it are retried elsewhere or failed.
    fn handle_link_closed(&mut self, now: Instant, link: Link, error: LinkError);
    /// A message from the process arrived (read before any waiting peer message).
    fn handle_control(&mut self, now: Instant, control: Control);
    /// A message from another shard arrived.
    fn handle_peer(&mut self, now: Instant, message: Self::Peer);
    /// A client TCP connection closed: replies still pending for it can be discarded.
    fn handle_client_closed(&mut self, now: Instant, client: Client);
    /// Time has reached (or passed) the deadline returned by [`Handler::poll_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// The earliest instant at which [`Handler::handle_timeout`] must be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next network output to perform. Drivers drain it after every batch of input.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next message for another shard of the group: its index and the message.
    /// Drivers drain it after every batch of input, queue each message to its shard and
    /// wake each shard once.
    fn poll_peer(&mut self) -> Option<(usize, Self::Peer)>;
    /// Whether the handler owes nothing: no query in flight, nothing left to transmit. A
    /// draining shard (see [`crate::Drain`]) leaves once it is.
    fn is_idle(&self) -> bool {
        true
    }
}
