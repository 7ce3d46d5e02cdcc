//! Recognising node-cache's rules in `iptables -S` output.
//!
//! iptables prints a rule in its own canonical form, not in the order it was given:
//! `-A PREROUTING -d X/32 -p tcp -m tcp --dport 53 -m comment --comment "..." -j NOTRACK`.
//! [`Rule::matches_listing`] compares such a line with a [`Rule`] option by option, so copies
//! can be counted without trusting `iptables -C`.

use std::net::IpAddr;

use super::rule::{Rule, Side};

impl Rule {
    /// Whether one line of `iptables -t TABLE -S CHAIN` output is this rule.
    ///
    /// The line must be `-A CHAIN` followed by exactly this rule's matches, in any order, as
    /// iptables prints them: the address with or without its host prefix (`/32`, `/128`), the
    /// implicit `-m tcp`/`-m udp`, `-m comment`, the comment quoted or not. A line with any other
    /// option (an interface, a negation, another match) is a different rule.
    pub fn matches_listing(&self, line: &str) -> bool {
        let Some(words) = split_listing_line(line) else {
            return false;
        };
        let mut words = words.into_iter();
        if words.next().as_deref() != Some("-A")
            || words.next().as_deref() != Some(self.chain.name())
        {
            return false;
        }
        let mut seen = Seen::default();
        while let Some(option) = words.next() {
            if option == "--nowildcard" {
                if std::mem::replace(&mut seen.nowildcard, true) {
                    return false;
                }
                continue;
            }
            let Some(value) = words.next() else {
                return false;
            };
            let fresh = match option.as_str() {
                "-p" => seen.protocol.replace(value).is_none(),
                "-s" => seen.source.replace(value).is_none(),
                "-d" => seen.destination.replace(value).is_none(),
                "--sport" => seen.source_port.replace(value).is_none(),
                "--dport" => seen.destination_port.replace(value).is_none(),
                "-j" => seen.target.replace(value).is_none(),
                "--comment" => seen.comment.replace(value).is_none(),
                "-m" => match value.as_str() {
                    "comment" => true,
                    "socket" => !std::mem::replace(&mut seen.socket, true),
                    module if module == self.protocol.name() => true,
                    _ => false,
                },
                _ => false,
            };
            if !fresh {
                return false;
            }
        }
        let (address, port, other_address, other_port) = match self.side {
            Side::Destination => (
                seen.destination,
                seen.destination_port,
                seen.source,
                seen.source_port,
            ),
            Side::Source => (
                seen.source,
                seen.source_port,
                seen.destination,
                seen.destination_port,
            ),
        };
        other_address.is_none()
            && other_port.is_none()
            && seen.protocol.as_deref() == Some(self.protocol.name())
            && address.is_some_and(|address| self.is_own_address(&address))
            && port.is_some_and(|port| port.parse::<u16>() == Ok(self.port))
            && seen.target.as_deref() == Some(self.target.name())
            && seen.comment.as_deref() == Some(self.comment())
            && seen.socket == self.while_served
            && seen.nowildcard == self.while_served
    }

    fn is_own_address(&self, text: &str) -> bool {
        let (address, prefix_length) = match text.split_once('/') {
            Some((address, prefix_length)) => (address, Some(prefix_length)),
            None => (text, None),
        };
        let host_prefix = self.family().host_prefix_length();
        address.parse::<IpAddr>() == Ok(self.address)
            && prefix_length.is_none_or(|length| length.parse::<u8>() == Ok(host_prefix))
    }
}

/// The options seen on one listing line.
#[derive(Default)]
struct Seen {
    protocol: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    source_port: Option<String>,
    destination_port: Option<String>,
    target: Option<String>,
    comment: Option<String>,
    /// `-m socket`.
    socket: bool,
    /// `--nowildcard` (the socket match's option, without a value).
    nowildcard: bool,
}

