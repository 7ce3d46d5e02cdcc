//! End-to-end test harness for shardns: a real Unbound as the upstream, the real `shardns`
//! binary as the system under test, a small raw DNS client, and a `dig` wrapper.
//!
//! Every socket these helpers open talks to 127.0.0.1 only; every wait is bounded in time.

#![forbid(unsafe_code)]

pub mod client;
pub mod dig;
pub mod load;
pub mod metrics;
pub mod monitoring;
pub mod netns;
pub mod node;
pub mod podman;
pub mod process;
pub mod rng;
pub mod shardns;
pub mod tempdir;
pub mod unbound;
pub mod upstream;

use std::time::{Duration, Instant};

pub use client::{
    Header, TcpClient, UdpClient, build_query, first_ttl, header_of, new_id, query_message,
    query_message_plain, wire_question,
};
pub use dig::{dig, dig_answers, dig_status};
pub use shardns::{Shardns, ShardnsExit, shardns_binary};
pub use tempdir::TempDir;
pub use unbound::{Unbound, zone};
pub use upstream::{
    Behaviour, Garbage, SeenQuery, TestUpstream, TruncateTcp, UpstreamStats, WrongId,
};

/// The I/O backend a shardns instance runs on (`--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    Uring,
    Epoll,
}

impl Io {
    pub fn as_arg(self) -> &'static str {
        match self {
            Io::Uring => "uring",
            Io::Epoll => "epoll",
        }
    }
}

/// Default timeout for one DNS exchange with shardns (a miss costs one Unbound round trip).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Polls `f` every 20 ms until it returns `Some`, or gives up after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Corefile the tests run shardns with: one block on an ephemeral port forwarding
/// everything to `upstream` (a local Unbound) over TCP.
pub fn corefile_for(upstream: std::net::SocketAddr, force_tcp: bool) -> String {
    let tcp = if force_tcp {
        " {\n        force_tcp\n    }"
    } else {
        ""
    };
    format!(
        ".:0 {{\n    bind 127.0.0.1\n    cache 30\n    forward . {upstream}{tcp}\n    errors\n}}\n"
    )
}

/// A running pair: Unbound on an ephemeral port and shardns forwarding to it.
#[derive(Debug)]
pub struct Env {
    /// Declared first so that shardns is stopped before its upstream goes away.
    pub shardns: Shardns,
    pub unbound: Unbound,
}

impl Env {
    /// Unbound plus `shardns --shards 2 --io IO` with [`corefile_for`] (force_tcp).
    pub fn start(io: Io) -> Env {
        Env::start_with(io, true)
    }

    /// As [`Env::start`]; without `force_tcp` shardns follows the client's protocol upstream.
    pub fn start_with(io: Io, force_tcp: bool) -> Env {
        let unbound = Unbound::start().expect("starting Unbound");
        let corefile = corefile_for(unbound.addr(), force_tcp);
        let shardns = Shardns::start(&corefile, &["--shards", "2", "--io", io.as_arg()])
            .expect("starting shardns");
        Env { shardns, unbound }
    }

    /// A UDP client bound to one source port, talking to shardns.
    pub fn udp(&self) -> UdpClient {
        UdpClient::new(self.shardns.udp_addr()).expect("UDP client")
    }

    /// A fresh TCP connection to shardns.
    pub fn tcp(&self) -> TcpClient {
        TcpClient::connect(self.shardns.tcp_addr()).expect("TCP connect to shardns")
    }

    /// Stops shardns with SIGTERM and asserts exit status 0.
    pub fn stop(self) {
        let Env { shardns, unbound } = self;
        shardns.stop();
        drop(unbound);
    }
}

/// Generates, for each `fn NAME(io: Io)` in scope, `#[test]`s `uring::NAME` and `epoll::NAME`.
#[macro_export]
macro_rules! io_tests {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name($crate::Io::Uring) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name($crate::Io::Epoll) } )*
        }
    };
}
