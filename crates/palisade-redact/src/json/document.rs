//! [`Document`]: the tokenizer of one JSON document, byte by byte, with
//! the redaction of secret values; [`JsonRedactor`](super::JsonRedactor)
//! cuts the input into documents and drives it.

use super::{Outcome, REDACTED_JSON};
use crate::names::{SecretNames, normalise_byte};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// The start of a document: whitespace, then its value.
    Start,
    /// After `:`, or `,` in an array: a value.
    Value,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the container's end.
    AfterValue,
    /// Inside a string (a key if `in_key`).
    Str,
    /// After a `\` inside a string.
    Escape,
    /// Inside the four hex digits of a `\u` escape.
    Unicode,
    /// Inside a number.
    Number,
    /// Inside `true`, `false` or `null`: the bytes still expected.
    Literal(&'static [u8]),
    /// After the document's value: whitespace only.
    Done,
    /// The document is invalid: nothing more is written for it.
    Failed,
}

/// The state of one document.
#[derive(Debug)]
pub(super) struct Document {
    pub(super) state: State,
    /// One entry per open container: `true` for an object.
    stack: Vec<bool>,
    /// Inside a secret value: bytes are read but not written.
    skipping: bool,
    /// The nesting at which the secret value started.
    skip_base: usize,
    /// The value about to start belongs to a secret key.
    secret_next: bool,
    /// The string being read is a key.
    in_key: bool,
    /// The key being read, normalised, at most `SecretNames::longest` bytes.
    key: Vec<u8>,
    /// The key is longer than any secret name.
    key_too_long: bool,
    /// The last key read is a secret name.
    key_is_secret: bool,
    unicode: u16,
    unicode_digits: u8,
}

impl Document {
    pub(super) fn new() -> Self {
        Self {
            state: State::Start,
            stack: Vec::new(),
            skipping: false,
            skip_base: 0,
            secret_next: false,
            in_key: false,
            key: Vec::new(),
            key_too_long: false,
            key_is_secret: false,
            unicode: 0,
            unicode_digits: 0,
        }
    }

    pub(super) fn reset(&mut self) {
        self.state = State::Start;
        self.stack.clear();
        self.skipping = false;
        self.secret_next = false;
        self.in_key = false;
    }

    /// How the document stands if its input ends here.
    pub(super) fn outcome(&self) -> Outcome {
        match self.state {
            State::Start | State::Done => Outcome::Complete,
            State::Number if self.stack.is_empty() => Outcome::Complete,
            State::Failed => Outcome::Invalid,
            _ => Outcome::Truncated,
        }
    }

    #[inline]
    fn key_byte(&mut self, byte: u8, longest: usize) {
        if let Some(folded) = normalise_byte(byte) {
            if self.key.len() < longest {
                self.key.push(folded);
            } else {
                self.key_too_long = true;
            }
        }
    }

    /// A value ended; returns whether writing resumes (the end of a secret
    /// value).
    #[inline]
    fn value_done(&mut self) -> bool {
        self.state = if self.stack.is_empty() {
            State::Done
        } else {
            State::AfterValue
        };
        if self.skipping && self.stack.len() == self.skip_base {
            self.skipping = false;
            true
        } else {
            false
        }
    }

