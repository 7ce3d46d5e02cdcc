//! Tests of the Corefile sync over directories in memory, with a virtual clock.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use super::*;
use crate::kubedns::{ConfigMapCheck, ConfigMapProblem};
use crate::setup_errors::SetupErrorType;
use crate::template::TemplateError;
use crate::watch::POLL_PERIOD;
use crate::watch::poller::tests::MemorySource;

const BASE_DIRECTORY: &str = "/etc/coredns";
const KUBE_DNS: &str = "/etc/kube-dns";
const BASE: &str =
    ".:53 {\n    bind __PILLAR__LOCAL__DNS__\n    forward . __PILLAR__UPSTREAM__SERVERS__\n}\n";

fn settings() -> CorefileSettings {
    CorefileSettings {
        kube_dns_directory: Some(PathBuf::from(KUBE_DNS)),
        ..CorefileSettings::new(vec![IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10))])
    }
}

fn environment(variable: &str) -> Option<String> {
    (variable == "KUBE_DNS_SERVICE_HOST").then(|| "10.96.0.10".to_owned())
}

/// A node with the base Corefile and an empty ConfigMap directory.
fn node() -> MemorySource {
    let source = MemorySource::default();
    source.write(BASE_DIRECTORY, "Corefile.base", BASE);
    source.create_directory(KUBE_DNS);
    source
}

fn start(source: &MemorySource, now: Instant) -> Startup {
    CorefileSync::start(settings(), environment, POLL_PERIOD, now, source).unwrap()
}

fn corefile_with(forward: &str) -> String {
    format!(".:53 {{\n    bind 169.254.20.10\n    forward . {forward}\n}}\n")
}

const STUB_BLOCK: &str = "\nacme.local:53 {\n    errors\n    cache 30\n    bind 169.254.20.10\n    forward . 1.2.3.4\n}\n";

#[test]
fn start_up_with_a_configmap() {
    let source = node();
    source.write(KUBE_DNS, "upstreamNameservers", "[\"8.8.8.8\"]");
    source.write(KUBE_DNS, "stubDomains", "{\"acme.local\": [\"1.2.3.4\"]}");
    let startup = start(&source, Instant::now());
    assert_eq!(startup.corefile, corefile_with("8.8.8.8") + STUB_BLOCK);
    assert!(startup.errors.is_empty(), "{:?}", startup.errors);
}

#[test]
fn start_up_without_configmap_directory() {
    let source = node();
    source.remove_directory(KUBE_DNS);
    let no_directory = CorefileSettings {
        kube_dns_directory: None,
        ..settings()
    };
    let now = Instant::now();
    let startup =
        CorefileSync::start(no_directory, environment, POLL_PERIOD, now, &source).unwrap();
    assert_eq!(startup.corefile, corefile_with("/etc/resolv.conf"));
    assert!(startup.errors.is_empty());

    // Configured but missing: the Corefile without it, and the directory reported.
    let startup = start(&source, now);
    assert_eq!(startup.corefile, corefile_with("/etc/resolv.conf"));
    assert!(
        matches!(startup.errors[..], [SyncError::Directory(_)]),
        "{:?}",
        startup.errors
    );
    assert_eq!(startup.errors[0].setup_error_type(), None);
}

#[test]
fn start_up_with_an_invalid_configmap_leaves_it_out() {
    let source = node();
    source.write(KUBE_DNS, "upstreamNameservers", "[\"8.8.8.8\"");
    let startup = start(&source, Instant::now());
    assert_eq!(startup.corefile, corefile_with("/etc/resolv.conf"));
    let [SyncError::ConfigMap(error)] = &startup.errors[..] else {
        panic!("{:?}", startup.errors);
    };
    assert!(matches!(error.problem, ConfigMapProblem::Json { .. }));
    assert!(
        startup.errors[0]
            .to_string()
            .ends_with("; keeping the current ConfigMap")
    );
}

#[test]
fn start_up_fails_without_a_base_corefile_or_the_environment() {
    let source = node();
    source.remove(BASE_DIRECTORY, "Corefile.base");
    let error = CorefileSync::start(
        settings(),
        environment,
        POLL_PERIOD,
        Instant::now(),
        &source,
    )
    .unwrap_err();
    let StartError::NoCorefile { errors, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        matches!(errors[..], [SyncError::BaseCorefile(_)]),
        "{errors:?}"
    );
    assert_eq!(
        errors[0].setup_error_type(),
        Some(SetupErrorType::Configmap)
    );
    assert!(
        error.to_string().contains("/etc/coredns/Corefile.base"),
        "{error}"
    );

    source.remove_directory(BASE_DIRECTORY);
    let error = CorefileSync::start(
        settings(),
        environment,
        POLL_PERIOD,
        Instant::now(),
        &source,
    )
    .unwrap_err();
    // The (valid, empty) ConfigMap asks for a Corefile, which cannot be read either.
    let StartError::NoCorefile { errors, .. } = &error else {
        panic!("{error}")
    };
    assert!(
        matches!(
            errors[..],
            [SyncError::Directory(_), SyncError::BaseCorefile(_)]
        ),
        "{errors:?}"
    );

    let source = node();
    let error = CorefileSync::start(settings(), |_| None, POLL_PERIOD, Instant::now(), &source)
        .unwrap_err();
    assert!(matches!(
        error,
        StartError::Settings(CorefileError::Template(
            TemplateError::MissingEnvironmentVariable { .. }
        ))
    ));
}

