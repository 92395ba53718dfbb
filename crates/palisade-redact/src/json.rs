//! [`JsonRedactor`]: a streaming, incremental redactor for JSON, NDJSON and
//! server-sent events. Pure: no I/O, no async, testable byte by byte.
//!
//! It tokenizes its input one byte at a time (runs of plain string bytes are
//! copied in one go), tracking object and array nesting, the key being read
//! (normalised as in [`SecretNames`]) and string escapes, so a token split
//! anywhere between two chunks, inside a `\"` or a `\u0070`, is read exactly
//! as if it had come in one piece. The value of a secret key, whatever it
//! is (a string, a number, a whole object or array), is swallowed and
//! `"***REDACTED***"` written once in its place. Nothing is buffered except
//! the key being read (at most the length of the longest secret name) and
//! one byte per level of nesting.
//!
//! ```
//! use palisade_redact::{Framing, JsonRedactor, SecretNames};
//!
//! let mut redactor = JsonRedactor::new(SecretNames::default_body_keys(), Framing::Json);
//! let mut out = Vec::new();
//! redactor.feed(br#"{"user":"ada","pass"#, &mut out);
//! redactor.feed(br#"word":{"old":"a\"b","new":[1,2]},"n":1}"#, &mut out);
//! assert!(redactor.finish(&mut out).is_complete());
//! assert_eq!(out, br#"{"user":"ada","password":"***REDACTED***","n":1}"#);
//! ```
//!
//! # Invalid input fails safe
//! Input that is not valid JSON never panics and never leaks: at the first
//! byte that cannot continue a valid document, the redactor stops writing
//! and emits nothing further for the rest of that document (for
//! [`Framing::Json`], the rest of the body; for [`Framing::Lines`], the rest
//! of the line; for [`Framing::EventStream`], the rest of the `data:` line).
//! What was written before that byte was a valid prefix and was redacted.
//! The check is structural: numbers are accepted as any run of
//! `0-9 . e E + -`, and UTF-8 inside strings is passed through unchecked;
//! neither can change which values are redacted.

mod document;

use self::document::{Document, State};
use crate::names::SecretNames;

/// What replaces a secret, in text.
pub const REDACTED: &str = "***REDACTED***";
/// What replaces a secret value in JSON: the JSON string `"***REDACTED***"`.
const REDACTED_JSON: &[u8] = b"\"***REDACTED***\"";

/// The default limit of nesting (objects and arrays) in one document.
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// How a body is cut into JSON documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// One JSON document (`application/json`, `application/*+json`);
    /// anything but whitespace after it is invalid.
    Json,
    /// One JSON document per line (`application/x-ndjson`,
    /// `application/jsonl`): a line feed ends the line's document. Blank
    /// lines pass through.
    Lines,
    /// Server-sent events (`text/event-stream`): the value of every `data:`
    /// line is a JSON document; other fields (`event:`, `id:`, `retry:`,
    /// comments) pass through unchanged. Lines end at CR, LF or CRLF.
    EventStream,
}

/// How the input ended, returned by [`JsonRedactor::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every document was valid and complete (an empty input included).
    Complete,
    /// The input ended inside a document.
    Truncated,
    /// At least one document was invalid, and its rest was dropped.
    Invalid,
}

impl Outcome {
    /// Whether every document was valid and complete.
    pub fn is_complete(self) -> bool {
        self == Outcome::Complete
    }
}

/// Where a server-sent events line stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventLine {
    /// Reading the field name: how many bytes of `data` matched so far, 5
    /// once it cannot be `data`.
    Field(u8),
    /// After `data:`: an optional space.
    DataSpace,
    /// Inside a `data:` value: a JSON document.
    Data,
    /// Inside another field's value: passed through.
    Pass,
}

/// The streaming redactor. Feed it chunks as they come; it writes the
/// redacted bytes of each chunk at once (see the [module docs](self)).
#[derive(Debug)]
pub struct JsonRedactor {
    names: SecretNames,
    framing: Framing,
    max_depth: usize,
    document: Document,
    line: EventLine,
    invalid_documents: u64,
}

