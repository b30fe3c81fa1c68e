//! Plugin configuration: JSON → serde (`deny_unknown_fields`) → semantic validation → compiled.
//!
//! Both phases report errors as [`ConfigError`], which names the field path
//! (`rules[2].match.safe_regex.regex`), so the log line that refuses the plugin tells the user
//! exactly what to fix.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field; empty for the document itself.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { field: field.into(), message: message.into() }
    }

    /// Prefix the field path, for validators of nested structures.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = join_path(parent, &self.field);
        self
    }
}

/// `join_path("a", "b") == "a.b"`, `join_path("a", "[0].b") == "a[0].b"`.
pub fn join_path(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (_, true) => parent.to_string(),
        _ if child.starts_with('[') => format!("{parent}{child}"),
        _ => format!("{parent}.{child}"),
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Phase 1: parse the plugin configuration. Absent or blank configuration means `{}`, i.e.
/// every default. Errors carry the JSON path of the field serde stopped at.
pub fn parse<C: DeserializeOwned>(raw: Option<&[u8]>) -> Result<C, ConfigError> {
    let bytes = match raw {
        Some(b) if !b.iter().all(u8::is_ascii_whitespace) => b,
        _ => b"{}".as_slice(),
    };
    // serde reads a struct from a JSON array too, field by field in declaration order
    // (`[[{"name":"a"}]]` would be a configuration). Nobody writes that on purpose and errors
    // would name fields the document does not have: the document must be an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ConfigError::new("", "the configuration must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: C = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::new(field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| ConfigError::new("", e.to_string()))?;
    Ok(value)
}

/// Both phases: parse, then `compile` (semantic checks + precomputation).
pub fn load<C: DeserializeOwned, T>(
    raw: Option<&[u8]>,
    compile: impl FnOnce(C) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    compile(parse(raw)?)
}

/// A protobuf-JSON `Duration` as Envoy writes it: `"5s"`, `"0.250s"`, `"1.000000001s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || format!("invalid duration {text:?}: expected seconds with an `s` suffix, e.g. \"1.5s\"");
        let number = text.strip_suffix('s').ok_or_else(err)?;
        let (secs, frac) = match number.split_once('.') {
            Some((s, f)) => (s, f),
            None => (number, ""),
        };
        if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
            return Err(err());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (number.contains('.') && frac.is_empty()) {
            return Err(err());
        }
        // Protobuf's limit; also keeps every later addition overflow-free.
        let secs: u64 = secs.parse().map_err(|_| err())?;
        if secs > 315_576_000_000 {
            return Err(format!("duration {text:?} is out of range"));
        }
        let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| err())? };
        Ok(Duration(std::time::Duration::new(secs, nanos)))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Envoy's `config.core.v3.DataSource`, in the two forms a wasm VM can read: `inline_string`,
/// or `environment_variable`, read from the VM's environment at configure time. The VM's
/// environment is `vm_config.environment_variables` (`host_env_keys`: copied from Envoy's own
/// environment, e.g. a Kubernetes Secret; `key_values`: literal), which Envoy hands to the
/// module through WASI `environ_get` (`std::env` in wasm32-wasip1). Sourced that way, the
/// value is not in the plugin configuration, so not in `/config_dump` either.
// `Debug` never shows the value.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(transform = crate::schema::exactly_one_of(crate::schema::DATA_SOURCE)))]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// The value itself (visible in the configuration and in `/config_dump`).
    #[serde(default, deserialize_with = "optional_secret_text")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub inline_string: Option<String>,
    /// The name of a variable of the VM's environment holding the value.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub environment_variable: Option<String>,
}

impl fmt::Debug for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("DataSource");
        if self.inline_string.is_some() {
            d.field("inline_string", &"<redacted>");
        }
        d.field("environment_variable", &self.environment_variable).finish()
    }
}

impl DataSource {
    /// The value, from the VM's environment where the source says so. `field` is the path of
    /// this data source, named in the refusal; an error names the variable, never a value.
    pub fn read(&self, field: &str) -> Result<String, ConfigError> {
        self.read_with(field, |name| std::env::var(name).ok())
    }

    /// [`DataSource::read`] with the environment given (tests).
    pub fn read_with(&self, field: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
        match (&self.inline_string, &self.environment_variable) {
            (Some(_), Some(_)) => {
                Err(ConfigError::new(field, "set one of `inline_string` and `environment_variable`, not both"))
            }
            (None, None) => Err(ConfigError::new(field, "set `inline_string` or `environment_variable`")),
            (Some(text), None) => Ok(text.clone()),
            (None, Some(name)) => {
                let field = join_path(field, "environment_variable");
                if name.is_empty() {
                    return Err(ConfigError::new(field, "must not be empty"));
                }
                env(name).ok_or_else(|| {
                    ConfigError::new(
                        field,
                        format!(
                            "the VM's environment has no variable {name:?} (or it is not UTF-8): set it in \
                             vm_config.environment_variables (Istio: vmConfig.env)"
                        ),
                    )
                })
            }
        }
    }
}

