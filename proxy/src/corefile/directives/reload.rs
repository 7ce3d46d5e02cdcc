//! The `reload [INTERVAL] [JITTER]` directive: check the Corefile every INTERVAL ± JITTER and
//! apply it when what it says changed (CoreDNS's defaults and limits: 30 s ± 15 s, INTERVAL at
//! least 2 s, JITTER at least 1 s; a JITTER over half of INTERVAL is cut to half, as CoreDNS
//! does).

use std::time::Duration;

use crate::corefile::parser::Directive;
use crate::corefile::{ConfigError, duration};

const INTERVAL: Duration = Duration::from_secs(30);
const JITTER: Duration = Duration::from_secs(15);
const MIN_INTERVAL: Duration = Duration::from_secs(2);
const MIN_JITTER: Duration = Duration::from_secs(1);

/// How often the Corefile is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReloadSettings {
    pub interval: Duration,
    pub jitter: Duration,
}

/// Reads a `reload` directive.
pub(super) fn parse(file: &str, directive: &Directive) -> Result<ReloadSettings, ConfigError> {
    let at = |line: usize, message: String| ConfigError::at(file, line, message);
    if directive.block.is_some() {
        return Err(at(
            directive.line,
            "reload takes no options block".to_string(),
        ));
    }
    if directive.args.len() > 2 {
        return Err(at(
            directive.args[2].line,
            "reload takes at most INTERVAL and JITTER".to_string(),
        ));
    }
    let value = |index: usize, what: &str, default: Duration| match directive.args.get(index) {
        None => Ok(default),
        Some(token) => duration::parse(&token.text).map_err(|error| {
            at(
                token.line,
                format!("bad reload {what} {:?}: {error}", token.text),
            )
        }),
    };
    let interval = value(0, "interval", INTERVAL)?;
    let jitter = value(1, "jitter", JITTER)?;
    let line = |index: usize| directive.args.get(index).map_or(directive.line, |t| t.line);
    if interval < MIN_INTERVAL {
        return Err(at(
            line(0),
            format!("reload interval {interval:?} is below the minimum of 2s"),
        ));
    }
    if jitter < MIN_JITTER {
        return Err(at(
            line(1),
            format!("reload jitter {jitter:?} is below the minimum of 1s"),
        ));
    }
    Ok(ReloadSettings {
        interval,
        jitter: jitter.min(interval / 2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corefile::parser;

    fn reload(line: &str) -> Result<ReloadSettings, String> {
        let text = format!(". {{\n    {line}\n}}\n");
        let blocks = parser::parse("Corefile", &text).map_err(|e| e.to_string())?;
        parse("Corefile", &blocks[0].directives[0]).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_forms() {
        let secs = Duration::from_secs;
        assert_eq!(
            reload("reload").unwrap(),
            ReloadSettings {
                interval: secs(30),
                jitter: secs(15)
            }
        );
        assert_eq!(reload("reload 10s").unwrap().interval, secs(10));
        // The default jitter is cut to half the interval.
        assert_eq!(reload("reload 10s").unwrap().jitter, secs(5));
        assert_eq!(reload("reload 10s 6s").unwrap().jitter, secs(5));
        let got = reload("reload 1m 20s").unwrap();
        assert_eq!((got.interval, got.jitter), (secs(60), secs(20)));
        let got = reload("reload 2s 1s").unwrap();
        assert_eq!((got.interval, got.jitter), (secs(2), secs(1)));
    }

    #[test]
    fn errors_name_the_line_and_the_limit() {
        assert_eq!(
            reload("reload 1s 1s").unwrap_err(),
            "Corefile:2: reload interval 1s is below the minimum of 2s"
        );
        assert_eq!(
            reload("reload 10s 500ms").unwrap_err(),
            "Corefile:2: reload jitter 500ms is below the minimum of 1s"
        );
        assert!(
            reload("reload soon")
                .unwrap_err()
                .starts_with("Corefile:2: bad reload interval \"soon\"")
        );
        assert!(
            reload("reload 10s 2s 1s")
                .unwrap_err()
                .contains("at most INTERVAL and JITTER")
        );
        assert!(
            reload("reload {\n}")
                .unwrap_err()
                .contains("no options block")
        );
    }
}
