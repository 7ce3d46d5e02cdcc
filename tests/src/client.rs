//! A small raw DNS client: queries built with hickory-proto (or by hand, for malformed input),
//! sent over UDP (with a timeout) or TCP (2-byte length framing, several queries per
//! connection), replies parsed with hickory-proto or read header-only.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::netns::Inside;

static ID_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, hard-to-repeat query ID (counter mixed with the clock; no RNG crate needed).
pub fn new_id() -> u16 {
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = (u64::from(n) << 32) ^ u64::from(t) ^ u64::from(std::process::id()) << 16;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let id = (x & 0xffff) as u16;
    if id == 0 { 0x5a5a } else { id }
}

/// A standard query (RD=1) for `name`/`rtype` with the given ID and an EDNS(0) OPT record
/// advertising 1232 bytes, like a stub resolver sends. hickory-proto writes the name
/// lower-cased whatever its case here: a test of case must set the wire bytes itself.
pub fn query_message(name: &str, rtype: RecordType, id: u16) -> Message {
    let name = Name::from_str(name).unwrap_or_else(|e| panic!("bad test name {name:?}: {e}"));
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_version(0);
    msg.set_edns(edns);
    msg
}

/// [`query_message`] without the OPT record (a plain RFC 1035 query: 512-byte UDP limit).
pub fn query_message_plain(name: &str, rtype: RecordType, id: u16) -> Message {
    let mut msg = query_message(name, rtype, id);
    *msg.extensions_mut() = None;
    msg
}

/// [`query_message`] in wire form.
pub fn build_query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    query_message(name, rtype, id)
        .to_vec()
        .expect("encoding a test query")
}

/// The fixed 12-byte DNS header, decoded by hand (works on replies hickory cannot parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub qr: bool,
    pub opcode: u8,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub ra: bool,
    /// The low 4 bits of the RCODE (the header part).
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

/// Decodes the header of `packet`; `None` if it is shorter than 12 bytes.
pub fn header_of(packet: &[u8]) -> Option<Header> {
    if packet.len() < 12 {
        return None;
    }
    let be = |i: usize| u16::from_be_bytes([packet[i], packet[i + 1]]);
    let flags = be(2);
    Some(Header {
        id: be(0),
        qr: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0xf) as u8,
        aa: flags & 0x0400 != 0,
        tc: flags & 0x0200 != 0,
        rd: flags & 0x0100 != 0,
        ra: flags & 0x0080 != 0,
        rcode: (flags & 0xf) as u8,
        qdcount: be(4),
        ancount: be(6),
        nscount: be(8),
        arcount: be(10),
    })
}

/// The raw bytes of the first question (uncompressed QNAME + QTYPE + QCLASS), for exact,
/// case-sensitive comparison between a query and its reply. `None` if there is no
/// question or its name uses compression.
pub fn wire_question(packet: &[u8]) -> Option<&[u8]> {
    let h = header_of(packet)?;
    if h.qdcount == 0 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = *packet.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
    }
    packet.get(12..i + 4)
}

/// The TTL of the first answer record.
pub fn first_ttl(msg: &Message) -> Option<u32> {
    msg.answers().first().map(|r| r.ttl())
}

/// A UDP client connected to one server, bound to one local port for its whole life (so
/// that, with SO_REUSEPORT sharding, all its queries reach the same shard).
#[derive(Debug)]
pub struct UdpClient {
    sock: UdpSocket,
    server: SocketAddr,
}

impl UdpClient {
    pub fn new(server: SocketAddr) -> Result<UdpClient> {
        ensure!(
            server.ip().is_loopback(),
            "test traffic must stay on loopback, not {server}"
        );
        UdpClient::bound(server)
    }

    /// A client inside a namespace the test created (any address there is the test's).
    pub fn inside(_: &Inside, server: SocketAddr) -> Result<UdpClient> {
        UdpClient::bound(server)
    }

    /// A client sending from `source`, a loopback address (127.0.0.0/8 or ::1: Linux accepts
    /// any address of 127.0.0.0/8 on `lo`), so that tests can play several clients.
    pub fn from_source(source: IpAddr, server: SocketAddr) -> Result<UdpClient> {
        ensure!(
            source.is_loopback() && server.ip().is_loopback(),
            "test traffic must stay on loopback, not {source} -> {server}"
        );
        let sock = UdpSocket::bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding a UDP client socket to {source}"))?;
        sock.connect(server)
            .with_context(|| format!("connecting UDP socket to {server}"))?;
        Ok(UdpClient { sock, server })
    }

