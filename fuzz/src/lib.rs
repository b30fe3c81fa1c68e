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
            assert!(path_exists(&value, &e.field), "refusal names the field {:?}, not in the input: {e}", e.field);
        }
        (Err(_), None) => {}
    }
}

/// Whether `path` (`a.b[2].c`, as [`ConfigError::field`] writes it) leads to a value of `root`
/// — or to a missing member of an object that is there. Object keys may themselves contain
/// `.` or `[`, so each step tries every key the object has.
pub fn path_exists(root: &Value, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    walk(root, path)
}

fn walk(v: &Value, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    // `[i]` indexes an array; on an object, `[` starts a key (keys may hold `[`: `join_path`
    // writes `a` + `[x` as `a[x` — found by the fuzzer with a key `[aths`).
    if let (Some(rest), true) = (path.strip_prefix('['), v.is_array()) {
        let Some((index, rest)) = rest.split_once(']') else { return false };
        let Ok(index) = index.parse::<usize>() else { return false };
        return match v.as_array().and_then(|a| a.get(index)) {
            Some(item) => walk(item, rest),
            // A required item that is not there (`actions[0]` of an empty list).
            None => v.is_array() && rest.is_empty(),
        };
    }
    let path = path.strip_prefix('.').unwrap_or(path);
    if v.is_array() {
        // serde also reads a nested struct from an array, field by field (the document itself
        // must be an object: shared::config::parse). Known, harmless (nobody writes it); the
        // path then names the struct's field.
        return true;
    }
    let Some(object) = v.as_object() else { return false };
    for (key, child) in object {
        if let Some(rest) = path.strip_prefix(key.as_str()) {
            if (rest.is_empty() || rest.starts_with(['.', '['])) && walk(child, rest) {
                return true;
            }
        }
    }
    // The last step may be a member the object lacks (a required field).
    !path.contains(['.', '['])
}

#[cfg(test)]
mod tests {
    use super::path_exists;
    use serde_json::json;

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
        for bad in ["rules[1].name", "rules[0].x.y", "nope.x", "a.b.c.d"] {
            assert!(!path_exists(&v, bad), "{bad}");
        }
    }
}
