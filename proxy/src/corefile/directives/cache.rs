//! The `cache` directive, with CoreDNS's options and defaults:
//!
//! ```text
//! cache [TTL] [ZONES...] {
//!     success CAPACITY [TTL] [MINTTL]
//!     denial CAPACITY [TTL] [MINTTL]
//!     prefetch AMOUNT [[DURATION] [PERCENTAGE%]]
//!     serve_stale [DURATION] [immediate|verify]
//!     servfail DURATION
//!     disable success|denial [ZONES...]
//!     keepttl
//! }
//! ```
//!
//! Zones are kept as written: which of them apply to a server block zone is decided where the
//! per-zone server is built ([`crate::corefile::build`]). Unlike CoreDNS, an option that can
//! only hold one value (all but `disable`) may not be given twice, and repeated `disable` lines
//! add up (CoreDNS keeps the last one of each kind).

use std::time::Duration;

use shardns_shard::config::{CacheConfig, CacheSection, Prefetch, ServeStale};

use super::options::{Failure, OptionBlock, duration_arg, fail};
use super::{MAX_CAPACITY, MAX_TTL, number};
use crate::corefile::ConfigError;
use crate::corefile::address::{self, Zone};
use crate::corefile::parser::Directive;
use crate::corefile::tokenizer::Token;

/// The longest a SERVFAIL may be cached (RFC 2308 section 7.1; CoreDNS refuses more).
const MAX_SERVFAIL: Duration = Duration::from_secs(5 * 60);

/// `prefetch` defaults: hits counted over one minute, refresh in the last 10 % of the TTL.
const PREFETCH_WINDOW: Duration = Duration::from_secs(60);
const PREFETCH_PERCENTAGE: u8 = 10;

/// `serve_stale` default: serve up to one hour after expiry.
const SERVE_STALE_FOR: Duration = Duration::from_secs(3600);

/// The options a `cache` block may hold.
const OPTIONS: &str = "success, denial, prefetch, serve_stale, servfail, disable or keepttl";

/// A `cache` directive before it is applied to the zones of its server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    /// Every option; its zone lists (`zones`, `disable_success`, `disable_denial`) are empty,
    /// since they depend on the server block zone.
    pub options: CacheConfig,
    /// The ZONES arguments in order, without duplicates; empty: each server block zone whole.
    pub zones: Vec<Zone>,
    /// The zones of `disable success` lines, without duplicates; one without ZONES adds the
    /// root (everything the cache covers).
    pub disable_success: Vec<Zone>,
    /// The zones of `disable denial` lines, as for `disable_success`.
    pub disable_denial: Vec<Zone>,
}

/// Reads a `cache` directive.
pub(super) fn parse(file: &str, directive: &Directive) -> Result<CacheSettings, ConfigError> {
    let at = |line: usize, message: String| ConfigError::at(file, line, message);
    let mut args = directive.args.as_slice();
    let mut ttl = None;
    if let Some(first) = args.first() {
        let text = first.text.trim_start_matches(['-', '+']);
        if text.starts_with(|c: char| c.is_ascii_digit()) && !text.contains('.') {
            let value = number(first, "cache TTL", 1, MAX_TTL).map_err(|m| at(first.line, m))?;
            ttl = Some(value as u32);
            args = &args[1..];
        }
    }
    let mut settings = CacheSettings {
        options: CacheConfig {
            zones: Vec::new(),
            ..CacheConfig::with_ttl(ttl)
        },
        zones: zones(args).map_err(|(line, m)| at(line, m))?,
        disable_success: Vec::new(),
        disable_denial: Vec::new(),
    };
    let mut block = OptionBlock::new("cache", &["disable"]);
    for option in directive.block.iter().flatten() {
        let name = option.name.as_str();
        let line = option.line;
        block.admit(option).map_err(|(line, m)| at(line, m))?;
        let arity = |min: usize, max: usize, syntax: &str| {
            block
                .arity(option, min, max, syntax)
                .map_err(|(line, m)| at(line, m))
        };
        let result = match name {
            "success" | "denial" => {
                arity(1, 3, "CAPACITY [TTL] [MINTTL]")?;
                let section = if name == "success" {
                    &mut settings.options.success
                } else {
                    &mut settings.options.denial
                };
                section_values(section, &option.args)
            }
            "prefetch" => {
                arity(1, 3, "AMOUNT [DURATION [PERCENTAGE%]]")?;
                prefetch(&option.args).map(|prefetch| settings.options.prefetch = prefetch)
            }
            "serve_stale" => {
                arity(0, 2, "[DURATION [immediate|verify]]")?;
                serve_stale(&option.args).map(|stale| settings.options.serve_stale = stale)
            }
            "servfail" => {
                arity(1, 1, "one DURATION (0 to 5m)")?;
                servfail_ttl(&option.args[0]).map(|ttl| settings.options.servfail_ttl = ttl)
            }
            "disable" => {
                arity(1, usize::MAX, "success or denial, then optional ZONES")?;
                disable(&mut settings, &option.args)
            }
            "keepttl" => {
                arity(0, 0, "no arguments")?;
                settings.options.keepttl = true;
                Ok(())
            }
            _ => {
                return Err(at(
                    line,
                    format!("unknown cache option {name:?} (expected {OPTIONS})"),
                ));
            }
        };
        result.map_err(|(line, m)| at(line, m))?;
    }
    for section in [&mut settings.options.success, &mut settings.options.denial] {
        // CoreDNS clamps with the maximum last, so a minimum above it yields the maximum.
        section.min_ttl = section.min_ttl.min(section.max_ttl);
    }
    Ok(settings)
}

