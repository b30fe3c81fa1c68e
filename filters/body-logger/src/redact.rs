//! Redaction, before anything is logged. Every scanner here is tolerant: it works on bytes that
//! may be cut anywhere by `max_bytes`, may be invalid JSON, XML or multipart, and may not be
//! UTF-8. Nothing here parses with serde_json (which refuses truncated input) — it only says
//! whether a layer is whole, valid JSON (`is_valid_json`); nothing panics on any input;
//! nothing here recurses.
//!
//! A body is read in *layers*. The first layer is the body's layout (JSON, form, XML/HTML,
//! multipart, a URL, or text). A layer's scanner replaces the values of sensitive names
//! ([`crate::names`]) and marks the pieces that are themselves encoded text — a JSON string
//! holding escaped JSON, an XML text with entities, a percent-encoded value, a multipart part —
//! as *children*: decoded, read as their own layer, and, if anything in them was redacted,
//! encoded back in place. Then the layer's text pass (`name: value`, `name=value`, URL
//! user-info, percent-encoded runs) runs over the result. Layers are kept on an explicit stack,
//! at most [`MAX_NESTING`] deep; a child below that depth is replaced whole (fail closed).
//!
//! After the layers, for the whole body: card numbers (Luhn), invalid UTF-8 made `\xNN`, then
//! the regex patterns (bearer/basic credentials, JWTs, the configured ones). A value cut by the
//! end of the capture is redacted to the end.

use crate::config::{body_kind, media_essence, media_param, BodyKind};
use crate::names::{Encoding, NameRule};

mod find;

const MAX_REGEX_LEN: usize = 4096;
const MAX_REGEX_SIZE: usize = 1 << 20;

/// How many encodings deep a secret is looked for (a JSON string in a JSON string is 1; an
/// SQS message holding an SNS envelope holding a JSON document is 2). Below it, fail closed.
pub const MAX_NESTING: usize = 8;

/// A regex redaction. If the regex has a capture group named `value`, only that group is
/// replaced (e.g. keep `Bearer `, hide the token); otherwise the whole match.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub name: String,
    regex: regex_lite::Regex,
    group: Option<usize>,
    /// A cheap prefilter: the regex runs only on text holding one of these (ASCII,
    /// case-insensitive). regex-lite has no literal optimisations of its own, and running it
    /// over every captured byte cost ~100 µs per KiB in Envoy (measured with `make bench`).
    needles: Vec<&'static [u8]>,
}

impl Pattern {
    pub fn compile(name: &str, source: &str) -> Result<Pattern, String> {
        if source.is_empty() || source.len() > MAX_REGEX_LEN {
            return Err(format!("want 1 to {MAX_REGEX_LEN} characters"));
        }
        let regex = regex_lite::RegexBuilder::new(source)
            .size_limit(MAX_REGEX_SIZE)
            .build()
            .map_err(|e| format!("invalid regex: {e}"))?;
        if regex.is_match("") {
            return Err("the regex matches the empty string: it would redact everywhere".into());
        }
        let group = regex.capture_names().position(|n| n == Some("value"));
        Ok(Pattern { name: name.to_string(), regex, group, needles: Vec::new() })
    }

    fn with_needles(mut self, needles: &[&'static [u8]]) -> Pattern {
        self.needles = needles.to_vec();
        self
    }

    fn apply(&self, text: &str, replacement: &str, count: &mut u32) -> Option<String> {
        if !self.needles.is_empty() && !contains_any_ignore_ascii_case(text.as_bytes(), &self.needles) {
            return None;
        }
        if !self.regex.is_match(text) {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in self.regex.captures_iter(text) {
            let m = match self.group.and_then(|g| caps.get(g)) {
                Some(m) => m,
                None => match caps.get(0) {
                    Some(m) => m,
                    None => continue,
                },
            };
            if m.start() < last || m.start() == m.end() {
                continue;
            }
            out.push_str(text.get(last..m.start()).unwrap_or_default());
            out.push_str(replacement);
            last = m.end();
            *count += 1;
        }
        out.push_str(text.get(last..).unwrap_or_default());
        Some(out)
    }
}

#[derive(Clone, Debug)]
pub struct Redactor {
    /// JSON keys, form fields, text names, parameters, XML names, part names.
    fields: NameRule,
    /// Header names: the same rule, the header list added to the exact names.
    headers: NameRule,
    card_numbers: bool,
    patterns: Vec<Pattern>,
    replacement: String,
}

pub const BEARER_REGEX: &str = r"(?i)\b(?:bearer|basic)\s+(?P<value>[A-Za-z0-9\-._~+/]+=*)";
pub const JWT_REGEX: &str = r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?";

/// How a piece of text is read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    Json,
    /// `a=1&b=2` from the start.
    Form,
    /// A path, a URL or a header value: the query and fragment after the first `?` or `#` as
    /// a form.
    Url,
    /// XML or HTML.
    Xml,
    /// With the boundary of its content-type, if any.
    Multipart(Option<Vec<u8>>),
    /// The text pass only.
    Text,
}

/// How a child sits in its parent, to decode it and encode it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    Raw,
    Json,
    Xml,
    Percent,
}

struct Child {
    /// The child's bytes in the parent's `out`, as they were (encoded).
    start: usize,
    end: usize,
    /// Decoded; taken when the child's layer starts.
    text: Vec<u8>,
    layout: Layout,
    escape: Escape,
}

/// One layer being read: its output so far, its children and what became of them.
struct Frame {
    depth: usize,
    /// A JSON layer: its text pass keeps to the bounds of JSON strings.
    json: bool,
    /// The text pass has run (the second phase of a layer, or a text-only layer).
    text_pass_done: bool,
    out: Vec<u8>,
    children: Vec<Child>,
    /// Per child, in order: its redacted and re-encoded bytes, or `None` (left as it was).
    results: Vec<Option<Vec<u8>>>,
    count: u32,
}

impl Frame {
    fn new(depth: usize, capacity: usize) -> Frame {
        Frame {
            depth,
            json: false,
            text_pass_done: false,
            out: Vec::with_capacity(capacity),
            children: Vec::new(),
            results: Vec::new(),
            count: 0,
        }
    }

    /// Copy `raw` to the output and remember it as a child decoded to `text`.
    fn child(&mut self, raw: &[u8], text: Vec<u8>, layout: Layout, escape: Escape) {
        let start = self.out.len();
        self.out.extend_from_slice(raw);
        self.children.push(Child { start, end: self.out.len(), text, layout, escape });
    }

    fn replace(&mut self, replacement: &str) {
        self.out.extend_from_slice(replacement.as_bytes());
        self.count += 1;
    }