/// Splits a `-S` line into words as iptables quotes them: a word in double quotes may hold
/// spaces, and `\"` / `\\` inside it stand for `"` / `\`. `None` for an unterminated quote.
fn split_listing_line(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut characters = line.trim().chars();
    let mut word = String::new();
    let mut in_word = false;
    while let Some(character) = characters.next() {
        match character {
            '"' => {
                in_word = true;
                loop {
                    match characters.next()? {
                        '"' => break,
                        '\\' => word.push(characters.next()?),
                        other => word.push(other),
                    }
                }
            }
            whitespace if whitespace.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleDesign;
    use crate::rules::rule::desired_rules;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn recognises_iptables_canonical_listing() {
        let rules = desired_rules(&[ip("169.254.20.10")], 53, 8080, RuleDesign::NodeCache);
        // Printed by iptables-nft and iptables-legacy 1.8.9 for rules 1 and 8.
        let first = "-A PREROUTING -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment \
                     --comment \"NodeLocal DNS Cache: skip conntrack\" -j NOTRACK";
        let eighth = "-A OUTPUT -s 169.254.20.10/32 -p udp -m udp --sport 53 -m comment \
                      --comment \"NodeLocal DNS Cache: allow DNS traffic\" -j ACCEPT";
        let matching = |line: &str| -> Vec<usize> {
            (0..rules.len())
                .filter(|&i| rules[i].matches_listing(line))
                .collect()
        };
        assert_eq!(matching(first), [0]);
        assert_eq!(matching(eighth), [7]);
    }

    #[test]
    fn fail_open_rules_carry_the_socket_match_and_only_they_do() {
        let rules = desired_rules(&[ip("10.96.0.10")], 53, 8080, RuleDesign::FailOpen);
        assert_eq!(
            rules.iter().filter(|rule| rule.while_served).count(),
            2,
            "the two raw PREROUTING rules"
        );
        assert_eq!(
            rules[1].arguments().join(" "),
            "-p udp -d 10.96.0.10 --dport 53 -m socket --nowildcard -j NOTRACK -m comment \
             --comment NodeLocal DNS Cache: skip conntrack"
        );
        // As iptables 1.8.9 prints it (nf_tables and legacy alike).
        let listed = "-A PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 53 -m socket \
                      --nowildcard -m comment --comment \"NodeLocal DNS Cache: skip conntrack\" \
                      -j NOTRACK";
        assert!(rules[1].matches_listing(listed));
        let plain = desired_rules(&[ip("10.96.0.10")], 53, 8080, RuleDesign::NodeCache);
        assert!(
            !plain[1].matches_listing(listed),
            "node-cache's rule is another rule"
        );
        let without = listed.replace(" -m socket --nowildcard", "");
        assert!(plain[1].matches_listing(&without));
        assert!(!rules[1].matches_listing(&without));
        assert!(!rules[1].matches_listing(&listed.replace(" --nowildcard", "")));
        assert!(
            !rules[1].matches_listing(&listed.replace("--nowildcard", "--nowildcard --nowildcard"))
        );
    }

    #[test]
    fn recognises_ipv6_listing() {
        let rules = desired_rules(&[ip("fd00::a")], 53, 8080, RuleDesign::NodeCache);
        let line = "-A OUTPUT -s fd00::a/128 -p tcp -m tcp --sport 8080 -m comment \
                    --comment \"NodeLocal DNS Cache: skip conntrack\" -j NOTRACK";
        let matching: Vec<usize> = (0..rules.len())
            .filter(|&i| rules[i].matches_listing(line))
            .collect();
        assert_eq!(matching, [11]);
    }

    #[test]
    fn other_rules_are_not_ours() {
        let rule = desired_rules(&[ip("169.254.20.10")], 53, 8080, RuleDesign::NodeCache)[0];
        let base = "-A PREROUTING -d 169.254.20.10/32 -p tcp -m tcp --dport 53 -m comment \
                    --comment \"NodeLocal DNS Cache: skip conntrack\" -j NOTRACK";
        assert!(rule.matches_listing(base));
        for other in [
            base.replace("PREROUTING", "OUTPUT"),
            base.replace("169.254.20.10/32", "169.254.20.11/32"),
            base.replace("/32", "/24"),
            base.replace("--dport 53", "--dport 54"),
            base.replace("-p tcp -m tcp", "-p udp -m udp"),
            base.replace("-j NOTRACK", "-j ACCEPT"),
            base.replace("skip conntrack", "something else"),
            base.replace(
                " -m comment --comment \"NodeLocal DNS Cache: skip conntrack\"",
                "",
            ),
            base.replace("-d 169", "-i eth0 -d 169"),
            base.replace("-d 169", "! -d 169"),
            base.replace("-d 169.254.20.10/32", "-s 169.254.20.10/32"),
            format!("{base} -s 10.0.0.1/32"),
            format!("{base} -j ACCEPT"),
            "-P PREROUTING ACCEPT".to_string(),
            "-A PREROUTING -d 169.254.20.10/32 -m comment --comment \"unterminated".to_string(),
            String::new(),
        ] {
            assert!(!rule.matches_listing(&other), "{other}");
        }
    }

    #[test]
    fn listing_words_unquote_like_iptables() {
        assert_eq!(
            split_listing_line(r#"-A X --comment "a \"b\" c" -j Y"#).unwrap(),
            ["-A", "X", "--comment", "a \"b\" c", "-j", "Y"]
        );
        assert_eq!(split_listing_line(r#"-A X --comment "open"#), None);
    }
}
