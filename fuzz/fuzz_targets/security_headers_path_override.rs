//! security-headers' `path_overrides`: which policy a request path gets
//! (`security_headers::config::Compiled::policy_for`, what `on_request_headers` picks), against
//! the rule the README states ("Path matching"), written out independently here:
//! - the subject is `:path` cut at the first `?` or `#`;
//! - `prefix`: the subject starts with it; `path`: the subject is it; `safe_regex`: the whole
//!   subject matches (checked with the regex of an escaped literal, which must then behave as
//!   `path`: the anchoring is the implementation's, the literal is the model's);
//! - case-sensitive, no decoding, no normalisation (that is the HCM's);
//! - overrides are tried in order, the first match wins, else the top-level policy;
//! - a `prefix`/`path` is accepted iff it starts with `/` and has no `?`, `#`, space, control
//!   character or DEL.
//!
//! Input: parts separated by NUL; the first is the path, each other (up to 4) an override whose
//! first byte picks the matcher kind and whose rest is the literal.
#![no_main]

use security_headers::config::{Config, Policy};
use shared::matching::RouteName;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Prefix,
    Exact,
    EscapedRegex,
}

fn literal_is_accepted(kind: Kind, lit: &str) -> bool {
    match kind {
        Kind::EscapedRegex => true,
        Kind::Prefix | Kind::Exact => {
            lit.starts_with('/') && !lit.contains(['?', '#']) && !lit.bytes().any(|b| b <= b' ' || b == 0x7f)
        }
    }
}

fn model_matches(kind: Kind, lit: &str, path: &str) -> bool {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let subject = &path[..end];
    match kind {
        Kind::Prefix => subject.starts_with(lit),
        Kind::Exact | Kind::EscapedRegex => subject == lit,
    }
}

/// Which override (by the marker header each one sets) a policy is; `None`: the top level.
fn marker(policy: &Policy) -> Option<String> {
    policy.set.iter().find(|o| o.name == "x-override").map(|o| o.value.clone())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\0');
    let path = parts.next().unwrap_or_default();
    let overrides: Vec<(Kind, String)> = parts
        .take(4)
        .filter_map(|p| {
            let mut chars = p.chars();
            let kind = match chars.next()? as u32 % 3 {
                0 => Kind::Prefix,
                1 => Kind::Exact,
                _ => Kind::EscapedRegex,
            };
            Some((kind, chars.as_str().to_string()))
        })
        .collect();

    let entries: Vec<serde_json::Value> = overrides
        .iter()
        .enumerate()
        .map(|(i, (kind, lit))| {
            let matcher = match kind {
                Kind::Prefix => serde_json::json!({ "prefix": lit }),
                Kind::Exact => serde_json::json!({ "path": lit }),
                Kind::EscapedRegex => serde_json::json!({ "safe_regex": { "regex": regex_lite::escape(lit) } }),
            };
            serde_json::json!({ "match": matcher, "headers": { "x-override": i.to_string() } })
        })
        .collect();
    let json = serde_json::json!({ "path_overrides": entries }).to_string();
    let compiled = shared::config::load(Some(json.as_bytes()), Config::compile);

    // An escaped literal longer than the regex limit is refused too (README: 4096 characters).
    let accepted = overrides.iter().all(|(kind, lit)| {
        literal_is_accepted(*kind, lit)
            && !(matches!(kind, Kind::EscapedRegex) && regex_lite::escape(lit).len() > 4096)
    });
    let compiled = match compiled {
        Ok(c) => {
            assert!(accepted, "accepted a literal the rule refuses: {overrides:?}");
            c
        }
        Err(e) => {
            assert!(!accepted, "refused literals the rule accepts: {overrides:?}: {e}");
            assert!(e.field.starts_with("path_overrides["), "the refusal names {:?}", e.field);
            return;
        }
    };

    let expected = overrides.iter().position(|(kind, lit)| model_matches(*kind, lit, path)).map(|i| i.to_string());
    assert_eq!(marker(compiled.policy_for(Some(path), &RouteName::known(None))), expected, "path {path:?}, overrides {overrides:?}");
    // No path (`:path` absent or not UTF-8): the top level.
    assert_eq!(marker(compiled.policy_for(None, &RouteName::known(None))), None);
});
