//! Go's `flag` syntax for node-cache's flags, rewritten into the `--LONG=VALUE` form clap
//! reads, so that node-cache's container arguments work unchanged beside shardns's own
//! `--long` arguments.
//!
//! node-cache and CoreDNS read their flags with Go's `flag` package (`flag.Parse`), whose
//! rules (`parseOne` in Go's `src/flag/flag.go`) are:
//!
//! - one dash or two mean the same: `-name`, `--name`;
//! - a value is given as `-name=VALUE` or as the next argument, `-name VALUE`, whatever that
//!   argument looks like (`-kubednscm -x` gives `-x`); none left is an error;
//! - a boolean is `-name` (true) or `-name=BOOL` with BOOL one of `1 0 t f T F true false
//!   TRUE FALSE True False`; `-name false` is `-name` followed by the argument `false`;
//! - parsing stops at the first argument that is not a flag (`-` counts as one) and after
//!   `--`; CoreDNS then refuses any argument left (`extra command line arguments`);
//! - a flag given twice takes its last value;
//! - `-h` and `-help` (not defined flags) ask for the usage.
//!
//! [`translate`] walks the command line with these rules. A flag of [`GO_FLAGS`], written
//! either way, becomes `--LONG=VALUE` (a boolean `--LONG=true|false`); shardns's own
//! arguments pass unchanged, each with its separate value when it takes one (`--shards 2`);
//! an argument that is neither is refused, as CoreDNS refuses it. Values are checked by clap
//! afterwards (`cli/node_cache.rs`), and an unknown flag is left for clap to refuse.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use clap::Command;
use clap::error::ErrorKind;

/// How a Go flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GoKind {
    /// `-name VALUE` or `-name=VALUE`.
    Value,
    /// `-name` (true) or `-name=BOOL`.
    Bool,
}

/// Where a flag applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Node setup only: refused without `-localip`.
    NodeLocal,
    /// Either mode.
    Always,
}

/// One flag name Go's flag set knows, and the clap argument it becomes.
#[derive(Debug)]
pub(super) struct GoFlag {
    /// The name, written `-name` or `--name`.
    pub name: &'static str,
    /// The clap argument's long name (the same, but for aliases: `p` is `dns.port`).
    pub long: &'static str,
    /// How it takes its value.
    pub kind: GoKind,
    /// Where it applies.
    pub scope: Scope,
}

/// Shorthand for the table.
const fn flag(name: &'static str, long: &'static str, kind: GoKind, scope: Scope) -> GoFlag {
    GoFlag {
        name,
        long,
        kind,
        scope,
    }
}

use GoKind::{Bool, Value};
use Scope::{Always, NodeLocal};

/// Every flag the k8s-dns-node-cache binary defines that shardns takes, in the order of the
/// help: node-cache's (kubernetes/dns `cmd/node-cache/main.go`) then CoreDNS's (coredns
/// `coremain/run.go`). CoreDNS's `-plugins` and `-quiet` are not taken (clap refuses them as
/// unknown).
pub(super) const GO_FLAGS: &[GoFlag] = &[
    flag("localip", "localip", Value, Always),
    flag("setupinterface", "setupinterface", Bool, NodeLocal),
    flag("interfacename", "interfacename", Value, NodeLocal),
    flag("syncinterval", "syncinterval", Value, NodeLocal),
    flag(
        "metrics-listen-address",
        "metrics-listen-address",
        Value,
        NodeLocal,
    ),
    flag("setupiptables", "setupiptables", Bool, NodeLocal),
    flag("basecorefile", "basecorefile", Value, NodeLocal),
    flag("corefile", "corefile", Value, NodeLocal),
    flag("kubednscm", "kubednscm", Value, NodeLocal),
    flag("upstreamsvc", "upstreamsvc", Value, NodeLocal),
    flag("health-port", "health-port", Value, NodeLocal),
    flag("skipteardown", "skipteardown", Bool, NodeLocal),
    flag("reloadwithsignal", "reloadwithsignal", Bool, NodeLocal),
    flag("conf", "conf", Value, Always),
    flag("pidfile", "pidfile", Value, Always),
    flag("dns.port", "dns.port", Value, Always),
    flag("p", "dns.port", Value, Always),
    // clap's `--version` (which takes no value): written only when true.
    flag("version", "version", Bool, Always),
];

