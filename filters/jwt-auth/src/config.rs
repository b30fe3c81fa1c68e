//! Configuration: serde shape (phase 1, unknown fields refused) and semantic validation into
//! [`Compiled`] (phase 2). The request path only reads `Compiled`.

use serde::Deserialize;
use shared::config::ConfigError;
use shared::headers::{normalize_header_name, validate_header_value};

pub const DEFAULT_HEADER_NAME: &str = "x-jwt-auth";
pub const DEFAULT_HEADER_VALUE: &str = "on";

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The response header this filter adds (replace with your filter's configuration).
    #[serde(default)]
    pub response_header: Option<HeaderConfig>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HeaderConfig {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub header_name: String,
    pub header_value: String,
}

impl Config {
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        let Some(h) = self.response_header else {
            return Ok(Compiled { header_name: DEFAULT_HEADER_NAME.into(), header_value: DEFAULT_HEADER_VALUE.into() });
        };
        let header_name = normalize_header_name(&h.name).map_err(|m| ConfigError::new("response_header.name", m))?;
        validate_header_value(&h.value).map_err(|m| ConfigError::new("response_header.value", m))?;
        Ok(Compiled { header_name, header_value: h.value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: &str) -> Result<Compiled, ConfigError> {
        shared::config::load(Some(json.as_bytes()), Config::compile)
    }

    #[test]
    fn defaults_and_overrides() {
        let c = shared::config::load(None, Config::compile).unwrap();
        assert_eq!((c.header_name.as_str(), c.header_value.as_str()), (DEFAULT_HEADER_NAME, DEFAULT_HEADER_VALUE));
        let c = load(r#"{"response_header":{"name":"X-Custom","value":"1"}}"#).unwrap();
        assert_eq!(c.header_name, "x-custom");
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field) in [
            (r#"{"colour":1}"#, "colour"),
            (r#"{"response_header":{"name":"bad name","value":"1"}}"#, "response_header.name"),
            (r#"{"response_header":{"name":"x-a","value":"a\nb"}}"#, "response_header.value"),
        ] {
            assert_eq!(load(json).unwrap_err().field, field, "{json}");
        }
    }
}