/// Zone arguments, without duplicates.
fn zones(args: &[Token]) -> Result<Vec<Zone>, Failure> {
    let mut zones: Vec<Zone> = Vec::new();
    for token in args {
        let zone = address::parse_zone(&token.text).map_err(|m| fail(token, m))?;
        if !zones.contains(&zone) {
            zones.push(zone);
        }
    }
    Ok(zones)
}

/// `success|denial CAPACITY [TTL] [MINTTL]` (1 to 3 arguments).
fn section_values(section: &mut CacheSection, args: &[Token]) -> Result<(), Failure> {
    let value = |index: usize, what: &str, min: u64, max: u64| {
        number(&args[index], what, min, max).map_err(|m| fail(&args[index], m))
    };
    section.capacity = value(0, "cache capacity", 1, MAX_CAPACITY)? as usize;
    if args.len() > 1 {
        section.max_ttl = value(1, "cache TTL", 1, MAX_TTL)? as u32;
    }
    if args.len() > 2 {
        section.min_ttl = value(2, "cache minimum TTL", 0, MAX_TTL)? as u32;
    }
    Ok(())
}

/// `prefetch AMOUNT [DURATION [PERCENTAGE%]]` (1 to 3 arguments); AMOUNT 0 turns it off.
fn prefetch(args: &[Token]) -> Result<Option<Prefetch>, Failure> {
    let amount = number(&args[0], "prefetch amount", 0, u64::from(u32::MAX))
        .map_err(|m| fail(&args[0], m))? as u32;
    let window = match args.get(1) {
        Some(token) if token.text.ends_with('%') => {
            return Err(fail(
                token,
                format!(
                    "bad prefetch duration {:?} (expected DURATION before PERCENTAGE%, e.g. \
                     prefetch {} 1m {})",
                    token.text, args[0].text, token.text
                ),
            ));
        }
        Some(token) => duration_arg(token, "prefetch duration", "a duration such as 1m or 30s")?,
        None => PREFETCH_WINDOW,
    };
    let percentage = match args.get(2) {
        Some(token) => {
            let bad = || {
                fail(
                    token,
                    format!(
                        "bad prefetch percentage {:?} (expected a whole number from 10 to 90 \
                         followed by %, e.g. 10%)",
                        token.text
                    ),
                )
            };
            let digits = token.text.strip_suffix('%').ok_or_else(bad)?;
            match digits.parse::<u8>() {
                Ok(value) if (10..=90).contains(&value) => value,
                _ => return Err(bad()),
            }
        }
        None => PREFETCH_PERCENTAGE,
    };
    Ok((amount > 0).then_some(Prefetch {
        amount,
        window,
        percentage,
    }))
}

/// `serve_stale [DURATION [immediate|verify]]` (0 to 2 arguments); DURATION 0 turns it off.
fn serve_stale(args: &[Token]) -> Result<Option<ServeStale>, Failure> {
    let max_stale = match args.first() {
        Some(token) => duration_arg(
            token,
            "serve_stale duration",
            "0 to turn it off, or a duration such as 1h or 30m",
        )?,
        None => SERVE_STALE_FOR,
    };
    let verify = match args.get(1) {
        None => false,
        Some(token) => match token.text.to_ascii_lowercase().as_str() {
            "immediate" => false,
            "verify" => true,
            _ => {
                return Err(fail(
                    token,
                    format!(
                        "bad serve_stale mode {:?} (expected immediate or verify)",
                        token.text
                    ),
                ));
            }
        },
    };
    Ok((!max_stale.is_zero()).then_some(ServeStale { max_stale, verify }))
}

/// `servfail DURATION`: 0 to 5 minutes, in whole seconds rounded up (500ms caches for 1 s).
fn servfail_ttl(token: &Token) -> Result<u32, Failure> {
    const EXPECTED: &str = "0 to turn it off, or a duration up to 5m such as 5s or 1m30s";
    let ttl = duration_arg(token, "servfail duration", EXPECTED)?;
    if ttl > MAX_SERVFAIL {
        return Err(fail(
            token,
            format!(
                "bad servfail duration {:?}: caching SERVFAIL responses over 5 minutes is not \
                 permitted (expected {EXPECTED})",
                token.text
            ),
        ));
    }
    // At most 300 after the check above.
    Ok((ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)) as u32)
}

/// `disable success|denial [ZONES...]` (1 or more arguments); no ZONES: the root.
fn disable(settings: &mut CacheSettings, args: &[Token]) -> Result<(), Failure> {
    let list = match args[0].text.as_str() {
        "success" => &mut settings.disable_success,
        "denial" => &mut settings.disable_denial,
        other => {
            return Err(fail(
                &args[0],
                format!("bad disable type {other:?} (expected success or denial)"),
            ));
        }
    };
    let zones = if args.len() > 1 {
        zones(&args[1..])?
    } else {
        vec![address::parse_zone(".").map_err(|m| fail(&args[0], m))?]
    };
    for zone in zones {
        if !list.contains(&zone) {
            list.push(zone);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
