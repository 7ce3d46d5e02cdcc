use std::time::{Duration, Instant};

use super::{Plan, Table};
use crate::corefile::address::parse_zone;
use crate::corefile::build;

fn name(text: &str) -> Vec<u8> {
    parse_zone(text).unwrap().wire
}

/// node-local-dns's layout: the cluster zone and `.` on the same two addresses, the cluster
/// zone alone with `fastpath` (and a third address serving `.` only).
const NODE_LOCAL: &str = "\
cluster.local:53 {
    cache 30
    bind 169.254.20.10 10.96.0.10
    forward . 10.0.0.10
    fastpath veth* lo
}
.:53 {
    cache 30
    bind 169.254.20.10 10.96.0.10
    forward . 10.0.0.11
}
.:5353 {
    cache 30
    bind 169.254.20.10
    forward . 10.0.0.11
}
";

#[test]
fn one_number_per_set_of_blocks_and_entries_only_where_their_block_answers() {
    let config = build("Corefile", NODE_LOCAL).unwrap();
    let plan = Plan::of(&config).unwrap().expect("a fastpath block");
    let addrs: Vec<String> = plan
        .served
        .iter()
        .map(|(a, n)| format!("{a}={n}"))
        .collect();
    // The two addresses of the shared blocks share a number; :5353 has no fastpath block.
    assert_eq!(addrs, ["169.254.20.10:53=0", "10.96.0.10:53=0"]);
    assert_eq!(plan.interfaces, ["veth*", "lo"]);
    assert!(!plan.force);
    let cluster = 0;
    let root = 1;
    assert_eq!(config.servers[cluster].zone_text, "cluster.local.");
    let svc = name("kubernetes.default.svc.cluster.local.");
    assert_eq!(plan.numbers(&config, cluster, &svc), [0]);
    assert_eq!(plan.numbers(&config, root, &name("example.com.")), [0]);
    // A cluster name cached by the root block (it cannot be routed there on these
    // addresses) is not published under their number.
    assert!(plan.numbers(&config, root, &svc).is_empty());
}

#[test]
fn no_fastpath_no_plan_and_force_is_gathered() {
    let config = build("Corefile", ".:53 {\n cache\n forward . 10.0.0.1\n}\n").unwrap();
    assert_eq!(Plan::of(&config).unwrap(), None);
    let text = "a.:53 {\n cache\n bind 127.0.0.1\n forward . 10.0.0.1\n fastpath lo {\n  force\n }\n}\n\
                b.:53 {\n cache\n bind 127.0.0.2\n forward . 10.0.0.1\n fastpath lo eth0\n}\n";
    let config = build("Corefile", text).unwrap();
    let plan = Plan::of(&config).unwrap().unwrap();
    assert!(plan.force);
    assert_eq!(plan.interfaces, ["lo", "eth0"]);
    let numbers: Vec<u8> = plan.served.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, [0, 1], "different blocks, different numbers");
}

#[test]
fn entries_leave_when_every_publisher_withdrew_or_they_expired() {
    let now = Instant::now();
    let mut table: Table<&str> = Table::default();
    let later = now + Duration::from_secs(30);
    table.insert("a", 0, (0, true), later);
    table.insert("a", 1, (0, true), later);
    table.insert("b", 1, (0, false), now + Duration::from_secs(5));
    assert_eq!(table.len(), 2);
    assert_eq!(table.withdraw(&"a", 0), None, "shard 1 still holds it");
    assert_eq!(table.withdraw(&"a", 7), None, "not a publisher");
    let gone = table.withdraw(&"a", 1).expect("the last publisher");
    assert!(gone.success);
    assert_eq!(table.len(), 1);
    table.insert("c", 2, (0, true), later);
    let reset: Vec<&str> = table
        .withdraw_shard(1)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(reset, ["b"]);
    assert!(table.expired(now + Duration::from_secs(29)).is_empty());
    let expired: Vec<&str> = table.expired(later).into_iter().map(|(k, _)| k).collect();
    assert_eq!(expired, ["c"]);
    assert_eq!(table.len(), 0);
}
