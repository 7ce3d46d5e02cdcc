//! The `forward` directive, with CoreDNS's options and defaults:
//!
//! ```text
//! forward FROM TO... {
//!     except IGNORED_NAMES...
//!     force_tcp
//!     prefer_udp
//!     expire DURATION
//!     max_fails INTEGER
//!     tls CERT KEY CA
//!     tls_servername NAME
//!     policy random|round_robin|sequential
//!     health_check DURATION [no_rec] [domain FQDN]
//!     max_concurrent MAX
//!     next RCODE...
//!     failfast_all_unhealthy_upstreams
//! }
//! ```
//!
//! TO is `IP[:PORT]`, `[IPV6][:PORT]`, `dns://...` or the path of a resolv.conf file (read
//! once, here); upstreams are kept in order without duplicates, at most 15 of them. `tls://`
//! upstreams and the `tls` and `tls_servername` options are refused as not supported yet.
//!
//! Values are checked as CoreDNS's `setup.go` checks them: durations are Go durations and may
//! not be negative (0 is accepted), `max_fails` 0 means an upstream is never marked down,
//! `max_concurrent` 0 means no limit, RCODE names are case-insensitive. `force_tcp` together
//! with `prefer_udp` is accepted and `force_tcp` wins (CoreDNS documents the same precedence):
//! `prefer_udp` is then stored as false. Unlike CoreDNS, an option that can only hold one
//! value (all but `except` and `next`, whose repeated lines add up) may not be given twice.

use std::net::SocketAddr;

use shardns_shard::config::{ForwardConfig, Policy};
use shardns_wire::Rcode;

use super::number;
use super::options::{Failure, OptionBlock, duration_arg, fail};
use crate::corefile::ConfigError;
use crate::corefile::address::{self, UpstreamTarget, Zone};
use crate::corefile::parser::Directive;
use crate::corefile::resolv;
use crate::corefile::tokenizer::Token;

/// Most upstreams one `forward` may name (CoreDNS's limit).
pub(super) const MAX_UPSTREAMS: usize = 15;

/// The options a `forward` block may hold.
const OPTIONS: &[&str] = &[
    "except",
    "force_tcp",
    "prefer_udp",
    "expire",
    "max_fails",
    "policy",
    "health_check",
    "max_concurrent",
    "next",
    "failfast_all_unhealthy_upstreams",
];

/// `forward` options of CoreDNS this build does not implement yet.
const NOT_YET: &[&str] = &[
    "tls",
    "tls_servername",
    // Newer CoreDNS releases.
    "failover",
    "max_connect_attempts",
    "max_idle_conns",
];

/// The largest `max_concurrent` (Go's `strconv.Atoi` limit on 64-bit).
const MAX_CONCURRENT: u64 = i64::MAX as u64;

/// A `forward` directive with its targets resolved to addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardSettings {
    /// The `FROM` zone.
    pub from: Zone,
    /// Upstreams in order, without duplicates (resolv.conf files expanded).
    pub to: Vec<SocketAddr>,
    /// Every option, with `from` set to the FROM zone and `upstreams` empty (upstream indices
    /// are assigned where the whole configuration is built, [`crate::corefile::build`]).
    pub options: ForwardConfig,
}

