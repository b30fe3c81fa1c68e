//! body-logger's redaction (`body_logger::redact::Redactor`, default configuration), the code
//! every captured body, `:path` and logged header value goes through. The first byte picks the
//! mode; the rest is the input.
//!
//! Even first byte — a *planted secret* (`body_logger::corpus::property`): the bytes drive a
//! generator that puts a random secret under a sensitive name (a listed part in random case
//! and decoration, or a default exact name) in one of 18 shapes (JSON key, JSON in JSON
//! strings, form field with `%XX` in the name, text pair, XML element/attribute/escaped text,
//! multipart part, URL query and fragment in a body, `;` path and query parameters, a URL in a
//! header value, percent-encoded JSON in a form, URL user-info, an HTML input, JSON in text),
//! in random readable noise, whole and cut by the capture limit after the secret. Property:
//! the secret never appears in the output, and the redaction is counted.
//!
//! Odd first byte — *any bytes*, read as a JSON, form, XML, multipart, text body (cut or not),
//! a `:path` or a header value. Properties:
//! - nothing panics (a panic traps the VM);
//! - nothing counted, nothing changed: with 0 redactions the output is the input (invalid
//!   UTF-8 written `\xNN`), so the count in the log line is true;
//! - the output stays within a constant factor of the input (nested layers add to the growth,
//!   never multiply it; the same bound as `nested_layers_never_multiply_the_output`);
//! - a JSON body stays JSON: an input that parses as JSON, read as a JSON body, parses once
//!   redacted. It found a card as a bare number (`a_card_as_a_bare_json_number_stays_json`), a
//!   quoted name judged by its tail (`a_quoted_name_is_judged_whole_by_the_text_pass`), and the
//!   text pass crossing JSON string bounds (`{"m":"csc:","n":"x"}`,
//!   `json_strings_bound_the_text_pass`).
#![no_main]

use body_logger::config::{BodyKind, DEFAULT_REPLACEMENT};
use body_logger::redact::{escape_invalid_utf8, Redactor};
use std::sync::OnceLock;

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| body_logger::corpus::default_redactor().expect("the default configuration compiles"))
}

const KINDS: [BodyKind; 5] = [BodyKind::Json, BodyKind::Form, BodyKind::Xml, BodyKind::Multipart, BodyKind::Text];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, input @ ..] = data else { return };
    let red = redactor();
    if mode % 2 == 0 {
        // `body_logger::corpus::property` with the redactor compiled once (compiling its
        // regexes on every input took most of each run).
        let case = body_logger::corpus::generate(input);
        let cut = input.last().map(|b| usize::from(*b) % 16);
        for cut in [None, cut] {
            if let Err(e) = body_logger::corpus::check_generated(red, &case, cut) {
                panic!("{e}");
            }
        }
        return;
    }
    let truncated = mode & 0x80 != 0;
    let pick = usize::from(mode >> 1 & 0x3f) % (KINDS.len() + 2);
    let (out, count) = match KINDS.get(pick) {
        Some(kind) => red.redact_body(input, *kind, (*kind == BodyKind::Multipart).then_some(b"bNd"), truncated),
        None if pick == KINDS.len() => red.redact_path(input),
        None => red.redact_value(input),
    };
    if KINDS.get(pick) == Some(&BodyKind::Json) && serde_json::from_slice::<serde_json::Value>(input).is_ok() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "a JSON body is no longer JSON once redacted (mode {mode}): {out}"
        );
    }
    if count == 0 {
        assert_eq!(out, escape_invalid_utf8(input), "nothing was counted, yet the output changed (mode {mode})");
    }
    let bound = 8 * input.len() + count as usize * (DEFAULT_REPLACEMENT.len() + 2) * 4 + 64;
    assert!(out.len() <= bound, "{} bytes in, {} out, {count} redactions (mode {mode})", input.len(), out.len());
});
