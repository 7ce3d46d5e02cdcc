//! Unit tests of the `ratelimit` directive: its defaults, every option, and the messages of
//! what it refuses (each naming FILE:LINE and what was expected).

use shardns_shard::config::{Cidr, RateLimitAction, RateLimitConfig};

use crate::corefile::build;
use crate::corefile::directives::tests::{error, settings};

fn ratelimit(body: &str) -> RateLimitConfig {
    settings(body).unwrap().ratelimit.expect("a ratelimit")
}

fn net(text: &str) -> Cidr {
    crate::corefile::address::parse_cidr(text).unwrap()
}

#[test]
fn defaults_and_options() {
    assert_eq!(ratelimit("ratelimit"), RateLimitConfig::with_qps(100));
    let defaults = ratelimit("ratelimit 50");
    assert_eq!(
        (
            defaults.qps,
            defaults.burst,
            defaults.ipv4_prefix,
            defaults.ipv6_prefix
        ),
        (50, 50, 32, 128)
    );
    assert_eq!(
        (defaults.action, defaults.table, defaults.whitelist.len()),
        (RateLimitAction::Refuse, 4096, 0)
    );
    // The external CoreDNS plugin's form.
    let external = ratelimit("ratelimit 50 {\n whitelist 127.0.0.1 192.168.1.25\n}");
    assert_eq!(
        external.whitelist,
        [net("127.0.0.1/32"), net("192.168.1.25/32")]
    );
    let all = ratelimit(
        "ratelimit 20 {\n burst 5\n whitelist 10.0.0.0/8\n whitelist fd00::/8 10.0.0.0/8\n \
         action TRUNCATE\n ipv4_prefix 24\n ipv6_prefix 56\n table 100\n}",
    );
    assert_eq!(
        all,
        RateLimitConfig {
            qps: 20,
            burst: 5,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            whitelist: vec![net("10.0.0.0/8"), net("fd00::/8")],
            action: RateLimitAction::Truncate,
            table: 100,
        }
    );
    assert_eq!(
        ratelimit("ratelimit {\n action drop\n}").action,
        RateLimitAction::Drop
    );
    // Every block of the server block gets it.
    let config = build("Corefile", "a.example b.example {\n ratelimit 7\n}").unwrap();
    assert!(
        config
            .servers
            .iter()
            .all(|s| s.ratelimit == Some(RateLimitConfig::with_qps(7)))
    );
}

#[test]
fn bad_ratelimit() {
    assert_eq!(
        error("ratelimit 0"),
        "Corefile:2: bad ratelimit QPS \"0\" (expected a whole number from 1 to 1000000)"
    );
    assert_eq!(
        error("ratelimit 10/s"),
        "Corefile:2: bad ratelimit QPS \"10/s\" (expected a whole number from 1 to 1000000)"
    );
    assert_eq!(
        error("ratelimit 10 20"),
        "Corefile:2: ratelimit takes one QPS, got another argument \"20\""
    );
    assert_eq!(
        error("ratelimit\nratelimit"),
        "Corefile:3: directive \"ratelimit\" appears twice in this server block"
    );
    assert_eq!(
        error("ratelimit {\n burst\n}"),
        "Corefile:3: ratelimit option \"burst\" takes one N, the queries a client may send at \
         once"
    );
    assert_eq!(
        error("ratelimit {\n burst 0\n}"),
        "Corefile:3: bad ratelimit burst \"0\" (expected a whole number from 1 to 1000000)"
    );
    assert_eq!(
        error("ratelimit {\n action slip\n}"),
        "Corefile:3: bad ratelimit action \"slip\" (expected refuse, truncate or drop)"
    );
    assert_eq!(
        error("ratelimit {\n action refuse\n action drop\n}"),
        "Corefile:4: ratelimit option \"action\" appears twice (first at line 3)"
    );
    assert_eq!(
        error("ratelimit {\n whitelist\n}"),
        "Corefile:3: ratelimit option \"whitelist\" takes one or more SOURCEs"
    );
    assert_eq!(
        error("ratelimit {\n whitelist 10.0.0.0/8\n whitelist 300.0.0.1\n}"),
        "Corefile:4: bad ratelimit whitelist entry: \"300.0.0.1\" is not an address prefix \
         such as 10.0.0.0/8 or fd00::/56, or an address (expected an address prefix such as \
         10.0.0.0/8 or fd00::/56, or an address)"
    );
    assert_eq!(
        error("ratelimit {\n ipv4_prefix 33\n}"),
        "Corefile:3: bad ipv4_prefix \"33\" (expected a whole number from 1 to 32)"
    );
    assert_eq!(
        error("ratelimit {\n ipv6_prefix 0\n}"),
        "Corefile:3: bad ipv6_prefix \"0\" (expected a whole number from 1 to 128)"
    );
    assert_eq!(
        error("ratelimit {\n table 2\n}"),
        "Corefile:3: bad ratelimit table \"2\" (expected a whole number from 4 to 1048576)"
    );
    assert_eq!(
        error("ratelimit {\n window 1s\n}"),
        "Corefile:3: unknown ratelimit option \"window\" (expected burst, whitelist, action, \
         ipv4_prefix, ipv6_prefix or table)"
    );
    assert_eq!(
        error("ratelimit {\n burst 1 {\n }\n}"),
        "Corefile:3: ratelimit option \"burst\" takes no options block"
    );
}
