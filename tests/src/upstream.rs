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
//! 2. counted (total, per protocol, per name and type, health probe);
//! 3. TCP and [`Behaviour::reset_connections`]: the connection is reset (RST), no answer;
//! 4. [`Behaviour::drop_queries`]: no answer;
//! 5. the answer: [`Behaviour::rcode`] if set, else the zone's; over UDP, TC=1 without
//!    records if [`Behaviour::truncate_udp`] or if it does not fit the client's size (512, or
//!    the EDNS size); [`Behaviour::wrong_question`] swaps the question name;
//! 6. sent after the query's delay ([`Behaviour::name_delays`], else [`Behaviour::delay`]),
//!    with the wrong ID first or only as [`Behaviour::wrong_id`] says.
//!
//! Every blocking call has a bounded timeout: threads poll for shutdown every 50 ms; TCP
//! writes give up after 2 s.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// The data [`TestUpstream`] serves. Answers use the query's name as written (case kept).
pub mod zone {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The zone apex. `upstream.test. SOA` and `upstream.test. NS` are answered.
    pub const ZONE: &str = "upstream.test.";
    /// TTL of every positive record.
    pub const TTL: u32 = 300;
    /// TTL of the SOA sent in the authority section of negative answers, and its MINIMUM.
    pub const NEG_TTL: u32 = 60;
    /// SOA MNAME, and the target of the NS records of the apex and of the root.
    pub const NS_NAME: &str = "ns.upstream.test.";
    /// SOA RNAME.
    pub const HOSTMASTER: &str = "hostmaster.upstream.test.";
    /// SOA serial.
    pub const SERIAL: u32 = 1;

    /// `hostN.upstream.test.` (N in 0..=255, written without leading zeros): one A record
    /// [`host_a`]`(N)`, TTL [`TTL`]; other types: NODATA with the SOA.
    pub fn host(n: u8) -> String {
        format!("host{n}.upstream.test.")
    }
    /// 198.51.100.N.
    pub fn host_a(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 51, 100, n)
    }

    /// A and AAAA.
    pub const DUAL: &str = "dual.upstream.test.";
    pub const DUAL_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    pub const DUAL_AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    /// [`BIG_COUNT`] A records [`big_a`]`(0..BIG_COUNT)`: a reply of about 680 bytes, more
    /// than 512 (over UDP without EDNS it comes back with TC=1 and no records).
    pub const BIG: &str = "big.upstream.test.";
    pub const BIG_COUNT: u8 = 40;
    /// 203.0.113.(1+i).
    pub fn big_a(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, 1 + i)
    }

    /// A name under the zone that does not exist: NXDOMAIN with the SOA in authority (any
    /// other unknown name under the zone behaves the same).
    pub const MISSING: &str = "missing.upstream.test.";
    /// A name outside the zone: REFUSED, no records.
    pub const OUTSIDE: &str = "outside.example.";
    /// The question name sent back under [`crate::upstream::Behaviour::wrong_question`].
    pub const WRONG_QUESTION: &str = "wrong-question.upstream.test.";
    /// The EDNS UDP size advertised in the OPT record mirrored into replies.
    pub const EDNS_PAYLOAD: u16 = 1232;
}

/// How often threads look at their stop flags (the read/accept timeout of every socket).
const POLL: Duration = Duration::from_millis(50);
/// Write timeout on accepted TCP connections.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After sending FIN, how long a connection is drained (input read and discarded) before it
/// is closed, if the peer does not close first.
const FIN_LINGER: Duration = Duration::from_secs(1);

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
    /// Answer with the right ID but question name [`zone::WRONG_QUESTION`] (same type and
    /// class); the records are those for the real question.
    pub wrong_question: bool,
    /// Answer every query with this RCODE and no records (extended RCODEs need a query with
    /// EDNS, else the reply is not encodable and counts as malformed).
    pub rcode: Option<ResponseCode>,
    /// Over UDP, answer with TC=1 and no records (to exercise a retry over TCP).
    pub truncate_udp: bool,
}

