//! JSON as Envoy's jwt_authn reads a JWKS: its `Jwks::createFrom` hands the text to protobuf's
//! JSON parser (into a `google.protobuf.Struct`), which Envoy runs in protobuf's legacy mode.
//! That dialect is neither strict JSON (`serde_json` refuses part of it) nor JSON5 (which
//! accepts comments, hex, `Infinity`, … that protobuf refuses), and no crate implements it, so
//! it is written out here, from what Envoy 1.40 was seen to accept and refuse. Compared with
//! RFC 8259:
//!
//! - accepted: one trailing comma in an object or an array (`[1,]`, `{"a":1,}`, never `[,]`
//!   or `[1,,]`); strings in single quotes (`'a"b'`; `\'` is an escape in both kinds);
//!   object keys as bare words (`[A-Za-z0-9_]+`, not starting with a digit, not
//!   `true`/`false`/`null`); raw control characters inside strings; `\U` as `\u`;
//! - refused although RFC 8259 allows it: a repeated key in any object (a `Struct` is a map);
//!   more than 100 nested objects and arrays; a top level that is not an object;
//! - refused as in RFC 8259: comments, `NaN`/`Infinity`, leading zeros, `+1`, `.5`, `1.`,
//!   numbers beyond the double range (`1e999`), a byte-order mark, whitespace other than
//!   space, tab, CR and LF, anything after the document, unpaired surrogate escapes.
//!
//! Strings must be UTF-8 by protobuf's check (a lead byte and its continuation bytes); the
//! rare sequences that pass it but are not UTF-8 (overlong forms, encoded surrogates) become
//! U+FFFD here. Numbers are kept as doubles, as in a `Struct`.
//!
//! Depth is bounded (100), so the recursion here is bounded whatever the input.

use serde_json::{Map, Number, Value};
use std::fmt;

/// Nested objects and arrays allowed (protobuf's default `recursion_depth`).
pub const MAX_DEPTH: usize = 100;

/// Where and why a document was refused (for logs; jwt_authn's answer is only "invalid JSON").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub reason: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

