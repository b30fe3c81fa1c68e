//! The floor of a proxy-wasm Rust filter: the SDK's own root and HTTP contexts, one response
//! header set through the SDK's default helper, nothing else (no configuration, no `shared`,
//! no stats, no logging). `make bench` compares every filter's added CPU with this one's.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TrivialRoot) });
}}

/// The header it sets; `make bench` checks a response for it before measuring.
pub const HEADER: (&str, &str) = ("x-trivial-filter", "1");

struct TrivialRoot;

impl Context for TrivialRoot {}

impl RootContext for TrivialRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Trivial))
    }
}

struct Trivial;

impl Context for Trivial {}

impl HttpContext for Trivial {
    // The SDK's own helper, as a filter written from the SDK alone calls it (the shipped filters
    // go through `shared::abi` instead, which never unwraps); this module is never shipped.
    #[allow(clippy::disallowed_methods)]
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header(HEADER.0, Some(HEADER.1));
        Action::Continue
    }
}
