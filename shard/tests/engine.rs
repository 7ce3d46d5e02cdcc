//! Engine scenarios driven by a virtual clock (the common [`Rig`] with one engine): the
//! engine gets `now` and bytes and returns actions; no sockets, no sleeping. Upstream replies
//! are built with hickory-proto, and the engine's replies parsed with it.

use std::net::SocketAddr;
use std::time::Duration;

mod common;

use common::{Rig, ttls, wire_name};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use shardns_shard::config::{
    CacheConfig, ForwardConfig, Limits, ListenerConfig, ServerConfig, UpstreamConfig,
};
use shardns_shard::{Client, Config, Handler, Link, Outcome, Protocol};

fn server(
    zone: &str,
    upstreams: Vec<usize>,
    force_tcp: bool,
    cache: Option<CacheConfig>,
) -> ServerConfig {
    ServerConfig {
        zone: wire_name(zone),
        zone_text: zone.to_string(),
        cache,
        forward: Some(ForwardConfig {
            from: wire_name("."),
            upstreams,
            force_tcp,
            ..ForwardConfig::default()
        }),
        log_errors: true,
        log_queries: None,
        loop_probe: None,
        acl: None,
        ratelimit: None,
        fastpath: None,
    }
}

fn config(upstreams: usize, force_tcp: bool, cache: Option<CacheConfig>) -> Config {
    Config {
        listeners: vec![ListenerConfig {
            addr: "127.0.0.1:5353".parse().unwrap(),
            servers: vec![0],
        }],
        servers: vec![server(".", (0..upstreams).collect(), force_tcp, cache)],
        upstreams: (0..upstreams)
            .map(|i| UpstreamConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
            })
            .collect(),
        limits: Limits::default(),
    }
}

fn client(port: u16, protocol: Protocol) -> Client {
    Client {
        listener: 0,
        protocol,
        peer: SocketAddr::from(([127, 0, 0, 1], port)),
        conn: 0,
    }
}

fn query(id: u16, name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// An upstream reply to `upstream_query` with `answers` A records (TTL `ttl`), or with an SOA
/// in authority when `rcode` is NXDOMAIN / answers is 0.
fn reply(
    upstream_query: &Message,
    rcode: ResponseCode,
    answers: &[[u8; 4]],
    ttl: u32,
    soa_ttl: Option<u32>,
) -> Vec<u8> {
    let up = common::Upstream {
        rcode: Some(rcode),
        answers: answers.iter().map(|a| (*a, ttl)).collect(),
        soa: soa_ttl,
        ..common::Upstream::default()
    };
    common::reply(upstream_query, &up)
}

fn cache30() -> Option<CacheConfig> {
    Some(CacheConfig::with_ttl(Some(30)))
}

#[test]
fn miss_then_hit_with_ttl_decrement_and_client_case_and_id() {
    let mut rig = Rig::one(config(1, true, cache30()));
    let c = client(4000, Protocol::Udp);
    assert_eq!(
        rig.outcome(c, &query(11, "www.Example.", RecordType::A, false)),
        Outcome::Pending
    );
    let (link, addr, up) = rig.upstream_query();
    assert_eq!(link.protocol, Protocol::Tcp, "force_tcp");
    assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 1000)));
    assert_ne!(
        up.id(),
        11,
        "upstream query gets its own ID (seeded rng; 11 would be a coincidence)"
    );
    rig.respond(
        link,
        &reply(
            &up,
            ResponseCode::NoError,
            &[[1, 2, 3, 4], [5, 6, 7, 8]],
            300,
            None,
        ),
    );
    let replies = rig.take_replies();
    assert_eq!(replies.len(), 1);
    let (to, first) = &replies[0];
    assert_eq!(*to, c);
    assert_eq!(first.id(), 11);
    assert_eq!(first.queries()[0].name().to_ascii(), "www.Example.");
    assert_eq!(
        ttls(first),
        vec![30, 30],
        "TTL clamped to cache 30 on the first reply too"
    );
    assert!(
        first.extensions().is_none(),
        "no OPT for a client without EDNS"
    );

    rig.wait(Duration::from_millis(10_500));
    let hit = rig
        .query(
            client(4001, Protocol::Udp),
            &query(12, "WWW.EXAMPLE.", RecordType::A, true),
        )
        .expect("hit");
    assert_eq!(hit.id(), 12);
    assert_eq!(hit.queries()[0].name().to_ascii(), "WWW.EXAMPLE.");
    assert_eq!(ttls(&hit), vec![20, 20]);
    assert!(hit.authoritative());
    assert!(hit.extensions().is_some(), "OPT for an EDNS client");
    assert_eq!(hit.answers().len(), 2);
    assert!(
        rig.upstream.is_empty(),
        "a hit sends nothing upstream: {:?}",
        rig.upstream
    );
    assert_eq!(rig.engines[0].stats().cache_hits(), 1);
    assert_eq!(rig.engines[0].stats().upstream_queries.get(), 1);
}

