//! The NOTRACK/ACCEPT rules: the desired list, and keeping exactly one copy of each in place.
//!
//! [`Rules`] holds node-cache's rules for the local IPs ([`desired_rules`]) and drives a
//! [`Backend`] (the real one runs iptables: [`IptablesCommand`]):
//!
//! - [`Rules::apply`] at start-up (once serving) and [`Rules::check`] every `-syncinterval`:
//!   a missing rule is inserted at the top of its chain, in node-cache's order, and extra
//!   copies are deleted, so exactly one copy of each rule remains;
//! - [`Rules::teardown`] at exit: every copy of every rule is deleted, looping until the
//!   listing shows none.
//!
//! Copies are counted from the chain's listing (`iptables -S`), one listing per chain and
//! pass, not from `iptables -C`: with iptables older than 1.8.8, `-C` sometimes says a present
//! rule is absent, and node-cache, which checks with `-C` and inserts on "absent", adds the
//! rules again every interval (kubernetes/dns#568) until packets crawl through thousands of
//! copies. `-C` is still asked before inserting a rule the listing does not show, so that a
//! listing format this code does not recognise cannot make it insert copies either.
//!
//! Every failed operation is logged, counted in [`SetupErrors`] by node-cache's error type and
//! skipped; nothing here fails the caller.

pub mod detect;
mod iptables;
mod listing;
mod rule;

#[cfg(test)]
pub(crate) mod fake;

use std::collections::HashMap;
use std::sync::Arc;

pub use self::iptables::{
    IptablesCommand, IptablesError, IptablesMode, IptablesVariant, RuleOperation,
    UnknownIptablesMode, UnknownIptablesVariant,
};
pub use self::rule::{
    COMMENT_ALLOW_TRAFFIC, COMMENT_SKIP_CONNTRACK, Chain, IpFamily, Protocol, Rule, RuleDesign,
    Side, Table, Target, desired_rules,
};
use crate::setup_errors::SetupErrors;

/// The operations [`Rules`] needs from iptables. The real implementation is
/// [`IptablesCommand`]; unit tests use an in-memory table.
pub trait Backend {
    /// The chain's rules, one `-S` line each (`-A CHAIN ...`; other lines are ignored).
    fn list(
        &mut self,
        family: IpFamily,
        table: Table,
        chain: Chain,
    ) -> Result<Vec<String>, IptablesError>;
    /// Whether iptables says `rule` is present (`-C`).
    fn check(&mut self, rule: &Rule) -> Result<bool, IptablesError>;
    /// Inserts `rule` at the top of its chain (`-I`).
    fn insert(&mut self, rule: &Rule) -> Result<(), IptablesError>;
    /// Deletes one copy of `rule` (`-D`).
    fn delete(&mut self, rule: &Rule) -> Result<(), IptablesError>;
}

/// What one [`Rules::apply`] / [`Rules::check`] pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Rules already present exactly once (or, by `-C`, present in a form not recognised).
    pub present: usize,
    /// Rules that were missing and were inserted.
    pub inserted: usize,
    /// Extra copies deleted.
    pub duplicates_removed: usize,
    /// Rules whose state is unknown or wrong after the pass because an operation failed.
    pub failed: usize,
}

/// What [`Rules::teardown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// Copies deleted, duplicates included.
    pub deleted: usize,
    /// Rules that may still be present because an operation failed.
    pub failed: usize,
}

/// Teardown lists and deletes at most this many times over before giving up on a rule whose
/// deletions keep failing.
const TEARDOWN_ROUNDS: usize = 4;
/// When `-C` keeps saying a rule the listing does not show is present, teardown deletes it
/// at most this many times.
const BLIND_DELETES: usize = 1024;

/// A chain of one family: the unit a listing covers.
type ChainKey = (IpFamily, Table, Chain);

fn chain_key(rule: &Rule) -> ChainKey {
    (rule.family(), rule.table, rule.chain)
}

/// The desired rules, the backend they are applied through and the error counters.
#[derive(Debug)]
pub struct Rules<B> {
    backend: B,
    desired: Vec<Rule>,
    errors: Arc<SetupErrors>,
}

impl<B: Backend> Rules<B> {
    /// Keeps `desired` (duplicates dropped, order kept) in place through `backend`, counting
    /// failures in `errors`.
    pub fn new(backend: B, desired: Vec<Rule>, errors: Arc<SetupErrors>) -> Self {
        let mut unique = Vec::with_capacity(desired.len());
        for rule in desired {
            if !unique.contains(&rule) {
                unique.push(rule);
            }
        }
        Self {
            backend,
            desired: unique,
            errors,
        }
    }

    /// The rules kept in place, in insertion order.
    pub fn desired(&self) -> &[Rule] {
        &self.desired
    }

    /// The backend (for tests that inspect it).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Inserts every missing rule at the top of its chain, in order, and deletes extra
    /// copies. Called once the proxy serves on every local IP.
    pub fn apply(&mut self) -> SyncReport {
        self.synchronise()
    }