/// A snapshot of [`TestUpstream`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Well-formed queries received (UDP + TCP), answered or not.
    pub queries: u64,
    pub udp_queries: u64,
    pub tcp_queries: u64,
    /// Messages that were not a parseable query with one question (dropped).
    pub malformed: u64,
    /// `. IN NS` queries (the health-check probe of CoreDNS's forward).
    pub health_probes: u64,
    /// Queries answered (a reply written; a wrong-ID-then-right pair counts once).
    pub answered: u64,
    pub tcp_connections_accepted: u64,
    /// TCP connections open right now (a gauge: not cleared by `reset_counters`).
    pub tcp_connections_open: u64,
    /// The most queries outstanding (received, not yet answered) on one TCP connection at
    /// once. Dropped queries stay outstanding while their connection lives. All complete
    /// frames of one read are counted before any is answered, so pipelined queries show up
    /// even without a delay.
    pub max_outstanding_per_connection: u64,
}

/// A running test upstream. See the module documentation.
pub struct TestUpstream {
    inner: Arc<Inner>,
    addr: SocketAddr,
    listeners: Mutex<Option<Listeners>>,
    scheduler: Option<JoinHandle<()>>,
}

impl fmt::Debug for TestUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestUpstream")
            .field("addr", &self.addr)
            .field("listening", &self.is_listening())
            .field("behaviour", &self.behaviour())
            .finish()
    }
}

struct Listeners {
    stop: Arc<AtomicBool>,
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

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
    tcp_accepted: AtomicU64,
    tcp_open: AtomicU64,
    max_outstanding: AtomicU64,
    per_name: Mutex<HashMap<(String, RecordType), u64>>,
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

impl TestUpstream {
    /// Starts the server on a port free for both UDP and TCP on 127.0.0.1.
    pub fn start() -> Result<TestUpstream> {
        let inner = Arc::new(Inner {
            shutdown: AtomicBool::new(false),
            behaviour: Mutex::new(Behaviour::default()),
            counters: Counters::default(),
            sched: Scheduler::default(),
            conns: Mutex::new(Vec::new()),
            conn_threads: Mutex::new(Vec::new()),
        });
        let mut bound = None;
        let mut last_err = anyhow::anyhow!("never tried");
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").context("binding UDP on 127.0.0.1")?;
            let port = udp.local_addr()?.port();
            match bind_tcp(port) {
                Ok(tcp) => {
                    bound = Some((udp, tcp, port));
                    break;
                }
                Err(e) => last_err = e.into(),
            }
        }
        let Some((udp, tcp, port)) = bound else {
            return Err(last_err.context("no port free for both UDP and TCP on 127.0.0.1"));
        };
        let sched_inner = inner.clone();
        let scheduler = std::thread::Builder::new()
            .name("upstream-sched".into())
            .spawn(move || run_scheduler(&sched_inner))
            .context("spawning the scheduler thread")?;
        let mut up = TestUpstream {
            inner,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            listeners: Mutex::new(None),
            scheduler: Some(scheduler),
        };
        let listeners = up.spawn_listeners(udp, tcp)?;
        *up.listeners
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = Some(listeners);
        Ok(up)
    }