    /// The output with every redacted child put in place; the redactions made.
    fn splice(self) -> (Vec<u8>, u32) {
        if self.results.iter().all(Option::is_none) {
            return (self.out, self.count);
        }
        let mut out = Vec::with_capacity(self.out.len());
        let mut last = 0;
        for (child, result) in self.children.iter().zip(&self.results) {
            if let Some(bytes) = result {
                out.extend_from_slice(self.out.get(last..child.start).unwrap_or_default());
                out.extend_from_slice(bytes);
                last = child.end;
            }
        }
        out.extend_from_slice(self.out.get(last..).unwrap_or_default());
        (out, self.count)
    }
}

impl Redactor {
    pub fn new(
        fields: NameRule,
        headers: NameRule,
        bearer_tokens: bool,
        jwts: bool,
        card_numbers: bool,
        custom: Vec<Pattern>,
        replacement: String,
    ) -> Result<Redactor, String> {
        let mut patterns = Vec::new();
        if bearer_tokens {
            patterns.push(Pattern::compile("bearer_tokens", BEARER_REGEX)?.with_needles(&[b"bearer", b"basic"]));
        }
        if jwts {
            patterns.push(Pattern::compile("jwts", JWT_REGEX)?.with_needles(&[b"eyj"]));
        }
        patterns.extend(custom);
        Ok(Redactor { fields, headers, card_numbers, patterns, replacement })
    }

    pub fn replacement(&self) -> &str {
        &self.replacement
    }

    pub fn is_sensitive_field(&self, name: &str) -> bool {
        self.fields.is_sensitive(name.as_bytes(), Encoding::Plain)
    }

    pub fn is_sensitive_header(&self, name: &str) -> bool {
        self.headers.is_sensitive(name.as_bytes(), Encoding::Plain)
    }

    /// A captured body → a log-safe string and the number of redactions made. `boundary` is
    /// the multipart boundary of the content-type, if any.
    pub fn redact_body(&self, bytes: &[u8], kind: BodyKind, boundary: Option<&[u8]>, truncated: bool) -> (String, u32) {
        let layout = match kind {
            BodyKind::Json => Layout::Json,
            BodyKind::Form => Layout::Form,
            BodyKind::Xml => Layout::Xml,
            BodyKind::Multipart => Layout::Multipart(boundary.map(<[u8]>::to_vec)),
            BodyKind::Text => infer(bytes),
        };
        let json = layout == Layout::Json;
        let (structural, mut count) = self.redact_layers(bytes, layout);
        let carded =
            if self.card_numbers { self.redact_cards(&structural, truncated, json, &mut count) } else { structural };
        let text = escape_invalid_utf8(&carded);
        let text = self.apply_patterns(text, &mut count);
        (text, count)
    }

    /// A header value: read as a URL (a `Location`, a `Referer`), then cards and patterns.
    pub fn redact_value(&self, bytes: &[u8]) -> (String, u32) {
        let (out, mut count) = self.redact_layers(bytes, Layout::Url);
        let carded = if self.card_numbers { self.redact_cards(&out, false, false, &mut count) } else { out };
        let text = self.apply_patterns(escape_invalid_utf8(&carded), &mut count);
        (text, count)
    }

    /// `:path`: query parameters, `;` path parameters, then the patterns.
    pub fn redact_path(&self, path: &[u8]) -> (String, u32) {
        let (out, mut count) = self.redact_layers(path, Layout::Url);
        let text = self.apply_patterns(escape_invalid_utf8(&out), &mut count);
        (text, count)
    }

    fn apply_patterns(&self, mut text: String, count: &mut u32) -> String {
        for p in &self.patterns {
            if let Some(replaced) = p.apply(&text, &self.replacement, count) {
                text = replaced;
            }
        }
        text
    }

    // ---- layers: an explicit stack, never recursion ----

    fn redact_layers(&self, input: &[u8], layout: Layout) -> (Vec<u8>, u32) {
        let mut stack: Vec<Frame> = vec![self.scan(input, &layout, 0)];
        loop {
            let Some(top) = stack.last_mut() else { return (Vec::new(), 0) };
            let next = top.results.len();
            if let Some(child) = top.children.get_mut(next) {
                let depth = top.depth + 1;
                if depth > MAX_NESTING {
                    let r = encode(child.escape, self.replacement.as_bytes());
                    top.results.push(Some(r));
                    top.count += 1;
                } else {
                    let text = std::mem::take(&mut child.text);
                    let layout = child.layout.clone();
                    let frame = self.scan(&text, &layout, depth);
                    stack.push(frame);
                }
                continue;
            }
            let Some(done) = stack.pop() else { return (Vec::new(), 0) };
            let (depth, text_pass_done, json) = (done.depth, done.text_pass_done, done.json);
            let (bytes, count) = done.splice();
            if !text_pass_done {
                let mut f = Frame::new(depth, bytes.len());
                f.count = count;
                // String by string only where the strings' bounds are certain: on text that
                // looks like JSON but is not (`{"password"="x"}`, a `"` in a single-quoted
                // value, JSON after a log prefix), the bounds it guesses are wrong and a
                // secret between them is missed; the whole-text pass finds it.
                if json && is_valid_json(&bytes) {
                    self.text_pass_json(&bytes, &mut f);
                } else {
                    self.text_pass(&bytes, true, &mut f);
                }
                f.text_pass_done = true;
                stack.push(f);
                continue;
            }
            let Some(parent) = stack.last_mut() else { return (bytes, count) };
            // A child layer: the patterns too, while it is decoded (`Bearer%20x` is not a
            // pattern match once encoded).
            let (bytes, count) = match std::str::from_utf8(&bytes) {
                Ok(text) if !self.patterns.is_empty() => {
                    let mut n = count;
                    let text = self.apply_patterns(text.to_string(), &mut n);
                    (text.into_bytes(), n)
                }
                _ => (bytes, count),
            };
            let escape = parent.children.get(parent.results.len()).map_or(Escape::Raw, |c| c.escape);
            if count > 0 {
                parent.results.push(Some(encode(escape, &bytes)));
                parent.count += count;
            } else {
                parent.results.push(None);
            }
        }
    }

    /// The first phase of a layer (a text layer goes straight to its text pass).
    fn scan(&self, input: &[u8], layout: &Layout, depth: usize) -> Frame {
        let mut f = Frame::new(depth, input.len());
        match layout {
            Layout::Text => {
                self.text_pass(input, true, &mut f);
                f.text_pass_done = true;
            }
            Layout::Json => {
                f.json = true;
                self.scan_json(input, &mut f);
            }
            Layout::Form => self.scan_pairs(input, 0, &mut f),
            Layout::Url => {
                let q = input.iter().position(|c| *c == b'?' || *c == b'#').unwrap_or(input.len());
                self.scan_path_params(&input[..q], &mut f);
                f.out.extend_from_slice(input.get(q..q + 1).unwrap_or_default());
                self.scan_pairs(input, q + 1, &mut f);
            }
            Layout::Xml => self.scan_xml(input, &mut f),
            Layout::Multipart(boundary) => self.scan_multipart(input, boundary.as_deref(), &mut f),
        }
        f
    }

