//! node-cache's own flags, and the CoreDNS flags it inherits, as typed values
//! ([`NodeCacheArgs`]).
//!
//! Each field is one Go flag of the k8s-dns-node-cache binary with its Go default: node-cache's
//! in kubernetes/dns `cmd/node-cache/main.go` (`parseAndValidateFlags`), CoreDNS's in coredns
//! `coremain/run.go` (`init`). Giving `-localip` turns on node-local mode; the other node-setup
//! flags are refused without it. This is parsing only: the node setup that reads these values
//! (interface, iptables rules, Corefile template, pidfile) is not here.
//!
//! The clap arguments are hidden from clap's option table: `cli/help.rs` lists them with both
//! spellings, and `cli/go_syntax.rs` turns Go's syntax into the `--name=VALUE` form clap reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgAction;
use clap::builder::{OsStringValueParser, TypedValueParser};

use super::values::{self, LocalIps};

/// node-cache's flags (and CoreDNS's `-pidfile` and `-dns.port`), parsed and checked. `-conf`,
/// the same flag as shardns's `--conf`, is [`Args::conf`](crate::Args::conf).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct NodeCacheArgs {
    /// The addresses to serve on and intercept, comma-separated, all of one family; turns on
    /// node-local mode
    ///
    /// `-localip` (Go `string`, default empty; node-cache requires it). `None` when not given:
    /// shardns then runs as a plain caching proxy and refuses the node-setup flags below. In
    /// node-cache these addresses go on the dummy interface, into the NOTRACK rules and into
    /// the Corefile's `bind` (`__PILLAR__LOCAL__DNS__`).
    #[arg(
        long = "localip",
        value_name = "IPS",
        hide = true,
        overrides_with = "local_ips"
    )]
    pub local_ips: Option<LocalIps>,

    /// Create the dummy interface holding the local addresses, and keep it
    ///
    /// `-setupinterface` (Go `bool`, default `true`).
    #[arg(long = "setupinterface", value_name = "BOOL", hide = true,
          overrides_with = "setup_interface", action = ArgAction::Set, default_value_t = true)]
    pub setup_interface: bool,

    /// The dummy interface's name
    ///
    /// `-interfacename` (Go `string`, default `nodelocaldns`); checked as the kernel checks it
    /// (1 to 15 bytes, no `/`, `:` or white space).
    #[arg(long = "interfacename", value_name = "NAME", hide = true,
          overrides_with = "interface_name", default_value = "nodelocaldns",
          value_parser = values::interface_name)]
    pub interface_name: String,

    /// How often the interface and rules are re-checked, in seconds; node-cache reads a
    /// duration's nanoseconds as seconds (60ns = every 60 s)
    ///
    /// `-syncinterval` (Go `time.Duration`, default `60`, that is 60 ns). node-cache ticks every
    /// `value * time.Second` (`cache_app.go`), so this field holds that period: 60 s by
    /// default, `1s` written means every 10^9 s. Zero and periods past Go's limit are refused.
    /// A bare number is seconds (Go refuses it for want of a unit).
    #[arg(long = "syncinterval", value_name = "DURATION", hide = true,
          overrides_with = "sync_interval", default_value = "60ns",
          value_parser = values::sync_interval)]
    pub sync_interval: Duration,

    /// Where node-cache's own /metrics (its setup error counter) is served
    ///
    /// `-metrics-listen-address` (Go `string`, default `0.0.0.0:9353`). An empty or
    /// unspecified host (`:9353`) comes back as `0.0.0.0:PORT`, meaning every address of both
    /// families, as for the Corefile's `prometheus`.
    #[arg(long = "metrics-listen-address", value_name = "HOST:PORT", hide = true,
          overrides_with = "metrics_listen_address", default_value = "0.0.0.0:9353",
          value_parser = values::listen_address)]
    pub metrics_listen_address: SocketAddr,

    /// Install the NOTRACK iptables rules for the local addresses, and keep them
    ///
    /// `-setupiptables` (Go `bool`, default `true`).
    #[arg(long = "setupiptables", value_name = "BOOL", hide = true,
          overrides_with = "setup_iptables", action = ArgAction::Set, default_value_t = true)]
    pub setup_iptables: bool,

    /// The Corefile template (with __PILLAR__ placeholders); its directory is watched
    ///
    /// `-basecorefile` (Go `string`, default `/etc/coredns/Corefile.base`, where the stock
    /// manifest mounts the `node-local-dns` ConfigMap).
    #[arg(
        long = "basecorefile",
        value_name = "FILE",
        hide = true,
        overrides_with = "base_corefile",
        default_value = "/etc/coredns/Corefile.base"
    )]
    pub base_corefile: PathBuf,

    /// Where the Corefile made from the template goes; node-cache uses -conf's value instead
    ///
    /// `-corefile` (Go `string`, default `/etc/Corefile`). node-cache overwrites it with
    /// `-conf`'s value whether or not `-conf` is given (`main.go`: `flag.Lookup("conf")`
    /// always finds CoreDNS's flag), so the generated Corefile is written to `-conf`; the
    /// value is kept here as given.
    #[arg(
        long = "corefile",
        value_name = "FILE",
        hide = true,
        overrides_with = "corefile",
        default_value = "/etc/Corefile"
    )]
    pub corefile: PathBuf,

    /// The mounted kube-dns ConfigMap directory (stubDomains, upstreamNameservers); empty
    /// means /etc/kube-dns if it exists
    ///
    /// `-kubednscm` (Go `string`, default empty). `None` when not given or empty; node-cache
    /// then uses `/etc/kube-dns` if that exists (`configmap.go`, `DefaultKubednsCMPath`).
    #[arg(long = "kubednscm", value_name = "DIR", hide = true,
          overrides_with = "kube_dns_configmap", default_value = "",
          value_parser = OsStringValueParser::new().map(values::optional_path))]
    pub kube_dns_configmap: ::std::option::Option<PathBuf>,

    /// The Service whose ClusterIP ($NAME_SERVICE_HOST) is the upstream for the cluster
    /// domain
    ///
    /// `-upstreamsvc` (Go `string`, default `kube-dns`; the stock manifest passes
    /// `kube-dns-upstream`). node-cache reads the ClusterIP from the environment variable
    /// kubelet sets, the name upper-cased with `-` as `_` plus `_SERVICE_HOST`, and puts it
    /// in the template's `__PILLAR__CLUSTER__DNS__`.
    #[arg(long = "upstreamsvc", value_name = "NAME", hide = true,
          overrides_with = "upstream_service", default_value = "kube-dns",
          value_parser = values::service_name)]
    pub upstream_service: String,

    /// The health port, used only in the NOTRACK rules for the liveness probe's traffic
    ///
    /// `-health-port` (Go `string` checked with `strconv.Atoi`, default `8080`); a port from
    /// 1 to 65535 here.
    #[arg(long = "health-port", value_name = "PORT", hide = true,
          overrides_with = "health_port", default_value = "8080", value_parser = values::port)]
    pub health_port: u16,

    /// Leave the interface and rules in place on exit
    ///
    /// `-skipteardown` (Go `bool`, default `false`).
    #[arg(long = "skipteardown", value_name = "BOOL", hide = true,
          overrides_with = "skip_teardown", action = ArgAction::Set, default_value_t = false)]
    pub skip_teardown: bool,

    /// Reload by sending SIGUSR1 to itself after rewriting the Corefile, instead of relying
    /// on the reload plugin
    ///
    /// `-reloadwithsignal` (Go `bool`, default `false`).
    #[arg(long = "reloadwithsignal", value_name = "BOOL", hide = true,
          overrides_with = "reload_with_signal", action = ArgAction::Set,
          default_value_t = false)]
    pub reload_with_signal: bool,

    /// Where to write the process id once serving (CoreDNS's flag); node-cache installs its
    /// rules as soon as the file exists
    ///
    /// `-pidfile` (Go `string`, default empty: no pidfile; coredns `coremain/run.go`). `None`
    /// when not given or empty. Allowed without `-localip`.
    #[arg(long = "pidfile", value_name = "FILE", hide = true, overrides_with = "pidfile",
          default_value = "",
          value_parser = OsStringValueParser::new().map(values::optional_path))]
    pub pidfile: ::std::option::Option<PathBuf>,

    /// The DNS port of the rules and of stub-domain blocks (CoreDNS's flag; -p is the same
    /// flag)
    ///
    /// `-dns.port` and `-p` (Go `string`, one variable, default `53`; coredns
    /// `coremain/run.go`); node-cache checks it with `strconv.Atoi` and writes it into the
    /// NOTRACK rules. A port from 1 to 65535 here. Allowed without `-localip`.
    #[arg(long = "dns.port", value_name = "PORT", hide = true, overrides_with = "dns_port",
          default_value = "53", value_parser = values::port)]
    pub dns_port: u16,
}