    fn spawn_listeners(&self, udp: UdpSocket, tcp: Socket) -> Result<Listeners> {
        udp.set_read_timeout(Some(POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (i, s) = (self.inner.clone(), stop.clone());
        let udp = std::thread::Builder::new()
            .name("upstream-udp".into())
            .spawn(move || serve_udp(&i, udp, &s))
            .context("spawning the UDP thread")?;
        let (i, s) = (self.inner.clone(), stop.clone());
        let tcp = match std::thread::Builder::new()
            .name("upstream-accept".into())
            .spawn(move || serve_accept(&i, &tcp, &s))
        {
            Ok(t) => t,
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                let _ = udp.join();
                return Err(e).context("spawning the TCP accept thread");
            }
        };
        Ok(Listeners { stop, udp, tcp })
    }

    /// The address (127.0.0.1:PORT), the same for UDP and TCP, across stop/start.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether the listening sockets are open (see [`TestUpstream::stop_listening`]).
    pub fn is_listening(&self) -> bool {
        lock(&self.listeners).is_some()
    }

    /// Closes the listening UDP and TCP sockets and every open TCP connection (FIN), and
    /// waits for their threads: afterwards TCP connects get ECONNREFUSED and UDP queries an
    /// ICMP port unreachable. Answers still scheduled are not sent. No-op if not listening.
    pub fn stop_listening(&self) {
        let listeners = lock(&self.listeners).take();
        if let Some(l) = listeners {
            l.stop.store(true, Ordering::SeqCst);
            let _ = l.udp.join();
            let _ = l.tcp.join();
        }
        self.close_connections();
    }

    /// Reopens the listening sockets on the same port. No-op if listening. Fails if the port
    /// was taken meanwhile.
    pub fn start_listening(&self) -> Result<()> {
        let mut guard = lock(&self.listeners);
        if guard.is_some() {
            return Ok(());
        }
        let udp = UdpSocket::bind(self.addr)
            .with_context(|| format!("rebinding UDP on {}", self.addr))?;
        let tcp =
            bind_tcp(self.port()).with_context(|| format!("rebinding TCP on {}", self.addr))?;
        *guard = Some(self.spawn_listeners(udp, tcp)?);
        Ok(())
    }

    /// Closes every open TCP connection (FIN) and joins their threads; keeps listening.
    pub fn close_connections(&self) {
        let conns: Vec<Weak<Conn>> = std::mem::take(&mut *lock(&self.inner.conns));
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.abort();
        }
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.inner.conn_threads));
        for t in threads {
            let _ = t.join();
        }
    }

    // ---- behaviour ----

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

    // ---- counters ----

    /// All counters at once.
    pub fn stats(&self) -> UpstreamStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        UpstreamStats {
            queries: get(&c.queries),
            udp_queries: get(&c.udp),
            tcp_queries: get(&c.tcp),
            malformed: get(&c.malformed),
            health_probes: get(&c.health_probes),
            answered: get(&c.answered),
            tcp_connections_accepted: get(&c.tcp_accepted),
            tcp_connections_open: get(&c.tcp_open),
            max_outstanding_per_connection: get(&c.max_outstanding),
        }
    }

    /// Well-formed queries received, UDP + TCP.
    pub fn queries(&self) -> u64 {
        self.stats().queries
    }

    pub fn udp_queries(&self) -> u64 {
        self.stats().udp_queries
    }

    pub fn tcp_queries(&self) -> u64 {
        self.stats().tcp_queries
    }

    /// Queries received for `name` (any case; trailing dot optional), of type `rtype` or of
    /// any type.
    pub fn queries_for(&self, name: &str, rtype: Option<RecordType>) -> u64 {
        let key = normalize_name(name);
        lock(&self.inner.counters.per_name)
            .iter()
            .filter(|((n, t), _)| *n == key && rtype.is_none_or(|r| r == *t))
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn health_probes(&self) -> u64 {
        self.stats().health_probes
    }

    pub fn malformed(&self) -> u64 {
        self.stats().malformed
    }

    pub fn answered(&self) -> u64 {
        self.stats().answered
    }

    pub fn tcp_connections_accepted(&self) -> u64 {
        self.stats().tcp_connections_accepted
    }

    pub fn tcp_connections_open(&self) -> u64 {
        self.stats().tcp_connections_open
    }

    pub fn max_outstanding_per_connection(&self) -> u64 {
        self.stats().max_outstanding_per_connection
    }

    /// Zeroes every counter except the `tcp_connections_open` gauge.
    pub fn reset_counters(&self) {
        let c = &self.inner.counters;
        for a in [
            &c.queries,
            &c.udp,
            &c.tcp,
            &c.malformed,
            &c.health_probes,
            &c.answered,
            &c.tcp_accepted,
            &c.max_outstanding,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        lock(&c.per_name).clear();
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        self.inner.sched.cv.notify_all();
        self.stop_listening();
        if let Some(t) = self.scheduler.take() {
            let _ = t.join();
        }
        // Jobs hold `Arc<Inner>`: drop them to break the cycle.
        lock(&self.inner.sched.heap).clear();
    }
}

fn bind_tcp(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())?;
    s.listen(1024)?;
    // On Linux SO_RCVTIMEO bounds accept(2) too.
    s.set_read_timeout(Some(POLL))?;
    Ok(s)
}

// ---- scheduler: sends delayed answers, in (due, arrival) order ----

struct Job {
    due: Instant,
    seq: u64,
    run: Box<dyn FnOnce() + Send>,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct Scheduler {
    heap: Mutex<BinaryHeap<Reverse<Job>>>,
    cv: Condvar,
    seq: AtomicU64,
}

impl Scheduler {
    fn schedule(&self, due: Instant, run: Box<dyn FnOnce() + Send>) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        lock(&self.heap).push(Reverse(Job { due, seq, run }));
        self.cv.notify_all();
    }
}