#[test]
fn entries_expire_and_are_fetched_again() {
    let mut rig = Rig::one(config(1, false, cache30()));
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(1, "a.example.", RecordType::A, false));
    let (link, _, up) = rig.upstream_query();
    assert_eq!(
        link.protocol,
        Protocol::Udp,
        "follows the client's protocol"
    );
    rig.respond(
        link,
        &reply(&up, ResponseCode::NoError, &[[1, 1, 1, 1]], 30, None),
    );
    rig.take_replies();
    rig.wait(Duration::from_millis(29_999));
    assert_eq!(
        ttls(
            &rig.query(c, &query(2, "a.example.", RecordType::A, false))
                .unwrap()
        ),
        vec![1]
    );
    rig.wait(Duration::from_millis(1));
    assert_eq!(
        rig.outcome(c, &query(3, "a.example.", RecordType::A, false)),
        Outcome::Pending
    );
    rig.upstream_query();
}

#[test]
fn ttl_floor_and_denial_ttl_from_soa() {
    let mut rig = Rig::one(config(1, false, Some(CacheConfig::with_ttl(None))));
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(1, "low.example.", RecordType::A, false));
    let (link, _, up) = rig.upstream_query();
    rig.respond(
        link,
        &reply(&up, ResponseCode::NoError, &[[1, 1, 1, 1]], 1, None),
    );
    assert_eq!(
        ttls(&rig.take_replies()[0].1),
        vec![5],
        "MINTTL 5 raises a TTL of 1"
    );

    rig.outcome(c, &query(2, "gone.example.", RecordType::A, false));
    let (link, _, up) = rig.upstream_query();
    rig.respond(link, &reply(&up, ResponseCode::NXDomain, &[], 0, Some(120)));
    let nx = &rig.take_replies()[0].1;
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert_eq!(ttls(nx), vec![120]);
    rig.wait(Duration::from_secs(100));
    let hit = rig
        .query(c, &query(3, "gone.example.", RecordType::A, false))
        .expect("denial hit");
    assert_eq!(hit.response_code(), ResponseCode::NXDomain);
    assert_eq!(ttls(&hit), vec![20]);
}

#[test]
fn uncacheable_answers_are_relayed_but_not_stored() {
    // SERVFAIL is not cached with `servfail 0` (its caching is tested in cache_rules.rs).
    let mut cache = CacheConfig::with_ttl(Some(30));
    cache.servfail_ttl = 0;
    let mut rig = Rig::one(config(1, false, Some(cache)));
    let c = client(4000, Protocol::Udp);
    for (rcode, soa) in [
        (ResponseCode::NXDomain, None),
        (ResponseCode::ServFail, None),
        (ResponseCode::Refused, None),
    ] {
        rig.outcome(c, &query(1, "x.example.", RecordType::A, false));
        let (link, _, up) = rig.upstream_query();
        rig.respond(link, &reply(&up, rcode, &[], 0, soa));
        assert_eq!(rig.take_replies()[0].1.response_code(), rcode);
        assert_eq!(
            rig.outcome(c, &query(2, "x.example.", RecordType::A, false)),
            Outcome::Pending,
            "{rcode:?} not cached"
        );
        let (link, _, up) = rig.upstream_query();
        rig.respond(link, &reply(&up, rcode, &[], 0, soa));
        rig.take_replies();
    }
}

#[test]
fn do_bit_separates_cache_entries() {
    let mut rig = Rig::one(config(1, false, cache30()));
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(1, "d.example.", RecordType::A, false));
    let (link, _, up) = rig.upstream_query();
    rig.respond(
        link,
        &reply(&up, ResponseCode::NoError, &[[1, 1, 1, 1]], 60, None),
    );
    rig.take_replies();
    let mut with_do = Message::from_vec(&query(2, "d.example.", RecordType::A, true)).unwrap();
    with_do
        .extensions_mut()
        .as_mut()
        .unwrap()
        .set_dnssec_ok(true);
    assert_eq!(rig.outcome(c, &with_do.to_vec().unwrap()), Outcome::Pending);
    let (_, _, up) = rig.upstream_query();
    assert!(
        up.extensions().as_ref().unwrap().flags().dnssec_ok,
        "DO forwarded"
    );
}

