//! 500 silent connections held open to the port that serves `/health` and `/metrics`: both
//! still answer at once (`/health` within 100 ms, `/metrics` within 500 ms, on fresh
//! connections), the process gains no thread and little memory, and the server closes the
//! silent connections at their deadline while `/health` keeps answering. The old server,
//! one connection at a time with a 2 s deadline each, answered `/health` after minutes.
//!
//! Threads and memory are the process's (`/proc/self`), so the measurement runs alone in a
//! child process: the test runs its own test binary again, for this one test.

use std::io::BufRead;
use std::process::{Command, Stdio};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::*;
use crate::http::HealthProbe;
use crate::metrics::Exposition;

/// Silent connections held open.
const CONNECTIONS: usize = 500;
/// Set in the child process, which measures.
const CHILD: &str = "SHARDNS_HTTP_SLOW_CLIENTS_CHILD";
/// Bounds asserted.
const HEALTH_WITHIN: Duration = Duration::from_millis(100);
const METRICS_WITHIN: Duration = Duration::from_millis(500);
const RSS_GROWTH_KIB: u64 = 3 * 1024;

#[test]
fn five_hundred_silent_connections_stall_nothing() {
    if std::env::var_os(CHILD).is_some() {
        measure();
        return;
    }
    let name = concat!(
        module_path!(),
        "::five_hundred_silent_connections_stall_nothing"
    );
    let name = name.strip_prefix("shardns::").unwrap_or(name);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let readers = [
        read_lines(child.stdout.take().unwrap()),
        read_lines(child.stderr.take().unwrap()),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the measuring child ran over 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap());
    println!("{stdout}");
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
}

/// Reads all of `pipe` on a thread of its own.
fn read_lines(pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        std::io::BufReader::new(pipe)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The measurement, in the child process.
fn measure() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let needed = 2 * CONNECTIONS as u64 + 256;
    if soft < needed {
        setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard).unwrap();
    }
    let probe = HealthProbe::new();
    let router = Router::new()
        .metrics(exposition(), Some(probe.clone()))
        .health(probe);
    let server = TestServer::start(vec![router], Limits::default());
    let addr = server.addr();
    for _ in 0..3 {
        assert_eq!(get(addr, "/health").status, 200);
        assert_eq!(get(addr, "/metrics").status, 200);
    }
    let threads_before = threads();
    let rss_before = rss_kib();

    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let connected = started.elapsed();
    let (health, health_took) = timed(|| get(addr, "/health"));
    let (metrics, metrics_took) = timed(|| get(addr, "/metrics"));
    let threads_after = threads();
    let rss_after = rss_kib();
    // Keep asking while the server closes the silent connections at their deadline (2 s).
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(3000) {
        let (reply, took) = timed(|| get(addr, "/health"));
        assert_eq!(reply.status, 200);
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed = silent
        .iter_mut()
        .map(|stream| closed_silently(stream, Duration::from_millis(100)))
        .filter(|&closed| closed)
        .count();
    println!(
        "{CONNECTIONS} silent connections opened in {} ms; /health in {:.2} ms, /metrics \
         ({} bytes) in {:.2} ms; /health at worst {:.2} ms over 3 s; threads {threads_before} \
         -> {threads_after}; RSS {rss_before} -> {rss_after} KiB ({:+} KiB); {closed} closed \
         by the server",
        connected.as_millis(),
        health_took.as_secs_f64() * 1e3,
        metrics.body.len(),
        metrics_took.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3,
        rss_after as i64 - rss_before as i64,
    );
    assert_eq!((health.status, health.body.as_str()), (200, "OK"));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("coredns_health_request_failures_total ")
    );
    assert!(health_took < HEALTH_WITHIN, "/health took {health_took:?}");
    assert!(
        metrics_took < METRICS_WITHIN,
        "/metrics took {metrics_took:?}"
    );
    assert!(slowest < HEALTH_WITHIN, "/health took {slowest:?}");
    assert_eq!(threads_after, threads_before, "threads");
    assert!(
        rss_after < rss_before + RSS_GROWTH_KIB,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    assert_eq!(
        closed, CONNECTIONS,
        "silent connections closed at their deadline"
    );
    let took = server.stop();
    assert!(took < Duration::from_millis(500), "stopped in {took:?}");
}

/// A page like the process's: two shards, a cached block forwarding to two upstreams.
fn exposition() -> Arc<std::sync::Mutex<Exposition>> {
    let corefile = ".:53 {\n cache 30\n forward . 127.0.0.1:9 127.0.0.2:9\n}\n";
    let config = crate::corefile::build("Corefile", corefile).unwrap();
    let stats = (0..2)
        .map(|_| {
            let stats = shardns_shard::ShardStats::new(&config, 2);
            Arc::new(stats)
        })
        .collect();
    Arc::new(std::sync::Mutex::new(Exposition::new(
        &config,
        stats,
        Default::default(),
    )))
}

/// What `run` returned and how long it took.
fn timed<T>(run: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = run();
    (value, started.elapsed())
}

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// The resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
