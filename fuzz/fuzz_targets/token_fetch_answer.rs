//! token-fetch's token-endpoint answer (`token_fetch::filter::token_from_answer`), for each
//! way a token is found: OAuth2 JSON with a `Bearer ` prefix and with none, a JSON field, a
//! header. Input: the mode (1st byte), then the body (or the header value). Properties:
//! - an accepted token is sent as `prefix + token`, the token non-empty, at most
//!   `MAX_TOKEN_BYTES`, every byte visible ASCII, space or tab (no CR, LF, NUL, other control
//!   or non-ASCII byte), no leading or trailing whitespace: it can neither split nor end the
//!   header it is injected into;
//! - every worker accepts it back from shared data (`Compiled::is_injectable`): a token the
//!   fetch accepts but the readers refuse would be fetched again and again, never used;
//! - its lifetime is positive and at most 366 days; for OAuth2 it is, by the README's rule,
//!   300 s without `expires_in`, else `expires_in` (a JSON integer or a string of digits)
//!   cut to 366 days;
//! - only a `200` is ever accepted;
//! - a refusal's text never quotes the token the JSON offered (it goes to the log).
#![no_main]

use shared::fetch::FetchResult;
use std::sync::OnceLock;
use std::time::Duration;
use token_fetch::config::{Compiled, Config, Extract, MAX_TOKEN_BYTES};
use token_fetch::filter::token_from_answer;

const OAUTH: &str = r#"{"oauth2":{"token_endpoint":{"cluster":"auth","uri":"http://auth/token"},
  "client_credentials":{"client_id":"id","client_secret":"secret"}}}"#;
const OAUTH_NO_PREFIX: &str = r#"{"oauth2":{"token_endpoint":{"cluster":"auth","uri":"http://auth/token"},
  "client_credentials":{"client_id":"id","client_secret":"secret"}},"header_name":"x-token","header_prefix":""}"#;
const JSON_FIELD: &str = r#"{"http_get":{"token_endpoint":{"cluster":"m","uri":"http://m/t"},"token_json_field":"tok","token_lifetime":"60s"}}"#;
const HEADER: &str = r#"{"http_get":{"token_endpoint":{"cluster":"m","uri":"http://m/t"},"token_header":"x-tok","token_lifetime":"60s"}}"#;

fn configs() -> &'static Vec<Compiled> {
    static C: OnceLock<Vec<Compiled>> = OnceLock::new();
    C.get_or_init(|| {
        [OAUTH, OAUTH_NO_PREFIX, JSON_FIELD, HEADER]
            .iter()
            .filter_map(|j| shared::config::load(Some(j.as_bytes()), Config::compile).ok())
            .collect()
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let configs = configs();
    assert_eq!(configs.len(), 4, "a target configuration no longer compiles");
    let c = &configs[usize::from(*mode % 4)];
    let status = if mode & 0x80 == 0 { "200" } else { "201" };
    let result = token_from_answer(c, Some(status), |_| Some(rest.to_vec()), || rest.to_vec());
    match result {
        FetchResult::Fetched { value, lifetime } => {
            assert_eq!(status, "200", "accepted a non-200 answer");
            let token = value.strip_prefix(c.header_prefix.as_bytes()).expect("value starts with the prefix");
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES, "token of {} bytes", token.len());
            assert!(value.iter().all(|b| (b' '..=b'~').contains(b) || *b == b'\t'), "bad byte in {value:?}");
            assert!(!value.starts_with(b" ") && !value.starts_with(b"\t"), "leading whitespace");
            assert!(!value.ends_with(b" ") && !value.ends_with(b"\t"), "trailing whitespace");
            assert!(lifetime > Duration::ZERO && lifetime <= Duration::from_secs(366 * 86_400), "{lifetime:?}");
            assert!(c.is_injectable(&value), "fetched but refused back from shared data: {value:?}");
            if matches!(c.extract, Extract::OAuth2) {
                if let Some(secs) = oauth2_lifetime_model(rest) {
                    assert_eq!(lifetime, Duration::from_secs(secs.min(366 * 86_400)), "expires_in of {rest:?}");
                }
            }
        }
        FetchResult::Failed(message) => {
            // A leak is a message that changes with the token: rerun with the candidate's
            // letters and digits rotated (same length, same JSON shape) and compare; a fixed
            // text that happens to contain the candidate does not change.
            let Some(token) = candidate(rest).filter(|t| t.len() >= 16 && message.contains(t.as_str())) else { return };
            let rotated: Vec<u8> = token.bytes().map(rotate).collect();
            let other = replace(rest, token.as_bytes(), &rotated);
            if let FetchResult::Failed(again) =
                token_from_answer(c, Some(status), |_| Some(other.clone()), || other.clone())
            {
                assert_eq!(message, again, "the refusal quotes the token: {message}");
            }
        }
    }
});

/// The lifetime in seconds the README's rule gives an accepted OAuth2 body, where it is plain:
/// absent or null is 300, a JSON integer or a string of digits (spaces around allowed) is
/// itself; `None` for the spellings the rule leaves to protobuf's mapping (floats).
fn oauth2_lifetime_model(body: &[u8]) -> Option<u64> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    match v.get("expires_in") {
        None | Some(serde_json::Value::Null) => Some(300),
        Some(serde_json::Value::String(s)) => {
            let digits = s.trim_matches(|c: char| c.is_ascii_whitespace());
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().unwrap_or(u64::MAX))
        }
        Some(n) => n.as_u64(),
    }
}

/// The token a JSON body offers, when it stands in the body as it is (no escapes).
fn candidate(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let t = ["access_token", "tok"].iter().find_map(|k| v.get(k).and_then(|t| t.as_str()))?;
    // (An empty token has no window to look for: found by the fuzzer, a harness bug.)
    let literal = !t.is_empty() && !t.contains(['\\', '"']) && body.windows(t.len()).any(|w| w == t.as_bytes());
    literal.then(|| t.to_string())
}

fn rotate(b: u8) -> u8 {
    match b {
        b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => b + 1,
        b'z' => b'a',
        b'Z' => b'A',
        b'9' => b'0',
        b => b,
    }
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}