#[test]
fn attempt_timeout_moves_to_next_upstream_then_servfail_at_5s() {
    let mut rig = Rig::one(config(2, true, cache30()));
    let start = rig.now;
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(9, "slow.example.", RecordType::A, true));
    let (first, _, _) = rig.upstream_query();
    assert_eq!(
        rig.engines[0].poll_timeout(),
        Some(start + Duration::from_secs(2))
    );
    rig.wait(Duration::from_millis(1999));
    assert!(rig.upstream.is_empty() && rig.replies.is_empty());
    rig.wait(Duration::from_millis(1));
    let (second, _, _) = rig.upstream_query();
    assert_ne!(
        first.upstream, second.upstream,
        "the next attempt goes to the other upstream"
    );
    rig.wait(Duration::from_secs(2));
    let (third, _, _) = rig.upstream_query();
    assert_eq!(third.upstream, first.upstream);
    // (The timeouts started health probes, so the next deadline may be a probe's.)
    assert!(rig.engines[0].poll_timeout() <= Some(start + Duration::from_secs(5)));
    rig.wait(Duration::from_millis(999));
    assert!(rig.upstream.is_empty() && rig.replies.is_empty());
    rig.wait(Duration::from_millis(1));
    let replies = rig.take_replies();
    assert_eq!(replies.len(), 1);
    let servfail = &replies[0].1;
    assert_eq!(servfail.response_code(), ResponseCode::ServFail);
    assert_eq!(servfail.id(), 9);
    assert_eq!(servfail.queries()[0].name().to_ascii(), "slow.example.");
    assert!(servfail.extensions().is_some());
    assert_eq!(rig.engines[0].pending(), 0);
    assert_eq!(rig.engines[0].stats().upstream_timeouts.get(), 2);
}

#[test]
fn refused_connection_fails_over_at_once_and_servfails_when_all_are_down() {
    let mut rig = Rig::one(config(2, true, cache30()));
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(5, "down.example.", RecordType::A, false));
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (link, _, _) = rig.upstream_query();
        seen.push(link.upstream);
        rig.close_link(link);
    }
    assert_eq!(
        seen.iter().filter(|&&u| u == 0).count(),
        2,
        "2 × #upstreams attempts: {seen:?}"
    );
    let replies = rig.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].1.response_code(), ResponseCode::ServFail);
    assert_eq!(rig.engines[0].stats().upstream_link_failures.get(), 4);
}

/// Four replies that answer nothing: another ID, another question, garbage, another opcode
/// (NOTIFY: a hit would serve it as it is).
fn wrong_replies(up: &Message) -> Vec<Vec<u8>> {
    let mut notify = reply(up, ResponseCode::NoError, &[[6, 6, 6, 6]], 60, None);
    notify[2] = (notify[2] & 0x87) | (4 << 3);
    let mut wrong_id = up.clone();
    wrong_id.set_id(up.id().wrapping_add(1));
    let mut wrong_q = up.clone();
    wrong_q.take_queries();
    wrong_q.add_query(Query::query(
        Name::from_ascii("evil.example.").unwrap(),
        RecordType::A,
    ));
    vec![
        reply(&wrong_id, ResponseCode::NoError, &[[6, 6, 6, 6]], 60, None),
        reply(&wrong_q, ResponseCode::NoError, &[[6, 6, 6, 6]], 60, None),
        b"\x00\x01garbage".to_vec(),
        notify,
    ]
}

#[test]
fn replies_with_wrong_id_or_question_are_ignored_over_tcp() {
    let mut rig = Rig::one(config(1, true, cache30()));
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(5, "q.example.", RecordType::A, false));
    let (link, _, up) = rig.upstream_query();
    assert_eq!(link.protocol, Protocol::Tcp);
    for wrong in wrong_replies(&up) {
        rig.respond(link, &wrong);
    }
    assert!(rig.upstream.is_empty() && rig.replies.is_empty());
    assert_eq!(rig.engines[0].stats().upstream_rejected.get(), 4);
    assert_eq!(rig.engines[0].stats().upstream_forgeries.get(), 0);
    rig.respond(
        link,
        &reply(&up, ResponseCode::NoError, &[[1, 2, 3, 4]], 60, None),
    );
    let replies = rig.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        replies[0].1.answers()[0].data(),
        &RData::A(A::new(1, 2, 3, 4))
    );
}

