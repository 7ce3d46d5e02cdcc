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
mod tests {
    use super::*;
    use crate::corefile::parser;

    fn settings(body: &str) -> Result<CacheSettings, String> {
        let blocks = parser::parse("Corefile", &format!(".:53 {{\n{body}\n}}"))
            .map_err(|e| e.to_string())?;
        parse("Corefile", &blocks[0].directives[0]).map_err(|e| e.to_string())
    }

    /// The options of `cache {\n OPTION\n}`.
    fn with(option: &str) -> CacheConfig {
        settings(&format!("cache {{\n {option}\n}}"))
            .unwrap()
            .options
    }

    fn error(body: &str) -> String {
        settings(body).unwrap_err()
    }

    /// The error of `cache {\n OPTION\n}` (so at line 3).
    fn option_error(option: &str) -> String {
        error(&format!("cache {{\n {option}\n}}"))
    }

    fn zone(text: &str) -> Zone {
        address::parse_zone(text).unwrap()
    }

    fn defaults() -> CacheConfig {
        CacheConfig {
            zones: Vec::new(),
            ..CacheConfig::with_ttl(None)
        }
    }

    #[test]
    fn defaults_and_ttl() {
        let got = settings("cache").unwrap();
        assert_eq!(got.options, defaults());
        assert_eq!(got.options.servfail_ttl, 5);
        assert_eq!(got.options.success.capacity, 9984);
        assert_eq!(got.options.denial.max_ttl, 1800);
        assert!(got.options.prefetch.is_none() && got.options.serve_stale.is_none());
        assert!(!got.options.keepttl);
        assert!(got.zones.is_empty() && got.disable_success.is_empty());
        assert!(got.disable_denial.is_empty());
        let got = settings("cache 30").unwrap().options;
        assert_eq!((got.success.max_ttl, got.denial.max_ttl), (30, 30));
    }

    #[test]
    fn zones_are_kept_in_order_without_duplicates() {
        let got = settings("cache 30 Cluster.Local. in-addr.arpa cluster.local .").unwrap();
        assert_eq!(
            got.zones,
            [zone("cluster.local"), zone("in-addr.arpa"), zone(".")]
        );
        assert_eq!(got.zones[0].wire, b"\x07cluster\x05local\x00");
        assert_eq!(got.options.success.max_ttl, 30);
        // Without a TTL the first argument is a zone.
        let got = settings("cache example.org").unwrap();
        assert_eq!(got.zones, [zone("example.org")]);
        assert_eq!(got.options, defaults());
        assert!(error("cache 30 a..b").starts_with("Corefile:2: zone \"a..b\""));
        assert!(error("cache 30 10.0.0.0/8").contains("CIDR zones are not supported yet"));
    }

    #[test]
    fn prefetch_forms() {
        let prefetch = |amount, window, percentage| {
            Some(Prefetch {
                amount,
                window: Duration::from_secs(window),
                percentage,
            })
        };
        assert_eq!(with("prefetch 10").prefetch, prefetch(10, 60, 10));
        assert_eq!(with("prefetch 1 30s").prefetch, prefetch(1, 30, 10));
        assert_eq!(with("prefetch 2 1h30m 90%").prefetch, prefetch(2, 5400, 90));
        assert_eq!(with("prefetch 3 0 10%").prefetch, prefetch(3, 0, 10));
        assert_eq!(
            with("prefetch 5 500ms 50%").prefetch.unwrap().window,
            Duration::from_millis(500)
        );
        assert_eq!(with("prefetch 0").prefetch, None);
        assert_eq!(with("prefetch 0 1m 20%").prefetch, None);
        assert_eq!(
            with("prefetch 4294967295").prefetch.unwrap().amount,
            u32::MAX
        );
    }