impl NodeCacheArgs {
    /// Whether shardns runs in node-local mode: `-localip` was given.
    pub fn is_node_local(&self) -> bool {
        self.local_ips.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::cli::Args;

    fn parse(args: &[&str]) -> Args {
        let argv = std::iter::once("shardns").chain(args.iter().copied());
        Args::try_parse_from(argv).unwrap_or_else(|error| panic!("{args:?}: {error}"))
    }

    fn refused(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("shardns").chain(args.iter().copied());
        match Args::try_parse_from(argv) {
            Ok(args) => panic!("taken: {args:?}"),
            Err(error) => error,
        }
    }

    fn addresses(args: &Args) -> Vec<IpAddr> {
        args.node_cache
            .local_ips
            .as_ref()
            .unwrap()
            .addresses()
            .to_vec()
    }

    /// node-cache's defaults (its `main.go`, and CoreDNS's `coremain/run.go`), with `local_ips`
    /// as given.
    fn defaults(local_ips: Option<LocalIps>) -> NodeCacheArgs {
        NodeCacheArgs {
            local_ips,
            setup_interface: true,
            interface_name: "nodelocaldns".to_string(),
            sync_interval: Duration::from_secs(60),
            metrics_listen_address: "0.0.0.0:9353".parse().unwrap(),
            setup_iptables: true,
            base_corefile: PathBuf::from("/etc/coredns/Corefile.base"),
            corefile: PathBuf::from("/etc/Corefile"),
            kube_dns_configmap: None,
            upstream_service: "kube-dns".to_string(),
            health_port: 8080,
            skip_teardown: false,
            reload_with_signal: false,
            pidfile: None,
            dns_port: 53,
        }
    }

    #[test]
    fn without_flags() {
        let args = parse(&[]);
        assert_eq!(args.node_cache, defaults(None));
        assert!(!args.node_cache.is_node_local());
        assert_eq!(args.conf, None);
    }

    /// The container arguments of kubernetes/kubernetes
    /// `cluster/addons/dns/nodelocaldns/nodelocaldns.yaml` (iptables mode, after the install's
    /// `sed`), exactly: every value given and defaulted.
    #[test]
    fn stock_manifest_arguments() {
        let stock = [
            "-localip",
            "169.254.20.10,10.96.0.10",
            "-conf",
            "/etc/Corefile",
            "-upstreamsvc",
            "kube-dns-upstream",
        ];
        let with_pidfile: Vec<&str> = stock
            .iter()
            .copied()
            .chain(["-pidfile", "/tmp/node-cache.pid"])
            .collect();
        let local_ips: LocalIps = "169.254.20.10,10.96.0.10".parse().unwrap();
        let want = NodeCacheArgs {
            upstream_service: "kube-dns-upstream".to_string(),
            ..defaults(Some(local_ips))
        };
        let args = parse(&stock);
        assert_eq!(args.node_cache, want);
        assert_eq!(
            addresses(&args),
            [
                "169.254.20.10".parse::<IpAddr>().unwrap(),
                "10.96.0.10".parse().unwrap()
            ]
        );
        assert!(args.node_cache.is_node_local());
        assert!(!args.node_cache.local_ips.as_ref().unwrap().is_ipv6());
        assert_eq!(args.conf, Some(PathBuf::from("/etc/Corefile")));
        let args = parse(&with_pidfile);
        assert_eq!(
            args.node_cache,
            NodeCacheArgs {
                pidfile: Some(PathBuf::from("/tmp/node-cache.pid")),
                ..want.clone()
            }
        );
        assert_eq!(args.conf, Some(PathBuf::from("/etc/Corefile")));
        // shardns's own arguments keep their defaults beside them.
        assert_eq!(args.shards, None);
        assert!(!args.validate);
        assert_eq!(args.verbose, 0);
        assert_eq!(args.upstream_timeout, Duration::from_secs(2));
        // IPVS mode: the install's sed removes ",__PILLAR__DNS__SERVER__".
        let args = parse(&[
            "-localip",
            "169.254.20.10",
            "-conf",
            "/etc/Corefile",
            "-upstreamsvc",
            "kube-dns-upstream",
        ]);
        assert_eq!(
            addresses(&args),
            ["169.254.20.10".parse::<IpAddr>().unwrap()]
        );
        // The manifest before the install's sed says what is wrong.
        let message =
            refused(&["-localip", "__PILLAR__LOCAL__DNS__,__PILLAR__DNS__SERVER__"]).to_string();
        assert!(
            message.contains("\"__PILLAR__LOCAL__DNS__\" is not an IP address"),
            "{message}"
        );
    }

    #[test]
    fn every_flag_given() {
        let args = parse(&[
            "-localip=fd00::10,fd00::a",
            "-setupinterface=false",
            "--interfacename",
            "nlc0",
            "-syncinterval",
            "30ns",
            "-metrics-listen-address=127.0.0.1:9354",
            "--setupiptables=F",
            "-basecorefile",
            "/b",
            "-corefile=/c",
            "-kubednscm",
            "/k",
            "-upstreamsvc=up",
            "-health-port",
            "8081",
            "-skipteardown",
            "--reloadwithsignal=1",
            "-pidfile",
            "/p",
            "-p",
            "5353",
            "-conf",
            "/etc/Corefile",
        ]);
        assert_eq!(
            args.node_cache,
            NodeCacheArgs {
                local_ips: Some("fd00::10,fd00::a".parse().unwrap()),
                setup_interface: false,
                interface_name: "nlc0".to_string(),
                sync_interval: Duration::from_secs(30),
                metrics_listen_address: "127.0.0.1:9354".parse().unwrap(),
                setup_iptables: false,
                base_corefile: PathBuf::from("/b"),
                corefile: PathBuf::from("/c"),
                kube_dns_configmap: Some(PathBuf::from("/k")),
                upstream_service: "up".to_string(),
                health_port: 8081,
                skip_teardown: true,
                reload_with_signal: true,
                pidfile: Some(PathBuf::from("/p")),
                dns_port: 5353,
            }
        );
        assert!(args.node_cache.local_ips.as_ref().unwrap().is_ipv6());
        assert_eq!(args.conf, Some(PathBuf::from("/etc/Corefile")));
    }

    #[test]
    fn the_last_value_wins() {
        // As in Go, where each occurrence sets the flag again; -p and -dns.port are one flag,
        // and so are -conf and --conf.
        let args = parse(&[
            "-localip",
            "10.0.0.1",
            "--localip=10.0.0.2",
            "-setupiptables",
            "-setupiptables=false",
            "-dns.port",
            "5353",
            "-p",
            "53",
            "-conf",
            "/a",
            "--conf",
            "/b",
        ]);
        assert_eq!(addresses(&args), ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert!(!args.node_cache.setup_iptables);
        assert_eq!(args.node_cache.dns_port, 53);
        assert_eq!(args.conf, Some(PathBuf::from("/b")));
        // Every value given is checked, the earlier ones too.
        refused(&[
            "-localip",
            "10.0.0.1",
            "-health-port",
            "x",
            "-health-port",
            "80",
        ]);
    }

    #[test]
    fn empty_means_none() {
        let args = parse(&["-localip", "10.0.0.1", "-kubednscm=", "-pidfile="]);
        assert_eq!(args.node_cache.kube_dns_configmap, None);
        assert_eq!(args.node_cache.pidfile, None);
    }

    #[test]
    fn mixed_with_shardns_arguments() {
        let args = parse(&[
            "--shards",
            "2",
            "-localip",
            "10.0.0.1",
            "-vv",
            "--resolv-conf",
            "false",
            "-upstreamsvc",
            "up",
            "--validate",
        ]);
        assert_eq!(args.shards, Some(2));
        assert_eq!(args.verbose, 2);
        assert_eq!(args.resolv_conf, PathBuf::from("false"));
        assert!(args.validate);
        assert_eq!(args.node_cache.upstream_service, "up");
    }

    /// Each bad value: the error names the flag and says what was expected.
    #[test]
    fn bad_values() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["-localip", "169.254.20.10,fd00::10"],
                "invalid value '169.254.20.10,fd00::10' for '--localip <IPS>': 169.254.20.10 is \
                 IPv4 but fd00::10 is IPv6: the addresses must all be IPv4 or all be IPv6",
            ),
            (
                &["-localip", "10.0.0.300"],
                "\"10.0.0.300\" is not an IP address",
            ),
            (&["-localip="], "an address is empty"),
            (&["-localip", "10.0.0.1,"], "an address is empty"),
            (
                &["-localip=10.0.0.1", "-health-port", "0"],
                "invalid value '0' for '--health-port <PORT>': expected a port number from 1 \
                 to 65535",
            ),
            (
                &["-localip=10.0.0.1", "-health-port=http"],
                "for '--health-port <PORT>': expected a port number",
            ),
            (
                &["-dns.port", "65536"],
                "for '--dns.port <PORT>': expected a port number",
            ),
            (
                &["-p", "-1"],
                "for '--dns.port <PORT>': expected a port number",
            ),
            (
                &["-localip=10.0.0.1", "-syncinterval", "60 s"],
                "for '--syncinterval <DURATION>': ",
            ),
            (
                &["-localip=10.0.0.1", "-syncinterval", "0s"],
                "for '--syncinterval <DURATION>': must be more than 0",
            ),
            (
                &["-localip=10.0.0.1", "-syncinterval", "1h"],
                "past Go's longest duration",
            ),
            (
                &["-localip=10.0.0.1", "-metrics-listen-address", "9353"],
                "for '--metrics-listen-address <HOST:PORT>': no port",
            ),
            (
                &["-localip=10.0.0.1", "-interfacename", "node/local"],
                "for '--interfacename <NAME>': \"node/local\" has '/'",
            ),
            (
                &["-localip=10.0.0.1", "-upstreamsvc", "Kube_DNS"],
                "for '--upstreamsvc <NAME>': \"Kube_DNS\" is not a Service name",
            ),
            (
                &["-localip=10.0.0.1", "-basecorefile="],
                "'--basecorefile <FILE>'",
            ),
            (&["-conf="], "'--conf <FILE>'"),
        ];
        for (args, want) in cases {
            let error = refused(args);
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::ValueValidation | ErrorKind::InvalidValue
                ),
                "{args:?}: {:?}",
                error.kind()
            );
            let message = error.to_string();
            assert!(message.contains(want), "{args:?}: {message}");
        }
    }

    #[test]
    fn unknown_flags_stay_clap_errors() {
        assert_eq!(refused(&["--bogus"]).kind(), ErrorKind::UnknownArgument);
        assert_eq!(refused(&["-bogus"]).kind(), ErrorKind::UnknownArgument);
        // CoreDNS's -plugins and -quiet are not taken.
        assert_eq!(refused(&["-quiet"]).kind(), ErrorKind::UnknownArgument);
        assert_eq!(refused(&["-plugins"]).kind(), ErrorKind::UnknownArgument);
        assert_eq!(refused(&["-help"]).kind(), ErrorKind::DisplayHelp);
        assert_eq!(refused(&["-version"]).kind(), ErrorKind::DisplayVersion);
        assert!(!parse(&["-version=false"]).validate);
    }
}
