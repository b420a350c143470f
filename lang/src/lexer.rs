//! Token-level parsers: whitespace and comments, identifiers, keywords,
//! integers, paths and both kinds of string literal.
//!
//! The parser is scannerless: these functions work on the located input
//! directly and each token parser skips the whitespace after it, so the grammar
//! in [`crate::parser`] never mentions whitespace. Everything here returns
//! [`PResult`] with a [`PError`] that remembers the furthest position reached and
//! what was expected there.

use std::cell::Cell;
use std::rc::Rc;

use nom::{Err, IResult, Input};
use nom_locate::LocatedSpan;

use crate::ast::{Expr, StrPart};
use crate::span::{FileId, Span};

/// Per-parse state shared through the input's `extra` field.
#[derive(Debug)]
pub struct State<'a> {
    /// The file being parsed.
    pub file: FileId,
    /// Its whole text (for rules that look back, such as line breaks).
    pub text: &'a str,
    /// Current nesting depth of expressions, bounded by [`MAX_NESTING`].
    pub depth: Cell<u32>,
    /// Errors the parser recovered from, reported together at the end.
    pub errors: std::cell::RefCell<Vec<PError>>,
}

/// How many errors one parse reports before it stops recovering.
pub const MAX_ERRORS: usize = 8;

/// Deepest nesting of brackets, sub-expressions and operator chains the parser
/// accepts. Deeper input is almost certainly generated garbage; refusing it
/// keeps the parser, the resolver and the evaluator (which run on a thread
/// with a large stack, see [`crate::STACK_SIZE`]) far from its end.
pub const MAX_NESTING: u32 = 10_000;

/// The parser's input: the remaining text with its byte offset.
pub type In<'a> = LocatedSpan<&'a str, &'a State<'a>>;

/// The result of every parser function.
pub type PResult<'a, T> = IResult<In<'a>, T, PError>;

/// A parse error: the furthest position reached and what would have been valid
/// there, or a specific message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PError {
    /// Byte offset in the file.
    pub offset: usize,
    /// What the grammar accepted at `offset` (rendered as "expected ...").
    pub expected: Vec<&'static str>,
    /// A specific message that replaces the generic "expected" one.
    pub custom: Option<Box<Custom>>,
}

/// A parse error with its own wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Custom {
    /// Stable code, e.g. `parse::unterminated_string`.
    pub code: &'static str,
    /// The headline.
    pub message: String,
    /// Length of the span the error points at.
    pub len: usize,
    /// Label under the span.
    pub label: String,
    /// A hint.
    pub help: Option<String>,
    /// A second place to point at: offset, length, label.
    pub other: Option<(usize, usize, String)>,
}

impl PError {
    /// "expected `what`" at the start of `i`.
    pub fn expected(i: &In<'_>, what: &'static str) -> PError {
        PError {
            offset: i.location_offset(),
            expected: vec![what],
            custom: None,
        }
    }

    /// A specific error at `offset` covering `len` bytes.
    pub fn custom(
        offset: usize,
        len: usize,
        code: &'static str,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> PError {
        PError {
            offset,
            expected: Vec::new(),
            custom: Some(Box::new(Custom {
                code,
                message: message.into(),
                len,
                label: label.into(),
                help,
                other: None,
            })),
        }
    }
}

impl PError {
    /// Adds a second label.
    pub fn also(mut self, offset: usize, len: usize, label: impl Into<String>) -> PError {
        if let Some(c) = &mut self.custom {
            c.other = Some((offset, len, label.into()));
        }
        self
    }
}

impl<'a> nom::error::ParseError<In<'a>> for PError {
    fn from_error_kind(input: In<'a>, _kind: nom::error::ErrorKind) -> Self {
        PError {
            offset: input.location_offset(),
            expected: Vec::new(),
            custom: None,
        }
    }

    fn append(_input: In<'a>, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }

    /// Keeps the error that got furthest; at the same place, merges what each
    /// branch expected, so `alt` reports every alternative.
    fn or(self, other: Self) -> Self {
        if self.custom.is_some() && self.offset >= other.offset {
            return self;
        }
        if other.custom.is_some() && other.offset >= self.offset {
            return other;
        }
        match self.offset.cmp(&other.offset) {
            std::cmp::Ordering::Greater => self,
            std::cmp::Ordering::Less => other,
            std::cmp::Ordering::Equal => {
                let mut expected = self.expected;
                for e in other.expected {
                    if !expected.contains(&e) {
                        expected.push(e);
                    }
                }
                PError {
                    offset: self.offset,
                    expected,
                    custom: None,
                }
            }
        }
    }
}

/// A recoverable error: `alt` may try another branch.
pub fn backtrack<T>(e: PError) -> PResult<'static, T> {
    Err(Err::Error(e))
}

