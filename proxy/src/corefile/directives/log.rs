//! The `log [NAMES...]` directive: a line per query, in CoreDNS's default format
//! (`{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode}
//! {>rflags} {rsize} {duration}`), for queries under NAMES (default: every name of the
//! block). Custom formats and the `class` option are not supported yet.

use super::no_block;
use crate::corefile::address;
use crate::corefile::parser::Directive;

/// A `log` directive: the zones it logs, lowercase wire form (empty: every name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogSettings {
    pub zones: Vec<Vec<u8>>,
}

/// `log [NAMES...]`.
pub(super) fn parse(directive: &Directive) -> Result<LogSettings, (usize, String)> {
    if directive.block.is_some() {
        return Err((
            directive.line,
            "log options (class) are not supported yet".to_string(),
        ));
    }
    no_block(directive).map_err(|message| (directive.line, message))?;
    let mut zones = Vec::new();
    for token in &directive.args {
        if token.text.contains('{') {
            return Err((
                token.line,
                format!("log formats are not supported yet, got {:?}", token.text),
            ));
        }
        let zone = address::parse_zone(&token.text).map_err(|m| (token.line, m))?;
        if !zones.contains(&zone.wire) {
            zones.push(zone.wire);
        }
    }
    Ok(LogSettings { zones })
}

#[cfg(test)]
mod tests {
    use crate::corefile::directives::tests::{error, settings};

    #[test]
    fn log_forms() {
        let log = |body: &str| settings(body).unwrap().log.unwrap();
        assert!(log("log").zones.is_empty());
        assert_eq!(
            log("log example.org example.org").zones,
            [b"\x07example\x03org\x00"]
        );
        assert_eq!(settings("errors").unwrap().log, None);
    }

    #[test]
    fn bad_log() {
        assert_eq!(
            error("log . \"{remote} {name}\""),
            "Corefile:2: log formats are not supported yet, got \"{remote} {name}\""
        );
        assert_eq!(
            error("log {\n class denial\n}"),
            "Corefile:2: log options (class) are not supported yet"
        );
    }
}
