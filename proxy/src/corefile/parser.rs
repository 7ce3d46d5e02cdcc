//! The Corefile parser: the lexemes of [`super::tokenizer`] into server blocks and directives.
//! Nothing here knows what a directive means; see [`super::directives`].
//!
//! The grammar, as CoreDNS reads it:
//!
//! ```text
//! ZONE[:PORT] [ZONE[:PORT]...] {
//!     directive arg arg
//!     directive arg {
//!         option arg
//!     }
//! }
//! ```
//!
//! A directive's arguments end at the end of its line; server block keys end at the end of
//! the line unless it ends with a comma.

use super::ConfigError;
use super::tokenizer::{Lexeme, Token, tokenize};

/// A `KEYS { ... }` server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerBlock {
    /// The zone keys (`cluster.local:53`), trailing commas removed.
    pub keys: Vec<Token>,
    /// The directives in order.
    pub directives: Vec<Directive>,
}

/// A directive (or an option inside a directive's block): a name, its arguments on the same
/// line, and an optional `{ ... }` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Directive {
    /// The directive's name.
    pub name: String,
    /// The line the name is on.
    pub line: usize,
    /// Arguments on the same line.
    pub args: Vec<Token>,
    /// The options block, if one was opened.
    pub block: Option<Vec<Directive>>,
}

/// Parses a whole Corefile. `file` is only used in error messages.
pub(super) fn parse(file: &str, text: &str) -> Result<Vec<ServerBlock>, ConfigError> {
    let lexemes = tokenize(file, text)?;
    let mut parser = Parser {
        file,
        lexemes: &lexemes,
        position: 0,
    };
    let mut blocks = Vec::new();
    while parser.position < lexemes.len() {
        blocks.push(parser.server_block()?);
    }
    if blocks.is_empty() {
        return Err(ConfigError::File {
            file: file.to_string(),
            message: "no server block found (expected ZONE[:PORT] { ... })".to_string(),
        });
    }
    Ok(blocks)
}

