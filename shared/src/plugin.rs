//! The two traits a filter implements. They mirror proxy-wasm's root and HTTP contexts, but
//! every callback receives the [`Host`], so tests drive them with a mock.

use crate::config::ConfigError;
use crate::host::Host;

/// What a stream callback tells the host (proxy-wasm's `FilterHeadersStatus` and friends:
/// `0` continue, `1` stop iteration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

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

    /// Answer to a gRPC call this root made; the message is `BodyKind::GrpcReceive`.
    fn on_grpc_call_response(&mut self, _host: &dyn Host, _token: u32, _status_code: u32, _message_size: usize) {}
}

/// One per HTTP stream. Defaults let everything through untouched, except a wake
/// ([`HttpFilter::on_wake`]: the stream stays paused).
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
    /// Answer to an HTTP call this stream made. If the stream is paused, `Continue` lets the
    /// paused phase go on (the glue resumes it); `Pause` keeps it paused (e.g. a local reply
    /// was sent). Ignored when the stream is not paused.
    fn on_http_call_response(
        &mut self,
        _host: &dyn Host,
        _token: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) -> Action {
        Action::Continue
    }
    /// Answer to a gRPC call this stream made; same contract as `on_http_call_response`.
    fn on_grpc_call_response(
        &mut self,
        _host: &dyn Host,
        _token: u32,
        _status_code: u32,
        _message_size: usize,
    ) -> Action {
        Action::Continue
    }
    /// The root woke this paused stream ([`Host::wake`]): decide again. Same contract as
    /// `on_http_call_response`. The default keeps the stream as it is (`Pause`): a filter that
    /// paused for its own reason (a callout's answer) and never asked for a wake must not be
    /// let through by someone else's (a stray wake would otherwise fail open). A filter whose
    /// root wakes its streams implements this and answers `Continue` once it has decided.
    fn on_wake(&mut self, _host: &dyn Host) -> Action {
        Action::Pause
    }
    fn on_log(&mut self, _host: &dyn Host) {}
}
