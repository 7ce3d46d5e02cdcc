//! Seed inputs of the engine target: hand-written programs, one scenario of the engine's
//! paths each, for every configuration and group; the raw client packets the e2e tests send;
//! and random step programs. The bounded test starts from them, and
//! `cargo run -p shardns-fuzz-harness --example write-corpus` writes them for `cargo fuzz`.

use rand::Rng;

use super::{CONFIGS, Program, Step, TYPES, build_query, names};
use crate::mutate::Mutator;

fn query(client: u8, id: u16, name: u8, qtype: u8, flags: u8) -> Step {
    Step::Query {
        tcp: false,
        client,
        id,
        name,
        qtype,
        flags,
    }
}

fn tcp_query(client: u8, id: u16, name: u8, qtype: u8, flags: u8) -> Step {
    Step::Query {
        tcp: true,
        client,
        id,
        name,
        qtype,
        flags,
    }
}

fn answer(which: u8, shape: u8, ttl: u16, damage: u8) -> Step {
    Step::Answer {
        which,
        shape,
        ttl,
        damage,
        edits: Vec::new(),
    }
}

fn wait(millis: u16) -> Step {
    Step::Wait {
        millis,
        long: false,
    }
}

/// Raw client packets the e2e tests send one by one.
pub fn raw_packets() -> Vec<Vec<u8>> {
    let www = b"\x03www\x07example\x04test\x00\x00\x01\x00\x01";
    let header = |flags: u16, qd: u16, an: u16, ar: u16| {
        let mut h = vec![0x12, 0x34];
        for v in [flags, qd, an, 0, ar] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        h
    };
    let with = |mut h: Vec<u8>, tail: &[u8]| {
        h.extend_from_slice(tail);
        h
    };
    vec![
        vec![0x12, 0x34, 0x01],
        with(header(0x8100, 1, 0, 0), www),
        header(0x0100, 0, 0, 0),
        with(header(0x0100, 2, 0, 0), &[www.as_slice(), www].concat()),
        with(header(0x0100, 1, 0, 0), b"\xc0\x0c\x00\x01\x00\x01"),
        with(header(0x0100, 1, 0, 0), b"\x40aaaa\x00\x00\x01\x00\x01"),
        with(header(0x2900, 1, 0, 0), www),
        with(
            header(0x0100, 1, 0, 1),
            &[
                www.as_slice(),
                b"\x00\x00\x29\x10\x00\x00\x01\x00\x00\x00\x00",
            ]
            .concat(),
        ),
        with(
            header(0x0100, 1, 0, 1),
            &[
                www.as_slice(),
                b"\x00\x00\x29\xff\xff\x00\x00\x80\x00\x00\x08\x00\x0a\x00\x04abcd",
            ]
            .concat(),
        ),
        with(header(0x0100, 1, 3, 0), www),
    ]
}

