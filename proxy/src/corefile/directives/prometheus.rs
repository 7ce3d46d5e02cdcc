//! The `prometheus [ADDRESS]` directive: where the process serves `/metrics` (CoreDNS's
//! default `localhost:9153`). The endpoint belongs to the process, not to the block: blocks
//! naming the same address share it (see [`crate::corefile::build`]).

use std::net::SocketAddr;

use super::no_block;
use crate::corefile::address;
use crate::corefile::parser::Directive;

/// A `prometheus [ADDRESS]` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PrometheusSettings {
    /// Where `/metrics` is served ([`address::parse_listen`]).
    pub addr: SocketAddr,
    /// The directive's line, for messages about conflicting addresses.
    pub line: usize,
}

/// `prometheus [ADDRESS]`; the address defaults to CoreDNS's `localhost:9153`.
pub(super) fn parse(directive: &Directive) -> Result<PrometheusSettings, String> {
    no_block(directive)?;
    let addr = match directive.args.as_slice() {
        [] => address::parse_http_listen("prometheus", address::PROMETHEUS_DEFAULT)?,
        [token] => address::parse_http_listen("prometheus", &token.text)?,
        [_, extra, ..] => {
            return Err(format!(
                "prometheus takes at most one address, got also {:?}",
                extra.text
            ));
        }
    };
    Ok(PrometheusSettings {
        addr,
        line: directive.line,
    })
}

#[cfg(test)]
mod tests {
    use crate::corefile::directives::tests::{error, settings};

    #[test]
    fn prometheus_forms() {
        let addr = |body: &str| settings(body).unwrap().prometheus.unwrap().addr.to_string();
        assert_eq!(settings("errors").unwrap().prometheus, None);
        assert_eq!(addr("prometheus"), "127.0.0.1:9153");
        assert_eq!(addr("prometheus :9253"), "0.0.0.0:9253");
        assert_eq!(addr("prometheus 0.0.0.0:9253"), "0.0.0.0:9253");
        assert_eq!(addr("prometheus [::]:9253"), "0.0.0.0:9253");
        assert_eq!(addr("prometheus 169.254.20.10:9253"), "169.254.20.10:9253");
        assert_eq!(addr("prometheus LocalHost:9154"), "127.0.0.1:9154");
        assert_eq!(addr("prometheus [::1]:9253"), "[::1]:9253");
        let prometheus = settings("errors\nprometheus :9253").unwrap().prometheus;
        assert_eq!(prometheus.map(|p| p.line), Some(3));
    }

    #[test]
    fn bad_prometheus() {
        assert_eq!(
            error("prometheus :9253\nprometheus :9253"),
            "Corefile:3: directive \"prometheus\" appears twice in this server block"
        );
        assert_eq!(
            error("prometheus :9253 :9254"),
            "Corefile:2: prometheus takes at most one address, got also \":9254\""
        );
        assert_eq!(
            error("prometheus :9253 {\n}"),
            "Corefile:2: prometheus takes no options block"
        );
        for (text, why) in [
            (
                "metrics.example:9253",
                "hostnames other than localhost are not supported",
            ),
            ("9253", "no port"),
            ("127.0.0.1", "no port"),
            (":http", "bad port"),
            (":99999", "bad port"),
            ("::1:9253", "IPv6 addresses go in brackets"),
            ("[127.0.0.1]:9253", "\"127.0.0.1\" is not an IPv6 address"),
            ("1.2.3.400:9253", "\"1.2.3.400\" is not an IP address"),
        ] {
            let got = error(&format!("prometheus {text}"));
            assert!(
                got.starts_with(&format!(
                    "Corefile:2: bad prometheus address {text:?}: {why}"
                )),
                "{text}: {got}"
            );
        }
    }
}
