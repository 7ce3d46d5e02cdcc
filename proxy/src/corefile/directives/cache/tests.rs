//! Unit tests of the `cache` directive: every option, its defaults, and the messages of
//! what it refuses.

use super::*;
use crate::corefile::parser;

fn settings(body: &str) -> Result<CacheSettings, String> {
    let blocks =
        parser::parse("Corefile", &format!(".:53 {{\n{body}\n}}")).map_err(|e| e.to_string())?;
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
        option_error("servfail 5").starts_with("Corefile:3: bad servfail duration \"5\": a unit")
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
    assert!(option_error("disable denial a..b").starts_with("Corefile:3: zone \"a..b\": labels"));
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
