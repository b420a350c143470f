//! Diagnostics: every error a user can cause, as a [`miette`] report that
//! shows `FILE:LINE:COL`, the source line, a caret under the span, a label
//! and a hint.
//!
//! Parse, resolve and evaluation errors are converted here into one
//! [`Diagnostic`] type that owns its source text, so it can be rendered after
//! the evaluator is gone. [`render`] is the single renderer used by the CLI
//! and by the snapshot tests.

use std::fmt;
use std::sync::Arc;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};

use crate::lexer::PError;
use crate::resolve::ResolveError;
use crate::span::{SourceMap, Span, floor_char_boundary};

/// A rendered-on-demand error with its source.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Stable code, e.g. `eval::type_mismatch`.
    pub code: String,
    /// The headline.
    pub message: String,
    /// The source the labels point into.
    pub source: Option<Source>,
    /// `FILE:LINE:COL` of the primary label, for plain-text consumers.
    pub location: Option<String>,
    /// Labelled spans in `source`; the first is the primary one.
    pub labels: Vec<LabeledSpan>,
    /// A hint.
    pub help: Option<String>,
    /// Further diagnostics shown below this one (other errors, import sites).
    pub related: Vec<Diagnostic>,
}

impl Diagnostic {
    /// A diagnostic without a source location (e.g. a file that cannot be read).
    pub fn plain(code: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code: code.into(),
            message: message.into(),
            source: None,
            location: None,
            labels: Vec::new(),
            help: None,
            related: Vec::new(),
        }
    }

    /// A diagnostic pointing at `span` in `sources`.
    pub fn at(
        sources: &SourceMap,
        code: &str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Diagnostic {
        let file = sources.get(span.file);
        let mut d = Diagnostic::plain(code, message);
        d.source = Some(Source {
            name: file.name.clone(),
            text: file.text.clone(),
        });
        d.location = Some(sources.location(span));
        d.labels.push(LabeledSpan::new_primary_with_span(
            Some(label.into()),
            source_span(&file.text, span),
        ));
        d
    }

    /// Adds a secondary label; spans in another file become a related note.
    pub fn label(mut self, sources: &SourceMap, span: Span, label: impl Into<String>) -> Self {
        let same_file = self
            .source
            .as_ref()
            .is_some_and(|s| s.name == sources.get(span.file).name);
        if same_file {
            let text = &sources.get(span.file).text;
            self.labels.push(LabeledSpan::new_with_span(
                Some(label.into()),
                source_span(text, span),
            ));
        } else {
            let label = label.into();
            self.related
                .push(Diagnostic::at(sources, "note", label.clone(), span, label));
        }
        self
    }

    /// Sets the hint.
    pub fn help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

/// A span as miette wants it: clamped to the text, on char boundaries, at
/// least one character wide so the caret has something to sit under, and cut
/// to its first line when it covers more than [`MAX_LABEL_LINES`] lines (miette
/// would print every one of them).
fn source_span(text: &str, span: Span) -> SourceSpan {
    let start = floor_char_boundary(text, span.start as usize);
    let mut end = floor_char_boundary(text, (span.end as usize).max(start));
    if end == start && start < text.len() {
        end = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    if text[start..end].matches('\n').count() > MAX_LABEL_LINES {
        end = start + text[start..end].find('\n').unwrap_or(end - start);
        end = end.max(start + 1).min(text.len());
    }
    SourceSpan::new(start.into(), end - start)
}

/// Labels spanning more lines than this are shown by their first line only.
const MAX_LABEL_LINES: usize = 4;

/// Snippets longer than this (a huge line, say) are cut to a window around
/// the label.
const MAX_SNIPPET_BYTES: usize = 2000;

/// Characters shown on either side of a label inside a cut line.
const WINDOW: usize = 60;

/// A named source text for miette that never shows more than a window of a
/// very long line, so a diagnostic about a 100 MB one-line file stays short.
#[derive(Debug, Clone)]
pub struct Source {
    /// The name shown in the snippet header.
    pub name: String,
    /// The whole text.
    pub text: Arc<str>,
}

impl SourceCode for Source {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let text: &'a str = &self.text;
        let inner = text.read_span(span, before, after)?;
        let named = |data: &'a [u8], sp: SourceSpan, line, column, count| {
            Box::new(MietteSpanContents::new_named(
                self.name.clone(),
                data,
                sp,
                line,
                column,
                count,
            )) as Box<dyn SpanContents<'a> + 'a>
        };
        if inner.data().len() <= MAX_SNIPPET_BYTES {
            return Ok(named(
                inner.data(),
                *inner.span(),
                inner.line(),
                inner.column(),
                inner.line_count(),
            ));
        }
        // One line, cut around the label.
        let at = floor_char_boundary(text, span.offset());
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let from = floor_char_boundary(text, at.saturating_sub(WINDOW).max(line_start));
        let label_end = (span.offset() + span.len()).min(at + WINDOW);
        let to = floor_char_boundary(text, (label_end + WINDOW).min(line_end));
        let (from, line_col_from) = if before == 0 && after == 0 {
            (at, at)
        } else {
            (from, from)
        };
        let to = to.max(from);
        let line = text[..from].matches('\n').count();
        let column = text[line_start..line_col_from].chars().count();
        Ok(named(
            &text.as_bytes()[from..to],
            SourceSpan::new(from.into(), to - from),
            line,
            column,
            1,
        ))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        if self.code == "note" {
            None
        } else {
            Some(Box::new(&self.code))
        }
    }

    fn severity(&self) -> Option<miette::Severity> {
        if self.code == "note" {
            Some(miette::Severity::Advice)
        } else {
            None
        }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(
                self.related.iter().map(|d| d as &dyn miette::Diagnostic),
            ))
        }
    }
}

