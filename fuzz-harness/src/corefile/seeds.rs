//! Seed inputs of the Corefile target, and its dictionary. The bounded test starts from them,
//! and `cargo run -p shardns-fuzz-harness --example write-corpus` writes them for `cargo fuzz`.

/// node-local-dns's Corefile, placeholders filled.
pub const STOCK: &str = include_str!("../../../proxy/testdata/stock.Corefile");
/// node-cache's Corefile template, placeholders left (an error at a line).
pub const TEMPLATE: &str = include_str!("../../../proxy/testdata/Corefile.base");

/// Every directive with every option, in two blocks.
pub const EVERYTHING: &str = r#"# every directive, every option
.:53 {
    errors
    log . example.org
    cache 30 . example.org {
        success 1000 300 5
        denial 500 60 1
        prefetch 2 1m 20%
        serve_stale 1h verify
        servfail 10s
        disable denial sub.example.org
        keepttl
    }
    forward . 10.0.0.1:5353 [2001:db8::1]:53 dns://10.0.0.2 {
        except internal.example other.example
        force_tcp
        expire 20s
        max_fails 3
        policy round_robin
        health_check 2s no_rec domain example.org
        max_concurrent 100
        next NXDOMAIN SERVFAIL
        failfast_all_unhealthy_upstreams
    }
    acl example.org {
        block type ANY net 10.0.0.0/8
        filter type AAAA
        drop net 192.168.0.0/16 2001:db8::/32
        allow net *
    }
    ratelimit 50 {
        burst 100
        whitelist 127.0.0.1 10.0.0.0/8
        action truncate
        ipv4_prefix 24
        ipv6_prefix 56
        table 1024
    }
    prometheus 127.0.0.1:9253
    health 127.0.0.1:8080 {
        lameduck 5s
    }
    ready 127.0.0.1:8181
    reload 10s 2s
    loop
    bind 127.0.0.1 ::1
}
example.com:5300 another.test {
    bind 127.0.0.2
    forward . 127.0.0.53 {
        prefer_udp
        policy sequential
    }
    cache {
        serve_stale 10m immediate
        prefetch 5
    }
    acl {
        drop type HINFO
    }
}
"#;

/// Small Corefiles: quoting, comments, schemes, several blocks.
pub const SMALL: &[&str] = &[
    ".:5353 {\n    forward . 127.0.0.1\n}\n",
    ". {\n cache\n forward . 1.1.1.1 8.8.8.8:53\n}",
    "dns://.:53 {\n forward . dns://[::1]:53 { force_tcp }\n}\n",
    "cluster.local:53 in-addr.arpa {\n bind 127.0.0.1 ::1\n cache 5 cluster.local\n forward . 10.96.0.10\n}\n",
    "\"quoted.zone\":53 {\n  forward . \"127.0.0.1\" # comment\n  errors\n}\n",
    ".:53 {\n ratelimit\n forward . 127.0.0.1\n}\n.:54 {\n acl {\n  block\n }\n}\n",
];

/// Corefile words, for insertion anywhere (the mutator's dictionary).
pub const WORDS: &[&str] = &[
    "{",
    "}",
    "\n",
    " ",
    "\"",
    "#",
    ";",
    ":",
    ".",
    "\\",
    "{$",
    "{$HOME}",
    "$",
    ":53",
    ":0",
    "dns://",
    "[::1]",
    "127.0.0.1",
    "10.0.0.0/8",
    "::/0",
    "*",
    "0",
    "-1",
    "99999999999999999999",
    "1h",
    "1.5s",
    "-5s",
    "100%",
    "cache",
    "forward",
    "errors",
    "log",
    "bind",
    "loop",
    "reload",
    "health",
    "ready",
    "prometheus",
    "acl",
    "ratelimit",
    "success",
    "denial",
    "prefetch",
    "serve_stale",
    "servfail",
    "disable",
    "keepttl",
    "except",
    "force_tcp",
    "prefer_udp",
    "expire",
    "max_fails",
    "policy",
    "random",
    "round_robin",
    "sequential",
    "health_check",
    "no_rec",
    "domain",
    "max_concurrent",
    "next",
    "failfast_all_unhealthy_upstreams",
    "tls",
    "tls_servername",
    "tls://",
    "block",
    "filter",
    "drop",
    "allow",
    "type",
    "net",
    "ANY",
    "TYPE65",
    "burst",
    "whitelist",
    "action",
    "refuse",
    "truncate",
    "ipv4_prefix",
    "ipv6_prefix",
    "table",
    "lameduck",
    "immediate",
    "verify",
    "NXDOMAIN",
    "RCODE12",
    "in-addr.arpa",
    "ip6.arpa",
    "xn--nxasmq6b.",
    "a..b",
    ".:53 {\n",
    "import",
    "\u{feff}",
];

/// Every seed Corefile.
pub fn all() -> Vec<&'static str> {
    let mut seeds = vec![STOCK, TEMPLATE, EVERYTHING];
    seeds.extend_from_slice(SMALL);
    seeds
}