    /// The periodic re-check (every `-syncinterval`): the same pass as [`Rules::apply`], so a
    /// rule deleted by hand comes back and copies added by anyone are removed.
    pub fn check(&mut self) -> SyncReport {
        self.synchronise()
    }

    fn synchronise(&mut self) -> SyncReport {
        let mut report = SyncReport::default();
        let listings = self.list_chains();
        for index in 0..self.desired.len() {
            let rule = self.desired[index];
            let Some(lines) = &listings[&chain_key(&rule)] else {
                report.failed += 1;
                continue;
            };
            match count_copies(&rule, lines) {
                0 => self.insert_missing(&rule, &mut report),
                1 => report.present += 1,
                copies => self.remove_duplicates(&rule, copies, &mut report),
            }
        }
        report
    }

    fn insert_missing(&mut self, rule: &Rule, report: &mut SyncReport) {
        match self.backend.check(rule) {
            Ok(true) => {
                tracing::warn!(
                    %rule,
                    "iptables -C reports the rule present, but its listing does not show it; \
                     not inserting it again"
                );
                report.present += 1;
            }
            Ok(false) => match self.backend.insert(rule) {
                Ok(()) => {
                    tracing::info!(%rule, "added nodelocaldns rule");
                    report.inserted += 1;
                }
                Err(error) => {
                    self.record(&error, "inserting", rule);
                    report.failed += 1;
                }
            },
            Err(error) => {
                self.record(&error, "checking", rule);
                report.failed += 1;
            }
        }
    }

    fn remove_duplicates(&mut self, rule: &Rule, copies: usize, report: &mut SyncReport) {
        for _ in 1..copies {
            if let Err(error) = self.backend.delete(rule) {
                self.record(&error, "deleting a duplicate of", rule);
                report.failed += 1;
                return;
            }
            report.duplicates_removed += 1;
        }
        tracing::info!(%rule, removed = copies - 1, "removed duplicate nodelocaldns rules");
        report.present += 1;
    }

    /// Deletes every copy of every rule. Rounds of list-then-delete run until a listing shows
    /// none left (or deletions stop making progress); a rule the listing never shows but `-C`
    /// reports present is deleted until `-C` says it is gone.
    pub fn teardown(&mut self) -> TeardownReport {
        let mut report = TeardownReport::default();
        let mut listings = self.list_chains();
        for _ in 0..TEARDOWN_ROUNDS {
            let mut progress = false;
            for rule in self.desired.clone() {
                let Some(lines) = &listings[&chain_key(&rule)] else {
                    continue;
                };
                for _ in 0..count_copies(&rule, lines) {
                    if let Err(error) = self.backend.delete(&rule) {
                        self.record(&error, "deleting", &rule);
                        break;
                    }
                    report.deleted += 1;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
            // Deletions happened: list again, to see that none is left.
            listings = self.list_chains();
        }
        for rule in self.desired.clone() {
            match &listings[&chain_key(&rule)] {
                Some(lines) if count_copies(&rule, lines) == 0 => {
                    self.delete_unlisted(&rule, &mut report)
                }
                _ => report.failed += 1,
            }
        }
        tracing::info!(
            deleted = report.deleted,
            failed = report.failed,
            "rules torn down"
        );
        report
    }

    /// Deletes `rule` while `-C` says it is there (a copy in a form the listing parser does
    /// not recognise).
    fn delete_unlisted(&mut self, rule: &Rule, report: &mut TeardownReport) {
        for _ in 0..BLIND_DELETES {
            match self.backend.check(rule) {
                Ok(false) => return,
                Ok(true) => {}
                Err(error) => {
                    self.record(&error, "checking", rule);
                    report.failed += 1;
                    return;
                }
            }
            if let Err(error) = self.backend.delete(rule) {
                self.record(&error, "deleting", rule);
                report.failed += 1;
                return;
            }
            report.deleted += 1;
        }
        report.failed += 1;
    }

    /// One listing per chain the rules live in; `None` where listing failed (counted).
    fn list_chains(&mut self) -> HashMap<ChainKey, Option<Vec<String>>> {
        let mut listings = HashMap::new();
        for rule in &self.desired {
            let key = chain_key(rule);
            if listings.contains_key(&key) {
                continue;
            }
            let (family, table, chain) = key;
            let listing = match self.backend.list(family, table, chain) {
                Ok(lines) => Some(lines),
                Err(error) => {
                    tracing::warn!(
                        table = table.name(),
                        chain = chain.name(),
                        %error,
                        "listing iptables rules failed"
                    );
                    self.errors.record(error.error_type());
                    None
                }
            };
            listings.insert(key, listing);
        }
        listings
    }

    fn record(&self, error: &IptablesError, doing: &str, rule: &Rule) {
        tracing::warn!(%rule, %error, "{doing} nodelocaldns rule failed");
        self.errors.record(error.error_type());
    }
}

fn count_copies(rule: &Rule, lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|line| rule.matches_listing(line))
        .count()
}

#[cfg(test)]
mod tests;
