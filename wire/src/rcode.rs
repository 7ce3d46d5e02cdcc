//! Response codes as a type with names (RFC 1035 §4.1.1, RFC 6891 §6.1.3, RFC 6895 §2.3),
//! the way hickory-proto's `ResponseCode` does it: one value type, one table of names, used
//! by the error replies, the engine's failure results and every metric label.

use std::fmt;

/// A DNS response code: the header's 4 bits, plus the OPT record's upper 8 bits for the
/// extended codes (up to 4095).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rcode(u16);

impl Rcode {
    pub const NOERROR: Rcode = Rcode(0);
    pub const FORMERR: Rcode = Rcode(1);
    pub const SERVFAIL: Rcode = Rcode(2);
    pub const NXDOMAIN: Rcode = Rcode(3);
    pub const NOTIMP: Rcode = Rcode(4);
    pub const REFUSED: Rcode = Rcode(5);
    /// Extended code 16 (RFC 6891): the OPT record carries its upper bits (value 1).
    pub const BADVERS: Rcode = Rcode(16);

    /// The largest code the header and OPT record can carry together.
    pub const MAX: u16 = 0x0fff;

    /// The code of value `value`, kept to the 12 bits a message can carry.
    pub const fn new(value: u16) -> Rcode {
        Rcode(value & Rcode::MAX)
    }

    /// The code from its two parts: the header's 4 bits and the OPT record's upper 8 bits.
    pub const fn from_parts(header: u8, extended: u8) -> Rcode {
        Rcode(((extended as u16) << 4) | (header as u16 & 0xf))
    }

    /// The numeric value.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The 4 bits that go into the header's flags word.
    pub const fn header_bits(self) -> u16 {
        self.0 & 0xf
    }

    /// The upper 8 bits, carried in the OPT record (0 for the classic codes).
    pub const fn extended_bits(self) -> u8 {
        (self.0 >> 4) as u8
    }

    /// Whether the code needs an OPT record to be carried (16 and above).
    pub const fn is_extended(self) -> bool {
        self.0 > 0xf
    }

    /// The mnemonic, as miekg/dns (and so CoreDNS) spells it, for the codes that have one;
    /// 16 is `BADVERS`, the code this proxy sends (TSIG's BADSIG shares the value).
    pub fn name(self) -> Option<&'static str> {
        let name = match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            11 => "DSOTYPENI",
            16 => "BADVERS",
            17 => "BADKEY",
            18 => "BADTIME",
            19 => "BADMODE",
            20 => "BADNAME",
            21 => "BADALG",
            22 => "BADTRUNC",
            23 => "BADCOOKIE",
            _ => return None,
        };
        Some(name)
    }

    /// The code a name stands for, as miekg/dns's `StringToRcode` reads it (CoreDNS's
    /// `forward ... { next RCODE... }`): exactly the names of [`Rcode::PARSE_NAMES`], in
    /// upper case.
    pub fn from_name(name: &str) -> Option<Rcode> {
        Rcode::PARSE_NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, code)| code)
    }

    /// The names [`Rcode::from_name`] accepts, in miekg/dns's order: its `RcodeToString`
    /// names (16 as `BADSIG`) plus its extra `NOTIMPL` spelling of NOTIMP.
    pub const PARSE_NAMES: &'static [(&'static str, Rcode)] = &[
        ("NOERROR", Rcode(0)),
        ("FORMERR", Rcode(1)),
        ("SERVFAIL", Rcode(2)),
        ("NXDOMAIN", Rcode(3)),
        ("NOTIMP", Rcode(4)),
        ("NOTIMPL", Rcode(4)),
        ("REFUSED", Rcode(5)),
        ("YXDOMAIN", Rcode(6)),
        ("YXRRSET", Rcode(7)),
        ("NXRRSET", Rcode(8)),
        ("NOTAUTH", Rcode(9)),
        ("NOTZONE", Rcode(10)),
        ("DSOTYPENI", Rcode(11)),
        ("BADSIG", Rcode(16)),
        ("BADKEY", Rcode(17)),
        ("BADTIME", Rcode(18)),
        ("BADMODE", Rcode(19)),
        ("BADNAME", Rcode(20)),
        ("BADALG", Rcode(21)),
        ("BADTRUNC", Rcode(22)),
        ("BADCOOKIE", Rcode(23)),
    ];
}

impl From<Rcode> for u16 {
    fn from(rcode: Rcode) -> u16 {
        rcode.0
    }
}

/// The name, or `RCODE` and the number for a code without one (CoreDNS's `rcode.ToString`,
/// used in its `rcode` metric labels): `SERVFAIL`, `RCODE12`.
impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "RCODE{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let badvers = Rcode::from_parts(0, 1);
        assert_eq!(badvers, Rcode::BADVERS);
        assert_eq!((badvers.header_bits(), badvers.extended_bits()), (0, 1));
        assert!(badvers.is_extended());
        assert!(!Rcode::REFUSED.is_extended());
        assert_eq!(
            Rcode::from_parts(0x12, 0),
            Rcode::SERVFAIL,
            "4 header bits only"
        );
        assert_eq!(Rcode::new(0xffff).value(), Rcode::MAX);
        assert_eq!(u16::from(Rcode::NXDOMAIN), 3);
    }

    #[test]
    fn names_as_coredns_writes_them() {
        assert_eq!(Rcode::SERVFAIL.to_string(), "SERVFAIL");
        assert_eq!(Rcode::BADVERS.to_string(), "BADVERS");
        assert_eq!(Rcode::new(12).to_string(), "RCODE12");
        assert_eq!(Rcode::new(12).name(), None);
        assert_eq!(Rcode::new(23).name(), Some("BADCOOKIE"));
    }

    #[test]
    fn names_as_coredns_reads_them() {
        assert_eq!(Rcode::from_name("NXDOMAIN"), Some(Rcode::NXDOMAIN));
        assert_eq!(Rcode::from_name("NOTIMPL"), Some(Rcode::NOTIMP));
        assert_eq!(Rcode::from_name("BADSIG"), Some(Rcode::BADVERS));
        assert_eq!(
            Rcode::from_name("nxdomain"),
            None,
            "callers upper-case first"
        );
        assert_eq!(Rcode::from_name("BADVERS"), None, "not in miekg's table");
        assert_eq!(Rcode::from_name("12"), None);
        // Every parse name but the aliases is the code's own name.
        for &(name, code) in Rcode::PARSE_NAMES {
            if !matches!(name, "NOTIMPL" | "BADSIG") {
                assert_eq!(code.name(), Some(name));
            }
        }
    }
}
