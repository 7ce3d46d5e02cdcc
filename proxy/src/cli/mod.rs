//! Command-line arguments (and how their limits apply to the configuration) and logging
//! setup.
//!
//! shardns takes its own `--long` arguments and node-cache's flags in Go's syntax
//! (`-localip 169.254.20.10,10.96.0.10 -conf /etc/Corefile`), so that the stock
//! `nodelocaldns.yaml` runs it with node-cache's container arguments unchanged. [`Args`]
//! parses both: `go_syntax` rewrites node-cache's flags into `--name=VALUE` and clap reads
//! the result; `node_cache` holds those flags as typed values ([`NodeCacheArgs`]), `values`
//! their value syntaxes, `help` the help's section listing them with both spellings.

mod go_syntax;
mod help;
mod node_cache;
mod values;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Command, CommandFactory, FromArgMatches, Parser, ValueEnum};
use shardns_node::{IptablesMode, IptablesVariant};
use shardns_shard::config::Limits;
use shardns_shard::{Coalesce, IoMode};
use tracing_subscriber::EnvFilter;

pub use node_cache::NodeCacheArgs;
pub use values::{LocalIps, LocalIpsError};

/// shardns: a node-local DNS caching proxy for Kubernetes.
///
/// Parse it with [`Parser::parse`] (or `try_parse_from`): those read node-cache's flags in
/// Go's syntax first (see the `cli` module); building the command with
/// [`CommandFactory::command`] and reading its matches directly would not.
#[derive(Debug, clap::Args)]
#[command(about, long_about = None)]
pub struct Args {
    /// The Corefile (node-cache writes the one it generates here); without it, a cache on
    /// 127.0.0.1:5353 forwards to the resolv.conf nameservers
    ///
    /// `--conf` and node-cache's `-conf` (CoreDNS's flag: Go `string`, default empty) are one
    /// flag; as in Go, given twice it takes the last value.
    #[arg(long, value_name = "FILE", hide = true, overrides_with = "conf")]
    pub conf: Option<PathBuf>,

    /// Number of shards (threads, each with its own sockets and cache); default: one per
    /// CPU this process may run on.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: Option<u32>,

    /// I/O driver. The default is epoll: on the cache-hit benchmark it executes ~5 % fewer
    /// instructions per query than io_uring and matches it in queries per CPU-second
    /// (docs/BENCHMARKS.md); `auto` prefers io_uring where the kernel allows it.
    #[arg(long, value_enum, default_value_t = IoArg::Epoll)]
    pub io: IoArg,

    /// Who resolves a cache miss: `across` (default) hands it to the key's owner shard, so
    /// concurrent misses on all shards make one upstream query; `within` lets each shard
    /// resolve its own (one query per shard; for comparison).
    #[arg(long, value_enum, default_value_t = CoalesceArg::Across)]
    pub coalesce: CoalesceArg,

    /// Most queries in flight on one upstream TCP connection (more open another connection).
    /// CoreDNS answers a connection's queries one at a time, in order, so a few per
    /// connection avoids queueing behind a slow one: 2 keeps p99 at the one-query-per-
    /// connection level with half the connections (docs/BENCHMARKS.md, issue 5).
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub upstream_inflight: u32,

    /// Most TCP connections one shard opens to one upstream.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub upstream_conns: u32,

    /// How long one upstream attempt waits for its reply before the next upstream is tried
    /// (CoreDNS: 2s).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = positive_duration)]
    pub upstream_timeout: Duration,

    /// How long a forwarded query may take in all before its clients get SERVFAIL (CoreDNS:
    /// 5s).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = positive_duration)]
    pub query_timeout: Duration,

    /// More logging: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// The resolv.conf file the built-in Corefile forwards to.
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// Parse and build the configuration, print OK and exit.
    #[arg(long)]
    pub validate: bool,

    /// The Unix socket of upgrades without loss: a new shardns started with the same path
    /// takes this one's sockets and cache (default in node-local mode:
    /// /run/shardns/handoff.sock; otherwise none)
    #[arg(long, value_name = "PATH", conflicts_with = "no_handoff")]
    pub handoff_socket: Option<PathBuf>,