/// A secret's number refused without its value: serde's own error quotes it ("invalid type:
/// integer `123456`"), and a refusal is logged. YAML's `client_secret: 123456` is a number.
macro_rules! refuse_numbers_unquoted {
    ($value:ty) => {
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<$value, E> {
            Err(E::invalid_type(serde::de::Unexpected::Other("a number (its value not shown)"), &self))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<$value, E> {
            Err(E::invalid_type(serde::de::Unexpected::Other("a number (its value not shown)"), &self))
        }
        fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<$value, E> {
            Err(E::invalid_type(serde::de::Unexpected::Other("a number (its value not shown)"), &self))
        }
        fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<$value, E> {
            Err(E::invalid_type(serde::de::Unexpected::Other("a number (its value not shown)"), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<$value, E> {
            Err(E::invalid_type(serde::de::Unexpected::Other("a number (its value not shown)"), &self))
        }
    };
}

/// `DataSource.inline_string`: a string or null; any other type refused without its value.
fn optional_secret_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        refuse_numbers_unquoted!(String);
    }
    struct Optional;
    impl<'de> serde::de::Visitor<'de> for Optional {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<String>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
            d.deserialize_any(Text).map(Some)
        }
    }
    d.deserialize_option(Optional)
}

/// A secret written either as a plain string (inline, kept for compatibility) or as a
/// [`DataSource`] object (`{"environment_variable": "NAME"}` keeps it out of the configuration).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Source(DataSource),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(<redacted>)"),
            Secret::Source(s) => s.fmt(f),
        }
    }
}

impl Secret {
    /// See [`DataSource::read`].
    pub fn read(&self, field: &str) -> Result<String, ConfigError> {
        self.read_with(field, |name| std::env::var(name).ok())
    }