fn run_scheduler(inner: &Inner) {
    let sched = &inner.sched;
    let mut heap = lock(&sched.heap);
    loop {
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let wait = match heap.peek() {
            Some(Reverse(j)) if j.due <= now => {
                if let Some(Reverse(job)) = heap.pop() {
                    drop(heap);
                    (job.run)();
                    heap = lock(&sched.heap);
                }
                continue;
            }
            Some(Reverse(j)) => (j.due - now).min(POLL),
            None => POLL,
        };
        heap = sched
            .cv
            .wait_timeout(heap, wait)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

// ---- deciding what to do with one message ----

enum Decision {
    /// Malformed (already counted), or nothing to do.
    Ignore,
    Drop,
    Reset,
    Answer {
        msgs: Vec<Vec<u8>>,
        delay: Duration,
        serialize: bool,
        close_after: Option<usize>,
    },
}

fn decide(inner: &Inner, bytes: &[u8], proto: Proto) -> Decision {
    let c = &inner.counters;
    let msg = match Message::from_vec(bytes) {
        Ok(m) if m.message_type() == MessageType::Query && m.queries().len() == 1 => m,
        _ => {
            c.malformed.fetch_add(1, Ordering::SeqCst);
            return Decision::Ignore;
        }
    };
    let q = &msg.queries()[0];
    let key = name_key(q.name());
    c.queries.fetch_add(1, Ordering::SeqCst);
    match proto {
        Proto::Udp => c.udp.fetch_add(1, Ordering::SeqCst),
        Proto::Tcp => c.tcp.fetch_add(1, Ordering::SeqCst),
    };
    if key == "." && q.query_type() == RecordType::NS && q.query_class() == DNSClass::IN {
        c.health_probes.fetch_add(1, Ordering::SeqCst);
    }
    *lock(&c.per_name)
        .entry((key.clone(), q.query_type()))
        .or_insert(0) += 1;

    let b = lock(&inner.behaviour);
    if proto == Proto::Tcp && b.reset_connections {
        return Decision::Reset;
    }
    if b.drop_queries {
        return Decision::Drop;
    }
    let delay = b.name_delays.get(&key).copied().unwrap_or(b.delay);
    let (serialize, close_after) = (b.serialize_tcp, b.close_after);
    let plan = Plan {
        rcode: b.rcode,
        truncate_udp: b.truncate_udp,
        wrong_question: b.wrong_question,
        wrong_id: b.wrong_id,
    };
    drop(b);
    match build_reply(&msg, q, proto, &plan) {
        Ok(msgs) => Decision::Answer {
            msgs,
            delay,
            serialize,
            close_after,
        },
        Err(_) => {
            c.malformed.fetch_add(1, Ordering::SeqCst);
            Decision::Ignore
        }
    }
}

struct Plan {
    rcode: Option<ResponseCode>,
    truncate_udp: bool,
    wrong_question: bool,
    wrong_id: WrongId,
}

/// The reply messages to send, in order (two with [`WrongId::ThenRight`]).
fn build_reply(query: &Message, q: &Query, proto: Proto, plan: &Plan) -> Result<Vec<Vec<u8>>> {
    let (rcode, aa, answers, authority) = if let Some(rc) = plan.rcode {
        (rc, false, Vec::new(), Vec::new())
    } else if query.op_code() != OpCode::Query {
        (ResponseCode::NotImp, false, Vec::new(), Vec::new())
    } else {
        lookup(q)?
    };
    let mut question = q.clone();
    if plan.wrong_question {
        question.set_name(Name::from_ascii(zone::WRONG_QUESTION)?);
    }
    let edns = query.extensions().as_ref().map(|e| {
        let mut o = Edns::new();
        o.set_max_payload(zone::EDNS_PAYLOAD)
            .set_version(0)
            .set_dnssec_ok(e.flags().dnssec_ok);
        o
    });
    let encode = |records: bool, tc: bool| -> Result<Vec<u8>> {
        let mut m = Message::new();
        m.set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(query.op_code())
            .set_authoritative(aa)
            .set_truncated(tc)
            .set_recursion_desired(query.recursion_desired())
            .set_recursion_available(true)
            .set_checking_disabled(query.checking_disabled())
            .set_response_code(rcode)
            .add_query(question.clone());
        if records {
            m.add_answers(answers.iter().cloned());
            m.add_name_servers(authority.iter().cloned());
        }
        if let Some(e) = &edns {
            m.set_edns(e.clone());
        }
        Ok(m.to_vec()?)
    };
    let mut bytes = encode(true, false)?;
    if proto == Proto::Udp {
        let limit = query
            .extensions()
            .as_ref()
            .map_or(512, |e| e.max_payload().max(512)) as usize;
        if plan.truncate_udp || bytes.len() > limit {
            bytes = encode(false, true)?;
        }
    }
    if bytes.len() > usize::from(u16::MAX) {
        bail!("reply too long");
    }
    let wrong = || {
        let mut w = bytes.clone();
        w[..2].copy_from_slice(&query.id().wrapping_add(1).to_be_bytes());
        w
    };
    Ok(match plan.wrong_id {
        WrongId::Off => vec![bytes],
        WrongId::Only => vec![wrong()],
        WrongId::ThenRight => vec![wrong(), bytes],
    })
}

type Lookup = (ResponseCode, bool, Vec<Record>, Vec<Record>);

fn soa_record() -> Result<Record> {
    Ok(Record::from_rdata(
        Name::from_ascii(zone::ZONE)?,
        zone::NEG_TTL,
        RData::SOA(SOA::new(
            Name::from_ascii(zone::NS_NAME)?,
            Name::from_ascii(zone::HOSTMASTER)?,
            zone::SERIAL,
            3600,
            600,
            86400,
            zone::NEG_TTL,
        )),
    ))
}

/// All records of an owner name in the zone (lowercased key), or `None` if it does not exist.
fn owner_rdata(key: &str) -> Result<Option<Vec<RData>>> {
    let ns = || -> Result<RData> { Ok(RData::NS(NS(Name::from_ascii(zone::NS_NAME)?))) };
    if key == zone::ZONE {
        let RData::SOA(soa) = soa_record()?.data().clone() else {
            bail!("SOA");
        };
        return Ok(Some(vec![RData::SOA(soa), ns()?]));
    }
    if key == zone::DUAL {
        return Ok(Some(vec![
            RData::A(A(zone::DUAL_A)),
            RData::AAAA(AAAA(zone::DUAL_AAAA)),
        ]));
    }
    if key == zone::BIG {
        return Ok(Some(
            (0..zone::BIG_COUNT)
                .map(|i| RData::A(A(zone::big_a(i))))
                .collect(),
        ));
    }
    if let Some(n) = key
        .strip_prefix("host")
        .and_then(|r| r.strip_suffix(".upstream.test."))
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| zone::host(*n) == key)
    {
        return Ok(Some(vec![RData::A(A(zone::host_a(n)))]));
    }
    Ok(None)
}

fn lookup(q: &Query) -> Result<Lookup> {
    let refused = (ResponseCode::Refused, false, Vec::new(), Vec::new());
    if q.query_class() != DNSClass::IN {
        return Ok(refused);
    }
    let key = name_key(q.name());
    let qtype = q.query_type();
    if key == "." {
        if qtype != RecordType::NS {
            return Ok(refused);
        }
        let ns = Record::from_rdata(
            Name::root(),
            zone::TTL,
            RData::NS(NS(Name::from_ascii(zone::NS_NAME)?)),
        );
        return Ok((ResponseCode::NoError, false, vec![ns], Vec::new()));
    }
    if key != zone::ZONE && !key.ends_with(".upstream.test.") {
        return Ok(refused);
    }
    let Some(rdata) = owner_rdata(&key)? else {
        return Ok((
            ResponseCode::NXDomain,
            true,
            Vec::new(),
            vec![soa_record()?],
        ));
    };
    let answers: Vec<Record> = rdata
        .into_iter()
        .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
        .map(|r| Record::from_rdata(q.name().clone(), zone::TTL, r))
        .collect();
    if answers.is_empty() {
        return Ok((ResponseCode::NoError, true, Vec::new(), vec![soa_record()?]));
    }
    Ok((ResponseCode::NoError, true, answers, Vec::new()))
}

// ---- UDP ----

fn serve_udp(inner: &Arc<Inner>, sock: UdpSocket, stop: &AtomicBool) {
    // The only strong reference: the socket closes when this thread ends, even with answers
    // still scheduled (they hold a `Weak`).
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::SeqCst) && !inner.shutdown.load(Ordering::SeqCst) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => {
                // E.g. ECONNREFUSED from an earlier send: not fatal.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let Decision::Answer { msgs, delay, .. } = decide(inner, &buf[..n], Proto::Udp) else {
            continue;
        };
        let due = Instant::now() + delay;
        if delay.is_zero() {
            udp_send(inner, &sock, peer, &msgs);
        } else {
            let (weak, i) = (Arc::downgrade(&sock), inner.clone());
            inner.sched.schedule(
                due,
                Box::new(move || {
                    if let Some(s) = weak.upgrade() {
                        udp_send(&i, &s, peer, &msgs);
                    }
                }),
            );
        }
    }
}

