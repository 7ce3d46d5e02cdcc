//! `names`: writes a query file (dnsperf's format) of N distinct names under one zone,
//! `n0.ZONE TYPE` to `n{N-1}.ZONE TYPE`, one per line, to standard output. Line k is rank k
//! for `load --zipf`: `n0` is the most popular name.

use std::io::{BufWriter, ErrorKind, Write as _};

use anyhow::Context as _;

use crate::load::{QueryOptions, build_query, qtype_code};

/// Arguments of `names`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many names.
    #[arg(value_name = "N")]
    pub count: u64,
    /// The zone the names are under (`n0.ZONE`, `n1.ZONE`, ...); `.` for the root.
    #[arg(long)]
    pub zone: String,
    /// Query type written after each name.
    #[arg(long = "type", default_value = "A")]
    pub qtype: String,
}

/// The zone as a suffix (`.zipf.test`, or empty for the root), checked so that the longest
/// name of `count` still encodes.
fn suffix(zone: &str, qtype: &str, count: u64) -> anyhow::Result<String> {
    qtype_code(qtype).with_context(|| format!("unknown query type {qtype:?}"))?;
    let zone = zone.strip_suffix('.').unwrap_or(zone);
    let suffix = if zone.is_empty() {
        String::new()
    } else {
        format!(".{zone}")
    };
    let longest = format!("n{}{suffix}", count.saturating_sub(1));
    build_query(&longest, 1, QueryOptions::default())
        .map_err(|why| anyhow::anyhow!("--zone {zone:?}: {why}"))?;
    Ok(suffix)
}

/// Writes the names; a closed standard output (`| head`) ends quietly.
pub fn run(args: Args) -> anyhow::Result<()> {
    let suffix = suffix(&args.zone, &args.qtype, args.count)?;
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = (0..args.count)
        .try_for_each(|i| writeln!(out, "n{i}{suffix} {}", args.qtype))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing names to standard output"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_suffix_and_checks() {
        assert_eq!(suffix("zipf.test", "A", 10).unwrap(), ".zipf.test");
        assert_eq!(suffix("zipf.test.", "aaaa", 10).unwrap(), ".zipf.test");
        assert_eq!(suffix(".", "A", 10).unwrap(), "");
        assert!(suffix("zipf.test", "BOGUS", 10).is_err());
        assert!(suffix("a..b", "A", 10).is_err());
        let long = vec!["x".repeat(60); 5].join(".");
        assert!(suffix(&long, "A", 1).is_err(), "over 255 bytes");
    }
}