    /// Whether a value already is the replacement (a second pass must not count it again).
    fn is_replacement(&self, value: &[u8]) -> bool {
        value == self.replacement.as_bytes()
    }

    // ---- JSON: keys at any depth, string values that hold encoded text are children ----

    fn scan_json(&self, b: &[u8], f: &mut Frame) {
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'"' {
                // Copy up to the next string in one go.
                let next = find::byte(b, i, b'"');
                f.out.extend_from_slice(&b[i..next]);
                i = next;
                continue;
            }
            let start = i;
            let (end, closed) = string_end(b, start);
            // A key is a string followed by ':'.
            let mut j = end;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if closed && j < b.len() && b[j] == b':' {
                f.out.extend_from_slice(&b[start..end]);
                i = end;
                let raw = b.get(start + 1..end - 1).unwrap_or_default();
                let sensitive = if raw.contains(&b'\\') {
                    self.fields.is_sensitive(&unescape_json(raw), Encoding::Plain)
                } else {
                    self.fields.is_sensitive(raw, Encoding::Plain)
                };
                if !sensitive {
                    continue;
                }
                // Copy `  :  `, then replace the value.
                j += 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                f.out.extend_from_slice(&b[i..j]);
                i = j;
                if i >= b.len() {
                    break;
                }
                let value_end = json_value_end(b, i);
                let value = &b[i..value_end];
                if value.len() >= 2 && self.is_replacement(&value[1..value.len() - 1]) && value[0] == b'"' {
                    f.out.extend_from_slice(value);
                } else {
                    f.out.push(b'"');
                    f.replace(&self.replacement);
                    f.out.push(b'"');
                }
                i = value_end;
                continue;
            }
            // A value (or a string cut by the capture).
            let inner = b.get(start + 1..if closed { end - 1 } else { end }).unwrap_or_default();
            f.out.push(b'"');
            if inner.contains(&b'\\') || infer(inner) != Layout::Text {
                let text = unescape_json(inner);
                let layout = infer(&text);
                f.child(inner, text, layout, Escape::Json);
            } else {
                f.out.extend_from_slice(inner);
            }
            if closed {
                f.out.push(b'"');
            }
            i = end;
        }
    }

    // ---- forms, queries, fragments: `a=1&b=2;c=3#d=4`, names percent-decoded ----

    fn scan_pairs(&self, b: &[u8], start: usize, f: &mut Frame) {
        let len = b.len();
        let mut i = start.min(len);
        while i < len {
            let name_end = (i..len).find(|k| matches!(b[*k], b'=' | b'&' | b';' | b'#')).unwrap_or(len);
            if name_end >= len || b[name_end] != b'=' {
                let stop = (name_end + 1).min(len);
                f.out.extend_from_slice(&b[i..stop]);
                i = stop;
                continue;
            }
            f.out.extend_from_slice(&b[i..=name_end]);
            let v = name_end + 1;
            if self.fields.is_sensitive(&b[i..name_end], Encoding::Percent) {
                // A secret's value runs to `&` or `#`: a `;` in it does not end it.
                let value_end = (v..len).find(|k| matches!(b[*k], b'&' | b'#')).unwrap_or(len);
                let value = &b[v..value_end];
                if value.is_empty() || self.is_replacement(value) {
                    f.out.extend_from_slice(value);
                } else {
                    f.replace(&self.replacement);
                }
                i = value_end;
            } else {
                let value_end = (v..len).find(|k| matches!(b[*k], b'&' | b';' | b'#')).unwrap_or(len);
                let value = &b[v..value_end];
                if has_structural_percent(value) {
                    let text = percent_decode(value);
                    let layout = infer(&text);
                    f.child(value, text, layout, Escape::Percent);
                } else {
                    f.out.extend_from_slice(value);
                }
                i = value_end;
            }
        }
    }

    /// `;name=value` parameters of path segments (`/cart;jsessionid=…/items`): a value ends
    /// at `;`, `/` or the end.
    fn scan_path_params(&self, b: &[u8], f: &mut Frame) {
        let len = b.len();
        let mut i = 0;
        while i < len {
            let Some(semi) = b[i..].iter().position(|c| *c == b';').map(|p| i + p) else {
                f.out.extend_from_slice(&b[i..]);
                return;
            };
            f.out.extend_from_slice(&b[i..=semi]);
            let ps = semi + 1;
            let pe = (ps..len).find(|k| matches!(b[*k], b';' | b'/')).unwrap_or(len);
            let param = &b[ps..pe];
            match param.iter().position(|c| *c == b'=') {
                Some(eq)
                    if eq + 1 < param.len()
                        && !param[eq + 1..].starts_with(self.replacement.as_bytes())
                        && self.fields.is_sensitive(&param[..eq], Encoding::Percent) =>
                {
                    f.out.extend_from_slice(&param[..=eq]);
                    f.replace(&self.replacement);
                }
                _ => f.out.extend_from_slice(param),
            }
            i = pe;
        }
    }

    // ---- text: `name: value`, `name=value`, quoted values, URL user-info ----

    /// The text pass of a JSON layer that is valid JSON: on each string's contents (still
    /// escaped) and on each stretch between strings, each on its own, so that a value it
    /// replaces never crosses a string's bounds and the replacement lands inside the string it
    /// was found in (the pass over the whole text read a string's closing quote as a value's
    /// opening one: `{"m":"csc:","n":"x"}` lost its structure). The replacement holds no `"`,
    /// `\` or control character (checked in the configuration), so the line stays JSON. A
    /// string followed by `:` or `=` whose contents are a sensitive name (as the whole-text pass
    /// judges it, percent-decoded: `"pass%77ord"`) is a name: the value that follows, a string
    /// or a bare scalar, is replaced (a scalar by a quoted replacement, so JSON stays JSON).
    fn text_pass_json(&self, b: &[u8], f: &mut Frame) {
        let mut i = 0;
        let mut awaiting = false;
        let mut after_name = false;
        while i < b.len() {
            if b[i] != b'"' {
                let next = find::byte(b, i, b'"');
                let mut from = i;
                if std::mem::take(&mut after_name) {
                    match self.json_value_after_name(b, i, next, f) {
                        Some(rest) => from = rest,
                        None => {
                            awaiting = true;
                            i = next;
                            continue;
                        }
                    }
                }
                awaiting = self.text_pass(&b[from..next], next == b.len(), f);
                i = next;
                continue;
            }
            let (end, closed) = string_end(b, i);
            let inner = b.get(i + 1..if closed { end - 1 } else { end }).unwrap_or_default();
            f.out.push(b'"');
            if awaiting && !inner.is_empty() && !self.is_replacement(inner) {
                f.replace(&self.replacement);
            } else {
                self.text_pass(inner, !closed, f);
            }
            awaiting = false;
            if closed {
                f.out.push(b'"');
                let mut j = end;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                // The JSON layer judged this key already, decoded but not percent-decoded: only
                // a key with `%` or `+` can be judged otherwise here.
                if j < b.len() && (b[j] == b':' || b[j] == b'=') && inner.iter().any(|c| *c == b'%' || *c == b'+') {
                    after_name = if inner.contains(&b'\\') {
                        self.fields.is_sensitive(&unescape_json(inner), Encoding::Percent)
                    } else {
                        self.fields.is_sensitive(inner, Encoding::Percent)
                    };
                }
            }
            i = end;
        }
    }

    /// In a JSON layer's text pass, the stretch `b[i..next]` after a sensitive name's string:
    /// spaces, `:` or `=`, spaces, then the value. A bare scalar there is replaced by a quoted
    /// replacement. Returns where the rest of the stretch starts, or `None` (all of it copied)
    /// when the value is the string at `next`.
    fn json_value_after_name(&self, b: &[u8], i: usize, next: usize, f: &mut Frame) -> Option<usize> {
        let mut j = i;
        while j < next && (b[j].is_ascii_whitespace() || b[j] == b':' || b[j] == b'=') {
            j += 1;
        }
        f.out.extend_from_slice(&b[i..j]);
        if j == next {
            return None;
        }
        if matches!(b[j], b'{' | b'[' | b',' | b'}' | b']') {
            return Some(j);
        }
        let value_end = (j..next).find(|k| matches!(b[*k], b',' | b'}' | b']') || b[*k].is_ascii_whitespace());
        f.out.push(b'"');
        f.replace(&self.replacement);
        f.out.push(b'"');
        Some(value_end.unwrap_or(next))
    }

    /// `name: value`, `name=value`, quoted values, URL user-info and percent-encoded runs in
    /// `b`. `open_end`: `b` ends where the capture ends (a value there may have been cut).
    /// Returns whether `b` ends with a sensitive name and its `:` or `=`, the value not yet
    /// seen.
    fn text_pass(&self, b: &[u8], open_end: bool, f: &mut Frame) -> bool {
        let len = b.len();
        // Every change this pass makes starts at a `:` or `=` (a pair, user-info) or a `%` (an
        // encoded run): without one, the text is copied as it is, at a fraction of the cost.
        if find::any3(b, 0, b':', b'=', b'%') == len {
            f.out.extend_from_slice(b);
            return false;
        }
        let mut awaiting = false;
        let mut i = 0;
        while i < len {
            let c = b[i];
            if !is_name_byte(c) {
                if c == b':' && b.get(i + 1..i + 3) == Some(b"//") {
                    if let Some(next) = self.url_userinfo(b, i, open_end, f) {
                        i = next;
                        continue;
                    }
                }
                let next = (i + 1..len).find(|k| is_name_byte(b[*k]) || b[*k] == b':').unwrap_or(len);
                f.out.extend_from_slice(&b[i..next]);
                i = next;
                continue;
            }
            let s = i;
            let e = (s..len).find(|k| !is_name_byte(b[*k])).unwrap_or(len);
            // `name` `"`? spaces `:` or `=`
            let mut j = e;
            if j < len && (b[j] == b'"' || b[j] == b'\'') {
                j += 1;
            } else if b.get(j..j + 2) == Some(b"\\\"") {
                j += 2;
            }
            while j < len && (b[j] == b' ' || b[j] == b'\t') {
                j += 1;
            }
            let pair = j < len && (b[j] == b':' || b[j] == b'=');
            if pair {
                if self.fields.is_sensitive(quoted_name(b, s, e), Encoding::Percent) {
                    if let Some(next) = self.text_value(b, s, j, f) {
                        i = next;
                        continue;
                    }
                    awaiting = b[j + 1..].iter().all(|c| *c == b' ' || *c == b'\t');
                }
            } else {
                // A percent-encoded run holding `=`, `:`, `{`…: decoded, it is a layer.
                // The run goes on past the name only over bytes that are not name bytes.
                let pe = if e < len && is_percent_run_byte(b[e]) {
                    (e..len).find(|k| !is_percent_run_byte(b[*k])).unwrap_or(len)
                } else {
                    e
                };
                let mut k = pe;
                while k < len && (b[k] == b' ' || b[k] == b'\t') {
                    k += 1;
                }
                let followed_by_pair = k < len && (b[k] == b':' || b[k] == b'=');
                if !followed_by_pair && has_structural_percent(&b[s..pe]) {
                    let text = percent_decode(&b[s..pe]);
                    let layout = infer(&text);
                    f.child(&b[s..pe], text, layout, Escape::Percent);
                    i = pe;
                    continue;
                }
            }
            f.out.extend_from_slice(&b[s..e]);
            i = e;
        }
        awaiting
    }

    /// The value of a sensitive `name` (at `s`) whose `:` or `=` is at `sep`: replaced, and the
    /// position after it returned; `None` if there is nothing to replace.
    fn text_value(&self, b: &[u8], s: usize, sep: usize, f: &mut Frame) -> Option<usize> {
        let len = b.len();
        // `name: value` (header or YAML style) runs to the end of the line, so
        // `Authorization: Bearer x` loses the whole credential; `name=value` (logfmt, query)
        // ends at whitespace.
        let to_line_end = b[sep] == b':';
        let mut j = sep + 1;
        while j < len && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j < len && (b[j] == b'"' || b[j] == b'\'') {
            let q = b[j];
            let mut k = j + 1;
            while k < len && b[k] != q {
                k += if b[k] == b'\\' { 2 } else { 1 };
            }
            let k = k.min(len);
            if b[j + 1..k].starts_with(self.replacement.as_bytes()) || k == j + 1 {
                return None;
            }
            // Keep the quotes: `"[REDACTED]"`.
            f.out.extend_from_slice(&b[s..=j]);
            f.replace(&self.replacement);
            if k < len {
                f.out.push(q);
                return Some(k + 1);
            }
            return Some(len);
        }
        if b.get(j..j + 2) == Some(b"\\\"") {
            // `\"name\": \"value\"`: JSON text inside a JSON string.
            let mut k = j + 2;
            while k < len && b.get(k..k + 2) != Some(b"\\\"") {
                k += if b[k] == b'\\' { 2 } else { 1 };
            }
            let k = k.min(len);
            if b[j + 2..k].starts_with(self.replacement.as_bytes()) || k == j + 2 {
                return None;
            }
            f.out.extend_from_slice(&b[s..j + 2]);
            f.replace(&self.replacement);
            return Some(k);
        }
        let mut k = j;
        while k < len
            && !matches!(b[k], b'\r' | b'\n' | b'&' | b',' | b';' | b'}' | b'"')
            && b.get(k..k + 2) != Some(b"\\\"")
            && (to_line_end || !matches!(b[k], b' ' | b'\t'))
        {
            k += 1;
        }
        // A value a layer already replaced (its own end may differ from this pass's).
        if k == j || b[j..k].starts_with(self.replacement.as_bytes()) {
            return None;
        }
        f.out.extend_from_slice(&b[s..j]);
        f.replace(&self.replacement);
        Some(k)
    }

    /// `scheme://user:password@host`: the password. `colon` is the `:` of `://`.
    fn url_userinfo(&self, b: &[u8], colon: usize, open_end: bool, f: &mut Frame) -> Option<usize> {
        let start = colon + 3;
        let end = (start..b.len())
            .find(|k| {
                matches!(b[*k], b'/' | b'?' | b'#' | b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'\'' | b'<' | b'>' | b'\\')
            })
            .unwrap_or(b.len());
        let at = match b[start..end].iter().rposition(|c| *c == b'@') {
            Some(p) => start + p,
            // Cut by the end of the capture before the `@`: `user:pass…` or `host:port`; not
            // a port (digits only) is taken for a password (fail closed).
            None if end == b.len() && open_end => {
                let pc = start + b[start..end].iter().position(|c| *c == b':')?;
                if b[pc + 1..end].iter().all(u8::is_ascii_digit) {
                    return None;
                }
                end
            }
            None => return None,
        };
        let pc = start + b[start..at].iter().position(|c| *c == b':')?;
        if pc + 1 == at || self.is_replacement(&b[pc + 1..at]) {
            return None;
        }
        f.out.extend_from_slice(&b[colon..=pc]);
        f.replace(&self.replacement);
        Some(at)
    }

    // ---- XML and HTML: elements, attributes, entities decoded (never expanded), CDATA ----

    fn scan_xml(&self, b: &[u8], f: &mut Frame) {
        let len = b.len();
        let mut i = 0;
        while i < len {
            let lt = b[i..].iter().position(|c| *c == b'<').map_or(len, |p| i + p);
            if lt > i {
                self.xml_text(&b[i..lt], f);
            }
            if lt >= len {
                break;
            }
            let rest = &b[lt..];
            if rest.starts_with(b"<!--") {
                let end = find(b, lt + 4, b"-->").map_or(len, |p| p + 3);
                f.out.extend_from_slice(&b[lt..end]);
                i = end;
                continue;
            }
            if rest.starts_with(b"<![CDATA[") {
                let cs = lt + 9;
                let (ce, end) = find(b, cs, b"]]>").map_or((len, len), |p| (p, p + 3));
                f.out.extend_from_slice(b"<![CDATA[");
                let content = &b[cs..ce];
                let layout = infer(content);
                if layout != Layout::Text {
                    f.child(content, content.to_vec(), layout, Escape::Raw);
                } else {
                    f.out.extend_from_slice(content);
                }
                f.out.extend_from_slice(&b[ce..end]);
                i = end;
                continue;
            }
            // Declarations (a DOCTYPE, never read: no DTD, no entity definitions), processing
            // instructions and end tags are copied; their text is still seen by the text pass.
            if rest.starts_with(b"<!") || rest.starts_with(b"<?") || rest.starts_with(b"</") {
                let end = b[lt + 1..].iter().position(|c| *c == b'>').map_or(len, |p| lt + 1 + p + 1);
                f.out.extend_from_slice(&b[lt..end]);
                i = end;
                continue;
            }
            if !b.get(lt + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_' || !c.is_ascii()) {
                f.out.push(b'<');
                i = lt + 1;
                continue;
            }
            i = self.xml_element(b, lt, f);
        }
    }

    /// A start tag at `lt`: its attributes, then, if the element is sensitive, its content.
    /// Returns where to go on.
    fn xml_element(&self, b: &[u8], lt: usize, f: &mut Frame) -> usize {
        let len = b.len();
        let name_end = (lt + 1..len).find(|k| !is_xml_name_byte(b[*k])).unwrap_or(len);
        let qname = &b[lt + 1..name_end];
        // (name start, name end, value start, value end)
        let mut attrs: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut j = name_end;
        let mut closed = false;
        let mut self_closing = false;
        loop {
            while j < len && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= len || b[j] == b'<' {
                break;
            }
            if b[j] == b'>' {
                j += 1;
                closed = true;
                break;
            }
            if b.get(j..j + 2) == Some(b"/>") {
                j += 2;
                closed = true;
                self_closing = true;
                break;
            }
            let an = j;
            while j < len && !b[j].is_ascii_whitespace() && !matches!(b[j], b'=' | b'>' | b'/' | b'<') {
                j += 1;
            }
            if j == an {
                j += 1; // a stray `/` or `=`
                continue;
            }
            let ae = j;
            while j < len && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j >= len || b[j] != b'=' {
                continue;
            }
            j += 1;
            while j < len && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < len && (b[j] == b'"' || b[j] == b'\'') {
                let q = b[j];
                let vs = j + 1;
                let ve = b[vs..].iter().position(|c| *c == q).map_or(len, |p| vs + p);
                attrs.push((an, ae, vs, ve));
                j = (ve + 1).min(len);
            } else {
                let vs = j;
                while j < len && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                    j += 1;
                }
                attrs.push((an, ae, vs, j));
            }
        }
        let tag_end = j;
        // `<input name="password" value="…">`, `<meta name="csrf-token" content="…">`,
        // `<input type="password" value="…">`: the value is the named thing's.
        let named_sensitive = attrs.iter().any(|&(an, ae, vs, ve)| {
            let (name, value) = (&b[an..ae], &b[vs..ve]);
            (name.eq_ignore_ascii_case(b"name") && self.fields.is_sensitive(value, Encoding::Plain))
                || (name.eq_ignore_ascii_case(b"type") && value.eq_ignore_ascii_case(b"password"))
        });
        let mut k = lt;
        for &(an, ae, vs, ve) in &attrs {
            f.out.extend_from_slice(&b[k..vs]);
            let (name, value) = (&b[an..ae], &b[vs..ve]);
            let sensitive = self.fields.is_sensitive(name, Encoding::Plain)
                || (named_sensitive && (name.eq_ignore_ascii_case(b"value") || name.eq_ignore_ascii_case(b"content")));
            if sensitive && !value.is_empty() && !self.is_replacement(value) {
                f.replace(&self.replacement);
            } else if value.contains(&b'&') {
                let text = xml_decode(value);
                let layout = infer(&text);
                f.child(value, text, layout, Escape::Xml);
            } else {
                f.out.extend_from_slice(value);
            }
            k = ve;
        }
        f.out.extend_from_slice(&b[k..tag_end]);
        if !closed || self_closing || !self.fields.is_sensitive(qname, Encoding::Plain) {
            return tag_end;
        }
        let content_end = xml_close(b, tag_end, qname).unwrap_or(len);
        let content = &b[tag_end..content_end];
        if content.iter().all(u8::is_ascii_whitespace) || self.is_replacement(content) {
            f.out.extend_from_slice(content);
        } else {
            f.replace(&self.replacement);
        }
        content_end
    }

    /// Text between tags: with entities, decoded and read as its own layer.
    fn xml_text(&self, text: &[u8], f: &mut Frame) {
        if text.contains(&b'&') {
            let decoded = xml_decode(text);
            if decoded != text {
                let layout = infer(&decoded);
                f.child(text, decoded, layout, Escape::Xml);
                return;
            }
        }
        f.out.extend_from_slice(text);
    }

    // ---- multipart: parts by name, each by its own content type ----

    fn scan_multipart(&self, b: &[u8], boundary: Option<&[u8]>, f: &mut Frame) {
        let len = b.len();
        let delimiter: Vec<u8> = match boundary {
            Some(bd) if !bd.is_empty() => [b"--", bd].concat(),
            // No boundary in the content-type: the body's first line, if it looks like one.
            _ if b.starts_with(b"--") => {
                let line = b.iter().position(|c| *c == b'\n').map_or(len, |p| p);
                b[..line].trim_ascii_end().to_vec()
            }
            _ => Vec::new(),
        };
        let Some(mut pos) = (if delimiter.len() > 2 { find_delimiter(b, 0, &delimiter) } else { None }) else {
            f.out.extend_from_slice(b);
            return;
        };
        f.out.extend_from_slice(&b[..pos]);
        loop {
            let after = pos + delimiter.len();
            if b.get(after..after + 2) == Some(b"--") {
                f.out.extend_from_slice(&b[pos..]);
                return;
            }
            let line_end = b[after..].iter().position(|c| *c == b'\n').map_or(len, |p| after + p + 1);
            f.out.extend_from_slice(&b[pos..line_end]);
            // The part's headers end at a blank line.
            let (headers_end, body_start) = if b[line_end..].starts_with(b"\r\n") {
                (line_end, line_end + 2)
            } else if b[line_end..].starts_with(b"\n") {
                (line_end, line_end + 1)
            } else {
                match (find(b, line_end, b"\r\n\r\n"), find(b, line_end, b"\n\n")) {
                    (Some(c), Some(n)) if n < c => (n + 1, n + 2),
                    (Some(c), _) => (c + 2, c + 4),
                    (None, Some(n)) => (n + 1, n + 2),
                    (None, None) => {
                        f.out.extend_from_slice(&b[line_end..]);
                        return;
                    }
                }
            };
            let (name, content_type) = part_headers(&b[line_end..headers_end]);
            f.out.extend_from_slice(&b[line_end..body_start]);
            let next = find_delimiter(b, body_start, &delimiter);
            let body_end = match next {
                Some(p) if p >= body_start + 2 && &b[p - 2..p] == b"\r\n" => p - 2,
                Some(p) if p > body_start && b[p - 1] == b'\n' => p - 1,
                Some(p) => p,
                None => len,
            };
            let body = &b[body_start..body_end];
            if name.as_deref().is_some_and(|n| self.fields.is_sensitive(n, Encoding::Percent)) {
                if body.is_empty() || self.is_replacement(body) {
                    f.out.extend_from_slice(body);
                } else {
                    f.replace(&self.replacement);
                }
            } else {
                let layout = match content_type.as_deref().map(|ct| body_kind(&media_essence(ct))) {
                    Some(BodyKind::Json) => Layout::Json,
                    Some(BodyKind::Form) => Layout::Form,
                    Some(BodyKind::Xml) => Layout::Xml,
                    Some(BodyKind::Multipart) => {
                        Layout::Multipart(content_type.as_deref().and_then(|ct| media_param(ct, "boundary")))
                    }
                    Some(BodyKind::Text) | None => infer(body),
                };
                if layout != Layout::Text {
                    f.child(body, body.to_vec(), layout, Escape::Raw);
                } else {
                    f.out.extend_from_slice(body);
                }
            }
            let Some(p) = next else { return };
            f.out.extend_from_slice(&b[body_end..p]);
            pos = p;
        }
    }

    // ---- card numbers: 13–19 digits, single spaces, dashes, `+` or `%20` between, Luhn ----

    /// In a JSON body (`json`), a card outside a string is a bare number: it is replaced by the
    /// replacement in quotes, so the line stays JSON (`{"n":4111111111111111}` →
    /// `{"n":"[REDACTED]"}`, not `{"n":[REDACTED]}`).
    fn redact_cards(&self, b: &[u8], truncated: bool, json: bool, count: &mut u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        let mut strings = JsonStrings::default();
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                // Copy up to the next digit in one go.
                let next = find::digit(b, i);
                if json {
                    strings.feed(&b[i..next]);
                }
                out.extend_from_slice(&b[i..next]);
                i = next;
                continue;
            }
            // A digit ends a pending `\` (invalid JSON); separators are never quotes.
            strings.escaped = false;
            let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
            if !boundary {
                out.push(b[i]);
                i += 1;
                continue;
            }
            // The run: digits with single separators, ending on a digit.
            let mut digits = Vec::new();
            let mut j = i;
            let mut end = i;
            while j < b.len() {
                if b[j].is_ascii_digit() {
                    digits.push(b[j] - b'0');
                    j += 1;
                    end = j;
                } else {
                    let sep = card_separator(b, j);
                    if sep > 0 && b.get(j + sep).is_some_and(u8::is_ascii_digit) {
                        j += sep;
                    } else {
                        break;
                    }
                }
                if digits.len() > 19 {
                    break;
                }
            }
            let at_capture_end = end == b.len() || (j == b.len());
            let after_ok = end == b.len() || !b[end].is_ascii_alphanumeric();
            let n = digits.len();
            let card = after_ok && (13..=19).contains(&n) && luhn(&digits);
            // Cut by max_bytes: a long digit run at the end may be a card we cannot check.
            let cut = truncated && at_capture_end && (8..=19).contains(&n);
            if card || cut {
                let bare = json && !strings.inside;
                if bare {
                    // A bare number goes whole, sign, integer part, fraction and exponent:
                    // `-4111…1.5` left `-"[REDACTED]".5` and `1.4111…1` `1."[REDACTED]"`, not
                    // JSON (found by the fuzz target). What precedes it in the number was
                    // copied as it is: taken back.
                    let mut k = i;
                    while k > 0 && matches!(b[k - 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                        k -= 1;
                    }
                    if (b[k].is_ascii_digit() || b[k] == b'-') && (k == 0 || !b[k - 1].is_ascii_alphanumeric()) {
                        out.truncate(out.len().saturating_sub(i - k));
                    }
                    while end < b.len() && matches!(b[end], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                        end += 1;
                    }
                    out.push(b'"');
                }
                out.extend_from_slice(self.replacement.as_bytes());
                if bare {
                    out.push(b'"');
                }
                *count += 1;
            } else {
                out.extend_from_slice(&b[i..end]);
            }
            i = end;
        }
        out
    }
}