    /// Neither take over a running shardns nor offer to be taken over.
    #[arg(long)]
    pub no_handoff: bool,

    /// After handing the sockets to a successor, stay running (serving nothing) until SIGTERM
    /// instead of exiting 0: in a pod, an exited container is restarted by the kubelet, and
    /// the restarted one would take the sockets back from the new pod
    #[arg(long, conflicts_with = "no_handoff")]
    pub handoff_linger: bool,

    /// Node-local mode: make the two rules that skip conntrack for pods' queries match only
    /// while shardns holds its sockets (`-m socket --nowildcard`), so that pods' queries fall
    /// back to the cluster DNS when every shardns process is gone (node-cache's exact rules
    /// otherwise)
    #[arg(long)]
    pub fail_open_rules: bool,

    /// Node-local mode: which iptables programs write the rules. `iptables` (default): the
    /// system's `iptables`/`ip6tables`, as node-cache runs them; `iptables-nft`,
    /// `iptables-legacy`: that backend; `auto`: the backend holding kubelet's
    /// KUBE-IPTABLES-HINT chain (else the one with more rules), as node-cache's image
    /// chooses it; legacy needs the NET_RAW capability
    #[arg(long, value_enum, value_name = "MODE", default_value_t = IptablesArg::Iptables)]
    pub iptables: IptablesArg,

    /// Run as a supervisor (a container's PID 1): hold the sockets and the node setup, and run
    /// the DNS work in a worker process, restarted within 100 ms if it dies
    #[arg(long)]
    pub supervise: bool,

    /// Internal: run as the worker of the supervisor listening on PATH (its sockets come from
    /// there; the node is the supervisor's)
    #[arg(long, value_name = "PATH", hide = true)]
    pub worker_of: Option<PathBuf>,

    /// node-cache's flags (and CoreDNS's `-pidfile` and `-dns.port`); node-local mode when
    /// `-localip` is given.
    #[command(flatten)]
    pub node_cache: NodeCacheArgs,
}

/// The command: name, version and description, the arguments, and the node-cache section of
/// the help.
impl CommandFactory for Args {
    fn command() -> Command {
        help::with_node_cache_section(<Args as clap::Args>::augment_args(base_command()))
    }

    fn command_for_update() -> Command {
        help::with_node_cache_section(<Args as clap::Args>::augment_args_for_update(base_command()))
    }
}

/// The command before its arguments (the description comes with them).
fn base_command() -> Command {
    Command::new(env!("CARGO_PKG_NAME")).version(env!("CARGO_PKG_VERSION"))
}

/// Parsing reads node-cache's flags in Go's syntax first (`go_syntax::translate`), then hands
/// the rewritten command line to clap; every method of the trait goes through
/// [`Args::try_parse_from`] (or `try_update_from`), so `Args::parse()` in `main` does too.
impl Parser for Args {
    fn parse() -> Self {
        Self::parse_from(std::env::args_os())
    }

    fn try_parse() -> Result<Self, clap::Error> {
        Self::try_parse_from(std::env::args_os())
    }

    fn parse_from<I, T>(argv: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Self::try_parse_from(argv).unwrap_or_else(|error| error.exit())
    }

    fn try_parse_from<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Self::command();
        let argv = go_syntax::translate(argv, &mut command)?;
        let mut matches = command.try_get_matches_from_mut(argv)?;
        Self::from_arg_matches_mut(&mut matches).map_err(|error| error.format(&mut command))
    }

    fn update_from<I, T>(&mut self, argv: I)
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        self.try_update_from(argv)
            .unwrap_or_else(|error| error.exit())
    }

    fn try_update_from<I, T>(&mut self, argv: I) -> Result<(), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Self::command_for_update();
        let argv = go_syntax::translate(argv, &mut command)?;
        let mut matches = command.try_get_matches_from_mut(argv)?;
        self.update_from_arg_matches_mut(&mut matches)
            .map_err(|error| error.format(&mut command))
    }
}

/// The hand-off socket of node-local mode when `--handoff-socket` is not given.
pub(crate) const DEFAULT_HANDOFF_SOCKET: &str = "/run/shardns/handoff.sock";