/// Over UDP each attempt has a socket (a link) of its own; a datagram on it that answers
/// nothing (a forger who found the port, or a broken upstream) moves the query to TCP at
/// once: the UDP socket closes, and a right guess that comes after is not taken.
#[test]
fn a_reply_that_answers_nothing_over_udp_moves_the_query_to_tcp() {
    for wrong in 0..4 {
        let mut rig = Rig::one(config(1, false, cache30()));
        let c = client(4000, Protocol::Udp);
        rig.outcome(c, &query(5, "q.example.", RecordType::A, false));
        let (udp, _, up) = rig.upstream_query();
        assert_eq!(udp.protocol, Protocol::Udp);
        assert_eq!(rig.engines[0].upstream_udp_sockets(), 1);
        rig.respond(udp, &wrong_replies(&up)[wrong]);
        let (tcp, _, again) = rig.upstream_query();
        assert_eq!(
            (tcp.protocol, again.queries(), rig.closed.as_slice()),
            (Protocol::Tcp, up.queries(), &[udp][..]),
            "the query goes on over TCP and the UDP socket closes"
        );
        assert_ne!(again.id(), up.id());
        assert_eq!(rig.engines[0].upstream_udp_sockets(), 0);
        let stats = rig.engines[0].stats();
        assert_eq!(
            (
                stats.upstream_rejected.get(),
                stats.upstream_forgeries.get()
            ),
            (1, 1)
        );
        // The forger's right guess, too late, on the closed socket: nothing.
        rig.respond(
            udp,
            &reply(&up, ResponseCode::NoError, &[[6, 6, 6, 6]], 86_400, None),
        );
        assert!(rig.replies.is_empty() && rig.upstream.is_empty());
        rig.respond(
            tcp,
            &reply(&again, ResponseCode::NoError, &[[1, 2, 3, 4]], 60, None),
        );
        let replies = rig.take_replies();
        assert_eq!(replies.len(), 1);
        assert_eq!(
            replies[0].1.answers()[0].data(),
            &RData::A(A::new(1, 2, 3, 4))
        );
        // Cached: the truth.
        let hit = rig
            .query(c, &query(6, "q.example.", RecordType::A, false))
            .expect("a hit");
        assert_eq!(hit.answers()[0].data(), &RData::A(A::new(1, 2, 3, 4)));
    }
}

/// Each UDP attempt (and each probe) has a socket to itself. Answered, the socket waits for
/// the next exchange with its upstream; timed out or failed, it closes (a late reply must
/// not meet the next exchange).
#[test]
fn every_udp_attempt_has_a_socket_to_itself_kept_only_after_an_answer() {
    let mut rig = Rig::one(config(2, false, cache30()));
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(1, "a.example.", RecordType::A, false));
    rig.outcome(c, &query(2, "b.example.", RecordType::A, false));
    let first = rig.lose();
    let second = rig.upstream.pop_front().expect("a second query");
    assert_ne!(first.link, second.link, "one socket per attempt");
    assert_eq!(rig.engines[0].upstream_udp_sockets(), 2);
    // Answered: its socket stays, idle, and the next query to that upstream takes it.
    let bytes = reply(
        &second.query(),
        ResponseCode::NoError,
        &[[1, 1, 1, 1]],
        60,
        None,
    );
    rig.respond(second.link, &bytes);
    assert!(rig.closed.is_empty());
    assert_eq!(rig.engines[0].idle_upstream_udp_sockets(), 1);
    // Timed out: the next attempt takes another socket, the first closes.
    rig.wait(Duration::from_secs(2));
    let retry = rig.upstream.pop_front().expect("a retry");
    assert_ne!(retry.link, first.link);
    assert!(rig.closed.contains(&first.link));
    // Refused: its socket closes too.
    let retry_link = retry.link;
    rig.close_link(retry_link);
    assert!(rig.closed.contains(&retry_link));
    rig.wait(Duration::from_secs(10));
    rig.take_replies();
    for probe in rig.probes.drain(..) {
        assert!(probe.link.protocol == Protocol::Udp && probe.link.conn != 0);
    }
    assert_eq!(
        rig.engines[0].upstream_udp_sockets(),
        rig.engines[0].idle_upstream_udp_sockets(),
        "nothing pending, no probe waiting: only idle sockets open ({:?})",
        rig.closed
    );
    assert!(rig.engines[0].is_idle());
}

