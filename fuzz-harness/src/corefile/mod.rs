//! The Corefile target: bytes (as UTF-8, invalid sequences replaced) → the Corefile build
//! that `--conf` runs. It must return a configuration or an error; never panic.
//!
//! - An error names the file (`Corefile`) and, when it names a line, a line of the text
//!   (1 to the number of lines + 1, for "unexpected end of file"); its message is what the
//!   process prints (`Corefile:LINE: ...`).
//! - A configuration is consistent: every listener's blocks and every `forward`'s upstreams
//!   exist, zones are lowercase wire names, it may replace itself on reload, and building the
//!   same text again gives the same configuration.
//! - It runs: an engine made from it answers a query on each listener (a reply that parses,
//!   or a miss that goes to one of its upstreams, or a silent drop by `acl`/`ratelimit`) and
//!   times out cleanly. Configurations whose caches or rate tables would take more than
//!   [`MAX_ENTRIES`] entries are checked without an engine (the engine allocates them up
//!   front; a fuzzer's memory limit is not a bug).
//!
//! [`seeds`] holds the seed Corefiles and the dictionary.

pub mod seeds;

use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use shardns::fuzzing::build_corefile;
use shardns_shard::{
    Client, Coalesce, Config, Engine, Group, Handler, MAX_MESSAGE, Outcome, Protocol, Transmit,
};
use shardns_wire::{Header, Message};

/// The name errors must carry.
pub const FILE: &str = "Corefile";
/// Configurations with more cache entries or rate-limit buckets than this are not run.
pub const MAX_ENTRIES: usize = 1 << 20;

/// What a Corefile built to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    /// A configuration, run by an engine.
    Ran,
    /// A configuration too large to run here.
    Large,
    /// An error at a line.
    ErrorAt(usize),
    /// An error about the whole file.
    Error,
}

/// Builds input `data` as a Corefile and checks the result (see the module documentation);
/// panics when an invariant does not hold.
pub fn run(data: &[u8]) -> Built {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    match build_corefile(FILE, &text) {
        Err(error) => {
            assert_eq!(
                error.file, FILE,
                "error names another file: {}",
                error.display
            );
            match error.line {
                Some(line) => {
                    assert!(
                        (1..=lines + 1).contains(&line),
                        "error at line {line} of {lines}: {}",
                        error.display
                    );
                    let prefix = format!("{FILE}:{line}: ");
                    assert!(error.display.starts_with(&prefix), "{}", error.display);
                    assert!(error.display.len() > prefix.len(), "empty message");
                    Built::ErrorAt(line)
                }
                None => {
                    assert!(error.display.starts_with("Corefile: "), "{}", error.display);
                    Built::Error
                }
            }
        }
        Ok(config) => {
            check(&config);
            let again = build_corefile(FILE, &text).expect("the same text builds again");
            assert_eq!(again, config, "the same text built twice differs");
            let entries: usize = config
                .servers
                .iter()
                .map(|s| {
                    let cache = s
                        .cache
                        .as_ref()
                        .map_or(0, |c| c.success.capacity.saturating_add(c.denial.capacity));
                    let rates = s.ratelimit.as_ref().map_or(0, |r| r.table);
                    cache.saturating_add(rates)
                })
                .fold(0usize, usize::saturating_add);
            if entries > MAX_ENTRIES {
                return Built::Large;
            }
            exercise(config);
            Built::Ran
        }
    }
}

/// The configuration's indices and names hold together.
fn check(config: &Config) {
    assert!(
        !config.listeners.is_empty(),
        "a configuration without listeners"
    );
    assert!(
        !config.servers.is_empty(),
        "a configuration without server blocks"
    );
    for listener in &config.listeners {
        assert!(
            !listener.servers.is_empty(),
            "listener {} serves no block",
            listener.addr
        );
        for &server in &listener.servers {
            assert!(
                server < config.servers.len(),
                "listener names block {server}"
            );
        }
    }
    for server in &config.servers {
        assert_wire_name(&server.zone);
        if let Some(forward) = &server.forward {
            assert_wire_name(&forward.from);
            assert!(!forward.upstreams.is_empty(), "a forward without upstreams");
            for &u in &forward.upstreams {
                assert!(u < config.upstreams.len(), "forward names upstream {u}");
            }
        }
        if let Some(cache) = &server.cache {
            assert!(!cache.zones.is_empty(), "a cache without zones");
            for zone in &cache.zones {
                assert_wire_name(zone);
            }
        }
    }
    config
        .check_reload(config)
        .expect("a configuration may replace itself");
}