impl Args {
    /// The hand-off socket in use: `--handoff-socket`, else the default in node-local mode,
    /// else none; none with `--no-handoff`.
    pub(crate) fn handoff_path(&self) -> Option<PathBuf> {
        if self.no_handoff {
            return None;
        }
        self.handoff_socket.clone().or_else(|| {
            self.node_cache
                .is_node_local()
                .then(|| PathBuf::from(DEFAULT_HANDOFF_SOCKET))
        })
    }

    /// Applies the limits given on the command line to `limits`, the shards' configuration
    /// (they are not in the Corefile, and a reload keeps them).
    pub(crate) fn apply_limits(&self, limits: &mut Limits) {
        limits.upstream_tcp_inflight = self.upstream_inflight as usize;
        limits.upstream_tcp_conns = self.upstream_conns as usize;
        limits.attempt_timeout = self.upstream_timeout;
        limits.query_timeout = self.query_timeout;
    }
}

/// A Go-style duration (`2s`, `1500ms`) above zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match crate::corefile::duration::parse(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than 0".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The `--coalesce` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CoalesceArg {
    /// Misses go to the key's owner shard.
    Across,
    /// Each shard resolves its own misses.
    Within,
}

impl CoalesceArg {
    /// The engine's value.
    pub(crate) fn mode(self) -> Coalesce {
        match self {
            CoalesceArg::Across => Coalesce::Across,
            CoalesceArg::Within => Coalesce::Within,
        }
    }
}

/// The `--io` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoArg {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    /// io_uring.
    Uring,
    /// epoll.
    Epoll,
}

impl IoArg {
    /// The engine's name for this mode.
    pub(crate) fn mode(self) -> IoMode {
        match self {
            IoArg::Auto => IoMode::Auto,
            IoArg::Uring => IoMode::Uring,
            IoArg::Epoll => IoMode::Epoll,
        }
    }

    /// The name as written on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            IoArg::Auto => "auto",
            IoArg::Uring => "uring",
            IoArg::Epoll => "epoll",
        }
    }
}

/// The `--iptables` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IptablesArg {
    /// The backend the node's kubelet uses, detected at start-up.
    Auto,
    /// The system's `iptables`/`ip6tables`.
    Iptables,
    /// `iptables-nft`/`ip6tables-nft`.
    IptablesNft,
    /// `iptables-legacy`/`ip6tables-legacy`.
    IptablesLegacy,
}

impl IptablesArg {
    /// The node setup's mode.
    pub(crate) fn mode(self) -> IptablesMode {
        match self {
            IptablesArg::Auto => IptablesMode::Auto,
            IptablesArg::Iptables => IptablesMode::Fixed(IptablesVariant::System),
            IptablesArg::IptablesNft => IptablesMode::Fixed(IptablesVariant::Nft),
            IptablesArg::IptablesLegacy => IptablesMode::Fixed(IptablesVariant::Legacy),
        }
    }
}

/// The log filter for a verbosity level, unless `RUST_LOG` is set.
pub(crate) fn default_filter(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn,shardns=info,shardns_shard=info",
        1 => "warn,shardns=debug,shardns_shard=debug",
        _ => "warn,shardns=trace,shardns_shard=trace",
    }
}

