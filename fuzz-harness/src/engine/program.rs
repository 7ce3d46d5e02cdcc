//! The input language: [`Step`]s, a [`Program`] of them, and [`decode`] from bytes (the inverse
//! of [`Step::encode`]).

use super::*;

/// One step of a run. [`Step::encode`] and [`decode`] are inverse, so seed inputs are written
/// as steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A well-formed query from client `client` (its byte names its address and, over TCP,
    /// its connection): ID `id`, name [`names`]`[name]`, type [`TYPES`]`[qtype]`; `flags`:
    /// bit 0 RD, 1 CD, 2 AD, 3 EDNS, 4 DO (with EDNS), 5-6 the EDNS size (0, 512, 1232,
    /// 65535), 7 class CH instead of IN.
    Query {
        tcp: bool,
        client: u8,
        id: u16,
        name: u8,
        qtype: u8,
        flags: u8,
    },
    /// Any bytes as a client query.
    Raw {
        tcp: bool,
        client: u8,
        bytes: Vec<u8>,
    },
    /// A reply to remembered upstream query `which` (modulo their number): RCODE, records and
    /// OPT from `shape`, TTL from `ttl`, then `damage`: bit 0 another ID, 1 the question's
    /// case changed (still the same question), 2 another type, 3 another name, 4 QR clear,
    /// 5 TC set, 6 delivered on another link, 7 `edits` applied ((position, byte); position
    /// 255 cuts the message to the byte's length).
    Answer {
        which: u8,
        shape: u8,
        ttl: u16,
        damage: u8,
        edits: Vec<(u8, u8)>,
    },
    /// Any bytes on the link of remembered upstream query `which` (or a made-up link when
    /// none is remembered).
    RawAnswer { which: u8, bytes: Vec<u8> },
    /// The link of remembered upstream query `which` fails (refused, reset, EOF, ...).
    LinkClosed { which: u8, error: u8 },
    /// Client `client`'s TCP connection closes.
    ClientClosed { client: u8 },
    /// Time passes: `millis` milliseconds, times 100 when `long`.
    Wait { millis: u16, long: bool },
    /// Time jumps to the earliest deadline of any shard.
    Deadline,
    /// A reload, alternating between the configuration and its variant (other upstreams,
    /// transport, cache sizes; the same listeners and server blocks).
    Reload,
    /// A hand-off of the caches: every shard exports, the chunks are damaged by `edits`
    /// (as in [`Step::Answer`]), and every shard imports them.
    Handoff { edits: Vec<(u8, u8)> },
    /// Any bytes imported as a hand-off chunk.
    Import { bytes: Vec<u8> },
}

pub(super) const OPS: u8 = 14;

impl Step {
    /// Appends the step's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            let len = b.len().min(u16::MAX as usize);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&b[..len]);
        }
        fn edits(out: &mut Vec<u8>, e: &[(u8, u8)]) {
            out.push(e.len().min(255) as u8);
            for (p, v) in e.iter().take(255) {
                out.extend_from_slice(&[*p, *v]);
            }
        }
        match self {
            Step::Query {
                tcp,
                client,
                id,
                name,
                qtype,
                flags,
            } => {
                out.push(u8::from(*tcp));
                out.push(*client);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&[*name, *qtype, *flags]);
            }
            Step::Raw {
                tcp,
                client,
                bytes: b,
            } => {
                out.push(2 + u8::from(*tcp));
                out.push(*client);
                bytes(out, b);
            }
            Step::Answer {
                which,
                shape,
                ttl,
                damage,
                edits: e,
            } => {
                out.extend_from_slice(&[4, *which, *shape]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.push(*damage);
                edits(out, e);
            }
            Step::RawAnswer { which, bytes: b } => {
                out.extend_from_slice(&[5, *which]);
                bytes(out, b);
            }
            Step::LinkClosed { which, error } => out.extend_from_slice(&[6, *which, *error]),
            Step::ClientClosed { client } => out.extend_from_slice(&[7, *client]),
            Step::Wait { millis, long } => {
                out.push(if *long { 9 } else { 8 });
                out.extend_from_slice(&millis.to_be_bytes());
            }
            Step::Deadline => out.push(10),
            Step::Reload => out.push(11),
            Step::Handoff { edits: e } => {
                out.push(12);
                edits(out, e);
            }
            Step::Import { bytes: b } => {
                out.push(13);
                bytes(out, b);
            }
        }
    }
}

/// An input: the configuration (modulo [`CONFIGS`]), the group (bit 0: two shards; bit 1:
/// `--coalesce within`) and the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub config: u8,
    pub group: u8,
    pub steps: Vec<Step>,
}

impl Program {
    /// The input bytes of this program.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.config, self.group];
        for step in &self.steps {
            step.encode(&mut out);
        }
        out
    }
}

/// Reads the input; past its end every field reads as zero.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = usize::from(self.u16());
        let start = self.pos.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.pos = start + len;
        self.data[start..end].to_vec()
    }

    fn edits(&mut self) -> Vec<(u8, u8)> {
        let n = self.u8();
        (0..n).map(|_| (self.u8(), self.u8())).collect()
    }
}

/// The program `data` encodes (at most [`MAX_STEPS`] steps).
pub fn decode(data: &[u8]) -> Program {
    let mut r = Reader { data, pos: 0 };
    let config = r.u8();
    let group = r.u8();
    let mut steps = Vec::new();
    while !r.done() && steps.len() < MAX_STEPS {
        let step = match r.u8() % OPS {
            op @ (0 | 1) => Step::Query {
                tcp: op == 1,
                client: r.u8(),
                id: r.u16(),
                name: r.u8(),
                qtype: r.u8(),
                flags: r.u8(),
            },
            op @ (2 | 3) => Step::Raw {
                tcp: op == 3,
                client: r.u8(),
                bytes: r.bytes(),
            },
            4 => Step::Answer {
                which: r.u8(),
                shape: r.u8(),
                ttl: r.u16(),
                damage: r.u8(),
                edits: r.edits(),
            },
            5 => Step::RawAnswer {
                which: r.u8(),
                bytes: r.bytes(),
            },
            6 => Step::LinkClosed {
                which: r.u8(),
                error: r.u8(),
            },
            7 => Step::ClientClosed { client: r.u8() },
            op @ (8 | 9) => Step::Wait {
                millis: r.u16(),
                long: op == 9,
            },
            10 => Step::Deadline,
            11 => Step::Reload,
            12 => Step::Handoff { edits: r.edits() },
            _ => Step::Import { bytes: r.bytes() },
        };
        steps.push(step);
    }
    Program {
        config,
        group,
        steps,
    }
}