/// Parse a document whose top level is an object.
pub fn parse_object(text: &[u8]) -> Result<Map<String, Value>, JsonError> {
    let mut p = Parser { s: text, i: 0, depth: 0 };
    p.ws();
    if p.peek() != Some(b'{') {
        return Err(p.err("expected an object"));
    }
    let object = p.object()?;
    p.ws();
    if p.i != text.len() {
        return Err(p.err("unexpected text after the document"));
    }
    Ok(object)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> JsonError {
        JsonError { offset: self.i, reason }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Result<u8, JsonError> {
        let c = self.peek().ok_or_else(|| self.err("unexpected end"))?;
        self.i += 1;
        Ok(c)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Skips whitespace, then consumes `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let found = self.peek() == Some(c);
        if found {
            self.i += 1;
        }
        found
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        if self.depth == MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.depth += 1;
        Ok(())
    }

    fn value(&mut self) -> Result<Value, JsonError> {
        self.ws();
        match self.peek() {
            Some(b'{') => Ok(Value::Object(self.object()?)),
            Some(b'[') => self.array(),
            Some(q @ (b'"' | b'\'')) => Ok(Value::String(self.string(q)?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            _ => Err(self.err("expected a value")),
        }
    }

    fn literal(&mut self, word: &'static str, v: Value) -> Result<Value, JsonError> {
        if !self.s[self.i..].starts_with(word.as_bytes()) {
            return Err(self.err("expected a value"));
        }
        self.i += word.len();
        Ok(v)
    }

    /// `{` … `}`; the caller has seen the `{`.
    fn object(&mut self) -> Result<Map<String, Value>, JsonError> {
        self.i += 1;
        self.enter()?;
        let mut map = Map::new();
        if !self.eat(b'}') {
            loop {
                self.ws();
                let key = match self.peek() {
                    Some(q @ (b'"' | b'\'')) => self.string(q)?,
                    _ => self.bare_word()?,
                };
                if !self.eat(b':') {
                    return Err(self.err("expected ':'"));
                }
                let at = self.i;
                let v = self.value()?;
                if map.insert(key, v).is_some() {
                    return Err(JsonError { offset: at, reason: "repeated key" });
                }
                let comma = self.eat(b',');
                if self.eat(b'}') {
                    break;
                }
                if !comma {
                    return Err(self.err("expected ',' or '}'"));
                }
            }
        }
        self.depth -= 1;
        Ok(map)
    }

    /// `[` … `]`; the caller has seen the `[`.
    fn array(&mut self) -> Result<Value, JsonError> {
        self.i += 1;
        self.enter()?;
        let mut list = Vec::new();
        if !self.eat(b']') {
            loop {
                list.push(self.value()?);
                let comma = self.eat(b',');
                if self.eat(b']') {
                    break;
                }
                if !comma {
                    return Err(self.err("expected ',' or ']'"));
                }
            }
        }
        self.depth -= 1;
        Ok(Value::Array(list))
    }

    fn bare_word(&mut self) -> Result<String, JsonError> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c == b'_' || c.is_ascii_alphanumeric()) {
            self.i += 1;
        }
        let word = &self.s[start..self.i];
        if word.is_empty() || word[0].is_ascii_digit() || matches!(word, b"true" | b"false" | b"null") {
            return Err(JsonError { offset: start, reason: "expected a key" });
        }
        Ok(word.iter().map(|&b| char::from(b)).collect())
    }

    /// A string in quotes `q` (`"` or `'`); the other quote is an ordinary character.
    fn string(&mut self, q: u8) -> Result<String, JsonError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = self.next()?;
            if c == q {
                break;
            }
            if c == b'\\' {
                let e = self.next()?;
                let simple = match e {
                    b'"' | b'\\' | b'/' | b'\'' => e,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' | b'U' => {
                        let ch = self.unicode_escape()?;
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        continue;
                    }
                    _ => return Err(self.err("invalid escape")),
                };
                out.push(simple);
                continue;
            }
            // protobuf's UTF-8 check: a lead byte, then as many continuation bytes as it says.
            let continuation = match c.leading_ones() {
                0 => 0,
                n @ 2..=4 => n - 1,
                _ => return Err(self.err("invalid UTF-8 in a string")),
            };
            out.push(c);
            for _ in 0..continuation {
                let b = self.next()?;
                if b >> 6 != 0b10 {
                    return Err(self.err("invalid UTF-8 in a string"));
                }
                out.push(b);
            }
        }
        Ok(String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = char::from(self.next()?).to_digit(16).ok_or_else(|| self.err("invalid \\u escape"))?;
            v = v << 4 | d;
        }
        Ok(v)
    }

    /// After `\u`: four hex digits, or a surrogate pair written `\uD8xx\uDCxx`.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let mut rune = self.hex4()?;
        if (0xd800..=0xdbff).contains(&rune) {
            // protobuf looks for the second `\u` as a token: whitespace before it is skipped.
            self.ws();
            if !self.s[self.i..].starts_with(b"\\u") {
                return Err(self.err("unpaired surrogate"));
            }
            self.i += 2;
            let low = self.hex4()?;
            if !(0xdc00..=0xdfff).contains(&low) {
                return Err(self.err("unpaired surrogate"));
            }
            rune = 0x10000 + ((rune & 0x3ff) << 10 | (low & 0x3ff));
        }
        char::from_u32(rune).ok_or_else(|| self.err("unpaired surrogate"))
    }

    /// protobuf's number scan (`-`, digits, one `.`, one exponent), then its checks.
    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.i;
        let (mut fraction, mut exponent, mut prev) = (false, false, 0u8);
        while let Some(c) = self.peek() {
            let after_digit = prev.is_ascii_digit();
            let take = c.is_ascii_digit()
                || (!fraction && !exponent && c == b'-' && !after_digit)
                || (!fraction && !exponent && after_digit && c == b'.' && {
                    fraction = true;
                    true
                })
                || (!exponent && after_digit && matches!(c, b'e' | b'E') && {
                    exponent = true;
                    true
                })
                || (matches!(prev, b'e' | b'E') && matches!(c, b'+' | b'-'));
            if !take {
                break;
            }
            prev = c;
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        let digits = text.strip_prefix('-').unwrap_or(text).as_bytes();
        if digits.len() > 1 && digits[0] == b'0' && digits[1].is_ascii_digit() {
            return Err(JsonError { offset: start, reason: "leading zero" });
        }
        if text.ends_with('.') {
            return Err(JsonError { offset: start, reason: "number ends with '.'" });
        }
        // serde_json reads what is left (standard JSON now) and refuses a value past the double
        // range as protobuf does; its number parser is in the module anyway (core's `f64`
        // parser would add ~20 KB).
        serde_json::from_str::<Number>(text)
            .map(Value::Number)
            .map_err(|_| JsonError { offset: start, reason: "invalid number" })
    }
}

#[cfg(test)]
mod tests;