/// A socket serves at most 64 exchanges; an idle socket that receives anything closes.
#[test]
fn an_idle_udp_socket_is_reused_a_bounded_number_of_times_and_burnt_by_a_stray_datagram() {
    let mut rig = Rig::one(config(1, false, cache30()));
    let c = client(4000, Protocol::Udp);
    let mut links = Vec::new();
    for n in 0..65u16 {
        let name = format!("n{n}.example.");
        rig.outcome(c, &query(n, &name, RecordType::A, false));
        let (link, _, up) = rig.upstream_query();
        links.push(link);
        rig.respond(
            link,
            &reply(&up, ResponseCode::NoError, &[[1, 1, 1, 1]], 60, None),
        );
        assert_eq!(rig.take_replies().len(), 1);
    }
    assert!(links[..64].iter().all(|&l| l == links[0]), "{links:?}");
    assert_ne!(links[64], links[0], "a fresh socket after 64 exchanges");
    assert_eq!(rig.closed, [links[0]]);
    // A stray datagram on the idle socket: counted, and the socket closes.
    let stray = reply(
        &Message::from_vec(&query(999, "x.example.", RecordType::A, false)).unwrap(),
        ResponseCode::NoError,
        &[[6, 6, 6, 6]],
        60,
        None,
    );
    rig.respond(links[64], &stray);
    assert_eq!(rig.closed, [links[0], links[64]]);
    assert_eq!(rig.engines[0].upstream_udp_sockets(), 0);
    assert_eq!(rig.engines[0].stats().upstream_rejected.get(), 1);
}

#[test]
fn concurrent_identical_misses_share_one_upstream_query() {
    let mut rig = Rig::one(config(1, true, cache30()));
    let clients: Vec<Client> = (0..5).map(|i| client(5000 + i, Protocol::Udp)).collect();
    for (i, c) in clients.iter().enumerate() {
        let name = if i % 2 == 0 {
            "same.example."
        } else {
            "SAME.example."
        };
        assert_eq!(
            rig.outcome(*c, &query(100 + i as u16, name, RecordType::A, false)),
            Outcome::Pending
        );
    }
    let (link, _, up) = rig.upstream_query();
    rig.respond(
        link,
        &reply(&up, ResponseCode::NoError, &[[1, 2, 3, 4]], 60, None),
    );
    let replies = rig.take_replies();
    assert_eq!(replies.len(), 5);
    for (i, (to, m)) in replies.iter().enumerate() {
        assert_eq!(*to, clients[i]);
        assert_eq!(m.id(), 100 + i as u16);
        let expect = if i % 2 == 0 {
            "same.example."
        } else {
            "SAME.example."
        };
        assert_eq!(m.queries()[0].name().to_ascii(), expect);
    }
    assert_eq!(rig.engines[0].stats().coalesced.get(), 4);
}