impl JsonRedactor {
    /// A redactor of the values of `names`, for input framed as `framing`.
    pub fn new(names: SecretNames, framing: Framing) -> Self {
        Self {
            names,
            framing,
            max_depth: DEFAULT_MAX_DEPTH,
            document: Document::new(),
            line: EventLine::Field(0),
            invalid_documents: 0,
        }
    }

    /// Sets the deepest nesting accepted (default [`DEFAULT_MAX_DEPTH`]);
    /// deeper documents are invalid (and fail safe).
    pub fn with_max_depth(mut self, max_depth: usize) -> Self {
        self.max_depth = max_depth;
        self
    }

    /// The framing this redactor reads.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// How many documents so far were invalid (and cut short).
    pub fn invalid_documents(&self) -> u64 {
        self.invalid_documents
    }

    /// Redacts the next chunk of input, appending the output to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        match self.framing {
            Framing::Json => {
                self.run(chunk, out, false, false);
            }
            Framing::Lines => {
                let mut i = 0;
                while i < chunk.len() {
                    i += self.run(&chunk[i..], out, true, false);
                    if i < chunk.len() {
                        // A line feed: the line's document ends.
                        self.end_document();
                        out.push(b'\n');
                        i += 1;
                    }
                }
            }
            Framing::EventStream => self.feed_events(chunk, out),
        }
    }

    /// Ends the input: returns whether every document was complete and
    /// valid, and readies the redactor for a new input. Writes nothing
    /// today; `out` is there so that a later version may.
    pub fn finish(&mut self, _out: &mut Vec<u8>) -> Outcome {
        let outcome = if self.framing == Framing::EventStream && self.line != EventLine::Data {
            Outcome::Complete
        } else {
            self.document.outcome()
        };
        let invalid = self.invalid_documents > 0 || outcome == Outcome::Invalid;
        self.document.reset();
        self.line = EventLine::Field(0);
        self.invalid_documents = 0;
        if invalid { Outcome::Invalid } else { outcome }
    }

    fn run(&mut self, input: &[u8], out: &mut Vec<u8>, lines: bool, cr: bool) -> usize {
        let was_failed = self.document.state == State::Failed;
        let consumed = self
            .document
            .run(&self.names, self.max_depth, input, out, lines, cr);
        if !was_failed && self.document.state == State::Failed {
            self.invalid_documents += 1;
        }
        consumed
    }

    fn end_document(&mut self) {
        if self.document.outcome() == Outcome::Truncated {
            // A line ended inside a document: what was written was a valid
            // prefix; the document is counted as invalid.
            self.invalid_documents += 1;
        }
        self.document.reset();
    }

    fn feed_events(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while let Some(&byte) = chunk.get(i) {
            let line_end = byte == b'\n' || byte == b'\r';
            match self.line {
                EventLine::Field(matched) => {
                    out.push(byte);
                    i += 1;
                    self.line = if line_end {
                        EventLine::Field(0)
                    } else if byte == b':' {
                        if matched == 4 {
                            EventLine::DataSpace
                        } else {
                            EventLine::Pass
                        }
                    } else if matched < 4 && byte == b"data"[usize::from(matched)] {
                        EventLine::Field(matched + 1)
                    } else {
                        EventLine::Field(5)
                    };
                }
                EventLine::DataSpace => {
                    if byte == b' ' {
                        out.push(byte);
                        i += 1;
                    }
                    self.line = EventLine::Data;
                }
                EventLine::Data => {
                    i += self.run(&chunk[i..], out, true, true);
                    if let Some(&end) = chunk.get(i) {
                        self.end_document();
                        out.push(end);
                        i += 1;
                        self.line = EventLine::Field(0);
                    }
                }
                EventLine::Pass => {
                    let rest = &chunk[i..];
                    match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                        Some(at) => {
                            out.extend_from_slice(&rest[..=at]);
                            i += at + 1;
                            self.line = EventLine::Field(0);
                        }
                        None => {
                            out.extend_from_slice(rest);
                            i = chunk.len();
                        }
                    }
                }
            }
        }
    }
}