    /// Redacts `input` into `out` until its end or, when `lines` is set, a
    /// line end (LF, and CR too if `cr_ends_line`); returns the index where
    /// it stopped (the line end is not consumed).
    pub(super) fn run(
        &mut self,
        names: &SecretNames,
        max_depth: usize,
        input: &[u8],
        out: &mut Vec<u8>,
        lines: bool,
        cr_ends_line: bool,
    ) -> usize {
        let is_line_end = |byte: u8| lines && (byte == b'\n' || (cr_ends_line && byte == b'\r'));
        let skip_to_line_end = |from: usize| -> usize {
            if lines {
                input[from..]
                    .iter()
                    .position(|&b| is_line_end(b))
                    .map_or(input.len(), |at| from + at)
            } else {
                input.len()
            }
        };
        if self.state == State::Failed {
            return skip_to_line_end(0);
        }
        let longest = names.longest();
        let mut emit_from = 0;
        let mut i = 0;
        // Each arm either consumes `input[i]` (advancing `i`), or changes
        // state and leaves it to the next arm (a number's terminator), or
        // breaks out: at a line end, or to fail.
        let failed_at = loop {
            let Some(&byte) = input.get(i) else {
                break None;
            };
            if is_line_end(byte) {
                break None;
            }
            match self.state {
                State::Str => {
                    // The hot loop: plain string bytes.
                    let start = i;
                    i = plain_string_end(input, i);
                    if self.in_key && !self.key_too_long {
                        for &b in &input[start..i] {
                            self.key_byte(b, longest);
                            if self.key_too_long {
                                // It can no longer match: stop reading it.
                                break;
                            }
                        }
                    }
                    match input.get(i) {
                        None => {}
                        Some(b'"') => {
                            i += 1;
                            if self.in_key {
                                self.in_key = false;
                                self.key_is_secret =
                                    !self.key_too_long && names.contains_normalised(&self.key);
                                self.state = State::Colon;
                            } else if self.value_done() {
                                emit_from = i;
                            }
                        }
                        Some(b'\\') => {
                            i += 1;
                            self.state = State::Escape;
                        }
                        // A raw control byte: invalid, unless it is a line
                        // end, which the top of the loop handles.
                        Some(&b) if is_line_end(b) => {}
                        Some(_) => break Some(i),
                    }
                }
                State::Start | State::Value | State::ArrayFirst => {
                    if is_whitespace(byte) {
                        i += 1;
                        continue;
                    }
                    if byte == b']' && self.state == State::ArrayFirst {
                        self.stack.pop();
                        i += 1;
                        if self.value_done() {
                            emit_from = i;
                        }
                        continue;
                    }
                    if self.secret_next {
                        self.secret_next = false;
                        if !self.skipping {
                            out.extend_from_slice(&input[emit_from..i]);
                            out.extend_from_slice(REDACTED_JSON);
                            self.skipping = true;
                            self.skip_base = self.stack.len();
                        }
                    }
                    self.state = match byte {
                        b'{' | b'[' => {
                            if self.stack.len() >= max_depth {
                                break Some(i);
                            }
                            self.stack.push(byte == b'{');
                            if byte == b'{' {
                                State::ObjectFirst
                            } else {
                                State::ArrayFirst
                            }
                        }
                        b'"' => State::Str,
                        b'-' | b'0'..=b'9' => State::Number,
                        b't' => State::Literal(b"rue"),
                        b'f' => State::Literal(b"alse"),
                        b'n' => State::Literal(b"ull"),
                        _ => break Some(i),
                    };
                    i += 1;
                }
                State::ObjectFirst | State::Key => {
                    if is_whitespace(byte) {
                        i += 1;
                    } else if byte == b'"' {
                        self.in_key = true;
                        self.key.clear();
                        self.key_too_long = false;
                        self.state = State::Str;
                        i += 1;
                    } else if byte == b'}' && self.state == State::ObjectFirst {
                        self.stack.pop();
                        i += 1;
                        if self.value_done() {
                            emit_from = i;
                        }
                    } else {
                        break Some(i);
                    }
                }
                State::Colon => {
                    if is_whitespace(byte) {
                        i += 1;
                    } else if byte == b':' {
                        self.secret_next = !self.skipping && self.key_is_secret;
                        self.key_is_secret = false;
                        self.state = State::Value;
                        i += 1;
                    } else {
                        break Some(i);
                    }
                }
                State::AfterValue => {
                    let in_object = self.stack.last().copied().unwrap_or(false);
                    match byte {
                        b' ' | b'\t' | b'\n' | b'\r' => {}
                        b',' => {
                            self.state = if in_object { State::Key } else { State::Value };
                        }
                        b'}' | b']' if (byte == b'}') == in_object => {
                            self.stack.pop();
                            if self.value_done() {
                                emit_from = i + 1;
                            }
                        }
                        _ => break Some(i),
                    }
                    i += 1;
                }
                State::Escape => {
                    let decoded = match byte {
                        b'"' | b'\\' | b'/' => byte,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            self.unicode = 0;
                            self.unicode_digits = 0;
                            self.state = State::Unicode;
                            i += 1;
                            continue;
                        }
                        _ => break Some(i),
                    };
                    if self.in_key {
                        self.key_byte(decoded, longest);
                    }
                    self.state = State::Str;
                    i += 1;
                }
                State::Unicode => {
                    let Some(digit) = (byte as char).to_digit(16) else {
                        break Some(i);
                    };
                    self.unicode = (self.unicode << 4) | digit as u16;
                    self.unicode_digits += 1;
                    if self.unicode_digits == 4 {
                        if self.in_key {
                            // Beyond ASCII, no secret name can match: 0xFF
                            // stands for the character.
                            let unit = u8::try_from(self.unicode)
                                .ok()
                                .filter(u8::is_ascii)
                                .unwrap_or(0xFF);
                            self.key_byte(unit, longest);
                        }
                        self.state = State::Str;
                    }
                    i += 1;
                }
                State::Number => {
                    if is_number_byte(byte) {
                        i += 1;
                        while input.get(i).is_some_and(|&b| is_number_byte(b)) {
                            i += 1;
                        }
                    } else if self.value_done() {
                        // The terminator is read by the next state.
                        emit_from = i;
                    }
                }
                State::Literal(rest) => match rest.split_first() {
                    Some((&expected, rest)) if expected == byte => {
                        i += 1;
                        if rest.is_empty() {
                            if self.value_done() {
                                emit_from = i;
                            }
                        } else {
                            self.state = State::Literal(rest);
                        }
                    }
                    _ => break Some(i),
                },
                State::Done => {
                    if is_whitespace(byte) {
                        i += 1;
                    } else {
                        break Some(i);
                    }
                }
                State::Failed => break Some(i),
            }
        };
        let stop = failed_at.unwrap_or(i);
        if !self.skipping {
            out.extend_from_slice(&input[emit_from..stop]);
        }
        match failed_at {
            None => i,
            Some(at) => {
                self.state = State::Failed;
                skip_to_line_end(at)
            }
        }
    }
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Flags (high bit) the bytes of `word` that are `"`, `\` or below 0x20.
/// A flag can be wrong only in a byte after a right one, so the lowest
/// flagged byte (little-endian) is exact.
#[inline]
fn special_bytes(word: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

/// The index of the first byte at or after `from` that ends a run of plain
/// string bytes (`"`, `\`, a control byte), or the input's length. Reads
/// eight bytes at a time: most of a JSON body is string content.
#[inline]
fn plain_string_end(input: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(word) = input.get(i..i + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let flags = special_bytes(u64::from_le_bytes(bytes));
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = input.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[inline]
fn is_number_byte(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
}

#[inline]
fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_string_end_agrees_with_a_byte_loop() {
        let slow = |input: &[u8], from: usize| {
            input[from..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map_or(input.len(), |at| from + at)
        };
        let mut input: Vec<u8> = (0..=255u8).collect();
        input.extend((0..=255u8).rev());
        input.extend(b"plain ascii text, then a quote\" and more \xc3\xa9 \x7f\x80\xff");
        for from in 0..input.len() {
            assert_eq!(
                plain_string_end(&input, from),
                slow(&input, from),
                "from {from}"
            );
        }
        for byte in 0..=255u8 {
            for at in 0..20 {
                let mut bytes = vec![b'a'; 20];
                bytes[at] = byte;
                assert_eq!(
                    plain_string_end(&bytes, 0),
                    slow(&bytes, 0),
                    "{byte} at {at}"
                );
            }
        }
    }
}