/// Reads a `forward` directive.
pub(super) fn parse(file: &str, directive: &Directive) -> Result<ForwardSettings, ConfigError> {
    let at = |line: usize, message: String| ConfigError::at(file, line, message);
    let line = directive.line;
    let [from, targets @ ..] = directive.args.as_slice() else {
        return Err(at(
            line,
            "forward needs FROM and at least one TO".to_string(),
        ));
    };
    if targets.is_empty() {
        return Err(at(
            line,
            "forward needs FROM and at least one TO".to_string(),
        ));
    }
    let from_text = from.text.strip_prefix("dns://").unwrap_or(&from.text);
    let from_zone = address::parse_zone(from_text).map_err(|m| at(from.line, m))?;
    let to = upstreams(targets).map_err(|(line, m)| at(line, m))?;
    if to.len() > MAX_UPSTREAMS {
        return Err(at(
            line,
            format!(
                "forward allows at most {MAX_UPSTREAMS} upstreams, got {}",
                to.len()
            ),
        ));
    }
    let mut options = ForwardConfig {
        from: from_zone.wire.clone(),
        ..ForwardConfig::default()
    };
    let mut block = OptionBlock::new("forward", &["except", "next"]);
    for option in directive.block.iter().flatten() {
        let name = option.name.as_str();
        let line = option.line;
        if NOT_YET.contains(&name) {
            return Err(at(
                line,
                format!("forward option {name:?} is not supported yet"),
            ));
        }
        if !OPTIONS.contains(&name) {
            return Err(at(line, unknown(name)));
        }
        block.admit(option).map_err(|(line, m)| at(line, m))?;
        let arity = |min: usize, max: usize, syntax: &str| {
            block
                .arity(option, min, max, syntax)
                .map_err(|(line, m)| at(line, m))
        };
        let args = option.args.as_slice();
        let result = match name {
            "except" => {
                arity(1, usize::MAX, "one or more zones")?;
                except(&mut options.except, args)
            }
            "force_tcp" => {
                arity(0, 0, "no arguments")?;
                options.force_tcp = true;
                Ok(())
            }
            "prefer_udp" => {
                arity(0, 0, "no arguments")?;
                options.prefer_udp = true;
                Ok(())
            }
            "expire" => {
                arity(1, 1, "one DURATION, e.g. 10s")?;
                duration_arg(&args[0], "expire duration", "a duration such as 10s or 1m")
                    .map(|expire| options.expire = expire)
            }
            "max_fails" => {
                arity(1, 1, "one INTEGER (0 to 4294967295)")?;
                number(&args[0], "max_fails", 0, u64::from(u32::MAX))
                    .map(|fails| options.max_fails = fails as u32)
                    .map_err(|m| fail(&args[0], m))
            }
            "policy" => {
                arity(1, 1, "random, round_robin or sequential")?;
                policy(&args[0]).map(|policy| options.policy = policy)
            }
            "health_check" => {
                arity(1, usize::MAX, "DURATION [no_rec] [domain FQDN]")?;
                health_check(&mut options, args)
            }
            "max_concurrent" => {
                arity(1, 1, "one MAX (0 for no limit)")?;
                max_concurrent(&args[0]).map(|max| options.max_concurrent = max)
            }
            "next" => {
                arity(1, usize::MAX, "one or more RCODEs, e.g. NXDOMAIN SERVFAIL")?;
                next(&mut options.next, args)
            }
            "failfast_all_unhealthy_upstreams" => {
                arity(0, 0, "no arguments")?;
                options.failfast = true;
                Ok(())
            }
            // Every name of OPTIONS is handled above.
            _ => Err((line, unknown(name))),
        };
        result.map_err(|(line, m)| at(line, m))?;
    }
    // CoreDNS: "if both force_tcp and prefer_udp are specified, force_tcp takes precedence".
    options.prefer_udp &= !options.force_tcp;
    Ok(ForwardSettings {
        from: from_zone,
        to,
        options,
    })
}

/// The message for an option `forward` does not know.
fn unknown(name: &str) -> String {
    let (last, others) = OPTIONS.split_last().unwrap_or((&"", &[]));
    format!(
        "unknown forward option {name:?} (expected {} or {last})",
        others.join(", ")
    )
}

/// The TO arguments as addresses, in order, without duplicates; resolv.conf files are read.
fn upstreams(targets: &[Token]) -> Result<Vec<SocketAddr>, Failure> {
    let mut to = Vec::new();
    for token in targets {
        let addresses = match address::parse_upstream(&token.text).map_err(|m| fail(token, m))? {
            UpstreamTarget::Addr(addr) => vec![addr],
            UpstreamTarget::ResolvConf(path) => {
                resolv::read_nameservers(&path).map_err(|e| fail(token, e.to_string()))?
            }
        };
        for addr in addresses {
            if !to.contains(&addr) {
                to.push(addr);
            }
        }
    }
    Ok(to)
}