/// Renders a diagnostic as text: Unicode box drawing, colour only if asked,
/// wrapped at `width` columns. Related diagnostics (further errors, import
/// sites) follow, each rendered as a report of its own.
pub fn render(d: &Diagnostic, width: usize, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(width)
        .with_links(false);
    let mut out = String::new();
    let mut queue = vec![d];
    let mut first = true;
    while let Some(next) = queue.pop() {
        let mut alone = next.clone();
        alone.related.clear();
        if !first {
            out.push('\n');
        }
        first = false;
        if handler.render_report(&mut out, &alone).is_err() {
            out.push_str(&format!("error: {}\n", next.message));
        }
        queue.extend(next.related.iter().rev());
    }
    out
}

/// Converts parse errors into one diagnostic (the first error, the others
/// related).
pub fn from_parse_errors(
    sources: &SourceMap,
    file: crate::FileId,
    errors: &[PError],
) -> Diagnostic {
    let mut all = errors.iter().map(|e| from_parse_error(sources, file, e));
    let mut first = all
        .next()
        .unwrap_or_else(|| Diagnostic::plain("parse::error", "parse error"));
    first.related.extend(all);
    first
}

fn from_parse_error(sources: &SourceMap, file: crate::FileId, e: &PError) -> Diagnostic {
    let text = &sources.get(file).text;
    if let Some(c) = &e.custom {
        let span = Span::new(file, e.offset, e.offset + c.len);
        let mut d = Diagnostic::at(sources, c.code, c.message.clone(), span, c.label.clone())
            .help(c.help.clone());
        if let Some((off, len, label)) = &c.other {
            d = d.label(sources, Span::new(file, *off, off + len), label.clone());
        }
        return d;
    }
    if text.trim().is_empty() {
        let mut d = Diagnostic::plain(
            "parse::empty",
            format!("{} is empty", sources.get(file).name),
        );
        d.help = Some("a recipe holds exactly one expression".into());
        return d;
    }
    let found = describe_found(text, e.offset);
    let message = match e.expected.as_slice() {
        [] => format!("unexpected {found}"),
        [one] => format!("expected {one}, found {found}"),
        many => {
            let (last, rest) = many.split_last().expect("non-empty");
            format!("expected {} or {last}, found {found}", rest.join(", "))
        }
    };
    let help = hint_for(text, e.offset, &e.expected);
    // At the end of the file there is nothing to underline: point just after
    // the last token instead.
    let end = text.trim_end().len();
    if e.offset >= end && end > 0 {
        let last = floor_char_boundary(text, end - 1);
        let span = Span::new(file, last, end);
        return Diagnostic::at(
            sources,
            "parse::syntax",
            message,
            span,
            "the file ends after this",
        )
        .help(help);
    }
    let span = Span::new(file, e.offset, e.offset + found_len(text, e.offset));
    Diagnostic::at(sources, "parse::syntax", message, span, "unexpected here").help(help)
}