/// Whether a point in JSON text is inside a string: fed the bytes in order.
#[derive(Default)]
struct JsonStrings {
    inside: bool,
    escaped: bool,
}

impl JsonStrings {
    fn feed(&mut self, bytes: &[u8]) {
        for &c in bytes {
            if self.escaped {
                self.escaped = false;
            } else if self.inside && c == b'\\' {
                self.escaped = true;
            } else if c == b'"' {
                self.inside = !self.inside;
            }
        }
    }
}

/// Bytes a separator between card digits takes at `j`: a space, a dash, a `+` (a space in a
/// form), or `%20`.
fn card_separator(b: &[u8], j: usize) -> usize {
    match b.get(j) {
        Some(b' ' | b'-' | b'+') => 1,
        Some(b'%') if b.get(j + 1..j + 3) == Some(b"20") => 3,
        _ => 0,
    }
}

/// How decoded text is read: by its first byte (JSON, markup), else a URL when a `?` or `#`
/// is followed by a `=`, else text.
fn infer(text: &[u8]) -> Layout {
    let t = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
    match t.iter().find(|c| !c.is_ascii_whitespace()) {
        Some(b'{' | b'[') => Layout::Json,
        Some(b'<') => Layout::Xml,
        _ => match find::either(t, 0, b'?', b'#') {
            q if q < t.len() && t[q..].contains(&b'=') => Layout::Url,
            _ => Layout::Text,
        },
    }
}

