use crate::{ParseError, Rcode};

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// Opcodes (RFC 1035, RFC 6895).
pub mod opcode {
    /// A standard query.
    pub const QUERY: u8 = 0;
}

/// Record types the proxy looks at.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
}

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const AD: u16 = 0x0020;
const CD: u16 = 0x0010;

/// The fixed 12-byte header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// The raw flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    /// Decodes the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Header, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::ShortHeader);
        }
        let word = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        Ok(Header {
            id: word(0),
            flags: word(2),
            qdcount: word(4),
            ancount: word(6),
            nscount: word(8),
            arcount: word(10),
        })
    }

    /// Writes the header into the first 12 bytes of `buf` (which must hold them).
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..2].copy_from_slice(&self.id.to_be_bytes());
        buf[2..4].copy_from_slice(&self.flags.to_be_bytes());
        buf[4..6].copy_from_slice(&self.qdcount.to_be_bytes());
        buf[6..8].copy_from_slice(&self.ancount.to_be_bytes());
        buf[8..10].copy_from_slice(&self.nscount.to_be_bytes());
        buf[10..12].copy_from_slice(&self.arcount.to_be_bytes());
    }

    pub fn qr(&self) -> bool {
        self.flags & QR != 0
    }
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }
    pub fn aa(&self) -> bool {
        self.flags & AA != 0
    }
    pub fn tc(&self) -> bool {
        self.flags & TC != 0
    }
    pub fn rd(&self) -> bool {
        self.flags & RD != 0
    }
    pub fn ra(&self) -> bool {
        self.flags & RA != 0
    }
    pub fn ad(&self) -> bool {
        self.flags & AD != 0
    }
    pub fn cd(&self) -> bool {
        self.flags & CD != 0
    }
    /// The response code as far as the header carries it (its low 4 bits; see
    /// [`crate::Message::rcode`] for the extended code).
    pub fn rcode(&self) -> Rcode {
        Rcode::from_parts((self.flags & 0xf) as u8, 0)
    }

    /// Flag bit masks, for callers that patch the flags word in place.
    pub const QR: u16 = QR;
    pub const AA: u16 = AA;
    pub const TC: u16 = TC;
    pub const RD: u16 = RD;
    pub const RA: u16 = RA;
    pub const AD: u16 = AD;
    pub const CD: u16 = CD;
}
