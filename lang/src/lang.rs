//! The reactor language: a pipeline of stages separated by `|`.
//!
//! ```text
//! pipeline  := stage ('|' stage)*
//! stage     := NAME predicate                 (where)
//!            | NAME arg*                      (every other stage)
//! arg       := literal | WORD '=' literal | '(' pipeline ')'
//! literal   := NUMBER | DURATION | STRING | WORD | '[' literal (',' literal)* ']'
//! predicate := and ('or' and)*
//! and       := unary ('and' unary)*
//! unary     := 'not' unary | '(' predicate ')' | 'tagged' ('any'|'all')? literal
//!            | FIELD ('='|'!='|'<'|'<='|'>'|'>='|'~'|'=~') literal
//!            | FIELD 'in' list | FIELD 'exists'
//! ```
//!
//! Durations are a number with a unit: `500ms`, `10s`, `5m`, `1h`, `1d`.
//! Every error carries the 1-based column where it was found.

use std::fmt;

/// A parse or build error at a column of the pipeline text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// 1-based character column.
    pub column: usize,
    /// What was expected or wrong.
    pub message: String,
}

impl ParseError {
    /// An error at `column`.
    pub fn new(column: usize, message: impl Into<String>) -> Self {
        ParseError {
            column,
            message: message.into(),
        }
    }
}

/// A literal value in a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A plain number.
    Number(f64),
    /// A duration, in seconds.
    Duration(f64),
    /// A quoted string.
    Str(String),
    /// A bare word such as `host` or `log`.
    Word(String),
    /// `[a, b, …]`.
    List(Vec<Literal>),
}

impl Literal {
    /// The text of a string or word.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Literal::Str(s) | Literal::Word(s) => Some(s),
            _ => None,
        }
    }

    /// As a JSON value (durations become seconds).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Literal::Number(n) | Literal::Duration(n) => serde_json::json!(n),
            Literal::Str(s) | Literal::Word(s) => serde_json::Value::String(s.clone()),
            Literal::List(items) => items.iter().map(Literal::to_json).collect(),
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Duration(s) => write!(f, "{s}s"),
            Literal::Str(s) => write!(f, "{s:?}"),
            Literal::Word(s) => f.write_str(s),
            Literal::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// One argument of a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A positional value.
    Positional(Literal),
    /// `key=value`.
    Named(String, Literal),
    /// `( pipeline )`.
    Nested(Vec<StageSpec>),
}

/// Comparison operators of predicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `~` glob with `*`
    Glob,
    /// `=~` regular expression
    Regex,
}

/// A parsed predicate (`where`).
#[derive(Debug, Clone, PartialEq)]
pub enum PredicateSpec {
    /// `FIELD op literal`
    Compare(String, Op, Literal, usize),
    /// `FIELD in [...]`
    In(String, Vec<Literal>, usize),
    /// `FIELD exists`
    Exists(String, usize),
    /// `tagged [any|all] literal`; `true` means all.
    Tagged(bool, Vec<String>),
    /// both
    And(Box<PredicateSpec>, Box<PredicateSpec>),
    /// either
    Or(Box<PredicateSpec>, Box<PredicateSpec>),
    /// negation
    Not(Box<PredicateSpec>),
}

/// One parsed stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// Stage name.
    pub name: String,
    /// Column of the name.
    pub column: usize,
    /// Arguments (empty for `where`).
    pub args: Vec<Arg>,
    /// The predicate of `where`.
    pub predicate: Option<PredicateSpec>,
}

impl StageSpec {
    /// An error about this stage.
    pub fn error(&self, message: impl fmt::Display) -> ParseError {
        ParseError::new(self.column, format!("{}: {message}", self.name))
    }

    /// The `i`-th positional argument.
    pub fn positional(&self, i: usize) -> Option<&Literal> {
        self.args
            .iter()
            .filter_map(|a| match a {
                Arg::Positional(l) => Some(l),
                _ => None,
            })
            .nth(i)
    }

    /// The named argument `key`.
    pub fn named(&self, key: &str) -> Option<&Literal> {
        self.args.iter().find_map(|a| match a {
            Arg::Named(k, l) if k == key => Some(l),
            _ => None,
        })
    }