/// Logs to stderr (colours only on a terminal) with the filter from `RUST_LOG`, else from
/// the verbosity.
pub(crate) fn init_logging(verbose: u8) {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) if !text.is_empty() => EnvFilter::new(text),
        _ => EnvFilter::new(default_filter(verbose)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(positive_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(positive_duration("0").is_err());
        assert!(positive_duration("soon").is_err());
    }
    use clap::CommandFactory;

    #[test]
    fn arguments() {
        Args::command().debug_assert();
        let args = Args::try_parse_from(["shardns"]).unwrap();
        assert_eq!(args.conf, None);
        assert_eq!(args.shards, None);
        assert_eq!(args.io, IoArg::Epoll);
        assert_eq!(args.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        assert!(!args.validate);
        // The upstream limits: K = 2 by measurement (docs/BENCHMARKS.md, issue 5), CoreDNS's
        // 2 s attempt and 5 s query timeouts.
        assert_eq!(args.upstream_inflight, 2);
        assert_eq!(args.upstream_conns, 16);
        assert_eq!(args.upstream_timeout, Duration::from_secs(2));
        assert_eq!(args.query_timeout, Duration::from_secs(5));
        let args = Args::try_parse_from([
            "shardns",
            "--conf",
            "/etc/Corefile",
            "--shards",
            "2",
            "--io",
            "epoll",
            "-vv",
            "--resolv-conf",
            "/tmp/r",
            "--validate",
        ])
        .unwrap();
        assert_eq!(args.conf, Some(PathBuf::from("/etc/Corefile")));
        assert_eq!(args.shards, Some(2));
        assert_eq!(args.io.mode(), IoMode::Epoll);
        assert_eq!(args.verbose, 2);
        assert!(args.validate);
        assert!(Args::try_parse_from(["shardns", "--shards", "0"]).is_err());
        assert!(Args::try_parse_from(["shardns", "--io", "poll"]).is_err());
    }

    #[test]
    fn iptables_modes() {
        let args = Args::try_parse_from(["shardns"]).unwrap();
        assert_eq!(
            args.iptables.mode(),
            IptablesMode::Fixed(IptablesVariant::System),
            "the system's iptables, as node-cache"
        );
        for (value, mode) in [
            ("auto", IptablesMode::Auto),
            ("iptables", IptablesMode::Fixed(IptablesVariant::System)),
            ("iptables-nft", IptablesMode::Fixed(IptablesVariant::Nft)),
            (
                "iptables-legacy",
                IptablesMode::Fixed(IptablesVariant::Legacy),
            ),
        ] {
            // The clap names are the node crate's names.
            assert_eq!(value.parse::<IptablesMode>().unwrap(), mode);
            let spaced = Args::try_parse_from(["shardns", "--iptables", value]).unwrap();
            assert_eq!(spaced.iptables.mode(), mode);
            // Among node-cache's Go-syntax flags, as the DaemonSet writes it.
            let joined = format!("--iptables={value}");
            let args = Args::try_parse_from([
                "shardns",
                "-localip",
                "169.254.20.10",
                "-conf",
                "/tmp/Corefile",
                &joined,
                "-setupiptables=true",
            ])
            .unwrap();
            assert_eq!(args.iptables.mode(), mode);
            assert!(args.node_cache.setup_iptables);
        }
        assert!(Args::try_parse_from(["shardns", "--iptables", "nft"]).is_err());
        assert!(Args::try_parse_from(["shardns", "-iptables", "auto"]).is_err());
    }

    #[test]
    fn limits_come_from_the_command_line() {
        let args = Args::try_parse_from([
            "shardns",
            "--upstream-inflight",
            "3",
            "--upstream-conns",
            "4",
            "--upstream-timeout",
            "1500ms",
            "--query-timeout",
            "7s",
        ])
        .unwrap();
        let mut limits = Limits::default();
        args.apply_limits(&mut limits);
        assert_eq!(
            Limits {
                upstream_tcp_inflight: 3,
                upstream_tcp_conns: 4,
                attempt_timeout: Duration::from_millis(1500),
                query_timeout: Duration::from_secs(7),
                ..Limits::default()
            },
            limits
        );
    }

    #[test]
    fn updates_read_go_syntax_too() {
        let mut args = Args::try_parse_from(["shardns", "--shards", "2"]).unwrap();
        args.try_update_from(["shardns", "-p", "5353", "-conf=/etc/Corefile"])
            .unwrap();
        assert_eq!(args.node_cache.dns_port, 5353);
        assert_eq!(args.conf, Some(PathBuf::from("/etc/Corefile")));
        assert_eq!(args.shards, Some(2));
        assert!(args.try_update_from(["shardns", "-p"]).is_err());
    }

    #[test]
    fn filters() {
        assert_eq!(default_filter(0), "warn,shardns=info,shardns_shard=info");
        assert!(default_filter(1).contains("shardns=debug"));
        assert!(default_filter(5).contains("shardns_shard=trace"));
        for verbose in 0..3 {
            EnvFilter::try_new(default_filter(verbose)).unwrap();
        }
    }
}
