//! Unit tests of the `acl` directive: CoreDNS's forms, the zones each server block ends up
//! with, and the messages of what it refuses (each naming FILE:LINE and what was expected).

use shardns_shard::config::{AclAction, AclConfig, AclPolicy, AclRule, AclZone};

use super::*;
use crate::corefile::build;
use crate::corefile::directives::tests::{error, settings};

fn net(text: &str) -> Cidr {
    crate::corefile::address::parse_cidr(text).unwrap()
}

/// The acl of the one block `.:53 { BODY }`.
fn acl(body: &str) -> AclConfig {
    let config = build("Corefile", &format!(".:53 {{\n{body}\n}}")).unwrap();
    config.servers[0].acl.clone().expect("an acl")
}

#[test]
fn coredns_examples() {
    // README: block type A from 192.168.0.0/16.
    let got = acl("acl {\n block type A net 192.168.0.0/16\n}");
    assert_eq!(
        got,
        AclConfig {
            zones: vec![AclZone {
                wire: vec![0],
                text: ".".to_string()
            }],
            rules: vec![AclRule {
                zones: vec![0],
                policies: vec![AclPolicy {
                    action: AclAction::Block,
                    qtypes: Some(vec![1]),
                    sources: Some(vec![net("192.168.0.0/16")]),
                }],
            }],
        }
    );
    // Allow two networks, block the rest: a line without type or net matches everything.
    let got = acl("acl {\n allow net 192.168.0.0/24 192.168.1.0/24\n block\n}");
    let policies = &got.rules[0].policies;
    assert_eq!(
        policies[0].sources,
        Some(vec![net("192.168.0.0/24"), net("192.168.1.0/24")])
    );
    assert_eq!(
        policies[1],
        AclPolicy {
            action: AclAction::Block,
            qtypes: None,
            sources: None
        }
    );
    // Addresses alone are /32 and /128; sections may come in any order, keywords any case.
    let got = acl("acl {\n DROP NET 192.0.2.1 2001:db8::1 TYPE aaaa mx TYPE65\n}");
    let policy = &got.rules[0].policies[0];
    assert_eq!(policy.action, AclAction::Drop);
    assert_eq!(policy.qtypes, Some(vec![28, 15, 65]));
    assert_eq!(
        policy.sources,
        Some(vec![net("192.0.2.1/32"), net("2001:db8::1/128")])
    );
    // `*` is everything, and ends its section as in CoreDNS.
    let got = acl("acl {\n filter type * NOTATYPE net * 10.0.0.0/99\n allow type A\n}");
    assert_eq!(got.rules[0].policies[0].qtypes, None);
    assert_eq!(got.rules[0].policies[0].sources, None);
    assert_eq!(got.rules[0].policies[1].qtypes, Some(vec![1]));
    // An acl without a block allows everything (no policy).
    assert!(acl("acl").rules[0].policies.is_empty());
    assert_eq!(settings("errors").unwrap().acl, Vec::new());
}

#[test]
fn several_acls_and_their_zones() {
    let config = build(
        "Corefile",
        "example.org other.net:53 {\n acl a.example.org example.org {\n block net 10.0.0.0/8\n }\n \
         acl {\n drop type ANY\n }\n acl elsewhere.com {\n block\n }\n}",
    )
    .unwrap();
    let texts = |acl: &AclConfig| -> Vec<String> {
        acl.zones.iter().map(|zone| zone.text.clone()).collect()
    };
    let org = config.servers[0].acl.as_ref().unwrap();
    assert_eq!(texts(org), ["a.example.org.", "example.org."]);
    assert_eq!(
        org.rules.len(),
        2,
        "elsewhere.com shares no name with example.org"
    );
    assert_eq!(org.rules[0].zones, [0, 1]);
    assert_eq!(org.rules[1].zones, [1], "without ZONES: the block's zone");
    assert_eq!(org.rules[1].policies[0].qtypes, Some(vec![255]));
    let net = config.servers[1].acl.as_ref().unwrap();
    assert_eq!(texts(net), ["other.net."]);
    assert_eq!(net.rules.len(), 1);
    // A rule for a parent zone applies with that zone (CoreDNS's `zone` label).
    let root = build("Corefile", "example.org {\n acl . {\n block\n }\n}").unwrap();
    assert_eq!(texts(root.servers[0].acl.as_ref().unwrap()), ["."]);
}

#[test]
fn bad_acl() {
    assert_eq!(
        error("acl {\n permit net 10.0.0.0/8\n}"),
        "Corefile:3: unknown acl action \"permit\" (expected allow, block, filter or drop)"
    );
    assert_eq!(
        error("acl {\n block A\n}"),
        "Corefile:3: unexpected acl token \"A\" (expected type or net)"
    );
    assert_eq!(
        error("acl {\n block type\n}"),
        "Corefile:3: acl type needs a QTYPE (a type name such as A or AAAA, or *)"
    );
    assert_eq!(
        error("acl {\n block type A net\n}"),
        "Corefile:3: acl net needs a SOURCE (an address prefix such as 10.0.0.0/8 or \
         fd00::/56, or an address, or *)"
    );
    assert_eq!(
        error("acl {\n block type AAAAA\n}"),
        "Corefile:3: unknown query type \"AAAAA\" (expected a type name such as A, AAAA or MX, \
         TYPE and a number, or *)"
    );
    assert_eq!(
        error("acl {\n allow\n block net 10.0.0.0/33\n}"),
        "Corefile:4: bad acl source: \"10.0.0.0/33\": the prefix length must be a number from \
         0 to 32 (expected an address prefix such as 10.0.0.0/8 or fd00::/56, or an address, \
         or *)"
    );
    assert_eq!(
        error("acl {\n block net example.org\n}"),
        "Corefile:3: bad acl source: \"example.org\" is not an address prefix such as \
         10.0.0.0/8 or fd00::/56, or an address (expected an address prefix such as 10.0.0.0/8 \
         or fd00::/56, or an address, or *)"
    );
    assert_eq!(
        error("acl {\n block {\n net 10.0.0.0/8\n }\n}"),
        "Corefile:3: acl action \"block\" takes no options block"
    );
    assert!(
        error("acl a..b").starts_with("Corefile:2: zone \"a..b\""),
        "{}",
        error("acl a..b")
    );
    let nine: Vec<String> = (0..9).map(|i| format!("z{i}.example.")).collect();
    let text = format!(".:53 {{\n acl {}\n}}", nine.join(" "));
    assert_eq!(
        build("Corefile", &text).unwrap_err().to_string(),
        "Corefile:2: acl: the acl directives of a server block may name at most 8 zones (each \
         has its own counters); \"z8.example.\" is one more"
    );
}

#[test]
fn query_type_names() {
    assert_eq!(qtype("A"), Some(1));
    assert_eq!(qtype("https"), Some(65));
    assert_eq!(qtype("TYPE65280"), Some(65280));
    assert_eq!(qtype("TYPE70000"), None);
    assert_eq!(qtype("TYPE"), None);
    assert_eq!(qtype("BOGUS"), None);
}
