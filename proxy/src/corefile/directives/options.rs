//! What the directives with an options block (`cache`, `forward`) share: the rules every
//! option follows (no block of its own, given once unless its lines add up, a number of
//! arguments) and the parsers of common argument kinds, failing with the line to blame.

use std::time::Duration;

use crate::corefile::duration;
use crate::corefile::parser::Directive;
use crate::corefile::tokenizer::Token;

/// A message about something at a line; the caller adds the file.
pub(super) type Failure = (usize, String);

/// A failure at `token`.
pub(super) fn fail(token: &Token, message: String) -> Failure {
    (token.line, message)
}

/// A duration argument; `expected` describes the accepted values.
pub(super) fn duration_arg(token: &Token, what: &str, expected: &str) -> Result<Duration, Failure> {
    duration::parse(&token.text).map_err(|error| {
        fail(
            token,
            format!("bad {what} {:?}: {error} (expected {expected})", token.text),
        )
    })
}

/// The options of one `directive` block seen so far, to refuse a nested block and repeats.
pub(super) struct OptionBlock<'a> {
    directive: &'static str,
    /// Options whose repeated lines add up.
    repeatable: &'static [&'static str],
    /// Options seen so far and their lines.
    seen: Vec<(&'a str, usize)>,
}

impl<'a> OptionBlock<'a> {
    pub(super) fn new(directive: &'static str, repeatable: &'static [&'static str]) -> Self {
        OptionBlock {
            directive,
            repeatable,
            seen: Vec::new(),
        }
    }

    /// Checks that `option` has no block of its own and, unless repeatable, was not given
    /// before.
    pub(super) fn admit(&mut self, option: &'a Directive) -> Result<(), Failure> {
        let (directive, name, line) = (self.directive, option.name.as_str(), option.line);
        if option.block.is_some() {
            return Err((
                line,
                format!("{directive} option {name:?} takes no options block"),
            ));
        }
        if !self.repeatable.contains(&name) {
            if let Some((_, first)) = self.seen.iter().find(|(seen, _)| *seen == name) {
                return Err((
                    line,
                    format!("{directive} option {name:?} appears twice (first at line {first})"),
                ));
            }
            self.seen.push((name, line));
        }
        Ok(())
    }

    /// Checks that `option` has from `min` to `max` arguments; `syntax` describes them.
    pub(super) fn arity(
        &self,
        option: &Directive,
        min: usize,
        max: usize,
        syntax: &str,
    ) -> Result<(), Failure> {
        if (min..=max).contains(&option.args.len()) {
            Ok(())
        } else {
            let (directive, name) = (self.directive, &option.name);
            Err((
                option.line,
                format!("{directive} option {name:?} takes {syntax}"),
            ))
        }
    }
}
