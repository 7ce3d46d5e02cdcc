//! The `ratelimit` directive (shardns's own; CoreDNS has none in its core plugins, its
//! external `ratelimit` plugin reads `ratelimit LIMIT { whitelist IPs... }`, a subset of this):
//!
//! ```text
//! ratelimit [QPS] {
//!     burst N
//!     whitelist SOURCE...
//!     action refuse|truncate|drop
//!     ipv4_prefix LENGTH
//!     ipv6_prefix LENGTH
//!     table ENTRIES
//! }
//! ```
//!
//! QPS (default 100) is how many queries a second one client may send, `burst` (default QPS)
//! how many at once. A client is an address (`ipv4_prefix` 32, `ipv6_prefix` 128 by default:
//! a node's pods share its pod CIDR, a /24 by default, so a shorter prefix would put them all
//! in one bucket). `whitelist` lines add up. `table` is the number of buckets each shard
//! keeps (default 4096): it bounds the memory whatever the number of clients.

use shardns_shard::config::{RateLimitAction, RateLimitConfig};

use super::number;
use super::options::{Failure, OptionBlock, fail};
use crate::corefile::address::{self, CIDR_EXPECTED};
use crate::corefile::parser::Directive;

/// QPS without an argument.
const DEFAULT_QPS: u32 = 100;

/// Largest QPS and burst.
const MAX_RATE: u64 = 1_000_000;

/// Smallest and largest `table`.
const TABLE: (u64, u64) = (4, 1 << 20);

/// The options a `ratelimit` block may hold.
const OPTIONS: &str = "burst, whitelist, action, ipv4_prefix, ipv6_prefix or table";

/// `ratelimit [QPS] { ... }`.
pub(super) fn parse(directive: &Directive) -> Result<RateLimitConfig, Failure> {
    let qps = match directive.args.as_slice() {
        [] => DEFAULT_QPS,
        [qps] => number(qps, "ratelimit QPS", 1, MAX_RATE).map_err(|m| fail(qps, m))? as u32,
        [_, extra, ..] => {
            return Err(fail(
                extra,
                format!(
                    "ratelimit takes one QPS, got another argument {:?}",
                    extra.text
                ),
            ));
        }
    };
    let mut config = RateLimitConfig::with_qps(qps);
    let mut block = OptionBlock::new("ratelimit", &["whitelist"]);
    for option in directive.block.iter().flatten() {
        block.admit(option)?;
        let args = option.args.as_slice();
        let one = |syntax: &str| block.arity(option, 1, 1, syntax).map(|()| &args[0]);
        match option.name.as_str() {
            "burst" => {
                let value = one("one N, the queries a client may send at once")?;
                config.burst = number(value, "ratelimit burst", 1, MAX_RATE)
                    .map_err(|m| fail(value, m))? as u32;
            }
            "whitelist" => {
                block.arity(option, 1, usize::MAX, "one or more SOURCEs")?;
                for value in args {
                    let net = address::parse_cidr(&value.text).map_err(|message| {
                        fail(
                            value,
                            format!("bad ratelimit whitelist entry: {message} (expected {CIDR_EXPECTED})"),
                        )
                    })?;
                    if !config.whitelist.contains(&net) {
                        config.whitelist.push(net);
                    }
                }
            }
            "action" => {
                let value = one("refuse, truncate or drop")?;
                config.action = match value.text.to_ascii_lowercase().as_str() {
                    "refuse" => RateLimitAction::Refuse,
                    "truncate" => RateLimitAction::Truncate,
                    "drop" => RateLimitAction::Drop,
                    _ => {
                        return Err(fail(
                            value,
                            format!(
                                "bad ratelimit action {:?} (expected refuse, truncate or drop)",
                                value.text
                            ),
                        ));
                    }
                };
            }
            "ipv4_prefix" => {
                let value = one("one LENGTH from 1 to 32")?;
                config.ipv4_prefix =
                    number(value, "ipv4_prefix", 1, 32).map_err(|m| fail(value, m))? as u8;
            }
            "ipv6_prefix" => {
                let value = one("one LENGTH from 1 to 128")?;
                config.ipv6_prefix =
                    number(value, "ipv6_prefix", 1, 128).map_err(|m| fail(value, m))? as u8;
            }
            "table" => {
                let value = one("one ENTRIES, the buckets each shard keeps")?;
                config.table = number(value, "ratelimit table", TABLE.0, TABLE.1)
                    .map_err(|m| fail(value, m))? as usize;
            }
            name => {
                return Err((
                    option.line,
                    format!("unknown ratelimit option {name:?} (expected {OPTIONS})"),
                ));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests;