/// An error that stops the parse: the input is definitely wrong here.
pub fn fail<'a, T>(e: PError) -> PResult<'a, T> {
    Err(Err::Failure(e))
}

/// The span from `start` (an offset) to the start of `rest`, minus trailing
/// whitespace already consumed: callers pass `end` explicitly.
pub fn span(i: &In<'_>, start: usize, end: usize) -> Span {
    Span::new(i.extra.file, start, end)
}

/// Advances `n` bytes.
pub fn advance(i: In<'_>, n: usize) -> In<'_> {
    i.take_from(n)
}

/// Whitespace and `#` comments.
pub fn ws(i: In<'_>) -> In<'_> {
    let s = i.fragment().as_bytes();
    let mut n = 0;
    while n < s.len() {
        match s[n] {
            b' ' | b'\t' | b'\n' | b'\r' => n += 1,
            b'#' => {
                while n < s.len() && s[n] != b'\n' {
                    n += 1;
                }
            }
            _ => break,
        }
    }
    if n == 0 { i } else { advance(i, n) }
}

/// Whether `c` may start an identifier.
pub fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

/// Whether `c` may continue an identifier.
pub fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The reserved words.
pub const KEYWORDS: [&str; 9] = [
    "let", "in", "if", "then", "else", "fn", "true", "false", "null",
];

/// The identifier-shaped word at the start of `i` (keywords included), if any.
pub fn peek_word<'a>(i: &In<'a>) -> Option<&'a str> {
    let s: &'a str = i.fragment();
    let b = s.as_bytes();
    if b.is_empty() || !is_ident_start(b[0]) {
        return None;
    }
    let n = b.iter().position(|&c| !is_ident_char(c)).unwrap_or(b.len());
    Some(&s[..n])
}

/// An identifier (not a keyword), followed by whitespace.
pub fn ident(i: In<'_>) -> PResult<'_, (Rc<str>, Span)> {
    match peek_word(&i) {
        Some(w) if !KEYWORDS.contains(&w) => {
            let start = i.location_offset();
            let rest = advance(i, w.len());
            Ok((ws(rest), (Rc::from(w), span(&i, start, start + w.len()))))
        }
        Some(w) => fail(PError::custom(
            i.location_offset(),
            w.len(),
            "parse::keyword_as_name",
            format!("`{w}` is a keyword and cannot be used as a name"),
            "keyword",
            Some("choose another name".into()),
        )),
        None => backtrack(PError::expected(&i, "a name")),
    }
}

/// The keyword `kw`, followed by whitespace.
pub fn keyword<'a>(i: In<'a>, kw: &'static str, what: &'static str) -> PResult<'a, Span> {
    if peek_word(&i) == Some(kw) {
        let start = i.location_offset();
        Ok((ws(advance(i, kw.len())), span(&i, start, start + kw.len())))
    } else {
        backtrack(PError::expected(&i, what))
    }
}

/// The exact symbol `sym`, followed by whitespace. `what` is how an error
/// names it, e.g. "`=`".
pub fn symbol<'a>(i: In<'a>, sym: &'static str, what: &'static str) -> PResult<'a, Span> {
    if i.fragment().starts_with(sym) {
        let start = i.location_offset();
        Ok((
            ws(advance(i, sym.len())),
            span(&i, start, start + sym.len()),
        ))
    } else {
        backtrack(PError::expected(&i, what))
    }
}

