//! The proxy-wasm entry points (ABI 0.2.1) this crate's modules export, without the SDK.
//!
//! Why not the SDK's dispatcher: Envoy (proxy-wasm-cpp-host) crosses into the VM for a stream
//! callback only when the module exports it; an absent `proxy_on_response_body`, `proxy_on_log`
//! or `proxy_on_done` is answered by the host itself (continue; done). The SDK exports every
//! callback, so a filter that only looks at request headers still pays a VM crossing (thousands
//! of instructions inside Envoy and V8) for each body chunk, for `on_log` and for `on_done`.
//! Here a module exports the stream callbacks its filter handles, listed once in
//! [`crate::main!`], plus what every module needs (below). The rest mirrors the SDK's
//! dispatcher (proxy-wasm 0.2.5): contexts by id, a callout answer handed to the context that
//! made the call with that context made effective first; but an unknown context or token is
//! logged and answered safely instead of a panic, and ids are kept in ordered maps (a few
//! comparisons) rather than hashed.
//!
//! Always exported: `_initialize` (from [`crate::main!`]), `proxy_abi_version_0_2_1`,
//! `proxy_on_memory_allocate`, `proxy_on_context_create`, `proxy_on_vm_start`,
//! `proxy_on_configure`, `proxy_on_tick`, `proxy_on_delete`, `proxy_on_http_call_response`,
//! `proxy_on_grpc_receive` and `proxy_on_grpc_close` (a unary call's answer or failure). Not
//! exported: the gRPC stream metadata callbacks (unary calls only), queues, network filters.

use crate::abi::StreamType;
// The host calls this file makes itself: the ABI's in a module, a recording stand-in in the
// native unit tests (`exports/tests.rs`), which drive the entry points as Envoy would.
#[cfg(target_arch = "wasm32")]
use crate::abi as host;
use crate::host::LogLevel;
use crate::plugin::Action;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
#[cfg(all(test, not(target_arch = "wasm32")))]
use tests::host;

// `#[no_mangle]` counts as unsafe code for rustc's lint; the exports below need it. The crate's
// only `unsafe` blocks stay in `abi`.

/// A root context: one per plugin and worker.
pub trait RootContext {
    fn on_vm_start(&mut self) -> bool {
        true
    }
    fn on_configure(&mut self) -> bool {
        true
    }
    fn on_tick(&mut self) {}
    fn on_http_call_response(&mut self, _token: u32, _num_headers: usize, _body_size: usize, _num_trailers: usize) {}
    fn on_grpc_call_response(&mut self, _token: u32, _status_code: u32, _message_size: usize) {}
    /// The context of a new HTTP stream of this plugin (always one: a root that cannot serve
    /// hands back a context that refuses the stream).
    fn create_http_context(&self, context_id: u32) -> Box<dyn HttpContext>;
}

/// An HTTP stream's context. A callback the module does not export is never called.
pub trait HttpContext {
    fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_trailers(&mut self) -> Action {
        Action::Continue
    }
    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_trailers(&mut self) -> Action {
        Action::Continue
    }
    fn on_http_call_response(&mut self, _token: u32, _num_headers: usize, _body_size: usize, _num_trailers: usize) {}
    fn on_grpc_call_response(&mut self, _token: u32, _status_code: u32, _message_size: usize) {}
    fn on_log(&mut self) {}
}

/// Makes a plugin's root context; registered once by `_initialize`.
pub type NewRoot = fn(u32) -> Box<dyn RootContext>;

#[derive(Default)]
struct Contexts {
    new_root: Cell<Option<NewRoot>>,
    roots: RefCell<BTreeMap<u32, Box<dyn RootContext>>>,
    streams: RefCell<BTreeMap<u32, Box<dyn HttpContext>>>,
    /// The context whose callback is running: a callout made now is answered to it.
    active: Cell<u32>,
    /// Callout token → the context that made the call ([`GONE`] once that stream is deleted:
    /// Envoy still answers the call, to the root, and the answer must not reach the root's
    /// filter as if the root had made it).
    callouts: RefCell<BTreeMap<u32, u32>>,
    /// The host's time, read once per callback: the filters of a chain share one host call
    /// for it. Forgotten when the next callback starts.
    time: Cell<Option<u64>>,
}

thread_local! {
    static CONTEXTS: Contexts = Contexts::default();
}

