//! The prober of the `loop` directive (CoreDNS's `plugin/loop/setup.go`), one thread, `loop`,
//! for every block that has it. For each such block, for at most 30 s from start-up:
//!
//! - send the block's probe (`HINFO <random>.<random>.<zone>`) over UDP to the block's first
//!   address, its arrival count reset ([`LoopProbe::reset`]), and wait up to 2 s for a reply;
//! - no reply: wait 1 s and send again;
//! - a reply: the check ends 2 s later ([`LoopProbe::disable`]); at the 30 s deadline it ends
//!   anyway.
//!
//! The shards count the probe's arrivals; a second one is a loop, which the shard logs in
//! CoreDNS's words. This thread sees it ([`LoopProbe::detected`]), sets `detected` and the
//! stop flag: the process stops and exits with status 1, as CoreDNS does (CoreDNS exits at
//! once; shardns first removes its rules, so the node's DNS goes back to the cluster DNS).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use shardns_shard::{Config, HINFO, LoopProbe};

use super::sockets::reachable;

/// How long the check runs at most.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a probe waits for its reply (Go's `dns.Exchange`).
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after an unanswered probe.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long arrivals still count after the probe was answered.
const LINGER: Duration = Duration::from_secs(2);
/// How often the thread looks at the probes and its flags.
const TICK: Duration = Duration::from_millis(10);

/// One block's check.
struct Check {
    probe: LoopProbe,
    target: SocketAddr,
    state: State,
}

enum State {
    /// Send at this instant.
    SendAt(Instant),
    /// Sent with this ID on this socket; unanswered after the instant.
    Waiting(UdpSocket, u16, Instant),
    /// Answered: the check ends at this instant.
    Answered(Instant),
    /// Over.
    Done,
}

/// Starts the `loop` thread for every block of `config` (as bound) with `loop`; `None` when
/// there is none. It sets `detected` and `stop` on a loop, and ends by itself after 30 s, or
/// when `stop` is set.
pub(crate) fn start(
    config: &Config,
    detected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let now = Instant::now();
    let checks: Vec<Check> = config
        .servers
        .iter()
        .enumerate()
        .filter_map(|(block, server)| {
            let probe = server.loop_probe.clone()?;
            let listener = config
                .listeners
                .iter()
                .find(|listener| listener.servers.contains(&block))?;
            Some(Check {
                probe,
                target: reachable(listener.addr),
                state: State::SendAt(now),
            })
        })
        .collect();
    if checks.is_empty() {
        return Ok(None);
    }
    thread::Builder::new()
        .name("loop".to_string())
        .spawn(move || run(checks, now + DEADLINE, &detected, &stop))
        .map(Some)
}

fn run(mut checks: Vec<Check>, deadline: Instant, detected: &AtomicBool, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        if checks.iter().any(|check| check.probe.detected()) {
            detected.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        for check in &mut checks {
            step(check, now);
        }
        if checks
            .iter()
            .all(|check| matches!(check.state, State::Done))
        {
            return;
        }
        thread::sleep(TICK);
    }
    for check in &checks {
        check.probe.disable();
    }
}

/// Moves one block's check along at `now`.
fn step(check: &mut Check, now: Instant) {
    match &check.state {
        State::SendAt(at) if now >= *at => {
            check.probe.reset();
            check.state = match send(check) {
                Ok((socket, id)) => State::Waiting(socket, id, now + REPLY_TIMEOUT),
                Err(error) => {
                    tracing::debug!(%error, target = %check.target, "loop probe not sent");
                    State::SendAt(now + RETRY_PAUSE)
                }
            };
        }
        State::Waiting(socket, id, until) => {
            if answered(socket, *id) {
                check.state = State::Answered(now + LINGER);
            } else if now >= *until {
                check.state = State::SendAt(now + RETRY_PAUSE);
            }
        }
        State::Answered(at) if now >= *at => {
            check.probe.disable();
            check.state = State::Done;
        }
        _ => {}
    }
}

/// Sends the probe from a fresh socket; returns it and the query's ID.
fn send(check: &Check) -> std::io::Result<(UdpSocket, u16)> {
    let local: SocketAddr = match check.target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(check.target)?;
    socket.set_nonblocking(true)?;
    let id = rand::random::<u16>();
    socket.send(&query(id, check.probe.qname()))?;
    Ok((socket, id))
}

/// Whether a reply to query `id` has arrived on `socket`.
fn answered(socket: &UdpSocket, id: u16) -> bool {
    let mut buffer = [0u8; 512];
    while let Ok(length) = socket.recv(&mut buffer) {
        if length >= 12 && buffer[..2] == id.to_be_bytes() && buffer[2] & 0x80 != 0 {
            return true;
        }
    }
    false
}

/// `HINFO qname` with RD set, as Go's `dns.Msg.SetQuestion` makes it.
fn query(id: u16, qname: &[u8]) -> Vec<u8> {
    let mut query = Vec::with_capacity(12 + qname.len() + 4);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    query.extend_from_slice(qname);
    query.extend_from_slice(&HINFO.to_be_bytes());
    query.extend_from_slice(&[0, 1]);
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(port: u16) -> Config {
        let corefile = format!("example.:{port} {{\n bind 127.0.0.1\n loop\n}}\n");
        crate::corefile::build("Corefile", &corefile).unwrap()
    }

    /// A stand-in for the block's listener that answers or not, counting arrivals as a shard
    /// does.
    fn server() -> (UdpSocket, u16) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        (socket, port)
    }

    #[test]
    fn an_answered_probe_ends_the_check_after_the_linger() {
        let (socket, port) = server();
        let config = config(port);
        let probe = config.servers[0].loop_probe.clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let detected = Arc::new(AtomicBool::new(false));
        let thread = start(&config, Arc::clone(&detected), Arc::clone(&stop))
            .unwrap()
            .expect("one block with loop");
        let mut buffer = [0u8; 512];
        let (length, from) = socket.recv_from(&mut buffer).expect("the probe");
        let query = &buffer[..length];
        assert_eq!(&query[12..length - 4], probe.qname());
        assert_eq!(&query[length - 4..], &[0, 13, 0, 1], "HINFO IN");
        assert_eq!(query[2] & 0x01, 0x01, "RD");
        let mut reply = query.to_vec();
        reply[2] |= 0x80;
        socket.send_to(&reply, from).unwrap();
        let started = Instant::now();
        thread.join().unwrap();
        assert!(probe.is_off());
        assert!(started.elapsed() >= LINGER - TICK);
        assert!(!detected.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst));
    }

    #[test]
    fn an_unanswered_probe_is_sent_again_and_a_detection_stops_the_process() {
        let (socket, port) = server();
        let config = config(port);
        let probe = config.servers[0].loop_probe.clone().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let detected = Arc::new(AtomicBool::new(false));
        let thread = start(&config, Arc::clone(&detected), Arc::clone(&stop))
            .unwrap()
            .unwrap();
        let mut buffer = [0u8; 512];
        let first = Instant::now();
        socket.recv_from(&mut buffer).expect("the probe");
        socket.recv_from(&mut buffer).expect("sent again");
        let gap = first.elapsed();
        assert!(gap >= REPLY_TIMEOUT, "after the reply timeout: {gap:?}");
        // A shard sees the probe twice (as the engine tests show): a loop.
        let qname = probe.qname().to_vec();
        assert!(!probe.arrived(&qname));
        assert!(probe.arrived(&qname));
        thread.join().unwrap();
        assert!(detected.load(Ordering::SeqCst) && stop.load(Ordering::SeqCst));
    }
}
