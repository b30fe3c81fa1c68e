//! Properties shared by the fuzz targets in `fuzz_targets/`. Each target is a few lines that
//! hand the input to one of these checks; a check panics (a libFuzzer finding) when a property
//! fails, with a message that says which.

use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::config::ConfigError;
use std::fmt::Debug;

/// A filter's configuration, JSON → serde (`deny_unknown_fields`) → `compile`, as `configure`
/// runs it. Properties:
/// - it never panics (for any bytes);
/// - an accepted configuration, re-serialised (parsed to a JSON value and written back, i.e.
///   other spacing, escapes and number spellings), is accepted again and compiles to the same
///   thing (`Debug` equal): acceptance depends on the document, not on its spelling, and
///   `compile` is deterministic;
/// - a refusal of a JSON document names a field path that exists in it — every step but the
///   last must exist, the last may be the missing field (`"missing field"`, a required
///   value) of an object that does — so the log line points at something the user wrote.
pub fn check_config<C, T, F>(data: &[u8], compile: F)
where
    C: DeserializeOwned,
    T: Debug,
    F: Fn(C) -> Result<T, ConfigError>,
{
    let first = shared::config::load(Some(data), &compile);
    let value: Option<Value> = serde_json::from_slice(data).ok();
    match (first, value) {
        (Ok(compiled), Some(value)) => {
            let again = serde_json::to_vec(&value).unwrap_or_default();
            match shared::config::load(Some(&again), &compile) {
                Ok(recompiled) => assert_eq!(
                    format!("{compiled:?}"),
                    format!("{recompiled:?}"),
                    "the re-serialised configuration compiles to something else"
                ),
                Err(e) => panic!("accepted, but refused once re-serialised: {e}"),
            }
        }
        (Ok(_), None) => {
            // Accepted but not a JSON value: only blank input (= `{}`) may be.
            assert!(data.iter().all(u8::is_ascii_whitespace), "accepted input that is not JSON");
        }
        (Err(e), Some(value)) => {
            // With a key repeated in one object the value keeps only the last, while serde may
            // have refused the first (found by the fuzzer: two `client_credentials`); the value
            // is then no model of what was read, so the path cannot be checked against it.
            if !has_duplicate_keys(data) {
                assert!(path_exists(&value, &e.field), "refusal names the field {:?}, not in the input: {e}", e.field);
            }
        }
        (Err(_), None) => {}
    }
}

/// Whether a JSON document has an object with a key twice (serde_json's nesting limit bounds
/// the recursion; `false` for what is not JSON).
pub fn has_duplicate_keys(data: &[u8]) -> bool {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Check;
    impl<'de> Deserialize<'de> for Check {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Check)
        }
    }
    impl<'de> Visitor<'de> for Check {
        type Value = Check;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON without repeated keys")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key) {
                    return Err(serde::de::Error::custom("repeated key"));
                }
                map.next_value::<Check>()?;
            }
            Ok(Check)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
            while seq.next_element::<Check>()?.is_some() {}
            Ok(Check)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_str<E>(self, _: &str) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_unit<E>(self) -> Result<Check, E> {
            Ok(Check)
        }
    }
    let _ = IgnoredAny;
    serde_json::from_slice::<Value>(data).is_ok() && serde_json::from_slice::<Check>(data).is_err()
}

/// Whether `path` (`a.b[2].c`, as [`ConfigError::field`] writes it) leads to a value of `root`
/// — or to a missing member of an object that is there. Object keys may themselves contain
/// `.` or `[`, so each step tries every key the object has.
pub fn path_exists(root: &Value, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    walk(root, path, true)
}

/// `first`: the path's first step, written without a separator (a top-level key may itself
/// start with `.`: found by the fuzzer, `.ti>>…`); later steps start with `.` or `[`.
fn walk(v: &Value, path: &str, first: bool) -> bool {
    if path.is_empty() {
        return true;
    }
    // `[i]` indexes an array; on an object, `[` starts a key (keys may hold `[`: `join_path`
    // writes `a` + `[x` as `a[x` — found by the fuzzer with a key `[aths`).
    if let (Some(rest), true) = (path.strip_prefix('['), v.is_array()) {
        let Some((index, rest)) = rest.split_once(']') else { return false };
        let Ok(index) = index.parse::<usize>() else { return false };
        return match v.as_array().and_then(|a| a.get(index)) {
            Some(item) => walk(item, rest, false),
            // A required item that is not there (`actions[0]` of an empty list).
            None => v.is_array() && rest.is_empty(),
        };
    }
    let path = if first { path } else { path.strip_prefix('.').unwrap_or(path) };
    if v.is_array() {
        // serde also reads a nested struct from an array, field by field (the document itself
        // must be an object: shared::config::parse). Known, harmless (nobody writes it); the
        // path then names the struct's field.
        return true;
    }
    let Some(object) = v.as_object() else { return false };
    for (key, child) in object {
        if let Some(rest) = path.strip_prefix(key.as_str()) {
            if (rest.is_empty() || rest.starts_with(['.', '['])) && walk(child, rest, false) {
                return true;
            }
        }
    }
    // The last step may be a member the object lacks (a required field).
    !path.contains(['.', '['])
}

#[cfg(test)]
mod tests {
    use super::{has_duplicate_keys, path_exists};
    use serde_json::json;

    #[test]
    fn repeated_keys_are_seen_at_any_depth() {
        assert!(has_duplicate_keys(br#"{"a":{"b":1,"c":2},"a":3}"#));
        assert!(has_duplicate_keys(br#"{"x":[{"k":1,"k":2}]}"#));
        assert!(!has_duplicate_keys(br#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#));
        assert!(!has_duplicate_keys(b"not json"));
    }

    #[test]
    fn a_refusal_of_a_repeated_object_is_not_judged_against_the_last_copy() {
        // Found by `make fuzz` (config_token_fetch, 10-minute run): serde refused a field of
        // the first `client_credentials` (a key with a dot), the value kept the second. Failed
        // before the check.
        let data = br#"{"oauth2":{"token_endpoint":{"cluster":"auth","uri":"http://auth/t"},"client_credentials":{"client_id":"a","x.y":"s"},"client_credentials":{"client_id":"b","client_secret":"c"}}}"#;
        super::check_config(data, token_fetch::config::Config::compile);
    }

    #[test]
    fn paths() {
        let v = json!({"rules": [{"name": "a", "actions": []}], "a.b": {"c": 1}, "[aths": 1, "o": {"[x": 2}});
        for ok in [
            "",
            "rules",
            "rules[0].name",
            "rules[0].token_bucket",
            "rules[0].actions[0]",
            "a.b.c",
            "x",
            "rules.name",
            "[aths",
            "o[x",
        ] {
            assert!(path_exists(&v, ok), "{ok}");
        }
        // A top-level key that starts with `.` (found by `make fuzz`, config_token_fetch:
        // failed before the first step kept its leading dot).
        assert!(path_exists(&json!({".t.x": 1}), ".t.x"));
        assert!(path_exists(&json!({"o": {".k": {"z": 1}}}), "o..k.z"));
        for bad in ["rules[1].name", "rules[0].x.y", "nope.x", "a.b.c.d"] {
            assert!(!path_exists(&v, bad), "{bad}");
        }
    }
}
