//! The few DNS bytes `compare` needs: build an `A` query and check a reply, to warm servers
//! and to know they answer before they are measured.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// A recursion-desired `A IN` query for `name` with id `id`.
pub fn query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        ensure!(
            !label.is_empty() && label.len() < 64,
            "bad label in {name:?}"
        );
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Checks that `reply` answers query `id`: QR set, and when `want_answer`, NOERROR with at
/// least one answer record (a reflector only echoes the question).
pub fn check_reply(reply: &[u8], id: u16, want_answer: bool) -> anyhow::Result<()> {
    ensure!(reply.len() >= 12, "reply of {} bytes", reply.len());
    ensure!(reply[..2] == id.to_be_bytes(), "reply id does not match");
    ensure!(reply[2] & 0x80 != 0, "QR bit not set");
    if want_answer {
        let rcode = reply[3] & 0x0f;
        ensure!(rcode == 0, "rcode {rcode}");
        ensure!(
            u16::from_be_bytes([reply[6], reply[7]]) > 0,
            "no answer records"
        );
    }
    Ok(())
}

/// Asks `addr` for `name` until it answers or `patience` runs out; `alive` is called between
/// attempts so that a server that exited fails at once.
pub fn wait_answer(
    addr: SocketAddr,
    name: &str,
    want_answer: bool,
    patience: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding a probe socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + patience;
    let mut last_error = None;
    let mut id: u16 = 0x5a00;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        alive()?;
        id = id.wrapping_add(1);
        socket.send_to(&query(id, name)?, addr)?;
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => match check_reply(&buf[..n], id, want_answer) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            },
            Err(e) => last_error = Some(e.into()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match last_error {
        Some(e) => Err(e.context(format!("{addr} gave no answer for {name}"))),
        None => bail!("{addr} gave no answer for {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bytes() {
        let q = query(0x1234, "a.bc.").unwrap();
        assert_eq!(
            q,
            [
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 1, 0, 1
            ]
        );
        assert!(query(1, "foo..bar").is_err());
    }

    #[test]
    fn reply_checks() {
        let mut r = query(7, "x").unwrap();
        assert!(check_reply(&r, 7, false).is_err(), "QR not set");
        r[2] |= 0x80;
        check_reply(&r, 7, false).unwrap();
        assert!(check_reply(&r, 7, true).is_err(), "no answers");
        assert!(check_reply(&r, 8, false).is_err(), "wrong id");
        r[7] = 1;
        check_reply(&r, 7, true).unwrap();
        r[3] |= 5;
        assert!(check_reply(&r, 7, true).is_err(), "REFUSED");
    }
}
