//! The `shardns` binary serving: port 0 shared by UDP and TCP, SIGTERM stops it with
//! status 0, the phases of start-up and shutdown in their order.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A query for `. NS` with ID 0x1234 and RD set.
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01";

#[test]
fn serves_on_an_ephemeral_port_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("shardns-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("Corefile");
    // Port 9 (discard) as upstream: a miss ends in SERVFAIL or no reply, never elsewhere.
    std::fs::write(
        &conf,
        ".:0 {\n    bind 127.0.0.1\n    cache 30\n    forward . 127.0.0.1:9\n}\n",
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
            "-v",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut log = Vec::new();
    let addr: SocketAddr = loop {
        let Ok(line) = received.recv_timeout(Duration::from_secs(10)) else {
            let _ = child.kill();
            panic!("no 'serving zones' line:\n{}", log.join("\n"));
        };
        log.push(line.clone());
        if let Some(rest) = line.split("serving zones . on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    assert!(
        log.iter()
            .any(|line| line.contains("starting: 2 shards, io epoll")),
        "{log:?}"
    );
    assert_ne!(addr.port(), 0);

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    client.send_to(QUERY, addr).unwrap();
    let mut reply = [0u8; 512];
    let (length, from) = client
        .recv_from(&mut reply)
        .expect("a reply (SERVFAIL) over UDP");
    assert_eq!(from, addr);
    assert!(
        length >= 12 && reply[..2] == QUERY[..2],
        "{:?}",
        &reply[..length]
    );
    TcpStream::connect(addr).expect("TCP on the same port");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = exited
        .recv_timeout(Duration::from_secs(10))
        .expect("exit after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // The rest of the log, to its end (the reader stops at end of file).
    while let Ok(line) = received.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    let phases: Vec<&str> = log
        .iter()
        .filter_map(|line| line.split("phase ").nth(1)?.split(':').next())
        .collect();
    assert_eq!(
        phases,
        [
            "load",
            "configure",
            "bind",
            "serve",
            "ready",
            "install",
            "withdraw",
            "lameduck",
            "stop reading",
            "drain",
            "teardown"
        ],
        "{log:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