/// How far back the opening quote of a quoted name is looked for.
const MAX_QUOTED_NAME: usize = 256;

/// The name the text pass judges for the name bytes `s..e`. When they end a quoted string
/// (`"…name":`, `'…name'=`, `\"…name\":`), the whole quoted text, as the JSON layer judges a
/// key: `"total tokens": 30` names the harmless `total_tokens`, not `tokens`. The tail alone
/// redacted a value the JSON layer had kept, bare, and the line was no longer JSON (found by
/// the fuzz target). Otherwise the name bytes themselves.
fn quoted_name(b: &[u8], s: usize, e: usize) -> &[u8] {
    let q = match (b.get(e), b.get(e + 1)) {
        (Some(b'\\'), Some(b'"')) => b'"',
        (Some(&q @ (b'"' | b'\'')), _) => q,
        _ => return &b[s..e],
    };
    let from = s.saturating_sub(MAX_QUOTED_NAME);
    match b[from..s].iter().rposition(|c| *c == q || *c == b'\n') {
        Some(p) if b[from + p] == q => &b[from + p + 1..e],
        _ => &b[s..e],
    }
}

/// Bytes of a name in text: letters, digits, `_-.[]%` and non-ASCII.
fn is_name_byte(c: u8) -> bool {
    NAME_BYTES[usize::from(c)]
}

