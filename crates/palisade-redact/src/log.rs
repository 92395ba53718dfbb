//! Redaction of log output: [`LineRedactor`] redacts the values of
//! configured fields and every secret the [`SecretScanner`] knows in a log
//! line, and [`RedactingMakeWriter`] (feature `fmt`) applies it to every
//! line a `tracing-subscriber` formatter writes.
//!
//! ```
//! use palisade_redact::log::LineRedactor;
//!
//! let redactor = LineRedactor::new();
//! let line = r#"INFO login user=ada password=hunter2 note="x" token="a b c""#;
//! assert_eq!(
//!     redactor.redact_line(line.as_bytes()),
//!     br#"INFO login user=ada password=***REDACTED*** note="x" token=***REDACTED***"#.as_slice(),
//! );
//! ```
//!
//! Fields are recognised as `name=value` (tracing's text format),
//! `name: value` (`Debug` of structs) and `"name":value` (JSON); names are
//! compared as [`SecretNames`] compares them, after the last `.` of a dotted
//! path. A quoted value is redacted to its closing quote; an unquoted one to
//! the next whitespace (so a value cannot end early and leak its rest). A
//! line that starts with `{` is read as a JSON document and redacted with
//! the [`JsonRedactor`] (whole nested values
//! included); if it is not valid JSON, the rest from the first invalid byte
//! is dropped, as for bodies.

use std::borrow::Cow;

use crate::json::{Framing, JsonRedactor, REDACTED};
use crate::names::{SecretNames, normalise_byte};
use crate::scan::SecretScanner;

/// Redacts log lines (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct LineRedactor {
    fields: SecretNames,
    scanner: Option<SecretScanner>,
}

impl Default for LineRedactor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineRedactor {
    /// Redacts the [default body keys](crate::DEFAULT_BODY_KEYS) as fields
    /// and every secret of the default [`SecretScanner`].
    pub fn new() -> Self {
        Self {
            fields: SecretNames::default_body_keys(),
            scanner: Some(SecretScanner::default()),
        }
    }

    /// Redacts these fields instead.
    pub fn fields(mut self, fields: SecretNames) -> Self {
        self.fields = fields;
        self
    }

    /// Scans with this scanner (for your API key prefixes) instead.
    pub fn scanner(mut self, scanner: SecretScanner) -> Self {
        self.scanner = Some(scanner);
        self
    }

    /// Redacts fields only, without scanning for secrets by format.
    pub fn without_scanner(mut self) -> Self {
        self.scanner = None;
        self
    }

    /// One line, redacted (borrowed when nothing was).
    pub fn redact_line<'a>(&self, line: &'a [u8]) -> Cow<'a, [u8]> {
        let fields = if line.trim_ascii_start().starts_with(b"{") {
            let mut redactor = JsonRedactor::new(self.fields.clone(), Framing::Lines);
            let mut out = Vec::with_capacity(line.len());
            redactor.feed(line, &mut out);
            let _ = redactor.finish(&mut out);
            if out == line {
                Cow::Borrowed(line)
            } else {
                Cow::Owned(out)
            }
        } else {
            redact_text_fields(line, &self.fields)
        };
        match &self.scanner {
            None => fields,
            Some(scanner) => match fields {
                Cow::Borrowed(text) => scanner.redact(text),
                Cow::Owned(text) => Cow::Owned(scanner.redact(&text).into_owned()),
            },
        }
    }
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.')
}

