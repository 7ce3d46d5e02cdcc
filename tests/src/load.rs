//! A steady UDP load for tests of upgrades and restarts: a few clients, each sending one
//! query at a time for one of the fixture's hosts and checking its answer, paced to about
//! 1,000 queries a second in all, until stopped. Every query is counted as answered right,
//! answered wrong, or lost (no answer within 3 s).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::{build_query, zone};

/// Clients sending one query at a time each.
pub const CLIENTS: usize = 4;
/// The pause after each answer.
const PACE: Duration = Duration::from_millis(4);

/// What the clients saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub sent: u64,
    pub answered: u64,
    pub wrong: u64,
    pub lost: u64,
    /// The slowest answer, in microseconds.
    pub slowest_us: u64,
}

#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
    slowest: AtomicU64,
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the clients against `server` (loopback only).
    pub fn start(server: SocketAddr) -> Load {
        assert!(server.ip().is_loopback(), "test traffic stays on loopback");
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let clients = (0..CLIENTS)
            .map(|index| {
                let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
                thread::spawn(move || client(server, index, &stop, &tally))
            })
            .collect();
        Load {
            stop,
            tally,
            clients,
        }
    }

    /// What the clients have seen so far.
    pub fn seen(&self) -> Seen {
        let t = &self.tally;
        Seen {
            sent: t.sent.load(Ordering::SeqCst),
            answered: t.answered.load(Ordering::SeqCst),
            wrong: t.wrong.load(Ordering::SeqCst),
            lost: t.lost.load(Ordering::SeqCst),
            slowest_us: t.slowest.load(Ordering::SeqCst),
        }
    }

    /// Stops the clients (each finishes its query under way) and says what they saw.
    pub fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for client in self.clients {
            client.join().expect("load client");
        }
        let t = &self.tally;
        Seen {
            sent: t.sent.load(Ordering::SeqCst),
            answered: t.answered.load(Ordering::SeqCst),
            wrong: t.wrong.load(Ordering::SeqCst),
            lost: t.lost.load(Ordering::SeqCst),
            slowest_us: t.slowest.load(Ordering::SeqCst),
        }
    }
}

/// One client: a query for one of the fixture's hosts at a time, each waited for (3 s),
/// until `stop`.
fn client(server: SocketAddr, index: usize, stop: &AtomicBool, tally: &Tally) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(server).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut n = index as u16;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        n = n.wrapping_add(1);
        let host = (n % u16::from(zone::HOSTS)) as u8;
        let id = n.wrapping_mul(7) ^ (index as u16) << 12;
        let query = build_query(&zone::host(host), RecordType::A, id);
        let asked = Instant::now();
        socket.send(&query).expect("send");
        tally.sent.fetch_add(1, Ordering::SeqCst);
        let reply = loop {
            match socket.recv(&mut buf) {
                Ok(len) => match Message::from_vec(&buf[..len]) {
                    Ok(message) if message.id() == id => break Some(message),
                    _ => continue,
                },
                Err(_) => break None,
            }
        };
        let Some(reply) = reply else {
            tally.lost.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        let took = asked.elapsed().as_micros() as u64;
        tally.slowest.fetch_max(took, Ordering::SeqCst);
        let right = reply.response_code() == ResponseCode::NoError
            && reply
                .answers()
                .iter()
                .any(|r| r.data() == &RData::A(zone::host_a(host).into()));
        if right {
            tally.answered.fetch_add(1, Ordering::SeqCst);
        } else {
            tally.wrong.fetch_add(1, Ordering::SeqCst);
        }
        thread::sleep(PACE);
    }
}
