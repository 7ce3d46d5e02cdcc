//! Unit tests of the `forward` directive: upstream forms, resolv.conf files, every option
//! and the messages of what it refuses.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::corefile::parser;

fn settings(body: &str) -> Result<ForwardSettings, String> {
    let blocks =
        parser::parse("Corefile", &format!(".:53 {{\n{body}\n}}")).map_err(|e| e.to_string())?;
    let directives = &blocks[0].directives;
    let forward = directives.iter().find(|d| d.name == "forward");
    parse("Corefile", forward.unwrap_or(&directives[0])).map_err(|e| e.to_string())
}

/// The options of `forward . 1.1.1.1 {\n OPTION\n}`.
fn with(option: &str) -> ForwardConfig {
    settings(&format!("forward . 1.1.1.1 {{\n {option}\n}}"))
        .unwrap()
        .options
}

fn error(body: &str) -> String {
    settings(body).unwrap_err()
}

/// The error of `forward . 1.1.1.1 {\n OPTION\n}` (so at line 3).
fn option_error(option: &str) -> String {
    error(&format!("forward . 1.1.1.1 {{\n {option}\n}}"))
}

fn wire(text: &str) -> Vec<u8> {
    address::parse_zone(text).unwrap().wire
}

fn addrs(settings: &ForwardSettings) -> Vec<String> {
    settings.to.iter().map(ToString::to_string).collect()
}

/// A resolv.conf file with `text`, removed on drop.
struct TempResolv(PathBuf);

