//! DNS over TCP (RFC 7766), sans-IO: the 2-byte length framing in both directions and the
//! per-shard table of client connections with their idle deadlines. The drivers own the
//! sockets and call into these types; nothing here does I/O or reads the clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::handler::{Client, MAX_MESSAGE, Protocol};

/// Reassembles length-prefixed DNS messages from a byte stream delivered in arbitrary chunks.
///
/// Every length from 0 to 65535 is accepted (a zero-length message is handed on as an empty
/// slice; the handler decides what to do with it). Memory stays bounded: once the complete
/// messages are taken out, at most one partial message plus the last chunk is buffered.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub(crate) fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends a chunk of the stream.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, without its length prefix, if one is buffered.
    pub(crate) fn next_message(&mut self) -> Option<&[u8]> {
        let avail = &self.buf[self.start..];
        if avail.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([avail[0], avail[1]]));
        if avail.len() < 2 + len {
            return None;
        }
        let begin = self.start + 2;
        self.start = begin + len;
        Some(&self.buf[begin..begin + len])
    }

    /// Bytes received but not yet returned as a message (a partial message).
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Bytes waiting to be written to a stream socket, with the position of the first unwritten
/// byte, so a partial write continues where it stopped.
#[derive(Debug, Default)]
pub(crate) struct OutBuf {
    buf: Vec<u8>,
    pos: usize,
}

impl OutBuf {
    /// Appends `msg` with its 2-byte big-endian length prefix. Returns `false` (and queues
    /// nothing) if `msg` is longer than [`MAX_MESSAGE`].
    pub(crate) fn push_frame(&mut self, msg: &[u8]) -> bool {
        let Ok(len) = u16::try_from(msg.len()) else {
            return false;
        };
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(msg);
        true
    }

    /// The bytes still to be written.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` bytes of [`OutBuf::pending`] as written.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > MAX_MESSAGE {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Whether everything queued has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Number of bytes still to be written.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Frames `msg` for TCP: returns the 2-byte length prefix followed by the message, or `None`
/// if it is longer than [`MAX_MESSAGE`].
#[cfg(test)]
fn frame(msg: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(msg.len()).ok()?;
    let mut v = Vec::with_capacity(2 + msg.len());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(msg);
    Some(v)
}

/// One client TCP connection: the driver's I/O object `T` and its protocol state.
#[derive(Debug)]
pub(crate) struct ClientConn<T> {
    /// The socket (or whatever the driver uses).
    pub io: T,
    /// The identity handed to the handler for queries on this connection.
    pub client: Client,
    /// Incoming bytes not yet complete messages.
    pub decoder: FrameDecoder,
    /// Framed replies not yet written.
    pub out: OutBuf,
    /// Queries answered `Pending` whose reply has not been queued yet.
    pub pending: usize,
    /// Last time a whole query came in, a reply was queued or reply bytes were written (or
    /// the connection opened). Bytes of a query not yet complete do not count: a client
    /// sending a byte now and then is closed at the idle timeout like a silent one.
    pub last_active: Instant,
    /// Since when its replies have waited with no byte of them written: set by a write that
    /// leaves bytes behind, moved on by each write that makes progress, cleared when all is
    /// written. A client that stops reading is closed `idle` after it.
    pub write_stalled: Option<Instant>,
    /// The peer closed its sending side: read nothing more, close once everything is written.
    pub read_closed: bool,
    /// Whether the driver currently asks for writability (driver bookkeeping).
    pub want_write: bool,
    /// Whether the driver currently leaves the connection's queries unread because too many
    /// replies wait ([`READ_PAUSE`]; driver bookkeeping).
    pub read_paused: bool,
}

/// Unwritten reply bytes beyond which a connection's queries are left unread until the client
/// reads (its sends then block in the kernel): a client that never reads costs a bounded
/// buffer, not one that grows with what it sends.
pub(crate) const READ_PAUSE: usize = 64 * 1024;

impl<T> ClientConn<T> {
    /// Whether its queries are to be read now: not at the end of its stream, and not too
    /// many replies waiting.
    pub(crate) fn wants_read(&self) -> bool {
        !self.read_closed && self.out.len() < READ_PAUSE
    }

    /// After a write of its replies left `before` bytes to go: notes progress or a stall.
    pub(crate) fn wrote(&mut self, now: Instant, before: usize) {
        if self.out.is_empty() {
            self.write_stalled = None;
        } else if self.out.len() < before || self.write_stalled.is_none() {
            self.write_stalled = Some(now);
        }
        if self.out.len() < before {
            self.last_active = now;
        }
    }

    /// Nothing is owed to the client: no reply pending upstream and nothing left to write.
    pub(crate) fn is_quiet(&self) -> bool {
        self.pending == 0 && self.out.is_empty()
    }

