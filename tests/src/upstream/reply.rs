//! Deciding what to do with one received message, and building the reply from the zone.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::stats::{SEEN_MAX, SeenQuery};
use super::{Garbage, Inner, Proto, TruncateTcp, WrongId, lock, name_key, zone};

pub(super) enum Decision {
    /// Malformed (already counted), or nothing to do.
    Ignore,
    Drop,
    Reset,
    Answer {
        msgs: Vec<Vec<u8>>,
        delay: Duration,
        serialize: bool,
        close_after: Option<usize>,
        wire: Wire,
    },
}

/// How the answer's messages go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    /// DNS replies; over TCP each framed.
    Reply,
    /// Garbage; over TCP framed unless `framed` is false.
    Garbage { framed: bool },
    /// Over TCP: each reply's length prefix and half its bytes, then FIN (`close`) or
    /// silence on that connection. Over UDP: whole replies.
    Cut { close: bool },
}

impl Wire {
    /// Whether what is sent is an answer (else it counts as garbled).
    pub(super) fn is_reply(self, proto: Proto) -> bool {
        match self {
            Wire::Reply => true,
            Wire::Garbage { .. } => false,
            Wire::Cut { .. } => proto == Proto::Udp,
        }
    }
}

/// 40 to 100 bytes that are not a DNS reply to a query with ID `id`: xorshift from `id` and
/// `n`, the first two never `id`.
pub(super) fn garbage(id: u16, n: u64) -> Vec<u8> {
    let mut x = (u64::from(id) << 32 | n) ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = 40 + (next() % 61) as usize;
    let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
    bytes[..2].copy_from_slice(&(!id).to_be_bytes());
    bytes
}

pub(super) fn decide(inner: &Inner, bytes: &[u8], proto: Proto, peer: SocketAddr) -> Decision {
    let c = &inner.counters;
    let msg = match Message::from_vec(bytes) {
        Ok(m) if m.message_type() == MessageType::Query && m.queries().len() == 1 => m,
        _ => {
            c.malformed.fetch_add(1, Ordering::SeqCst);
            return Decision::Ignore;
        }
    };
    let q = &msg.queries()[0];
    let key = name_key(q.name());
    c.queries.fetch_add(1, Ordering::SeqCst);
    match proto {
        Proto::Udp => c.udp.fetch_add(1, Ordering::SeqCst),
        Proto::Tcp => c.tcp.fetch_add(1, Ordering::SeqCst),
    };
    if key == "." && q.query_type() == RecordType::NS && q.query_class() == DNSClass::IN {
        c.health_probes.fetch_add(1, Ordering::SeqCst);
    }
    *lock(&c.per_name)
        .entry((key.clone(), q.query_type()))
        .or_insert(0) += 1;
    {
        let mut seen = lock(&c.seen);
        if seen.len() >= SEEN_MAX {
            seen.pop_front();
        }
        seen.push_back(SeenQuery {
            tcp: proto == Proto::Tcp,
            peer,
            id: msg.id(),
            name: key.clone(),
            rtype: q.query_type(),
        });
    }

    let b = lock(&inner.behaviour);
    if proto == Proto::Tcp && b.reset_connections {
        return Decision::Reset;
    }
    if b.drop_queries {
        return Decision::Drop;
    }
    let delay = b.name_delays.get(&key).copied().unwrap_or(b.delay);
    let (serialize, close_after) = (b.serialize_tcp, b.close_after);
    let wire = match (b.garbage, b.truncate_tcp) {
        (Garbage::Framed, _) => Wire::Garbage { framed: true },
        (Garbage::Unframed, _) => Wire::Garbage { framed: false },
        (Garbage::Off, TruncateTcp::ThenClose) => Wire::Cut { close: true },
        (Garbage::Off, TruncateTcp::ThenSilence) => Wire::Cut { close: false },
        (Garbage::Off, TruncateTcp::Off) => Wire::Reply,
    };
    let plan = Plan {
        rcode: b.rcode,
        truncate_udp: b.truncate_udp,
        wrong_question: b.wrong_question,
        wrong_id: b.wrong_id,
    };
    drop(b);
    if let Wire::Garbage { .. } = wire {
        let n = c.garbled.load(Ordering::SeqCst) ^ c.queries.load(Ordering::SeqCst);
        return Decision::Answer {
            msgs: vec![garbage(msg.id(), n)],
            delay,
            serialize,
            close_after,
            wire,
        };
    }
    match build_reply(&msg, q, proto, &plan) {
        Ok(msgs) => Decision::Answer {
            msgs,
            delay,
            serialize,
            close_after,
            wire,
        },
        Err(_) => {
            c.malformed.fetch_add(1, Ordering::SeqCst);
            Decision::Ignore
        }
    }
}

struct Plan {
    rcode: Option<ResponseCode>,
    truncate_udp: bool,
    wrong_question: bool,
    wrong_id: WrongId,
}