/// Go's `strconv.ParseBool`, which boolean flags use.
pub(super) fn go_bool(text: &OsStr) -> Option<bool> {
    match text.as_bytes() {
        b"1" | b"t" | b"T" | b"true" | b"TRUE" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"false" | b"FALSE" | b"False" => Some(false),
        _ => None,
    }
}

/// The Go spellings of a boolean, for messages.
const GO_BOOLS: &str = "1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False";

/// One command-line argument, as Go's flag syntax sees it.
#[derive(Debug)]
enum Token<'a> {
    /// `--`: the end of the flags.
    End,
    /// Not a flag (`false`, `-`, ``): Go stops here.
    Argument,
    /// `-name`, `--name`, `-name=VALUE` or `--name=VALUE`; `spelled` is the part before `=`.
    Flag {
        name: &'a str,
        spelled: &'a str,
        value: Option<&'a OsStr>,
    },
    /// A dash and something Go would call bad syntax (`---x`, `-=x`) or a name that is not
    /// UTF-8: left for clap.
    Other,
}

impl<'a> Token<'a> {
    fn of(arg: &'a OsStr) -> Token<'a> {
        let bytes = arg.as_bytes();
        if bytes.len() < 2 || bytes[0] != b'-' {
            return Token::Argument;
        }
        if bytes == b"--" {
            return Token::End;
        }
        let dashes = if bytes[1] == b'-' { 2 } else { 1 };
        let body = &bytes[dashes..];
        // Go: "equals cannot be first".
        let (name, value) = match body.iter().skip(1).position(|&byte| byte == b'=') {
            Some(at) => (&body[..=at], Some(OsStr::from_bytes(&body[at + 2..]))),
            None => (body, None),
        };
        let Ok(name) = std::str::from_utf8(name) else {
            return Token::Other;
        };
        if name.is_empty() || name.starts_with(['-', '=']) {
            return Token::Other;
        }
        let spelled = std::str::from_utf8(&bytes[..dashes + name.len()]).unwrap_or(name);
        Token::Flag {
            name,
            spelled,
            value,
        }
    }
}

/// Rewrites `argv` (the program name first) for clap: node-cache's flags in Go's syntax become
/// `--LONG=VALUE`, shardns's own arguments pass unchanged. Errors are clap's, formatted with
/// `command`'s usage: a flag without its value, a boolean that is not one of Go's spellings,
/// an argument that is not a flag, anything after `--`, and a node-setup flag without
/// `-localip`.
pub(super) fn translate<I, T>(argv: I, command: &mut Command) -> Result<Vec<OsString>, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    command.build();
    let mut argv = argv.into_iter().map(Into::into);
    let mut out: Vec<OsString> = argv.next().into_iter().collect();
    let rest: Vec<OsString> = argv.collect();
    let mut position = 0;
    // A boolean flag just written without `=`, for the hint when an argument follows.
    let mut bare_bool: Option<&str> = None;
    let mut local_ips_given = false;
    let mut first_node_setup_flag: Option<&str> = None;
    while let Some(arg) = rest.get(position) {
        position += 1;
        let after_bare_bool = bare_bool.take();
        let (name, spelled, value) = match Token::of(arg) {
            Token::End => match rest.get(position) {
                Some(extra) => return Err(after_end(command, extra)),
                None => break,
            },
            Token::Argument => return Err(extra_argument(command, arg, after_bare_bool)),
            Token::Other => {
                out.push(arg.clone());
                continue;
            }
            Token::Flag {
                name,
                spelled,
                value,
            } => (name, spelled, value),
        };
        let Some(go) = GO_FLAGS.iter().find(|go| go.name == name) else {
            if name == "help" || name == "h" {
                // Go's usage for -h, -help, --h, -help=...; clap's short help for -h.
                let help = if arg == "-h" { "-h" } else { "--help" };
                out.push(help.into());
                continue;
            }
            out.push(arg.clone());
            if clap_takes_next(command, arg) {
                out.extend(rest.get(position).cloned());
                position += 1;
            }
            continue;
        };
        match go.scope {
            Scope::NodeLocal => {
                first_node_setup_flag.get_or_insert(spelled);
            }
            Scope::Always => local_ips_given |= go.long == "localip",
        }
        match go.kind {
            GoKind::Value => {
                let value = match value {
                    Some(value) => value,
                    None => {
                        let Some(next) = rest.get(position) else {
                            return Err(missing_value(command, go, spelled));
                        };
                        position += 1;
                        next.as_os_str()
                    }
                };
                let mut long = OsString::from(format!("--{}=", go.long));
                long.push(value);
                out.push(long);
            }
            GoKind::Bool => {
                let truth = match value {
                    None => {
                        bare_bool = Some(spelled);
                        true
                    }
                    Some(value) => {
                        go_bool(value).ok_or_else(|| bad_bool(command, spelled, value))?
                    }
                };
                if go.long == "version" {
                    if truth {
                        out.push("--version".into());
                    }
                } else {
                    out.push(format!("--{}={truth}", go.long).into());
                }
            }
        }
    }
    if let (Some(spelled), false) = (first_node_setup_flag, local_ips_given) {
        return Err(command.error(
            ErrorKind::MissingRequiredArgument,
            format!(
                "{spelled} applies only in node-local mode, which -localip turns on\n\n  \
                 tip: give the local addresses too, e.g. -localip 169.254.20.10,10.96.0.10"
            ),
        ));
    }
    Ok(out)
}

