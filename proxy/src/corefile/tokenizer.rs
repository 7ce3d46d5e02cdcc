//! The Corefile tokenizer: text into words and braces, each with its line.
//!
//! Tokens are separated by white space; `#` starts a comment; `"..."` quotes a token (`\"`
//! inside); `{$NAME}` inside a token is replaced by the environment variable `NAME` (empty if
//! unset). A `{` or `}` is structural only as a token of its own and unquoted.

use std::fmt;

use super::ConfigError;

/// One word of a Corefile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    /// The text, quotes removed and environment variables substituted.
    pub text: String,
    /// The line it starts on (1-based).
    pub line: usize,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A token with its structural role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lexeme {
    Word(Token),
    Open(usize),
    Close(usize),
}

impl Lexeme {
    pub(super) fn line(&self) -> usize {
        match self {
            Lexeme::Word(token) => token.line,
            Lexeme::Open(line) | Lexeme::Close(line) => *line,
        }
    }
}

/// Splits `text` into lexemes.
pub(super) fn tokenize(file: &str, text: &str) -> Result<Vec<Lexeme>, ConfigError> {
    let mut lexemes = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&ch) = chars.peek() {
        if ch == '\n' {
            line += 1;
            chars.next();
        } else if ch.is_whitespace() {
            chars.next();
        } else if ch == '#' {
            while chars.next_if(|&c| c != '\n').is_some() {}
        } else if ch == '"' {
            let start = line;
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => {
                        let message = "unterminated quoted string (expected '\"')";
                        return Err(ConfigError::at(file, start, message));
                    }
                    Some('"') => break,
                    Some('\\') if chars.peek() == Some(&'"') => {
                        chars.next();
                        value.push('"');
                    }
                    Some(c) => {
                        if c == '\n' {
                            line += 1;
                        }
                        value.push(c);
                    }
                }
            }
            let text = substitute_env(&value);
            lexemes.push(Lexeme::Word(Token { text, line: start }));
        } else {
            let mut value = String::new();
            while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '#') {
                value.push(c);
            }
            match value.as_str() {
                "{" => lexemes.push(Lexeme::Open(line)),
                "}" => lexemes.push(Lexeme::Close(line)),
                _ if value.contains("{$") => {
                    // An unquoted substitution may expand to several words.
                    for word in substitute_env(&value).split_whitespace() {
                        lexemes.push(Lexeme::Word(Token {
                            text: word.to_string(),
                            line,
                        }));
                    }
                }
                _ => lexemes.push(Lexeme::Word(Token { text: value, line })),
            }
        }
    }
    Ok(lexemes)
}

/// Replaces every `{$NAME}` with the value of the environment variable `NAME`.
pub(super) fn substitute_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{$") {
        let Some(length) = rest[start + 2..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = &rest[start + 2..start + 2 + length];
        out.push_str(&std::env::var(name).unwrap_or_default());
        rest = &rest[start + 3 + length..];
    }
    out.push_str(rest);
    out
}
