//! The log line and its JSON, written directly: the same bytes `serde_json::to_string` gives
//! for these structs (a test checks it on every shape of line), without serde's per-field
//! and per-byte machinery, which was most of this filter's own instructions per request.

use crate::grpc::Summary;
use std::collections::BTreeMap;

/// The log line. Fields in alphabetical order: the order the line has always had (it was
/// built as a `serde_json::Map`, which sorts its keys), so consumers see the same bytes.
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct Line {
    pub duration_ms: f64,
    pub method: String,
    pub path: String,
    pub redactions: u32,
    pub request: DirectionLine,
    /// Only with `log_headers`; `null` when dropped for the budget.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub request_headers: Option<Option<BTreeMap<String, String>>>,
    pub request_id: Option<String>,
    pub response: DirectionLine,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub response_headers: Option<Option<BTreeMap<String, String>>>,
    pub status: Option<u64>,
}

/// One direction of the line (alphabetical, as [`Line`]).
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct DirectionLine {
    pub body: Option<String>,
    pub bytes: u64,
    pub captured_bytes: usize,
    pub complete: bool,
    pub content_type: Option<String>,
    /// gRPC: the framing summary (the body is never logged).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub grpc: Option<Summary>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub skipped: Option<&'static str>,
    pub truncated: bool,
}

impl Line {
    /// The line as compact JSON.
    pub fn to_json(&self) -> String {
        let strings = self.method.len()
            + self.path.len()
            + self.request.strings_len()
            + self.response.strings_len()
            + self.request_id.as_ref().map_or(0, String::len);
        let mut out = String::with_capacity(strings.saturating_add(400));
        out.push_str("{\"duration_ms\":");
        push_f64(&mut out, self.duration_ms);
        out.push_str(",\"method\":");
        push_str(&mut out, &self.method);
        out.push_str(",\"path\":");
        push_str(&mut out, &self.path);
        out.push_str(",\"redactions\":");
        push_u64(&mut out, u64::from(self.redactions));
        out.push_str(",\"request\":");
        self.request.write(&mut out);
        if let Some(headers) = &self.request_headers {
            out.push_str(",\"request_headers\":");
            push_headers(&mut out, headers.as_ref());
        }
        out.push_str(",\"request_id\":");
        push_opt_str(&mut out, self.request_id.as_deref());
        out.push_str(",\"response\":");
        self.response.write(&mut out);
        if let Some(headers) = &self.response_headers {
            out.push_str(",\"response_headers\":");
            push_headers(&mut out, headers.as_ref());
        }
        out.push_str(",\"status\":");
        match self.status {
            Some(s) => push_u64(&mut out, s),
            None => out.push_str("null"),
        }
        out.push('}');
        out
    }
}

impl DirectionLine {
    fn strings_len(&self) -> usize {
        self.body.as_ref().map_or(0, String::len) + self.content_type.as_ref().map_or(0, String::len)
    }

    fn write(&self, out: &mut String) {
        out.push_str("{\"body\":");
        push_opt_str(out, self.body.as_deref());
        out.push_str(",\"bytes\":");
        push_u64(out, self.bytes);
        out.push_str(",\"captured_bytes\":");
        push_u64(out, self.captured_bytes as u64);
        out.push_str(",\"complete\":");
        push_bool(out, self.complete);
        out.push_str(",\"content_type\":");
        push_opt_str(out, self.content_type.as_deref());
        if let Some(g) = &self.grpc {
            // Summary's fields in declaration order (what its derived Serialize writes).
            out.push_str(",\"grpc\":{\"messages\":");
            push_u64(out, g.messages);
            out.push_str(",\"message_bytes\":");
            push_u64(out, g.message_bytes);
            out.push_str(",\"compressed\":");
            push_u64(out, g.compressed);
            out.push_str(",\"max_message_bytes\":");
            push_u64(out, u64::from(g.max_message_bytes));
            out.push_str(",\"partial\":");
            push_bool(out, g.partial);
            out.push_str(",\"invalid\":");
            push_bool(out, g.invalid);
            out.push('}');
        }
        if let Some(skipped) = self.skipped {
            out.push_str(",\"skipped\":");
            push_str(out, skipped);
        }
        out.push_str(",\"truncated\":");
        push_bool(out, self.truncated);
        out.push('}');
    }
}