/// Run the module's static constructors (what the SDK's `main!` does first), then register
/// `new_root` as the maker of every root context. Called by `_initialize`.
pub fn initialize(new_root: NewRoot) {
    host::call_ctors();
    let _ = CONTEXTS.try_with(|c| c.new_root.set(Some(new_root)));
}

/// A callback of `context_id` starts: callouts made now are its own, the time is read afresh.
fn enter(c: &Contexts, context_id: u32) {
    c.active.set(context_id);
    c.time.set(None);
}

/// The host's time (nanoseconds since the epoch): read with `read` at the first ask of a
/// callback, the same for the rest of it (a callback runs for microseconds).
pub(crate) fn callback_time(read: impl FnOnce() -> Option<u64>) -> Option<u64> {
    CONTEXTS
        .try_with(|c| match c.time.get() {
            Some(t) => Some(t),
            None => {
                let t = read()?;
                c.time.set(Some(t));
                Some(t)
            }
        })
        .ok()
        .flatten()
}

/// A callout's caller after the stream that made it was deleted (no context has id 0).
const GONE: u32 = 0;

/// The context that host calls now address (`set_effective_context` succeeded): callouts made
/// from now on are its own, as the host files them on its side.
pub(crate) fn set_active(context_id: u32) {
    let _ = CONTEXTS.try_with(|c| c.active.set(context_id));
}

/// Remember that the running context made callout `token` (the host answers it to the root).
pub(crate) fn register_callout(token: u32) {
    let _ = CONTEXTS.try_with(|c| {
        if let Ok(mut calls) = c.callouts.try_borrow_mut() {
            calls.insert(token, c.active.get());
        }
    });
}

fn warn(message: &str) {
    let _ = host::log(LogLevel::Critical, message);
}

/// Answer for a stream callback that has no context to go to (Envoy never sends one; the SDK
/// would trap): the stream is reset rather than let through unfiltered.
fn refuse(context_id: u32, what: &str) -> u32 {
    warn(&format!("proxy_on_{what}: no context {context_id} (or it is busy); resetting the stream"));
    let _ = host::close_stream(StreamType::HttpRequest);
    let _ = host::close_stream(StreamType::HttpResponse);
    Action::Pause as u32
}

/// Run `f` on stream `context_id`'s context, made active; `None` when there is no such stream.
fn with_stream<T>(context_id: u32, f: impl FnOnce(&mut dyn HttpContext) -> T) -> Option<T> {
    CONTEXTS
        .try_with(|c| {
            let mut streams = c.streams.try_borrow_mut().ok()?;
            let stream = streams.get_mut(&context_id)?;
            enter(c, context_id);
            Some(f(stream.as_mut()))
        })
        .ok()
        .flatten()
}

/// A stream callback's answer to the host; a stream without a context is refused.
fn stream_action(context_id: u32, what: &str, f: impl FnOnce(&mut dyn HttpContext) -> Action) -> u32 {
    match with_stream(context_id, f) {
        Some(action) => action as u32,
        None => refuse(context_id, what),
    }
}

/// Run `f` on root `context_id`, made active; `None` when there is no such root.
fn with_root<T>(context_id: u32, f: impl FnOnce(&mut dyn RootContext) -> T) -> Option<T> {
    CONTEXTS
        .try_with(|c| {
            let mut roots = c.roots.try_borrow_mut().ok()?;
            let root = roots.get_mut(&context_id)?;
            enter(c, context_id);
            Some(f(root.as_mut()))
        })
        .ok()
        .flatten()
}

