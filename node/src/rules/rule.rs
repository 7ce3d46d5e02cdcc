//! One iptables rule as node-cache installs it, and the 12 rules per local IP.
//!
//! [`desired_rules`] builds exactly the list node-cache's `initIptables`
//! (`cmd/node-cache/app/cache_app.go`) builds: for each local IP, in the same order, the same
//! table, chain, arguments and comment. [`Rule::arguments`] gives the arguments in node-cache's
//! order (`-p tcp -d X --dport 53 -j NOTRACK -m comment --comment "..."`);
//! [`Rule::matches_listing`] recognises the rule in `iptables -S` output, where iptables prints
//! it in its own canonical form (`-A PREROUTING -d X/32 -p tcp -m tcp --dport 53 -m comment
//! --comment "..." -j NOTRACK`), so that copies can be counted without trusting `-C`.

use std::fmt;
use std::net::IpAddr;

/// node-cache's comment on every NOTRACK rule.
pub const COMMENT_SKIP_CONNTRACK: &str = "NodeLocal DNS Cache: skip conntrack";
/// node-cache's comment on every ACCEPT rule.
pub const COMMENT_ALLOW_TRAFFIC: &str = "NodeLocal DNS Cache: allow DNS traffic";

/// The address family of a rule: which of `iptables` / `ip6tables` manages it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4: `iptables`.
    V4,
    /// IPv6: `ip6tables`.
    V6,
}

impl IpFamily {
    /// The family of `address`.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The prefix length of a single host: 32 or 128.
    pub fn host_prefix_length(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

/// An iptables table (`-t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `raw`: where NOTRACK lives.
    Raw,
    /// `filter`: where ACCEPT lives.
    Filter,
}

impl Table {
    /// The name iptables knows the table by.
    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Filter => "filter",
        }
    }
}

/// A built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chain {
    /// `PREROUTING`.
    Prerouting,
    /// `INPUT`.
    Input,
    /// `OUTPUT`.
    Output,
}

impl Chain {
    /// The name iptables knows the chain by.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Input => "INPUT",
            Chain::Output => "OUTPUT",
        }
    }
}

/// The transport protocol matched (`-p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
}

impl Protocol {
    /// The name iptables knows the protocol by.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Which end of the packet the rule matches: the local IP and port as destination
/// (`-d X --dport P`) or as source (`-s X --sport P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `-d X --dport P`.
    Destination,
    /// `-s X --sport P`.
    Source,
}

impl Side {
    fn address_option(self) -> &'static str {
        match self {
            Side::Destination => "-d",
            Side::Source => "-s",
        }
    }

    fn port_option(self) -> &'static str {
        match self {
            Side::Destination => "--dport",
            Side::Source => "--sport",
        }
    }
}

/// The rule's target (`-j`); it also decides the comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `NOTRACK`, commented [`COMMENT_SKIP_CONNTRACK`].
    Notrack,
    /// `ACCEPT`, commented [`COMMENT_ALLOW_TRAFFIC`].
    Accept,
}

impl Target {
    /// The name iptables knows the target by.
    pub fn name(self) -> &'static str {
        match self {
            Target::Notrack => "NOTRACK",
            Target::Accept => "ACCEPT",
        }
    }

    /// node-cache's comment for rules with this target.
    pub fn comment(self) -> &'static str {
        match self {
            Target::Notrack => COMMENT_SKIP_CONNTRACK,
            Target::Accept => COMMENT_ALLOW_TRAFFIC,
        }
    }
}

/// One rule: `TABLE CHAIN -p PROTOCOL -d|-s ADDRESS --dport|--sport PORT -j TARGET -m comment
/// --comment COMMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The table (`-t`).
    pub table: Table,
    /// The chain.
    pub chain: Chain,
    /// `-p`.
    pub protocol: Protocol,
    /// Whether `address`/`port` are matched as destination or source.
    pub side: Side,
    /// The local IP.
    pub address: IpAddr,
    /// The DNS port or the health port.
    pub port: u16,
    /// `-j`.
    pub target: Target,
    /// `-m socket --nowildcard`: the rule matches only while a socket is bound to the
    /// packet's destination address and port (fail-open rules, [`RuleDesign::FailOpen`]).
    pub while_served: bool,
}