/// `except ZONES...`: added to `except`, without duplicates.
fn except(except: &mut Vec<Vec<u8>>, args: &[Token]) -> Result<(), Failure> {
    for token in args {
        let zone = address::parse_zone(&token.text).map_err(|m| fail(token, m))?;
        if !except.contains(&zone.wire) {
            except.push(zone.wire);
        }
    }
    Ok(())
}

/// `policy random|round_robin|sequential` (case-sensitive, as CoreDNS).
fn policy(token: &Token) -> Result<Policy, Failure> {
    match token.text.as_str() {
        "random" => Ok(Policy::Random),
        "round_robin" => Ok(Policy::RoundRobin),
        "sequential" => Ok(Policy::Sequential),
        other => Err(fail(
            token,
            format!("bad forward policy {other:?} (expected random, round_robin or sequential)"),
        )),
    }
}

/// `health_check DURATION [no_rec] [domain FQDN]` (at least one argument).
fn health_check(options: &mut ForwardConfig, args: &[Token]) -> Result<(), Failure> {
    options.health_check = duration_arg(
        &args[0],
        "health_check duration",
        "a duration such as 500ms or 5s",
    )?;
    let mut no_rec = false;
    let mut domain: Option<Vec<u8>> = None;
    let mut rest = args[1..].iter();
    while let Some(token) = rest.next() {
        match token.text.as_str() {
            "no_rec" if !no_rec => no_rec = true,
            "domain" if domain.is_none() => {
                let Some(name) = rest.next() else {
                    return Err(fail(
                        token,
                        "health_check option \"domain\" needs an FQDN".to_string(),
                    ));
                };
                let zone = address::parse_zone(&name.text).map_err(|m| {
                    let prefix = format!("zone {:?}: ", name.text);
                    let why = m.strip_prefix(&prefix).unwrap_or(&m);
                    fail(
                        name,
                        format!("bad health_check domain {:?}: {why}", name.text),
                    )
                })?;
                domain = Some(zone.wire);
            }
            "no_rec" | "domain" => {
                return Err(fail(
                    token,
                    format!("health_check option {:?} appears twice", token.text),
                ));
            }
            other => {
                return Err(fail(
                    token,
                    format!("bad health_check option {other:?} (expected no_rec or domain FQDN)"),
                ));
            }
        }
    }
    options.health_no_rec = no_rec;
    if let Some(domain) = domain {
        options.health_domain = domain;
    }
    Ok(())
}

/// `max_concurrent MAX`: 0 is no limit (as CoreDNS).
fn max_concurrent(token: &Token) -> Result<Option<usize>, Failure> {
    let max = number(token, "max_concurrent", 0, MAX_CONCURRENT).map_err(|_| {
        fail(
            token,
            format!(
                "bad max_concurrent {:?} (expected a whole number from 0 to {MAX_CONCURRENT}; \
                 0 is no limit)",
                token.text
            ),
        )
    })?;
    Ok((max > 0).then(|| usize::try_from(max).unwrap_or(usize::MAX)))
}

/// `next RCODE...`: added to `next`, without duplicates.
fn next(next: &mut Vec<Rcode>, args: &[Token]) -> Result<(), Failure> {
    for token in args {
        // The names CoreDNS reads (miekg/dns `StringToRcode`), in any case.
        let Some(rcode) = Rcode::from_name(&token.text.to_ascii_uppercase()) else {
            let names: Vec<&str> = Rcode::PARSE_NAMES
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| *name != "NOTIMPL")
                .collect();
            return Err(fail(
                token,
                format!(
                    "bad next rcode {:?} (expected an RCODE name: {})",
                    token.text,
                    names.join(", ")
                ),
            ));
        };
        if !next.contains(&rcode) {
            next.push(rcode);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