/// A decimal integer literal, optionally negative (so that the smallest i64
/// can be written).
pub fn integer(i: In<'_>, negative: bool) -> PResult<'_, i64> {
    let b = i.fragment().as_bytes();
    let n = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    if n == 0 {
        return backtrack(PError::expected(&i, "an integer"));
    }
    let digits = &i.fragment()[..n];
    let start = i.location_offset();
    if b.get(n).is_some_and(|&c| is_ident_start(c)) {
        return fail(PError::custom(
            start,
            n + 1,
            "parse::bad_number",
            "a number cannot be followed directly by a letter",
            "not a number",
            Some("integers are decimal digits only; names cannot start with a digit".into()),
        ));
    }
    let parsed = if negative {
        format!("-{digits}").parse::<i64>()
    } else {
        digits.parse::<i64>()
    };
    match parsed {
        Ok(v) => Ok((ws(advance(i, n)), v)),
        Err(_) => fail(PError::custom(
            start,
            n,
            "parse::integer_overflow",
            "integer literal does not fit in 64 bits",
            "too large",
            Some(format!("integers range from {} to {}", i64::MIN, i64::MAX)),
        )),
    }
}

/// Whether `c` may appear in a path literal.
pub fn is_path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'/' | b'-')
}

/// Whether a path literal starts here: `./`, `../` or `/`.
pub fn at_path(i: &In<'_>) -> bool {
    let s = i.fragment();
    s.starts_with("./") || s.starts_with("../") || s.starts_with('/')
}

/// A path literal: `./`, `../` or `/` followed by path characters.
pub fn path(i: In<'_>) -> PResult<'_, (Rc<str>, Span)> {
    if !at_path(&i) {
        return backtrack(PError::expected(&i, "a path"));
    }
    let b = i.fragment().as_bytes();
    let n = b.iter().position(|&c| !is_path_char(c)).unwrap_or(b.len());
    let start = i.location_offset();
    let text = &i.fragment()[..n];
    if text.contains("//") {
        return fail(PError::custom(
            start,
            n,
            "parse::bad_path",
            format!("path `{text}` contains an empty component (`//`)"),
            "empty component",
            None,
        ));
    }
    Ok((
        ws(advance(i, n)),
        (Rc::from(text), span(&i, start, start + n)),
    ))
}

/// Parses `${ expr }` after the `${` has been seen; `expr` is the expression
/// parser (passed in to keep this module free of the grammar).
fn interpolation<'a>(i: In<'a>, expr: fn(In<'a>) -> PResult<'a, Expr>) -> PResult<'a, Expr> {
    let open = i.location_offset();
    let i = ws(advance(i, 2));
    let (i, e) = expr(i)?;
    if i.fragment().starts_with('}') {
        Ok((advance(i, 1), e))
    } else {
        let mut err = PError::expected(&i, "`}` closing the interpolation");
        if i.fragment().is_empty() {
            err = PError::custom(
                open,
                2,
                "parse::unterminated_interpolation",
                "unterminated interpolation",
                "this `${` is never closed",
                Some("add a `}` after the expression".into()),
            );
        }
        fail(err)
    }
}

/// A double-quoted string, with escapes and interpolation.
pub fn string<'a>(
    i: In<'a>,
    expr: fn(In<'a>) -> PResult<'a, Expr>,
) -> PResult<'a, (Vec<StrPart>, Span)> {
    if !i.fragment().starts_with('"') {
        return backtrack(PError::expected(&i, "a string"));
    }
    let open = i.location_offset();
    let mut i = advance(i, 1);
    let mut parts = Vec::new();
    let mut lit = String::new();
    loop {
        let s: &str = i.fragment();
        // Copy the longest run of ordinary characters at once.
        let run = s
            .bytes()
            .position(|c| matches!(c, b'"' | b'\\' | b'$'))
            .unwrap_or(s.len());
        lit.push_str(&s[..run]);
        i = advance(i, run);
        let s: &str = i.fragment();
        let b = s.as_bytes();
        match b.first() {
            None => {
                return fail(PError::custom(
                    open,
                    1,
                    "parse::unterminated_string",
                    "unterminated string",
                    "this string is never closed",
                    Some("add a closing `\"`".into()),
                ));
            }
            Some(b'"') => {
                i = advance(i, 1);
                break;
            }
            Some(b'$') if b.get(1) == Some(&b'{') => {
                if !lit.is_empty() {
                    parts.push(StrPart::Lit(Rc::from(std::mem::take(&mut lit))));
                }
                let (rest, e) = interpolation(i, expr)?;
                parts.push(StrPart::Interp(e));
                i = rest;
            }
            Some(b'$') => {
                lit.push('$');
                i = advance(i, 1);
            }
            Some(_) => {
                let (rest, c) = escape(i)?;
                lit.push(c);
                i = rest;
            }
        }
    }
    if !lit.is_empty() || parts.is_empty() {
        parts.push(StrPart::Lit(Rc::from(lit)));
    }
    let end = i.location_offset();
    Ok((ws(i), (parts, span(&i, open, end))))
}

