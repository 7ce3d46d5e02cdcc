//! The `acl` directive, as CoreDNS's plugin/acl decides: a block's `acl` directives are
//! rules, each with its zones and a list of policies (`ACTION [type QTYPE...] [net
//! SOURCE...]`). For a query, the rules are taken in order; a rule whose zones hold the name
//! applies its first policy that matches the query type and the client's address: `allow`
//! ends the check (the query goes on), `block`, `filter` and `drop` answer it. A rule with
//! no matching policy passes the query to the next rule; no rule acting means allowed.

use std::net::IpAddr;

use super::Cidr;
use crate::names::in_zone;

/// Most distinct zones the `acl` directives of one server block may name: each has its own
/// counters per request slot (`coredns_acl_*_requests_total{zone}`).
pub const ACL_ZONES: usize = 8;

/// A server block's `acl` directives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclConfig {
    /// The distinct zones the rules name, in order of appearance; at most [`ACL_ZONES`]. A
    /// zone's index is its counter slot.
    pub zones: Vec<AclZone>,
    /// The `acl` directives, in order.
    pub rules: Vec<AclRule>,
}

/// A zone an `acl` rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclZone {
    /// Lowercase wire form.
    pub wire: Vec<u8>,
    /// Presentation form with its trailing dot (`example.org.`), the metrics' `zone` label.
    pub text: String,
}

/// One `acl [ZONES...] { ... }` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    /// Indices into [`AclConfig::zones`]: the names the rule applies to.
    pub zones: Vec<usize>,
    /// The lines of its block, in order: the first that matches decides.
    pub policies: Vec<AclPolicy>,
}

/// `ACTION [type QTYPE...] [net SOURCE...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclPolicy {
    pub action: AclAction,
    /// The query types it matches; `None`: every type (no `type`, or `type *`).
    pub qtypes: Option<Vec<u16>>,
    /// The client addresses it matches; `None`: every address (no `net`, or `net *`).
    pub sources: Option<Vec<Cidr>>,
}

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAction {
    /// The query goes on (no further rule is looked at).
    Allow,
    /// REFUSED, with the Extended DNS Error "Blocked" for EDNS clients.
    Block,
    /// NOERROR with no records, with the Extended DNS Error "Filtered" for EDNS clients.
    Filter,
    /// No reply at all.
    Drop,
}

impl AclAction {
    /// The action's counter slot among those that answer (block 0, filter 1, drop 2), or
    /// `None` for allow.
    pub fn denial_slot(self) -> Option<usize> {
        match self {
            AclAction::Allow => None,
            AclAction::Block => Some(0),
            AclAction::Filter => Some(1),
            AclAction::Drop => Some(2),
        }
    }
}

/// What the rules decided for a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It goes on.
    Allowed,
    /// A policy of a rule applying through zone `zone` (an index into [`AclConfig::zones`])
    /// blocks, filters or drops it.
    Denied { action: AclAction, zone: usize },
}

impl AclConfig {
    /// The decision for a query for `qname` (uncompressed wire form, any case) of type
    /// `qtype` from `source`.
    pub(crate) fn decide(&self, qname: &[u8], qtype: u16, source: IpAddr) -> Verdict {
        for rule in &self.rules {
            // CoreDNS's plugin.Zones.Matches: the longest zone holding the name.
            let Some(zone) = rule
                .zones
                .iter()
                .copied()
                .filter(|&zone| in_zone(qname, &self.zones[zone].wire))
                .max_by_key(|&zone| self.zones[zone].wire.len())
            else {
                continue;
            };
            match rule.policies.iter().find(|p| p.matches(qtype, source)) {
                None => continue,
                Some(policy) if policy.action == AclAction::Allow => return Verdict::Allowed,
                Some(policy) => {
                    return Verdict::Denied {
                        action: policy.action,
                        zone,
                    };
                }
            }
        }
        Verdict::Allowed
    }
}

impl AclPolicy {
    /// Whether the policy applies to a query of `qtype` from `source`.
    fn matches(&self, qtype: u16, source: IpAddr) -> bool {
        let qtype_matches = self
            .qtypes
            .as_ref()
            .is_none_or(|qtypes| qtypes.contains(&qtype));
        qtype_matches
            && self
                .sources
                .as_ref()
                .is_none_or(|sources| sources.iter().any(|net| net.contains(source)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(wire: &[u8], text: &str) -> AclZone {
        AclZone {
            wire: wire.to_vec(),
            text: text.to_string(),
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

    const NAME: &[u8] = b"\x01a\x07example\x03org\x00";

    #[test]
    fn first_matching_policy_of_the_first_acting_rule_decides() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let acl = AclConfig {
            zones: vec![
                zone(b"\0", "."),
                zone(b"\x07example\x03org\x00", "example.org."),
            ],
            rules: vec![
                // Applies through the longer zone, example.org.
                AclRule {
                    zones: vec![0, 1],
                    policies: vec![
                        policy(AclAction::Allow, None, Some(&["192.168.1.0/24"])),
                        policy(AclAction::Block, Some(vec![28]), Some(&["192.168.0.0/16"])),
                    ],
                },
                AclRule {
                    zones: vec![0],
                    policies: vec![policy(AclAction::Drop, None, Some(&["10.0.0.0/8"]))],
                },
            ],
        };
        let decide = |qtype, source| acl.decide(NAME, qtype, ip(source));
        assert_eq!(
            decide(28, "192.168.1.9"),
            Verdict::Allowed,
            "allow ends the check"
        );
        assert_eq!(
            decide(28, "192.168.2.9"),
            Verdict::Denied {
                action: AclAction::Block,
                zone: 1
            }
        );
        assert_eq!(
            decide(1, "192.168.2.9"),
            Verdict::Allowed,
            "no policy, no rule"
        );
        assert_eq!(
            decide(1, "10.1.2.3"),
            Verdict::Denied {
                action: AclAction::Drop,
                zone: 0
            },
            "the first rule has no matching policy: the second decides"
        );
        assert_eq!(
            acl.decide(b"\x03www\x07example\x03com\x00", 28, ip("192.168.2.9")),
            Verdict::Denied {
                action: AclAction::Block,
                zone: 0
            },
            "outside example.org. the first rule applies through the root"
        );
    }

    #[test]
    fn a_policy_without_type_or_net_matches_everything() {
        let acl = AclConfig {
            zones: vec![zone(b"\0", ".")],
            rules: vec![AclRule {
                zones: vec![0],
                policies: vec![policy(AclAction::Filter, None, None)],
            }],
        };
        for source in ["127.0.0.1", "::1", "::ffff:10.0.0.1"] {
            assert_eq!(
                acl.decide(NAME, 16, source.parse().unwrap()),
                Verdict::Denied {
                    action: AclAction::Filter,
                    zone: 0
                }
            );
        }
        assert_eq!(
            AclConfig::default().decide(NAME, 1, "::1".parse().unwrap()),
            Verdict::Allowed
        );
    }
}