    #[test]
    fn bad_prefetch() {
        assert_eq!(
            option_error("prefetch"),
            "Corefile:3: cache option \"prefetch\" takes AMOUNT [DURATION [PERCENTAGE%]]"
        );
        assert!(option_error("prefetch 1 1m 10% x").contains("takes AMOUNT"));
        assert_eq!(
            option_error("prefetch -1"),
            "Corefile:3: bad prefetch amount \"-1\" (expected a whole number from 0 to \
             4294967295)"
        );
        assert!(option_error("prefetch x").starts_with("Corefile:3: bad prefetch amount \"x\""));
        assert!(
            option_error("prefetch 4294967296")
                .starts_with("Corefile:3: bad prefetch amount \"4294967296\"")
        );
        assert_eq!(
            option_error("prefetch 1 10"),
            "Corefile:3: bad prefetch duration \"10\": a unit (ns, us, ms, s, m or h) is \
             missing (expected a duration such as 1m or 30s)"
        );
        assert!(
            option_error("prefetch 1 -1m")
                .starts_with("Corefile:3: bad prefetch duration \"-1m\": negative")
        );
        assert_eq!(
            option_error("prefetch 1 20%"),
            "Corefile:3: bad prefetch duration \"20%\" (expected DURATION before \
             PERCENTAGE%, e.g. prefetch 1 1m 20%)"
        );
        let percentage = |text: &str| {
            format!(
                "Corefile:3: bad prefetch percentage \"{text}\" (expected a whole number from \
                 10 to 90 followed by %, e.g. 10%)"
            )
        };
        for text in [
            "9%", "91%", "0%", "-10%", "50", "%", "", "x%", "50%%", "1000%",
        ] {
            assert_eq!(
                option_error(&format!("prefetch 1 1m \"{text}\"")),
                percentage(text),
                "{text:?}"
            );
        }
        assert_eq!(with("prefetch 1 1m 10%").prefetch.unwrap().percentage, 10);
    }

    #[test]
    fn serve_stale_forms() {
        let stale = |seconds, verify| {
            Some(ServeStale {
                max_stale: Duration::from_secs(seconds),
                verify,
            })
        };
        assert_eq!(with("serve_stale").serve_stale, stale(3600, false));
        assert_eq!(with("serve_stale 30m").serve_stale, stale(1800, false));
        assert_eq!(
            with("serve_stale 1h immediate").serve_stale,
            stale(3600, false)
        );
        assert_eq!(with("serve_stale 2h verify").serve_stale, stale(7200, true));
        assert_eq!(with("serve_stale 10s VERIFY").serve_stale, stale(10, true));
        assert_eq!(with("serve_stale 0").serve_stale, None);
        assert_eq!(with("serve_stale 0s verify").serve_stale, None);
    }

    #[test]
    fn bad_serve_stale() {
        assert_eq!(
            option_error("serve_stale 1h verify x"),
            "Corefile:3: cache option \"serve_stale\" takes [DURATION [immediate|verify]]"
        );
        assert_eq!(
            option_error("serve_stale 1h lazy"),
            "Corefile:3: bad serve_stale mode \"lazy\" (expected immediate or verify)"
        );
        assert_eq!(
            option_error("serve_stale -1h"),
            "Corefile:3: bad serve_stale duration \"-1h\": negative durations are not allowed \
             (expected 0 to turn it off, or a duration such as 1h or 30m)"
        );
        assert!(
            option_error("serve_stale verify")
                .starts_with("Corefile:3: bad serve_stale duration \"verify\": not a duration")
        );
        assert!(
            option_error("serve_stale 1x")
                .starts_with("Corefile:3: bad serve_stale duration \"1x\": unknown unit \"x\"")
        );
    }

    #[test]
    fn servfail_forms() {
        assert_eq!(with("servfail 0").servfail_ttl, 0);
        assert_eq!(with("servfail 0s").servfail_ttl, 0);
        assert_eq!(with("servfail 10s").servfail_ttl, 10);
        assert_eq!(with("servfail 1m30s").servfail_ttl, 90);
        assert_eq!(with("servfail 5m").servfail_ttl, 300);
        assert_eq!(with("servfail 300s").servfail_ttl, 300);
        // Rounded up to whole seconds.
        assert_eq!(with("servfail 500ms").servfail_ttl, 1);
        assert_eq!(with("servfail 1ns").servfail_ttl, 1);
        assert_eq!(with("servfail 1500ms").servfail_ttl, 2);
        assert_eq!(with("servfail 4m59.5s").servfail_ttl, 300);
    }

    #[test]
    fn bad_servfail() {
        assert_eq!(
            option_error("servfail"),
            "Corefile:3: cache option \"servfail\" takes one DURATION (0 to 5m)"
        );
        assert!(option_error("servfail 1s 2s").contains("takes one DURATION"));
        assert_eq!(
            option_error("servfail 5m1s"),
            "Corefile:3: bad servfail duration \"5m1s\": caching SERVFAIL responses over 5 \
             minutes is not permitted (expected 0 to turn it off, or a duration up to 5m such \
             as 5s or 1m30s)"
        );
        assert!(option_error("servfail 300.001s").contains("over 5 minutes"));
        assert!(option_error("servfail 1h").contains("over 5 minutes"));
        assert!(
            option_error("servfail 5")
                .starts_with("Corefile:3: bad servfail duration \"5\": a unit")
        );
        assert!(
            option_error("servfail -5s")
                .starts_with("Corefile:3: bad servfail duration \"-5s\": negative")
        );
        assert!(option_error("servfail abc").contains("\"abc\": not a duration"));
    }