/// Whether `arg`, one of shardns's own arguments, takes the next argument as its value:
/// `--long` without `=` or a cluster of shorts ending in one, of an argument that takes a value.
fn clap_takes_next(command: &Command, arg: &OsStr) -> bool {
    let Some(text) = arg.to_str() else {
        return false;
    };
    if let Some(long) = text.strip_prefix("--") {
        return command.get_arguments().any(|candidate| {
            let named = candidate.get_long() == Some(long)
                || candidate
                    .get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&long));
            named && candidate.get_action().takes_values()
        });
    }
    let shorts = &text[1..];
    for (at, short) in shorts.char_indices() {
        let found = command.get_arguments().find(|candidate| {
            candidate.get_short() == Some(short)
                || candidate
                    .get_all_short_aliases()
                    .is_some_and(|aliases| aliases.contains(&short))
        });
        match found {
            Some(candidate) if candidate.get_action().takes_values() => {
                return at + short.len_utf8() == shorts.len();
            }
            Some(_) => {}
            None => return false,
        }
    }
    false
}

/// `-localip` without its value.
fn missing_value(command: &mut Command, go: &GoFlag, spelled: &str) -> clap::Error {
    let value_name = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(go.long))
        .and_then(|arg| arg.get_value_names())
        .and_then(|names| names.first())
        .map_or_else(|| "VALUE".to_string(), ToString::to_string);
    command.error(
        ErrorKind::InvalidValue,
        format!("a value is required for '{spelled} <{value_name}>' but none was supplied"),
    )
}

/// `-setupiptables=yes`.
fn bad_bool(command: &mut Command, spelled: &str, value: &OsStr) -> clap::Error {
    command.error(
        ErrorKind::InvalidValue,
        format!(
            "invalid value '{}' for '{spelled}': expected a boolean, one of {GO_BOOLS}",
            value.to_string_lossy()
        ),
    )
}