    fn bound(server: SocketAddr) -> Result<UdpClient> {
        let bind: SocketAddr = match (server.is_ipv4(), server.ip().is_loopback()) {
            (true, true) => "127.0.0.1:0".parse()?,
            (false, true) => "[::1]:0".parse()?,
            (true, false) => "0.0.0.0:0".parse()?,
            (false, false) => "[::]:0".parse()?,
        };
        let sock = UdpSocket::bind(bind).context("binding a UDP client socket")?;
        sock.connect(server)
            .with_context(|| format!("connecting UDP socket to {server}"))?;
        Ok(UdpClient { sock, server })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("local_addr")
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    pub fn send_raw(&self, bytes: &[u8]) -> Result<()> {
        let n = self
            .sock
            .send(bytes)
            .with_context(|| format!("UDP send to {}", self.server))?;
        ensure!(n == bytes.len(), "short UDP send: {n} of {}", bytes.len());
        Ok(())
    }

    /// Waits up to `timeout` for one datagram. `Ok(None)` on timeout.
    pub fn recv_raw(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 65535];
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.sock.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(anyhow!("UDP recv from {}: {e}", self.server)),
        }
    }

    /// Sends raw bytes and waits for one datagram or the timeout.
    pub fn exchange_raw(&self, bytes: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>> {
        self.send_raw(bytes)?;
        self.recv_raw(timeout)
    }

    /// Sends `msg` and parses the first datagram that comes back.
    pub fn exchange(&self, msg: &Message, timeout: Duration) -> Result<Message> {
        let bytes = msg.to_vec()?;
        let started = Instant::now();
        let reply = self
            .exchange_raw(&bytes, timeout)?
            .ok_or_else(|| anyhow!("no UDP reply from {} within {timeout:?}", self.server))?;
        let parsed = Message::from_vec(&reply).with_context(|| {
            format!(
                "unparseable UDP reply ({} bytes after {:?}): {reply:02x?}",
                reply.len(),
                started.elapsed()
            )
        })?;
        Ok(parsed)
    }

    /// A fresh query for `name`/`rtype`; fails if no reply or the reply's ID differs.
    pub fn query(&self, name: &str, rtype: RecordType) -> Result<Message> {
        let id = new_id();
        let reply = self.exchange(&query_message(name, rtype, id), crate::QUERY_TIMEOUT)?;
        ensure!(
            reply.id() == id,
            "reply ID {:#06x} != query ID {id:#06x}",
            reply.id()
        );
        Ok(reply)
    }
}

/// A TCP client: one connection, RFC 1035 2-byte length framing.
#[derive(Debug)]
pub struct TcpClient {
    stream: TcpStream,
    server: SocketAddr,
}

impl TcpClient {
    pub fn connect(server: SocketAddr) -> Result<TcpClient> {
        ensure!(
            server.ip().is_loopback(),
            "test traffic must stay on loopback, not {server}"
        );
        TcpClient::connected(server)
    }

    /// A connection inside a namespace the test created (any address there is the test's).
    pub fn inside(_: &Inside, server: SocketAddr) -> Result<TcpClient> {
        TcpClient::connected(server)
    }

    fn connected(server: SocketAddr) -> Result<TcpClient> {
        let stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))
            .with_context(|| format!("TCP connect to {server}"))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(3)))?;
        Ok(TcpClient { stream, server })
    }

    /// Writes several messages, each framed, in ONE write (pipelining).
    pub fn send_many(&mut self, messages: &[Vec<u8>]) -> Result<()> {
        let mut buf = Vec::new();
        for m in messages {
            let len = u16::try_from(m.len()).context("message too long for TCP framing")?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(m);
        }
        self.stream
            .write_all(&buf)
            .with_context(|| format!("TCP write to {}", self.server))?;
        Ok(())
    }

    pub fn send_raw(&mut self, message: &[u8]) -> Result<()> {
        self.send_many(&[message.to_vec()])
    }

    /// Reads one framed message, within `timeout` overall.
    pub fn recv_raw(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut len = [0u8; 2];
        self.read_exact_until(&mut len, deadline)
            .context("reading TCP length prefix")?;
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        self.read_exact_until(&mut body, deadline)
            .context("reading TCP message body")?;
        Ok(body)
    }

    fn read_exact_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "timed out on {} after {got} of {} bytes",
                    self.server,
                    buf.len()
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => bail!(
                    "connection to {} closed after {got} of {} bytes",
                    self.server,
                    buf.len()
                ),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    bail!(
                        "timed out on {} after {got} of {} bytes",
                        self.server,
                        buf.len()
                    )
                }
                Err(e) => return Err(anyhow!("TCP read from {}: {e}", self.server)),
            }
        }
        Ok(())
    }

    pub fn recv(&mut self, timeout: Duration) -> Result<Message> {
        let reply = self.recv_raw(timeout)?;
        Message::from_vec(&reply).with_context(|| format!("unparseable TCP reply: {reply:02x?}"))
    }

    /// One query on this connection; fails if the reply's ID differs.
    pub fn query(&mut self, name: &str, rtype: RecordType) -> Result<Message> {
        let id = new_id();
        self.send_raw(&build_query(name, rtype, id))?;
        let reply = self.recv(crate::QUERY_TIMEOUT)?;
        ensure!(
            reply.id() == id,
            "reply ID {:#06x} != query ID {id:#06x}",
            reply.id()
        );
        Ok(reply)
    }
}
