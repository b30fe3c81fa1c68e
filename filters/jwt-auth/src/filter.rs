//! The request path, top to bottom. Everything the host is asked goes through `shared::Host`,
//! so the same code runs in Envoy and in the native tests below.

use crate::config::{Compiled, Config};
use shared::config::ConfigError;
use shared::host::HeaderMapKind::ResponseHeaders;
use shared::stats::Counter;
use shared::{Action, Host, HttpFilter, RootFilter};
use std::rc::Rc;

/// Envoy shows these as `wasmcustom.jwt_auth.<name>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub responses_marked: Counter,
    pub host_errors: Counter,
}

#[derive(Default)]
pub struct JwtAuthRoot {
    config: Option<Rc<Compiled>>,
    stats: Stats,
}

impl RootFilter for JwtAuthRoot {
    type Http = JwtAuth;
    const NAME: &'static str = "jwt-auth";

    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError> {
        let compiled = shared::config::load(raw_config, Config::compile)?;
        self.stats = Stats {
            responses_marked: Counter::define(host, "jwt_auth.responses_marked"),
            host_errors: Counter::define(host, "jwt_auth.host_errors"),
        };
        self.config = Some(Rc::new(compiled));
        Ok(())
    }

    fn new_http_filter(&self, _context_id: u32) -> Option<JwtAuth> {
        Some(JwtAuth { config: self.config.clone()?, stats: self.stats })
    }
}

pub struct JwtAuth {
    config: Rc<Compiled>,
    stats: Stats,
}

impl HttpFilter for JwtAuth {
    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Action {
        match host.set_header(ResponseHeaders, &self.config.header_name, self.config.header_value.as_bytes()) {
            Ok(()) => self.stats.responses_marked.inc(host),
            Err(_) => self.stats.host_errors.inc(host),
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::mock::MockHost;

    #[test]
    fn marks_every_response() {
        let host = MockHost::new();
        let mut root = JwtAuthRoot::default();
        root.configure(&host, None).unwrap();
        host.set_response_headers(&[(":status", "200")]);
        let mut f = root.new_http_filter(1).unwrap();
        assert_eq!(f.on_response_headers(&host, false), Action::Continue);
        assert_eq!(host.response_header_values(crate::config::DEFAULT_HEADER_NAME), vec!["on"]);
        assert_eq!(host.metric("jwt_auth.responses_marked"), Some(1));
    }

    #[test]
    fn refused_config_leaves_no_filter() {
        let host = MockHost::new();
        let mut root = JwtAuthRoot::default();
        assert!(root.configure(&host, Some(br#"{"nope":1}"#)).is_err());
        assert!(root.new_http_filter(1).is_none());
    }
}