#[test]
fn bad_input_gets_formerr_notimp_or_silence_and_service_continues() {
    let mut rig = Rig::one(config(1, false, cache30()));
    let c = client(4000, Protocol::Udp);
    let good = query(77, "ok.example.", RecordType::A, false);
    // Short header and responses: dropped.
    assert_eq!(rig.outcome(c, &good[..5]), Outcome::Drop);
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(rig.outcome(c, &response), Outcome::Drop);
    // qdcount 0 and 2: FORMERR, header only.
    for count in [0u8, 2] {
        let mut bad = good.clone();
        bad[5] = count;
        let m = rig.query(c, &bad).expect("FORMERR");
        assert_eq!(
            (m.id(), m.response_code(), m.queries().len()),
            (77, ResponseCode::FormErr, 0)
        );
    }
    // Compression loop in the question, label > 63, name > 255.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut long_label = good[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut long_name = good[..12].to_vec();
    for _ in 0..5 {
        long_name.push(60);
        long_name.extend_from_slice(&[b'b'; 60]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    for bad in [looped, long_label, long_name] {
        assert_eq!(
            rig.query(c, &bad).expect("FORMERR").response_code(),
            ResponseCode::FormErr
        );
    }
    // Unknown opcode: NOTIMP, question echoed.
    let mut notify = Message::from_vec(&good).unwrap();
    notify.set_op_code(OpCode::Notify);
    let m = rig.query(c, &notify.to_vec().unwrap()).expect("NOTIMP");
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    let mut status = good.clone();
    status[2] = (status[2] & 0x87) | (2 << 3);
    assert_eq!(
        rig.query(c, &status).unwrap().response_code(),
        ResponseCode::NotImp
    );
    // EDNS version 1: BADVERS.
    let mut v1 = Message::from_vec(&query(78, "ok.example.", RecordType::A, true)).unwrap();
    v1.extensions_mut().as_mut().unwrap().set_version(1);
    let m = rig.query(c, &v1.to_vec().unwrap()).expect("BADVERS");
    assert_eq!(
        u16::from(m.response_code()),
        16,
        "BADVERS (hickory names 16 BADSIG)"
    );
    // Class CH: REFUSED.
    let mut chaos = Message::new();
    let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    chaos.set_id(3).add_query(q);
    assert_eq!(
        rig.query(c, &chaos.to_vec().unwrap())
            .unwrap()
            .response_code(),
        ResponseCode::Refused
    );
    // And a valid query still goes out.
    assert_eq!(rig.outcome(c, &good), Outcome::Pending);
    rig.upstream_query();
    assert_eq!(rig.engines[0].stats().dropped.get(), 2);
}

#[test]
fn large_answers_are_truncated_for_udp_clients_only() {
    let mut rig = Rig::one(config(1, true, cache30()));
    let udp = client(4000, Protocol::Udp);
    rig.outcome(udp, &query(1, "big.example.", RecordType::TXT, false));
    let (link, _, up) = rig.upstream_query();
    let mut m = Message::new();
    let q = up.queries()[0].clone();
    m.set_id(up.id())
        .set_message_type(MessageType::Response)
        .add_query(q.clone());
    for i in 0..15 {
        m.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::TXT(TXT::new(vec![format!("{i:0>60}")])),
        ));
    }
    rig.respond(link, &m.to_vec().unwrap());
    let (_, small) = rig.take_replies().remove(0);
    assert!(small.truncated());
    assert!(small.answers().is_empty());
    assert_eq!(small.queries().len(), 1);
    // Over TCP the cached answer comes whole; an EDNS client with 1232 bytes gets it too.
    let tcp = Client {
        protocol: Protocol::Tcp,
        conn: 3,
        ..udp
    };
    let whole = rig
        .query(tcp, &query(2, "big.example.", RecordType::TXT, false))
        .unwrap();
    assert!(!whole.truncated());
    assert_eq!(whole.answers().len(), 15);
    let edns = rig
        .query(udp, &query(3, "big.example.", RecordType::TXT, true))
        .unwrap();
    assert!(!edns.truncated());
    assert_eq!(edns.answers().len(), 15);
}

#[test]
fn most_specific_zone_wins_and_unrouted_names_are_refused() {
    let mut config = config(2, false, cache30());
    config.servers = vec![
        server("cluster.local.", vec![0], false, cache30()),
        server("example.", vec![1], false, cache30()),
    ];
    config.listeners[0].servers = vec![1, 0];
    let mut rig = Rig::one(config);
    let c = client(4000, Protocol::Udp);
    rig.outcome(c, &query(1, "svc.Cluster.Local.", RecordType::A, false));
    assert_eq!(rig.upstream_query().0.upstream, 0);
    rig.outcome(c, &query(2, "www.example.", RecordType::A, false));
    assert_eq!(rig.upstream_query().0.upstream, 1);
    let refused = rig
        .query(c, &query(3, "other.org.", RecordType::A, false))
        .unwrap();
    assert_eq!(refused.response_code(), ResponseCode::Refused);
}

#[test]
fn tcp_upstream_connections_carry_several_queries_and_close_when_idle() {
    let mut config = config(1, true, cache30());
    config.limits.upstream_tcp_inflight = 4;
    let mut rig = Rig::one(config);
    let c = client(4000, Protocol::Udp);
    let mut sent = Vec::new();
    for i in 0..10 {
        rig.outcome(
            c,
            &query(i, &format!("n{i}.example."), RecordType::A, false),
        );
        sent.push(rig.upstream_query());
    }
    let mut conns: Vec<u32> = sent.iter().map(|(l, _, _)| l.conn).collect();
    conns.dedup();
    assert_eq!(
        conns.len(),
        3,
        "4 in flight per connection, then another one: {conns:?}"
    );
    for (link, _, up) in &sent {
        rig.respond(
            *link,
            &reply(up, ResponseCode::NoError, &[[1, 1, 1, 1]], 60, None),
        );
    }
    assert_eq!(rig.take_replies().len(), 10);
    rig.wait(Duration::from_secs(10));
    assert_eq!(
        rig.closed.len(),
        3,
        "every idle connection closed after `expire`: {:?}",
        rig.closed
    );
}

