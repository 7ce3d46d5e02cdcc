//! Tests of reading the kube-dns ConfigMap and of the stub-domain blocks.

use super::*;

fn files(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
        .collect()
}

fn read(entries: &[(&str, &str)]) -> Result<KubeDnsConfig, ConfigMapError> {
    KubeDnsConfig::from_files(Path::new("/etc/kube-dns"), &files(entries))
}

fn refused(entries: &[(&str, &str)]) -> ConfigMapError {
    read(entries).expect_err("the ConfigMap should be refused")
}

const LOCAL_IPS: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 20, 10)),
    IpAddr::V4(std::net::Ipv4Addr::new(10, 96, 0, 10)),
];

#[test]
fn no_files_is_an_empty_config() {
    assert_eq!(read(&[]).unwrap(), KubeDnsConfig::default());
    let other = read(&[("Corefile.base", "anything"), ("unrelated", "{")]).unwrap();
    assert_eq!(other, KubeDnsConfig::default());
}

#[test]
fn stub_domains_and_upstreams_are_read() {
    let config = read(&[
        (
            STUB_DOMAINS_FILE,
            r#"{"example.com": ["10.0.0.1:5353", "10.0.0.2"], "acme.local": ["1.2.3.4"]}"#,
        ),
        (
            UPSTREAM_NAMESERVERS_FILE,
            r#"["8.8.8.8", "[2001:db8::1]:53"]"#,
        ),
        (FEDERATIONS_FILE, "myfed=example.com"),
    ])
    .unwrap();
    let domains: Vec<_> = config.stub_domains().keys().map(String::as_str).collect();
    assert_eq!(domains, ["acme.local", "example.com"]);
    assert_eq!(
        config.stub_domains()["example.com"],
        ["10.0.0.1:5353", "10.0.0.2"]
    );
    assert_eq!(
        config.upstream_nameservers(),
        ["8.8.8.8", "[2001:db8::1]:53"]
    );
}

#[test]
fn json_null_reads_as_nothing() {
    let config = read(&[
        (STUB_DOMAINS_FILE, "null"),
        (UPSTREAM_NAMESERVERS_FILE, " null "),
    ]);
    assert_eq!(config.unwrap(), KubeDnsConfig::default());
}

#[test]
fn stub_domain_blocks_are_node_cache_text() {
    let config = read(&[(
        STUB_DOMAINS_FILE,
        r#"{"example.com": ["10.0.0.1:5353", "10.0.0.2"], "acme.local": ["1.2.3.4"]}"#,
    )])
    .unwrap();
    let expected = "
acme.local:53 {
    errors
    cache 30
    bind 169.254.20.10 10.96.0.10
    forward . 1.2.3.4
}

example.com:53 {
    errors
    cache 30
    bind 169.254.20.10 10.96.0.10
    forward . 10.0.0.1:5353 10.0.0.2
}
";
    assert_eq!(stub_domain_blocks(&config, &LOCAL_IPS, 53), expected);
    let on_5353 = stub_domain_blocks(&config, &LOCAL_IPS[..1], 5353);
    assert!(on_5353.starts_with("\nacme.local:5353 {\n"), "{on_5353}");
    assert!(on_5353.contains("    bind 169.254.20.10\n"), "{on_5353}");
    assert_eq!(
        stub_domain_blocks(&KubeDnsConfig::default(), &LOCAL_IPS, 53),
        ""
    );
}

