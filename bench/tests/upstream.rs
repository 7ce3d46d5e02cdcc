//! `shardns-bench upstream` on 127.0.0.1: synthetic answers over UDP and TCP checked by
//! `load --unique`, the counters it prints and writes, serialised against pipelined TCP, and
//! the loopback-only rule.

mod support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{BIN, load_json, n};

/// A running `upstream`, stopped with SIGTERM on drop.
struct Upstream {
    child: Child,
    addr: SocketAddr,
    stats: PathBuf,
}

impl Upstream {
    fn start(extra: &[&str]) -> Upstream {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stats = std::env::temp_dir().join(format!(
            "shardns-upstream-test-{}-{n}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&stats);
        let mut child = Command::new(BIN)
            .args(["upstream", "127.0.0.1:0", "--stats-file"])
            .arg(&stats)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting upstream");
        let mut line = String::new();
        BufReader::new(child.stderr.take().expect("piped stderr"))
            .read_line(&mut line)
            .expect("reading upstream's stderr");
        let addr = line
            .strip_prefix("upstream on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from upstream: {line:?}"));
        Upstream { child, addr, stats }
    }

    /// SIGTERM; returns whether it exited 0, and what it printed on standard output.
    fn stop(mut self) -> (bool, String, serde_json::Value) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut ok = false;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                ok = status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        let stats = std::fs::read_to_string(&self.stats).expect("stats file written on exit");
        let stats = serde_json::from_str(&stats).expect("stats file is JSON");
        (ok, stdout, stats)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.stats);
    }
}

#[test]
fn answers_unique_names_over_udp_and_tcp_and_counts_them() {
    let upstream = Upstream::start(&[]);
    let port = upstream.addr.port().to_string();
    let (udp, _) = load_json(&["--unique", "-p", &port, "-l", "0.5", "-q", "64"]);
    let (tcp, _) = load_json(&[
        "--unique", "-m", "tcp", "-c", "3", "-p", &port, "-l", "0.5", "-q", "48",
    ]);
    for report in [&udp, &tcp] {
        assert!(n(report, "answered") > 100, "{report}");
        assert_eq!(n(report, "answered"), n(report, "sent"), "{report}");
        assert_eq!(n(report, "mismatched"), 0, "{report}");
        assert_eq!(report["rcodes"]["NOERROR"], report["answered"], "{report}");
    }
    // The stats file is kept up to date while running.
    std::thread::sleep(Duration::from_millis(300));
    let running: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&upstream.stats).unwrap()).unwrap();
    assert_eq!(n(&running, "udp_queries"), n(&udp, "sent"), "{running}");
    let (ok, stdout, stats) = upstream.stop();
    assert!(ok, "upstream exits 0 on SIGTERM");
    assert_eq!(n(&stats, "udp_queries"), n(&udp, "sent"), "{stats}");
    assert_eq!(n(&stats, "tcp_queries"), n(&tcp, "sent"), "{stats}");
    assert_eq!(
        n(&stats, "queries"),
        n(&udp, "sent") + n(&tcp, "sent"),
        "{stats}"
    );
    assert_eq!(n(&stats, "tcp_connections"), 3, "{stats}");
    assert_eq!(n(&stats, "tcp_peak_open"), 3, "{stats}");
    assert_eq!(n(&stats, "tcp_open"), 0, "{stats}");
    assert_eq!(stats["serialize"], false);
    let want = format!(
        "answered {} queries (UDP {}, TCP {}); TCP connections accepted 3, at most 3 open at once",
        n(&stats, "queries"),
        n(&stats, "udp_queries"),
        n(&stats, "tcp_queries")
    );
    assert!(stdout.contains(&want), "{stdout:?} lacks {want:?}");
}

/// A query for `n.miss.test` type A with ID `n`, framed for TCP.
fn framed_query(n: u16) -> Vec<u8> {
    let label = n.to_string();
    let mut q = n.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.push(label.len() as u8);
    q.extend_from_slice(label.as_bytes());
    q.extend_from_slice(b"\x04miss\x04test\x00\x00\x01\x00\x01");
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

/// Sends `count` pipelined queries in one write; returns each reply's ID and arrival time
/// after the write.
fn pipeline(addr: SocketAddr, count: u16) -> Vec<(u16, Duration)> {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let batch: Vec<u8> = (1..=count).flat_map(framed_query).collect();
    let started = Instant::now();
    stream.write_all(&batch).unwrap();
    let mut replies = Vec::new();
    for _ in 0..count {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).expect("a reply");
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(reply[2] & 0x80, 0x80, "QR");
        assert_eq!(reply[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&reply[6..8], &[0, 1], "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[192, 0, 2, 1]);
        replies.push((u16::from_be_bytes([reply[0], reply[1]]), started.elapsed()));
    }
    replies
}

#[test]
fn serialised_tcp_answers_one_at_a_time_in_order() {
    const DELAY_MS: u64 = 40;
    let delay = (DELAY_MS * 1000).to_string();
    let serial = Upstream::start(&["--serialize", "--delay-us", &delay]);
    let replies = pipeline(serial.addr, 4);
    let ids: Vec<u16> = replies.iter().map(|r| r.0).collect();
    assert_eq!(ids, [1, 2, 3, 4], "in order");
    for (k, (_, at)) in replies.iter().enumerate() {
        // Reply k comes after k + 1 delays: each waits for the ones before it.
        let floor = Duration::from_millis(DELAY_MS * (k as u64 + 1) - 5);
        assert!(
            *at >= floor,
            "reply {} after {at:?}, before {floor:?}",
            k + 1
        );
    }
    let (ok, _, stats) = serial.stop();
    assert!(ok);
    assert_eq!(stats["serialize"], true);
    assert_eq!(n(&stats, "tcp_queries"), 4);

    // Pipelined: the same four queries come back together after one delay.
    let pipelined = Upstream::start(&["--delay-us", &delay]);
    let replies = pipeline(pipelined.addr, 4);
    let last = replies.last().unwrap().1;
    let first = replies[0].1;
    assert!(
        first >= Duration::from_millis(DELAY_MS - 5),
        "first after {first:?}"
    );
    assert!(
        last < Duration::from_millis(DELAY_MS * 3),
        "pipelined replies took {last:?}: answered one at a time?"
    );
}

#[test]
fn listens_on_loopback_only() {
    for addr in ["0.0.0.0:0", "192.0.2.1:5399", "[::1]:0"] {
        let out = Command::new(BIN)
            .args(["upstream", addr])
            .output()
            .expect("running upstream");
        assert!(!out.status.success(), "{addr} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("127.0.0.0/8 only"), "{addr}: {stderr}");
    }
}