    /// Queues a framed reply; a reply for a `Pending` query also settles one pending count.
    pub(crate) fn queue_reply(&mut self, now: Instant, msg: &[u8], was_pending: bool) -> bool {
        if was_pending {
            self.pending = self.pending.saturating_sub(1);
        }
        self.last_active = now;
        self.out.push_frame(msg)
    }
}

/// What to do with a newly accepted connection, see [`ClientTable::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Below the cap: insert it.
    Room,
    /// At the cap: close this (the longest-idle quiet) connection first, then insert.
    Evict(u32),
    /// At the cap and every connection still owes a reply: close the new connection.
    Full,
}

/// The client TCP connections of one shard, keyed by a nonzero token (the
/// [`Client::conn`] the handler sees).
///
/// Idle policy: a connection with nothing owed (no pending reply, nothing unwritten) is
/// closed after `idle` without a whole query or a reply (see [`ClientConn::last_active`]),
/// and so is one whose replies have waited `idle` for the client to read a byte of them
/// ([`ClientConn::write_stalled`]); one that still owes replies gets `idle + grace`
/// (the grace covers the engine's query timeout, after which it always replies).
///
/// Cap policy: at `max` connections, a new connection evicts the longest-idle quiet
/// connection; if none is quiet, the new connection is refused (closed at once).
#[derive(Debug)]
pub(crate) struct ClientTable<T> {
    conns: HashMap<u32, ClientConn<T>>,
    next_token: u32,
    max: usize,
    idle: Duration,
    grace: Duration,
}

impl<T> ClientTable<T> {
    /// A table holding at most `max` connections (at least 1), closing them after `idle`.
    pub(crate) fn new(max: usize, idle: Duration, grace: Duration) -> ClientTable<T> {
        ClientTable {
            conns: HashMap::new(),
            next_token: 1,
            max: max.max(1),
            idle,
            grace,
        }
    }

    /// The most connections it keeps.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Decides whether a new connection fits (see the cap policy on [`ClientTable`]).
    pub(crate) fn admit(&self) -> Admission {
        if self.conns.len() < self.max {
            return Admission::Room;
        }
        self.conns
            .iter()
            .filter(|(_, c)| c.is_quiet())
            .min_by_key(|(_, c)| c.last_active)
            .map_or(Admission::Full, |(t, _)| Admission::Evict(*t))
    }

    /// Inserts a connection from `peer` on listener `listener`; returns its token.
    pub(crate) fn insert(&mut self, now: Instant, io: T, listener: u16, peer: SocketAddr) -> u32 {
        let mut token = self.next_token;
        while token == 0 || self.conns.contains_key(&token) {
            token = token.wrapping_add(1);
        }
        self.next_token = token.wrapping_add(1);
        let client = Client {
            listener,
            protocol: Protocol::Tcp,
            peer,
            conn: token,
        };
        let conn = ClientConn {
            io,
            client,
            decoder: FrameDecoder::new(),
            out: OutBuf::default(),
            pending: 0,
            last_active: now,
            write_stalled: None,
            read_closed: false,
            want_write: false,
            read_paused: false,
        };
        self.conns.insert(token, conn);
        token
    }

    /// The connection with this token.
    pub(crate) fn get_mut(&mut self, token: u32) -> Option<&mut ClientConn<T>> {
        self.conns.get_mut(&token)
    }

    /// Removes and returns a connection.
    pub(crate) fn remove(&mut self, token: u32) -> Option<ClientConn<T>> {
        self.conns.remove(&token)
    }

    /// Whether `conn`'s replies have waited `idle` with no byte of them written (a client
    /// that stopped reading).
    pub(crate) fn is_stalled(&self, conn: &ClientConn<T>, now: Instant) -> bool {
        conn.write_stalled
            .is_some_and(|since| now.saturating_duration_since(since) >= self.idle)
    }

    /// [`ClientTable::is_stalled`] for the connection with this token.
    pub(crate) fn stalled(&self, token: u32, now: Instant) -> bool {
        self.conns
            .get(&token)
            .is_some_and(|conn| self.is_stalled(conn, now))
    }

    /// Whether a connection is due to be closed at `now` under the idle policy.
    pub(crate) fn is_expired(&self, conn: &ClientConn<T>, now: Instant) -> bool {
        if self.is_stalled(conn, now) {
            return true;
        }
        let idle_for = now.saturating_duration_since(conn.last_active);
        if conn.is_quiet() {
            idle_for >= self.idle
        } else {
            idle_for >= self.idle + self.grace
        }
    }

    /// Appends to `out` the tokens of the connections to close at `now`: expired ones, and
    /// half-closed ones with nothing left to write.
    pub(crate) fn expired(&self, now: Instant, out: &mut Vec<u32>) {
        for (token, conn) in &self.conns {
            if self.is_expired(conn, now) || (conn.read_closed && conn.is_quiet()) {
                out.push(*token);
            }
        }
    }

