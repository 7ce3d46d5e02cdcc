//! The `acl` directive in the engine (CoreDNS's plugin/acl), one scenario each on the
//! virtual clock of `common::Rig`: block, filter and drop by type and client address, rules in
//! order with the first matching policy deciding, zones, the check before the cache, reloads
//! that add and remove it, and its counters.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{Ask, Rig, Upstream, config_with, query};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use shardns_shard::config::{AclAction, AclConfig, AclPolicy, AclRule, AclZone, CacheConfig, Cidr};
use shardns_shard::{Client, Config, Outcome, Protocol, Writer};

/// A UDP client at `addr`.
fn from(addr: &str) -> Client {
    Client {
        listener: 0,
        protocol: Protocol::Udp,
        peer: addr.parse::<SocketAddr>().unwrap(),
        conn: 0,
    }
}

fn net(text: &str) -> Cidr {
    let (addr, prefix) = text.split_once('/').unwrap();
    Cidr::new(addr.parse().unwrap(), prefix.parse().unwrap()).unwrap()
}

fn policy(action: AclAction, qtypes: Option<Vec<u16>>, nets: Option<&[&str]>) -> AclPolicy {
    AclPolicy {
        action,
        qtypes,
        sources: nets.map(|nets| nets.iter().map(|n| net(n)).collect()),
    }
}

fn zone(wire: &[u8], text: &str) -> AclZone {
    AclZone {
        wire: wire.to_vec(),
        text: text.to_string(),
    }
}

/// One rule for the root zone with `policies`.
fn root_acl(policies: Vec<AclPolicy>) -> AclConfig {
    AclConfig {
        zones: vec![zone(b"\0", ".")],
        rules: vec![AclRule {
            zones: vec![0],
            policies,
        }],
    }
}

/// The root block with a cache and `acl`.
fn config(acl: AclConfig) -> Config {
    let mut config = config_with(Some(CacheConfig::with_ttl(None)));
    config.servers[0].acl = Some(acl);
    config
}

fn a(ttl: u32) -> Upstream {
    Upstream {
        answers: vec![([192, 0, 2, 1], ttl)],
        ..Upstream::default()
    }
}

fn edns() -> Ask {
    Ask {
        edns: true,
        ..Ask::default()
    }
}

/// Sends `name`/`rtype` from `client` with ID 7: what the engine did, and the reply's bytes.
fn ask(rig: &mut Rig, client: Client, name: &str, rtype: RecordType) -> (Outcome, Vec<u8>) {
    let before = rig.replies.len();
    let outcome = rig.send_on(0, client, &query(7, name, rtype, edns()));
    let bytes = match rig.replies.len() > before {
        true => rig.replies.pop_back().unwrap().bytes,
        false => Vec::new(),
    };
    (outcome, bytes)
}

/// The Extended DNS Error INFO-CODE at the end of `reply` (the OPT record is last).
fn ede(reply: &[u8]) -> u16 {
    let tail = &reply[reply.len() - 6..];
    assert_eq!(&tail[..4], &[0, 15, 0, 2], "an EDE option without text");
    u16::from_be_bytes([tail[4], tail[5]])
}

#[test]
fn block_aaaa_from_loopback_refuses_aaaa_and_answers_a() {
    let acl = root_acl(vec![policy(
        AclAction::Block,
        Some(vec![28]),
        Some(&["127.0.0.0/8"]),
    )]);
    let mut rig = Rig::one(config(acl));
    let client = from("127.0.0.9:4000");
    let (outcome, refused) = ask(&mut rig, client, "www.example.", RecordType::AAAA);
    assert!(matches!(outcome, Outcome::Reply(_)));
    let message = Message::from_vec(&refused).unwrap();
    assert_eq!(message.response_code(), ResponseCode::Refused);
    assert_eq!(message.id(), 7);
    assert_eq!(message.queries()[0].query_type(), RecordType::AAAA);
    assert_eq!(ede(&refused), 15, "Blocked");
    assert_eq!(rig.upstream_sent(), 0, "nothing asked upstream");
    // A is not blocked: it is forwarded and answered.
    assert_eq!(
        ask(&mut rig, client, "www.example.", RecordType::A).0,
        Outcome::Pending
    );
    rig.answer(&a(60));
    assert_eq!(rig.next_reply().response_code(), ResponseCode::NoError);
    // Another network may ask AAAA.
    let outside = from("[2001:db8::1]:4000");
    assert_eq!(
        ask(&mut rig, outside, "www.example.", RecordType::AAAA).0,
        Outcome::Pending
    );

    let stats = rig.engines[0].stats();
    let policies = &stats.policies[0];
    assert_eq!(policies.acl_denied[0][0].get(), 1, "blocked once, zone .");
    assert_eq!(policies.acl_allowed.get(), 2);
    let requests = &stats.requests[0];
    assert_eq!(
        requests.responses[Writer::Acl as usize][5].get(),
        1,
        "REFUSED written by acl"
    );
    assert_eq!(stats.error_replies[5].get(), 1);
}