/// The reply messages to send, in order (two with [`WrongId::ThenRight`]).
fn build_reply(query: &Message, q: &Query, proto: Proto, plan: &Plan) -> Result<Vec<Vec<u8>>> {
    let (rcode, aa, answers, authority) = if let Some(rc) = plan.rcode {
        (rc, false, Vec::new(), Vec::new())
    } else if query.op_code() != OpCode::Query {
        (ResponseCode::NotImp, false, Vec::new(), Vec::new())
    } else {
        lookup(q)?
    };
    let mut question = q.clone();
    if plan.wrong_question {
        question.set_name(Name::from_ascii(zone::WRONG_QUESTION)?);
    }
    let edns = query.extensions().as_ref().map(|e| {
        let mut o = Edns::new();
        o.set_max_payload(zone::EDNS_PAYLOAD)
            .set_version(0)
            .set_dnssec_ok(e.flags().dnssec_ok);
        o
    });
    let encode = |records: bool, tc: bool| -> Result<Vec<u8>> {
        let mut m = Message::new();
        m.set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(query.op_code())
            .set_authoritative(aa)
            .set_truncated(tc)
            .set_recursion_desired(query.recursion_desired())
            .set_recursion_available(true)
            .set_checking_disabled(query.checking_disabled())
            .set_response_code(rcode)
            .add_query(question.clone());
        if records {
            m.add_answers(answers.iter().cloned());
            m.add_name_servers(authority.iter().cloned());
        }
        if let Some(e) = &edns {
            m.set_edns(e.clone());
        }
        Ok(m.to_vec()?)
    };
    let mut bytes = encode(true, false)?;
    if proto == Proto::Udp {
        let limit = query
            .extensions()
            .as_ref()
            .map_or(512, |e| e.max_payload().max(512)) as usize;
        if plan.truncate_udp || bytes.len() > limit {
            bytes = encode(false, true)?;
        }
    }
    if bytes.len() > usize::from(u16::MAX) {
        bail!("reply too long");
    }
    let wrong = || {
        let mut w = bytes.clone();
        w[..2].copy_from_slice(&query.id().wrapping_add(1).to_be_bytes());
        w
    };
    Ok(match plan.wrong_id {
        WrongId::Off => vec![bytes],
        WrongId::Only => vec![wrong()],
        WrongId::ThenRight => vec![wrong(), bytes],
    })
}

type Lookup = (ResponseCode, bool, Vec<Record>, Vec<Record>);

fn soa_record() -> Result<Record> {
    Ok(Record::from_rdata(
        Name::from_ascii(zone::ZONE)?,
        zone::NEG_TTL,
        RData::SOA(SOA::new(
            Name::from_ascii(zone::NS_NAME)?,
            Name::from_ascii(zone::HOSTMASTER)?,
            zone::SERIAL,
            3600,
            600,
            86400,
            zone::NEG_TTL,
        )),
    ))
}

/// All records of an owner name in the zone (lowercased key), or `None` if it does not exist.
fn owner_rdata(key: &str) -> Result<Option<Vec<RData>>> {
    let ns = || -> Result<RData> { Ok(RData::NS(NS(Name::from_ascii(zone::NS_NAME)?))) };
    if key == zone::ZONE {
        let RData::SOA(soa) = soa_record()?.data().clone() else {
            bail!("SOA");
        };
        return Ok(Some(vec![RData::SOA(soa), ns()?]));
    }
    if key == zone::DUAL {
        return Ok(Some(vec![
            RData::A(A(zone::DUAL_A)),
            RData::AAAA(AAAA(zone::DUAL_AAAA)),
        ]));
    }
    if key == zone::BIG {
        return Ok(Some(
            (0..zone::BIG_COUNT)
                .map(|i| RData::A(A(zone::big_a(i))))
                .collect(),
        ));
    }
    if let Some(n) = key
        .strip_prefix("host")
        .and_then(|r| r.strip_suffix(".upstream.test."))
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| zone::host(*n) == key)
    {
        return Ok(Some(vec![RData::A(A(zone::host_a(n)))]));
    }
    Ok(None)
}

fn lookup(q: &Query) -> Result<Lookup> {
    let refused = (ResponseCode::Refused, false, Vec::new(), Vec::new());
    if q.query_class() != DNSClass::IN {
        return Ok(refused);
    }
    let key = name_key(q.name());
    let qtype = q.query_type();
    if key == "." {
        if qtype != RecordType::NS {
            return Ok(refused);
        }
        let ns = Record::from_rdata(
            Name::root(),
            zone::TTL,
            RData::NS(NS(Name::from_ascii(zone::NS_NAME)?)),
        );
        return Ok((ResponseCode::NoError, false, vec![ns], Vec::new()));
    }
    if key != zone::ZONE && !key.ends_with(".upstream.test.") {
        return Ok(refused);
    }
    let Some(rdata) = owner_rdata(&key)? else {
        return Ok((
            ResponseCode::NXDomain,
            true,
            Vec::new(),
            vec![soa_record()?],
        ));
    };
    let answers: Vec<Record> = rdata
        .into_iter()
        .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
        .map(|r| Record::from_rdata(q.name().clone(), zone::TTL, r))
        .collect();
    if answers.is_empty() {
        return Ok((ResponseCode::NoError, true, Vec::new(), vec![soa_record()?]));
    }
    Ok((ResponseCode::NoError, true, answers, Vec::new()))
}