#[test]
fn changes_regenerate_the_corefile() {
    let source = node();
    let start_time = Instant::now();
    let Startup { mut sync, .. } = start(&source, start_time);
    let at = |periods: u32| start_time + periods * POLL_PERIOD;

    // Nothing due, then nothing changed.
    assert!(
        sync.poll(at(1) - Duration::from_millis(1), &source)
            .corefile
            .is_none()
    );
    let outcome = sync.poll(at(1), &source);
    assert!(
        outcome.corefile.is_none() && outcome.errors.is_empty(),
        "{outcome:?}"
    );

    // A stub domain appears.
    source.write(KUBE_DNS, "stubDomains", "{\"acme.local\": [\"1.2.3.4\"]}");
    let outcome = sync.poll(at(2), &source);
    assert_eq!(
        outcome.corefile.unwrap(),
        corefile_with("/etc/resolv.conf") + STUB_BLOCK
    );

    // The base Corefile changes: regenerated with the current ConfigMap.
    source.write(
        BASE_DIRECTORY,
        "Corefile.base",
        &format!("# edited\n{BASE}"),
    );
    let outcome = sync.poll(at(3), &source);
    let expected = format!(
        "# edited\n{}{STUB_BLOCK}",
        corefile_with("/etc/resolv.conf")
    );
    assert_eq!(outcome.corefile.unwrap(), expected);

    // Both change at once: one Corefile.
    source.write(BASE_DIRECTORY, "Corefile.base", BASE);
    source.write(
        KUBE_DNS,
        "upstreamNameservers",
        "[\"8.8.8.8\", \"8.8.4.4\"]",
    );
    let outcome = sync.poll(at(4), &source);
    assert_eq!(
        outcome.corefile.unwrap(),
        corefile_with("8.8.8.8 8.8.4.4") + STUB_BLOCK
    );

    // The optional ConfigMap deleted: its directory empties, its stubs and upstreams go.
    source.remove(KUBE_DNS, "stubDomains");
    source.remove(KUBE_DNS, "upstreamNameservers");
    let outcome = sync.poll(at(5), &source);
    assert_eq!(outcome.corefile.unwrap(), corefile_with("/etc/resolv.conf"));
    assert_eq!(sync.generator().kube_dns(), &KubeDnsConfig::default());
}

#[test]
fn an_invalid_configmap_keeps_the_current_one() {
    let source = node();
    source.write(KUBE_DNS, "stubDomains", "{\"acme.local\": [\"1.2.3.4\"]}");
    let start_time = Instant::now();
    let Startup { mut sync, .. } = start(&source, start_time);
    let at = |periods: u32| start_time + periods * POLL_PERIOD;

    // Four upstreams: kube-dns's check, logged only by node-cache.
    source.write(
        KUBE_DNS,
        "upstreamNameservers",
        r#"["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]"#,
    );
    let outcome = sync.poll(at(1), &source);
    assert!(outcome.corefile.is_none());
    let [SyncError::ConfigMap(error)] = &outcome.errors[..] else {
        panic!("{outcome:?}")
    };
    assert!(matches!(
        error.problem,
        ConfigMapProblem::TooManyUpstreamNameservers { count: 4 }
    ));
    assert_eq!(
        outcome.errors[0].setup_error_type(),
        Some(SetupErrorType::Configmap)
    );

    // Unchanged since: not reported again (node-cache remembers the refused version too).
    let outcome = sync.poll(at(2), &source);
    assert!(
        outcome.corefile.is_none() && outcome.errors.is_empty(),
        "{outcome:?}"
    );

    // A host name for a stub: node-cache's own check, counted.
    source.write(KUBE_DNS, "upstreamNameservers", "[\"8.8.8.8\"]");
    source.write(
        KUBE_DNS,
        "stubDomains",
        "{\"acme.local\": [\"ns.acme.local\"]}",
    );
    let outcome = sync.poll(at(3), &source);
    let [SyncError::ConfigMap(error)] = &outcome.errors[..] else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.check(), ConfigMapCheck::NodeLocalCache);
    assert_eq!(
        outcome.errors[0].setup_error_type(),
        Some(SetupErrorType::Configmap)
    );

    // The base Corefile changes meanwhile: regenerated with the last valid ConfigMap.
    source.write(
        BASE_DIRECTORY,
        "Corefile.base",
        &format!("# edited\n{BASE}"),
    );
    let outcome = sync.poll(at(4), &source);
    let expected = format!(
        "# edited\n{}{STUB_BLOCK}",
        corefile_with("/etc/resolv.conf")
    );
    assert_eq!(outcome.corefile.unwrap(), expected);
}

#[test]
fn an_unreadable_base_corefile_is_reported_and_retried_on_change() {
    let source = node();
    let start_time = Instant::now();
    let Startup { mut sync, .. } = start(&source, start_time);
    let at = |periods: u32| start_time + periods * POLL_PERIOD;

    source.remove(BASE_DIRECTORY, "Corefile.base");
    let outcome = sync.poll(at(1), &source);
    assert!(outcome.corefile.is_none());
    assert!(
        matches!(outcome.errors[..], [SyncError::BaseCorefile(_)]),
        "{outcome:?}"
    );

    source.write(BASE_DIRECTORY, "Corefile.base", BASE);
    let outcome = sync.poll(at(2), &source);
    assert_eq!(outcome.corefile.unwrap(), corefile_with("/etc/resolv.conf"));
}