    #[test]
    fn disable_forms() {
        let got = settings(
            "cache {\n disable success\n disable denial svc.cluster.local Example.org\n \
             disable denial example.org. in-addr.arpa\n}",
        )
        .unwrap();
        assert_eq!(got.disable_success, [zone(".")]);
        assert_eq!(
            got.disable_denial,
            [
                zone("svc.cluster.local"),
                zone("example.org"),
                zone("in-addr.arpa")
            ]
        );
        assert_eq!(got.options, defaults());
        let got = settings("cache {\n disable success a.example\n disable success\n}").unwrap();
        assert_eq!(got.disable_success, [zone("a.example"), zone(".")]);
        assert!(got.disable_denial.is_empty());
    }

    #[test]
    fn bad_disable() {
        assert_eq!(
            option_error("disable"),
            "Corefile:3: cache option \"disable\" takes success or denial, then optional ZONES"
        );
        assert_eq!(
            option_error("disable positive"),
            "Corefile:3: bad disable type \"positive\" (expected success or denial)"
        );
        assert!(option_error("disable Success").contains("bad disable type \"Success\""));
        assert!(
            option_error("disable denial a..b").starts_with("Corefile:3: zone \"a..b\": labels")
        );
    }

    #[test]
    fn keepttl() {
        assert!(with("keepttl").keepttl);
        assert_eq!(
            option_error("keepttl 1"),
            "Corefile:3: cache option \"keepttl\" takes no arguments"
        );
    }

    #[test]
    fn sections() {
        let got = with("success 10 20 0");
        assert_eq!(
            got.success,
            CacheSection {
                capacity: 10,
                max_ttl: 20,
                min_ttl: 0
            }
        );
        let got = with("denial 100 3");
        assert_eq!(
            got.denial,
            CacheSection {
                capacity: 100,
                max_ttl: 3,
                min_ttl: 3
            }
        );
        assert_eq!(
            option_error("success"),
            "Corefile:3: cache option \"success\" takes CAPACITY [TTL] [MINTTL]"
        );
        assert!(option_error("denial 1 2 3 4").contains("takes CAPACITY [TTL] [MINTTL]"));
        assert!(option_error("denial 10 20 -1").contains("bad cache minimum TTL \"-1\""));
    }

    #[test]
    fn everything_together() {
        let got = settings(
            "cache 60 cluster.local {\n success 5000 120 10\n denial 2000 30\n prefetch 3 2m \
             25%\n serve_stale 30m verify\n servfail 10s\n disable denial svc.cluster.local\n \
             keepttl\n}",
        )
        .unwrap();
        let expected = CacheConfig {
            zones: Vec::new(),
            success: CacheSection {
                capacity: 5000,
                max_ttl: 120,
                min_ttl: 10,
            },
            denial: CacheSection {
                capacity: 2000,
                max_ttl: 30,
                min_ttl: 5,
            },
            prefetch: Some(Prefetch {
                amount: 3,
                window: Duration::from_secs(120),
                percentage: 25,
            }),
            serve_stale: Some(ServeStale {
                max_stale: Duration::from_secs(1800),
                verify: true,
            }),
            servfail_ttl: 10,
            disable_success: Vec::new(),
            disable_denial: Vec::new(),
            keepttl: true,
        };
        assert_eq!(got.options, expected);
        assert_eq!(got.zones, [zone("cluster.local")]);
        assert_eq!(got.disable_denial, [zone("svc.cluster.local")]);
    }

    #[test]
    fn repeated_options() {
        for option in [
            "success 10",
            "denial 10",
            "prefetch 1",
            "prefetch 0",
            "serve_stale",
            "servfail 1s",
            "keepttl",
        ] {
            let name = option.split(' ').next().unwrap();
            assert_eq!(
                error(&format!("cache {{\n {option}\n\n {option}\n}}")),
                format!("Corefile:5: cache option \"{name}\" appears twice (first at line 3)"),
            );
        }
        // success and denial are different options.
        assert!(settings("cache {\n success 10\n denial 10\n}").is_ok());
    }

    #[test]
    fn other_errors() {
        assert_eq!(
            option_error("bogus"),
            "Corefile:3: unknown cache option \"bogus\" (expected success, denial, prefetch, \
             serve_stale, servfail, disable or keepttl)"
        );
        assert_eq!(
            error("cache {\n keepttl {\n }\n}"),
            "Corefile:3: cache option \"keepttl\" takes no options block"
        );
        assert_eq!(
            error("cache 0"),
            "Corefile:2: bad cache TTL \"0\" (expected a whole number from 1 to 2147483647)"
        );
    }
}