fn push_headers(out: &mut String, headers: Option<&BTreeMap<String, String>>) {
    let Some(map) = headers else {
        out.push_str("null");
        return;
    };
    out.push('{');
    for (i, (name, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, name);
        out.push(':');
        push_str(out, value);
    }
    out.push('}');
}

fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

fn push_u64(out: &mut String, n: u64) {
    shared::headers::push_decimal(out, n);
}

/// serde_json's float: the shortest form that reads back the same (ryu), `null` when not
/// finite. Rare enough (one per line) to go through serde_json itself.
fn push_f64(out: &mut String, x: f64) {
    match serde_json::to_string(&x) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str("null"),
    }
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

/// A JSON string as serde_json escapes it: `"` and `\`, the C0 controls (`\b \t \n \f \r`
/// by name, the others `\u00xx`); everything else as is. Runs without an escape are copied
/// whole.
fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len().saturating_add(2));
    out.push('"');
    // Most strings need no escape: one scan, one copy.
    let Some(first) = s.bytes().position(|b| b < 0x20 || b == b'"' || b == b'\\') else {
        out.push_str(s);
        out.push('"');
        return;
    };
    out.push_str(s.get(..first).unwrap_or_default());
    let mut run = first;
    for (i, b) in s.bytes().enumerate().skip(first) {
        let named = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte: a char boundary.
        out.push_str(s.get(run..i).unwrap_or_default());
        run = i + 1;
        if named.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(named);
        }
    }
    out.push_str(s.get(run..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn direction(body: Option<&str>, grpc: Option<Summary>, skipped: Option<&'static str>) -> DirectionLine {
        DirectionLine {
            body: body.map(String::from),
            bytes: u64::MAX,
            captured_bytes: 17,
            complete: true,
            content_type: Some("application/json; charset=\"utf-8\"".into()),
            grpc,
            skipped,
            truncated: false,
        }
    }

    /// Every string a line can hold goes through the escaper: each byte 0..=0x7f, quotes,
    /// backslashes, multi-byte UTF-8 next to escapes.
    const AWKWARD: &[&str] =
        &["", "plain", "a\"b\\c", "\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}", "é\n€\"𝄞", "\\u0000"];

    fn all_bytes() -> String {
        (0u8..0x80).map(char::from).collect()
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let summary = Summary {
            messages: 3,
            message_bytes: 1 << 40,
            compressed: 1,
            max_message_bytes: u32::MAX,
            partial: true,
            invalid: false,
        };
        let mut strings: Vec<String> = AWKWARD.iter().map(|s| s.to_string()).collect();
        strings.push(all_bytes());
        let mut headers = BTreeMap::new();
        for (i, s) in strings.iter().enumerate() {
            headers.insert(format!("{s}{i}"), s.clone());
        }
        let mut lines = Vec::new();
        for (i, s) in strings.iter().enumerate() {
            for (duration_ms, status) in [(0.0, None), (1.5, Some(200)), (1234.567, Some(u64::MAX)), (1e-3, Some(0))] {
                lines.push(Line {
                    duration_ms,
                    method: s.clone(),
                    path: format!("/{s}"),
                    redactions: u32::MAX - i as u32,
                    request: direction(Some(s), None, None),
                    request_headers: match i % 3 {
                        0 => None,
                        1 => Some(None),
                        _ => Some(Some(headers.clone())),
                    },
                    request_id: (i % 2 == 0).then(|| s.clone()),
                    response: direction(None, Some(summary), Some("grpc")),
                    response_headers: Some(Some(BTreeMap::new())),
                    status,
                });
            }
        }
        lines.push(Line {
            duration_ms: f64::NAN,
            method: String::new(),
            path: String::new(),
            redactions: 0,
            request: direction(None, None, Some("budget")),
            request_headers: None,
            request_id: None,
            response: direction(None, None, None),
            response_headers: None,
            status: None,
        });
        for line in &lines {
            assert_eq!(line.to_json(), serde_json::to_string(line).unwrap());
        }
    }
}