struct Parser<'a> {
    file: &'a str,
    lexemes: &'a [Lexeme],
    position: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, line, message)
    }

    fn peek(&self) -> Option<&'a Lexeme> {
        self.lexemes.get(self.position)
    }

    fn last_line(&self) -> usize {
        self.lexemes.last().map_or(1, Lexeme::line)
    }

    /// `KEYS { DIRECTIVES }`; keys end at the end of the line unless it ends with a comma.
    fn server_block(&mut self) -> Result<ServerBlock, ConfigError> {
        let mut keys: Vec<Token> = Vec::new();
        let mut continued = false;
        while let Some(lexeme) = self.peek() {
            match lexeme {
                Lexeme::Word(token) => {
                    if let Some(last) = keys.last()
                        && token.line != last.line
                        && !continued
                    {
                        break;
                    }
                    continued = token.text.ends_with(',');
                    let text = token.text.trim_end_matches(',');
                    self.position += 1;
                    for key in text.split(',').filter(|key| !key.is_empty()) {
                        keys.push(Token {
                            text: key.to_string(),
                            line: token.line,
                        });
                    }
                }
                Lexeme::Open(_) => break,
                Lexeme::Close(line) => {
                    return Err(self.error(*line, "unexpected '}' (no block is open)"));
                }
            }
        }
        let Some(first) = keys.first() else {
            let line = self.peek().map_or(self.last_line(), Lexeme::line);
            return Err(self.error(line, "expected server block keys (ZONE[:PORT]) before '{'"));
        };
        let key_line = first.line;
        match self.peek() {
            Some(Lexeme::Open(_)) => self.position += 1,
            Some(other) => {
                return Err(self.error(
                    other.line(),
                    format!("expected '{{' to open the server block of line {key_line}"),
                ));
            }
            None => {
                return Err(self.error(
                    self.last_line(),
                    "unexpected end of file, expected '{' after the server block keys",
                ));
            }
        }
        let directives = self.block_contents(key_line)?;
        Ok(ServerBlock { keys, directives })
    }

    /// Directives up to and including the `}` that closes the block opened at `open_line`.
    fn block_contents(&mut self, open_line: usize) -> Result<Vec<Directive>, ConfigError> {
        let mut directives = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.error(
                        open_line,
                        "the block opened here is not closed (expected '}' before end of file)",
                    ));
                }
                Some(Lexeme::Close(_)) => {
                    self.position += 1;
                    return Ok(directives);
                }
                Some(Lexeme::Open(line)) => {
                    return Err(self.error(*line, "unexpected '{' (expected a directive name)"));
                }
                Some(Lexeme::Word(name)) => {
                    let name = name.clone();
                    self.position += 1;
                    directives.push(self.directive(name)?);
                }
            }
        }
    }

    /// The rest of a directive whose name was just read.
    fn directive(&mut self, name: Token) -> Result<Directive, ConfigError> {
        let mut args = Vec::new();
        let mut line = name.line;
        while let Some(Lexeme::Word(token)) = self.peek() {
            if token.line != line {
                break;
            }
            line = token.line;
            args.push(token.clone());
            self.position += 1;
        }
        let mut block = None;
        if let Some(Lexeme::Open(open_line)) = self.peek() {
            if *open_line != line {
                return Err(self.error(
                    *open_line,
                    format!("unexpected '{{': the block of \"{name}\" must open on its line"),
                ));
            }
            self.position += 1;
            block = Some(self.block_contents(name.line)?);
        }
        Ok(Directive {
            name: name.text,
            line: name.line,
            args,
            block,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corefile::tokenizer::substitute_env;

    fn words(directive: &Directive) -> Vec<&str> {
        directive
            .args
            .iter()
            .map(|token| token.text.as_str())
            .collect()
    }

    fn error_text(text: &str) -> String {
        parse("Corefile", text).unwrap_err().to_string()
    }

    #[test]
    fn stock_node_local_dns_shape() {
        let text = include_str!("../../testdata/stock.Corefile");
        let blocks = parse("Corefile", text).unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0].keys[0].text, "cluster.local:53");
        let names: Vec<&str> = blocks[0]
            .directives
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["errors", "cache", "bind", "forward", "prometheus"]);
        let cache = &blocks[0].directives[1];
        assert!(cache.args.is_empty());
        let options = cache.block.as_ref().unwrap();
        assert_eq!(options[0].name, "success");
        assert_eq!(words(&options[0]), ["9984", "30"]);
        assert_eq!(options[1].line, 5);
        assert_eq!(
            words(&blocks[0].directives[2]),
            ["169.254.20.10", "10.96.0.10"]
        );
        let forward = &blocks[1].directives[3];
        assert_eq!(forward.line, 17);
        assert_eq!(forward.block.as_ref().unwrap()[0].name, "force_tcp");
    }

    #[test]
    fn several_keys_commas_quotes_and_comments() {
        let text =
            "a.example:53, b.example:53,\n c.example { # comment\n log \"x y\" \"q\\\"\" #c\n}";
        let blocks = parse("Corefile", text).unwrap();
        let keys: Vec<&str> = blocks[0].keys.iter().map(|key| key.text.as_str()).collect();
        assert_eq!(keys, ["a.example:53", "b.example:53", "c.example"]);
        assert_eq!(words(&blocks[0].directives[0]), ["x y", "q\""]);
    }

    #[test]
    fn one_line_blocks() {
        let blocks = parse("Corefile", ". { cache { success 10 } \n errors }").unwrap();
        let cache = &blocks[0].directives[0];
        assert_eq!(words(&cache.block.as_ref().unwrap()[0]), ["10"]);
        assert_eq!(blocks[0].directives[1].name, "errors");
    }

    #[test]
    fn environment_substitution() {
        let unset = ". {\n forward . {$SHARDNS_TEST_UNSET_VARIABLE}\n}";
        let blocks = parse("Corefile", unset).unwrap();
        assert_eq!(
            words(&blocks[0].directives[0]),
            ["."],
            "an unset variable expands to nothing"
        );
        let expected = format!("x{}y", std::env::var("PATH").unwrap_or_default());
        assert_eq!(substitute_env("x{$PATH}y"), expected);
        assert_eq!(substitute_env("{$unterminated"), "{$unterminated");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(
            error_text(".:53 {\n errors\n"),
            "Corefile:1: the block opened here is not closed (expected '}' before end of file)"
        );
        assert_eq!(
            error_text(".:53\n errors\n}"),
            "Corefile:2: expected '{' to open the server block of line 1"
        );
        assert_eq!(
            error_text(". {\n}\n}"),
            "Corefile:3: unexpected '}' (no block is open)"
        );
        assert_eq!(
            error_text(". {\n cache\n {\n }\n}"),
            "Corefile:3: unexpected '{': the block of \"cache\" must open on its line"
        );
        assert_eq!(
            error_text(". {\n log \"x\n}"),
            "Corefile:2: unterminated quoted string (expected '\"')"
        );
        assert_eq!(
            error_text("# nothing\n"),
            "Corefile: no server block found (expected ZONE[:PORT] { ... })"
        );
        assert_eq!(
            error_text("{\n}"),
            "Corefile:1: expected server block keys (ZONE[:PORT]) before '{'"
        );
    }
}