/// [`is_name_byte`] as a table: it runs on every byte of text with pairs in it.
const NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']' | b'%') || !b.is_ascii();
        c += 1;
    }
    t
};

/// Bytes of a percent-encoded run (a name byte, or a URL byte that is never a separator).
fn is_percent_run_byte(c: u8) -> bool {
    is_name_byte(c) || matches!(c, b'+' | b'~' | b'!' | b'*' | b'(' | b')' | b'$')
}

fn is_xml_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':') || !c.is_ascii()
}

/// `%XX` encodings of bytes that give text a structure (`= : & ? # ; " ' { < %`): such a run,
/// decoded, may hold pairs.
fn has_structural_percent(b: &[u8]) -> bool {
    let mut k = 0;
    loop {
        let at = find::byte(b, k, b'%');
        if at >= b.len() {
            return false;
        }
        if let (Some(h), Some(l)) = (b.get(at + 1).and_then(|c| hex(*c)), b.get(at + 2).and_then(|c| hex(*c))) {
            if matches!(h << 4 | l, b'=' | b':' | b'&' | b'?' | b'#' | b';' | b'"' | b'\'' | b'{' | b'<' | b'%') {
                return true;
            }
        }
        k = at + 1;
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        match b[k] {
            b'+' => out.push(b' '),
            b'%' => match (b.get(k + 1).and_then(|c| hex(*c)), b.get(k + 2).and_then(|c| hex(*c))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    k += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        k += 1;
    }
    out
}

/// A child's redacted bytes, encoded back as its parent holds them. Encoding back can grow
/// what the input held raw (`'` → `&apos;`, a control byte → `\u0001`, `/` → `%2F`), but no
/// encoder escapes what the others emit but `\`, `&` and `;` (percent-encoded once, then left
/// alone): nested layers add to the growth, never multiply it (`nested_layers_never_multiply_the_output`).
fn encode(escape: Escape, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + 16);
    match escape {
        Escape::Raw => out.extend_from_slice(b),
        Escape::Json => {
            for &c in b {
                match c {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    c if c < 0x20 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
                    c => out.push(c),
                }
            }
        }
        Escape::Xml => {
            for &c in b {
                match c {
                    b'&' => out.extend_from_slice(b"&amp;"),
                    b'<' => out.extend_from_slice(b"&lt;"),
                    b'>' => out.extend_from_slice(b"&gt;"),
                    b'"' => out.extend_from_slice(b"&quot;"),
                    b'\'' => out.extend_from_slice(b"&apos;"),
                    c => out.push(c),
                }
            }
        }
        Escape::Percent => {
            for &c in b {
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'[' | b']' | b'*') {
                    out.push(c);
                } else {
                    out.extend_from_slice(format!("%{c:02X}").as_bytes());
                }
            }
        }
    }
    out
}

