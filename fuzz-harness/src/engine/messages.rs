//! DNS messages the harness builds: client queries ([`build_query`]), upstream replies right
//! or damaged ([`build_answer`], [`apply_edits`]), and the link a reply is misdelivered to.

use super::*;

/// A query for `name` (case kept) of type `qtype`, with `flags` as in [`Step::Query`].
pub fn build_query(id: u16, name: &str, qtype: u16, flags: u8) -> Vec<u8> {
    let mut header_flags = 0u16;
    if flags & 1 != 0 {
        header_flags |= Header::RD;
    }
    if flags & 2 != 0 {
        header_flags |= Header::CD;
    }
    if flags & 4 != 0 {
        header_flags |= Header::AD;
    }
    let edns = flags & 0x18 != 0;
    let mut out = Vec::with_capacity(300);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&header_flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    out.extend_from_slice(&name_wire(name));
    let class: u16 = if flags & 0x80 != 0 { 3 } else { 1 };
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&class.to_be_bytes());
    if edns {
        let size = [0u16, 512, 1232, 65535][usize::from((flags >> 5) & 3)];
        let do_bit: u16 = if flags & 0x10 != 0 { 0x8000 } else { 0 };
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&do_bit.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out
}

/// A reply to upstream query `query` (see [`Step::Answer`]).
pub fn build_answer(query: &[u8], shape: u8, ttl: u16, damage: u8) -> Vec<u8> {
    let Ok(message) = Message::parse(query) else {
        let mut out = query.to_vec();
        if out.len() > 2 {
            out[2] |= 0x80;
        }
        return out;
    };
    let qtype = message.question.qtype;
    let mut out = query[..message.question_end].to_vec();
    let rcode = [0u16, 3, 2, 5][usize::from(shape & 3)];
    let mut flags = Header::QR | Header::RA | (message.header.flags & Header::RD) | rcode;
    if damage & 0x10 != 0 {
        flags &= !Header::QR;
    }
    if damage & 0x20 != 0 {
        flags |= 0x0200;
    }
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    let ttl = u32::from(ttl) * if shape & 0x20 != 0 { 3600 } else { 1 };
    let answers = (shape >> 2) & 3;
    for i in 0..answers {
        let rtype = match (shape & 0x10 != 0, qtype) {
            (true, _) => 5,
            (false, 0 | 255 | 251 | 252 | 41) => 1,
            (false, t) => t,
        };
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        let rdata: Vec<u8> = match rtype {
            1 => vec![192, 0, 2, i],
            28 => {
                let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
                a.resize(15, 0);
                a.push(i);
                a
            }
            2 | 5 | 12 => b"\x01t\x07example\x00".to_vec(),
            16 => b"\x05hello".to_vec(),
            6 => soa_rdata(ttl),
            _ => vec![i; 3],
        };
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    let authority = u8::from(shape & 0x40 != 0);
    if authority == 1 {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 6, 0, 1]);
        out.extend_from_slice(&ttl.to_be_bytes());
        let rdata = soa_rdata(ttl);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    let opt = u8::from(shape & 0x80 != 0);
    if opt == 1 {
        let do_bit: u8 = if message.dnssec_ok() { 0x80 } else { 0 };
        out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, do_bit, 0, 0, 0]);
    }
    out[6..12].copy_from_slice(&[0, answers, 0, authority, 0, opt]);
    if damage & 1 != 0 {
        let id = u16::from_be_bytes([out[0], out[1]]) ^ (1 << (ttl % 16));
        out[0..2].copy_from_slice(&id.to_be_bytes());
    }
    let name_end = message.question_end - 4;
    if damage & 2 != 0
        && let Some(b) = out[HEADER_LEN..name_end]
            .iter_mut()
            .find(|b| b.is_ascii_alphabetic())
    {
        *b ^= 0x20;
    }
    if damage & 4 != 0 {
        let t = qtype.wrapping_add(1);
        out[name_end..name_end + 2].copy_from_slice(&t.to_be_bytes());
    }
    if damage & 8 != 0 {
        if name_end > HEADER_LEN + 1 {
            out[HEADER_LEN + 1] = b'#';
        } else {
            let class = u16::from_be_bytes([out[name_end + 2], out[name_end + 3]]) ^ 2;
            out[name_end + 2..name_end + 4].copy_from_slice(&class.to_be_bytes());
        }
    }
    out
}

pub(super) fn soa_rdata(minimum: u32) -> Vec<u8> {
    let mut rdata = vec![0, 0];
    for v in [1, 60, 60, 60, minimum] {
        rdata.extend_from_slice(&u32::to_be_bytes(v));
    }
    rdata
}

/// Applies `edits` ((position, byte); position 255 cuts to the byte's length) to `bytes`.
pub fn apply_edits(bytes: &mut Vec<u8>, edits: &[(u8, u8)]) {
    for &(pos, value) in edits {
        if bytes.is_empty() {
            return;
        }
        if pos == 255 {
            bytes.truncate(usize::from(value));
        } else {
            let at = usize::from(pos) % bytes.len();
            bytes[at] = value;
        }
    }
}

/// Another link to the same upstream: the other transport, or another connection.
pub(super) fn other_link(link: Link, salt: u16) -> Link {
    match salt % 3 {
        0 => Link {
            protocol: match link.protocol {
                Protocol::Udp => Protocol::Tcp,
                Protocol::Tcp => Protocol::Udp,
            },
            ..link
        },
        1 => Link {
            conn: link.conn.wrapping_add(1),
            ..link
        },
        _ => Link {
            upstream: link.upstream.wrapping_add(1),
            ..link
        },
    }
}
