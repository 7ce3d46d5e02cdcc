//! Hooks for the fuzz targets (`fuzz/`) and their bounded runs in the test suite
//! (`fuzz-harness/`). Not an API: hidden from the documentation, and free to change with them.

use shardns_shard::Config;

use crate::corefile::{self, ConfigError};

/// Why a Corefile did not build: the file and line it names (if any) and the message as
/// shardns prints it (`FILE:LINE: message` or `FILE: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorefileError {
    pub file: String,
    pub line: Option<usize>,
    pub display: String,
}

/// Builds Corefile `text` (named `file` in errors) as `--conf` does, after the file is read:
/// tokenizer, parser, directives and build. `forward` targets that are paths are read as
/// resolv.conf files.
pub fn build_corefile(file: &str, text: &str) -> Result<Config, CorefileError> {
    match corefile::build_process(file, text) {
        Ok(process) => Ok(process.config),
        Err(error) => {
            let display = error.to_string();
            let (file, line) = match error {
                ConfigError::At { file, line, .. } => (file, Some(line)),
                ConfigError::File { file, .. } => (file, None),
            };
            Err(CorefileError {
                file,
                line,
                display,
            })
        }
    }
}
