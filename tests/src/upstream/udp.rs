//! UDP serving: one thread reads queries; answers are sent at once or by the scheduler.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::reply::{Decision, decide};
use super::{Inner, Proto, decrement, is_timeout};

pub(super) fn serve_udp(inner: &Arc<Inner>, sock: UdpSocket, stop: &AtomicBool) {
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
        let Decision::Answer {
            msgs, delay, wire, ..
        } = decide(inner, &buf[..n], Proto::Udp, peer)
        else {
            continue;
        };
        let reply = wire.is_reply(Proto::Udp);
        let due = Instant::now() + delay;
        if delay.is_zero() {
            udp_send(inner, &sock, peer, &msgs, reply);
        } else {
            let (weak, i) = (Arc::downgrade(&sock), inner.clone());
            inner.sched.schedule(
                due,
                Box::new(move || {
                    if let Some(s) = weak.upgrade() {
                        udp_send(&i, &s, peer, &msgs, reply);
                    }
                }),
            );
        }
    }
}

/// Sends `msgs` to `peer`, counted as answered if they are a `reply`, else as garbled.
fn udp_send(inner: &Inner, sock: &UdpSocket, peer: SocketAddr, msgs: &[Vec<u8>], reply: bool) {
    // Counted before sending, so that a client that has the reply sees it counted.
    let answered = match reply {
        true => &inner.counters.answered,
        false => &inner.counters.garbled,
    };
    answered.fetch_add(1, Ordering::SeqCst);
    let mut ok = true;
    for m in msgs {
        ok &= sock.send_to(m, peer).is_ok();
    }
    if !ok {
        decrement(answered);
    }
}
