//! Helpers for the `load`/`reflect` tests: query files, the real `reflect` subcommand, tiny
//! in-test UDP and TCP responders, and running `load --json`. Everything binds 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_shardns-bench");

/// A query file in the temporary directory, removed on drop.
pub struct QueryFile(PathBuf);

impl std::ops::Deref for QueryFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for QueryFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for QueryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `text` to a fresh file in the temporary directory.
pub fn query_file(text: &str) -> QueryFile {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("shardns-load-test-{}-{n}.txt", std::process::id()));
    std::fs::write(&path, text).expect("writing query file");
    QueryFile(path)
}

/// Eight names, as in the project's cache-hit benchmark.
pub const EIGHT_NAMES: &str = "# cache-hit set\nwww.example.com A\nexample.com AAAA\n\
    kubernetes.default.svc.cluster.local A\ncoredns.kube-system.svc.cluster.local A\n\
    google.com A\nexample.org MX\ngithub.com TXT\n_dns._udp.kube-dns.kube-system.svc.cluster.local SRV\n";

/// The `reflect` subcommand, stopped with SIGTERM on drop.
pub struct Reflector {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Reflector {
    /// Starts `shardns-bench reflect 127.0.0.1:0` and waits for its `reflecting on` line.
    pub fn start() -> Reflector {
        let mut child = Command::new(BIN)
            .args(["reflect", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting reflect");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut line = String::new();
        BufReader::new(stderr)
            .read_line(&mut line)
            .expect("reading reflect's stderr");
        let addr = line
            .trim()
            .strip_prefix("reflecting on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from reflect: {line:?}"));
        Reflector { child, addr }
    }

    /// Sends SIGTERM and returns the exit status's success.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A UDP responder thread that answers every datagram through `respond` (`None`: no reply),
/// until dropped.
pub struct UdpResponder {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpResponder {
    pub fn start(respond: impl Fn(&mut Vec<u8>) -> bool + Send + 'static) -> UdpResponder {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let mut message = buf[..len].to_vec();
                if respond(&mut message) {
                    let _ = socket.send_to(&message, peer);
                }
            }
        });
        UdpResponder {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A TCP responder: every framed message comes back on its connection with QR set.
pub fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding TCP responder");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        // Serves a bounded number of connections; the thread ends with the test process.
        for stream in listener.incoming().take(64).flatten() {
            std::thread::spawn(move || serve_tcp(stream));
        }
    });
    addr
}

fn serve_tcp(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut len = [0u8; 2];
    while stream.read_exact(&mut len).is_ok() {
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut message).is_err() || message.len() < 3 {
            return;
        }
        message[2] |= 0x80;
        if stream.write_all(&len).is_err() || stream.write_all(&message).is_err() {
            return;
        }
    }
}

/// Runs `shardns-bench load --json ARGS`; returns the parsed report and the wall time.
pub fn load_json(args: &[&str]) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("load")
        .arg("--json")
        .args(args)
        .output()
        .expect("running load");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "load {args:?} failed:\n{stdout}\n{stderr}"
    );
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("load --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (report, elapsed)
}

/// A field of the report as u64.
pub fn n(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {report}"))
}

/// A latency field of the report.
pub fn latency(report: &serde_json::Value, field: &str) -> f64 {
    report["latency_us"][field]
        .as_f64()
        .unwrap_or_else(|| panic!("latency {field}: {report}"))
}