    /// The nested pipeline, if any.
    pub fn nested(&self) -> Option<&[StageSpec]> {
        self.args.iter().find_map(|a| match a {
            Arg::Nested(p) => Some(p.as_slice()),
            _ => None,
        })
    }

    /// A number given as `key=N` or at position `i`.
    pub fn number(&self, key: &str, i: Option<usize>) -> Result<Option<f64>, ParseError> {
        match self
            .named(key)
            .or_else(|| i.and_then(|i| self.positional(i)))
        {
            None => Ok(None),
            Some(Literal::Number(n)) => Ok(Some(*n)),
            Some(other) => Err(self.error(format!("{key} must be a number, found {other}"))),
        }
    }

    /// A whole number ≥ 1 given as `key=N` or at position `i` (a count or
    /// a limit).
    pub fn count(&self, key: &str, i: Option<usize>) -> Result<Option<usize>, ParseError> {
        match self.number(key, i)? {
            None => Ok(None),
            Some(n) if n >= 1.0 && n.fract() == 0.0 => Ok(Some(n as usize)),
            Some(n) => Err(self.error(format!("{key} must be a whole number ≥ 1, found {n}"))),
        }
    }

    /// A duration in seconds given as `key=D` or at position `i`.
    pub fn duration(&self, key: &str, i: Option<usize>) -> Result<Option<f64>, ParseError> {
        match self
            .named(key)
            .or_else(|| i.and_then(|i| self.positional(i)))
        {
            None => Ok(None),
            Some(Literal::Duration(s)) if *s > 0.0 => Ok(Some(*s)),
            Some(other) => Err(self.error(format!(
                "{key} must be a positive duration such as 60s or 5m, found {other}"
            ))),
        }
    }

    /// Rejects named arguments other than `allowed`.
    pub fn only_named(&self, allowed: &[&str]) -> Result<(), ParseError> {
        for arg in &self.args {
            if let Arg::Named(key, _) = arg {
                if !allowed.contains(&key.as_str()) {
                    return Err(self.error(format!(
                        "unknown option {key:?} (options: {})",
                        if allowed.is_empty() {
                            "none".to_owned()
                        } else {
                            allowed.join(", ")
                        }
                    )));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Number(f64),
    Duration(f64),
    Str(String),
    Sym(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "{w:?}"),
            Tok::Number(n) => write!(f, "{n}"),
            Tok::Duration(d) => write!(f, "{d}s"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Sym(s) => write!(f, "{s:?}"),
        }
    }
}

const SYMBOLS: [&str; 14] = [
    "!=", "<=", ">=", "=~", "|", "(", ")", "[", "]", ",", "=", "<", ">", "~",
];

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(ParseError::new(column, "unterminated string")),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        let escaped = chars
                            .get(i + 1)
                            .ok_or_else(|| ParseError::new(i + 1, "unterminated string"))?;
                        s.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
                        i += 2;
                    }
                    Some(&other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            i += 1;
            tokens.push((Tok::Str(s), column));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || chars[i] == '.'
                    || ((chars[i] == 'e' || chars[i] == 'E')
                        && chars
                            .get(i + 1)
                            .is_some_and(|d| d.is_ascii_digit() || *d == '-')))
            {
                i += if chars[i] == 'e' || chars[i] == 'E' {
                    2
                } else {
                    1
                };
            }
            let number: String = chars[start..i].iter().collect();
            let value: f64 = number
                .parse()
                .map_err(|_| ParseError::new(column, format!("malformed number {number:?}")))?;
            let unit_start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit: String = chars[unit_start..i].iter().collect();
            let scale = match unit.as_str() {
                "" => None,
                "ms" => Some(0.001),
                "s" => Some(1.0),
                "m" => Some(60.0),
                "h" => Some(3600.0),
                "d" => Some(86400.0),
                other => {
                    return Err(ParseError::new(
                        unit_start + 1,
                        format!("unknown duration unit {other:?} (use ms, s, m, h or d)"),
                    ))
                }
            };
            tokens.push((
                scale.map_or(Tok::Number(value), |s| Tok::Duration(value * s)),
                column,
            ));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-' | '/'))
            {
                i += 1;
            }
            tokens.push((Tok::Word(chars[start..i].iter().collect()), column));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let symbol = SYMBOLS
                .iter()
                .find(|s| rest.starts_with(**s))
                .ok_or_else(|| ParseError::new(column, format!("unexpected character {c:?}")))?;
            i += symbol.chars().count();
            tokens.push((Tok::Sym(symbol), column));
        }
    }
    Ok(tokens)
}