/// An argument that is not a flag, where Go's flag syntax stops; with a hint when it follows
/// a boolean flag (`-setupiptables false`).
fn extra_argument(
    command: &mut Command,
    arg: &OsStr,
    after_bare_bool: Option<&str>,
) -> clap::Error {
    let shown = arg.to_string_lossy();
    let tip = match after_bare_bool {
        Some(spelled) if go_bool(arg).is_some() => format!(
            "{spelled} is a boolean flag and takes its value only after '=': write \
             {spelled}={shown}"
        ),
        _ => "shardns takes no arguments besides flags".to_string(),
    };
    command.error(
        ErrorKind::UnknownArgument,
        format!("unexpected argument '{shown}' found\n\n  tip: {tip}"),
    )
}

/// An argument after `--`.
fn after_end(command: &mut Command, arg: &OsStr) -> clap::Error {
    command.error(
        ErrorKind::UnknownArgument,
        format!(
            "unexpected argument '{}' found\n\n  tip: flags end at '--', and shardns takes no \
             other arguments",
            arg.to_string_lossy()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use clap::CommandFactory;

    /// The command line clap gets for `args` (after the program name).
    fn rewritten(args: &[&str]) -> Vec<String> {
        let argv = std::iter::once("shardns").chain(args.iter().copied());
        translate(argv, &mut Args::command())
            .unwrap_or_else(|error| panic!("{args:?}: {error}"))
            .into_iter()
            .skip(1)
            .map(|arg| arg.into_string().unwrap())
            .collect()
    }

    /// The error for `args`.
    fn refused(args: &[&str]) -> clap::Error {
        let argv = std::iter::once("shardns").chain(args.iter().copied());
        match translate(argv, &mut Args::command()) {
            Ok(argv) => panic!("{args:?} was taken as {argv:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn value_forms() {
        let want = ["--localip=10.0.0.1", "--upstreamsvc=up"];
        for args in [
            ["-localip", "10.0.0.1", "-upstreamsvc", "up"].as_slice(),
            &["-localip=10.0.0.1", "-upstreamsvc=up"],
            &["--localip", "10.0.0.1", "--upstreamsvc", "up"],
            &["--localip=10.0.0.1", "--upstreamsvc=up"],
            &["-localip", "10.0.0.1", "--upstreamsvc=up"],
        ] {
            assert_eq!(rewritten(args), want, "{args:?}");
        }
        // The next argument is the value whatever it looks like, and `=` may be followed by
        // anything, `=` and nothing included.
        assert_eq!(
            rewritten(&[
                "-localip",
                "10.0.0.1",
                "-kubednscm",
                "-conf",
                "-corefile",
                "--"
            ]),
            ["--localip=10.0.0.1", "--kubednscm=-conf", "--corefile=--"]
        );
        assert_eq!(
            rewritten(&["-localip=10.0.0.1", "-kubednscm=", "-pidfile=a=b"]),
            ["--localip=10.0.0.1", "--kubednscm=", "--pidfile=a=b"]
        );
        // -p is -dns.port; the values are checked later, by clap.
        assert_eq!(
            rewritten(&["-p", "5353", "--dns.port=x"]),
            ["--dns.port=5353", "--dns.port=x"]
        );
    }

    #[test]
    fn boolean_forms() {
        let with_local_ips = |args: &[&str]| {
            let mut all = vec!["-localip=10.0.0.1"];
            all.extend_from_slice(args);
            rewritten(&all)[1..].to_vec()
        };
        assert_eq!(
            with_local_ips(&["-setupiptables"]),
            ["--setupiptables=true"]
        );
        assert_eq!(
            with_local_ips(&["--setupiptables"]),
            ["--setupiptables=true"]
        );
        for truth in ["1", "t", "T", "TRUE", "true", "True"] {
            let arg = format!("-skipteardown={truth}");
            assert_eq!(with_local_ips(&[&arg]), ["--skipteardown=true"], "{arg}");
        }
        for falsity in ["0", "f", "F", "FALSE", "false", "False"] {
            let arg = format!("--setupinterface={falsity}");
            assert_eq!(with_local_ips(&[&arg]), ["--setupinterface=false"], "{arg}");
        }
        for bad in ["yes", "no", "tRUE", "", "2", "on"] {
            let arg = format!("-reloadwithsignal={bad}");
            let error = refused(&["-localip=10.0.0.1", &arg]);
            assert_eq!(error.kind(), ErrorKind::InvalidValue, "{arg}");
            assert!(
                error.to_string().contains(&format!(
                    "invalid value '{bad}' for '-reloadwithsignal': expected a boolean, one of \
                     1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False"
                )),
                "{error}"
            );
        }
        // -version is clap's --version when true, nothing when false.
        assert_eq!(rewritten(&["-version"]), ["--version"]);
        assert_eq!(rewritten(&["--version=t"]), ["--version"]);
        assert!(rewritten(&["-version=false"]).is_empty());
    }

    #[test]
    fn a_boolean_takes_no_separate_value() {
        // Go reads `-setupiptables false` as the flag, then the argument `false`, where it
        // stops; CoreDNS refuses the extra argument, and so does shardns, with the fix.
        let error = refused(&["-localip", "10.0.0.1", "-setupiptables", "false"]);
        assert_eq!(error.kind(), ErrorKind::UnknownArgument);
        let message = error.to_string();
        assert!(
            message.contains("unexpected argument 'false' found"),
            "{message}"
        );
        assert!(
            message.contains(
                "tip: -setupiptables is a boolean flag and takes its value only after '=': \
                 write -setupiptables=false"
            ),
            "{message}"
        );
        let message = refused(&["-localip", "10.0.0.1", "--skipteardown", "1"]).to_string();
        assert!(message.contains("write --skipteardown=1"), "{message}");
        // An argument that is no boolean gets the plain message.
        let message = refused(&["-localip", "10.0.0.1", "-setupiptables", "eth0"]).to_string();
        assert!(
            message.contains("unexpected argument 'eth0' found"),
            "{message}"
        );
        assert!(
            message.contains("shardns takes no arguments besides flags"),
            "{message}"
        );
    }

    #[test]
    fn arguments_end_the_flags() {
        // Go stops at the first argument that is not a flag (`-` is one) and after `--`.
        for (args, extra) in [
            (
                ["-localip", "10.0.0.1", "extra", "-conf", "x"].as_slice(),
                "extra",
            ),
            (&["-", "-localip", "10.0.0.1"], "-"),
            (&["-localip", "10.0.0.1", "--", "-conf", "x"], "-conf"),
            (&["--", "--validate"], "--validate"),
        ] {
            let error = refused(args);
            assert_eq!(error.kind(), ErrorKind::UnknownArgument, "{args:?}");
            let message = error.to_string();
            assert!(
                message.contains(&format!("unexpected argument '{extra}' found")),
                "{args:?}: {message}"
            );
        }
        assert!(
            refused(&["--", "x"])
                .to_string()
                .contains("flags end at '--'")
        );
        // A `--` with nothing after it is fine, as in Go.
        assert_eq!(
            rewritten(&["-localip", "10.0.0.1", "--"]),
            ["--localip=10.0.0.1"]
        );
        assert!(rewritten(&["--"]).is_empty());
    }

    #[test]
    fn a_value_is_required() {
        for (args, spelled) in [
            (["-localip"].as_slice(), "-localip <IPS>"),
            (
                &["-localip=10.0.0.1", "--syncinterval"],
                "--syncinterval <DURATION>",
            ),
            (&["-conf"], "-conf <FILE>"),
            (&["-p"], "-p <PORT>"),
        ] {
            let error = refused(args);
            assert_eq!(error.kind(), ErrorKind::InvalidValue, "{args:?}");
            assert!(
                error.to_string().contains(&format!(
                    "a value is required for '{spelled}' but none was supplied"
                )),
                "{error}"
            );
        }
    }

    #[test]
    fn node_setup_flags_need_local_ips() {
        let error = refused(&[
            "-conf",
            "/etc/Corefile",
            "-upstreamsvc",
            "kube-dns-upstream",
        ]);
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        assert!(
            error
                .to_string()
                .contains("-upstreamsvc applies only in node-local mode, which -localip turns on"),
            "{error}"
        );
        for flag in GO_FLAGS.iter().filter(|go| go.scope == Scope::NodeLocal) {
            let arg = match flag.kind {
                GoKind::Bool => format!("--{}", flag.name),
                GoKind::Value => format!("--{}=x", flag.name),
            };
            let message = refused(&[&arg]).to_string();
            assert!(
                message.contains(&format!("--{} applies only in node-local mode", flag.name)),
                "{message}"
            );
            rewritten(&[&arg, "-localip", "10.0.0.1"]);
        }
        // CoreDNS's flags apply in either mode.
        assert_eq!(
            rewritten(&["-conf", "c", "-pidfile", "p", "-dns.port", "53"]),
            ["--conf=c", "--pidfile=p", "--dns.port=53"]
        );
    }

    #[test]
    fn shardns_arguments_pass_unchanged() {
        // Each with its separate value, even one that looks like a node-cache flag or a
        // boolean.
        let args = [
            "--shards",
            "2",
            "-vv",
            "--resolv-conf",
            "false",
            "--io=epoll",
            "--coalesce",
            "-localip",
            "--validate",
            "-V",
        ];
        assert_eq!(rewritten(&args), args);
        // Unknown flags, and bad syntax, are left for clap.
        for arg in ["--bogus", "-bogus", "---conf", "-=x", "--=x", "-vp"] {
            assert_eq!(rewritten(&[arg]), [arg]);
        }
        // Help, as Go asks for it: -h stays clap's short help.
        assert_eq!(rewritten(&["-h"]), ["-h"]);
        for arg in ["-help", "--help", "--h", "-help=1", "-h=x"] {
            assert_eq!(rewritten(&[arg]), ["--help"], "{arg}");
        }
    }

    #[test]
    fn values_need_not_be_text() {
        use std::os::unix::ffi::OsStringExt;
        let path = OsString::from_vec(b"/tmp/\xff".to_vec());
        let mut attached = OsString::from("-conf=");
        attached.push(&path);
        let mut want = OsString::from("--conf=");
        want.push(&path);
        for args in [
            vec![OsString::from("-conf"), path.clone()],
            vec![attached.clone()],
        ] {
            let argv = std::iter::once(OsString::from("shardns")).chain(args);
            let out = translate(argv, &mut Args::command()).unwrap();
            assert_eq!(out[1..], [want.clone()]);
        }
    }

    #[test]
    fn the_table_matches_the_arguments() {
        let mut command = Args::command();
        command.build();
        for go in GO_FLAGS {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(go.long))
                .unwrap_or_else(|| panic!("no clap argument --{}", go.long));
            if go.long == "version" {
                continue;
            }
            assert!(
                arg.is_hide_set(),
                "--{} is listed in the node-cache section",
                go.long
            );
            assert!(arg.get_action().takes_values(), "--{}", go.long);
            let value_name = arg.get_value_names().unwrap()[0].as_str();
            assert_eq!(
                go.kind == GoKind::Bool,
                value_name == "BOOL",
                "--{}",
                go.long
            );
        }
        // `--worker-of` is hidden as internal (a supervisor's worker), not as node-cache's.
        for arg in command
            .get_arguments()
            .filter(|arg| arg.is_hide_set() && arg.get_long() != Some("worker-of"))
        {
            let long = arg.get_long().unwrap();
            assert!(
                GO_FLAGS.iter().any(|go| go.name == long && go.long == long),
                "--{long} is hidden but not a node-cache flag"
            );
        }
        // No short option of shardns's own takes a value (clap_takes_next handles them, but
        // none exists to test it with).
        assert!(
            command
                .get_arguments()
                .filter(|arg| arg.get_short().is_some())
                .all(|arg| !arg.get_action().takes_values())
        );
    }
}