/// Hand-written programs: the engine's paths, one scenario each.
pub fn programs() -> Vec<Program> {
    let mut programs = Vec::new();
    let scenarios: Vec<Vec<Step>> = vec![
        // Miss, answer, hit, expiry, a denial.
        vec![
            query(1, 1, 0, 0, 0x09),
            answer(0, 0x04, 60, 0),
            query(2, 2, 1, 0, 0x19),
            Step::Wait {
                millis: 700,
                long: true,
            },
            query(3, 3, 0, 0, 0x01),
            answer(0, 0x41, 30, 0),
            query(3, 4, 0, 0, 0x01),
        ],
        // Timeouts and retries to SERVFAIL.
        vec![
            query(1, 7, 2, 1, 0x01),
            wait(2_000),
            wait(2_000),
            Step::Deadline,
            Step::Deadline,
            query(1, 8, 2, 1, 0x01),
        ],
        // Coalesced clients over TCP and UDP; wrong ID, wrong question, then right.
        vec![
            tcp_query(1, 10, 3, 0, 0x01),
            tcp_query(1, 11, 3, 0, 0x01),
            query(9, 12, 3, 0, 0x01),
            answer(0, 0x04, 60, 0x01),
            answer(0, 0x04, 60, 0x08),
            answer(0, 0x04, 60, 0x04),
            answer(0, 0x04, 60, 0x10),
            answer(0, 0x84, 60, 0x02),
            Step::ClientClosed { client: 1 },
        ],
        // A failed link, a truncated reply, a reply on another link.
        vec![
            query(4, 20, 4, 1, 0x09),
            Step::LinkClosed { which: 0, error: 0 },
            answer(0, 0x08, 5, 0x20),
            answer(0, 0x08, 5, 0x40),
            answer(0, 0x0c, 5, 0),
            wait(100),
        ],
        // The pending bound: more misses than max_pending.
        (0..14u8)
            .map(|i| query(i, 100 + u16::from(i), i % 9, i % 5, 0x01))
            .chain([wait(6_000)])
            .collect(),
        // Serve-stale, prefetch, reload, hand-off.
        vec![
            query(1, 30, 0, 0, 0x01),
            answer(0, 0x04, 2, 0),
            query(1, 31, 0, 0, 0x01),
            Step::Wait {
                millis: 30,
                long: true,
            },
            query(1, 32, 0, 0, 0x01),
            Step::Reload,
            wait(1_900),
            answer(0, 0x02, 0, 0),
            Step::Handoff { edits: Vec::new() },
            Step::Handoff {
                edits: vec![(7, 0xff), (30, 0)],
            },
            Step::Import {
                bytes: b"\x00\x01garbage".to_vec(),
            },
            query(2, 33, 0, 0, 0x01),
        ],
        // Records of every kind, CNAMEs, long TTLs, damaged bytes.
        vec![
            query(1, 40, 8, 4, 0x1f),
            answer(0, 0xf7, 65535, 0x80),
            query(1, 41, 7, 8, 0x01),
            answer(0, 0x3c, 1, 0),
            query(1, 42, 5, 3, 0x01),
            Step::Answer {
                which: 0,
                shape: 0xc8,
                ttl: 300,
                damage: 0x80,
                edits: vec![(11, 9), (255, 40)],
            },
            Step::RawAnswer {
                which: 0,
                bytes: vec![0; 40],
            },
        ],
    ];
    let raw: Vec<Step> = raw_packets()
        .into_iter()
        .enumerate()
        .flat_map(|(i, bytes)| {
            [
                Step::Raw {
                    tcp: false,
                    client: i as u8,
                    bytes: bytes.clone(),
                },
                Step::Raw {
                    tcp: true,
                    client: i as u8,
                    bytes,
                },
            ]
        })
        .collect();
    for config in 0..CONFIGS {
        for group in 0..4u8 {
            for steps in scenarios.iter().chain([&raw]) {
                programs.push(Program {
                    config,
                    group,
                    steps: steps.clone(),
                });
            }
        }
    }
    programs
}

/// A random program of 1 to 40 steps.
pub fn random_program(m: &mut Mutator) -> Program {
    let config = m.rng().random();
    let group = m.rng().random();
    let n = m.rng().random_range(1..=40);
    let mut steps = Vec::with_capacity(n);
    for _ in 0..n {
        let rng = m.rng();
        let roll = rng.random_range(0..100);
        let step = match roll {
            0..35 => Step::Query {
                tcp: rng.random_bool(0.25),
                client: rng.random_range(0..12),
                id: rng.random(),
                name: rng.random(),
                qtype: rng.random_range(0..TYPES.len() as u8),
                flags: rng.random(),
            },
            35..43 => {
                let tcp = rng.random_bool(0.25);
                let client = rng.random_range(0..12);
                let names = names();
                let name = &names[rng.random_range(0..names.len())];
                let mut bytes = build_query(rng.random(), name, 1, rng.random());
                for _ in 0..m.rng().random_range(1..4) {
                    m.mutate(&mut bytes);
                }
                Step::Raw { tcp, client, bytes }
            }
            43..68 => Step::Answer {
                which: rng.random(),
                shape: rng.random(),
                ttl: rng.random_range(0..400),
                damage: if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random()
                },
                edits: (0..rng.random_range(0..3))
                    .map(|_| (rng.random(), rng.random()))
                    .collect(),
            },
            68..72 => Step::RawAnswer {
                which: rng.random(),
                bytes: (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            },
            72..76 => Step::LinkClosed {
                which: rng.random(),
                error: rng.random(),
            },
            76..79 => Step::ClientClosed {
                client: rng.random_range(0..12),
            },
            79..91 => Step::Wait {
                millis: rng.random_range(0..3_000),
                long: rng.random_bool(0.1),
            },
            91..95 => Step::Deadline,
            95..97 => Step::Reload,
            97..99 => Step::Handoff {
                edits: (0..rng.random_range(0..3))
                    .map(|_| (rng.random(), rng.random()))
                    .collect(),
            },
            _ => Step::Import {
                bytes: (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            },
        };
        steps.push(step);
    }
    Program {
        config,
        group,
        steps,
    }
}