fn udp_send(inner: &Inner, sock: &UdpSocket, peer: SocketAddr, msgs: &[Vec<u8>]) {
    // Counted before sending, so that a client that has the reply sees it counted.
    let answered = &inner.counters.answered;
    answered.fetch_add(1, Ordering::SeqCst);
    let mut ok = true;
    for m in msgs {
        ok &= sock.send_to(m, peer).is_ok();
    }
    if !ok {
        decrement(answered);
    }
}

// ---- TCP ----

struct Conn {
    /// `None` once closed. Read-locked for reads and writes (`&TcpStream` does both), so that
    /// taking it out (to close, or reset) closes the socket at once.
    stream: RwLock<Option<TcpStream>>,
    /// Serialises writers, so frames never interleave.
    write: Mutex<()>,
    fin_sent: AtomicBool,
    fin_at: Mutex<Option<Instant>>,
    aborted: AtomicBool,
    outstanding: AtomicU64,
    answered: AtomicUsize,
    last_answer: Mutex<Instant>,
}

impl Conn {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match read_lock(&self.stream).as_ref() {
            Some(mut s) => s.read(buf),
            None => Ok(0),
        }
    }

    fn write_all(&self, bytes: &[u8]) -> bool {
        let _w = lock(&self.write);
        if self.fin_sent.load(Ordering::SeqCst) {
            return false;
        }
        match read_lock(&self.stream).as_ref() {
            Some(mut s) => s.write_all(bytes).is_ok(),
            None => false,
        }
    }

    /// FIN (shutdown of the write side); the reader drains and closes later.
    fn fin(&self) {
        let _w = lock(&self.write);
        if !self.fin_sent.swap(true, Ordering::SeqCst) {
            *lock(&self.fin_at) = Some(Instant::now());
            if let Some(s) = read_lock(&self.stream).as_ref() {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }

    /// FIN both ways: wakes the reader, which then closes.
    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(s) = read_lock(&self.stream).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// RST: SO_LINGER 0, then close.
    fn reset(&self) {
        if let Some(s) = write_lock(&self.stream).take() {
            let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    }

    fn close(&self) {
        drop(write_lock(&self.stream).take());
    }
}

fn serve_accept(inner: &Arc<Inner>, listener: &Socket, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) && !inner.shutdown.load(Ordering::SeqCst) {
        let stream: TcpStream = match listener.accept() {
            Ok((s, _)) => s.into(),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if stream.set_nodelay(true).is_err()
            || stream.set_read_timeout(Some(POLL)).is_err()
            || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        {
            continue;
        }
        let conn = Arc::new(Conn {
            stream: RwLock::new(Some(stream)),
            write: Mutex::new(()),
            fin_sent: AtomicBool::new(false),
            fin_at: Mutex::new(None),
            aborted: AtomicBool::new(false),
            outstanding: AtomicU64::new(0),
            answered: AtomicUsize::new(0),
            last_answer: Mutex::new(Instant::now()),
        });
        let c = &inner.counters;
        c.tcp_accepted.fetch_add(1, Ordering::SeqCst);
        c.tcp_open.fetch_add(1, Ordering::SeqCst);
        {
            let mut conns = lock(&inner.conns);
            conns.retain(|w| w.strong_count() > 0);
            conns.push(Arc::downgrade(&conn));
        }
        let (i, cc) = (inner.clone(), conn.clone());
        let spawned = std::thread::Builder::new()
            .name("upstream-conn".into())
            .spawn(move || serve_conn(&i, &cc));
        let mut threads = lock(&inner.conn_threads);
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                conn.close();
                c.tcp_open.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // Reap finished connection threads.
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads)
            .into_iter()
            .partition(|t| t.is_finished());
        *threads = running;
        drop(threads);
        for t in done {
            let _ = t.join();
        }
    }
}

fn serve_conn(inner: &Arc<Inner>, conn: &Arc<Conn>) {
    serve_conn_loop(inner, conn);
    conn.close();
    inner.counters.tcp_open.fetch_sub(1, Ordering::SeqCst);
}

fn serve_conn_loop(inner: &Arc<Inner>, conn: &Arc<Conn>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = vec![0u8; 16 * 1024];
    let mut received = 0usize;
    let mut last_read = Instant::now();
    let mut busy_until = Instant::now();
    if lock(&inner.behaviour).close_after == Some(0) {
        conn.fin();
    }
    loop {
        if inner.shutdown.load(Ordering::SeqCst) || conn.aborted.load(Ordering::SeqCst) {
            return;
        }
        if lock(&conn.fin_at).is_some_and(|t| t.elapsed() >= FIN_LINGER) {
            return;
        }
        let idle_timeout = lock(&inner.behaviour).idle_timeout;
        let last_answer = *lock(&conn.last_answer);
        if let Some(idle) = idle_timeout
            && conn.outstanding.load(Ordering::SeqCst) == 0
            && last_read.elapsed() >= idle
            && last_answer.elapsed() >= idle
        {
            conn.fin();
        }
        match conn.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => {
                last_read = Instant::now();
                if !conn.fin_sent.load(Ordering::SeqCst) {
                    buf.extend_from_slice(&tmp[..n]);
                }
            }
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return,
        }
        // Decide on every complete frame first (so that all of them count as outstanding),
        // then act.
        let mut decisions = Vec::new();
        let mut off = 0;
        while buf.len() >= off + 2 {
            let len = usize::from(u16::from_be_bytes([buf[off], buf[off + 1]]));
            if buf.len() < off + 2 + len {
                break;
            }
            let frame = &buf[off + 2..off + 2 + len];
            off += 2 + len;
            if lock(&inner.behaviour)
                .close_after
                .is_some_and(|n| received >= n)
            {
                continue; // past the last query this connection takes
            }
            let d = decide(inner, frame, Proto::Tcp);
            if !matches!(d, Decision::Ignore) {
                received += 1;
                let o = conn.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                inner
                    .counters
                    .max_outstanding
                    .fetch_max(o, Ordering::SeqCst);
            }
            decisions.push(d);
        }
        buf.drain(..off);
        for d in decisions {
            match d {
                Decision::Ignore | Decision::Drop => {}
                Decision::Reset => {
                    conn.reset();
                    return;
                }
                Decision::Answer {
                    msgs,
                    delay,
                    serialize,
                    close_after,
                } => {
                    let now = Instant::now();
                    let due = if serialize {
                        busy_until.max(now) + delay
                    } else {
                        now + delay
                    };
                    busy_until = busy_until.max(due);
                    let mut frames = Vec::new();
                    for m in &msgs {
                        frames.extend_from_slice(&(m.len() as u16).to_be_bytes());
                        frames.extend_from_slice(m);
                    }
                    if due <= now {
                        tcp_send(inner, conn, &frames, close_after);
                    } else {
                        let (i, c) = (inner.clone(), conn.clone());
                        inner.sched.schedule(
                            due,
                            Box::new(move || tcp_send(&i, &c, &frames, close_after)),
                        );
                    }
                }
            }
        }
    }
}

fn tcp_send(inner: &Inner, conn: &Conn, frames: &[u8], close_after: Option<usize>) {
    // Counted before sending, so that a client that has the reply sees it counted.
    inner.counters.answered.fetch_add(1, Ordering::SeqCst);
    let ok = conn.write_all(frames);
    conn.outstanding.fetch_sub(1, Ordering::SeqCst);
    *lock(&conn.last_answer) = Instant::now();
    if ok {
        let answered = conn.answered.fetch_add(1, Ordering::SeqCst) + 1;
        if close_after.is_some_and(|n| answered >= n) {
            conn.fin();
        }
    } else {
        decrement(&inner.counters.answered);
    }
}
