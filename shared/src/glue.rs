//! The glue that registers a [`RootFilter`] as this module's root context ([`crate::exports`]):
//! root and HTTP contexts delegate every callback to the filter with a [`ProxyWasmHost`],
//! through this VM's [`Router`] (wakes, callout answers, resuming paused streams). Compiled for
//! wasm only.

use crate::abi::{self, BufferType, StreamType};
use crate::exports::{self, HttpContext, RootContext};
use crate::host::{Host, LogLevel};
use crate::plugin::{Action, HttpFilter, RootFilter};
use crate::proxy::ProxyWasmHost;
use crate::reply;
use crate::routing::{Router, StreamHandle};

thread_local! {
    /// This VM's streams and queued wakes (a VM is one worker; every root in it shares this).
    static ROUTER: Router = Router::new();
}

/// [`Host::wake`] for [`ProxyWasmHost`]: queued, delivered when the current callback returns.
pub(crate) fn wake(context_id: u32) {
    let _ = ROUTER.try_with(|r| r.wake(context_id));
}

/// Register `R` as this module's root context. Called by `_initialize` ([`crate::main!`]).
pub fn start<R: RootFilter + Default + 'static>() {
    exports::initialize(new_root::<R>);
    install_panic_hook(R::NAME);
}

/// A panic should never happen (clippy denies the usual sources), but if one does the VM is
/// dead: say so loudly, with the filter's (or the bundle's) name, at critical.
pub fn install_panic_hook(name: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let _ = abi::log(LogLevel::Critical, &format!("{name}: panic, this VM can no longer serve requests: {info}"));
    }));
}

fn new_root<R: RootFilter + Default + 'static>(_context_id: u32) -> Box<dyn RootContext> {
    Box::new(RootAdapter { filter: R::default() })
}

/// One filter of a bundle module (the `collection` crate, [`crate::bundle`]): served to plugins
/// whose `root_id` is its [`RootFilter::NAME`].
#[derive(Clone, Copy)]
pub struct Member {
    root_id: &'static str,
    new_root: fn(u32) -> Box<dyn RootContext>,
}

impl Member {
    pub fn root_id(&self) -> &'static str {
        self.root_id
    }

    /// This filter's root context, exactly as its own module's `start` registers it.
    pub fn new_root(&self, context_id: u32) -> Box<dyn RootContext> {
        (self.new_root)(context_id)
    }
}

/// `R` as a member of a bundle, under the `root_id` `R::NAME`.
pub const fn member<R: RootFilter + Default + 'static>() -> Member {
    Member { root_id: R::NAME, new_root: new_root::<R> }
}

struct RootAdapter<R> {
    filter: R,
}

impl<R: RootFilter + 'static> RootContext for RootAdapter<R> {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        let root = &mut self.filter;
        ROUTER.with(|r| r.on_http_call_response(root, &ProxyWasmHost, token, num_headers, body_size, num_trailers));
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, message_size: usize) {
        let root = &mut self.filter;
        ROUTER.with(|r| r.on_grpc_call_response(root, &ProxyWasmHost, token, status_code, message_size));
    }

    fn on_configure(&mut self) -> bool {
        let host = ProxyWasmHost;
        let raw = abi::buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten();
        match self.filter.configure(&host, raw.as_deref()) {
            Ok(()) => {
                host.log(LogLevel::Info, &format!("{} {}: configured", R::NAME, env!("CARGO_PKG_VERSION")));
                true
            }
            Err(e) => {
                host.log(LogLevel::Critical, &format!("{}: invalid configuration, refusing to start: {e}", R::NAME));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let root = &mut self.filter;
        ROUTER.with(|r| r.on_tick(root, &ProxyWasmHost));
    }

    fn create_http_context(&self, context_id: u32) -> Box<dyn HttpContext> {
        match self.filter.new_http_filter(context_id) {
            Some(f) => Box::new(HttpAdapter { stream: ROUTER.with(|r| StreamHandle::new(r, context_id, f)) }),
            None => Box::new(Unconfigured::new(R::NAME)),
        }
    }
}

struct HttpAdapter<F: HttpFilter + 'static> {
    stream: StreamHandle<F>,
}

impl<F: HttpFilter + 'static> Drop for HttpAdapter<F> {
    /// The host deleted the context: no wake or answer may reach it any more.
    fn drop(&mut self) {
        let id = self.stream.context_id();
        let _ = ROUTER.try_with(|r| r.unregister(id));
    }
}

impl<F: HttpFilter + 'static> HttpContext for HttpAdapter<F> {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, num_trailers: usize) {
        ROUTER.with(|r| {
            self.stream.on_http_call_response(r, &ProxyWasmHost, token, num_headers, body_size, num_trailers);
        });
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, message_size: usize) {
        ROUTER.with(|r| {
            self.stream.on_grpc_call_response(r, &ProxyWasmHost, token, status_code, message_size);
        });
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        #[cfg(all(feature = "test-trap", target_arch = "wasm32"))]
        if ProxyWasmHost.header(crate::host::HeaderMapKind::RequestHeaders, "x-test-trap").is_some() {
            core::arch::wasm32::unreachable();
        }
        ROUTER.with(|r| self.stream.on_request_headers(r, &ProxyWasmHost, end_of_stream))
    }
    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        ROUTER.with(|r| self.stream.on_request_body(r, &ProxyWasmHost, body_size, end_of_stream))
    }
    fn on_request_trailers(&mut self) -> Action {
        ROUTER.with(|r| self.stream.on_request_trailers(r, &ProxyWasmHost))
    }
    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        ROUTER.with(|r| self.stream.on_response_headers(r, &ProxyWasmHost, end_of_stream))
    }
    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        ROUTER.with(|r| self.stream.on_response_body(r, &ProxyWasmHost, body_size, end_of_stream))
    }
    fn on_response_trailers(&mut self) -> Action {
        ROUTER.with(|r| self.stream.on_response_trailers(r, &ProxyWasmHost))
    }
    fn on_log(&mut self) {
        ROUTER.with(|r| self.stream.on_log(r, &ProxyWasmHost));
    }
}

/// Serves when the plugin has no valid configuration: fail closed, never half-applied. It
/// refuses at the first of the stream's callbacks the module exports.
pub struct Unconfigured {
    name: &'static str,
    refused: bool,
}

impl Unconfigured {
    pub fn new(name: &'static str) -> Unconfigured {
        Unconfigured { name, refused: false }
    }

    fn refuse(&mut self) -> Action {
        // Our own local reply comes back through the response callbacks: let it pass.
        if std::mem::replace(&mut self.refused, true) {
            return Action::Continue;
        }
        let host = ProxyWasmHost;
        let body = format!("{}: filter is not configured", self.name);
        if reply::send_text(&host, 503, &body, &[]).is_err() {
            // Never let the request through unfiltered.
            let _ = abi::close_stream(StreamType::HttpRequest);
            let _ = abi::close_stream(StreamType::HttpResponse);
        }
        Action::Pause
    }
}

impl HttpContext for Unconfigured {
    fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
        self.refuse()
    }
    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        self.refuse()
    }
}