/// A backslash escape inside a double-quoted string (at the `\`).
fn escape(i: In<'_>) -> PResult<'_, char> {
    let start = i.location_offset();
    let s: &str = i.fragment();
    let mut chars = s[1..].chars();
    let simple = match chars.next() {
        Some('"') => Some('"'),
        Some('\\') => Some('\\'),
        Some('n') => Some('\n'),
        Some('t') => Some('\t'),
        Some('r') => Some('\r'),
        Some('$') => Some('$'),
        Some('u') => None,
        Some(c) => {
            return fail(PError::custom(
                start,
                1 + c.len_utf8(),
                "parse::bad_escape",
                format!("unknown escape `\\{c}`"),
                "unknown escape",
                Some(
                    "valid escapes are \\\" \\\\ \\n \\t \\r \\$ and \\u{HEX}; write \\\\ for a backslash"
                        .into(),
                ),
            ));
        }
        None => {
            return fail(PError::custom(
                start,
                1,
                "parse::unterminated_string",
                "unterminated string",
                "the string ends in a lone backslash",
                None,
            ));
        }
    };
    if let Some(c) = simple {
        return Ok((advance(i, 2), c));
    }
    // \u{HEX}
    let bad = |len: usize| {
        fail(PError::custom(
            start,
            len,
            "parse::bad_unicode_escape",
            "invalid unicode escape",
            "invalid escape",
            Some("write \\u{...} with 1 to 6 hex digits naming a Unicode scalar value, e.g. \\u{1F600}".into()),
        ))
    };
    let rest = &s[2..];
    if !rest.starts_with('{') {
        return bad(2);
    }
    let Some(close) = rest.find('}') else {
        return bad(3);
    };
    let hex = &rest[1..close];
    let len = 2 + close + 1;
    if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return bad(len);
    }
    match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
        Some(c) => Ok((advance(i, len), c)),
        None => bad(len),
    }
}

/// A piece of an indented string before indentation is removed.
enum Piece {
    /// Source text: its leading whitespace counts as indentation.
    Text(String),
    /// Text from an escape: always content.
    Escaped(String),
    /// `${expr}`
    Interp(Expr),
}

/// An indented string `'' ... ''`, with Nix's whitespace rules (see the
/// language reference).
pub fn indented_string<'a>(
    i: In<'a>,
    expr: fn(In<'a>) -> PResult<'a, Expr>,
) -> PResult<'a, (Vec<StrPart>, Span)> {
    if !i.fragment().starts_with("''") {
        return backtrack(PError::expected(&i, "a string"));
    }
    let open = i.location_offset();
    let mut i = advance(i, 2);
    let mut pieces: Vec<Piece> = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, pieces: &mut Vec<Piece>| {
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
    };
    loop {
        let s: &str = i.fragment();
        let run = s
            .bytes()
            .position(|c| matches!(c, b'\'' | b'$'))
            .unwrap_or(s.len());
        text.push_str(&s[..run]);
        i = advance(i, run);
        let s: &str = i.fragment();
        let b = s.as_bytes();
        match (b.first(), b.get(1), b.get(2)) {
            (None, _, _) => {
                return fail(PError::custom(
                    open,
                    2,
                    "parse::unterminated_string",
                    "unterminated indented string",
                    "this `''` is never closed",
                    Some("add a closing `''`".into()),
                ));
            }
            (Some(b'\''), Some(b'\''), Some(b'$')) => {
                flush(&mut text, &mut pieces);
                pieces.push(Piece::Escaped("$".into()));
                i = advance(i, 3);
            }
            (Some(b'\''), Some(b'\''), Some(b'\'')) => {
                flush(&mut text, &mut pieces);
                pieces.push(Piece::Escaped("''".into()));
                i = advance(i, 3);
            }
            (Some(b'\''), Some(b'\''), Some(b'\\')) => {
                flush(&mut text, &mut pieces);
                let c = s[3..].chars().next();
                let decoded = match c {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some(c) => c,
                    None => {
                        return fail(PError::custom(
                            open,
                            2,
                            "parse::unterminated_string",
                            "unterminated indented string",
                            "this `''` is never closed",
                            None,
                        ));
                    }
                };
                pieces.push(Piece::Escaped(decoded.to_string()));
                i = advance(i, 3 + c.map_or(0, char::len_utf8));
            }
            (Some(b'\''), Some(b'\''), _) => {
                i = advance(i, 2);
                break;
            }
            (Some(b'$'), Some(b'{'), _) => {
                flush(&mut text, &mut pieces);
                let (rest, e) = interpolation(i, expr)?;
                pieces.push(Piece::Interp(e));
                i = rest;
            }
            (Some(&c), _, _) => {
                text.push(c as char);
                i = advance(i, 1);
            }
        }
    }
    flush(&mut text, &mut pieces);
    let end = i.location_offset();
    Ok((ws(i), (dedent(pieces), span(&i, open, end))))
}