/// Parses a pipeline string into its stages.
pub fn parse(text: &str) -> Result<Vec<StageSpec>, ParseError> {
    let tokens = tokenize(text)?;
    let end = text.chars().count() + 1;
    let mut parser = Parser { tokens, at: 0, end };
    let stages = parser.pipeline()?;
    if let Some((tok, column)) = parser.peek_full() {
        return Err(ParseError::new(
            column,
            format!("expected \"|\", found {tok}"),
        ));
    }
    Ok(stages)
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn peek_full(&self) -> Option<(Tok, usize)> {
        self.tokens.get(self.at).cloned()
    }

    fn column(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(_, c)| *c)
    }

    fn next(&mut self) -> Option<(Tok, usize)> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn eat(&mut self, symbol: &str) -> bool {
        if self.peek() == Some(&Tok::Sym(leak(symbol))) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expected(&self, what: &str) -> ParseError {
        match self.peek_full() {
            Some((tok, column)) => ParseError::new(column, format!("expected {what}, found {tok}")),
            None => ParseError::new(self.end, format!("expected {what}, found the end")),
        }
    }

    fn pipeline(&mut self) -> Result<Vec<StageSpec>, ParseError> {
        let mut stages = vec![self.stage()?];
        while self.eat("|") {
            stages.push(self.stage()?);
        }
        Ok(stages)
    }

    fn stage(&mut self) -> Result<StageSpec, ParseError> {
        let column = self.column();
        let name = match self.next() {
            Some((Tok::Word(name), _)) => name,
            _ => {
                self.at -= 1;
                return Err(self.expected("a stage name"));
            }
        };
        let mut spec = StageSpec {
            name,
            column,
            args: Vec::new(),
            predicate: None,
        };
        if spec.name == "where" {
            spec.predicate = Some(self.predicate()?);
            return Ok(spec);
        }
        loop {
            match self.peek() {
                None | Some(Tok::Sym("|")) | Some(Tok::Sym(")")) => return Ok(spec),
                Some(Tok::Sym("(")) => {
                    self.at += 1;
                    let nested = self.pipeline()?;
                    if !self.eat(")") {
                        return Err(self.expected("\")\" closing the nested pipeline"));
                    }
                    spec.args.push(Arg::Nested(nested));
                }
                Some(Tok::Word(word))
                    if self.tokens.get(self.at + 1).map(|(t, _)| t) == Some(&Tok::Sym("=")) =>
                {
                    let key = word.clone();
                    self.at += 2;
                    let value = self.literal()?;
                    spec.args.push(Arg::Named(key, value));
                }
                Some(_) => {
                    let value = self.literal()?;
                    spec.args.push(Arg::Positional(value));
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        match self.next() {
            Some((Tok::Number(n), _)) => Ok(Literal::Number(n)),
            Some((Tok::Duration(d), _)) => Ok(Literal::Duration(d)),
            Some((Tok::Str(s), _)) => Ok(Literal::Str(s)),
            Some((Tok::Word(w), _)) => Ok(Literal::Word(w)),
            Some((Tok::Sym("["), _)) => {
                let mut items = Vec::new();
                if self.eat("]") {
                    return Ok(Literal::List(items));
                }
                loop {
                    items.push(self.literal()?);
                    if self.eat("]") {
                        return Ok(Literal::List(items));
                    }
                    if !self.eat(",") {
                        return Err(self.expected("\",\" or \"]\""));
                    }
                }
            }
            _ => {
                self.at -= 1;
                Err(self.expected("a value"))
            }
        }
    }

    fn predicate(&mut self) -> Result<PredicateSpec, ParseError> {
        let mut left = self.conjunction()?;
        while self.eat_word("or") {
            left = PredicateSpec::Or(Box::new(left), Box::new(self.conjunction()?));
        }
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<PredicateSpec, ParseError> {
        let mut left = self.unary()?;
        while self.eat_word("and") {
            left = PredicateSpec::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<PredicateSpec, ParseError> {
        if self.eat_word("not") {
            return Ok(PredicateSpec::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.predicate()?;
            if !self.eat(")") {
                return Err(self.expected("\")\""));
            }
            return Ok(inner);
        }
        if self.eat_word("tagged") {
            let all = if self.eat_word("all") {
                true
            } else {
                self.eat_word("any");
                false
            };
            let column = self.column();
            let tags = match self.literal()? {
                Literal::List(items) => items,
                single => vec![single],
            };
            let tags = tags
                .iter()
                .map(|t| t.as_text().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ParseError::new(column, "tags must be strings"))?;
            return Ok(PredicateSpec::Tagged(all, tags));
        }
        let column = self.column();
        let field = match self.next() {
            Some((Tok::Word(field), _)) => field,
            _ => {
                self.at -= 1;
                return Err(self.expected("a field name, \"not\", \"tagged\" or \"(\""));
            }
        };
        if self.eat_word("exists") {
            return Ok(PredicateSpec::Exists(field, column));
        }
        if self.eat_word("in") {
            return match self.literal()? {
                Literal::List(items) => Ok(PredicateSpec::In(field, items, column)),
                other => Err(ParseError::new(
                    column,
                    format!("in needs a list, found {other}"),
                )),
            };
        }
        let op = match self.next() {
            Some((Tok::Sym(symbol), _)) => match symbol {
                "=" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "~" => Op::Glob,
                "=~" => Op::Regex,
                _ => {
                    self.at -= 1;
                    return Err(self.expected("a comparison (= != < <= > >= ~ =~, in, exists)"));
                }
            },
            _ => {
                self.at -= 1;
                return Err(self.expected("a comparison (= != < <= > >= ~ =~, in, exists)"));
            }
        };
        let value = self.literal()?;
        Ok(PredicateSpec::Compare(field, op, value, column))
    }
}

/// Symbols are compared by value; this maps a `&str` to the static one.
fn leak(symbol: &str) -> &'static str {
    SYMBOLS
        .iter()
        .find(|s| **s == symbol)
        .copied()
        .unwrap_or("")
}

/// The closest of `candidates` to `word`, if it is a plausible typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stages_arguments_and_nesting() {
        let stages = parse(r#"where service ~ "*/heartbeat" and not tagged "x" | by host (ewma alpha=0.1 | over 50) | throttle 1 per 5m | notify email to="ops@example.com""#).unwrap();
        assert_eq!(stages.len(), 4);
        assert_eq!(stages[1].positional(0), Some(&Literal::Word("host".into())));
        assert_eq!(stages[1].nested().unwrap().len(), 2);
        assert_eq!(stages[2].positional(2), Some(&Literal::Duration(300.0)));
        assert_eq!(
            stages[3].named("to"),
            Some(&Literal::Str("ops@example.com".into()))
        );
        assert_eq!(stages[3].column, 109);
    }

    #[test]
    fn predicates_bind_and_tighter_than_or() {
        let stages = parse("where a = 1 or b = 2 and not c exists").unwrap();
        let Some(PredicateSpec::Or(_, right)) = &stages[0].predicate else {
            panic!()
        };
        assert!(matches!(**right, PredicateSpec::And(_, _)));
    }

    #[test]
    fn durations_and_numbers() {
        let stages = parse("x 500ms 2h -1.5 1e3").unwrap();
        let values: Vec<_> = (0..4)
            .map(|i| stages[0].positional(i).unwrap().clone())
            .collect();
        assert_eq!(
            values,
            vec![
                Literal::Duration(0.5),
                Literal::Duration(7200.0),
                Literal::Number(-1.5),
                Literal::Number(1000.0)
            ]
        );
    }

    #[test]
    fn errors_carry_the_column() {
        assert_eq!(
            parse("over 5 |").unwrap_err(),
            ParseError::new(9, "expected a stage name, found the end")
        );
        assert_eq!(parse("where service").unwrap_err().column, 14);
        assert_eq!(parse("expire 60x").unwrap_err().column, 10);
        assert_eq!(
            parse("where a = \"open").unwrap_err(),
            ParseError::new(11, "unterminated string")
        );
        assert_eq!(parse("by host (over 1").unwrap_err().column, 16);
        assert_eq!(parse("over 1 ) x").unwrap_err().column, 8);
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(suggest("ovr", &["over", "under"]), Some("over"));
        assert_eq!(suggest("zzzzzz", &["over", "under"]), None);
    }
}
