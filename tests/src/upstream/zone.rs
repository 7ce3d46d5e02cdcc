use std::net::{Ipv4Addr, Ipv6Addr};

/// The zone apex. `upstream.test. SOA` and `upstream.test. NS` are answered.
pub const ZONE: &str = "upstream.test.";
/// TTL of every positive record.
pub const TTL: u32 = 300;
/// TTL of the SOA sent in the authority section of negative answers, and its MINIMUM.
pub const NEG_TTL: u32 = 60;
/// SOA MNAME, and the target of the NS records of the apex and of the root.
pub const NS_NAME: &str = "ns.upstream.test.";
/// SOA RNAME.
pub const HOSTMASTER: &str = "hostmaster.upstream.test.";
/// SOA serial.
pub const SERIAL: u32 = 1;

/// `hostN.upstream.test.` (N in 0..=255, written without leading zeros): one A record
/// [`host_a`]`(N)`, TTL [`TTL`]; other types: NODATA with the SOA.
pub fn host(n: u8) -> String {
    format!("host{n}.upstream.test.")
}
/// 198.51.100.N.
pub fn host_a(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, n)
}

/// A and AAAA.
pub const DUAL: &str = "dual.upstream.test.";
pub const DUAL_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const DUAL_AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// [`BIG_COUNT`] A records [`big_a`]`(0..BIG_COUNT)`: a reply of about 680 bytes, more
/// than 512 (over UDP without EDNS it comes back with TC=1 and no records).
pub const BIG: &str = "big.upstream.test.";
pub const BIG_COUNT: u8 = 40;
/// 203.0.113.(1+i).
pub fn big_a(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 1 + i)
}

/// A name under the zone that does not exist: NXDOMAIN with the SOA in authority (any
/// other unknown name under the zone behaves the same).
pub const MISSING: &str = "missing.upstream.test.";
/// A name outside the zone: REFUSED, no records.
pub const OUTSIDE: &str = "outside.example.";
/// The question name sent back under [`crate::upstream::Behaviour::wrong_question`].
pub const WRONG_QUESTION: &str = "wrong-question.upstream.test.";
/// The EDNS UDP size advertised in the OPT record mirrored into replies.
pub const EDNS_PAYLOAD: u16 = 1232;
