//! The `health [ADDRESS] { lameduck DURATION }` and `ready [ADDRESS]` directives: where the
//! process answers `/health` (CoreDNS's default `:8080`) and `/ready` (`:8181`). Like
//! `prometheus`, the endpoints belong to the process: blocks naming the same address share
//! one. `lameduck` keeps DNS and `/health` answering for DURATION after SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use super::no_block;
use super::options::{Failure, OptionBlock, duration_arg, fail};
use crate::corefile::address;
use crate::corefile::parser::Directive;

/// CoreDNS's default `health` address.
const HEALTH_DEFAULT: &str = ":8080";

/// CoreDNS's default `ready` address.
const READY_DEFAULT: &str = ":8181";

/// A `health` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthSettings {
    /// Where `/health` is served ([`address::parse_listen`]).
    pub addr: SocketAddr,
    /// `lameduck DURATION`: how long to keep serving after SIGTERM.
    pub lameduck: Option<Duration>,
    /// The directive's line, for messages about conflicting addresses.
    pub line: usize,
}

/// A `ready` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadySettings {
    /// Where `/ready` is served.
    pub addr: SocketAddr,
    /// The directive's line.
    pub line: usize,
}

/// The one optional ADDRESS of `health` or `ready`.
fn address(directive: &Directive, default: &str) -> Result<SocketAddr, (usize, String)> {
    let name = &directive.name;
    match directive.args.as_slice() {
        [] => address::parse_http_listen(name, default).map_err(|m| (directive.line, m)),
        [token] => address::parse_http_listen(name, &token.text).map_err(|m| (token.line, m)),
        [_, extra, ..] => Err((
            extra.line,
            format!(
                "{name} takes at most one address, got also {:?}",
                extra.text
            ),
        )),
    }
}

/// `health [ADDRESS] { lameduck DURATION }`.
pub(super) fn parse_health(directive: &Directive) -> Result<HealthSettings, Failure> {
    let addr = address(directive, HEALTH_DEFAULT)?;
    let mut lameduck = None;
    let mut options = OptionBlock::new("health", &[]);
    for option in directive.block.iter().flatten() {
        options.admit(option)?;
        match option.name.as_str() {
            "lameduck" => {
                options.arity(option, 1, 1, "a DURATION, e.g. lameduck 5s")?;
                let duration = duration_arg(
                    &option.args[0],
                    "lameduck duration",
                    "a Go duration above 0",
                )?;
                if duration.is_zero() {
                    return Err(fail(
                        &option.args[0],
                        "lameduck duration must be above 0".to_string(),
                    ));
                }
                lameduck = Some(duration);
            }
            other => {
                return Err((
                    option.line,
                    format!("unknown health option {other:?} (expected lameduck)"),
                ));
            }
        }
    }
    Ok(HealthSettings {
        addr,
        lameduck,
        line: directive.line,
    })
}

/// `ready [ADDRESS]`.
pub(super) fn parse_ready(directive: &Directive) -> Result<ReadySettings, Failure> {
    no_block(directive).map_err(|message| (directive.line, message))?;
    Ok(ReadySettings {
        addr: address(directive, READY_DEFAULT)?,
        line: directive.line,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::corefile::directives::tests::{error, settings};

    #[test]
    fn health_forms() {
        let health = |body: &str| settings(body).unwrap().health.unwrap();
        assert_eq!(health("health").addr.to_string(), "0.0.0.0:8080");
        assert_eq!(
            health("health 169.254.20.10:8080").addr.to_string(),
            "169.254.20.10:8080"
        );
        assert_eq!(health("health").lameduck, None);
        assert_eq!(
            health("health :8080 {\n lameduck 5s\n}").lameduck,
            Some(Duration::from_secs(5))
        );
        assert_eq!(health("errors\nhealth").line, 3);
    }

    #[test]
    fn ready_forms() {
        let ready = |body: &str| settings(body).unwrap().ready.unwrap();
        assert_eq!(ready("ready").addr.to_string(), "0.0.0.0:8181");
        assert_eq!(
            ready("ready 127.0.0.1:9181").addr.to_string(),
            "127.0.0.1:9181"
        );
    }

    #[test]
    fn bad_health_and_ready() {
        assert_eq!(
            error("health :8080 :8081"),
            "Corefile:2: health takes at most one address, got also \":8081\""
        );
        assert!(
            error("health nonsense")
                .starts_with("Corefile:2: bad health address \"nonsense\": no port"),
            "{}",
            error("health nonsense")
        );
        assert!(
            error("ready :http").starts_with("Corefile:2: bad ready address \":http\": bad port")
        );
        assert_eq!(
            error("health {\n lameduck\n}"),
            "Corefile:3: health option \"lameduck\" takes a DURATION, e.g. lameduck 5s"
        );
        assert!(
            error("health {\n lameduck soon\n}")
                .starts_with("Corefile:3: bad lameduck duration \"soon\"")
        );
        assert_eq!(
            error("health {\n lameduck 0s\n}"),
            "Corefile:3: lameduck duration must be above 0"
        );
        assert_eq!(
            error("health {\n lameduck 1s\n lameduck 2s\n}"),
            "Corefile:4: health option \"lameduck\" appears twice (first at line 3)"
        );
        assert_eq!(
            error("health {\n slowly\n}"),
            "Corefile:3: unknown health option \"slowly\" (expected lameduck)"
        );
        assert_eq!(
            error("ready {\n}"),
            "Corefile:2: ready takes no options block"
        );
        assert_eq!(
            error("health\nhealth"),
            "Corefile:3: directive \"health\" appears twice in this server block"
        );
    }
}