/// A lowercase, uncompressed wire name of at most 255 octets.
fn assert_wire_name(name: &[u8]) {
    assert!(name.len() <= 255, "a name of {} octets", name.len());
    let mut at = 0;
    loop {
        let len = usize::from(*name.get(at).expect("name ends with the root label"));
        assert!(len <= 63, "a label of {len} octets");
        if len == 0 {
            assert_eq!(at + 1, name.len(), "bytes after the root label");
            return;
        }
        let label = name
            .get(at + 1..at + 1 + len)
            .expect("label inside the name");
        assert!(
            !label.iter().any(u8::is_ascii_uppercase),
            "a zone in upper case: {name:?}"
        );
        at += 1 + len;
    }
}

/// An engine on `config` answers `a.example. A` and `. NS` on every listener, and is idle
/// a minute later.
fn exercise(config: Config) {
    let config = Arc::new(config);
    let group = Group::with_seed(1, Coalesce::Across, 7);
    let mut engine = Engine::with_rng(Arc::clone(&config), group, 0, StdRng::seed_from_u64(7));
    let mut out = vec![0u8; MAX_MESSAGE];
    let mut now = group.epoch + Duration::from_millis(1);
    let policing = config
        .servers
        .iter()
        .any(|s| s.acl.is_some() || s.ratelimit.is_some());
    let mut owed = 0usize;
    for listener in 0..config.listeners.len() {
        for (id, query) in [
            (1u16, &b"\x01a\x07example\x00\x00\x01\x00\x01"[..]),
            (2, b"\x00\x00\x02\x00\x01"),
        ] {
            let mut bytes = vec![0u8; 12];
            bytes[0..2].copy_from_slice(&id.to_be_bytes());
            bytes[2] = 1; // RD
            bytes[5] = 1; // QDCOUNT
            bytes.extend_from_slice(query);
            let client = Client {
                listener: listener as u16,
                protocol: Protocol::Udp,
                peer: ([127, 0, 0, 1], 40_000).into(),
                conn: 0,
            };
            match engine.handle_query(now, client, &bytes, &mut out) {
                Outcome::Reply(len) => check_reply(&out[..len], id),
                Outcome::Pending => owed += 1,
                Outcome::Drop => assert!(policing, "a valid query dropped"),
            }
            while let Some(t) = engine.poll_transmit() {
                match t {
                    Transmit::Query { link, addr, .. } => {
                        let upstream = config.upstreams.get(usize::from(link.upstream));
                        assert_eq!(upstream.map(|u| u.addr), Some(addr), "query address");
                    }
                    Transmit::Reply { payload, .. } => {
                        owed = owed.checked_sub(1).expect("a reply owed");
                        assert!(Header::parse(&payload).is_ok_and(|h| h.qr()));
                    }
                    Transmit::Close { .. } => {}
                }
            }
        }
    }
    let end = now + Duration::from_secs(60);
    for _ in 0..10_000 {
        match engine.poll_timeout() {
            Some(at) if at <= end => {
                now = now.max(at);
                engine.handle_timeout(now);
                while let Some(t) = engine.poll_transmit() {
                    if let Transmit::Reply { payload, .. } = t {
                        owed = owed.checked_sub(1).expect("a reply owed");
                        assert!(Header::parse(&payload).is_ok_and(|h| h.qr()));
                    }
                }
            }
            _ => break,
        }
    }
    assert_eq!(owed, 0, "queries left unanswered");
    assert_eq!(engine.pending(), 0, "queries still pending");
}

fn check_reply(reply: &[u8], id: u16) {
    let header = Header::parse(reply).expect("reply header");
    assert!(header.qr() && header.id == id, "reply header {header:?}");
    if header.qdcount == 1 {
        Message::parse(reply).expect("reply parses");
    }
}
