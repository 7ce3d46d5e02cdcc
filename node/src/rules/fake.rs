//! An in-memory iptables for unit tests: chains as lists of rules (index 0 at the top), the
//! operations asked of it, and faults to inject (a held lock, a failing command, iptables
//! < 1.8.8's unreliable `-C`, a listing format the parser does not know).

use std::collections::BTreeMap;

use super::{Backend, ChainKey, chain_key};
use crate::rules::{Chain, IpFamily, IptablesError, Rule, Side, Table, Target};

/// One operation asked of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operation {
    List(ChainKey),
    Check(Rule),
    Insert(Rule),
    Delete(Rule),
}

/// Which operations an injected fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    Every,
    List,
    Check,
    Insert,
    Delete,
}

/// What an injected fault looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// iptables could not take the xtables lock.
    Lock,
    /// iptables failed for another reason.
    Other,
}

#[derive(Debug, Default)]
pub(crate) struct FakeIptables {
    chains: BTreeMap<ChainKey, Vec<Rule>>,
    pub(crate) operations: Vec<Operation>,
    fault: Option<(Hit, Fault)>,
    /// `-C` says "absent" even for present rules, as iptables < 1.8.8 sometimes does.
    pub(crate) unreliable_check: bool,
    /// NOTRACK rules are listed as `-j CT --notrack`, a form `Rule::matches_listing` rejects.
    pub(crate) unrecognised_listing: bool,
}

impl FakeIptables {
    pub(crate) fn fail(&mut self, hit: Hit, fault: Fault) {
        self.fault = Some((hit, fault));
    }

    pub(crate) fn heal(&mut self) {
        self.fault = None;
    }

    /// The rules of a chain, top first.
    pub(crate) fn chain(&self, family: IpFamily, table: Table, chain: Chain) -> &[Rule] {
        self.chains
            .get(&(family, table, chain))
            .map_or(&[], Vec::as_slice)
    }

    /// How many copies of `rule` are in its chain.
    pub(crate) fn copies(&self, rule: &Rule) -> usize {
        let (family, table, chain) = chain_key(rule);
        self.chain(family, table, chain)
            .iter()
            .filter(|other| *other == rule)
            .count()
    }

    /// Every rule of every chain.
    pub(crate) fn all_rules(&self) -> Vec<Rule> {
        self.chains.values().flatten().copied().collect()
    }

    /// Adds `rule` at the bottom of its chain behind the code's back (another program, or an
    /// earlier process that duplicated it).
    pub(crate) fn append_by_hand(&mut self, rule: Rule) {
        self.chains.entry(chain_key(&rule)).or_default().push(rule);
    }

    /// Deletes every copy of `rule` behind the code's back (an operator).
    pub(crate) fn delete_by_hand(&mut self, rule: &Rule) {
        if let Some(rules) = self.chains.get_mut(&chain_key(rule)) {
            rules.retain(|other| other != rule);
        }
    }

    pub(crate) fn count_operations(&self, wanted: fn(&Operation) -> bool) -> usize {
        self.operations
            .iter()
            .filter(|operation| wanted(operation))
            .count()
    }

    fn injected(&self, hit: Hit) -> Result<(), IptablesError> {
        match self.fault {
            Some((fault_hit, fault)) if fault_hit == hit || fault_hit == Hit::Every => {
                Err(match fault {
                    Fault::Lock => failure(
                        "exit status: 4",
                        "Another app is currently holding the xtables lock. Stopped waiting \
                         after 5s.",
                    ),
                    Fault::Other => failure("exit status: 1", "iptables: injected failure."),
                })
            }
            _ => Ok(()),
        }
    }

    fn listing_line(&self, rule: &Rule) -> String {
        let (address, port) = match rule.side {
            Side::Destination => ("-d", "--dport"),
            Side::Source => ("-s", "--sport"),
        };
        let target = match (rule.target, self.unrecognised_listing) {
            (Target::Notrack, true) => "CT --notrack",
            (target, _) => target.name(),
        };
        format!(
            "-A {} {address} {}/{} -p {protocol} -m {protocol} {port} {} -m comment --comment \
             \"{}\" -j {target}",
            rule.chain.name(),
            rule.address,
            rule.family().host_prefix_length(),
            rule.port,
            rule.comment(),
            protocol = rule.protocol.name(),
        )
    }
}

fn failure(status: &str, output: &str) -> IptablesError {
    IptablesError::Failed {
        command_line: "fake iptables".to_string(),
        status: status.to_string(),
        output: output.to_string(),
    }
}

impl Backend for FakeIptables {
    fn list(
        &mut self,
        family: IpFamily,
        table: Table,
        chain: Chain,
    ) -> Result<Vec<String>, IptablesError> {
        self.operations
            .push(Operation::List((family, table, chain)));
        self.injected(Hit::List)?;
        let mut lines = vec![format!("-P {} ACCEPT", chain.name())];
        lines.extend(
            self.chain(family, table, chain)
                .iter()
                .map(|rule| self.listing_line(rule)),
        );
        Ok(lines)
    }

    fn check(&mut self, rule: &Rule) -> Result<bool, IptablesError> {
        self.operations.push(Operation::Check(*rule));
        self.injected(Hit::Check)?;
        Ok(!self.unreliable_check && self.copies(rule) > 0)
    }

    fn insert(&mut self, rule: &Rule) -> Result<(), IptablesError> {
        self.operations.push(Operation::Insert(*rule));
        self.injected(Hit::Insert)?;
        self.chains
            .entry(chain_key(rule))
            .or_default()
            .insert(0, *rule);
        Ok(())
    }

    fn delete(&mut self, rule: &Rule) -> Result<(), IptablesError> {
        self.operations.push(Operation::Delete(*rule));
        self.injected(Hit::Delete)?;
        let rules = self.chains.entry(chain_key(rule)).or_default();
        match rules.iter().position(|other| other == rule) {
            Some(index) => {
                rules.remove(index);
                Ok(())
            }
            None => Err(failure(
                "exit status: 1",
                "iptables: Bad rule (does a matching rule exist in that chain?).",
            )),
        }
    }
}