    /// The tokens of every connection.
    pub(crate) fn tokens(&self) -> Vec<u32> {
        self.conns.keys().copied().collect()
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Removes every connection, returning them (for shutdown).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = ClientConn<T>> + '_ {
        self.conns.drain().map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        msgs.iter().flat_map(|m| frame(m).expect("small")).collect()
    }

    #[test]
    fn decoder_yields_messages_from_any_chunking() {
        let big = vec![7u8; 65535];
        let msgs: Vec<&[u8]> = vec![b"abc", b"", b"hello world", &big, b"z"];
        let stream = framed(&msgs);
        for chunk in [1usize, 2, 3, 5, 1000, stream.len()] {
            let mut d = FrameDecoder::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for c in stream.chunks(chunk) {
                d.push(c);
                while let Some(m) = d.next_message() {
                    got.push(m.to_vec());
                }
            }
            assert_eq!(got.len(), msgs.len(), "chunk {chunk}");
            for (g, m) in got.iter().zip(&msgs) {
                assert_eq!(g.as_slice(), *m);
            }
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn decoder_waits_for_partial_length_and_body() {
        let mut d = FrameDecoder::new();
        d.push(&[0]);
        assert!(d.next_message().is_none());
        d.push(&[3, b'a']);
        assert!(d.next_message().is_none());
        d.push(b"bc\x00");
        assert_eq!(d.next_message(), Some(&b"abc"[..]));
        assert!(d.next_message().is_none());
        assert_eq!(d.buffered(), 1);
    }

    #[test]
    fn outbuf_partial_writes() {
        let mut o = OutBuf::default();
        assert!(o.is_empty());
        assert!(o.push_frame(b"hi"));
        assert!(o.push_frame(b"there"));
        assert_eq!(o.pending(), b"\x00\x02hi\x00\x05there");
        o.consume(3);
        assert_eq!(o.pending(), b"i\x00\x05there");
        o.consume(100);
        assert!(o.is_empty());
        assert!(!o.push_frame(&vec![0u8; 65536]));
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn table_idle_and_cap() {
        let t0 = Instant::now();
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let mut t: ClientTable<()> =
            ClientTable::new(2, Duration::from_secs(10), Duration::from_secs(5));
        let a = t.insert(t0, (), 0, peer);
        let b = t.insert(t0 + Duration::from_secs(1), (), 0, peer);
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_eq!(t.admit(), Admission::Evict(a));
        t.get_mut(a).expect("a").pending = 1;
        assert_eq!(t.admit(), Admission::Evict(b));
        t.get_mut(b).expect("b").out.push_frame(b"x");
        assert_eq!(t.admit(), Admission::Full);

        let mut out = Vec::new();
        t.expired(t0 + Duration::from_secs(12), &mut out);
        assert!(out.is_empty(), "both owe something");
        t.expired(t0 + Duration::from_secs(16), &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![a, b]);
        let c = t.get_mut(a).expect("a");
        c.pending = 0;
        c.read_closed = true;
        out.clear();
        t.expired(t0, &mut out);
        assert_eq!(out, vec![a]);
        assert!(t.remove(a).is_some());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_client_that_stops_reading_is_closed_at_the_idle_timeout() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let mut t: ClientTable<()> =
            ClientTable::new(8, Duration::from_secs(10), Duration::from_secs(5));
        let a = t.insert(t0, (), 0, peer);
        let c = t.get_mut(a).expect("a");
        // A write that leaves bytes behind starts the stall; queries keep coming (activity).
        c.out.push_frame(&[0u8; 100]);
        c.wrote(t0, c.out.len());
        assert_eq!(c.write_stalled, Some(t0));
        c.last_active = t0 + 9 * second;
        c.wrote(t0 + 9 * second, c.out.len());
        assert_eq!(c.write_stalled, Some(t0), "no progress: the stall goes on");
        let mut out = Vec::new();
        t.expired(t0 + 10 * second, &mut out);
        assert_eq!(
            out,
            vec![a],
            "stalled for the idle time, however busy reading"
        );
        // Progress moves the stall on; everything written ends it.
        let c = t.get_mut(a).expect("a");
        let before = c.out.len();
        c.out.consume(10);
        c.wrote(t0 + 10 * second, before);
        assert_eq!(c.write_stalled, Some(t0 + 10 * second));
        assert!(c.wants_read());
        c.out.push_frame(&vec![0u8; 40000]);
        c.out.push_frame(&vec![0u8; 40000]);
        assert!(
            !c.wants_read(),
            "too many replies waiting: its queries wait"
        );
        let before = c.out.len();
        c.out.consume(before);
        c.wrote(t0 + 11 * second, before);
        assert_eq!(c.write_stalled, None);
        assert!(c.wants_read());
    }
}