#[test]
fn filter_answers_empty_noerror_and_drop_answers_nothing() {
    let acl = root_acl(vec![
        policy(AclAction::Filter, Some(vec![16]), None),
        policy(AclAction::Drop, None, Some(&["10.0.0.0/8"])),
    ]);
    let mut rig = Rig::one(config(acl));
    let (_, filtered) = ask(
        &mut rig,
        from("192.0.2.1:53"),
        "txt.example.",
        RecordType::TXT,
    );
    let message = Message::from_vec(&filtered).unwrap();
    assert_eq!(message.response_code(), ResponseCode::NoError);
    assert!(message.answers().is_empty() && message.name_servers().is_empty());
    assert_eq!(message.queries()[0].name().to_ascii(), "txt.example.");
    assert_eq!(ede(&filtered), 17, "Filtered");
    // Without EDNS: no OPT record at all.
    let plain = query(8, "txt.example.", RecordType::TXT, Ask::default());
    let reply = rig.query(from("192.0.2.1:53"), &plain).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.extensions().is_none());
    // Drop: no reply, nothing upstream.
    let (outcome, bytes) = ask(&mut rig, from("10.1.2.3:53"), "a.example.", RecordType::A);
    assert_eq!((outcome, bytes.len()), (Outcome::Drop, 0));
    assert_eq!(rig.upstream_sent(), 0);
    let policies = &rig.engines[0].stats().policies[0];
    assert_eq!(policies.acl_denied[0][1].get(), 2, "filtered");
    assert_eq!(policies.acl_denied[0][2].get(), 1, "dropped");
    assert_eq!(policies.acl_allowed.get(), 0);
}

#[test]
fn first_matching_policy_decides_and_allow_ends_the_check() {
    // CoreDNS's README: block 192.168.0.0/16 except 192.168.1.0/24; a second rule drops ANY.
    let mut acl = root_acl(vec![
        policy(AclAction::Allow, None, Some(&["192.168.1.0/24"])),
        policy(AclAction::Block, None, Some(&["192.168.0.0/16"])),
    ]);
    acl.rules.push(AclRule {
        zones: vec![0],
        policies: vec![policy(AclAction::Drop, Some(vec![255]), None)],
    });
    let mut rig = Rig::one(config(acl));
    let outcome = |rig: &mut Rig, addr: &str, rtype| ask(rig, from(addr), "n.example.", rtype).0;
    assert_eq!(
        outcome(&mut rig, "192.168.1.5:1", RecordType::ANY),
        Outcome::Pending,
        "allowed: no further rule"
    );
    assert!(matches!(
        outcome(&mut rig, "192.168.7.5:1", RecordType::A),
        Outcome::Reply(_)
    ));
    assert_eq!(
        outcome(&mut rig, "192.0.2.5:1", RecordType::ANY),
        Outcome::Drop,
        "the second rule"
    );
    let mapped = outcome(&mut rig, "[::ffff:192.168.7.5]:1", RecordType::MX);
    assert!(
        matches!(mapped, Outcome::Reply(_)),
        "IPv4-mapped as IPv4: blocked"
    );
}

#[test]
fn a_rule_applies_to_its_zones_and_counts_under_the_longest() {
    let acl = AclConfig {
        zones: vec![
            zone(b"\x07example\0", "example."),
            zone(b"\x06secret\x07example\0", "secret.example."),
        ],
        rules: vec![AclRule {
            zones: vec![0, 1],
            policies: vec![policy(AclAction::Block, None, None)],
        }],
    };
    let mut config = config(acl);
    config.servers[0].acl.as_mut().unwrap().rules[0].zones = vec![1];
    let mut rig = Rig::one(config.clone());
    let client = from("127.0.0.1:9");
    assert!(matches!(
        ask(&mut rig, client, "x.secret.example.", RecordType::A).0,
        Outcome::Reply(_)
    ));
    assert_eq!(
        ask(&mut rig, client, "public.example.", RecordType::A).0,
        Outcome::Pending
    );
    assert_eq!(rig.engines[0].stats().policies[0].acl_denied[1][0].get(), 1);
    // With both zones, a name under the deeper one counts there.
    config.servers[0].acl.as_mut().unwrap().rules[0].zones = vec![0, 1];
    let mut rig = Rig::one(config);
    ask(&mut rig, client, "x.secret.example.", RecordType::A);
    ask(&mut rig, client, "public.example.", RecordType::A);
    let denied = &rig.engines[0].stats().policies[0].acl_denied;
    assert_eq!((denied[0][0].get(), denied[1][0].get()), (1, 1));
}

#[test]
fn acl_is_checked_before_the_cache() {
    let acl = root_acl(vec![policy(AclAction::Block, None, Some(&["10.0.0.0/8"]))]);
    let mut rig = Rig::one(config(acl));
    ask(
        &mut rig,
        from("192.0.2.1:1"),
        "cached.example.",
        RecordType::A,
    );
    rig.answer(&a(300));
    rig.next_reply();
    let (_, hit) = ask(
        &mut rig,
        from("192.0.2.2:1"),
        "cached.example.",
        RecordType::A,
    );
    assert_eq!(Message::from_vec(&hit).unwrap().answers().len(), 1, "a hit");
    let (_, blocked) = ask(
        &mut rig,
        from("10.0.0.1:1"),
        "cached.example.",
        RecordType::A,
    );
    let blocked = Message::from_vec(&blocked).unwrap();
    assert_eq!(
        blocked.response_code(),
        ResponseCode::Refused,
        "the hit is not served"
    );
    assert!(blocked.answers().is_empty());
}

#[test]
fn a_reload_adds_and_removes_the_acl() {
    let plain = config_with(Some(CacheConfig::with_ttl(None)));
    let mut rig = Rig::one(plain.clone());
    let client = from("10.0.0.1:1");
    assert_eq!(
        ask(&mut rig, client, "a.example.", RecordType::A).0,
        Outcome::Pending
    );
    let blocking = config(root_acl(vec![policy(AclAction::Block, None, None)]));
    let now = rig.now;
    rig.engines[0].reconfigure(now, Arc::new(blocking)).unwrap();
    assert!(matches!(
        ask(&mut rig, client, "b.example.", RecordType::A).0,
        Outcome::Reply(_)
    ));
    rig.engines[0].reconfigure(now, Arc::new(plain)).unwrap();
    assert_eq!(
        ask(&mut rig, client, "c.example.", RecordType::A).0,
        Outcome::Pending
    );
}