#[test]
fn clients_coalesce_only_onto_a_query_over_their_own_upstream_transport() {
    let mut rig = Rig::one(config(1, false, cache30()));
    let udp = client(4000, Protocol::Udp);
    let tcp = Client {
        protocol: Protocol::Tcp,
        conn: 9,
        ..client(4001, Protocol::Tcp)
    };
    let udp2 = client(4002, Protocol::Udp);
    assert_eq!(
        rig.outcome(udp, &query(1, "t.example.", RecordType::A, false)),
        Outcome::Pending
    );
    assert_eq!(
        rig.outcome(tcp, &query(2, "t.example.", RecordType::A, false)),
        Outcome::Pending
    );
    assert_eq!(
        rig.outcome(udp2, &query(3, "t.example.", RecordType::A, false)),
        Outcome::Pending
    );
    let sent: Vec<(Link, Message)> = rig
        .upstream
        .drain(..)
        .map(|s| (s.link, s.query()))
        .collect();
    assert_eq!(sent.len(), 2, "one query per upstream transport");
    assert_eq!(
        rig.engines[0].stats().coalesced.get(),
        1,
        "the second UDP client joined the first"
    );
    let (udp_link, udp_query) = sent
        .iter()
        .find(|(l, _)| l.protocol == Protocol::Udp)
        .unwrap();
    let mut truncated =
        Message::from_vec(&reply(udp_query, ResponseCode::NoError, &[], 0, None)).unwrap();
    truncated.set_truncated(true);
    rig.respond(*udp_link, &truncated.to_vec().unwrap());
    let replies = rig.take_replies();
    assert_eq!(
        replies
            .iter()
            .map(|(c, _)| c.peer.port())
            .collect::<Vec<_>>(),
        vec![4000, 4002]
    );
    assert!(replies.iter().all(|(_, m)| m.truncated()));
    let (tcp_link, tcp_query) = sent
        .iter()
        .find(|(l, _)| l.protocol == Protocol::Tcp)
        .unwrap();
    rig.respond(
        *tcp_link,
        &reply(tcp_query, ResponseCode::NoError, &[[9, 9, 9, 9]], 60, None),
    );
    let replies = rig.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, tcp);
    assert!(!replies[0].1.truncated());
    assert_eq!(replies[0].1.answers().len(), 1);
}

/// CoreDNS's request metrics: every reply is one request (by protocol, family, type), one
/// response (by RCODE and by who wrote it), one duration and two sizes, in the slot of the
/// block it was routed to, or the listener's `dropped` slot when no block took it.
#[test]
fn every_reply_is_counted_in_the_request_metrics() {
    use shardns_shard::{Counter, TYPE_SLOTS};
    let mut rig = Rig::one(config(1, false, cache30()));
    let udp = client(4000, Protocol::Udp);
    let asked = query(1, "www.example.", RecordType::A, false);
    assert_eq!(rig.outcome(udp, &asked), Outcome::Pending);
    let (link, _, up) = rig.upstream_query();
    rig.wait(Duration::from_millis(3));
    let answer = reply(&up, ResponseCode::NoError, &[[1, 2, 3, 4]], 60, None);
    rig.respond(link, &answer);
    let relayed = rig.take_replies().remove(0).1.to_vec().unwrap();
    let tcp = Client {
        protocol: Protocol::Tcp,
        conn: 1,
        ..client(4001, Protocol::Tcp)
    };
    let hit = rig
        .query(tcp, &query(2, "www.example.", RecordType::A, false))
        .unwrap();
    let mut empty = query(3, "x.example.", RecordType::A, false);
    empty[5] = 0;
    let formerr = rig.query(udp, &empty).expect("FORMERR");
    assert_eq!(formerr.response_code(), ResponseCode::FormErr);

    let stats = rig.engines[0].stats();
    let (block, dropped) = (&stats.requests[0], &stats.requests[1]);
    let a = 1; // the type slot of A
    assert_eq!(block.requests[0][0][a].get(), 1, "the miss, UDP over IPv4");
    assert_eq!(block.requests[1][0][a].get(), 1, "the hit, over TCP");
    assert_eq!(block.responses[2][0].get(), 1, "NOERROR written by forward");
    assert_eq!(
        block.responses[1][0].get(),
        1,
        "NOERROR written by the cache"
    );
    assert_eq!(block.duration.count(), 2);
    assert_eq!(
        block.duration.buckets[4].get(),
        1,
        "the miss took 3 ms (bucket ≤ 4 ms)"
    );
    assert_eq!(
        block.duration.buckets[0].get(),
        1,
        "the hit, within its batch"
    );
    assert_eq!(block.request_size[0].sum.get(), asked.len() as u64);
    assert_eq!(block.response_size[0].sum.get(), relayed.len() as u64);
    assert_eq!(
        block.response_size[1].sum.get(),
        hit.to_vec().unwrap().len() as u64
    );
    assert_eq!(
        dropped.requests[0][0][TYPE_SLOTS - 1].get(),
        1,
        "FORMERR: type other"
    );
    assert_eq!(
        dropped.responses[0][1].get(),
        1,
        "FORMERR written by the server"
    );
    let total = |stats: &shardns_shard::RequestStats| {
        stats
            .requests
            .iter()
            .flatten()
            .flatten()
            .map(Counter::get)
            .sum::<u64>()
    };
    assert_eq!((total(block), total(dropped)), (2, 1));
}