/// The five predefined entities and character references; any other `&name;` is left as it
/// is (never expanded: there is no DTD).
fn xml_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if b[k] != b'&' {
            out.push(b[k]);
            k += 1;
            continue;
        }
        let semi = b[k..].iter().take(12).position(|c| *c == b';').map(|p| k + p);
        let decoded = semi.and_then(|s| {
            let name = &b[k + 1..s];
            let c: u32 = match name {
                b"lt" => '<' as u32,
                b"gt" => '>' as u32,
                b"amp" => '&' as u32,
                b"quot" => '"' as u32,
                b"apos" => '\'' as u32,
                _ => {
                    let num = name.strip_prefix(b"#")?;
                    let text = std::str::from_utf8(num).ok()?;
                    match text.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok()?,
                        None => text.parse().ok()?,
                    }
                }
            };
            Some((char::from_u32(c)?, s))
        });
        match decoded {
            Some((c, s)) => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                k = s + 1;
            }
            None => {
                out.push(b'&');
                k += 1;
            }
        }
    }
    out
}

/// Start of the end tag that closes the element `qname` whose content starts at `from`
/// (same-name elements inside counted); `None` if the capture ends first.
fn xml_close(b: &[u8], from: usize, qname: &[u8]) -> Option<usize> {
    let ends_name = |at: usize| b.get(at).is_none_or(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'));
    let mut depth = 1usize;
    let mut k = from;
    while let Some(p) = b.get(k..).and_then(|r| r.iter().position(|c| *c == b'<')) {
        let lt = k + p;
        if b.get(lt + 1) == Some(&b'/') {
            let n = lt + 2;
            if b.get(n..n + qname.len()).is_some_and(|x| x.eq_ignore_ascii_case(qname)) && ends_name(n + qname.len()) {
                depth -= 1;
                if depth == 0 {
                    return Some(lt);
                }
            }
        } else if b.get(lt + 1..lt + 1 + qname.len()).is_some_and(|x| x.eq_ignore_ascii_case(qname))
            && ends_name(lt + 1 + qname.len())
        {
            depth += 1;
        }
        k = lt + 1;
    }
    None
}

/// A multipart delimiter at the start of a line, from `from`.
fn find_delimiter(b: &[u8], from: usize, delimiter: &[u8]) -> Option<usize> {
    let mut k = from;
    loop {
        let p = find(b, k, delimiter)?;
        if p == 0 || b[p - 1] == b'\n' {
            return Some(p);
        }
        k = p + 1;
    }
}

/// A part's `name` (from `content-disposition`) and `content-type`.
fn part_headers(headers: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut name = None;
    let mut content_type = None;
    for line in headers.split(|c| *c == b'\n') {
        let Some(colon) = line.iter().position(|c| *c == b':') else { continue };
        let (h, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if h.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(value.to_vec());
        } else if h.eq_ignore_ascii_case(b"content-disposition") {
            for param in value.split(|c| *c == b';').skip(1) {
                let Some(eq) = param.iter().position(|c| *c == b'=') else { continue };
                let key = param[..eq].trim_ascii();
                if key.eq_ignore_ascii_case(b"name") || key.eq_ignore_ascii_case(b"name*") {
                    let v = param[eq + 1..].trim_ascii();
                    let v = v.strip_prefix(b"\"").map_or(v, |v| v.strip_suffix(b"\"").unwrap_or(v));
                    // RFC 5987 `name*=UTF-8''pass%77ord`.
                    let v = v
                        .iter()
                        .position(|c| *c == b'\'')
                        .map_or(v, |p| v[p + 1..].iter().position(|c| *c == b'\'').map_or(v, |q| &v[p + 1 + q + 1..]));
                    name = Some(v.to_vec());
                }
            }
        }
    }
    (name, content_type)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let p = i + hay.get(i..)?.iter().position(|c| *c == first)?;
        if hay.get(p..p + needle.len())? == needle {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// Whether `b` is one whole, valid JSON document. serde_json's own check: it recurses, but
/// only to its nesting limit (128), past which the answer is no; nothing is kept.
fn is_valid_json(b: &[u8]) -> bool {
    // A body cut by the capture mostly ends inside a string or a number's run of name bytes:
    // refused at its last byte, not after a parse of all of it.
    let last = b.iter().rposition(|c| !c.is_ascii_whitespace()).map(|p| b[p]);
    matches!(last, Some(b'}' | b']' | b'"' | b'0'..=b'9' | b'e' | b'l'))
        && serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
}

/// End (exclusive) of the JSON string starting at `b[start] == '"'`, and whether it closed.
fn string_end(b: &[u8], start: usize) -> (usize, bool) {
    let mut k = start + 1;
    loop {
        k = find::either(b, k, b'"', b'\\');
        match b.get(k) {
            Some(b'\\') => k += 2,
            Some(_) => return (k + 1, true),
            None => return (b.len(), false),
        }
    }
}

/// End (exclusive) of the JSON value at `b[i]`; the end of the capture if it is cut.
fn json_value_end(b: &[u8], i: usize) -> usize {
    match b[i] {
        b'"' => string_end(b, i).0,
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut k = i;
            while k < b.len() {
                match b[k] {
                    b'"' => {
                        k = string_end(b, k).0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return k + 1;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            b.len()
        }
        _ => {
            let mut k = i;
            while k < b.len() && !matches!(b[k], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                k += 1;
            }
            k.max(i + 1).min(b.len())
        }
    }
}

/// The contents of a JSON string literal (no quotes), escapes decoded (surrogate pairs
/// joined; a bad escape kept as it is).
fn unescape_json(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len());
    let mut k = 0;
    let hex4 = |at: usize| -> Option<u32> {
        let h = inner.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    while k < inner.len() {
        if inner[k] != b'\\' || k + 1 >= inner.len() {
            out.push(inner[k]);
            k += 1;
            continue;
        }
        let e = inner[k + 1];
        k += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'u' => {
                let Some(u) = hex4(k) else {
                    out.extend_from_slice(b"\\u");
                    continue;
                };
                k += 4;
                let c = if (0xd800..0xdc00).contains(&u)
                    && inner.get(k..k + 2) == Some(b"\\u")
                    && hex4(k + 2).is_some_and(|l| (0xdc00..0xe000).contains(&l))
                {
                    let low = hex4(k + 2).unwrap_or(0xdc00);
                    k += 6;
                    char::from_u32(0x10000 + ((u - 0xd800) << 10) + (low - 0xdc00))
                } else {
                    char::from_u32(u)
                };
                let mut buf = [0; 4];
                out.extend_from_slice(c.unwrap_or('\u{fffd}').encode_utf8(&mut buf).as_bytes());
            }
            other => out.push(other),
        }
    }
    out
}

/// Whether `hay` holds any of `needles` (lowercase ASCII, non-empty), in any case: one pass per
/// distinct first letter, 8 bytes at a time between candidates.
fn contains_any_ignore_ascii_case(hay: &[u8], needles: &[&[u8]]) -> bool {
    let holds = |i: usize| needles.iter().any(|n| hay.get(i..i + n.len()).is_some_and(|w| w.eq_ignore_ascii_case(n)));
    let mut seen = [false; 256];
    for first in needles.iter().filter_map(|n| n.first().copied()) {
        if std::mem::replace(&mut seen[usize::from(first)], true) {
            continue;
        }
        if !first.is_ascii_lowercase() {
            // Not a letter: byte by byte (no built-in needle is such).
            if (0..hay.len()).any(|i| hay[i].eq_ignore_ascii_case(&first) && holds(i)) {
                return true;
            }
            continue;
        }
        let mut i = 0;
        loop {
            i = find::letter(hay, i, first);
            if i >= hay.len() {
                break;
            }
            if holds(i) {
                return true;
            }
            i += 1;
        }
    }
    false
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (n, d) in digits.iter().rev().enumerate() {
        let mut d = *d as u32;
        if n % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Valid UTF-8 as is; every byte of an invalid sequence as the four characters `\xNN`.
pub fn escape_invalid_utf8(mut b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    loop {
        match std::str::from_utf8(b) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (valid, rest) = b.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len()).max(1).min(rest.len());
                for byte in &rest[..bad] {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
                b = &rest[bad..];
                if b.is_empty() {
                    return out;
                }
            }
        }
    }
}

#[cfg(test)]
fn contains_ignore_ascii_case(hay: &[u8], needle: &'static [u8]) -> bool {
    contains_any_ignore_ascii_case(hay, &[needle])
}

#[cfg(test)]
mod tests;