/// Which rules to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleDesign {
    /// node-cache's 12 rules per local IP, exactly.
    #[default]
    NodeCache,
    /// node-cache's rules, but the two that skip conntrack for pods' queries (raw PREROUTING)
    /// match only while a socket is bound to the local IP and port (`-m socket
    /// --nowildcard`): when every shardns process is gone (SIGKILL, the OOM killer), pods'
    /// queries to the cluster DNS IP are tracked again and kube-proxy's DNAT takes them to
    /// the cluster DNS instead of a dead address. The kernel refuses the socket match in
    /// OUTPUT, so host-network clients still depend on a live process.
    FailOpen,
}

impl Rule {
    /// `iptables` or `ip6tables`, by the address.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.address)
    }

    /// node-cache's comment on this rule.
    pub fn comment(&self) -> &'static str {
        self.target.comment()
    }

    /// The rule's arguments in node-cache's order, without table and chain:
    /// `-p tcp -d X --dport P -j NOTRACK -m comment --comment "NodeLocal DNS Cache: ..."`
    /// (the comment is one argument).
    pub fn arguments(&self) -> Vec<String> {
        let mut arguments = vec![
            "-p".to_string(),
            self.protocol.name().to_string(),
            self.side.address_option().to_string(),
            self.address.to_string(),
            self.side.port_option().to_string(),
            self.port.to_string(),
        ];
        if self.while_served {
            arguments.extend(["-m", "socket", "--nowildcard"].map(String::from));
        }
        arguments.extend([
            "-j".to_string(),
            self.target.name().to_string(),
            "-m".to_string(),
            "comment".to_string(),
            "--comment".to_string(),
            self.comment().to_string(),
        ]);
        arguments
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.table.name(), self.chain.name())?;
        for argument in self.arguments() {
            if argument.contains(' ') {
                write!(formatter, " \"{argument}\"")?;
            } else {
                write!(formatter, " {argument}")?;
            }
        }
        Ok(())
    }
}

