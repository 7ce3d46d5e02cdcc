//! The help's section for node-cache's flags: each with both spellings (`-localip, --localip
//! <IPS>`), its meaning and its default, taken from the (hidden) clap arguments so that the
//! help and the parser cannot disagree.
//!
//! clap's option table has one column for a short (one letter) and a long name, so it cannot
//! show `-localip`; the node-cache flags are hidden there and listed after it instead.

use clap::{Arg, Command};

use super::go_syntax::{GO_FLAGS, GoKind};

/// The section's heading.
const HEADING: &str = "Node-cache flags";

/// How the section explains Go's syntax.
const SYNTAX: &str = "As node-cache takes them (Go's flag syntax, one dash or two): -name VALUE or \
                      -name=VALUE; a boolean as -name or -name=false.";

/// Where the help text starts, as in clap's long help.
const INDENT: &str = "          ";

/// Help lines are wrapped at this many columns.
const WIDTH: usize = 100;

/// Adds the node-cache section after `command`'s option table.
pub(super) fn with_node_cache_section(command: Command) -> Command {
    let section = node_cache_section(&command);
    command.after_help(section)
}

/// The section's text: the heading, the syntax, then each flag.
fn node_cache_section(command: &Command) -> String {
    let mut text = format!("{HEADING}:\n");
    for line in wrap(SYNTAX.split_whitespace(), WIDTH - 2) {
        text.push_str(&format!("  {line}\n"));
    }
    let listed = GO_FLAGS
        .iter()
        .filter(|go| go.name == go.long && go.long != "version");
    for go in listed {
        let Some(arg) = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(go.long))
        else {
            continue;
        };
        text.push_str(&format!("\n  {}\n", spellings(go.name, go.kind, arg)));
        for line in wrap(meaning(arg), WIDTH - INDENT.len()) {
            text.push_str(&format!("{INDENT}{line}\n"));
        }
    }
    text
}

/// `-localip, --localip <IPS>`, or `-setupiptables[=BOOL], --setupiptables[=BOOL]`.
fn spellings(name: &str, kind: GoKind, arg: &Arg) -> String {
    match kind {
        GoKind::Bool => format!("-{name}[=BOOL], --{name}[=BOOL]"),
        GoKind::Value => {
            let value_name = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| "VALUE".to_string(), ToString::to_string);
            format!("-{name}, --{name} <{value_name}>")
        }
    }
}

/// The argument's help, word by word, then its default as one piece, `[default: 8080]` (none
/// when the default is empty).
fn meaning(arg: &Arg) -> Vec<String> {
    let mut pieces: Vec<String> = arg
        .get_help()
        .map(ToString::to_string)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy().into_owned())
        .filter(|value| !value.is_empty())
        .collect();
    if !defaults.is_empty() {
        pieces.push(format!("[default: {}]", defaults.join(", ")));
    }
    pieces
}

/// `pieces` joined by spaces in lines of at most `width` characters (a longer piece stays
/// whole, on a line of its own).
fn wrap<S: AsRef<str>>(pieces: impl IntoIterator<Item = S>, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for piece in pieces {
        let piece = piece.as_ref();
        if !line.is_empty() && line.chars().count() + 1 + piece.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(piece);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn wrapping() {
        assert_eq!(wrap(["a", "bb", "ccc"], 4), ["a bb", "ccc"]);
        assert_eq!(wrap(["a", "bb", "ccc"], 8), ["a bb ccc"]);
        assert_eq!(wrap(["abcdef", "gh"], 4), ["abcdef", "gh"]);
        assert_eq!(wrap(["a", "[default: 8080]"], 8), ["a", "[default: 8080]"]);
        assert!(wrap(Vec::<String>::new(), 4).is_empty());
    }

    #[test]
    fn every_node_cache_flag_is_listed_with_both_spellings() {
        let help = crate::cli::Args::command().render_long_help().to_string();
        let section = &help[help.find("Node-cache flags:").expect("the section")..];
        for go in GO_FLAGS
            .iter()
            .filter(|go| go.name == go.long && go.long != "version")
        {
            let both = match go.kind {
                GoKind::Bool => format!("-{0}[=BOOL], --{0}[=BOOL]\n", go.name),
                GoKind::Value => format!("-{0}, --{0} <", go.name),
            };
            assert!(section.contains(&both), "{both:?} in\n{section}");
        }
        assert!(section.contains("-localip, --localip <IPS>\n"));
        assert!(section.contains("-conf, --conf <FILE>\n"));
        assert!(section.contains("[default: 60ns]"));
        assert!(section.contains("[default: kube-dns]"));
        assert!(section.contains("[default: true]"));
        assert!(section.contains("-p is the same"));
        // Hidden from clap's table, where `--localip` alone would be listed.
        let table = &help[..help.find("Node-cache flags:").unwrap()];
        assert!(!table.contains("--localip"), "{table}");
        assert!(!table.contains("--conf"), "{table}");
        assert!(table.contains("--shards <N>"), "{table}");
        for line in section.lines() {
            assert!(line.chars().count() <= WIDTH, "{line:?}");
        }
    }
}
