//! The two traits a filter implements. They mirror proxy-wasm's root and HTTP contexts, but
//! every callback receives the [`Host`], so tests drive them with a mock.

use crate::config::ConfigError;
use crate::host::Host;

pub use proxy_wasm::types::Action;

/// One per worker VM (proxy-wasm root context): owns the compiled configuration and creates
/// the per-request filters.
pub trait RootFilter {
    type Http: HttpFilter + 'static;

    /// Filter name used in log lines and stat prefixes, e.g. `security-headers`.
    const NAME: &'static str;

    /// Called once per worker with the raw plugin configuration. An `Err` makes the plugin
    /// refuse to start; the error names the field.
    fn configure(&mut self, host: &dyn Host, raw_config: Option<&[u8]>) -> Result<(), ConfigError>;

    /// A filter for a new request, or `None` when the plugin is not configured (the glue then
    /// answers 503 for that request: a filter never serves with a half-applied config).
    fn new_http_filter(&self, context_id: u32) -> Option<Self::Http>;

    fn on_tick(&mut self, _host: &dyn Host) {}

    fn on_http_call_response(
        &mut self,
        _host: &dyn Host,
        _token: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
    }
}

/// One per HTTP stream. Defaults let everything through untouched.
pub trait HttpFilter {
    fn on_request_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_body(&mut self, _host: &dyn Host, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_trailers(&mut self, _host: &dyn Host) -> Action {
        Action::Continue
    }
    fn on_response_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_body(&mut self, _host: &dyn Host, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_trailers(&mut self, _host: &dyn Host) -> Action {
        Action::Continue
    }
    fn on_http_call_response(
        &mut self,
        _host: &dyn Host,
        _token: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
    }
    fn on_log(&mut self, _host: &dyn Host) {}
}
