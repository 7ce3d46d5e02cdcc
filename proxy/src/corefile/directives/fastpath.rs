//! The `fastpath INTERFACE... [{ force }]` directive (shardns's own): the in-kernel fast path
//! answers this block's cache hits on the named interfaces (names or patterns with `*` and
//! `?`, such as `veth*` or `cali*`), attached to each matching interface as it appears. With
//! `force` it attaches where other eBPF programs (a CNI's) are attached too. Off unless
//! given; docs/FASTPATH.md says what it bypasses.

use shardns_shard::FastpathConfig;

use super::options::{Failure, OptionBlock, fail};
use crate::corefile::parser::Directive;

/// Longest interface name Linux accepts (IFNAMSIZ less the NUL).
const MAX_INTERFACE: usize = 15;

/// `fastpath INTERFACE... [{ force }]`.
pub(super) fn parse(directive: &Directive) -> Result<FastpathConfig, Failure> {
    if directive.args.is_empty() {
        return Err((
            directive.line,
            "fastpath needs at least one interface name or pattern (such as veth*)".to_string(),
        ));
    }
    let mut interfaces = Vec::new();
    for token in &directive.args {
        let name = token.text.as_str();
        let valid = (1..=MAX_INTERFACE).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !valid {
            return Err(fail(
                token,
                format!(
                    "bad fastpath interface {name:?} (expected an interface name or pattern of \
                     1 to {MAX_INTERFACE} characters, without '/' or ':')"
                ),
            ));
        }
        if !interfaces.iter().any(|seen| seen == name) {
            interfaces.push(name.to_string());
        }
    }
    let mut force = false;
    let mut block = OptionBlock::new("fastpath", &[]);
    for option in directive.block.iter().flatten() {
        block.admit(option)?;
        match option.name.as_str() {
            "force" => {
                block.arity(option, 0, 0, "no arguments")?;
                force = true;
            }
            other => {
                return Err((
                    option.line,
                    format!("unknown fastpath option {other:?} (expected force)"),
                ));
            }
        }
    }
    Ok(FastpathConfig { interfaces, force })
}

/// What a block with `fastpath` may not have: no `cache` (nothing to publish); `acl`,
/// `ratelimit` or `log` (hits answered in the kernel would skip them); no `bind` (the program
/// matches a query's destination address exactly, not a wildcard).
pub(in crate::corefile) fn check(settings: &super::BlockSettings) -> Result<(), String> {
    let skipped = [
        (!settings.acl.is_empty(), "acl"),
        (settings.ratelimit.is_some(), "ratelimit"),
        (settings.log.is_some(), "log"),
    ];
    if let Some((_, name)) = skipped.iter().find(|(present, _)| *present) {
        return Err(format!(
            "fastpath cannot be combined with {name} in one server block: hits answered in \
             the kernel would skip it"
        ));
    }
    if settings.cache.is_none() {
        return Err(
            "fastpath needs cache in the same server block (it publishes cache hits)".into(),
        );
    }
    if settings.binds.is_empty() || settings.binds.iter().any(|ip| ip.is_unspecified()) {
        return Err(
            "fastpath needs the block's addresses given with bind (the program matches a \
             query's destination address; a wildcard address cannot be matched)"
                .into(),
        );
    }
    Ok(())
}

/// Whether interface `name` matches `pattern` (`*` any run of characters, `?` one).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    // Iterative glob with one backtrack point: the last `*`.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((at, from)) => {
                    p = at + 1;
                    n = from + 1;
                    star = Some((at, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;
    use crate::corefile::directives::tests::{error, settings};

    #[test]
    fn fastpath_forms() {
        let fastpath = |body: &str| settings(body).unwrap().fastpath.unwrap();
        let plain = fastpath("fastpath veth* cali* lo veth*");
        assert_eq!(plain.interfaces, ["veth*", "cali*", "lo"]);
        assert!(!plain.force);
        assert!(fastpath("fastpath eth0 {\n force\n}").force);
        assert_eq!(settings("errors").unwrap().fastpath, None);
    }

    #[test]
    fn bad_fastpath() {
        assert_eq!(
            error("fastpath"),
            "Corefile:2: fastpath needs at least one interface name or pattern (such as veth*)"
        );
        assert!(error("fastpath a/b").contains("bad fastpath interface \"a/b\""));
        assert!(error("fastpath averyveryverylongname").contains("1 to 15 characters"));
        assert_eq!(
            error("fastpath lo {\n xdp\n}"),
            "Corefile:3: unknown fastpath option \"xdp\" (expected force)"
        );
        assert!(error("fastpath lo {\n force 1\n}").contains("takes no arguments"));
        assert!(error("fastpath lo\nfastpath eth0").contains("appears twice"));
    }

    #[test]
    fn what_a_fastpath_block_may_not_have() {
        use super::check;
        let check_of = |body: &str| check(&settings(body).unwrap());
        let good = "cache 30\nbind 169.254.20.10\nfastpath veth*";
        assert_eq!(check_of(good), Ok(()));
        for (extra, name) in [
            ("acl {\n block\n}", "acl"),
            ("ratelimit 100", "ratelimit"),
            ("log", "log"),
        ] {
            let message = check_of(&format!("{good}\n{extra}")).unwrap_err();
            assert!(
                message.contains(&format!("combined with {name}")),
                "{message}"
            );
        }
        assert!(
            check_of("bind 127.0.0.1\nfastpath lo")
                .unwrap_err()
                .contains("needs cache")
        );
        assert!(check_of("cache\nfastpath lo").unwrap_err().contains("bind"));
        assert!(
            check_of("cache\nbind 0.0.0.0\nfastpath lo")
                .unwrap_err()
                .contains("wildcard")
        );
    }

    #[test]
    fn patterns() {
        for (pattern, name, expected) in [
            ("veth*", "veth1a2b", true),
            ("veth*", "veth", true),
            ("veth*", "eth0", false),
            ("lo", "lo", true),
            ("lo", "lo0", false),
            ("*", "anything", true),
            ("cali?", "cali1", true),
            ("cali?", "cali12", false),
            ("*a*b", "xxaxxb", true),
            ("*a*b", "xxaxxbx", false),
            ("e*0", "eth0", true),
            ("", "", true),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern} vs {name}");
        }
    }
}