/// The token at `offset`, as "`x`" or "end of file".
pub(crate) fn describe_found(text: &str, offset: usize) -> String {
    let start = floor_char_boundary(text, offset);
    let rest = &text[start..];
    match rest.chars().next() {
        None => "end of file".into(),
        Some('\n') | Some('\r') => "end of line".into(),
        Some(_) => format!("`{}`", &rest[..found_len(text, offset)]),
    }
}

/// Length of the token at `offset`: a word, a run of operator characters,
/// or one character.
pub(crate) fn found_len(text: &str, offset: usize) -> usize {
    let start = floor_char_boundary(text, offset);
    let rest = &text[start..];
    let word = rest
        .bytes()
        .take_while(|&c| c.is_ascii_alphanumeric() || c == b'_')
        .count();
    let op = rest
        .bytes()
        .take_while(|c| b"=<>!&|?+-*/.".contains(c))
        .count();
    if word > 0 {
        word.min(40)
    } else if op > 0 {
        op.min(3)
    } else {
        rest.chars().next().map_or(0, char::len_utf8)
    }
}

/// Hints for the mistakes people make most.
fn hint_for(text: &str, offset: usize, expected: &[&str]) -> Option<String> {
    let start = floor_char_boundary(text, offset);
    let rest = &text[start..];
    if rest.starts_with(';') {
        return Some("bindings and fields are separated by `,`, not `;`".into());
    }
    if rest.starts_with(':') && expected.iter().any(|e| e.contains('=')) {
        return Some("fields are written `name = value`".into());
    }
    let starts_expression = rest
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || b"_\"'[{(./-!".contains(&c));
    if expected.contains(&"`in`") && starts_expression {
        return Some("put `in` before the body of the `let`, and `,` between bindings".into());
    }
    if expected.contains(&"`,`") && starts_expression {
        return Some("separate items with `,`".into());
    }
    if rest.starts_with('\'') {
        return Some("strings are written \"...\" or ''...''".into());
    }
    None
}

/// Converts resolve errors into one diagnostic (the first, the others
/// related).
pub fn from_resolve_errors(sources: &SourceMap, errors: &[ResolveError]) -> Diagnostic {
    let mut all = errors.iter().map(|e| {
        let mut d = Diagnostic::at(sources, e.code, e.message.clone(), e.span, e.label.clone())
            .help(e.help.clone());
        if let Some((sp, label)) = &e.other {
            d = d.label(sources, *sp, label.clone());
        }
        d
    });
    let mut first = all
        .next()
        .unwrap_or_else(|| Diagnostic::plain("eval::error", "error"));
    first.related.extend(all);
    first
}

/// The candidate closest to `name` by edit distance, if it is close enough to
/// be a plausible typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let d = edit_distance(name, c);
        if d <= limit && best.is_none_or(|(bd, bc)| d < bd || (d == bd && c < bc)) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal string alignment distance (Levenshtein plus adjacent swaps).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
