//! The `shardns` binary's HTTP port with 500 silent connections held open: `/metrics` still
//! answers within 500 ms on a fresh connection, and keeps answering while the server closes
//! the silent ones at their 2 s deadline; the process gains no thread (its HTTP thread is
//! named `http`) and little memory; SIGTERM still stops it promptly. The old server, one
//! connection at a time with 2 s for each, made the scrape wait minutes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Silent connections held open.
const CONNECTIONS: usize = 500;
const METRICS_WITHIN: Duration = Duration::from_millis(500);
const RSS_GROWTH_KIB: u64 = 3 * 1024;

/// Kills the process if the test fails before it stops.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn five_hundred_silent_connections_do_not_stall_a_scrape() {
    let dir = std::env::temp_dir().join(format!("shardns-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("Corefile");
    std::fs::write(
        &conf,
        ".:0 {\n    bind 127.0.0.1\n    cache 30\n    forward . 127.0.0.1:9\n    \
         prometheus 127.0.0.1:0\n}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardns"))
        .args([
            "--conf",
            conf.to_str().unwrap(),
            "--shards",
            "2",
            "--io",
            "epoll",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut process = Running(child);
    let pid = process.0.id();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let addr: SocketAddr = loop {
        let line = received
            .recv_timeout(Duration::from_secs(10))
            .expect("a 'serving /metrics on' line");
        if let Some(rest) = line.split("serving /metrics on http://").nth(1) {
            break rest.trim().parse().unwrap();
        }
    };
    for _ in 0..3 {
        assert!(scrape(addr).contains("shardns_shard_"));
    }
    let threads_before = threads(pid);
    let rss_before = rss_kib(pid);

    let started = Instant::now();
    // The kernel queues connections that the server does not accept (up to its backlog):
    // all of them must be accepted, together, within 5 s.
    let silent: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|opened| {
            let left = Duration::from_secs(5).saturating_sub(started.elapsed());
            TcpStream::connect_timeout(&addr, left.max(Duration::from_millis(1)))
                .unwrap_or_else(|error| panic!("{opened} connections opened in 5 s: {error}"))
        })
        .collect();
    let scrape_started = Instant::now();
    let page = scrape(addr);
    let took = scrape_started.elapsed();
    let threads_after = threads(pid);
    let rss_after = rss_kib(pid);
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let scrape_started = Instant::now();
        scrape(addr);
        slowest = slowest.max(scrape_started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop_started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait(&mut process.0, Duration::from_secs(10));
    let stopped = stop_started.elapsed();
    println!(
        "/metrics ({} bytes) in {:.2} ms with {CONNECTIONS} silent connections, at worst \
         {:.2} ms over 3 s; threads {threads_before:?} -> {threads_after:?}; RSS {rss_before} \
         -> {rss_after} KiB ({:+} KiB); stopped {} ms after SIGTERM",
        page.len(),
        took.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3,
        rss_after as i64 - rss_before as i64,
        stopped.as_millis(),
    );
    drop(silent);
    assert!(took < METRICS_WITHIN, "/metrics took {took:?}");
    assert!(slowest < METRICS_WITHIN, "/metrics took {slowest:?}");
    assert_eq!(threads_after, threads_before);
    assert!(
        threads_before.contains(&"http".to_string()),
        "{threads_before:?}"
    );
    assert!(
        rss_after < rss_before + RSS_GROWTH_KIB,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(exit, Some(0));
    assert!(stopped < Duration::from_secs(2), "stopped in {stopped:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `GET /metrics` on a new connection, closed by the request: the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a whole response");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The names of the process's threads, sorted.
fn threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    names.sort();
    names
}

/// The process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The exit code of `child` once it exits, within `limit` (`None`: killed by a signal).
fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "no exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