    pub fn read_with(&self, field: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
        match self {
            Secret::Plain(text) => Ok(text.clone()),
            Secret::Source(source) => source.read_with(field, env),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `#[serde(untagged)]`: errors inside the object keep their
        // field name instead of "did not match any variant".
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, or a data source {\"environment_variable\": NAME} / {\"inline_string\": VALUE}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::Plain(v.to_string()))
            }
            refuse_numbers_unquoted!(Secret);
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Secret, A::Error> {
                DataSource::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Secret::Source)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_source_reads_inline_or_the_environment_and_never_names_a_value() {
        let env = |name: &str| (name == "TF_SECRET").then(|| "s3cret-value".to_string());
        let inline: Secret = serde_json::from_str(r#""plain""#).unwrap();
        assert_eq!(inline.read_with("f", env).unwrap(), "plain");
        let from_env: Secret = serde_json::from_str(r#"{"environment_variable":"TF_SECRET"}"#).unwrap();
        assert_eq!(from_env.read_with("f", env).unwrap(), "s3cret-value");
        let source: Secret = serde_json::from_str(r#"{"inline_string":"x"}"#).unwrap();
        assert_eq!(source.read_with("f", env).unwrap(), "x");
        let missing: Secret = serde_json::from_str(r#"{"environment_variable":"NOPE"}"#).unwrap();
        let e = missing.read_with("a.b", env).unwrap_err();
        assert_eq!(e.field, "a.b.environment_variable");
        assert!(e.message.contains("\"NOPE\""), "{e}");
        let both: Secret = serde_json::from_str(r#"{"environment_variable":"TF_SECRET","inline_string":"x"}"#).unwrap();
        assert_eq!(both.read_with("a", env).unwrap_err().field, "a");
        let none: Secret = serde_json::from_str(r#"{}"#).unwrap();
        assert!(none.read_with("a", env).is_err());
        // Unknown fields keep their name; Debug never shows a value.
        let e = serde_json::from_str::<Secret>(r#"{"filename":"/x"}"#).unwrap_err().to_string();
        assert!(e.contains("filename"), "{e}");
        assert!(!format!("{inline:?}{source:?}").contains("plain"));
        assert!(!format!("{source:?}").contains("\"x\""));
    }
    /// Names no environment can hold (NUL, `=`) are refused as missing, naming the field and
    /// the variable, never a panic (std's getenv gives an error for them).
    #[test]
    fn an_impossible_variable_name_is_a_refusal_not_a_panic() {
        for name in ["A\0B", "PATH=x", "=", "\0"] {
            let source = DataSource { inline_string: None, environment_variable: Some(name.into()) };
            let e = source.read("f").unwrap_err();
            assert_eq!(e.field, "f.environment_variable", "{name:?}");
            assert!(e.message.contains(&format!("{name:?}")), "{e}");
        }
        let e = DataSource { inline_string: None, environment_variable: Some(String::new()) }.read("f").unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("f.environment_variable", "must not be empty"));
    }

    /// A secret written with the wrong JSON type (YAML's `client_secret: 123456` in a
    /// WasmPlugin's pluginConfig is a number) is refused without serde's usual quoting of the
    /// value ("invalid type: integer `123456`"): the refusal goes to Envoy's log.
    #[test]
    fn a_secret_of_the_wrong_type_is_refused_without_quoting_it() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Holder {
            #[allow(dead_code)]
            s: Secret,
        }
        for (raw, field) in [
            (r#"{"s":918273645}"#, "s"),
            (r#"{"s":-918273645}"#, "s"),
            (r#"{"s":9182.73645}"#, "s"),
            (r#"{"s":{"inline_string":918273645}}"#, "s.inline_string"),
            (r#"{"s":{"inline_string":-918273645}}"#, "s.inline_string"),
            (r#"{"s":{"inline_string":9182.73645}}"#, "s.inline_string"),
        ] {
            let e = parse::<Holder>(Some(raw.as_bytes())).unwrap_err();
            assert_eq!(e.field, field, "{raw}: {e}");
            assert!(!e.to_string().contains("918273645"), "{raw}: the refusal quotes the secret: {e}");
            assert!(!e.to_string().contains("9182.7"), "{raw}: the refusal quotes the secret: {e}");
            assert!(e.message.contains("invalid type: a number (its value not shown)"), "{raw}: {e}");
        }
        // Strings and null keep their meaning.
        let h = parse::<Holder>(Some(br#"{"s":{"inline_string":null,"environment_variable":"V"}}"#)).unwrap();
        assert_eq!(h.s, Secret::Source(DataSource { inline_string: None, environment_variable: Some("V".into()) }));
        let h = parse::<Holder>(Some(br#"{"s":{"inline_string":"x"}}"#)).unwrap();
        assert_eq!(h.s.read_with("s", |_| None).unwrap(), "x");
    }

    use serde::Deserialize;

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        #[serde(default)]
        name: String,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        #[allow(dead_code)]
        timeout: Option<Duration>,
    }

    #[test]
    fn empty_and_blank_config_mean_defaults() {
        for raw in [None, Some(&b""[..]), Some(&b"  \n"[..])] {
            let c: Outer = parse(raw).unwrap();
            assert!(c.items.is_empty());
        }
    }

    #[test]
    fn the_document_must_be_an_object() {
        // Found by fuzz/config_rate_limit: `[]` was read as a struct with every field
        // defaulted, and the refusal named `rules`, a field the input did not have.
        for raw in ["[]", " [[]]", "\"x\"", "1", "null"] {
            let e = parse::<Outer>(Some(raw.as_bytes())).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.message.as_str()),
                ("", "the configuration must be a JSON object"),
                "{raw}"
            );
        }
        assert!(parse::<Outer>(Some(b" {}")).is_ok());
    }

    #[test]
    fn unknown_field_names_its_path() {
        let e = parse::<Outer>(Some(br#"{"items":[{"name":"a"},{"nmae":"b"}]}"#)).unwrap_err();
        assert_eq!(e.field, "items[1].nmae");
        assert!(e.message.contains("unknown field `nmae`"), "{e}");
        assert!(e.to_string().starts_with("field `items[1].nmae`"));
    }

    #[test]
    fn wrong_type_names_its_path() {
        let e = parse::<Outer>(Some(br#"{"items":[{"name":5}]}"#)).unwrap_err();
        assert_eq!(e.field, "items[0].name");
    }

    #[test]
    fn trailing_garbage_and_bad_json_are_refused() {
        assert!(parse::<Outer>(Some(br#"{} x"#)).is_err());
        assert!(parse::<Outer>(Some(br#"{"items":"#)).is_err());
        assert!(parse::<Outer>(Some(&[0xff, 0xfe])).is_err());
    }

    #[test]
    fn durations_follow_protobuf_json() {
        let ok = [("5s", 5_000_000_000u128), ("0.25s", 250_000_000), ("1.000000001s", 1_000_000_001), ("0s", 0)];
        for (text, nanos) in ok {
            assert_eq!(Duration::parse(text).unwrap().0.as_nanos(), nanos, "{text}");
        }
        for bad in ["5", "s", "-1s", "1.s", ".5s", "1.0000000001s", "1e3s", "5 s", "99999999999999999999s"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
        let e = parse::<Outer>(Some(br#"{"timeout":"5"}"#)).unwrap_err();
        assert_eq!(e.field, "timeout");
    }

    #[test]
    fn join_paths() {
        assert_eq!(join_path("", "a"), "a");
        assert_eq!(join_path("a", ""), "a");
        assert_eq!(join_path("a", "b"), "a.b");
        assert_eq!(join_path("a", "[1].b"), "a[1].b");
        assert_eq!(ConfigError::new("x", "bad").within("rules[0]").field, "rules[0].x");
    }
}