/// `log`: a line per answered query in CoreDNS's default format, for a miss (with the time
/// it took) and a hit; nothing for a block without it.
#[test]
fn log_writes_coredns_lines_for_answered_queries() {
    let mut logged = config(1, false, cache30());
    logged.servers[0].log_queries = Some(Vec::new());
    let ((), lines) = common::logs::capture(|| {
        let mut rig = Rig::one(logged);
        let c = client(4000, Protocol::Udp);
        rig.outcome(c, &query(7, "www.Example.", RecordType::A, false));
        let (link, _, up) = rig.upstream_query();
        rig.wait(Duration::from_millis(3));
        rig.respond(
            link,
            &reply(&up, ResponseCode::NoError, &[[1, 2, 3, 4]], 60, None),
        );
        rig.query(c, &query(8, "www.example.", RecordType::A, true))
            .expect("a hit");
    });
    let log: Vec<&str> = lines
        .iter()
        .filter(|line| line.target == "plugin/log")
        .map(|line| line.message.as_str())
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with(
            "127.0.0.1:4000 - 7 \"A IN www.Example. udp 29 false 512\" NOERROR qr,rd,ra "
        ),
        "{}",
        log[0]
    );
    assert!(log[0].ends_with(" 0.003s"), "{}", log[0]);
    assert!(
        log[1].starts_with(
            "127.0.0.1:4000 - 8 \"A IN www.example. udp 40 false 1232\" NOERROR qr,aa,rd,ra "
        ),
        "{}",
        log[1]
    );
    assert!(log[1].ends_with(" 0s"), "{}", log[1]);

    let ((), quiet) = common::logs::capture(|| {
        let mut rig = Rig::one(config(1, false, cache30()));
        rig.outcome(
            client(1, Protocol::Udp),
            &query(1, "a.example.", RecordType::A, false),
        );
    });
    assert!(quiet.iter().all(|line| line.target != "plugin/log"));
}

/// `loop`: the probe's second arrival (the prober's query, then the copy the block forwarded
/// to itself) is a loop, logged in CoreDNS's words once; other HINFO queries are not.
#[test]
fn loop_probe_coming_back_is_a_loop() {
    use shardns_shard::LoopProbe;
    let probe = LoopProbe::new(b"\x00", || 1234 << 2);
    let mut looped = config(1, false, cache30());
    looped.servers[0].loop_probe = Some(probe.clone());
    let ((), lines) = common::logs::capture(|| {
        let mut rig = Rig::one(looped);
        let hinfo = |id, name: &str| query(id, name, RecordType::HINFO, false);
        rig.outcome(client(4000, Protocol::Udp), &hinfo(1, "other.example."));
        rig.outcome(client(4000, Protocol::Udp), &hinfo(2, "1234.1234."));
        assert!(!probe.detected(), "the prober's own query");
        rig.outcome(client(5353, Protocol::Udp), &hinfo(3, "1234.1234."));
        assert!(probe.detected(), "it came back");
        rig.outcome(client(5353, Protocol::Udp), &hinfo(4, "1234.1234."));
    });
    let loops: Vec<&str> = lines
        .iter()
        .filter(|line| line.target == "plugin/loop")
        .map(|line| line.message.as_str())
        .collect();
    assert_eq!(
        loops,
        [
            "Loop (127.0.0.1:5353 -> 127.0.0.1:5353) detected for zone \".\", see \
          https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO 1234.1234.\""
        ]
    );
}