impl TempResolv {
    fn new(name: &str, text: &str) -> TempResolv {
        let path = std::env::temp_dir().join(format!(
            "shardns-forward-{}-{name}.conf",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempResolv(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempResolv {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn defaults() {
    let got = settings("forward . 1.1.1.1").unwrap();
    assert_eq!(got.from.text, ".");
    assert_eq!(got.options, ForwardConfig::default());
    let options = got.options;
    assert!(!options.force_tcp && !options.prefer_udp && !options.failfast);
    assert_eq!(options.expire, Duration::from_secs(10));
    assert_eq!(options.max_fails, 2);
    assert_eq!(options.policy, Policy::Random);
    assert_eq!(options.health_check, Duration::from_millis(500));
    assert!(!options.health_no_rec);
    assert_eq!(options.health_domain, b"\0");
    assert_eq!(options.max_concurrent, None);
    assert!(options.except.is_empty() && options.next.is_empty());
    // An empty block changes nothing.
    let got = settings("forward . 1.1.1.1 {\n}").unwrap();
    assert_eq!(got.options, ForwardConfig::default());
    // FROM goes into the options too.
    let got = settings("forward Cluster.Local. 1.1.1.1").unwrap();
    assert_eq!(got.from.text, "cluster.local.");
    assert_eq!(got.options.from, b"\x07cluster\x05local\x00");
    let got = settings("forward dns://example.org 1.1.1.1").unwrap();
    assert_eq!(got.options.from, wire("example.org"));
}

#[test]
fn to_forms() {
    let got = settings(
        "forward . 1.1.1.1 dns://8.8.8.8:54 [::1]:5353 [2001:db8::1] 2001:db8::2 \
         dns://[::1]:5353 1.1.1.1:53 dns://9.9.9.9",
    )
    .unwrap();
    assert_eq!(
        addrs(&got),
        [
            "1.1.1.1:53",
            "8.8.8.8:54",
            "[::1]:5353",
            "[2001:db8::1]:53",
            "[2001:db8::2]:53",
            "9.9.9.9:53"
        ]
    );
    // A resolv.conf path is expanded in place, duplicates dropped.
    let resolv = TempResolv::new(
        "to-forms",
        "search svc.cluster.local\nnameserver 10.0.0.1\nnameserver 10.0.0.2 # x\n\
         nameserver fd00::53\noptions ndots:5\n",
    );
    let got = settings(&format!("forward . 10.0.0.2 {} 1.1.1.1", resolv.path())).unwrap();
    assert_eq!(
        addrs(&got),
        ["10.0.0.2:53", "10.0.0.1:53", "[fd00::53]:53", "1.1.1.1:53"]
    );
    // Exactly 15 is fine, duplicates not counted.
    let fifteen: Vec<String> = (1..=15).map(|i| format!("10.0.0.{i}")).collect();
    let got = settings(&format!("forward . {} 10.0.0.1", fifteen.join(" "))).unwrap();
    assert_eq!(got.to.len(), 15);
}

#[test]
fn bad_to() {
    assert_eq!(
        error("forward ."),
        "Corefile:2: forward needs FROM and at least one TO"
    );
    assert_eq!(
        error("forward"),
        "Corefile:2: forward needs FROM and at least one TO"
    );
    let sixteen: Vec<String> = (1..=16).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(
        error(&format!("forward . {}", sixteen.join(" "))),
        "Corefile:2: forward allows at most 15 upstreams, got 16"
    );
    // Counted after resolv.conf expansion.
    let lines: Vec<String> = (1..=14)
        .map(|i| format!("nameserver 10.1.0.{i}\n"))
        .collect();
    let resolv = TempResolv::new("many", &lines.concat());
    assert_eq!(
        error(&format!("forward . {} 10.2.0.1 10.2.0.2", resolv.path())),
        "Corefile:2: forward allows at most 15 upstreams, got 16"
    );
    assert_eq!(
        error("errors\nforward . 1.1.1.1 tls://1.1.1.1"),
        "Corefile:3: upstream \"tls://1.1.1.1\": tls:// is not supported yet (only dns://)"
    );
    assert_eq!(
        error("forward . tls://9.9.9.9:853"),
        "Corefile:2: upstream \"tls://9.9.9.9:853\": tls:// is not supported yet (only \
         dns://)"
    );
    assert!(error("forward . 1.2.3.999").starts_with("Corefile:2: bad upstream \"1.2.3.999\""));
    assert!(error("forward . dns://").starts_with("Corefile:2: bad upstream \"dns://\""));
    assert!(
        error("forward . /nonexistent/resolv.conf")
            .starts_with("Corefile:2: cannot read resolv.conf")
    );
    let empty = TempResolv::new("empty", "search example.org\n");
    assert_eq!(
        error(&format!("forward . {}", empty.path())),
        format!(
            "Corefile:2: resolv.conf {:?} has no usable nameserver line",
            empty.path()
        )
    );
    assert!(error("forward a..b 1.1.1.1").starts_with("Corefile:2: zone \"a..b\""));
}

#[test]
fn except_forms() {
    let got = with("except Example.ORG svc.cluster.local. example.org");
    assert_eq!(got.except, [wire("example.org"), wire("svc.cluster.local")]);
    // Lines add up, as in CoreDNS.
    let got = settings("forward . 1.1.1.1 {\n except a.example\n except b.example a.example\n}")
        .unwrap()
        .options;
    assert_eq!(got.except, [wire("a.example"), wire("b.example")]);
    assert_eq!(
        option_error("except"),
        "Corefile:3: forward option \"except\" takes one or more zones"
    );
    assert_eq!(
        option_error("except a..b"),
        "Corefile:3: zone \"a..b\": labels must be 1 to 63 characters long"
    );
}

#[test]
fn protocol_flags() {
    let got = with("force_tcp");
    assert!(got.force_tcp && !got.prefer_udp);
    let got = with("prefer_udp");
    assert!(!got.force_tcp && got.prefer_udp);
    // Both: force_tcp wins, as in CoreDNS.
    for body in ["force_tcp\n prefer_udp", "prefer_udp\n force_tcp"] {
        let got = with(body);
        assert!(got.force_tcp && !got.prefer_udp, "{body}");
    }
    assert_eq!(
        option_error("force_tcp yes"),
        "Corefile:3: forward option \"force_tcp\" takes no arguments"
    );
    assert_eq!(
        option_error("prefer_udp 1"),
        "Corefile:3: forward option \"prefer_udp\" takes no arguments"
    );
    assert_eq!(
        option_error("force_tcp {\n }"),
        "Corefile:3: forward option \"force_tcp\" takes no options block"
    );
}

#[test]
fn expire_forms() {
    assert_eq!(with("expire 30s").expire, Duration::from_secs(30));
    assert_eq!(with("expire 1m30s").expire, Duration::from_secs(90));
    assert_eq!(with("expire 500ms").expire, Duration::from_millis(500));
    assert_eq!(with("expire 0").expire, Duration::ZERO);
    assert_eq!(
        option_error("expire -1s"),
        "Corefile:3: bad expire duration \"-1s\": negative durations are not allowed \
         (expected a duration such as 10s or 1m)"
    );
    assert!(option_error("expire 10").starts_with("Corefile:3: bad expire duration \"10\""));
    assert_eq!(
        option_error("expire"),
        "Corefile:3: forward option \"expire\" takes one DURATION, e.g. 10s"
    );
    assert!(option_error("expire 1s 2s").contains("takes one DURATION"));
}

#[test]
fn max_fails_forms() {
    assert_eq!(with("max_fails 0").max_fails, 0);
    assert_eq!(with("max_fails 5").max_fails, 5);
    assert_eq!(with("max_fails 4294967295").max_fails, u32::MAX);
    assert_eq!(
        option_error("max_fails -1"),
        "Corefile:3: bad max_fails \"-1\" (expected a whole number from 0 to 4294967295)"
    );
    assert!(option_error("max_fails 4294967296").starts_with("Corefile:3: bad max_fails"));
    assert!(option_error("max_fails two").starts_with("Corefile:3: bad max_fails \"two\""));
    assert_eq!(
        option_error("max_fails"),
        "Corefile:3: forward option \"max_fails\" takes one INTEGER (0 to 4294967295)"
    );
}

#[test]
fn policy_forms() {
    assert_eq!(with("policy random").policy, Policy::Random);
    assert_eq!(with("policy round_robin").policy, Policy::RoundRobin);
    assert_eq!(with("policy sequential").policy, Policy::Sequential);
    assert_eq!(
        option_error("policy first"),
        "Corefile:3: bad forward policy \"first\" (expected random, round_robin or \
         sequential)"
    );
    assert!(option_error("policy Random").starts_with("Corefile:3: bad forward policy"));
    assert_eq!(
        option_error("policy"),
        "Corefile:3: forward option \"policy\" takes random, round_robin or sequential"
    );
}

#[test]
fn health_check_forms() {
    let got = with("health_check 5s");
    assert_eq!(got.health_check, Duration::from_secs(5));
    assert!(!got.health_no_rec);
    assert_eq!(got.health_domain, b"\0");
    let got = with("health_check 0.25s no_rec");
    assert_eq!(got.health_check, Duration::from_millis(250));
    assert!(got.health_no_rec);
    let got = with("health_check 1s domain Example.ORG.");
    assert_eq!(got.health_domain, wire("example.org"));
    assert!(!got.health_no_rec);
    let got = with("health_check 2s domain example.org no_rec");
    assert_eq!(got.health_check, Duration::from_secs(2));
    assert!(got.health_no_rec);
    assert_eq!(got.health_domain, wire("example.org"));
    assert_eq!(with("health_check 0").health_check, Duration::ZERO);
}

#[test]
fn bad_health_check() {
    assert_eq!(
        option_error("health_check"),
        "Corefile:3: forward option \"health_check\" takes DURATION [no_rec] [domain FQDN]"
    );
    assert_eq!(
        option_error("health_check -1s"),
        "Corefile:3: bad health_check duration \"-1s\": negative durations are not allowed \
         (expected a duration such as 500ms or 5s)"
    );
    assert!(option_error("health_check no_rec").starts_with("Corefile:3: bad health_check"));
    assert_eq!(
        option_error("health_check 1s domain"),
        "Corefile:3: health_check option \"domain\" needs an FQDN"
    );
    assert_eq!(
        option_error("health_check 1s domain a..b"),
        "Corefile:3: bad health_check domain \"a..b\": labels must be 1 to 63 characters \
         long"
    );
    assert_eq!(
        option_error("health_check 1s domain ex!ample.org"),
        "Corefile:3: bad health_check domain \"ex!ample.org\": character '!' is not allowed \
         in a zone name"
    );
    assert_eq!(
        option_error("health_check 1s recursive"),
        "Corefile:3: bad health_check option \"recursive\" (expected no_rec or domain FQDN)"
    );
    assert_eq!(
        option_error("health_check 1s no_rec no_rec"),
        "Corefile:3: health_check option \"no_rec\" appears twice"
    );
    assert!(
        option_error("health_check 1s domain a.example domain b.example")
            .contains("\"domain\" appears twice")
    );
}

#[test]
fn max_concurrent_forms() {
    assert_eq!(with("max_concurrent 1000").max_concurrent, Some(1000));
    assert_eq!(with("max_concurrent 1").max_concurrent, Some(1));
    // 0: no limit, as in CoreDNS.
    assert_eq!(with("max_concurrent 0").max_concurrent, None);
    assert_eq!(
        option_error("max_concurrent -1"),
        "Corefile:3: bad max_concurrent \"-1\" (expected a whole number from 0 to \
         9223372036854775807; 0 is no limit)"
    );
    assert!(option_error("max_concurrent 1k").contains("bad max_concurrent \"1k\""));
    assert!(option_error("max_concurrent 1e3").contains("bad max_concurrent \"1e3\""));
    assert_eq!(
        option_error("max_concurrent"),
        "Corefile:3: forward option \"max_concurrent\" takes one MAX (0 for no limit)"
    );
}

#[test]
fn next_forms() {
    assert_eq!(with("next NXDOMAIN").next, codes(&[3]));
    assert_eq!(with("next servfail Refused NOTIMP").next, codes(&[2, 5, 4]));
    assert_eq!(with("next NOTIMPL notimp NOERROR").next, codes(&[4, 0]));
    assert_eq!(
        with("next formerr yxdomain BADCOOKIE").next,
        codes(&[1, 6, 23])
    );
    // Lines add up, as in CoreDNS.
    let got = settings("forward . 1.1.1.1 {\n next SERVFAIL\n next REFUSED SERVFAIL\n}")
        .unwrap()
        .options;
    assert_eq!(got.next, codes(&[2, 5]));
    let got = option_error("next SERVFAIL BOGUS");
    assert!(
        got.starts_with(
            "Corefile:3: bad next rcode \"BOGUS\" (expected an RCODE name: NOERROR, FORMERR, \
             SERVFAIL, NXDOMAIN, NOTIMP, REFUSED,"
        ),
        "{got}"
    );
    assert!(got.ends_with("BADCOOKIE)"), "{got}");
    assert!(option_error("next 2").starts_with("Corefile:3: bad next rcode \"2\""));
    assert_eq!(
        option_error("next"),
        "Corefile:3: forward option \"next\" takes one or more RCODEs, e.g. NXDOMAIN SERVFAIL"
    );
}

#[test]
fn failfast_forms() {
    assert!(with("failfast_all_unhealthy_upstreams").failfast);
    assert_eq!(
        option_error("failfast_all_unhealthy_upstreams yes"),
        "Corefile:3: forward option \"failfast_all_unhealthy_upstreams\" takes no arguments"
    );
}

#[test]
fn every_option() {
    let body = "forward example.org 10.0.0.1 10.0.0.2:5353 {\n except a.example.org\n \
                force_tcp\n expire 1m\n max_fails 0\n policy sequential\n \
                health_check 5s no_rec domain Health.Example.\n max_concurrent 1000\n \
                next NXDOMAIN SERVFAIL\n failfast_all_unhealthy_upstreams\n}";
    let got = settings(body).unwrap();
    assert_eq!(addrs(&got), ["10.0.0.1:53", "10.0.0.2:5353"]);
    assert_eq!(
        got.options,
        ForwardConfig {
            from: wire("example.org"),
            except: vec![wire("a.example.org")],
            upstreams: Vec::new(),
            force_tcp: true,
            prefer_udp: false,
            expire: Duration::from_secs(60),
            max_fails: 0,
            policy: Policy::Sequential,
            health_check: Duration::from_secs(5),
            health_no_rec: true,
            health_domain: wire("health.example"),
            max_concurrent: Some(1000),
            next: codes(&[3, 2]),
            failfast: true,
        }
    );
}

#[test]
fn repeated_and_unknown_options() {
    for option in [
        "force_tcp",
        "prefer_udp",
        "expire 1s",
        "max_fails 1",
        "policy random",
        "health_check 1s",
        "max_concurrent 1",
        "failfast_all_unhealthy_upstreams",
    ] {
        let name = option.split(' ').next().unwrap();
        assert_eq!(
            error(&format!("forward . 1.1.1.1 {{\n {option}\n\n {option}\n}}")),
            format!("Corefile:5: forward option {name:?} appears twice (first at line 3)")
        );
    }
    assert_eq!(
        option_error("foo"),
        "Corefile:3: unknown forward option \"foo\" (expected except, force_tcp, prefer_udp, \
         expire, max_fails, policy, health_check, max_concurrent, next or \
         failfast_all_unhealthy_upstreams)"
    );
    assert!(option_error("or").starts_with("Corefile:3: unknown forward option \"or\""));
    assert!(option_error("foo\n foo").starts_with("Corefile:3: unknown forward option"));
    for name in ["tls", "tls_servername", "failover", "max_idle_conns"] {
        assert_eq!(
            option_error(&format!("{name} x")),
            format!("Corefile:3: forward option {name:?} is not supported yet")
        );
    }
    assert_eq!(
        option_error("tls cert.pem key.pem ca.pem"),
        "Corefile:3: forward option \"tls\" is not supported yet"
    );
}

/// RCODEs from their values.
fn codes(values: &[u16]) -> Vec<shardns_wire::Rcode> {
    values
        .iter()
        .map(|&v| shardns_wire::Rcode::new(v))
        .collect()
}