/// One line of an indented string: its pieces, and whether a newline ends it.
struct Line {
    pieces: Vec<Piece>,
    newline: bool,
}

impl Line {
    fn is_blank(&self) -> bool {
        self.pieces.iter().all(|p| match p {
            Piece::Text(t) => t.bytes().all(|c| c == b' ' || c == b'\t' || c == b'\r'),
            _ => false,
        })
    }

    /// Leading spaces and tabs of the first piece, when it is source text.
    fn indent(&self) -> &str {
        match self.pieces.first() {
            Some(Piece::Text(t)) => {
                let n = t
                    .bytes()
                    .position(|c| c != b' ' && c != b'\t')
                    .unwrap_or(t.len());
                &t[..n]
            }
            _ => "",
        }
    }
}

/// Applies the indented-string rules: drop a blank first line, empty a blank
/// last line, remove the common leading whitespace of the non-blank lines.
fn dedent(pieces: Vec<Piece>) -> Vec<StrPart> {
    let mut lines = vec![Line {
        pieces: Vec::new(),
        newline: false,
    }];
    for p in pieces {
        match p {
            Piece::Text(t) => {
                let mut segments = t.split('\n').peekable();
                while let Some(seg) = segments.next() {
                    let line = lines.last_mut().expect("lines is never empty");
                    // CRLF files: the carriage return belongs to the line
                    // break, not to the build script.
                    let seg = match segments.peek() {
                        Some(_) => seg.strip_suffix('\r').unwrap_or(seg),
                        None => seg,
                    };
                    if !seg.is_empty() {
                        line.pieces.push(Piece::Text(seg.to_string()));
                    }
                    if segments.peek().is_some() {
                        line.newline = true;
                        lines.push(Line {
                            pieces: Vec::new(),
                            newline: false,
                        });
                    }
                }
            }
            other => lines
                .last_mut()
                .expect("lines is never empty")
                .pieces
                .push(other),
        }
    }
    if lines.len() > 1 && lines[0].is_blank() {
        lines.remove(0);
    }
    if let Some(last) = lines.last_mut()
        && last.is_blank()
    {
        last.pieces.clear();
    }
    // The common indentation: the longest common prefix of the leading
    // whitespace of every non-blank line (a prefix, not a count, so that tabs
    // and spaces are never confused).
    let mut common: Option<String> = None;
    for line in lines.iter().filter(|l| !l.is_blank()) {
        let ind = line.indent();
        common = Some(match common {
            None => ind.to_string(),
            Some(c) => {
                let n = c
                    .bytes()
                    .zip(ind.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                c[..n].to_string()
            }
        });
    }
    let strip = common.map_or(0, |c| c.len());
    let mut parts: Vec<StrPart> = Vec::new();
    let mut text = String::new();
    for line in lines {
        let mut to_strip = strip;
        for (k, p) in line.pieces.into_iter().enumerate() {
            match p {
                Piece::Text(t) => {
                    let t = if k == 0 && to_strip > 0 {
                        let n = t
                            .bytes()
                            .take(to_strip)
                            .take_while(|&c| c == b' ' || c == b'\t')
                            .count();
                        to_strip = 0;
                        t[n..].to_string()
                    } else {
                        t
                    };
                    text.push_str(&t);
                }
                Piece::Escaped(t) => text.push_str(&t),
                Piece::Interp(e) => {
                    if !text.is_empty() {
                        parts.push(StrPart::Lit(Rc::from(std::mem::take(&mut text))));
                    }
                    parts.push(StrPart::Interp(e));
                }
            }
        }
        if line.newline {
            text.push('\n');
        }
    }
    if !text.is_empty() || parts.is_empty() {
        parts.push(StrPart::Lit(Rc::from(text)));
    }
    parts
}