/// node-cache's 12 rules for each of `local_ips`, in node-cache's order (`initIptables`):
///
/// | # | table/chain | arguments |
/// |---|---|---|
/// | 1, 2 | raw/PREROUTING | `-p tcp\|udp -d X --dport DNS -j NOTRACK` |
/// | 3, 4 | filter/INPUT | `-p tcp\|udp -d X --dport DNS -j ACCEPT` |
/// | 5, 6 | raw/OUTPUT | `-p tcp\|udp -s X --sport DNS -j NOTRACK` |
/// | 7, 8 | filter/OUTPUT | `-p tcp\|udp -s X --sport DNS -j ACCEPT` |
/// | 9, 10 | raw/OUTPUT | `-p tcp\|udp -d X --dport DNS -j NOTRACK` |
/// | 11 | raw/OUTPUT | `-p tcp -d X --dport HEALTH -j NOTRACK` |
/// | 12 | raw/OUTPUT | `-p tcp -s X --sport HEALTH -j NOTRACK` |
///
/// each followed by `-m comment --comment` [`COMMENT_SKIP_CONNTRACK`] (NOTRACK) or
/// [`COMMENT_ALLOW_TRAFFIC`] (ACCEPT).
///
/// With [`RuleDesign::FailOpen`], rules 1 and 2 also carry `-m socket --nowildcard`.
pub fn desired_rules(
    local_ips: &[IpAddr],
    dns_port: u16,
    health_port: u16,
    design: RuleDesign,
) -> Vec<Rule> {
    use Chain::{Input, Output, Prerouting};
    use Protocol::{Tcp, Udp};
    use Side::{Destination, Source};
    use Table::{Filter, Raw};
    use Target::{Accept, Notrack};
    const SHAPES: [(Table, Chain, Protocol, Side, bool, Target); 12] = [
        (Raw, Prerouting, Tcp, Destination, false, Notrack),
        (Raw, Prerouting, Udp, Destination, false, Notrack),
        (Filter, Input, Tcp, Destination, false, Accept),
        (Filter, Input, Udp, Destination, false, Accept),
        (Raw, Output, Tcp, Source, false, Notrack),
        (Raw, Output, Udp, Source, false, Notrack),
        (Filter, Output, Tcp, Source, false, Accept),
        (Filter, Output, Udp, Source, false, Accept),
        (Raw, Output, Tcp, Destination, false, Notrack),
        (Raw, Output, Udp, Destination, false, Notrack),
        (Raw, Output, Tcp, Destination, true, Notrack),
        (Raw, Output, Tcp, Source, true, Notrack),
    ];
    let mut rules = Vec::with_capacity(local_ips.len() * SHAPES.len());
    for &address in local_ips {
        for (table, chain, protocol, side, health, target) in SHAPES {
            let port = if health { health_port } else { dns_port };
            rules.push(Rule {
                table,
                chain,
                protocol,
                side,
                address,
                port,
                target,
                while_served: design == RuleDesign::FailOpen && chain == Prerouting,
            });
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The 12 rules as node-cache's `initIptables` writes them, table, chain and arguments.
    fn node_cache_rules(x: &str, p: &str, h: &str) -> Vec<String> {
        let a = "\"NodeLocal DNS Cache: skip conntrack\"";
        let b = "\"NodeLocal DNS Cache: allow DNS traffic\"";
        vec![
            format!("raw PREROUTING -p tcp -d {x} --dport {p} -j NOTRACK -m comment --comment {a}"),
            format!("raw PREROUTING -p udp -d {x} --dport {p} -j NOTRACK -m comment --comment {a}"),
            format!("filter INPUT -p tcp -d {x} --dport {p} -j ACCEPT -m comment --comment {b}"),
            format!("filter INPUT -p udp -d {x} --dport {p} -j ACCEPT -m comment --comment {b}"),
            format!("raw OUTPUT -p tcp -s {x} --sport {p} -j NOTRACK -m comment --comment {a}"),
            format!("raw OUTPUT -p udp -s {x} --sport {p} -j NOTRACK -m comment --comment {a}"),
            format!("filter OUTPUT -p tcp -s {x} --sport {p} -j ACCEPT -m comment --comment {b}"),
            format!("filter OUTPUT -p udp -s {x} --sport {p} -j ACCEPT -m comment --comment {b}"),
            format!("raw OUTPUT -p tcp -d {x} --dport {p} -j NOTRACK -m comment --comment {a}"),
            format!("raw OUTPUT -p udp -d {x} --dport {p} -j NOTRACK -m comment --comment {a}"),
            format!("raw OUTPUT -p tcp -d {x} --dport {h} -j NOTRACK -m comment --comment {a}"),
            format!("raw OUTPUT -p tcp -s {x} --sport {h} -j NOTRACK -m comment --comment {a}"),
        ]
    }

    #[test]
    fn twelve_rules_per_ip_in_node_caches_order() {
        let rules = desired_rules(
            &[ip("169.254.20.10"), ip("10.96.0.10")],
            53,
            8080,
            RuleDesign::NodeCache,
        );
        let shown: Vec<String> = rules.iter().map(Rule::to_string).collect();
        let mut expected = node_cache_rules("169.254.20.10", "53", "8080");
        expected.extend(node_cache_rules("10.96.0.10", "53", "8080"));
        assert_eq!(shown, expected);
    }

    #[test]
    fn other_ports_are_used_where_node_cache_uses_them() {
        let rules = desired_rules(&[ip("fd00::a")], 5353, 9090, RuleDesign::NodeCache);
        let shown: Vec<String> = rules.iter().map(Rule::to_string).collect();
        assert_eq!(shown, node_cache_rules("fd00::a", "5353", "9090"));
        assert!(rules.iter().all(|rule| rule.family() == IpFamily::V6));
    }

    #[test]
    fn arguments_keep_the_comment_as_one_argument() {
        let rule = desired_rules(&[ip("169.254.20.10")], 53, 8080, RuleDesign::NodeCache)[2];
        assert_eq!(
            rule.arguments(),
            [
                "-p",
                "tcp",
                "-d",
                "169.254.20.10",
                "--dport",
                "53",
                "-j",
                "ACCEPT",
                "-m",
                "comment",
                "--comment",
                "NodeLocal DNS Cache: allow DNS traffic"
            ]
        );
    }
}