/// The end of the value starting at `from`: a quoted string to its closing
/// quote, or anything else to the next whitespace.
fn value_end(line: &[u8], from: usize) -> usize {
    if line.get(from) == Some(&b'"') {
        let mut i = from + 1;
        while let Some(&byte) = line.get(i) {
            match byte {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        line.len()
    } else {
        line.get(from..)
            .and_then(|rest| rest.iter().position(u8::is_ascii_whitespace))
            .map_or(line.len(), |at| from + at)
    }
}

/// Whether the name ending at `end` (exclusive) is a secret field; looks
/// back over name bytes and takes the part after the last `.`.
fn secret_name_before(line: &[u8], end: usize, fields: &SecretNames) -> bool {
    let (mut end, quoted) = match end.checked_sub(1).and_then(|i| line.get(i)) {
        Some(b'"') => (end - 1, true),
        _ => (end, false),
    };
    let mut start = end;
    while start > 0 && line.get(start - 1).is_some_and(|&b| is_name_byte(b)) {
        start -= 1;
    }
    if quoted && (start == 0 || line.get(start - 1) != Some(&b'"')) {
        return false;
    }
    let name = &line[start..end];
    if let Some(dot) = name.iter().rposition(|&b| b == b'.') {
        start += dot + 1;
    }
    end = end.max(start);
    let mut normalised = [0u8; 64];
    let mut len = 0;
    for &byte in &line[start..end] {
        if let Some(folded) = normalise_byte(byte) {
            if len == normalised.len() || len == fields.longest() {
                return false;
            }
            normalised[len] = folded;
            len += 1;
        }
    }
    len > 0 && fields.contains_normalised(&normalised[..len])
}

fn redact_text_fields<'a>(line: &'a [u8], fields: &SecretNames) -> Cow<'a, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(&byte) = line.get(i) {
        if (byte == b'=' || byte == b':') && secret_name_before(line, i, fields) {
            let mut value = i + 1;
            if byte == b':' {
                while line.get(value) == Some(&b' ') {
                    value += 1;
                }
            }
            if value < line.len() && !line[value].is_ascii_whitespace() {
                let end = value_end(line, value);
                let buffer = out.get_or_insert_with(|| Vec::with_capacity(line.len()));
                buffer.extend_from_slice(&line[copied..value]);
                buffer.extend_from_slice(REDACTED.as_bytes());
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(line),
        Some(mut buffer) => {
            buffer.extend_from_slice(&line[copied..]);
            Cow::Owned(buffer)
        }
    }
}

#[cfg(feature = "fmt")]
pub use writer::{RedactingMakeWriter, RedactingWriter};

#[cfg(feature = "fmt")]
mod writer {
    use std::io::{self, Write};

    use tracing_subscriber::fmt::MakeWriter;

    use super::LineRedactor;

    /// Wraps a `tracing-subscriber` [`MakeWriter`] so that every line
    /// written through it is redacted by a [`LineRedactor`].
    ///
    /// ```
    /// use palisade_redact::log::{LineRedactor, RedactingMakeWriter};
    ///
    /// let subscriber = tracing_subscriber::fmt()
    ///     .with_writer(RedactingMakeWriter::new(std::io::stderr, LineRedactor::new()))
    ///     .finish();
    /// # let _ = subscriber;
    /// ```
    #[derive(Clone, Debug)]
    pub struct RedactingMakeWriter<M> {
        inner: M,
        redactor: LineRedactor,
    }

    impl<M> RedactingMakeWriter<M> {
        /// Redacts what `inner` is given with `redactor`.
        pub fn new(inner: M, redactor: LineRedactor) -> Self {
            Self { inner, redactor }
        }
    }

    impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
        type Writer = RedactingWriter<'a, M::Writer>;

        fn make_writer(&'a self) -> Self::Writer {
            RedactingWriter::new(self.inner.make_writer(), &self.redactor)
        }

        fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
            RedactingWriter::new(self.inner.make_writer_for(meta), &self.redactor)
        }
    }

    /// The writer of [`RedactingMakeWriter`]: holds bytes until a line is
    /// whole, then writes it redacted. A last line without a line feed is
    /// written when the writer is flushed or dropped.
    #[derive(Debug)]
    pub struct RedactingWriter<'a, W: Write> {
        inner: W,
        redactor: &'a LineRedactor,
        line: Vec<u8>,
    }

    impl<'a, W: Write> RedactingWriter<'a, W> {
        fn new(inner: W, redactor: &'a LineRedactor) -> Self {
            Self {
                inner,
                redactor,
                line: Vec::new(),
            }
        }

        fn write_pending(&mut self) -> io::Result<()> {
            if !self.line.is_empty() {
                let line = std::mem::take(&mut self.line);
                self.inner.write_all(&self.redactor.redact_line(&line))?;
            }
            Ok(())
        }
    }

    impl<W: Write> Write for RedactingWriter<'_, W> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut rest = buf;
            while let Some(at) = rest.iter().position(|&b| b == b'\n') {
                let (line, after) = rest.split_at(at + 1);
                if self.line.is_empty() {
                    self.inner.write_all(&self.redactor.redact_line(line))?;
                } else {
                    self.line.extend_from_slice(line);
                    self.write_pending()?;
                }
                rest = after;
            }
            self.line.extend_from_slice(rest);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.write_pending()?;
            self.inner.flush()
        }
    }

    impl<W: Write> Drop for RedactingWriter<'_, W> {
        fn drop(&mut self) {
            // A log writer has nowhere to report its own failure.
            let _ = self.flush();
        }
    }
}