#[test]
fn bad_json_names_the_file_line_and_what_was_expected() {
    let error = refused(&[(STUB_DOMAINS_FILE, "{\n  \"acme.local\": \"1.2.3.4\"\n}")]);
    assert_eq!(error.file, Path::new("/etc/kube-dns/stubDomains"));
    assert!(
        matches!(error.problem, ConfigMapProblem::Json { line: 2, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.starts_with("kube-dns ConfigMap /etc/kube-dns/stubDomains: line 2,"));
    assert!(
        message.contains("expected a JSON object mapping each domain"),
        "{message}"
    );
    assert_eq!(error.check(), ConfigMapCheck::KubeDns);
    assert_eq!(error.setup_error_type(), SetupErrorType::Configmap);

    let error = refused(&[(UPSTREAM_NAMESERVERS_FILE, "[\"8.8.8.8\",]")]);
    assert_eq!(error.file, Path::new("/etc/kube-dns/upstreamNameservers"));
    assert!(
        error
            .to_string()
            .contains("expected a JSON list of at most 3"),
        "{error}"
    );
    for not_json in ["", "8.8.8.8", "[\"8.8.8.8\"] extra", "[53]", "{}"] {
        let error = refused(&[(UPSTREAM_NAMESERVERS_FILE, not_json)]);
        assert!(
            matches!(error.problem, ConfigMapProblem::Json { .. }),
            "{not_json}"
        );
    }
}

#[test]
fn too_many_upstreams() {
    let four = r#"["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]"#;
    let error = refused(&[(UPSTREAM_NAMESERVERS_FILE, four)]);
    assert!(matches!(
        error.problem,
        ConfigMapProblem::TooManyUpstreamNameservers { count: 4 }
    ));
    assert_eq!(
        error.to_string(),
        "kube-dns ConfigMap /etc/kube-dns/upstreamNameservers: 4 upstream nameservers (at most \
         3 are allowed)"
    );
    let three = r#"["1.1.1.1", "1.0.0.1", "8.8.8.8"]"#;
    assert_eq!(
        read(&[(UPSTREAM_NAMESERVERS_FILE, three)])
            .unwrap()
            .upstream_nameservers()
            .len(),
        3
    );
}

#[test]
fn bad_upstream_addresses() {
    for bad in [
        "8.8.8.300",
        "dns.google",
        "8.8.8.8:0",
        "8.8.8.8:99999",
        "tls://8.8.8.8",
    ] {
        let error = refused(&[(UPSTREAM_NAMESERVERS_FILE, &format!("[\"{bad}\"]"))]);
        let ConfigMapProblem::UpstreamNameserver {
            nameserver, check, ..
        } = &error.problem
        else {
            panic!("{bad}: {error}");
        };
        assert_eq!(nameserver, bad);
        assert_eq!(*check, ConfigMapCheck::KubeDns, "{bad}");
    }
}

#[test]
fn bad_stub_domains() {
    let error = refused(&[(STUB_DOMAINS_FILE, r#"{"Acme.Local": ["1.2.3.4"]}"#)]);
    assert!(
        matches!(&error.problem, ConfigMapProblem::StubDomainName { domain } if domain == "Acme.Local")
    );
    assert_eq!(error.setup_error_type(), SetupErrorType::Configmap);

    let error = refused(&[(STUB_DOMAINS_FILE, r#"{"acme.local": ["1.2.3.4:70000"]}"#)]);
    assert!(
        error.to_string().contains("port \"70000\" is not a number"),
        "{error}"
    );
    assert_eq!(error.check(), ConfigMapCheck::KubeDns);

    let error = refused(&[(STUB_DOMAINS_FILE, r#"{"acme.local": ["2001:DB8::1"]}"#)]);
    assert_eq!(
        error.check(),
        ConfigMapCheck::KubeDns,
        "not canonical: {error}"
    );

    let error = refused(&[(STUB_DOMAINS_FILE, r#"{"acme.local": []}"#)]);
    assert!(
        matches!(error.problem, ConfigMapProblem::NoStubNameservers { .. }),
        "{error}"
    );
    let error = refused(&[(STUB_DOMAINS_FILE, r#"{"acme.local": null}"#)]);
    assert!(
        matches!(error.problem, ConfigMapProblem::NoStubNameservers { .. }),
        "{error}"
    );
}

#[test]
fn host_names_pass_kube_dns_but_not_node_cache() {
    // kube-dns accepts a stub nameserver that is a host name; node-cache's forward check
    // does not, and counts it as a configmap setup error.
    let error = refused(&[(STUB_DOMAINS_FILE, r#"{"acme.local": ["ns.acme.local"]}"#)]);
    let ConfigMapProblem::StubNameserver {
        domain,
        nameserver,
        check,
        ..
    } = &error.problem
    else {
        panic!("{error}");
    };
    assert_eq!(
        (domain.as_str(), nameserver.as_str()),
        ("acme.local", "ns.acme.local")
    );
    assert_eq!(*check, ConfigMapCheck::NodeLocalCache);
    assert_eq!(error.setup_error_type(), SetupErrorType::Configmap);
    assert!(error.to_string().contains("not an IP address"), "{error}");
}

#[test]
fn bad_federations_refuse_the_configmap() {
    let error = refused(&[(FEDERATIONS_FILE, "myfed"), (STUB_DOMAINS_FILE, "{}")]);
    assert_eq!(error.file, Path::new("/etc/kube-dns/federations"));
    assert!(matches!(error.problem, ConfigMapProblem::Federations(_)));
}

#[test]
fn the_directory_to_watch() {
    let default = Path::new(DEFAULT_KUBE_DNS_DIRECTORY);
    let not_found = || Err(io::Error::from(io::ErrorKind::NotFound));
    let flag = Path::new("/config/kube-dns");
    assert_eq!(
        choose_kube_dns_directory(Some(flag), default, not_found()),
        Some(flag.into())
    );
    assert_eq!(choose_kube_dns_directory(None, default, not_found()), None);
    assert_eq!(
        choose_kube_dns_directory(Some(Path::new("")), default, not_found()),
        None
    );
    assert_eq!(
        choose_kube_dns_directory(None, default, Ok(())),
        Some(default.into())
    );
    let denied = Err(io::Error::from(io::ErrorKind::PermissionDenied));
    assert_eq!(
        choose_kube_dns_directory(None, default, denied),
        Some(default.into())
    );
}