/// Deliver a callout answer the host handed to root `context_id` to the context that made the
/// call: a stream is made effective first (so its host calls address it); an answer for a
/// stream that is gone is dropped.
fn deliver_callout(
    context_id: u32,
    token: u32,
    to_stream: impl FnOnce(&mut dyn HttpContext),
    to_root: impl FnOnce(&mut dyn RootContext),
) {
    let caller = CONTEXTS
        .try_with(|c| c.callouts.try_borrow_mut().ok().and_then(|mut calls| calls.remove(&token)))
        .ok()
        .flatten()
        .unwrap_or(context_id);
    if caller == GONE {
        return;
    }
    let to_stream = |s: &mut dyn HttpContext| {
        if host::set_effective_context(caller).is_ok() {
            to_stream(s);
        }
    };
    if with_stream(caller, to_stream).is_none() {
        let _ = with_root(caller, to_root);
    }
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host's allocations in this module's memory (buffers it returns): a `Box<[u8]>` of
/// exactly `size` bytes, which `abi`'s readers take back with `Vec::from_raw_parts`. An
/// allocation the VM cannot make answers null (the host call then fails) instead of trapping.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut buf: Vec<MaybeUninit<u8>> = Vec::new();
    if buf.try_reserve_exact(size).is_err() {
        return std::ptr::null_mut();
    }
    buf.resize(size, MaybeUninit::uninit());
    Box::into_raw(buf.into_boxed_slice()).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_context_id: u32) {
    let _ = CONTEXTS.try_with(|c| {
        if parent_context_id == 0 {
            let Some(new_root) = c.new_root.get() else {
                warn("proxy_on_context_create: this module registered no root context");
                return;
            };
            enter(c, context_id);
            let root = new_root(context_id);
            if let Ok(mut roots) = c.roots.try_borrow_mut() {
                roots.insert(context_id, root);
            }
            return;
        }
        let stream = match c.roots.try_borrow() {
            Ok(roots) => match roots.get(&parent_context_id) {
                Some(root) => {
                    enter(c, context_id);
                    root.create_http_context(context_id)
                }
                None => return warn(&format!("proxy_on_context_create: no root context {parent_context_id}")),
            },
            Err(_) => return warn("proxy_on_context_create: roots busy"),
        };
        if let Ok(mut streams) = c.streams.try_borrow_mut() {
            streams.insert(context_id, stream);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> u32 {
    u32::from(with_root(context_id, |r| r.on_vm_start()).unwrap_or(false))
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> u32 {
    u32::from(with_root(context_id, |r| r.on_configure()).unwrap_or(false))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    let _ = with_root(context_id, |r| r.on_tick());
}

/// The context is gone on the host's side: drop it (a stream's `Drop` forgets its wakes and
/// callouts).
#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    let _ = CONTEXTS.try_with(|c| {
        // A new callback, though no context is entered: a `Drop` reading the time reads it anew.
        c.time.set(None);
        let stream = c.streams.try_borrow_mut().ok().and_then(|mut s| s.remove(&context_id));
        if stream.is_some() {
            if let Ok(mut calls) = c.callouts.try_borrow_mut() {
                calls.values_mut().filter(|by| **by == context_id).for_each(|by| *by = GONE);
            }
            // Dropped here, with no map borrowed: its `Drop` may reach the router.
            drop(stream);
            return;
        }
        let root = c.roots.try_borrow_mut().ok().and_then(|mut r| r.remove(&context_id));
        drop(root);
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    num_trailers: usize,
) {
    deliver_callout(
        context_id,
        token,
        |s| s.on_http_call_response(token, num_headers, body_size, num_trailers),
        |r| r.on_http_call_response(token, num_headers, body_size, num_trailers),
    );
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(context_id: u32, token: u32, message_size: usize) {
    deliver_callout(
        context_id,
        token,
        |s| s.on_grpc_call_response(token, 0, message_size),
        |r| r.on_grpc_call_response(token, 0, message_size),
    );
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(context_id: u32, token: u32, status_code: u32) {
    deliver_callout(
        context_id,
        token,
        |s| s.on_grpc_call_response(token, status_code, 0),
        |r| r.on_grpc_call_response(token, status_code, 0),
    );
}

// The stream callbacks, exported by `http_exports!` for the ones a module lists.

#[doc(hidden)]
pub fn on_request_headers(context_id: u32, _num_headers: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, "request_headers", |s| s.on_request_headers(end_of_stream != 0))
}
#[doc(hidden)]
pub fn on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, "request_body", |s| s.on_request_body(body_size, end_of_stream != 0))
}
#[doc(hidden)]
pub fn on_request_trailers(context_id: u32, _num_trailers: usize) -> u32 {
    stream_action(context_id, "request_trailers", |s| s.on_request_trailers())
}
#[doc(hidden)]
pub fn on_response_headers(context_id: u32, _num_headers: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, "response_headers", |s| s.on_response_headers(end_of_stream != 0))
}
#[doc(hidden)]
pub fn on_response_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    stream_action(context_id, "response_body", |s| s.on_response_body(body_size, end_of_stream != 0))
}
#[doc(hidden)]
pub fn on_response_trailers(context_id: u32, _num_trailers: usize) -> u32 {
    stream_action(context_id, "response_trailers", |s| s.on_response_trailers())
}
#[doc(hidden)]
pub fn on_log(context_id: u32) {
    let _ = with_stream(context_id, |s| s.on_log());
}

#[cfg(test)]
mod tests;
